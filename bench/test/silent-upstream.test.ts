import { connect } from "node:net";
import nodemailer from "nodemailer";
import { describe, expect, it } from "vitest";
import { startSilentUpstream } from "../silent-upstream";

describe("the stuck upstream of stuck-neighbour", () => {
  it("accepts connections and never greets, until it is stopped", async () => {
    const upstream = await startSilentUpstream();
    const client = nodemailer.createTransport({
      host: "127.0.0.1",
      port: upstream.port,
      ignoreTLS: true,
      greetingTimeout: 300,
    });
    await expect(client.verify()).rejects.toMatchObject({ code: "ETIMEDOUT" });
    client.close();
    expect(upstream.connections()).toBe(1);

    await upstream.stop();
    const refused = await new Promise<string | undefined>((resolve) => {
      const socket = connect(upstream.port, "127.0.0.1", () => {
        socket.destroy();
        resolve(undefined);
      });
      socket.once("error", (error: NodeJS.ErrnoException) => resolve(error.code));
    });
    expect(refused).toBe("ECONNREFUSED");
  });
});
