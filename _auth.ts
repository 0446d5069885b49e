// Token authentication: the server's check of the token a client presents once per connection in
// `rpc.auth`. A token never appears in a log line or an error message.

import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";

/**
 * Decides who a token belongs to: an identity (any value but `undefined`, `null` and `false`), or
 * one of those three to refuse it. May be async.
 */
export type Authenticator = (
  token: string,
  peer: { readonly hostname: string; readonly port: number },
) => unknown;

/**
 * `rpc.auth` requests a connection may make, right or wrong: 3 forgives a typo or a rotated token
 * and stops a client from guessing. After the third failure the connection is closed; any further
 * `rpc.auth` on it is refused without being checked.
 */
export const MAX_AUTH_FAILURES = 3;

/**
 * Failed authentications an address may make in a burst before its further attempts are refused
 * unchecked: 10 is three clients' worth of typos. Shared by every connection from the address, so
 * reconnecting does not buy more guesses.
 */
export const AUTH_FAILURE_BURST = 10;

/** Milliseconds for one failed attempt to be forgiven: 6 s, so 10 a minute in the long run. */
export const AUTH_FAILURE_REFILL_MS = 6_000;

/**
 * Addresses whose failures are remembered: 10 000 buckets of a few dozen bytes each. When full,
 * the oldest is forgotten first.
 */
export const AUTH_THROTTLE_ADDRESSES = 10_000;

/**
 * Counts failed authentications per address (a token bucket each, in a map of bounded size), so
 * that guessing from one address costs time whatever the number of connections.
 */
export class AuthThrottle {
  #buckets = new Map<string, { tokens: number; at: number }>();
  #burst: number;
  #refillMs: number;
  #maxAddresses: number;

  constructor(
    burst = AUTH_FAILURE_BURST,
    refillMs = AUTH_FAILURE_REFILL_MS,
    maxAddresses = AUTH_THROTTLE_ADDRESSES,
  ) {
    this.#burst = burst;
    this.#refillMs = refillMs;
    this.#maxAddresses = maxAddresses;
  }

  /** Whether `address` may try a token now. */
  allows(address: string, now = Date.now()): boolean {
    const bucket = this.#buckets.get(address);
    return bucket === undefined || this.#refill(bucket, now) >= 1;
  }

  /** Counts a failed attempt from `address`. */
  failed(address: string, now = Date.now()): void {
    let bucket = this.#buckets.get(address);
    if (bucket === undefined) {
      if (this.#buckets.size >= this.#maxAddresses) {
        this.#buckets.delete(this.#buckets.keys().next().value!);
      }
      bucket = { tokens: this.#burst, at: now };
    } else {
      this.#refill(bucket, now);
      this.#buckets.delete(address); // to the end: the oldest are forgotten first
    }
    bucket.tokens = Math.max(0, bucket.tokens - 1);
    this.#buckets.set(address, bucket);
  }

  #refill(bucket: { tokens: number; at: number }, now: number): number {
    const gained = (now - bucket.at) / this.#refillMs;
    bucket.tokens = Math.min(this.#burst, bucket.tokens + gained);
    bucket.at = now;
    return bucket.tokens;
  }
}

/**
 * An authenticator that accepts exactly `expected`. Both values are HMAC'd with a random key and
 * the digests compared in constant time, so neither the content nor the length of the expected
 * token leaks through timing.
 */
export function fixedToken(expected: string): Authenticator {
  if (expected === "") throw new TypeError("Cannot use an empty token");
  const key = randomBytes(32);
  const digest = (value: string) => createHmac("sha256", key).update(value, "utf8").digest();
  const wanted = digest(expected);
  return (token) => timingSafeEqual(digest(token), wanted) ? "token" : undefined;
}
