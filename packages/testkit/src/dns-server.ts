import DNS from "dns2";

const { Packet } = DNS;

/**
 * An authoritative DNS server on a loopback port for tests (the `dns2` package): what Postern
 * looks up through node:dns with `DNS_SERVERS` set to `server.address`. Records are set and
 * removed while it runs; a name without records answers NXDOMAIN.
 */
export class TestDnsServer {
  private readonly txt = new Map<string, string[]>();
  private readonly mx = new Map<string, string[]>();
  /** Queries answered, by "TYPE name" (lower-case name). */
  readonly queries: string[] = [];

  private constructor(
    private readonly server: DNS.DnsServer,
    readonly address: string,
  ) {}

  static async start(): Promise<TestDnsServer> {
    let self: TestDnsServer | undefined;
    const server = DNS.createServer({
      udp: true,
      tcp: false,
      handle: (request, send) => self?.answer(request, send),
    });
    const addresses = await server.listen({ udp: { port: 0, address: "127.0.0.1" } });
    self = new TestDnsServer(server, `127.0.0.1:${addresses.udp?.port}`);
    return self;
  }

  /** Replaces the TXT records at `name` (each value split into strings of 255 bytes, as published). */
  setTxt(name: string, values: string[]): void {
    this.txt.set(name.toLowerCase(), values);
  }

  /** Replaces the MX records at `name`: the exchanges, by preference (10, 20, …). */
  setMx(name: string, exchanges: string[]): void {
    this.mx.set(name.toLowerCase(), exchanges);
  }

  remove(name: string): void {
    this.txt.delete(name.toLowerCase());
    this.mx.delete(name.toLowerCase());
  }

  private answer(request: DNS.Packet, send: (response: DNS.Packet) => unknown) {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    if (question) {
      const name = question.name.toLowerCase();
      this.queries.push(`${Packet.typeName(question.type) ?? question.type} ${name}`);
      const values = this.txt.get(name);
      const exchanges = this.mx.get(name);
      if (!values && !exchanges)
        response.header.rcode = 3; // NXDOMAIN
      else if (question.type === Packet.TYPE.MX)
        for (const [index, exchange] of (exchanges ?? []).entries())
          response.answers.push({
            name: question.name,
            type: Packet.TYPE.MX,
            class: Packet.CLASS.IN,
            ttl: 60,
            exchange,
            priority: (index + 1) * 10,
          } as DNS.Packet.Resource);
      else if (question.type === Packet.TYPE.TXT && values)
        // dns2 encodes a plain object; its typings ask for the parsed Resource's toBuffer.
        for (const value of values)
          response.answers.push({
            name: question.name,
            type: Packet.TYPE.TXT,
            class: Packet.CLASS.IN,
            ttl: 60,
            data: value.match(/.{1,255}/gs) ?? [""],
          } as DNS.Packet.Resource);
    }
    send(response);
  }

  stop(): Promise<void> {
    return this.server.close();
  }
}
