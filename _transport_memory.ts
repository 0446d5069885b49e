// An in-memory connection pair: what one side writes, the other reads. Protocol logic (the
// client's calls, reconnects, keepalive; a server's dispatch) runs over it without sockets, and
// tests script the far side frame by frame. The knobs make a peer slow or stuck on purpose.

import type { Connection } from "./_transport.ts";
import { disconnectError } from "./_util.ts";

/** Options for {@linkcode memoryPair}. */
export interface MemoryPairOptions {
  /**
   * The most bytes one `read` returns, so that frames arrive cut at arbitrary places, as TCP
   * may deliver them.
   *
   * @default {Infinity}
   */
  readChunkBytes?: number;
  /**
   * Bytes a side holds written and not yet read before its peer's writes wait for room (a
   * write then takes what fits and resolves with that count, like a socket's send buffer).
   *
   * @default {1048576}
   */
  bufferBytes?: number;
}

/** The buffer of each side: room for a few frames, small enough that a stuck peer shows soon. */
const DEFAULT_BUFFER_BYTES = 1024 * 1024;

/** One end of a {@linkcode memoryPair}. */
export class MemoryConnection implements Connection {
  /** The other end: `{ hostname: "memory", port: 1 }` or `2`. */
  readonly remoteAddr: { hostname: string; port: number };
  /** Never a certificate: no TLS here. */
  readonly peerCertificate: undefined = undefined;
  #peer!: MemoryConnection;
  #chunkBytes: number;
  #bufferBytes: number;
  /** Bytes the peer wrote that this side has not read. */
  #inbox: Uint8Array[] = [];
  #inboxBytes = 0;
  #closed = false;
  #stopped = false;
  #readWaiter: (() => void) | undefined;
  /** The peer's writes waiting for room in this side's inbox. */
  #roomWaiters: (() => void)[] = [];

  /** Use {@linkcode memoryPair}. */
  constructor(port: number, options: MemoryPairOptions) {
    this.remoteAddr = { hostname: "memory", port };
    this.#chunkBytes = options.readChunkBytes ?? Infinity;
    this.#bufferBytes = options.bufferBytes ?? DEFAULT_BUFFER_BYTES;
    if (!(this.#chunkBytes >= 1) || !(this.#bufferBytes >= 1)) {
      throw new RangeError(
        "Cannot make a memory pair: readChunkBytes and bufferBytes must be 1 or more",
      );
    }
  }

  /** Pairs two ends; called once by {@linkcode memoryPair}. */
  static pair(a: MemoryConnection, b: MemoryConnection): void {
    a.#peer = b;
    b.#peer = a;
  }

  /**
   * Reads what the peer wrote, at most `readChunkBytes` at a time. Resolves with `null` once this
   * side is closed (at once, dropping unread bytes), or once the peer has closed and every byte
   * it wrote before has been read. Never rejects.
   */
  async read(buffer: Uint8Array): Promise<number | null> {
    for (;;) {
      if (this.#closed) return null;
      if (this.#inboxBytes > 0) break;
      if (this.#peer.#closed) return null;
      await new Promise<void>((resolve) => this.#readWaiter = resolve);
    }
    let count = 0;
    const limit = Math.min(buffer.length, this.#chunkBytes);
    while (count < limit && this.#inbox.length > 0) {
      const chunk = this.#inbox[0]!;
      const take = Math.min(chunk.length, limit - count);
      buffer.set(take === chunk.length ? chunk : chunk.subarray(0, take), count);
      count += take;
      if (take === chunk.length) this.#inbox.shift();
      else this.#inbox[0] = chunk.subarray(take);
    }
    this.#inboxBytes -= count;
    if (count > 0) wakeAll(this.#roomWaiters);
    return count;
  }

  /**
   * Copies as much of `bytes` as the peer has room for and resolves with that count; waits while
   * the peer has no room (its buffer is full, or it stopped reading). Rejects with an `Error`
   * whose `code` is `"EPIPE"` when either side is closed, also while it waits.
   */
  async write(bytes: Uint8Array): Promise<number> {
    if (bytes.length === 0) return 0;
    const peer = this.#peer;
    for (;;) {
      if (this.#closed || peer.#closed) throw brokenPipe();
      const room = peer.#stopped ? 0 : peer.#bufferBytes - peer.#inboxBytes;
      if (room > 0) {
        const take = Math.min(room, bytes.length);
        peer.#inbox.push(bytes.slice(0, take));
        peer.#inboxBytes += take;
        peer.#wakeReader();
        return take;
      }
      await new Promise<void>((resolve) => peer.#roomWaiters.push(resolve));
    }
  }

  /**
   * Closes this side, at once and for both directions: its reads resolve `null`, its writes and
   * the peer's writes reject with EPIPE, and the peer's reads resolve `null` once they have
   * drained what this side wrote before. Never throws; closing twice does nothing.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#inbox = [];
    this.#inboxBytes = 0;
    this.#wakeReader();
    wakeAll(this.#roomWaiters);
    this.#peer.#wakeReader();
    wakeAll(this.#peer.#roomWaiters);
  }

  /** Whether either side has closed the pair. */
  get isClosed(): boolean {
    return this.#closed || this.#peer.#closed;
  }

  /** Bytes the peer wrote that this side has not read yet. */
  get bufferedBytes(): number {
    return this.#inboxBytes;
  }

  /**
   * A peer that stops reading: this side takes no more bytes, so the peer's writes wait (for ever,
   * until {@linkcode MemoryConnection.resumeReading} or `close()`). Bytes already taken can still
   * be read.
   */
  stopReading(): void {
    this.#stopped = true;
  }

  /** Takes bytes again after {@linkcode MemoryConnection.stopReading}. */
  resumeReading(): void {
    this.#stopped = false;
    wakeAll(this.#roomWaiters);
  }

  #wakeReader(): void {
    const resolve = this.#readWaiter;
    this.#readWaiter = undefined;
    resolve?.();
  }
}

function wakeAll(waiters: (() => void)[]): void {
  for (const resolve of waiters.splice(0)) resolve();
}

function brokenPipe(): Error {
  return disconnectError("Cannot write: the memory connection is closed");
}

/**
 * Two connected ends: bytes written on one are read on the other, in order.
 *
 * @example A frame across the pair
 * ```ts ignore
 * const [client, server] = memoryPair();
 * await client.write(new TextEncoder().encode("hi"));
 * const buffer = new Uint8Array(16);
 * console.log(await server.read(buffer)); // 2
 * client.close();
 * console.log(await server.read(buffer)); // null
 * ```
 */
export function memoryPair(options: MemoryPairOptions = {}): [MemoryConnection, MemoryConnection] {
  const a = new MemoryConnection(2, options);
  const b = new MemoryConnection(1, options);
  MemoryConnection.pair(a, b);
  return [a, b];
}
