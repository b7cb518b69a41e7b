/**
 * `npx tsx bench/dkim-cost.ts`: what DKIM signing costs per message, measured alone (no SMTP, no
 * store): the bench's 10 KiB message signed, relaxed/relaxed, with an RSA-2048 and an Ed25519 key,
 *
 * - by mailauth's `dkimSign`, the private key given as PEM (its API reads it on every call);
 * - by packages/dkim's `dkimSignatureOf` (mailauth's canonicalisation, the key read once, the
 *   signature on libuv's thread pool), one message at a time and 16 at once as the delivery
 *   worker runs them.
 *
 * Per message: the wall clock, the process's CPU (all threads) and the main thread's CPU (what
 * the delivery thread cannot spend on other deliveries; from /proc, Linux only). Then the parts:
 * reading the PEM key, the signature alone, the relaxed body hash. docs/benchmarks-history.md
 * quotes it.
 */
import { createHash, createPrivateKey, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { dkimSignatureOf, generateDkimKey, type SigningKey } from "@postern/dkim";
import { dkimSign } from "mailauth";
import { dkimBody } from "mailauth/lib/dkim/body/index.js";
import { messageBody, messageHead } from "./protocol";

const domain = "bench.example";
const message = Buffer.concat([
  messageHead({ from: `bench@${domain}`, to: "sink@bench.example" }, Date.now(), 1),
  messageBody(10 * 1024),
]);

interface Cost {
  wallMs: number;
  cpuMs: number;
  threadMs: number;
}

/** The main thread's CPU time (user and system) so far, from its /proc stat (clock ticks of 10 ms). */
function mainThreadCpuMs(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, "utf8");
  // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** `rounds` runs of `once`, `inFlight` at a time, after as many for warm-up; costs per run. */
async function measure(rounds: number, inFlight: number, once: () => Promise<unknown>): Promise<Cost> {
  const run = async () => {
    let next = 0;
    await Promise.all(
      Array.from({ length: inFlight }, async () => {
        while (next++ < rounds) await once();
      }),
    );
  };
  await run();
  const thread = mainThreadCpuMs();
  const cpu = process.cpuUsage();
  const started = performance.now();
  await run();
  const wallMs = performance.now() - started;
  const { user, system } = process.cpuUsage(cpu);
  return {
    wallMs: wallMs / rounds,
    cpuMs: (user + system) / 1000 / rounds,
    threadMs: (mainThreadCpuMs() - thread) / rounds,
  };
}

function report(name: string, cost: Cost) {
  const ms = (value: number) => value.toFixed(3).padStart(8);
  process.stdout.write(
    `${name.padEnd(52)} ${ms(cost.wallMs)} ms wall ${ms(cost.cpuMs)} ms CPU ${ms(cost.threadMs)} ms main thread CPU\n`,
  );
}

const sync = async (work: () => unknown) => work();

for (const algorithm of ["rsa", "ed25519"] as const) {
  const pair = generateDkimKey(algorithm);
  const key: SigningKey = {
    domain,
    selector: "pst1",
    algorithm,
    privateKey: createPrivateKey(pair.privateKeyPem),
  };
  const rounds = algorithm === "rsa" ? 2000 : 5000;
  process.stdout.write(
    `\n${algorithm}, ${(message.length / 1024).toFixed(1)} KiB message, ${rounds} rounds\n`,
  );

  const options = {
    signingDomain: domain,
    selector: "pst1",
    privateKey: pair.privateKeyPem,
    algorithm: `${algorithm}-sha256`,
    canonicalization: "relaxed/relaxed",
  };
  report(
    "mailauth dkimSign (PEM key), 1 at a time",
    await measure(rounds, 1, () => dkimSign(message, { ...options, signatureData: [{ ...options }] })),
  );
  report(
    "mailauth dkimSign (PEM key), 16 at once",
    await measure(rounds, 16, () => dkimSign(message, { ...options, signatureData: [{ ...options }] })),
  );
  report("dkimSignatureOf, 1 at a time", await measure(rounds, 1, () => dkimSignatureOf(message, key)));
  report("dkimSignatureOf, 16 at once", await measure(rounds, 16, () => dkimSignatureOf(message, key)));

  const headerData = message.subarray(0, 400);
  const signed = algorithm === "rsa" ? headerData : createHash("sha256").update(headerData).digest();
  const digest = algorithm === "rsa" ? "sha256" : null;
  report(
    "  part: the PEM key read (createPrivateKey)",
    await measure(rounds, 1, () => sync(() => createPrivateKey(pair.privateKeyPem))),
  );
  report(
    "  part: the signature (crypto.sign, on the loop)",
    await measure(rounds, 1, () => sync(() => sign(digest, signed, key.privateKey))),
  );
  report(
    "  part: the relaxed body hash",
    await measure(rounds, 1, () =>
      sync(() => {
        const hash = dkimBody("relaxed", "sha256", false);
        hash.update(message);
        return hash.digest("base64");
      }),
    ),
  );
}
