// The "deno" transport: Deno.listenTls and its connections. Seen on Deno 2.9.6:
//
// - A TlsConn's close() does not close its socket while the TLS stream has work left: a handshake
//   under way (a peer that connects and says nothing), or records that a peer reading nothing has
//   not taken. close() cancels the ops under way, so nothing in JavaScript learns when the socket
//   goes: it stays open, unseen, until the peer reads or leaves (rustls-tokio-stream finishes the
//   handshake or the flush in the background).
// - So a connection is not let go while its socket lives on: a stalled handshake is waited out
//   once its timeout is logged, and a connection closed with a write blocked on a peer that reads
//   nothing waits in closeWrite() until the peer has read or left. Until then it counts against
//   maxConnections, as its descriptor counts against the process's limit. The server's queue of
//   replies goes at the close (the write under way rejects at once), and Deno holds at most
//   MAX_PINNED_BYTES of the write under way (it pins a buffer handed to an op until the op ends,
//   so larger ones go through a copy).
// - The cost, measured with 30 clients that asked for 1 MiB replies and read none, closed by
//   maxQueuedBytes: all 30 server sockets stay open until the clients leave (as they did before,
//   uncounted), each with 3.6 MiB of replies in the kernel's send queue (tcp_wmem's maximum;
//   kernel memory, not RSS) and one descriptor; the process's RSS, after a forced GC, is the
//   same with them open as after they left (under 0.1 MiB each). The 490 MiB seen with six such
//   clients was garbage not yet collected: 220 to 290 MiB here, before and after they left alike.
// - Closing the listener stops the waiting: connections then close at once, and their sockets
//   may outlive the server unseen, as before.
// - Deno.listenTls cannot ask for client certificates (denoland/deno#26825), nor turn Nagle's
//   algorithm off, and takes reusePort only with --unstable-net: those need the "node" transport.
//   Nor can it read a PROXY header: it reads the socket itself from the first byte, and Deno has
//   no server side of startTls to take over a Deno.listen connection once the header is read.
//
// This module does not import _transport.ts, which imports it: it takes its types from
// _transport_types.ts, and its listener fits `Listener` (_transport.ts) by shape, which the
// compiler checks where listen() hands it out.

import { closeQuietly, disconnectError, formatAddr, reason } from "./_util.ts";
import { HANDSHAKE_TIMEOUT_CODE, handshakeFailure } from "./_handshake_failure.ts";
import type { Connection, ListenOptions } from "./_transport_types.ts";

/**
 * The largest buffer a read or write hands to Deno as it is. Deno pins the whole buffer (all of
 * its ArrayBuffer) until the op ends, which for a write to a peer that reads nothing is until the
 * peer leaves; a larger one goes through a copy of at most this many bytes. 64 KiB is what one
 * write of a TLS connection takes at most anyway (measured on 2.9.6), and 4 TLS records.
 */
const MAX_PINNED_BYTES = 64 * 1024;

/**
 * The scratch buffer a read into a larger buffer goes through: one TLS record, which is all that
 * one read returns anyway (measured on 2.9.6). Scratch buffers are shared: a read takes one and
 * gives it back when its op ends.
 */
const SCRATCH_BYTES = 16 * 1024;

/** Scratch buffers no read is using, at most {@linkcode MAX_SPARE_SCRATCH}. */
const spareScratch: Uint8Array[] = [];

/** Enough spares for the reads of a few busy connections, little memory when idle. */
const MAX_SPARE_SCRATCH = 64;

/** The longest pause of the accept loop after an error (EMFILE and friends), in milliseconds. */
const MAX_ACCEPT_BACKOFF_MS = 1000;

interface Address {
  hostname: string;
  port: number;
}

/** Listens with Deno.listenTls; resolves once the port is bound. */
export function listenDeno(options: ListenOptions<DenoConnection>): Promise<DenoListener> {
  if (options.clientCa !== undefined) {
    // Refused rather than serving clients the option was meant to keep out.
    return Promise.reject(
      new TypeError(
        'Cannot serve: clientCa needs the "node" transport (Deno.listenTls cannot ask for client certificates, denoland/deno#26825)',
      ),
    );
  }
  if (options.reusePort) {
    return Promise.reject(
      new TypeError(
        'Cannot serve: reusePort needs the "node" transport (Deno.listenTls takes it only with --unstable-net)',
      ),
    );
  }
  if (options.proxyProtocol) {
    return Promise.reject(
      new TypeError(
        'Cannot serve: proxyProtocol needs the "node" transport (Deno.listenTls cannot read a header before the handshake)',
      ),
    );
  }
  try {
    return Promise.resolve(new DenoListener(options));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** A Deno.listenTls listener that hands out connections whose handshake completed. */
export class DenoListener {
  #listener: Deno.TlsListener;
  #options: ListenOptions<DenoConnection>;
  #closing = false;
  #open = 0;
  #wake: (() => void) | undefined;
  #loop: Promise<void>;
  /** Handed-out connections, to cut short the ones still closing when the listener closes. */
  #connections = new Set<DenoConnection>();
  /** Timed-out handshakes waited out: how to stop waiting. */
  #stalled = new Set<() => void>();
  /** What `closed` waits for: stalled handshakes waited out, connections closing. */
  #endings = new Set<Promise<void>>();

  /** Use {@linkcode listenDeno}. */
  constructor(options: ListenOptions<DenoConnection>) {
    this.#options = options;
    this.#listener = Deno.listenTls({
      hostname: options.hostname,
      port: options.port,
      cert: options.cert,
      key: options.key,
      transport: "tcp",
    });
    this.#loop = this.#acceptLoop();
  }

  /** The bound address, with the real port when 0 was asked for. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  /**
   * Resolves once the listener has stopped and the connections closed by then have let go of
   * their sockets (after `close()`, which cuts those waits short).
   */
  get closed(): Promise<void> {
    return this.#loop.then(async () => {
      while (this.#endings.size > 0) await Promise.all(this.#endings);
    });
  }

  /** Stops accepting; handed-out connections stay open, but no longer wait on close. */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    closeQuietly(this.#listener);
    this.#wake?.();
    for (const connection of this.#connections) connection.abort();
    for (const stop of this.#stalled) stop();
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    while (!this.#closing) {
      let conn: Deno.TlsConn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (error) {
        if (this.#closing || error instanceof Deno.errors.BadResource) break;
        // EMFILE and friends pass; ending the server over them is the bug this project fixes.
        backoff = Math.min(Math.max(backoff * 2, 10), MAX_ACCEPT_BACKOFF_MS);
        this.#options.log(error, `accept failed, retrying in ${backoff} ms: ${reason(error)}`, {
          event: "accept_failed",
        });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, backoff);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
        continue;
      }
      const { maxConnections } = this.#options;
      if (this.#open >= maxConnections) {
        const peer = formatAddr(conn.remoteAddr);
        closeQuietly(conn);
        this.#options.onRefused?.("max_connections");
        this.#options.log(
          undefined,
          `refused ${peer}: ${this.#open} connections open, the limit is ${maxConnections}`,
          { event: "connection_refused", peer, limit: "max_connections" },
        );
        continue;
      }
      this.#open++;
      this.#serve(conn).finally(() => this.#open--);
    }
    closeQuietly(this.#listener);
  }

  /** Runs one connection from its handshake until its socket is gone. */
  async #serve(conn: Deno.TlsConn): Promise<void> {
    const handshake = conn.handshake();
    try {
      await deadline(handshake, this.#options.handshakeTimeout);
    } catch (error) {
      const peer = formatAddr(conn.remoteAddr);
      const failure = handshakeFailure(error);
      this.#options.onHandshakeFailure?.(failure);
      this.#options.log(error, `TLS handshake with ${peer} failed: ${reason(error)}`, {
        event: "handshake_failed",
        peer,
        reason: failure,
      });
      await this.#end(this.#waitOut(handshake));
      closeQuietly(conn);
      return;
    }
    if (this.#closing) return closeQuietly(conn);
    const connection = new DenoConnection(conn, {
      lingers: () => !this.#closing,
      closing: (ending) => void this.#end(ending),
    });
    this.#connections.add(connection);
    this.#options.onConnection(connection);
    await connection.closed;
    this.#connections.delete(connection);
  }

  /** Resolves when a timed-out handshake ends (its socket with it), or the listener closes. */
  #waitOut(handshake: Promise<unknown>): Promise<void> {
    if (this.#closing) return Promise.resolve();
    const stopped = Promise.withResolvers<void>();
    this.#stalled.add(stopped.resolve);
    return Promise.race([handshake.then(noop, noop), stopped.promise]).finally(() =>
      this.#stalled.delete(stopped.resolve)
    );
  }

  /** Awaits `ending`, which `closed` awaits too. */
  async #end(ending: Promise<void>): Promise<void> {
    this.#endings.add(ending);
    try {
      await ending;
    } finally {
      this.#endings.delete(ending);
    }
  }
}

/** What a {@linkcode DenoConnection} asks its listener, and tells it. */
interface DenoConnectionHooks {
  /** Whether a close may wait for a slow peer: no longer once the listener is closing. */
  lingers(): boolean;
  /** Called once by `close()` with the promise of the socket's end. */
  closing(ending: Promise<void>): void;
}

/**
 * A `Deno.TlsConn` whose handshake completed. `closed` resolves once its socket is gone, which
 * for a peer that reads nothing is when it leaves (see the top of this module).
 */
export class DenoConnection implements Connection {
  /** The peer's address. */
  readonly remoteAddr: Address;
  /** Never a certificate: this transport cannot ask for one. */
  readonly peerCertificate: undefined = undefined;
  #conn: Deno.TlsConn;
  #listener: DenoConnectionHooks;
  #closing = false;
  #closed = Promise.withResolvers<void>();
  #aborted = Promise.withResolvers<void>();
  /** The read and write ops under way in Deno, which may outlive the promises handed out. */
  #readOp: Promise<void> | undefined;
  #writeOp: Promise<void> | undefined;
  /** How to settle the read and write handed out, should the connection close first. */
  #abandonRead: (() => void) | undefined;
  #abandonWrite: (() => void) | undefined;

  /**
   * @param conn A connection whose handshake completed.
   * @param listener What the listener wants to know and be told.
   */
  constructor(conn: Deno.TlsConn, listener: DenoConnectionHooks) {
    this.#conn = conn;
    this.#listener = listener;
    this.remoteAddr = conn.remoteAddr;
  }

  /** Resolves once the connection is closed and its socket gone. */
  get closed(): Promise<void> {
    return this.#closed.promise;
  }

  read(into: Uint8Array): Promise<number | null> {
    if (this.#closing) return Promise.resolve(null);
    const scratch = into.buffer.byteLength <= MAX_PINNED_BYTES
      ? undefined
      : spareScratch.pop() ?? new Uint8Array(SCRATCH_BYTES);
    const op = this.#conn.read(scratch?.subarray(0, Math.min(into.length, SCRATCH_BYTES)) ?? into);
    const read = Promise.withResolvers<number | null>();
    const abandon = () => read.resolve(null);
    this.#abandonRead = abandon;
    this.#readOp = op.then((count) => {
      if (count !== null && scratch !== undefined && !this.#closing) {
        into.set(scratch.subarray(0, count));
      }
      read.resolve(this.#closing ? null : count);
    }, (error) => {
      if (this.#closing) read.resolve(null);
      else read.reject(error);
    }).finally(() => {
      // The next read may have begun already.
      if (this.#abandonRead === abandon) this.#abandonRead = undefined;
      if (scratch !== undefined && spareScratch.length < MAX_SPARE_SCRATCH) {
        spareScratch.push(scratch);
      }
    });
    return read.promise;
  }

  write(bytes: Uint8Array): Promise<number> {
    if (this.#closing) return Promise.reject(this.#closedError());
    const chunk = bytes.buffer.byteLength <= MAX_PINNED_BYTES
      ? bytes
      : bytes.slice(0, MAX_PINNED_BYTES);
    const write = Promise.withResolvers<number>();
    const abandon = () => write.reject(this.#closedError());
    this.#abandonWrite = abandon;
    const op = this.#conn.write(chunk).then(
      (count) => write.resolve(count),
      (error) => write.reject(this.#closing ? this.#closedError() : error),
    ).finally(() => {
      // The next write may have begun already.
      if (this.#abandonWrite === abandon) this.#abandonWrite = undefined;
      if (this.#writeOp === op) this.#writeOp = undefined;
    });
    this.#writeOp = op;
    return write.promise;
  }

  /**
   * Closes: the read and write handed out settle at once (`null`, a disconnect error), and the
   * socket goes once the peer has taken what was written, or has left.
   */
  close(): void {
    if (this.#closing) return;
    this.#closing = true;
    this.#abandonRead?.();
    this.#abandonWrite?.();
    const ending = this.#release();
    this.#closed.resolve(ending);
    this.#listener.closing(ending);
  }

  /** Stops waiting for a slow peer: a close under way, or to come, closes at once. */
  abort(): void {
    this.#aborted.resolve();
  }

  async #release(): Promise<void> {
    if (this.#writeOp !== undefined && this.#listener.lingers()) {
      // A write blocked on a peer that reads nothing: close() would leave the socket open anyway,
      // unseen. closeWrite() settles once the peer has taken what was written, or has left.
      await Promise.race([this.#conn.closeWrite().then(noop, noop), this.#aborted.promise]);
    }
    closeQuietly(this.#conn);
    // close() cancelled the ops still under way; they settle soon.
    await Promise.all([this.#readOp, this.#writeOp]);
  }

  #closedError(): Error {
    return disconnectError(
      `Cannot write to ${formatAddr(this.remoteAddr)}: the connection is closed`,
    );
  }
}

/** Resolves with `promise`, or rejects once `ms` have passed. */
async function deadline(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([
      promise,
      new Promise((_, reject) => {
        timer = setTimeout(() => {
          const error = new Error(`no handshake within ${ms} ms`);
          reject(Object.assign(error, { code: HANDSHAKE_TIMEOUT_CODE }));
        }, ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

function noop(): void {}
