import type { Transform } from "node:stream";
import { type MimeNode, Splitter, type SplitterChunk } from "@zone-eu/mailsplit";
import libmime from "libmime";
import addressparser from "nodemailer/lib/addressparser";
import type { CompiledRules, ContentFacts } from "./compile";

/**
 * Reads what the content rules look at from a message while it streams in, with mailsplit's
 * MIME splitter: the top-level header fields the rules name, the From addresses, and the file
 * name of every part at any depth (Content-Disposition `filename`, else Content-Type `name`,
 * RFC 2231 and RFC 2047 encodings decoded by mailsplit). Part bodies pass through and are dropped
 * at once: what is held is one header block at a time (at most `maxHeadBytes`) and the splitter's
 * current line, never the message.
 */
export interface ContentInspector {
  /**
   * The next bytes of the message as the client sent it, in order. Resolves when the splitter can
   * take more: the caller reads no further meanwhile, so that no more than its buffer waits.
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

export function inspectContent(rules: Pick<CompiledRules, "headerNames">): ContentInspector {
  const splitter = new Splitter({ maxChildNodes: maxMimeParts, maxHeadSize: maxHeadBytes });
  const facts: ContentFacts = {
    size: 0,
    headerFrom: [],
    headers: new Map(),
    attachmentExtensions: new Set(),
  };
  let failure: Error | undefined;
  // Its typings declare only the `data` event; `end` and `error` are the Transform's own.
  const stream = splitter as unknown as Transform;
  const ended = new Promise<void>((resolve) => {
    stream.on("end", resolve);
    stream.on("error", (error: Error) => {
      failure ??= error;
      resolve();
    });
  });
  splitter.on("data", (chunk: SplitterChunk) => {
    if (chunk.type !== "node") return;
    if (chunk.root) readTopHeaders(chunk, rules.headerNames, facts);
    const extension = chunk.filename ? extensionOf(chunk.filename) : undefined;
    if (extension) facts.attachmentExtensions.add(extension);
  });

  return {
    write(chunk) {
      facts.size += chunk.length;
      if (failure || splitter.write(chunk)) return undefined;
      return new Promise((resolve) => {
        stream.once("drain", resolve);
        // An error ends the splitter without a drain: the rest is not read into it.
        void ended.then(() => resolve());
      });
    },
    async finish() {
      if (!failure) splitter.end();
      await ended;
      return failure ? { ok: false, reason: "too_complex", error: failure } : { ok: true, facts };
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
