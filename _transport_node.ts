// The "node" transport: a node:tls server and its connections, on Deno's node compatibility
// layer, Node.js or Bun. A connection whose handshake fails or stalls is destroyed and its socket
// closed at once, and an accept watchdog (_watchdog.ts) covers Deno's node:net giving up accepting
// after EMFILE. Bun's tls.Server hands out the TLS socket itself as the "connection" event's raw
// socket (with no `_parent`): see `#rawOf`.
//
// With `proxyProtocol`, a net.Server listens in front of the tls.Server, which never listens: each
// raw socket's PROXY header is read off it (_proxy_protocol.ts), the bytes after the header are
// pushed back (`unshift`), and the socket is handed to the tls.Server as its "connection" event.
// Deno 2.9.6's node:tls reads the handshake through the socket's stream, so the pushed-back bytes
// (often the ClientHello, in the header's own segment) reach it; the TLS socket's `_parent` is the
// raw socket as usual. One deadline, from the accept, covers the header and the handshake.
//
// This module does not import _transport.ts, which imports it: it takes its types from
// _transport_types.ts, and its listener fits `Listener` (_transport.ts) by shape, which the
// compiler checks where listen() hands it out.

import tls from "node:tls";
import type { Buffer } from "node:buffer";
import net from "node:net";
import type { Socket } from "node:net";
import { type CertificateIdentity, readCertificateIdentity } from "./_x509.ts";
import { disconnectError, formatAddr, reason, tlsReason } from "./_util.ts";
import { AcceptQueue, AcceptWatchdog, SelfProbe, socketInode } from "./_watchdog.ts";
import { type HandshakeFailure, handshakeFailure } from "./_handshake_failure.ts";
import { readProxyHeader } from "./_proxy_protocol.ts";
import type { Connection, ListenOptions, TransportLogFields } from "./_transport_types.ts";
import { deno } from "./_runtime.ts";

/** Bytes a connection buffers from its socket before it pauses reading (backpressure). */
const READ_HIGH_WATER = 256 * 1024;

/** How long a closing connection may take to flush its last bytes before it is destroyed. */
const CLOSE_GRACE_MS = 1000;

interface Address {
  hostname: string;
  port: number;
}

/** A listener's address: the shape of `Deno.NetAddr`, without Deno's types. */
interface ListenAddr {
  transport: "tcp";
  hostname: string;
  port: number;
}

/** Listens with node:tls; resolves once the port is bound. */
export async function listenNode(options: ListenOptions<NodeConnection>): Promise<NodeListener> {
  const listener = new NodeListener(options);
  await listener.listen();
  return listener;
}

/** A node:tls server that hands out connections whose handshake completed. */
export class NodeListener {
  #options: ListenOptions<NodeConnection>;
  /** The listening server: the tls.Server, or with `proxyProtocol` the net.Server in front. */
  #server: net.Server;
  #addr: ListenAddr | undefined;
  #open = 0;
  #closing = false;
  #restarting = false;
  #closed = Promise.withResolvers<void>();
  /** Raw sockets whose handshake has not completed: closing the listener destroys them. */
  #handshaking = new Set<Socket>();
  /**
   * Raw sockets whose handshake failure is not worth a line nor a count: refused ones, the
   * probe's, those the listener's close destroyed.
   */
  #quiet = new WeakSet<Socket>();
  /** Raw sockets whose failure was reported already: an error after that is its echo. */
  #reported = new WeakSet<Socket>();
  /** Each raw socket's peer as the "connection" event saw it: a TLS socket may not know it. */
  #peers = new WeakMap<Socket, Address>();
  /** The client's address from a raw socket's PROXY header, when it named one. */
  #clients = new WeakMap<Socket, Address>();
  /** The deadline of each raw socket still in its PROXY header or handshake. */
  #deadlines = new WeakMap<Socket, ReturnType<typeof setTimeout>>();
  /** The raw socket node:tls is wrapping right now (see #createServer). */
  #arriving: Socket | undefined;
  #probe: SelfProbe | undefined;
  #watchdog: AcceptWatchdog | undefined;
  /** The listening socket's inode, with `reusePort` where /proc can be read. */
  #inode: string | undefined;

  /** Use {@linkcode listenNode}. */
  constructor(options: ListenOptions<NodeConnection>) {
    this.#options = options;
    this.#server = this.#createServer();
  }

  /** The bound address, with the real port when 0 was asked for. */
  get addr(): ListenAddr {
    return this.#addr!;
  }

  /** Resolves once the listener has stopped (after `close()`). */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  /** Binds the port and starts the watchdog. */
  async listen(): Promise<void> {
    await this.#bind(this.#server, this.#options.port);
    const address = this.#server.address();
    if (address === null || typeof address === "string") {
      this.#server.close();
      throw new Error("Cannot listen: the server has no TCP address");
    }
    this.#addr = { transport: "tcp", hostname: address.address, port: address.port };
    if (this.#options.reusePort) {
      // Other sockets share the port and would answer a probe: only the accept queue can tell.
      // Where it cannot be read (not Linux, or no --allow-all) there is no watchdog.
      if (this.#inode === undefined) return;
      const ipv6 = address.family === "IPv6" || address.address.includes(":");
      this.#watchdog = this.#watch(new AcceptQueue(() => this.#inode, ipv6));
    } else {
      this.#probe = new SelfProbe(loopbackFor(address.address), address.port);
      this.#watchdog = this.#watch(this.#probe);
    }
  }

  /** Stops accepting and destroys connections still in their handshake; handed-out ones stay. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    // A restart under way closes the server it makes once bound (see #listenAgain).
    const stopped = this.#restarting ? undefined : closeServer(this.#server);
    for (const socket of this.#handshaking) {
      this.#quiet.add(socket);
      socket.destroy();
    }
    this.#closed.resolve(Promise.all([stopped, this.#watchdog?.close()]).then(() => {}));
  }

  #watch(check: AcceptQueue | SelfProbe): AcceptWatchdog {
    return new AcceptWatchdog({
      check,
      restart: () => this.#listenAgain(),
      log: (error, line, fields) => this.#options.log(error, line, fields),
    });
  }

  /** Replaces a listener that no longer accepts with a new one on the same port. */
  async #listenAgain(): Promise<void> {
    if (this.#closing) return;
    // Closing the stuck socket resets the connections waiting in its queue; they retry.
    void closeServer(this.#server);
    const server = this.#createServer();
    this.#server = server;
    this.#restarting = true;
    try {
      await this.#bind(server, this.#addr!.port);
    } finally {
      this.#restarting = false;
    }
    if (this.#closing) await closeServer(server);
  }

  /** A new server to listen with: a tls.Server, or a net.Server in front of one. */
  #createServer(): net.Server {
    const options = this.#options;
    const server = tls.createServer({
      cert: options.cert,
      key: options.key,
      handshakeTimeout: options.handshakeTimeout,
      ...(options.clientCa !== undefined &&
        { ca: options.clientCa, requestCert: true, rejectUnauthorized: true }),
    });
    // Ahead of node:tls's own "connection" listener: a handshake that fails at once (a key the
    // TLS stack refuses) is reported from inside that listener, with no other way to its socket.
    server.prependListener("connection", (socket: Socket) => this.#arriving = socket);
    server.on("tlsClientError", (error, socket) => this.#onHandshakeError(error, socket));
    server.on("secureConnection", (socket) => this.#onSecureConnection(socket));
    if (!options.proxyProtocol) {
      server.on("connection", (socket: Socket) => this.#onConnection(socket, undefined));
      return server;
    }
    server.on("connection", () => this.#arriving = undefined);
    const front = net.createServer();
    front.on("connection", (socket: Socket) => this.#onConnection(socket, server));
    return front;
  }

  async #bind(server: net.Server, port: number): Promise<void> {
    this.#inode = undefined;
    await this.#listenOn(server, port);
    if (this.#options.reusePort) this.#inode = await listeningInode(server);
  }

  #listenOn(server: net.Server, port: number): Promise<void> {
    const { hostname, reusePort, log } = this.#options;
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host: hostname, ...(reusePort && { reusePort: true }) }, () => {
        server.off("error", reject);
        server.on("error", (error) => {
          log(error, `listener error: ${reason(error)}`, { event: "listener_error" });
        });
        resolve();
      });
    });
  }

  /**
   * A raw socket accepted: refused, the probe's, or counted and watched until its handshake ends.
   * With `proxyProtocol`, `tlsServer` is whom to hand it to once its header is read; without,
   * node:tls has wrapped it already.
   */
  #onConnection(socket: Socket, tlsServer: tls.Server | undefined): void {
    this.#arriving = undefined;
    const peer = { hostname: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 };
    this.#peers.set(socket, peer);
    let probe = false;
    const decide = (isProbe: boolean) => {
      if (!isProbe) return this.#watchdog?.accepted();
      probe = true;
      this.#quiet.add(socket);
      socket.destroy();
    };
    if (this.#probe !== undefined) this.#probe.claim(peer, decide);
    else decide(false);
    if (probe) return;
    const limit = this.#options.maxConnections;
    if (this.#closing || this.#open >= limit) {
      this.#quiet.add(socket);
      socket.destroy();
      if (this.#closing) return;
      const open = `${this.#open} connections open`;
      const from = formatAddr(peer);
      this.#unlessProbe(peer, () => {
        this.#options.onRefused?.("max_connections");
        this.#options.log(undefined, `refused ${from}: ${open}, the limit is ${limit}`, {
          event: "connection_refused",
          peer: from,
          limit: "max_connections",
        });
      });
      return;
    }
    this.#open++;
    this.#handshaking.add(socket);
    // Nagle's algorithm off from the first byte: the handshake's small writes must not wait
    // for delayed ACKs (40 ms on Linux), nor must small replies later.
    socket.setNoDelay(true);
    socket.once("close", () => {
      this.#open--;
      this.#handshaking.delete(socket);
      clearTimeout(this.#deadlines.get(socket));
    });
    // A raw socket error before the handshake ends is reported as tlsClientError too (or, before
    // a PROXY header's end, by the header's reader).
    socket.on("error", () => {});
    if (tlsServer !== undefined) void this.#readProxyHeader(socket, peer, tlsServer);
  }

  /** Reads a raw socket's PROXY header, then hands the socket to `tlsServer`. */
  async #readProxyHeader(socket: Socket, peer: Address, tlsServer: tls.Server): Promise<void> {
    const ms = this.#options.handshakeTimeout;
    let phase: "header" | "handshake" = "header";
    this.#deadlines.set(
      socket,
      setTimeout(() => {
        if (!this.#handshaking.has(socket) || this.#quiet.has(socket)) return;
        if (phase === "header") {
          const from = formatAddr(peer);
          const line = `PROXY header from ${from} failed: no complete header within ${ms} ms`;
          const fields = { event: "proxy_header_failed", peer: from, reason: "timeout" } as const;
          this.#report(socket, peer, undefined, line, fields);
        } else {
          const client = formatAddr(this.#clients.get(socket) ?? peer);
          const line = `TLS handshake with ${client} failed: no handshake within ${ms} ms`;
          const fields = { event: "handshake_failed", peer: client, reason: "timeout" } as const;
          this.#report(socket, peer, undefined, line, fields);
        }
        socket.destroy();
      }, ms),
    );
    const outcome = await readProxyHeader(socket);
    // Destroyed meanwhile: by the deadline, as the probe's, or by the listener's close.
    if (this.#quiet.has(socket) || this.#reported.has(socket)) return;
    if ("failure" in outcome) {
      socket.destroy();
      const from = formatAddr(peer);
      this.#report(socket, peer, undefined, `PROXY header from ${from} failed: ${outcome.reason}`, {
        event: "proxy_header_failed",
        peer: from,
        reason: outcome.failure,
      });
      return;
    }
    if (outcome.source !== undefined) this.#clients.set(socket, outcome.source);
    phase = "handshake";
    try {
      tlsServer.emit("connection", socket);
    } catch (error) {
      // node:tls reports its failures as tlsClientError; anything thrown is a bug to log, not to
      // let escape as an unhandled rejection.
      socket.destroy();
      const client = formatAddr(this.#clients.get(socket) ?? peer);
      this.#report(socket, peer, error, `TLS handshake with ${client} failed: ${reason(error)}`, {
        event: "handshake_failed",
        peer: client,
        reason: "other",
      });
    }
  }

  #onHandshakeError(error: Error, socket: tls.TLSSocket): void {
    const raw = this.#rawOf(socket);
    // Deno reports a client certificate clientCa refused as a hang-up: this says what it was.
    const refused = (socket as { authorizationError?: unknown }).authorizationError;
    socket.destroy();
    if (raw !== undefined && (this.#quiet.has(raw) || this.#reported.has(raw))) return;
    const why = refused
      ? `the client's certificate was refused (${reason(refused)})`
      : tlsReason(error);
    const client = formatAddr(this.#peerOf(socket));
    const peer = (raw && this.#peers.get(raw)) ?? this.#peerOf(socket);
    this.#report(raw, peer, error, `TLS handshake with ${client} failed: ${why}`, {
      event: "handshake_failed",
      peer: client,
      reason: refused ? "certificate" : handshakeFailure(error),
    });
  }

  /**
   * Logs and counts a failed handshake (or PROXY header) once, under `fields.reason`, unless the
   * socket turns out to be the probe's. `peer` is the raw socket's own address, by which the probe
   * knows its connection; `fields.peer` is the one the line names (a PROXY header's client).
   */
  #report(
    raw: Socket | undefined,
    peer: Address,
    error: unknown,
    line: string,
    fields: TransportLogFields & { readonly reason: HandshakeFailure },
  ): void {
    if (raw !== undefined) this.#reported.add(raw);
    this.#unlessProbe(peer, () => {
      // Held lines are emitted later: the socket may have turned out to be the probe's by then.
      if (raw !== undefined && this.#quiet.has(raw)) return;
      this.#options.onHandshakeFailure?.(fields.reason);
      this.#options.log(error, line, fields);
    });
  }

  /** Calls `emit` unless the connection from `peer` is the probe's, now or once that is known. */
  #unlessProbe(peer: Address, emit: () => void): void {
    if (this.#probe !== undefined) this.#probe.report(peer, emit);
    else emit();
  }

  #onSecureConnection(socket: tls.TLSSocket): void {
    const raw = this.#rawOf(socket);
    if (raw !== undefined) {
      this.#handshaking.delete(raw);
      clearTimeout(this.#deadlines.get(raw));
    }
    const peer = this.#peerOf(socket);
    let identity: CertificateIdentity | undefined;
    try {
      // Deno says `authorized` of every server socket: only one that asked has a certificate.
      const der = this.#options.clientCa !== undefined && socket.authorized
        ? socket.getPeerCertificate().raw
        : undefined;
      identity = der === undefined ? undefined : readCertificateIdentity(der);
    } catch (error) {
      // The handshake verified it, but a name in it cannot be read unambiguously.
      const client = formatAddr(peer);
      this.#options.log(error, `refused ${client}: ${reason(error)}`, {
        event: "certificate_unreadable",
        peer: client,
      });
      socket.destroy();
      return;
    }
    this.#options.onConnection(new NodeConnection(socket, peer, identity));
  }

  /**
   * The raw socket under a TLS socket: its `_parent` (node and Deno), the TLS socket itself when
   * the "connection" event gave it (Bun), or the one node:tls is wrapping right now.
   */
  #rawOf(socket: tls.TLSSocket): Socket | undefined {
    return parentOf(socket) ?? (this.#peers.has(socket) ? socket : this.#arriving);
  }

  /**
   * The peer of a TLS socket, from its raw socket (Deno's TLS socket does not always know it):
   * the client's address from the PROXY header, or the socket's own.
   */
  #peerOf(socket: tls.TLSSocket): Address {
    const raw = this.#rawOf(socket);
    return (raw && (this.#clients.get(raw) ?? this.#peers.get(raw))) ??
      {
        hostname: raw?.remoteAddress ?? socket.remoteAddress ?? "?",
        port: raw?.remotePort ?? socket.remotePort ?? 0,
      };
  }
}

/** A node:tls socket as a pull-based byte source and sink. */
export class NodeConnection implements Connection {
  /** The peer's address. */
  readonly remoteAddr: Address;
  /** The verified client certificate's identity, when the server asked for one. */
  readonly peerCertificate: CertificateIdentity | undefined;
  /** Resolves once the socket is closed. */
  readonly closed: Promise<void>;
  #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #closing = false;
  #error: unknown;
  #wake: (() => void) | undefined;
  /** How to reject each write under way, should the connection close first. */
  #writes = new Set<(error: Error) => void>();

  /** Wraps a socket whose handshake completed. */
  constructor(
    socket: tls.TLSSocket,
    remoteAddr: Address,
    peerCertificate: CertificateIdentity | undefined,
  ) {
    this.#socket = socket;
    this.remoteAddr = remoteAddr;
    this.peerCertificate = peerCertificate;
    const closed = Promise.withResolvers<void>();
    this.closed = closed.promise;
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > READ_HIGH_WATER) pauseReading(socket);
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error) => {
      this.#error ??= error;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
      this.#failWrites();
      closed.resolve();
    });
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined && !this.#closing) throw this.#error;
      if (this.#ended || this.#closing) return null;
      await new Promise<void>((resolve) => this.#wake = resolve);
    }
    let count = 0;
    while (count < into.length && this.#chunks.length > 0) {
      const chunk = this.#chunks[0]!;
      const take = Math.min(chunk.length, into.length - count);
      into.set(take === chunk.length ? chunk : chunk.subarray(0, take), count);
      count += take;
      if (take === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(take);
    }
    this.#buffered -= count;
    if (this.#buffered <= READ_HIGH_WATER && this.#socket.isPaused()) resumeReading(this.#socket);
    return count;
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#closing || this.#socket.destroyed) return Promise.reject(this.#closedError());
    return new Promise((resolve, reject) => {
      this.#writes.add(reject);
      this.#socket.write(bytes, (error) => {
        this.#writes.delete(reject);
        if (error) reject(error);
        else resolve(bytes.length);
      });
    });
  }

  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    const socket = this.#socket;
    if (!socket.destroyed && !socket.writableEnded) {
      // end() sends close_notify after what is queued; destroy() if that cannot finish soon.
      const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
      socket.once("close", () => clearTimeout(timer));
      socket.once("finish", () => socket.destroy());
      socket.end();
    }
    // What the peer has not taken is dropped: the writer's buffers go at once, not after the grace.
    this.#chunks = [];
    this.#buffered = 0;
    this.#failWrites();
    this.#notify();
  }

  #failWrites(): void {
    for (const reject of this.#writes) reject(this.#closedError());
    this.#writes.clear();
  }

  #closedError(): Error {
    return disconnectError(
      `Cannot write to ${formatAddr(this.remoteAddr)}: the connection is closed`,
    );
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** Whether this runs on Deno, whose node:tls needs the raw handle stopped as well. */
const ON_DENO = "Deno" in globalThis;

/**
 * Stops reading from `socket` until {@linkcode resumeReading}. On Deno 2.9.6, pausing a `node:tls`
 * socket does not stop its TCP reads: the decrypted data keeps arriving and is buffered inside
 * (measured: a client flooding notifications grew the server by 750 MiB in 10 s), so the read is
 * also stopped on the raw socket's handle (see denoland/deno#33524). Elsewhere pause() suffices.
 */
function pauseReading(socket: tls.TLSSocket): void {
  socket.pause();
  if (ON_DENO) {
    (parentOf(socket) as unknown as { _handle?: { readStop?(): unknown } })?._handle?.readStop?.();
  }
}

function resumeReading(socket: tls.TLSSocket): void {
  if (ON_DENO) {
    (parentOf(socket) as unknown as { _handle?: { readStart?(): unknown } })?._handle
      ?.readStart?.();
  }
  socket.resume();
}

/** The raw socket under a TLS socket: node and Deno both keep it as `_parent`; Bun does not. */
function parentOf(socket: tls.TLSSocket): Socket | undefined {
  return (socket as unknown as { _parent?: Socket | null })._parent ?? undefined;
}

/**
 * The inode of a server's listening socket, for reading its accept queue; `undefined` where it
 * cannot be had. Node.js tells the descriptor as `_handle.fd`, the listener's own. Deno 2.9's
 * node:net tells it only through `_handle.fdForIpc()`, an internal that makes a new duplicate at
 * each call. The duplicate is closed at once, through a net.Socket (node:fs cannot close a bare
 * descriptor in Deno): left open, it would keep the socket alive after the listener closed, taking
 * its share of a shared port's connections to no one. Bun tells neither.
 */
async function listeningInode(server: net.Server): Promise<string | undefined> {
  const handle = (server as unknown as { _handle?: { fd?: unknown; fdForIpc?: () => number } })
    ._handle;
  if (deno === undefined) {
    const fd = handle?.fd;
    return typeof fd === "number" && fd >= 0 ? await socketInode(fd) : undefined;
  }
  let fd: number | undefined;
  try {
    fd = handle?.fdForIpc?.();
  } catch {
    return undefined;
  }
  if (typeof fd !== "number" || fd < 0) return undefined;
  try {
    return await socketInode(fd);
  } finally {
    try {
      new net.Socket({ fd, readable: false, writable: false }).destroy();
    } catch {
      // Nothing else can close it.
    }
  }
}

/** Closes a server; resolves once it has stopped, even if it was not listening. */
function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Where to connect to reach a listener bound to `address`: loopback for a wildcard. */
function loopbackFor(address: string): string {
  return address === "0.0.0.0" ? "127.0.0.1" : address === "::" ? "::1" : address;
}
