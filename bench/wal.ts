/**
 * `npx tsx bench/wal.ts`: PostgreSQL WAL bytes per message, for accepting and for delivering it
 * (docs/operations.md, Sizing). Postern runs as the bench runs it (the bundle, embedded PostgreSQL
 * with production's durability settings), with `--split-roles`: the delivery worker is a process
 * of its own, held with SIGSTOP while messages are accepted over SMTP, so that the WAL written
 * while accepting and the WAL written while delivering are measured apart
 * (`pg_current_wal_lsn()` before and after each phase). Everything the server writes in a phase
 * counts: full-page images after checkpoints, the statistics triggers, autovacuum.
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command, InvalidArgumentError } from "commander";
import { LoadGenerator, Sink } from "./children";
import { startPostern } from "./peers";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const KiB = 1024;

const count = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError("must be a whole number above 0");
  return n;
};
const options = new Command()
  .option("--messages <n>", "messages to accept, then deliver", count, 2000)
  .option("--size <bytes>", "bytes of each message", count, 10 * KiB)
  .option("--concurrency <n>", "SMTP connections", count, 10)
  .parse()
  .opts<{ messages: number; size: number; concurrency: number }>();

const sink = await Sink.start();
const load = new LoadGenerator();
const postern = await startPostern({
  sinkPort: sink.port,
  recipientDomain: "bench.example",
  freshLogins: 0,
  repositoryRoot: root,
  processes: { smtp: 1, worker: 1 },
});
try {
  const worker = postern.rssProcesses().find((p) => p.name === "worker1");
  if (!worker) throw new Error("the delivery worker's process was not found");
  const walPosition = async () =>
    BigInt(
      (
        await postern.db.$queryRawUnsafe<{ at: string }[]>(
          "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::text AS at",
        )
      )[0]?.at ?? "0",
    );
  const delivered = async () =>
    (
      await postern.db.$queryRawUnsafe<{ n: number }[]>(
        `SELECT count(*)::int AS n FROM "Message" WHERE status = 'delivered'`,
      )
    )[0]?.n ?? 0;

  process.kill(worker.pid, "SIGSTOP");
  const beforeAccept = await walPosition();
  const result = await load.run({
    host: "127.0.0.1",
    ports: postern.smtpPorts,
    mode: "pooled",
    concurrency: options.concurrency,
    messageBytes: options.size,
    durationMs: 600_000,
    maxMessages: options.messages,
    logins: postern.login ? [postern.login] : [],
    from: "bench@bench.example",
    to: "sink@bench.example",
  });
  const accepted = result.accepted.length;
  const afterAccept = await walPosition();

  process.kill(worker.pid, "SIGCONT");
  const deadline = Date.now() + 600_000;
  while ((await delivered()) < accepted) {
    if (Date.now() > deadline) throw new Error("not every accepted message was delivered within 10 minutes");
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  const afterDelivery = await walPosition();
  // The sink reports what it has read; its count can trail the upstream's 250s a little.
  let arrived = 0;
  while (arrived < accepted && Date.now() < deadline) {
    arrived += (await sink.collect()).length;
    if (arrived < accepted) await new Promise((resolve) => setTimeout(resolve, 200));
  }

  const perMessage = (bytes: bigint) => Math.round(Number(bytes) / accepted);
  const stored = await postern.db.$queryRawUnsafe<{ bytes: number }[]>(
    `SELECT avg(size)::int AS bytes FROM "Message"`,
  );
  process.stdout.write(
    `${JSON.stringify(
      {
        messages: accepted,
        errors: result.errors,
        arrivedAtSink: arrived,
        messageBytesStored: stored[0]?.bytes,
        walBytesPerMessage: {
          accept: perMessage(afterAccept - beforeAccept),
          delivery: perMessage(afterDelivery - afterAccept),
          total: perMessage(afterDelivery - beforeAccept),
        },
        postgresql: postern.version.postgresql,
      },
      null,
      2,
    )}\n`,
  );
} finally {
  load.stop();
  sink.stop();
  await postern.stop();
}
