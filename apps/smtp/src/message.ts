import type { Hash } from "node:crypto";
import type { Readable } from "node:stream";
import { domainToASCII } from "node:url";
import addressparser from "nodemailer/lib/addressparser";
import type { DataHolder } from "./data-budget";

export type ReceivedData =
  | {
      ok: true;
      bytes: Buffer;
      /**
       * Gives a large message's memory back to the system at once, rather than when a collection
       * finds the buffer unused; `bytes` is empty after. For when the message is stored or refused.
       */
      release(): void;
    }
  | { ok: false; reason: "size" | "bare_lf"; bytesRead: number };

/** SMTP_BARE_NEWLINE: what a message line ending in a bare LF gets. */
export type BareNewlinePolicy = "normalize" | "reject";

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;

/**
 * The observer `readMessageData` takes, feeding each kept chunk to what reads the message as it
 * streams: the duplicate fingerprint's hash and the content rules' inspector, either or both.
 */
export function observeContent(
  fingerprint: Hash | undefined,
  inspector: { write(chunk: Buffer): Promise<void> | undefined } | undefined,
): ((content: Buffer) => Promise<void> | undefined) | undefined {
  if (!fingerprint && !inspector) return undefined;
  return (content) => {
    fingerprint?.update(content);
    return inspector?.write(content);
  };
}

/**
 * Reads one message's DATA. smtp-server has removed the dot-stuffing and counts the size; every
 * CR and LF of the client's bytes is still here (see `LineEndings` for what is refused and what is
 * normalized). Once the message is known to be refused, the rest is read and dropped: at most one
 * message's bytes (MAX_MESSAGE_SIZE, plus one byte per bare LF normalized) are ever held per
 * session. `bytes` is `prefix` (our trace header) followed by the message: a small message is
 * assembled in one copy at its end, a large one is copied into place as it arrives (`blockBytes`,
 * `GrowingBuffer`), so it is held once. Every byte kept is counted against
 * `holder` (SMTP_DATA_MEMORY) as its chunk arrives: until the count is granted, the stream is not
 * read further, so a waiting session holds that one chunk beyond the bound. `observe` sees each
 * kept chunk of the message (after the dot-unstuffing and the line-ending rules, without `prefix`)
 * as it arrives: duplicate suppression's hash is fed there (no copy), and the project's content
 * rules read the MIME tree there while the message streams in; the stream is not read further
 * until the observer is done with the chunk.
 */
export async function readMessageData(
  stream: Readable & { sizeExceeded?: boolean },
  prefix: Buffer,
  holder: DataHolder,
  bareNewline: BareNewlinePolicy,
  observe?: (content: Buffer) => void | Promise<void>,
): Promise<ReceivedData> {
  await holder.take(prefix.length);
  let chunks: Buffer[] = [prefix];
  let chunkBytes = prefix.length;
  /** Once the message is over a block: its bytes so far, in place. */
  let large: GrowingBuffer | undefined;
  let length = 0;
  let kept = 0;
  let refused = false;
  const lines = new LineEndings(bareNewline);
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (refused || stream.sizeExceeded) continue;
    const content = lines.take(chunk);
    if (!content) {
      refused = true;
      continue;
    }
    kept += content.length;
    if (large) large.append(content);
    else {
      chunks.push(content);
      chunkBytes += content.length;
      if (chunkBytes >= blockBytes) {
        large = new GrowingBuffer();
        for (const piece of chunks) large.append(piece);
        chunks = [];
      }
    }
    await holder.take(content.length);
    // Awaited only when the observer asks to wait: no rules, no extra turn per chunk.
    const observed = observe?.(content);
    if (observed) await observed;
  }
  if (stream.sizeExceeded) return { ok: false, reason: "size", bytesRead: length };
  if (refused || !lines.end()) return { ok: false, reason: "bare_lf", bytesRead: length };
  if (!large) return { ok: true, bytes: Buffer.concat(chunks, prefix.length + kept), release() {} };
  const held = large;
  return { ok: true, bytes: held.bytes(), release: () => held.release() };
}

/**
 * The line endings of one message's DATA, chunk by chunk (smtp-server has removed the dot-stuffing;
 * only `<CR><LF>.<CR><LF>` ended the DATA). Refused, whatever the policy (SMTP smuggling relies on
 * them: a later hop may read `<LF>.<LF>` as the end of DATA and what follows as a second, forged
 * message):
 * - a CR that is not followed by LF;
 * - a line of one dot next to a bare LF (`<LF>.<LF>`, `<LF>.<CR><LF>`, `<CR><LF>.<LF>`, and `.<LF>`
 *   right after the DATA command), which is how the end of DATA looks to a server that takes a
 *   bare LF for a line end. A client that sent such a line dot-stuffed (`<LF>..<LF>`) is refused
 *   too: after smtp-server's unstuffing the two cannot be told apart.
 * A bare LF elsewhere is refused under `reject`, and becomes CRLF under `normalize` (Postfix's
 * `smtpd_forbid_bare_newline = normalize`), so what is stored and relayed has CRLF line ends only.
 * Line ends are found with `indexOf` (native code); a chunk without a bare LF is kept as it is.
 */
class LineEndings {
  /** The last byte seen; the DATA command's CRLF comes before the first line. */
  private previous = LF;
  /** The line being read began after a bare LF. */
  private afterBareLf = false;
  /** Bytes of the line being read in earlier chunks (counted up to 3), and its first byte. */
  private carried = 0;
  private carriedFirst = -1;

  constructor(private readonly policy: BareNewlinePolicy) {}

  /** The chunk as it is to be stored, or undefined when the message must be refused. */
  take(chunk: Buffer): Buffer | undefined {
    if (chunk.length === 0) return chunk;
    if (this.previous === CR && chunk[0] !== LF) return undefined;
    for (let i = chunk.indexOf(CR); i >= 0; i = chunk.indexOf(CR, i + 1)) {
      // A CR at the end of a chunk is judged with the next chunk's first byte.
      if (i + 1 < chunk.length && chunk[i + 1] !== LF) return undefined;
    }
    let bareLfs: number[] | undefined;
    let lineStart = 0;
    let { afterBareLf, carried } = this;
    for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, i + 1)) {
      const crBefore = (i === 0 ? this.previous : chunk[i - 1]) === CR;
      if (!crBefore) {
        if (this.policy === "reject") return undefined;
        bareLfs ??= [];
        bareLfs.push(i);
      }
      // Only a line that a bare LF begins or ends can be an end-of-DATA look-alike.
      if (!crBefore || afterBareLf) {
        const lineBytes = (lineStart === 0 ? carried : 0) + i - lineStart;
        const first = lineStart === 0 && carried > 0 ? this.carriedFirst : chunk[lineStart];
        if (first === DOT && (lineBytes === 1 || (lineBytes === 2 && crBefore))) return undefined;
      }
      afterBareLf = !crBefore;
      lineStart = i + 1;
      carried = 0;
    }
    const rest = chunk.length - lineStart;
    if (rest > 0) {
      if (carried === 0) this.carriedFirst = chunk[lineStart] as number;
      carried = Math.min(3, carried + rest);
    }
    this.afterBareLf = afterBareLf;
    this.carried = carried;
    this.previous = chunk[chunk.length - 1] as number;
    return bareLfs ? withCrBefore(chunk, bareLfs) : chunk;
  }

  /** Whether the message may end here (not on a CR whose LF never came). */
  end(): boolean {
    return this.previous !== CR;
  }
}

/** The chunk with a CR inserted before the LF at each of `positions` (ascending). */
function withCrBefore(chunk: Buffer, positions: number[]): Buffer {
  const out = Buffer.allocUnsafe(chunk.length + positions.length);
  let from = 0;
  let to = 0;
  for (const position of positions) {
    to += chunk.copy(out, to, from, position);
    out[to++] = CR;
    from = position;
  }
  chunk.copy(out, to, from);
  return out;
}

/**
 * A message is gathered from its chunks once it has this many bytes, and from then on each chunk
 * is copied into place as it arrives (`GrowingBuffer`). TLS hands over its bytes in chunks of at
 * most 16 KiB, each its own allocation from the C heap; a 25 MiB message held as 1,600 of them
 * until its end left the allocator's arenas holding that much after they were freed
 * (docs/benchmarks-history.md, Seventh round). Copied while still young, a chunk is freed at the
 * next scavenge. A message smaller than this is assembled once, at its end.
 */
const blockBytes = 256 * 1024;

/**
 * Address space reserved for a large message's bytes: only the pages written are memory. A message
 * that outgrows it (MAX_MESSAGE_SIZE above this, or many bare LFs made CRLF) moves once to twice
 * the space.
 */
const reservedBytes = 64 * 1024 * 1024;

/**
 * A large message's bytes, written in place into a resizable ArrayBuffer as they arrive, and
 * handed over as a Buffer over that same memory: the message is held once, where gathering it in
 * blocks and joining them at the end held it twice at that moment
 * (docs/benchmarks-history.md, Seventeenth round). The memory is mapped for this buffer alone,
 * so freeing it gives it back to the system.
 */
class GrowingBuffer {
  private store = new ArrayBuffer(0, { maxByteLength: reservedBytes });
  private length = 0;

  append(chunk: Buffer): void {
    const end = this.length + chunk.length;
    if (end > this.store.maxByteLength) {
      const moved = new ArrayBuffer(this.length, {
        maxByteLength: Math.max(end, 2 * this.store.maxByteLength),
      });
      new Uint8Array(moved).set(new Uint8Array(this.store, 0, this.length));
      this.store = moved;
    }
    // Grown a block at a time: each growth commits pages, a call into the system.
    if (end > this.store.byteLength)
      this.store.resize(
        Math.min(this.store.maxByteLength, Math.max(end, this.store.byteLength + blockBytes)),
      );
    new Uint8Array(this.store, this.length, chunk.length).set(chunk);
    this.length = end;
  }

  bytes(): Buffer {
    return Buffer.from(this.store, 0, this.length);
  }

  /**
   * Shrinking the buffer to nothing returns its pages to the system there and then: the next
   * delivery of the message need not find the SMTP side's copy still held.
   */
  release(): void {
    this.store.resize(0);
    this.length = 0;
  }
}

export interface HeaderSummary {
  /** Addresses of every From header (lower-cased domains are what policy checks). */
  from: string[];
  /** How many From header fields there are (RFC 5322 allows exactly one). */
  fromFields: number;
  messageId: string | undefined;
  subject: string | undefined;
}

/**
 * The header fields the accept step stores and the sender policy checks. A field is found as mail
 * readers find it: its name in any case, with or without white space before the colon (RFC 5322
 * 4.5.2's obsolete `From :`), so that no From a reader shows escapes the checks. The values are
 * summaries for listing and policy: NUL bytes, which PostgreSQL's text columns cannot hold, are
 * dropped from them (the message itself is stored and relayed as it came, NULs included).
 */
export function summariseHeaders(message: Buffer): HeaderSummary {
  const end = message.indexOf("\r\n\r\n");
  const header = message
    .subarray(0, end < 0 ? message.length : end)
    .toString("utf8")
    .replaceAll("\0", "");
  // Unfold (RFC 5322 2.2.3), then one field per line.
  const fields = header.replace(/\r\n(?=[ \t])/g, "").split("\r\n");
  const values = (name: string) => {
    const field = new RegExp(`^${name}\\s*:`, "i");
    return fields.flatMap((f) => {
      const match = field.exec(f);
      return match ? [f.slice(match[0].length).trim()] : [];
    });
  };
  const fromValues = values("from");
  const from = fromValues.flatMap((value) =>
    flatten(addressparser(value)).filter((address) => address.includes("@")),
  );
  return {
    from,
    fromFields: fromValues.length,
    messageId: values("message-id")[0]?.slice(0, 998),
    subject: values("subject")[0]?.slice(0, 998),
  };
}

type ParsedAddress = { address?: string; group?: ParsedAddress[] };

function flatten(parsed: ParsedAddress[]): string[] {
  return parsed.flatMap((a) => (a.group ? flatten(a.group) : a.address ? [a.address] : []));
}

export function domainOf(address: string): string {
  return asciiDomain(address.slice(address.lastIndexOf("@") + 1));
}

/**
 * A domain as sender domains are compared: lower case, internationalized labels as A-labels
 * (`bücher.example` is `xn--bcher-kva.example`); empty when it is not a valid domain name.
 */
export function asciiDomain(domain: string): string {
  return isAscii(domain) ? domain.toLowerCase() : domainToASCII(domain);
}

/**
 * RFC 5321 Mailbox, pragmatically: a local part without spaces, controls or angle brackets, one
 * "@", and a domain of dot-separated labels (or an address literal). With SMTPUTF8 (RFC 6531) the
 * local part may hold UTF-8 and the domain U-labels, checked in their ASCII (A-label) form.
 * smtp-server has already refused what it cannot parse (501); this refuses what a relay must not
 * pass on.
 */
export function isMailbox(address: string): boolean {
  if (Buffer.byteLength(address) > 254) return false;
  // smtp-server decoded the command as UTF-8: U+FFFD stands for bytes that were not UTF-8.
  if (address.includes("\uFFFD")) return false;
  const at = address.lastIndexOf("@");
  if (at < 1) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what a mailbox must not contain
  if (Buffer.byteLength(local) > 64 || /[\s<>()[\]\\,;:\x00-\x1f\x7f]/.test(local.replace(/^".*"$/, "x")))
    return false;
  if (/^\[(?:IPv6:)?[0-9a-fA-F:.]+\]$/.test(domain)) return true;
  return /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$/.test(
    asciiDomain(domain),
  );
}

/** Whether an address needs SMTPUTF8 (RFC 6531) to be sent as it is. */
export function isAscii(text: string): boolean {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: the whole ASCII range
  return /^[\x00-\x7f]*$/.test(text);
}

/** The trace header this hop adds (RFC 5321 4.4). It names the project, never the credential. */
export function receivedHeader(input: {
  helo: string;
  clientHostname: string;
  clientIp: string;
  hostname: string;
  tls: boolean;
  projectId: string;
  messageId: string;
  recipients: string[];
  at: Date;
  /** The transaction declared SMTPUTF8: the header may name a UTF-8 recipient (RFC 6531 4.3). */
  smtpUtf8: boolean;
}): string {
  const protocol = `${input.smtpUtf8 ? "UTF8SMTP" : "ESMTP"}${input.tls ? "SA" : "A"}`;
  const clean = (value: string) => value.replace(/[^\x21-\x7e]/g, "");
  // A UTF-8 address keeps its letters; controls and white space go, as from an ASCII one.
  const cleanAddress = (value: string) => (input.smtpUtf8 ? value.replace(/[\p{Cc}\s]/gu, "") : clean(value));
  // Without reverse lookups the client's name is its address literal: say it once.
  const name = clean(input.clientHostname);
  const client = name && name !== `[${input.clientIp}]` ? `${name} ` : "";
  const forClause =
    input.recipients.length === 1 ? `\r\n\tfor <${cleanAddress(input.recipients[0] as string)}>` : "";
  return (
    `Received: from ${clean(input.helo) || "unknown"} (${client}[${input.clientIp}])\r\n` +
    `\tby ${input.hostname} (Postern) with ${protocol} id ${input.messageId}\r\n` +
    `\t(authenticated project ${input.projectId})${forClause};\r\n` +
    `\t${input.at.toUTCString().replace("GMT", "+0000")}\r\n`
  );
}

/**
 * The trace header of a message submitted over the HTTP API: the same shape as `receivedHeader`'s,
 * `with HTTP` as the protocol (the API listens in plain HTTP; TLS ends at a proxy in front of it).
 */
export function httpReceivedHeader(input: {
  clientIp: string;
  hostname: string;
  projectId: string;
  messageId: string;
  recipients: string[];
  at: Date;
}): string {
  const forClause =
    input.recipients.length === 1 ? `\r\n\tfor <${input.recipients[0]?.replace(/[\p{Cc}\s<>]/gu, "")}>` : "";
  return (
    `Received: from [${input.clientIp.replace(/[^\x21-\x7e]/g, "")}]\r\n` +
    `\tby ${input.hostname} (Postern) with HTTP id ${input.messageId}\r\n` +
    `\t(authenticated project ${input.projectId})${forClause};\r\n` +
    `\t${input.at.toUTCString().replace("GMT", "+0000")}\r\n`
  );
}
