/**
 * The forwarder: the least a relay built on Postern's own SMTP libraries can do, run as its own
 * process (`fork`ed by bench/run.ts, IPC) with `--peer forwarder`. smtp-server receives over
 * STARTTLS with AUTH PLAIN/LOGIN (a plain comparison of the password, as Postfix's sasldb does),
 * and each message, read whole, goes to the sink over Postern's upstream pool
 * (`UpstreamTransports`, 20 connections); the client hears 250 once the sink has answered 250.
 * smtp-server is adapted as in Postern (apps/smtp/src/protocol.ts: no pause before the greeting).
 * Nothing is stored, queued, counted or logged: no PostgreSQL, no Redis, no policy. Like Haraka
 * as a forwarder in the reference runs of issue 6, it shows what the libraries and the TLS cost
 * on this machine, so that what Postern adds (durability, quotas, audit) can be read off beside it.
 *
 * in {type:"start", port, sinkPort, password} → out {type:"ready", pid}
 */
import { timingSafeEqual } from "node:crypto";
import { selfSignedCertificate } from "@postern/embedded";
import { UpstreamTransports } from "@postern/relay";
import { adaptSmtpServer } from "@postern/smtp/protocol";
import { SMTPServer } from "smtp-server";
import type { ForwarderReply, ForwarderRequest } from "./protocol";

/** As Postfix in the benchmark (message_size_limit), so that the 25 MB scenario runs. */
const maxMessageBytes = 30 * 1000 * 1000;

/** smtp-server replies with an error's `responseCode` and message. */
function replyError(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

async function startForwarder(request: ForwarderRequest): Promise<void> {
  // Postern's adaptation: above all, the greeting without smtp-server's 100 ms pause.
  adaptSmtpServer();
  const { cert, key } = await selfSignedCertificate("localhost");
  const expected = Buffer.from(request.password);
  const upstream = {
    projectId: "bench",
    upstreamUrl: `smtp://127.0.0.1:${request.sinkPort}`,
    password: undefined,
  };
  // As Postern's default DELIVERY_PROJECT_CONCURRENCY.
  const transports = new UpstreamTransports({ maxConnections: 20 });
  const server = new SMTPServer({
    key,
    cert,
    authMethods: ["PLAIN", "LOGIN"],
    disableReverseLookup: true,
    size: maxMessageBytes,
    logger: false,
    banner: "postern bench forwarder",
    onAuth(auth, _session, callback) {
      const given = Buffer.from(auth.password ?? "");
      if (given.length === expected.length && timingSafeEqual(given, expected))
        return callback(null, { user: auth.username });
      callback(replyError(535, "5.7.8 Authentication credentials invalid"));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        if (stream.sizeExceeded) return callback(replyError(552, "5.3.4 Message too big"));
        const envelope = {
          mailFrom: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
          recipients: session.envelope.rcptTo.map((r) => r.address),
          raw: Buffer.concat(chunks),
        };
        transports
          .whenConnectionFree(upstream.projectId, () => transports.relay(upstream, envelope))
          .then(({ verdict }) =>
            verdict.outcome === "delivered"
              ? callback(null, "2.0.0 forwarded")
              : callback(replyError(451, `4.4.0 upstream: ${verdict.response}`)),
          );
      });
    },
  });
  server.on("error", () => {});
  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(request.port, "127.0.0.1", () => resolve());
  });
}

process.on("message", async (request: ForwarderRequest) => {
  await startForwarder(request);
  process.send?.({ type: "ready", pid: process.pid } satisfies ForwarderReply);
});
process.on("disconnect", () => process.exit(0));
