/**
 * The load generator, run as its own process (`fork`ed by bench/run.ts, IPC) so that its CPU is
 * measured apart and does not compete inside the runner's event loop.
 *
 * in {type:"run", spec} → out {type:"result", result}
 */
import { Agent, request } from "node:http";
import { connect, type Socket } from "node:net";
import nodemailer, { type Transporter } from "nodemailer";
import {
  benchSentHeader,
  type LoadReply,
  type LoadRequest,
  type LoadResult,
  type LoadSpec,
  messageBody,
  messageHead,
  type SendRecord,
  type SmtpLogin,
} from "./protocol";

/**
 * Opens the TCP connection ourselves with TCP_NODELAY: nodemailer writes a command batch and then
 * waits for the reply, and with Nagle on, a server that delays its ACKs costs ~40 ms per message.
 */
function noDelaySocket(
  host: string,
  port: number,
): (options: unknown, callback: (error: Error | null, socket?: { connection: Socket }) => void) => void {
  return (_options, callback) => {
    const socket = connect({ host, port, noDelay: true });
    socket.once("connect", () => {
      socket.removeAllListeners("error");
      callback(null, { connection: socket });
    });
    socket.once("error", (error) => callback(error));
  };
}

/**
 * A transport to `port`: a pool of `poolSize` connections, or without it a connection per message.
 * Without a login: plain SMTP, no TLS, no AUTH (the ceiling run straight into the sink).
 */
function transport(
  spec: LoadSpec,
  port: number,
  login: SmtpLogin | undefined,
  poolSize?: number,
): Transporter {
  const common = {
    host: spec.host,
    port,
    secure: false,
    ...(login
      ? {
          requireTLS: true,
          tls: { rejectUnauthorized: false },
          auth: { user: login.username, pass: login.password },
        }
      : { ignoreTLS: true }),
    connectionTimeout: 30_000,
    greetingTimeout: 30_000,
    socketTimeout: 120_000,
  };
  const created = poolSize
    ? nodemailer.createTransport({
        ...common,
        pool: true,
        maxConnections: poolSize,
        maxMessages: Infinity,
      })
    : nodemailer.createTransport(common);
  (created as unknown as { getSocket: ReturnType<typeof noDelaySocket> }).getSocket = noDelaySocket(
    spec.host,
    port,
  );
  return created;
}

/** The port of client `client`: the clients go round the ports, so each port gets an even share. */
function portOf(spec: LoadSpec, client: number): number {
  return spec.ports[client % spec.ports.length] as number;
}

/** One pooled transport per port, each as large as that port's share of the clients. */
function pools(spec: LoadSpec, login: SmtpLogin | undefined): Transporter[] {
  return spec.ports.map((port, i) =>
    transport(spec, port, login, Math.ceil((spec.concurrency - i) / spec.ports.length)),
  );
}

/**
 * `http` mode: POSTs one JSON message to `/v1/messages` over `agent` and resolves on its `202`;
 * any other answer rejects with its status and body. The send time travels in the X-Bench-Sent
 * header, which the API's composer writes into the message as the SMTP load writes it in its head.
 */
function postMessage(
  spec: LoadSpec,
  port: number,
  agent: Agent,
  text: string,
  sentAt: number,
  sequence: number,
) {
  const body = JSON.stringify({
    from: spec.from,
    to: [spec.to],
    subject: `bench ${sequence}`,
    text,
    headers: { [benchSentHeader]: String(sentAt) },
  });
  return new Promise<void>((resolve, reject) => {
    const req = request(
      {
        host: spec.host,
        port,
        method: "POST",
        path: "/v1/messages",
        agent,
        headers: {
          authorization: `Bearer ${spec.apiToken}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        },
        timeout: 120_000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (chunk: Buffer) => chunks.push(chunk));
        res.on("end", () =>
          res.statusCode === 202
            ? resolve()
            : reject(new Error(`HTTP ${res.statusCode}: ${Buffer.concat(chunks).toString().slice(0, 150)}`)),
        );
        res.on("error", reject);
      },
    );
    req.on("timeout", () => req.destroy(new Error("no answer in 120 s")));
    req.on("error", reject);
    req.end(body);
  });
}

async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const body = messageBody(spec.messageBytes);
  const accepted: SendRecord[] = [];
  const errorSamples = new Set<string>();
  let errors = 0;
  let sequence = 0;
  const startedAt = Date.now();
  const deadline = startedAt + spec.durationMs;
  const maxMessages = spec.maxMessages ?? Number.POSITIVE_INFINITY;
  const [login] = spec.logins;

  const recordError = (error: Error) => {
    errors++;
    if (errorSamples.size < 5) errorSamples.add(error.message.slice(0, 200));
  };

  const sendOne = async (via: Transporter) => {
    const n = ++sequence;
    const sentAt = Date.now();
    try {
      await via.sendMail({
        envelope: { from: spec.from, to: [spec.to] },
        raw: Buffer.concat([messageHead(spec, sentAt, n), body]),
      });
      accepted.push({ startedAt: sentAt, acceptedAt: Date.now() });
    } catch (error) {
      recordError(error as Error);
    }
  };
  const more = () => Date.now() < deadline && sequence < maxMessages;

  if (spec.mode === "http") {
    // One socket per client, kept open between requests, Nagle off as for the SMTP load.
    const agent = new Agent({ keepAlive: true, maxSockets: spec.concurrency, noDelay: true });
    const text = body.toString("latin1");
    const client = async (_: unknown, i: number) => {
      const port = portOf(spec, i);
      while (more()) {
        const n = ++sequence;
        const sentAt = Date.now();
        try {
          await postMessage(spec, port, agent, text, sentAt, n);
          accepted.push({ startedAt: sentAt, acceptedAt: Date.now() });
        } catch (error) {
          recordError(error as Error);
        }
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, client));
    agent.destroy();
  } else if (spec.mode === "auth") {
    let next = 0;
    const client = async (_: unknown, i: number) => {
      // Each login once (uncached path), or a single login over and over (cached path).
      const reuse = spec.logins.length === 1;
      while (Date.now() < deadline && (reuse || next < spec.logins.length)) {
        const via = transport(spec, portOf(spec, i), spec.logins[reuse ? 0 : next++] as SmtpLogin);
        const begun = Date.now();
        try {
          await via.verify();
          accepted.push({ startedAt: begun, acceptedAt: Date.now() });
        } catch (error) {
          recordError(error as Error);
        } finally {
          via.close();
        }
      }
    };
    await Promise.all(Array.from({ length: spec.concurrency }, client));
  } else if (spec.ratePerSecond) {
    // Open loop: a message starts every 1/rate seconds whether or not earlier ones are answered,
    // over each port's pool in turn.
    const vias = pools(spec, login);
    const inFlight = new Set<Promise<void>>();
    const interval = 1000 / spec.ratePerSecond;
    for (let due = startedAt, turn = 0; more(); due += interval, turn++) {
      const wait = due - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const sending = sendOne(vias[turn % vias.length] as Transporter).finally(() =>
        inFlight.delete(sending),
      );
      inFlight.add(sending);
    }
    await Promise.all(inFlight);
    for (const via of vias) via.close();
  } else {
    const shared = spec.mode === "pooled" ? pools(spec, login) : undefined;
    const client = async (_: unknown, i: number) => {
      // Pooled, client i sends over its port's pool (the pools' sizes add up to the clients).
      const own = shared?.[i % shared.length] ?? transport(spec, portOf(spec, i), login);
      while (more()) await sendOne(own);
      if (!shared) own.close();
    };
    await Promise.all(Array.from({ length: spec.concurrency }, client));
    for (const pool of shared ?? []) pool.close();
  }
  return { startedAt, endedAt: Date.now(), accepted, errors, errorSamples: [...errorSamples] };
}

process.on("message", async (request: LoadRequest) => {
  if (request.type !== "run") return;
  const reply: LoadReply = { type: "result", result: await runLoad(request.spec) };
  process.send?.(reply);
});
process.on("disconnect", () => process.exit(0));
