import type { Readable } from "node:stream";
import addressparser from "nodemailer/lib/addressparser";
import type { DataHolder } from "./data-budget";

export type ReceivedData =
  | { ok: true; bytes: Buffer }
  | { ok: false; reason: "size" | "bare_lf"; bytesRead: number };

const CR = 0x0d;
const LF = 0x0a;

/**
 * Reads one message's DATA. smtp-server has removed the dot-stuffing and counts the size; every
 * CR and LF of the client's bytes is still here, so a CR or LF that is not part of a CRLF pair is
 * seen (SMTP smuggling relies on them, e.g. "\n.\n" read as end of data by a later hop). Once the
 * message is known to be refused, the rest is read and dropped: at most one message's bytes
 * (MAX_MESSAGE_SIZE) are ever held per session. `bytes` is `prefix` (our trace header) followed by
 * the message, assembled in one copy at the end, and on the way by blocks of `blockBytes` (see
 * there). Every byte kept is counted against `holder` (SMTP_DATA_MEMORY) as its chunk arrives:
 * until the count is granted, the stream is not read further, so a waiting session holds that
 * one chunk beyond the bound.
 */
export async function readMessageData(
  stream: Readable & { sizeExceeded?: boolean },
  prefix: Buffer,
  holder: DataHolder,
): Promise<ReceivedData> {
  await holder.take(prefix.length);
  const blocks: Buffer[] = [prefix];
  let chunks: Buffer[] = [];
  let chunkBytes = 0;
  let length = 0;
  let bareNewline = false;
  // The byte before the current chunk, and whether a CR ended the previous chunk.
  let previous = -1;
  for await (const chunk of stream as AsyncIterable<Buffer>) {
    length += chunk.length;
    if (bareNewline || stream.sizeExceeded) continue;
    for (let i = chunk.indexOf(LF); i >= 0; i = chunk.indexOf(LF, i + 1)) {
      const before = i === 0 ? previous : chunk[i - 1];
      if (before !== CR) bareNewline = true;
    }
    for (let i = chunk.indexOf(CR); i >= 0 && !bareNewline; i = chunk.indexOf(CR, i + 1)) {
      // A CR at the end of a chunk is judged with the next chunk's first byte.
      if (i + 1 < chunk.length && chunk[i + 1] !== LF) bareNewline = true;
    }
    if (previous === CR && chunk[0] !== LF) bareNewline = true;
    previous = chunk[chunk.length - 1] ?? previous;
    if (bareNewline) continue;
    chunks.push(chunk);
    chunkBytes += chunk.length;
    if (chunkBytes >= blockBytes) {
      blocks.push(Buffer.concat(chunks, chunkBytes));
      chunks = [];
      chunkBytes = 0;
    }
    await holder.take(chunk.length);
  }
  if (stream.sizeExceeded) return { ok: false, reason: "size", bytesRead: length };
  if (bareNewline || previous === CR) return { ok: false, reason: "bare_lf", bytesRead: length };
  return { ok: true, bytes: Buffer.concat([...blocks, ...chunks], prefix.length + length) };
}

/**
 * A large message is gathered into blocks of this size as it arrives. TLS hands over its bytes
 * in chunks of at most 16 KiB, each its own allocation from the C heap; a 25 MiB message held as
 * 1,600 of them until its end left the allocator's arenas holding that much after they were
 * freed (docs/benchmarks.md, Seventh round). Copied into a block while still young, a chunk is
 * freed at the next scavenge; a block is above the allocator's mmap threshold
 * (MALLOC_MMAP_THRESHOLD_, docs/operations.md), so freeing it gives its memory back to the
 * system. Messages smaller than a block are not copied more.
 */
const blockBytes = 256 * 1024;

export interface HeaderSummary {
  /** Addresses of every From header (lower-cased domains are what policy checks). */
  from: string[];
  /** How many From header fields there are (RFC 5322 allows exactly one). */
  fromFields: number;
  messageId: string | undefined;
  subject: string | undefined;
}

/** The header fields the accept step stores and the sender policy checks. */
export function summariseHeaders(message: Buffer): HeaderSummary {
  const end = message.indexOf("\r\n\r\n");
  const header = message.subarray(0, end < 0 ? message.length : end).toString("utf8");
  // Unfold (RFC 5322 2.2.3), then one field per line.
  const fields = header.replace(/\r\n(?=[ \t])/g, "").split("\r\n");
  const values = (name: string) =>
    fields
      .filter((f) => f.slice(0, name.length + 1).toLowerCase() === `${name}:`)
      .map((f) => f.slice(name.length + 1).trim());
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
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
}

/**
 * RFC 5321 Mailbox, pragmatically: a local part without spaces, controls or angle brackets, one
 * "@", and a domain of dot-separated labels (or an address literal). smtp-server has already
 * refused what it cannot parse (501); this refuses what a relay must not pass on.
 */
export function isMailbox(address: string): boolean {
  if (address.length > 254) return false;
  const at = address.lastIndexOf("@");
  if (at < 1) return false;
  const local = address.slice(0, at);
  const domain = address.slice(at + 1);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what a mailbox must not contain
  if (local.length > 64 || /[\s<>()[\]\\,;:\x00-\x1f\x7f]/.test(local.replace(/^".*"$/, "x"))) return false;
  if (/^\[(?:IPv6:)?[0-9a-fA-F:.]+\]$/.test(domain)) return true;
  return /^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{2,63}$/.test(domain);
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
}): string {
  const protocol = input.tls ? "ESMTPSA" : "ESMTPA";
  const clean = (value: string) => value.replace(/[^\x21-\x7e]/g, "");
  // Without reverse lookups the client's name is its address literal: say it once.
  const name = clean(input.clientHostname);
  const client = name && name !== `[${input.clientIp}]` ? `${name} ` : "";
  const forClause =
    input.recipients.length === 1 ? `\r\n\tfor <${clean(input.recipients[0] as string)}>` : "";
  return (
    `Received: from ${clean(input.helo) || "unknown"} (${client}[${input.clientIp}])\r\n` +
    `\tby ${input.hostname} (Postern) with ${protocol} id ${input.messageId}\r\n` +
    `\t(authenticated project ${input.projectId})${forClause};\r\n` +
    `\t${input.at.toUTCString().replace("GMT", "+0000")}\r\n`
  );
}
