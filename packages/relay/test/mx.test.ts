import type { AddressInfo } from "node:net";
import { MxResolver } from "@postern/relay";
import dns2 from "dns2";
import { afterAll, beforeAll, expect, it } from "vitest";

const { Packet } = dns2;
let server: ReturnType<typeof dns2.createUDPServer>;
let address: string;
const asked: string[] = [];

beforeAll(async () => {
  server = dns2.createUDPServer((request, send) => {
    const response = Packet.createResponseFromRequest(request);
    const [question] = request.questions;
    if (question) {
      asked.push(`${Packet.typeName(question.type)} ${question.name}`);
      if (question.type === Packet.TYPE.MX)
        response.answers.push({
          name: question.name,
          type: Packet.TYPE.MX,
          class: Packet.CLASS.IN,
          ttl: 300,
          exchange: `mx.${question.name}`,
          priority: 10,
        } as never);
      if (question.type === Packet.TYPE.A)
        response.answers.push({
          name: question.name,
          type: Packet.TYPE.A,
          class: Packet.CLASS.IN,
          ttl: 300,
          address: "127.0.0.1",
        } as never);
    }
    send(response);
  });
  await new Promise<void>((resolve) => server.bind(0, "127.0.0.1", () => resolve()));
  address = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

it("deliveries that miss the cache together wait for one look-up of the domain", async () => {
  const resolver = new MxResolver({ servers: [address] });
  const answers = await Promise.all(Array.from({ length: 20 }, () => resolver.lookup("burst.example")));
  expect(new Set(answers).size).toBe(1);
  expect(answers[0]).toEqual({
    kind: "hosts",
    hosts: [{ name: "mx.burst.example", addresses: ["127.0.0.1"] }],
  });
  expect(asked.filter((query) => query === "MX burst.example")).toHaveLength(1);
  await resolver.lookup("burst.example");
  expect(asked.filter((query) => query === "MX burst.example")).toHaveLength(1);
});
