// The types of the transport seam, below both listeners: what a connection is, what a listener is
// told (`ListenOptions`), and the events of the lines it logs. _transport.ts re-exports them; it
// imports the listeners, which fit these types, so they cannot live there (no import cycles).

import type { CertificateIdentity } from "./_x509.ts";
import type { HandshakeFailure } from "./_handshake_failure.ts";

/**
 * One TLS byte stream after its handshake. Reads and writes are one at a time each: a read and a
 * write may be under way together, never two reads or two writes.
 */
export interface Connection {
  /** The peer's address. */
  readonly remoteAddr: { readonly hostname: string; readonly port: number };
  /**
   * The verified client certificate's identity, on a server's connection whose listener asked for
   * one (`clientCa`); absent or `undefined` otherwise.
   */
  readonly peerCertificate?: CertificateIdentity | undefined;
  /**
   * Reads into `buffer`, resolving with the number of bytes read (at least 1), or `null` at the
   * end: the peer ended the stream, or this side closed the connection (a read under way then
   * resolves `null` at once). Rejects when the stream broke: with an error for which
   * `isDisconnect()` (_util.ts) is true when the peer reset it, with the TLS stack's error when
   * the peer sent what is not TLS.
   */
  read(buffer: Uint8Array): Promise<number | null>;
  /**
   * Writes some of `bytes`, resolving with how many (at least 1) once the transport has taken
   * them; waits while the peer reads nothing. Rejects once the peer is gone or this side closed
   * the connection, a write under way included (at once, whether the bytes went out or not):
   * with an error for which `isDisconnect()` is true (code `"EPIPE"` or node's socket codes).
   */
  write(bytes: Uint8Array): Promise<number>;
  /**
   * Closes the connection: what earlier writes handed over is still sent, as far as the peer
   * takes it; a read or write under way settles at once (see `read`, `write`). Idempotent; never
   * throws.
   */
  close(): void;
  /**
   * Resolves once the connection is closed and its socket gone; never rejects. That can be long
   * after `close()`: a socket goes when the peer has taken what was written, or has left. Both
   * listeners' connections have it; optional only until the in-memory pair (tests) has it too.
   */
  readonly closed?: Promise<void>;
}

/**
 * The `event` of a listener's log line (see {@linkcode TransportLogFields} for the fields each
 * has besides `peer`):
 * - `handshake_failed`: a TLS handshake failed or stalled, `reason` says how;
 * - `proxy_header_failed`: a connection without a valid PROXY header (`proxyProtocol`): garbage
 *   (`reason` `"protocol"`), the peer gone before the header's end (`"reset"`), or no header in
 *   time (`"timeout"`); `peer` is the socket's, the balancer's;
 * - `connection_refused`: closed at once because `maxConnections` were open (`limit`);
 * - `certificate_unreadable`: a client certificate the handshake verified but whose names cannot
 *   be read unambiguously: the connection is closed ("node" only);
 * - `accept_failed`: accepting failed (out of file descriptors), retried after a pause ("deno");
 * - `listener_error`: the listening socket reported an error ("node");
 * - `watchdog_restart`: the listener stopped accepting, and listens again on a new socket;
 * - `watchdog_restart_failed`: that failed, and is retried every second (logged once).
 *
 * The first four concern one connection and name its `peer`; the others concern the listener.
 */
export type TransportEvent =
  | "handshake_failed"
  | "proxy_header_failed"
  | "connection_refused"
  | "certificate_unreadable"
  | "accept_failed"
  | "listener_error"
  | "watchdog_restart"
  | "watchdog_restart_failed";

/**
 * What a listener's log line is about, for structured logs; the shape of the server's `LogFields`
 * (_log.ts). Nothing in it is what a client sent: the message text may quote that, escaped.
 */
export interface TransportLogFields {
  /** What happened. */
  readonly event: TransportEvent;
  /**
   * The connection's peer, `host:port` (an IPv6 host in brackets), as `formatAddr` (_util.ts)
   * writes it: after a PROXY header, the client's address in it. Absent for the listener's own
   * events.
   */
  readonly peer?: string;
  /** Why a handshake or a PROXY header failed (`handshake_failed`, `proxy_header_failed`). */
  readonly reason?: HandshakeFailure;
  /** The limit that refused a connection (`connection_refused`). */
  readonly limit?: "max_connections";
}

/** What a listener needs to know: `C` is the connection type the listener hands out. */
export interface ListenOptions<C extends Connection = Connection> {
  /** The address to bind. */
  hostname: string;
  /** The port to bind; 0 picks a free one (see `Listener.addr`). */
  port: number;
  /** The server's certificate chain, PEM. */
  cert: string;
  /** The server's private key, PEM. */
  key: string;
  /** Milliseconds a handshake may take before the connection is closed. */
  handshakeTimeout: number;
  /**
   * Connections open at once, handshaking ones included, and closed ones whose socket has not
   * gone yet; more are closed at once.
   */
  maxConnections: number;
  /**
   * CA certificates (PEM) client certificates must chain to; none asked for when absent. Needs
   * the "node" transport.
   *
   * @default {undefined}
   */
  clientCa?: string | undefined;
  /**
   * Lets several listeners (processes or workers) bind the same port, the kernel spreading
   * connections among them (SO_REUSEPORT, Linux). Needs the "node" transport. The accept
   * watchdog then reads the socket's accept queue from /proc, which Deno allows only with
   * --allow-all; without it there is no watchdog.
   *
   * @default {false}
   */
  reusePort?: boolean | undefined;
  /**
   * Reads a PROXY protocol header (v1 or v2, _proxy_protocol.ts) at the start of every
   * connection, before its handshake and under the same deadline; the client's address in it
   * becomes the connection's `remoteAddr` (a v2 LOCAL header, a balancer's health check, keeps
   * the socket's). A connection without a valid header is closed, logged and counted as a
   * handshake failure (`"protocol"`, or `"reset"` or `"timeout"`). Needs the "node" transport.
   *
   * @default {false}
   */
  proxyProtocol?: boolean | undefined;
  /** Called with every connection whose handshake completed. */
  onConnection(conn: C): void;
  /**
   * Called once for each connection whose handshake (PROXY header included) failed, with why
   * (see _handshake_failure.ts), as its line is logged: never for the accept watchdog's probes,
   * refused connections, nor those closed by the listener's close.
   *
   * @default {undefined}
   */
  onHandshakeFailure?(reason: HandshakeFailure): void;
  /**
   * Called once for each connection refused at once because `maxConnections` were open, as its
   * line is logged.
   *
   * @default {undefined}
   */
  onRefused?(limit: "max_connections"): void;
  /**
   * A one-line report of something that cost a connection, or of the listener itself, with its
   * event and peer (see {@linkcode TransportEvent}).
   */
  log(error: unknown, line: string, fields: TransportLogFields): void;
}
