// The limits a server enforces, with their defaults and the reason for each value, and their
// validation. Every limit bounds what one client can cost the server.

import { DEFAULT_MAX_FRAME_BYTES } from "./_framing.ts";
import { DEFAULT_MAX_BIGINT_DIGITS, DEFAULT_MAX_DECODED_BYTES } from "./_rich.ts";

/**
 * The deepest nesting of arrays and objects a message may have: 128 is far beyond any sensible API
 * and far below what would overflow a recursive handler or encoder.
 */
export const DEFAULT_MAX_DEPTH = 128;

/**
 * The most JSON values a message may hold, counted as the structural tokens of its text (`{`, `[`,
 * `:` and `,` outside strings). Parsing costs about 2 µs per object key and 0.2 µs per container,
 * so bytes alone do not bound it: 16 MiB of `[{},{},...]` blocks the event loop for 2.7 s.
 * 100 000 bounds the worst message (50 000 distinct 100-character keys) to about 0.3 s on a 2-core
 * machine, and is far beyond any sensible API; long strings and rich byte sections cost little
 * and are bounded by the frame size. Bulk numbers belong in typed arrays (rich values).
 */
export const DEFAULT_MAX_JSON_VALUES = 100_000;

/**
 * The limits a server enforces unless told otherwise, each with the reason for its value. Every one
 * of them bounds what a single client can cost the server.
 */
export const DEFAULT_LIMITS = {
  /**
   * Milliseconds a client has to complete the TLS handshake: a handshake takes a few round trips,
   * and 10 s covers a slow network while a client that connects and says nothing holds its socket
   * only that long.
   */
  handshakeTimeout: 10_000,
  /**
   * Milliseconds a connection has to authenticate (`rpc.auth`) when the server wants a token: a
   * client that never does may only ping, and must not hold its slot for ever. 10 s, as for the
   * handshake. 0 disables.
   */
  authTimeout: 10_000,
  /**
   * Failed authentications one address may make in a burst before its further `rpc.auth` requests
   * are refused unchecked, whatever connection they come on; one more is forgiven every 6 s (10 a
   * minute in the long run). 10 is three clients' worth of typos, and turns guessing into years.
   */
  maxAuthFailures: 10,
  /**
   * Milliseconds a connection may stay without a frame while no call is in flight: 5 min keeps
   * pooled clients connected between bursts and still reclaims abandoned sockets. 0 disables.
   */
  idleTimeout: 300_000,
  /**
   * Milliseconds a frame may take from its first byte to its last: 30 s is ample for 16 MiB on a
   * slow link and stops a client that sends one byte a second (slowloris). 0 disables.
   */
  frameTimeout: 30_000,
  /**
   * Open connections, handshaking ones included: 10 000 stays well under common open-file limits
   * (and about 200 MiB of buffers) while serving any realistic number of service clients.
   */
  maxConnections: 10_000,
  /**
   * Calls in flight per connection, every request of a batch and every notification counted, from
   * dispatch until the handler settles. At the limit the server stops reading from the connection
   * until calls finish: backpressure, not errors. A batch is dispatched whole, so one connection
   * holds at most `maxInFlight - 1 + maxBatch` calls. 1 024 keeps a pipelining client fast while
   * bounding the work one connection can pin.
   */
  maxInFlight: 1_024,
  /**
   * Requests in one batch: a batch is answered as one frame, so its calls are held until the last
   * one settles. 1 024 is far beyond what batching saves round trips for; a larger batch gets
   * -32600.
   */
  maxBatch: 1_024,
  /**
   * Bytes of replies queued for a client that does not read them before it is closed: 64 MiB is
   * four maximal frames, room for a burst, not for a client that never reads.
   */
  maxQueuedBytes: 64 * 1024 * 1024,
  /**
   * Milliseconds a write may make no progress before the connection is closed: 30 s outlasts a
   * congested link, not a peer that stopped reading.
   */
  writeTimeout: 30_000,
  /** Nesting of arrays and objects in a message, checked by a recursion bounded at this depth: 128. */
  maxDepth: DEFAULT_MAX_DEPTH,
  /** JSON values in a message: see {@linkcode DEFAULT_MAX_JSON_VALUES}. */
  maxJsonValues: DEFAULT_MAX_JSON_VALUES,
  /**
   * Bytes a rich frame's byte sections may decode into (views and copies alike), so that no frame
   * costs much more than its own size; byte sections may not overlap. 16 MiB, the frame limit.
   */
  maxDecodedBytes: DEFAULT_MAX_DECODED_BYTES,
  /**
   * Decimal digits of a BigInt in a rich frame: parsing and printing BigInts grow faster than
   * linearly (8 million digits took 3 s). 10 000 digits parse, add and print in under 1 ms.
   */
  maxBigIntDigits: DEFAULT_MAX_BIGINT_DIGITS,
  /** The largest frame accepted or sent: see {@linkcode DEFAULT_MAX_FRAME_BYTES}. */
  maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
  /** Milliseconds `shutdown()` lets calls in flight finish before it closes their connections. */
  shutdownTimeout: 10_000,
} as const;

/** The names of the limits in {@linkcode DEFAULT_LIMITS}. */
export type Limits = { -readonly [K in keyof typeof DEFAULT_LIMITS]: number };

/** The limits that must be at least 1: 0 would refuse every connection, call or frame. */
const POSITIVE_LIMITS: ReadonlySet<keyof Limits> = new Set([
  "handshakeTimeout",
  "maxConnections",
  "maxAuthFailures",
  "maxInFlight",
  "maxBatch",
  "maxQueuedBytes",
  "maxDepth",
  "maxJsonValues",
  "maxDecodedBytes",
  "maxBigIntDigits",
  "maxFrameBytes",
]);

/**
 * `DEFAULT_LIMITS` with the values of `options` that are set, each checked.
 *
 * @throws {RangeError} When a value is not a whole number, or 0 where that would refuse everything.
 */
export function resolveLimits(options: Partial<Limits>): Limits {
  const limits = { ...DEFAULT_LIMITS } as Limits;
  for (const name of Object.keys(DEFAULT_LIMITS) as (keyof Limits)[]) {
    const value = options[name];
    if (value === undefined) continue;
    if (!Number.isInteger(value) || value < 0) {
      throw new RangeError(`Cannot serve: ${name} must be a whole number, got ${value}`);
    }
    if (value === 0 && POSITIVE_LIMITS.has(name)) {
      throw new RangeError(`Cannot serve: ${name} must be at least 1, got 0`);
    }
    limits[name] = value;
  }
  return limits;
}

/** Whether `name` is one of the limits. */
export function isLimit(name: string): name is keyof Limits {
  return Object.hasOwn(DEFAULT_LIMITS, name);
}

/** How often deadlines are checked: a quarter of the shortest, between 10 ms and 1 s; 0 for never. */
export function sweepInterval(limits: Limits): number {
  const enabled = [
    limits.idleTimeout,
    limits.frameTimeout,
    limits.writeTimeout,
    limits.authTimeout,
  ].filter((t) => t > 0);
  if (enabled.length === 0) return 0;
  return Math.min(Math.max(Math.min(...enabled) / 4, 10), 1000);
}
