import { execFile } from "node:child_process";
import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { freePort } from "@postern/embedded";
import { SmtpSink } from "@postern/testkit";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { LoadGenerator } from "../children";
import { postfixInstalled } from "../peers";
import { waitForPort } from "../protocol";

const run = promisify(execFile);
const script = join(import.meta.dirname, "../postfix/postfix.sh");

/** The settings issue 30 tunes, and Postfix's own values for them (`postconf -d`, Postfix 3.7). */
const tunedSettings = {
  smtp_destination_concurrency_limit: "100",
  initial_destination_concurrency: "20",
  default_process_limit: "300",
  in_flow_delay: "0s",
};
const stockSettings = {
  smtp_destination_concurrency_limit: "$default_destination_concurrency_limit",
  initial_destination_concurrency: "5",
  default_process_limit: "100",
  in_flow_delay: "1s",
};

const login = { username: "bench", password: "bench-password" };

/** A private Postfix from bench/postfix/postfix.sh, relaying to `sinkPort`; stopped and removed by `stop`. */
async function startPrivatePostfix(sinkPort: number, concurrency: "stock" | "tuned") {
  const dir = await mkdtemp(join(tmpdir(), "postern-bench-postfix-test-"));
  await chmod(dir, 0o755); // Postfix's daemons run as the postfix user
  const users = join(dir, "users");
  await writeFile(users, `${login.username} ${login.password}\n`, { mode: 0o600 });
  const port = await freePort();
  const stop = async () => {
    await run(script, ["stop", dir]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await run(script, ["start", dir, String(port), String(sinkPort), users, concurrency]);
    await waitForPort(port, 10_000);
  } catch (error) {
    await stop();
    throw error;
  }
  /** The value Postfix itself reads for each setting of `names` from this instance's main.cf. */
  const settings = async (names: string[]) =>
    Object.fromEntries(
      (await run("postconf", ["-c", join(dir, "etc"), ...names])).stdout
        .trim()
        .split("\n")
        .map((line) => line.split(" = ") as [string, string]),
    );
  return { port, settings, stop };
}

// Postfix's master runs as root; the harness needs the Debian packages (docs/benchmarks.md).
describe.skipIf(!postfixInstalled() || process.getuid?.() !== 0)("the Postfix peers", () => {
  let sink: SmtpSink;
  let load: LoadGenerator;
  beforeAll(async () => {
    sink = await SmtpSink.start({ starttls: false });
    load = new LoadGenerator();
  });
  afterAll(async () => {
    load.stop();
    await sink.stop();
  });

  it.each([
    ["tuned", tunedSettings],
    ["stock", stockSettings],
  ] as const)(
    "%s: runs with its concurrency settings and relays over STARTTLS and AUTH",
    async (concurrency, expected) => {
      const postfix = await startPrivatePostfix(sink.port, concurrency);
      try {
        expect(await postfix.settings(Object.keys(expected))).toEqual(expected);
        const before = sink.messages.length;
        const result = await load.run({
          host: "127.0.0.1",
          ports: [postfix.port],
          mode: "pooled",
          concurrency: 2,
          messageBytes: 10 * 1024,
          durationMs: 300,
          logins: [login],
          from: "bench@bench.example",
          to: "sink@bench.example",
        });
        expect(result.errors).toBe(0);
        expect(result.accepted.length).toBeGreaterThan(0);
        // Postfix queues, then relays: the 250 comes before the sink has the message.
        await sink.waitFor(before + result.accepted.length, 30_000);
        expect(sink.messages.at(-1)?.raw.toString("latin1")).toMatch(/X-Bench-Sent: \d+\r\n/);
      } finally {
        await postfix.stop();
      }
    },
    60_000,
  );
});
