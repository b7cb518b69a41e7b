import type { Transform } from "node:stream";
import { MimeNode, Splitter, type SplitterChunk } from "@zone-eu/mailsplit";
import libmime from "libmime";
import addressparser from "nodemailer/lib/addressparser";
import type { CompiledRules, ContentFacts } from "./compile";

/**
 * Reads what the content rules look at from a message while it streams in: the top-level header
 * fields the rules name, the From addresses, and, when a rule looks at attachments, the file name
 * of every MIME part at any depth (Content-Disposition `filename`, else Content-Type `name`, RFC
 * 2231 and RFC 2047 encodings decoded), with mailsplit's parser.
 *
 * The top-level header is gathered first (at most `maxHeadBytes`). Only a multipart (or
 * message/rfc822) message whose parts the rules care about goes on through mailsplit's splitter,
 * which holds one part header and one line at a time and passes part bodies through to be
 * dropped at once; for every other message the body is only counted. Never is the message parsed
 * into memory.
 */
export interface ContentInspector {
  /**
   * The next bytes of the message as the client sent it, in order. When it answers a promise, the
   * caller reads no further until it resolves, so that no more than the splitter's buffer waits.
   */
  write(chunk: Buffer): Promise<void> | undefined;
  /** After the last chunk: what the rules need, or why the message could not be read. */
  finish(): Promise<ContentReading>;
}

export type ContentReading =
  | { ok: true; facts: ContentFacts }
  | { ok: false; reason: "too_complex"; error: Error };

/** More MIME parts than this, or a header block larger than `maxHeadBytes`, cannot be judged. */
export const maxMimeParts = 10_000;
export const maxHeadBytes = 1024 * 1024;

const headerEnd = Buffer.from("\r\n\r\n");
const CR = 0x0d;
const LF = 0x0a;

export function inspectContent(rules: Pick<CompiledRules, "headerNames" | "needsParts">): ContentInspector {
  const facts: ContentFacts = {
    size: 0,
    headerFrom: [],
    headers: new Map(),
    attachmentExtensions: new Set(),
  };
  /** The top-level header as it arrives, until its blank line. */
  let head: Buffer[] | undefined = [];
  let headBytes = 0;
  let failure: Error | undefined;
  let parts: ReturnType<typeof partsReader> | undefined;

  /** Reads the top-level header; `rest` is what follows it. */
  const readHead = (block: Buffer, rest: Buffer[]) => {
    head = undefined;
    const root = new MimeNode(false, { maxHeadSize: maxHeadBytes });
    root.addHeaderChunk(block);
    root.parseHeaders();
    readTopHeaders(root, rules.headerNames, facts);
    addExtension(root.filename, facts);
    if (rules.needsParts && (root.multipart || root.rfc822)) {
      parts = partsReader(facts);
      return parts.write(Buffer.concat([block, ...rest]));
    }
    return undefined;
  };

  return {
    write(chunk) {
      facts.size += chunk.length;
      if (failure) return undefined;
      if (parts) return parts.write(chunk);
      if (!head) return undefined;
      // The blank line may straddle chunks: look from 3 bytes before this chunk.
      const searchFrom = Math.max(0, headBytes - 3);
      head.push(chunk);
      headBytes += chunk.length;
      const gathered = head.length === 1 ? chunk : Buffer.concat(head, headBytes);
      head = [gathered];
      // A message may start with its blank line (no header at all).
      const end = gathered[0] === CR && gathered[1] === LF ? -2 : gathered.indexOf(headerEnd, searchFrom);
      const blank = end === -1 ? -1 : end + 4;
      if (blank < 0) {
        if (headBytes > maxHeadBytes) failure = new Error(`the header is larger than ${maxHeadBytes} bytes`);
        return undefined;
      }
      return readHead(gathered.subarray(0, blank), [gathered.subarray(blank)]);
    },
    async finish() {
      // A message that is all header (no blank line).
      if (head && !failure) readHead(Buffer.concat(head, headBytes), []);
      if (!failure && parts) failure = await parts.finish();
      return failure ? { ok: false, reason: "too_complex", error: failure } : { ok: true, facts };
    },
  };
}

/** Every part's header, through mailsplit's splitter, for the file names of attachments. */
function partsReader(facts: ContentFacts) {
  // A forwarded message (message/rfc822) is read into unless it is an attachment or encoded
  // (base64, quoted-printable): then it is one part, named as its own header names it.
  const splitter = new Splitter({
    maxChildNodes: maxMimeParts,
    maxHeadSize: maxHeadBytes,
    defaultInlineEmbedded: true,
  });
  // Its typings declare only the `data` event; `end` and `error` are the Transform's own.
  const stream = splitter as unknown as Transform;
  let failure: Error | undefined;
  const ended = new Promise<void>((resolve) => {
    stream.on("end", resolve);
    stream.on("error", (error: Error) => {
      failure ??= error;
      resolve();
    });
  });
  splitter.on("data", (chunk: SplitterChunk) => {
    if (chunk.type === "node" && !chunk.root) addExtension(chunk.filename, facts);
  });
  return {
    write(chunk: Buffer): Promise<void> | undefined {
      if (failure || splitter.write(chunk)) return undefined;
      // An error ends the splitter without a drain.
      return Promise.race([new Promise<void>((resolve) => stream.once("drain", resolve)), ended]);
    },
    async finish(): Promise<Error | undefined> {
      if (!failure) splitter.end();
      await ended;
      return failure;
    },
  };
}

function readTopHeaders(node: MimeNode, names: ReadonlySet<string>, facts: ContentFacts): void {
  const headers = node.headers;
  if (!headers) return;
  for (const name of names) facts.headers.set(name, headers.get(name).map(decodedValue));
  facts.headerFrom = headers
    .get("from")
    .flatMap((line) => addressparser(decodedValue(line), { flatten: true }))
    .flatMap((address) => (address.address?.includes("@") ? [address.address] : []));
}

function addExtension(filename: string | false, facts: ContentFacts): void {
  const extension = filename ? extensionOf(filename) : undefined;
  if (extension) facts.attachmentExtensions.add(extension);
}

/** A raw header line (`Name: value`, maybe folded) as a reader shows its value. */
function decodedValue(line: string): string {
  const { value } = libmime.decodeHeader(line);
  try {
    return libmime.decodeWords(value).trim();
  } catch {
    return value.trim();
  }
}

/**
 * The extension a file name ends in, lower-case; trailing dots and spaces ignored, as Windows
 * ignores them when it opens `invoice.exe.` or `invoice.exe `.
 */
export function extensionOf(filename: string): string | undefined {
  const name = filename.replace(/[.\s]+$/, "");
  const dot = name.lastIndexOf(".");
  return dot < 0 ? undefined : name.slice(dot).toLowerCase();
}
