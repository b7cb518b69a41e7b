import { connect as netConnect, type Socket } from "node:net";
import { type ConnectionOptions, type TLSSocket, connect as tlsConnect } from "node:tls";

export interface Reply {
  code: number;
  /** Enhanced status code of the last line, if any. */
  enhanced: string | undefined;
  lines: string[];
  text: string;
}

/**
 * A bare SMTP client for the protocol edge cases nodemailer will not produce (AUTH before TLS,
 * bare LF, pipelined smuggling). Replies are read in order; `closed` tells when the server hung up.
 */
export class RawSmtp {
  private buffer = "";
  private replies: Reply[] = [];
  private waiting: ((reply: Reply | undefined) => void)[] = [];
  private current: string[] = [];
  closed = false;

  private constructor(private socket: Socket | TLSSocket) {
    this.attach(socket);
  }

  static async connect(
    port: number,
    /**
     * `firstBytes`: written at once, before the banner is read (a PROXY header, an early talker);
     * `localAddress`: another loopback address (127.0.0.2, …) is another client.
     */
    options: { tls?: boolean; firstBytes?: string; localAddress?: string } = {},
  ): Promise<{ client: RawSmtp; banner: Reply }> {
    const { localAddress } = options;
    const socket = options.tls
      ? // Node passes localAddress on to the TCP connection; its types leave it out.
        tlsConnect({ port, host: "127.0.0.1", localAddress, rejectUnauthorized: false } as ConnectionOptions)
      : netConnect({ port, host: "127.0.0.1", localAddress });
    if (options.firstBytes) socket.write(options.firstBytes);
    await new Promise<void>((resolve, reject) => {
      socket.once(options.tls ? "secureConnect" : "connect", () => resolve());
      socket.once("error", reject);
    });
    const client = new RawSmtp(socket);
    const banner = await client.read();
    return { client, banner };
  }

  private attach(socket: Socket | TLSSocket) {
    socket.setEncoding("latin1");
    socket.on("data", (chunk: string) => this.onData(chunk));
    socket.on("close", () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) w(undefined);
    });
    socket.on("error", () => {});
  }

  private onData(chunk: string) {
    this.buffer += chunk;
    for (let end = this.buffer.indexOf("\r\n"); end >= 0; end = this.buffer.indexOf("\r\n")) {
      const line = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      this.current.push(line);
      if (line[3] !== "-") {
        const lines = this.current.map((l) => l.slice(4));
        this.current = [];
        const last = lines[lines.length - 1] ?? "";
        const reply: Reply = {
          code: Number(line.slice(0, 3)),
          enhanced: /^[245]\.\d{1,3}\.\d{1,3}(?= |$)/.exec(last)?.[0],
          lines,
          text: lines.join("\n"),
        };
        const waiter = this.waiting.shift();
        if (waiter) waiter(reply);
        else this.replies.push(reply);
      }
    }
  }

  /** The next reply; rejects when the server closed without one. */
  read(timeoutMs = 10_000): Promise<Reply> {
    const queued = this.replies.shift();
    if (queued) return Promise.resolve(queued);
    if (this.closed) return Promise.reject(new Error("connection closed"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("no reply")), timeoutMs);
      this.waiting.push((reply) => {
        clearTimeout(timer);
        if (reply) resolve(reply);
        else reject(new Error("connection closed"));
      });
    });
  }

  write(data: string | Buffer): void {
    this.socket.write(data);
  }

  async command(line: string): Promise<Reply> {
    this.write(`${line}\r\n`);
    return this.read();
  }

  async starttls(): Promise<Reply> {
    const reply = await this.command("STARTTLS");
    if (reply.code !== 220) return reply;
    const plain = this.socket;
    plain.removeAllListeners("data");
    plain.removeAllListeners("close");
    const secure = tlsConnect({ socket: plain, rejectUnauthorized: false });
    await new Promise<void>((resolve, reject) => {
      secure.once("secureConnect", () => resolve());
      secure.once("error", reject);
    });
    this.socket = secure;
    this.attach(secure);
    return reply;
  }

  authPlain(username: string, password: string): Promise<Reply> {
    return this.command(`AUTH PLAIN ${Buffer.from(`\0${username}\0${password}`).toString("base64")}`);
  }

  /** Connects, EHLO, STARTTLS, EHLO, and AUTH PLAIN when credentials are given. */
  static async session(
    port: number,
    credentials?: { username: string; password: string },
  ): Promise<{ client: RawSmtp; auth: Reply | undefined }> {
    const { client } = await RawSmtp.connect(port);
    await client.command("EHLO client.test");
    await client.starttls();
    await client.command("EHLO client.test");
    const auth = credentials ? await client.authPlain(credentials.username, credentials.password) : undefined;
    return { client, auth };
  }

  /** Resolves once the server has closed the connection. */
  async waitClosed(timeoutMs = 5_000): Promise<boolean> {
    const started = Date.now();
    while (!this.closed && Date.now() - started < timeoutMs) await new Promise((r) => setTimeout(r, 20));
    return this.closed;
  }

  close(): void {
    this.socket.destroy();
  }
}
