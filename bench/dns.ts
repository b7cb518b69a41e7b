/**
 * The benchmark's DNS server (`pooled-10k-direct`): on a loopback UDP port (the `dns2` package),
 * it answers an MX record for the recipients' domain naming a host whose address is the loopback
 * one, so that Postern's direct delivery (DNS_SERVERS at this server, DIRECT_SMTP_PORT at the
 * sink's port) reaches the sink through an MX look-up. Long TTLs: the scenario measures direct
 * delivery with its MX cache warm, as a relay sending to a few big destinations runs.
 */
import type { AddressInfo } from "node:net";
import dns2 from "dns2";

const { Packet } = dns2;
const ttl = 3600;

export interface BenchDns {
  /** `127.0.0.1:port`, for DNS_SERVERS. */
  address: string;
  stop(): Promise<void>;
}

export async function startBenchDns(recipientDomain: string): Promise<BenchDns> {
  const mxHost = `mx.${recipientDomain}`;
  const zone: Record<string, object[]> = {
    [`MX ${recipientDomain}`]: [{ type: Packet.TYPE.MX, ttl, exchange: mxHost, priority: 10 }],
    [`A ${mxHost}`]: [{ type: Packet.TYPE.A, ttl, address: "127.0.0.1" }],
  };
  const server = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    if (question) {
      const answers = zone[`${Packet.typeName(question.type)} ${question.name.toLowerCase()}`];
      for (const answer of answers ?? [])
        response.answers.push({ name: question.name, class: Packet.CLASS.IN, ...answer } as never);
      // A name of the zone without records of the type asked (AAAA of the MX host) is NOERROR
      // with no answers; any other name does not exist.
      const known = Object.keys(zone).some((key) => key.endsWith(` ${question.name.toLowerCase()}`));
      if (!known) response.header.rcode = Packet.RCODE.NXDOMAIN;
    }
    send(response);
  });
  await new Promise<void>((resolve) => server.bind(0, "127.0.0.1", () => resolve()));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
