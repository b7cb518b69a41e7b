import type { Transform, TransformCallback } from "node:stream";
import SMTPConnection from "nodemailer/lib/smtp-connection";

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const stuffedDot = Buffer.from(".");

/** The state nodemailer's DataStream keeps between chunks (smtp-connection/data-stream.js). */
interface DataStream extends Transform {
  /** The last byte of the previous chunk; false before the first. */
  lastByte: number | false;
  inByteCount: number;
  outByteCount: number;
}

type SendStreamFactory = (
  this: unknown,
  callback: (error: Error | null, response?: string) => void,
) => DataStream;

let installed = false;

/**
 * nodemailer's SMTP client sends every message through its DataStream, which turns a bare CR or LF
 * into CRLF and stuffs a dot before each line that starts with one, deciding byte by byte in
 * JavaScript: a tenth of the delivery thread's busy time in the benchmark's `pooled-10k` and a
 * quarter in `pooled-1m`, several times what `indexOf` takes (docs/benchmarks-history.md, Fifteenth
 * round). The bodies Postern relays have no bare CR or LF (the SMTP
 * side refuses a bare CR and stores a bare LF as CRLF, docs/smtp.md), so the only change ever made
 * to them is the dot stuffing, and the line ends it depends on can be found with `indexOf`, in
 * native code. Each send stream's transform is wrapped, once per process: a chunk whose every CR
 * and LF is part of a CRLF is stuffed here, anything else goes to nodemailer's own code, and the
 * stream's state (last byte, counts) is kept as that code keeps it, so the bytes on the wire are
 * the same either way (packages/relay/test/dot-stuffing.test.ts compares them). Checked against
 * nodemailer 10.6.
 */
export function adaptSmtpClient(): void {
  if (installed) return;
  installed = true;
  const prototype = SMTPConnection.prototype as unknown as { _createSendStream: SendStreamFactory };
  const createSendStream = prototype._createSendStream;
  prototype._createSendStream = function (callback) {
    const stream = createSendStream.call(this, callback);
    const byteByByte = stream._transform;
    stream._transform = function (this: DataStream, chunk: unknown, encoding, done: TransformCallback) {
      const out = Buffer.isBuffer(chunk) && chunk.length > 0 ? stuffDots(chunk, this.lastByte) : undefined;
      if (!out) return byteByByte.call(this, chunk, encoding, done);
      const input = chunk as Buffer;
      this.inByteCount += input.length;
      this.outByteCount += out.length;
      this.lastByte = input[input.length - 1] as number;
      this.push(out);
      done();
    };
    return stream;
  };
}

/**
 * The chunk with a dot stuffed before every line that starts with one (RFC 5321 4.5.2), or
 * undefined when it holds a CR or LF outside a CRLF pair. `previous` is the byte before the chunk
 * (false at the start of the message, where a line starts too). A CR that ends the chunk is judged
 * with the next one, as nodemailer does.
 */
function stuffDots(chunk: Buffer, previous: number | false): Buffer | undefined {
  if (previous === CR && chunk[0] !== LF) return undefined;
  for (let cr = chunk.indexOf(CR); cr >= 0 && cr + 1 < chunk.length; cr = chunk.indexOf(CR, cr + 1)) {
    if (chunk[cr + 1] !== LF) return undefined;
  }
  const parts: Buffer[] = [];
  if (chunk[0] === DOT && (previous === LF || previous === false)) parts.push(stuffedDot);
  let from = 0;
  for (let lf = chunk.indexOf(LF); lf >= 0; lf = chunk.indexOf(LF, lf + 1)) {
    if ((lf === 0 ? previous : chunk[lf - 1]) !== CR) return undefined;
    if (chunk[lf + 1] === DOT) {
      parts.push(chunk.subarray(from, lf + 1), stuffedDot);
      from = lf + 1;
    }
  }
  if (parts.length === 0) return chunk;
  parts.push(chunk.subarray(from));
  return Buffer.concat(parts);
}
