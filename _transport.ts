// The server's transport: TLS listeners that hand the server connections whose handshake has
// completed. A connection is a byte source and sink plus `close`; everything above it (framing,
// dispatch) is the same for every transport.
//
// Two implementations:
// - "node" (the default) on Deno's `node:tls`: a connection whose handshake fails or stalls is
//   destroyed and its socket closed at once.
// - "deno" on `Deno.listenTls`: but closing a connection whose handshake has not finished does not
//   close its socket: Deno's TLS stream waits for the handshake to end first, so a peer that
//   connects and says nothing keeps its file descriptor open for as long as it likes (seen on Deno
//   2.9.6; rustls-tokio-stream's Drop awaits the handshake task). Likewise `close()` cancels reads
//   but not a write blocked on a peer that reads nothing, so that socket stays open too. And it
//   cannot turn Nagle's algorithm off or ask for client certificates.

import tls from "node:tls";
import type { Buffer } from "node:buffer";
import type { ByteSink, ByteSource } from "./framing.ts";
import { closeQuietly, formatAddr, reason } from "./_util.ts";

/** Who a client certificate says its holder is. */
export interface CertificateIdentity {
  /** The certificate's subject, by attribute: `{ CN: "worker-1", O: "Example" }`. */
  readonly subject: Readonly<Record<string, string>>;
  /** The subject alternative names, as `DNS:name`, `IP Address:1.2.3.4`, ... */
  readonly altNames: readonly string[];
  /** The SHA-256 fingerprint, colon-separated hex. */
  readonly fingerprint: string;
}

/** One connection after its TLS handshake. */
export interface Connection extends ByteSource, ByteSink {
  /** The peer's address. */
  readonly remoteAddr: { hostname: string; port: number };
  /** The verified client certificate, when the server asked for one. */
  readonly peerCertificate: CertificateIdentity | undefined;
  /** Closes the connection at once; a pending read then resolves `null` or rejects. */
  close(): void;
}

/** What a listener needs to know. */
export interface ListenOptions {
  hostname: string;
  port: number;
  cert: string;
  key: string;
  /** Milliseconds a handshake may take before the connection is closed. */
  handshakeTimeout: number;
  /** Connections open at once, handshaking ones included; more are closed at once. */
  maxConnections: number;
  /** CA certificates (PEM) client certificates must chain to; none asked for when absent. */
  clientCa?: string | undefined;
  /** Called with every connection whose handshake completed. */
  onConnection(conn: Connection): void;
  /** A one-line report of something that cost a connection. */
  log(error: unknown, line: string): void;
}

/** A listening transport. */
export interface Listener {
  /** The bound address, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  /** Stops accepting; connections already handed out stay open. */
  close(): void;
  /** Resolves once the listener has stopped. */
  readonly closed: Promise<void>;
}

/** The transports a server can use. */
export type TransportName = "node" | "deno";

/** Starts listening with the named transport. Resolves once the port is bound. */
export function listen(transport: TransportName, options: ListenOptions): Promise<Listener> {
  if (transport === "deno" && options.clientCa !== undefined) {
    // denoland/deno#26825: Deno.listenTls cannot ask for client certificates. Refuse rather than
    // serve clients the option was meant to keep out.
    return Promise.reject(
      new TypeError(
        'Cannot serve: clientCa needs the "node" transport (Deno.listenTls cannot ask for client certificates, denoland/deno#26825)',
      ),
    );
  }
  return transport === "deno" ? Promise.resolve(listenDeno(options)) : listenNode(options);
}

// --- node:tls ---------------------------------------------------------------------------------

/** Bytes a connection buffers from its socket before it pauses reading (backpressure). */
const NODE_READ_HIGH_WATER = 256 * 1024;

/** How long a closing connection may take to flush its last bytes before it is destroyed. */
const NODE_CLOSE_GRACE_MS = 1000;

/**
 * How often the accept loop is checked when no connection has arrived for that long. Deno's
 * `node:net` stops accepting for good after running out of file descriptors (EMFILE, seen on
 * 2.9.6, with no error event); the check connects to the port itself and, if that connection is
 * never accepted, listens again.
 */
const ACCEPT_CHECK_MS = 1000;

/** How long the check's own connection may wait to be accepted before the loop counts as stuck. */
const ACCEPT_PROBE_WAIT_MS = 500;

type Socket = import("node:net").Socket;

async function listenNode(options: ListenOptions): Promise<Listener> {
  let open = 0;
  let closing = false;
  let lastAccepted = Date.now();
  let probe:
    | { port: number | undefined; seen: Map<number, Socket>; accepted: () => void }
    | undefined;
  // Sockets whose handshake has not completed: closing the listener destroys them.
  const handshaking = new Set<Socket>();
  // Sockets whose handshake failure is not worth a log line (refused ones, the check's own).
  const quiet = new WeakSet<object>();
  // The address of each raw socket as the "connection" event saw it: a TLS socket in Deno does not
  // always know it, and a failed handshake's log line must name the peer.
  const peers = new WeakMap<object, { hostname: string; port: number }>();
  const addressOf = (socket: Socket) =>
    peers.get(socket) ?? peers.get((socket as unknown as { _parent?: Socket })._parent ?? socket) ??
      { hostname: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 };
  const peerOf = (socket: Socket) => formatAddr(addressOf(socket));

  function onConnection(socket: Socket): void {
    lastAccepted = Date.now();
    const port = socket.remotePort ?? 0;
    if (probe !== undefined) {
      if (probe.port === port) {
        quiet.add(socket);
        socket.destroy();
        probe.accepted();
        return;
      }
      probe.seen.set(port, socket);
    }
    const remote = { hostname: socket.remoteAddress ?? "?", port };
    peers.set(socket, remote);
    const peer = formatAddr(remote);
    if (open >= options.maxConnections) {
      quiet.add(socket);
      socket.destroy();
      options.log(
        undefined,
        `refused ${peer}: ${open} connections open, the limit is ${options.maxConnections}`,
      );
      return;
    }
    open++;
    handshaking.add(socket);
    // Nagle's algorithm off from the first byte: the handshake's small writes must not wait
    // for delayed ACKs (40 ms on Linux), nor must small replies later.
    socket.setNoDelay(true);
    socket.once("close", () => {
      open--;
      handshaking.delete(socket);
    });
    // A raw socket error before the handshake ends is reported as tlsClientError too.
    socket.on("error", () => {});
  }

  function createServer(): tls.Server {
    const server = tls.createServer({
      cert: options.cert,
      key: options.key,
      handshakeTimeout: options.handshakeTimeout,
      ...(options.clientCa !== undefined &&
        { ca: options.clientCa, requestCert: true, rejectUnauthorized: true }),
    });
    server.on("connection", onConnection);
    server.on("tlsClientError", (error, socket) => {
      const raw = (socket as unknown as { _parent?: Socket })._parent;
      if (!quiet.has(socket) && !(raw && quiet.has(raw))) {
        options.log(error, `TLS handshake with ${peerOf(socket)} failed: ${reason(error)}`);
      }
      socket.destroy();
    });
    server.on("secureConnection", (socket) => {
      // `_parent` is the raw socket the "connection" event saw (node and Deno both set it).
      handshaking.delete((socket as unknown as { _parent?: Socket })._parent!);
      options.onConnection(new NodeConnection(socket, addressOf(socket)));
    });
    return server;
  }

  function bind(server: tls.Server): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(
        port,
        options.hostname,
        () => {
          server.off("error", reject);
          server.on("error", (error) => options.log(error, `listener error: ${reason(error)}`));
          resolve();
        },
      );
    });
  }

  // Listening again after EMFILE must take the same port, also when port 0 picked it.
  let port = options.port;
  let server = createServer();
  await bind(server);
  const address = server.address();
  if (address === null || typeof address === "string") {
    throw new Error("Cannot listen: the server has no TCP address");
  }
  port = address.port;
  const probeHost = address.address === "0.0.0.0"
    ? "127.0.0.1"
    : address.address === "::"
    ? "::1"
    : address.address;

  /** Connects to the port; listens again if that connection is never accepted. */
  async function checkAccepting(): Promise<void> {
    if (closing || probe !== undefined || Date.now() - lastAccepted < ACCEPT_CHECK_MS) return;
    const accepted = Promise.withResolvers<boolean>();
    probe = { port: undefined, seen: new Map(), accepted: () => accepted.resolve(true) };
    let tcp: Deno.TcpConn | undefined;
    const timer = setTimeout(() => accepted.resolve(false), ACCEPT_PROBE_WAIT_MS);
    try {
      tcp = await Deno.connect({ hostname: probeHost, port });
      probe.port = tcp.localAddr.port;
      const early = probe.seen.get(probe.port);
      if (early !== undefined) {
        quiet.add(early);
        early.destroy();
        accepted.resolve(true);
      }
      if (!(await accepted.promise) && !closing) {
        options.log(
          undefined,
          "the listener stopped accepting (out of file descriptors?): listening again",
        );
        const old = server;
        old.close();
        server = createServer();
        await bind(server).catch((error) =>
          options.log(error, `cannot listen again, will retry: ${reason(error)}`)
        );
      }
    } catch {
      // No descriptor for the check itself: try again at the next tick.
    } finally {
      clearTimeout(timer);
      closeQuietly(tcp ?? { close() {} });
      probe = undefined;
    }
  }
  let checking: Promise<void> = Promise.resolve();
  const watchdog = setInterval(() => {
    checking = checkAccepting();
  }, ACCEPT_CHECK_MS);
  const closed = Promise.withResolvers<void>();
  return {
    addr: { transport: "tcp", hostname: address.address, port: address.port },
    close() {
      if (closing) return;
      closing = true;
      clearInterval(watchdog);
      probe?.accepted(); // ends a check under way
      server.close(() => closed.resolve());
      for (const socket of handshaking) socket.destroy();
    },
    closed: closed.promise.then(() => checking),
  };
}

function certificateIdentity(cert: tls.PeerCertificate): CertificateIdentity | undefined {
  if (cert === null || typeof cert !== "object" || !cert.fingerprint256) return undefined;
  const subject: Record<string, string> = {};
  for (const [key, value] of Object.entries(cert.subject ?? {})) {
    subject[key] = Array.isArray(value) ? value.join(", ") : String(value);
  }
  const altNames = (cert.subjectaltname ?? "").split(", ").filter((name) => name !== "");
  return { subject, altNames, fingerprint: cert.fingerprint256 };
}

/** A `node:tls` socket as a pull-based byte source and sink. */
class NodeConnection implements Connection {
  readonly remoteAddr: { hostname: string; port: number };
  readonly peerCertificate: CertificateIdentity | undefined;
  #socket: tls.TLSSocket;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #error: unknown;
  #wake: (() => void) | undefined;

  constructor(socket: tls.TLSSocket, remoteAddr: { hostname: string; port: number }) {
    this.#socket = socket;
    this.remoteAddr = remoteAddr;
    this.peerCertificate = socket.authorized
      ? certificateIdentity(socket.getPeerCertificate())
      : undefined;
    socket.on("data", (chunk: Buffer) => {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
      if (this.#buffered > NODE_READ_HIGH_WATER) socket.pause();
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
    });
  }

  async read(into: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.#error !== undefined) throw this.#error;
      if (this.#ended) return null;
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
    if (this.#buffered <= NODE_READ_HIGH_WATER && this.#socket.isPaused()) this.#socket.resume();
    return count;
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#error !== undefined) return Promise.reject(this.#error);
    if (this.#socket.destroyed) return Promise.reject(new Deno.errors.BrokenPipe("socket closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(bytes, (error) => {
        if (error) reject(error);
        else resolve(bytes.length);
      });
    });
  }

  close(): void {
    const socket = this.#socket;
    if (!socket.destroyed && !socket.writableEnded) {
      // end() sends close_notify after what is queued; destroy() if that cannot finish soon.
      const timer = setTimeout(() => socket.destroy(), NODE_CLOSE_GRACE_MS);
      socket.once("close", () => clearTimeout(timer));
      socket.once("finish", () => socket.destroy());
      socket.end();
    }
    this.#ended = true;
    this.#notify();
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

// --- Deno.listenTls ---------------------------------------------------------------------------

function listenDeno(options: ListenOptions): Listener {
  const listener = Deno.listenTls({
    hostname: options.hostname,
    port: options.port,
    cert: options.cert,
    key: options.key,
    transport: "tcp",
  });
  let closing = false;
  let open = 0;
  let wake: (() => void) | undefined;

  async function handle(conn: Deno.TlsConn): Promise<void> {
    const peer = formatAddr(conn.remoteAddr);
    try {
      await handshake(conn, options.handshakeTimeout);
    } catch (error) {
      options.log(error, `TLS handshake with ${peer} failed: ${reason(error)}`);
      closeQuietly(conn);
      return;
    }
    if (closing) return closeQuietly(conn);
    const connection = new DenoConnection(conn);
    options.onConnection(connection);
    await connection.done;
  }

  async function acceptLoop(): Promise<void> {
    let backoff = 0;
    while (!closing) {
      let conn: Deno.TlsConn;
      try {
        conn = await listener.accept();
        backoff = 0;
      } catch (error) {
        if (closing || error instanceof Deno.errors.BadResource) break;
        // EMFILE and friends pass; ending the server over them is the bug this project fixes.
        backoff = Math.min(Math.max(backoff * 2, 10), 1000);
        options.log(error, `accept failed, retrying in ${backoff} ms: ${reason(error)}`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoff);
          wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        wake = undefined;
        continue;
      }
      if (open >= options.maxConnections) {
        const peer = formatAddr(conn.remoteAddr);
        closeQuietly(conn);
        options.log(
          undefined,
          `refused ${peer}: ${open} connections open, the limit is ${options.maxConnections}`,
        );
        continue;
      }
      open++;
      handle(conn).finally(() => open--);
    }
    closeQuietly(listener);
  }

  return {
    addr: listener.addr,
    close() {
      closing = true;
      closeQuietly(listener);
      wake?.();
    },
    closed: acceptLoop(),
  };
}

/** A `Deno.TlsConn` whose handshake completed; `done` resolves when it is closed. */
class DenoConnection implements Connection {
  readonly remoteAddr: { hostname: string; port: number };
  readonly peerCertificate = undefined;
  readonly done: Promise<void>;
  #conn: Deno.TlsConn;
  #closed = false;
  #resolveDone!: () => void;

  constructor(conn: Deno.TlsConn) {
    this.#conn = conn;
    this.remoteAddr = conn.remoteAddr;
    this.done = new Promise((resolve) => this.#resolveDone = resolve);
  }

  read(into: Uint8Array): Promise<number | null> {
    return this.#conn.read(into);
  }

  write(bytes: Uint8Array): Promise<number> {
    return this.#conn.write(bytes);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeQuietly(this.#conn);
    this.#resolveDone();
  }
}

/** Completes the TLS handshake, or rejects once `timeout` ms have passed. */
async function handshake(conn: Deno.TlsConn, timeout: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      conn.handshake(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no handshake within ${timeout} ms`)), timeout);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
