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
 * Failed `rpc.auth` attempts after which the connection is closed: 3 forgives a typo or a rotated
 * token, and stops a client from guessing.
 */
export const MAX_AUTH_FAILURES = 3;

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
