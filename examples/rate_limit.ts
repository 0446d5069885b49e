/**
 * A per-identity rate limit, built on the server's call hooks (`interceptors`): each identity (the
 * token's, else the client certificate's, else the peer's address) gets `perSecond` calls a second,
 * a token bucket each; a call over it is refused with code 4290 before its handler runs.
 *
 * Run it: `deno run --allow-net --allow-read examples/rate_limit.ts` serves `add` with a limit of 5
 * calls a second and shows the sixth call of a burst refused.
 *
 * @module
 */

import { type Interceptor, RpcError, serve } from "../mod.ts";

/** The error code of a refused call: outside JSON-RPC's reserved range, like HTTP's 429. */
export const RATE_LIMITED = 4290;

/** Identities whose buckets are kept at most: the oldest is forgotten first. */
const MAX_IDENTITIES = 10_000;

/**
 * An interceptor that lets each identity make `perSecond` calls a second (bursts up to that many)
 * and refuses the rest with an `RpcError` of code {@linkcode RATE_LIMITED}.
 */
export function rateLimit(perSecond: number): Interceptor {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return (call, next) => {
    const { identity, peer } = call.context;
    const key = identity === undefined ? `peer:${peer.hostname}` : `id:${JSON.stringify(identity)}`;
    const now = performance.now();
    let bucket = buckets.get(key);
    if (bucket === undefined) {
      if (buckets.size >= MAX_IDENTITIES) buckets.delete(buckets.keys().next().value!);
      bucket = { tokens: perSecond, at: now };
      buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(perSecond, bucket.tokens + (now - bucket.at) * perSecond / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) {
      throw new RpcError(RATE_LIMITED, `Too many calls: at most ${perSecond} a second`);
    }
    bucket.tokens--;
    return next();
  };
}

if (import.meta.main) {
  const { connect } = await import("../client.ts");
  const read = (name: string) => Deno.readTextFile(new URL(`../testdata/${name}`, import.meta.url));
  await using server = await serve({ add: (a: number, b: number) => a + b }, {
    port: 0,
    cert: await read("server.pem"),
    key: await read("server.key"),
    interceptors: [rateLimit(5)],
    onListen: () => {},
  });
  await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
  const outcomes = await Promise.allSettled(
    Array.from({ length: 6 }, (_, i) => client.call("add", i, 1)),
  );
  for (const outcome of outcomes) {
    console.log(
      outcome.status === "fulfilled"
        ? outcome.value
        : `refused: ${(outcome.reason as Error).message}`,
    );
  }
}
