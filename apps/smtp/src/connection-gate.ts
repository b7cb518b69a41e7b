import type { Server, Socket } from "node:net";
import type { Logger } from "@postern/telemetry";
import type { SMTPServer } from "smtp-server";
import type { SmtpMetrics } from "./metrics";
import { keptOnUpgrade } from "./protocol";
import { replies, type SmtpReply } from "./replies";

/**
 * The connection limits, held at TCP accept on every listener, before any TLS handshake:
 * SMTP_MAX_CONNECTIONS for the process, SMTP_MAX_CONNECTIONS_PER_IP per client address, and
 * SMTP_TLS_HANDSHAKE_TIMEOUT for a connection to become an SMTP session. So file descriptors are
 * bounded by the caps, whatever clients do before TLS: a connection that never sends a
 * ClientHello holds one for at most the handshake deadline, and one over a cap not at all.
 *
 * A connection over a cap is closed at once: with `421 4.7.0` on the plain port, without a word
 * on the implicit-TLS port (nothing can be sent before the handshake, and doing the handshake to
 * say 421 would cost the CPU and the time the cap protects). Behind SMTP_PROXY_PROTOCOL the
 * client's address is known once the PROXY header is read, so the per-address cap is held there,
 * still before TLS.
 *
 * smtp-server counts and times connections only once their session starts, after the handshake
 * (its `maxClients` is a check at greeting time, and the handshake's wait is the idle timeout).
 * The gate therefore sits in front of smtp-server's accept: it takes over the net.Server's
 * 'connection' listener, wraps `_handleProxy` (where smtp-server learns the client's address,
 * PROXY header or not) and reads `_pendingSockets` (the sockets whose handshake is ahead, with the
 * topmost socket to destroy). Checked against smtp-server 3.21 (apps/smtp/test/connection-limits).
 */
export interface ConnectionGateOptions {
  maxConnections: number;
  maxConnectionsPerIp: number;
  handshakeTimeoutMs: number;
  /** The SMTP role's, or the inbound role's own of the same shape. */
  metrics: Pick<SmtpMetrics, "connectionsOpen" | "sessions" | "sessionsCut">;
  log: Logger;
}

interface ServerInternals {
  server: Server;
  _pendingSockets: Map<Socket, Socket>;
  _handleProxy(
    socket: Socket,
    callback: (error: Error | null, options?: { remoteAddress?: string }) => void,
  ): void;
}

export type ConnectionGate = ReturnType<typeof createConnectionGate>;

export function createConnectionGate(options: ConnectionGateOptions) {
  const { metrics, log } = options;
  let open = 0;
  const openByIp = new Map<string, number>();

  /** What an accepted socket holds until it closes. */
  interface HeldConnection {
    ip: string | undefined;
    deadline: NodeJS.Timeout | undefined;
  }
  const heldBySocket = new WeakMap<Socket, HeldConnection>();
  const release = (held: HeldConnection) => {
    open--;
    metrics.connectionsOpen.dec();
    clearTimeout(held.deadline);
    if (held.ip === undefined) return;
    const left = (openByIp.get(held.ip) ?? 1) - 1;
    if (left > 0) openByIp.set(held.ip, left);
    else openByIp.delete(held.ip);
  };

  const refuse = (socket: Socket, secure: boolean, reply: SmtpReply, outcome: string) => {
    metrics.sessions.inc({ listener: String(socket.localPort), outcome });
    socket.on("error", () => {});
    if (secure) socket.destroy();
    else socket.write(`${reply.code} ${reply.text}\r\n`, () => socket.destroy());
  };

  /** Puts the gate in front of one listener; `secure`: implicit TLS. */
  const guard = (smtpServer: SMTPServer, secure: boolean) => {
    const internals = smtpServer as unknown as ServerInternals;
    const [accept] = internals.server.listeners("connection") as ((socket: Socket) => void)[];
    if (!accept) throw new Error("smtp-server's connection listener not found");
    internals.server.removeAllListeners("connection");
    internals.server.on("connection", (socket: Socket) => {
      if (open >= options.maxConnections)
        return refuse(socket, secure, replies.tooManyConnections, "too_many");
      open++;
      metrics.connectionsOpen.inc();
      const held: HeldConnection = { ip: undefined, deadline: undefined };
      heldBySocket.set(socket, held);
      socket.once(
        "close",
        Object.assign(() => release(held), { [keptOnUpgrade]: true }),
      );
      accept(socket);
      // Pending only while a PROXY header or the TLS handshake is awaited; a plain connection
      // without PROXY header is greeted at once.
      if (!internals._pendingSockets.has(socket)) return;
      held.deadline = setTimeout(() => {
        const topmost = internals._pendingSockets.get(socket);
        if (!topmost) return;
        metrics.sessionsCut.inc({ reason: "handshake_timeout" });
        log.debug({ ip: socket.remoteAddress }, "TLS handshake not finished in time, disconnected");
        // The TLS socket when the handshake has begun: tearing it down from below crashes Node.
        topmost.destroy();
      }, options.handshakeTimeoutMs);
      held.deadline.unref();
    });

    const handleProxy = internals._handleProxy.bind(internals);
    internals._handleProxy = (socket, callback) =>
      handleProxy(socket, (error, socketOptions) => {
        const held = heldBySocket.get(socket);
        // A socket already gone has been released: nothing to count.
        if (error || !held || socket.destroyed) return callback(error, socketOptions);
        const ip = socketOptions?.remoteAddress ?? socket.remoteAddress ?? "";
        const fromIp = openByIp.get(ip) ?? 0;
        if (fromIp >= options.maxConnectionsPerIp)
          return refuse(socket, secure, replies.tooManyConnectionsFromIp, "too_many_from_ip");
        openByIp.set(ip, fromIp + 1);
        held.ip = ip;
        callback(null, socketOptions);
      });
  };

  return { guard };
}
