// The transport seam: TLS byte streams below, frames and everything else above. A `Connection` is
// a byte source and sink plus `close`; the server gets them from a `Listener`, and everything
// above (framing, dispatch) is the same whatever made them. Two listeners, chosen by name:
// - "node" (the default, _transport_node.ts) on Deno's node:tls: client certificates, Nagle off,
//   `reusePort`, PROXY headers; a handshake that fails or stalls closes its socket at once.
// - "deno" (_transport_deno.ts) on Deno.listenTls: none of those, and a socket may outlive its
//   connection's close (see the top of that module).

import { listenDeno } from "./_transport_deno.ts";
import { listenNode } from "./_transport_node.ts";

export type { CertificateIdentity } from "./_x509.ts";
import type { CertificateIdentity } from "./_x509.ts";
export type { HandshakeFailure } from "./_handshake_failure.ts";
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

/** What a listener needs to know. */
export interface ListenOptions {
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
   * `"protocol"` handshake failure. Needs the "node" transport.
   *
   * @default {false}
   */
  proxyProtocol?: boolean | undefined;
  /** Called with every connection whose handshake completed. */
  onConnection(conn: Connection): void;
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
  /** A one-line report of something that cost a connection, or of the listener itself. */
  log(error: unknown, line: string): void;
}

/** A listening transport. */
export interface Listener {
  /** The bound address, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  /** Stops accepting; connections already handed out stay open. Idempotent. */
  close(): void;
  /**
   * Resolves once the listener has stopped after `close()`, and the connections closed by then
   * have let their sockets go (the listener's close cuts their waits short).
   */
  readonly closed: Promise<void>;
}

/** The transports a server can use. */
export type TransportName = "node" | "deno";

/**
 * Starts listening with the named transport. Resolves once the port is bound; rejects with a
 * `TypeError` when the transport cannot do what the options ask.
 */
export function listen(transport: TransportName, options: ListenOptions): Promise<Listener> {
  return transport === "deno" ? listenDeno(options) : listenNode(options);
}
