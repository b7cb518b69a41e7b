import { PassThrough, type Transform } from "node:stream";
import { UpstreamTransports } from "@postern/relay";
import SMTPConnection from "nodemailer/lib/smtp-connection";
import { describe, expect, it } from "vitest";

interface DataStream extends Transform {
  inByteCount: number;
  outByteCount: number;
}

// Installing the adaptation is what constructing the transports does.
new UpstreamTransports({ maxConnections: 1 }).close();

/** A send stream as the client makes it for a message, piped into a stand-in for its socket. */
function sendStream(): DataStream {
  const connection = new SMTPConnection({}) as unknown as {
    _socket: PassThrough;
    _createSendStream(callback: () => void): DataStream;
  };
  connection._socket = new PassThrough();
  const stream = connection._createSendStream(() => {});
  stream.unpipe();
  return stream;
}

/** nodemailer's own DataStream, byte by byte: the class the adapted stream is an instance of. */
function libraryStream(): DataStream {
  const Library = sendStream().constructor as new () => DataStream;
  return new Library();
}

async function run(stream: DataStream, chunks: Buffer[]) {
  const out: Buffer[] = [];
  stream.on("data", (chunk: Buffer) => out.push(chunk));
  // Unpiped from its socket, the stream was paused: a data listener alone does not resume it.
  stream.resume();
  const ended = new Promise((resolve) => stream.on("end", resolve));
  for (const chunk of chunks) stream.write(chunk);
  stream.end();
  await ended;
  return { bytes: Buffer.concat(out), inByteCount: stream.inByteCount, outByteCount: stream.outByteCount };
}

/** Random text over an alphabet heavy in CR, LF and dots, cut into random chunks. */
function randomChunks(seed: number): Buffer[] {
  let state = seed;
  const next = (n: number) => {
    state = (state * 1103515245 + 12345) % 2 ** 31;
    return state % n;
  };
  const alphabet = ["\r\n", "\r\n", "\r\n.", ".", "a", "bc", "\r", "\n", "..", "\r\n.\r\n"];
  const text = Buffer.from(
    Array.from({ length: 1 + next(60) }, () => alphabet[next(alphabet.length)]).join(""),
  );
  const chunks: Buffer[] = [];
  for (let at = 0; at < text.length; ) {
    const size = 1 + next(12);
    chunks.push(text.subarray(at, at + size));
    at += size;
  }
  return chunks;
}

describe("the SMTP client's dot stuffing", () => {
  it("sends the bytes nodemailer's own stream sends, for any line endings, dots and chunking", async () => {
    for (let seed = 1; seed <= 2_000; seed++) {
      const chunks = randomChunks(seed);
      const adapted = await run(sendStream(), chunks);
      const library = await run(libraryStream(), chunks);
      expect(adapted, `seed ${seed}: ${JSON.stringify(Buffer.concat(chunks).toString())}`).toEqual(library);
    }
  });

  it("stuffs a clean body's dots without nodemailer's byte-by-byte code, and leaves it any bare CR or LF", async () => {
    const library = Object.getPrototypeOf(sendStream()) as { _transform: (...args: unknown[]) => void };
    const byteByByte = library._transform;
    let calls = 0;
    library._transform = function (this: unknown, ...args: unknown[]) {
      calls++;
      return byteByByte.apply(this, args);
    };
    try {
      const clean = await run(sendStream(), [
        Buffer.from(".first\r\nline\r\n..two\r\n"),
        Buffer.from(".three\r\n"),
      ]);
      expect(clean.bytes.toString()).toBe("..first\r\nline\r\n...two\r\n..three\r\n.\r\n");
      expect(calls).toBe(0);
      const bare = await run(sendStream(), [Buffer.from("one\ntwo\r\n")]);
      expect(bare.bytes.toString()).toBe("one\r\ntwo\r\n.\r\n");
      expect(calls).toBe(1);
    } finally {
      library._transform = byteByByte;
    }
  });
});
