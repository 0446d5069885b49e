// A seeded fuzz of hostile servers over the in-memory transport (_client_memory.ts): each round
// connects a client with random options to servers that answer the hello oddly and then send
// random and adversarial frames (answers to ids never sent, error members of every type, floods of
// params, requests to the client, batches, bytes that end the stream), and checks that the client
// never dies of them, that nothing is thrown uncaught, and that every call settles. A failing run
// prints its seed; FUZZ_SEED=<seed> replays it.

import assert from "node:assert/strict";
import { connect, type RpcClient } from "../client.ts";
import { ConnectionError, RpcError, TimeoutError } from "../errors.ts";
import { type Message, Pairs, type Peer } from "./_client_memory.ts";
import { delay, type Outcome, outcome, within } from "./_util.ts";
import { seededRandom } from "./portable/_data.ts";

const decoder = new TextDecoder();

function pick<T>(rng: () => number, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)]!;
}

/** A JSON value of every kind, nested up to `depth`. */
function randomValue(rng: () => number, depth = 3): unknown {
  const kind = Math.floor(rng() * (depth > 0 ? 9 : 7));
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng() < 0.5;
    case 2:
      return pick(rng, [0, -1, 1.5, 2 ** 53, -(2 ** 60), 1e308, Math.floor(rng() * 1e6)]);
    case 3:
      return pick(rng, ["", "x", "é😀", "__proto__", "constructor", "\u0000"]);
    case 4:
      return pick(rng, [[], {}]);
    case 5:
      return { code: randomValue(rng, 0), message: randomValue(rng, 0) };
    case 6:
      return "s".repeat(Math.floor(rng() * 100));
    case 7:
      return Array.from({ length: Math.floor(rng() * 5) }, () => randomValue(rng, depth - 1));
    default: {
      const object: Record<string, unknown> = {};
      for (let i = Math.floor(rng() * 4); i > 0; i--) {
        object[pick(rng, ["a", "id", "code", "__proto__", "then", "method"])] = randomValue(
          rng,
          depth - 1,
        );
      }
      return object;
    }
  }
}

/** Error members of every type a server could send. */
const hostileErrors = [
  "null",
  "1",
  '"text"',
  "[]",
  "{}",
  "true",
  '{"code":1.5,"message":"x"}',
  '{"code":1e400,"message":"inf"}',
  '{"code":-1e400}',
  '{"code":"-32000","message":"text code"}',
  '{"code":-32000,"message":{"not":"text"}}',
  '{"code":9007199254740993,"message":"unsafe"}',
  '{"code":-32001,"message":"draining","data":[[[[["deep"]]]]]}',
  '{"__proto__":{"code":1},"message":"proto"}',
];

/** One adversarial frame that the client survives, knowing the ids the client has sent. */
function hostileFrame(rng: () => number, ids: number[]): Uint8Array | string {
  const id = ids.length > 0 && rng() < 0.7
    ? pick(rng, ids)
    : pick(rng, [0, -1, -2, 2 ** 53, 1.5, '"1"', "null", "{}", "[]", "true", "1e400"]);
  const method = pick(rng, [
    "news",
    "boom",
    "async",
    "unknown",
    "rpc.cancel",
    "rpc.goaway",
    "__proto__",
  ]);
  switch (Math.floor(rng() * 10)) {
    case 0: // a result of any kind
      return `{"jsonrpc":"2.0","id":${id},"result":${JSON.stringify(randomValue(rng))}}`;
    case 1: // an error of any kind
    case 2:
      return `{"jsonrpc":"2.0","id":${id},"error":${pick(rng, hostileErrors)}}`;
    case 3: // a notification with many params
      return `{"jsonrpc":"2.0","method":"${method}","params":[${"1,".repeat(50_000)}1]}`;
    case 4: // a notification with params of any kind
    case 5:
      return JSON.stringify({ jsonrpc: "2.0", method, params: randomValue(rng) });
    case 6: // a request to the client
      return `{"jsonrpc":"2.0","id":${id},"method":"${method}","params":[]}`;
    case 7: // a batch of anything
      return JSON.stringify(
        Array.from(
          { length: Math.floor(rng() * 5) },
          () =>
            rng() < 0.5
              ? { jsonrpc: "2.0", id: pick(rng, [...ids, 7, -3]), result: randomValue(rng) }
              : randomValue(rng),
        ),
      );
    case 8:
      return `{"__proto__":{"id":${id}},"id":${id},"result":{"__proto__":{"x":1}}}`;
    default: // a value that is not a message, or a hello answer of the wrong shape
      return rng() < 0.5
        ? JSON.stringify(randomValue(rng))
        : `{"jsonrpc":"2.0","id":0,"result":${JSON.stringify(randomValue(rng))}}`;
  }
}

/** One thing that ends the connection: the client must fail its calls cleanly. */
function fatalBytes(rng: () => number): Uint8Array | string {
  switch (Math.floor(rng() * 7)) {
    case 0: // random bytes as a frame
      return crypto.getRandomValues(new Uint8Array(1 + Math.floor(rng() * 64)));
    case 1: // deep nesting
      return `{"jsonrpc":"2.0","id":1,"result":${"[".repeat(500)}${"]".repeat(500)}}`;
    case 2: // an extended frame with garbage
      return new Uint8Array([0x00, ...crypto.getRandomValues(new Uint8Array(8))]);
    case 3: // a frame that is not JSON
      return `{"jsonrpc":"2.0","id":1,"result":`;
    case 4: // more values than a message may hold
      return `{"jsonrpc":"2.0","method":"news","params":[${"1,".repeat(200_000)}1]}`;
    case 5: // an id-null error: the server says it will close
      return `{"jsonrpc":"2.0","id":null,"error":${pick(rng, hostileErrors)}}`;
    default: // raw bytes outside the framing (a zero length, or noise)
      return "raw";
  }
}

/** What the fuzz saw, so that it can tell that it reached the code it means to test. */
interface FuzzStats {
  results: number;
  rpcErrors: number;
  connectionErrors: number;
  listenerErrors: number;
  refusedConnects: number;
}

/**
 * Plays a hostile server on `peer`: answers the hello (mostly properly), waits for `go`, then sends
 * `steps` adversarial frames, ending the stream now and then, and closes (or not).
 */
async function hostileServer(
  peer: Peer,
  rng: () => number,
  steps: number,
  go: Promise<void>,
): Promise<void> {
  const ids: number[] = [];
  const hello = Promise.withResolvers<void>();
  const reading = (async () => {
    for (let bytes = await peer.receiveBytes(); bytes; bytes = await peer.receiveBytes()) {
      let message: Message;
      try {
        message = JSON.parse(decoder.decode(bytes)) as Message;
      } catch {
        continue; // an extended frame: not for us to read
      }
      if (typeof message.id === "number" && message.id > 0) ids.push(message.id);
      if (message.method === "rpc.hello") {
        const roll = rng();
        if (roll < 0.85) peer.reply(message, { extensions: ["rich"] });
        else if (roll < 0.95) peer.reply(message, randomValue(rng));
        hello.resolve();
      }
    }
  })();
  await Promise.race([hello.promise, delay(20)]);
  await go;
  for (let step = 0; step < steps && !peer.conn.isClosed; step++) {
    if (rng() < 0.04) {
      const bytes = fatalBytes(rng);
      if (bytes !== "raw") peer.send(bytes);
      else {
        const raw = rng() < 0.5
          ? new Uint8Array(4)
          : crypto.getRandomValues(new Uint8Array(1 + Math.floor(rng() * 16)));
        await peer.conn.write(raw).catch(() => {});
      }
    } else {
      peer.send(hostileFrame(rng, ids));
    }
    if (rng() < 0.3) await delay(Math.floor(rng() * 4));
  }
  if (rng() < 0.7) peer.close();
  await Promise.race([reading, delay(50)]);
}

/** One round: a client with random options against hostile servers, every call tracked. */
async function fuzzRound(rng: () => number, stats: FuzzStats): Promise<void> {
  const pairs = new Pairs({ readChunkBytes: pick(rng, [Infinity, 7, 1000]) });
  const servers: Promise<void>[] = [];
  const go = Promise.withResolvers<void>();
  const useReconnect = rng() < 0.3;
  const connecting = outcome(connect({
    dial: async (signal, endpoint) => {
      const conn = await pairs.dial(signal, endpoint);
      servers.push(hostileServer(pairs.peers.at(-1)!, rng, 5 + Math.floor(rng() * 60), go.promise));
      return conn;
    },
    connectTimeout: 100,
    timeout: pick(rng, [0, 30, 200]),
    richValues: rng() < 0.8,
    maxFrameBytes: 4 * 1024 * 1024,
    wrap: rng() < 0.2,
    reconnect: useReconnect ? { initialDelay: 1, maxDelay: 5, maxAttempts: 3 } : false,
    keepalive: rng() < 0.3 ? { interval: 10, timeout: 30 } : false,
    onListenerError: () => void stats.listenerErrors++,
  }));
  const connected = await within(connecting, "connect()");
  if (!connected.ok) {
    // Refused or timed out by a hostile hello: a clean rejection is all we ask.
    assert.ok(connected.error instanceof Error, `connect() rejected with ${connected.error}`);
    stats.refusedConnects++;
    go.resolve();
  } else {
    const client = connected.value as RpcClient;
    client.on("news", () => {});
    client.on("boom", () => {
      throw new Error("listener bug");
    });
    client.on("async", () => Promise.reject(new Error("async listener bug")));
    client.on("__proto__", (...params) => void params.length);
    const calls: Promise<Outcome>[] = [];
    const call = () => {
      const controller = new AbortController();
      const caller = client.withOptions({
        signal: controller.signal,
        idempotent: rng() < 0.3,
        ...(rng() < 0.5 && { timeout: 50 }),
      });
      calls.push(outcome(caller.call(pick(rng, ["a", "b.c", "news"]), randomValue(rng))));
      if (rng() < 0.1) controller.abort(new Error("aborted"));
    };
    for (let i = 0; i < 10; i++) call();
    go.resolve();
    for (let i = 0; i < 20; i++) {
      call();
      if (rng() < 0.2) {
        try {
          client.notify("n", randomValue(rng));
        } catch (error) {
          assert.ok(error instanceof ConnectionError || error instanceof TypeError, String(error));
        }
      }
      if (rng() < 0.5) await delay(Math.floor(rng() * 5));
    }
    await within(Promise.all(servers.slice()), "the hostile servers", 10_000);
    await within(client.close(), "client.close()");
    for (const result of await within(Promise.all(calls), "every call to settle")) {
      if (result.ok) {
        stats.results++;
        continue;
      }
      const error = result.error;
      if (error instanceof RpcError) {
        stats.rpcErrors++;
        assert.ok(Number.isSafeInteger(error.code), `an RpcError with code ${error.code}`);
      } else if (error instanceof ConnectionError) {
        stats.connectionErrors++;
      } else {
        assert.ok(
          error instanceof TimeoutError || error instanceof TypeError ||
            error instanceof RangeError || (error instanceof Error && error.message === "aborted"),
          `a call rejected with ${error}`,
        );
      }
    }
    await within(client.closed, "client.closed");
  }
  pairs.closeAll();
  await within(Promise.all(servers), "the hostile servers", 10_000);
}

Deno.test("a hostile server's random and adversarial frames never kill the client, and every call settles", async () => {
  const seed = Number(Deno.env.get("FUZZ_SEED") ?? Math.floor(Math.random() * 2 ** 32));
  const uncaught: unknown[] = [];
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    uncaught.push(event.reason);
  };
  const onError = (event: ErrorEvent) => {
    event.preventDefault();
    uncaught.push(event.error);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onError);
  const rng = seededRandom(seed);
  const stats: FuzzStats = {
    results: 0,
    rpcErrors: 0,
    connectionErrors: 0,
    listenerErrors: 0,
    refusedConnects: 0,
  };
  try {
    for (let round = 0; round < 40; round++) {
      try {
        await fuzzRound(rng, stats);
      } catch (error) {
        throw new Error(`Fuzz round ${round} failed; replay with FUZZ_SEED=${seed}`, {
          cause: error,
        });
      }
    }
    await delay(10); // a rethrow from a microtask or a late rejection shows by now
    assert.deepEqual(uncaught, [], `uncaught errors; replay with FUZZ_SEED=${seed}`);
    // The hostile frames reached the code they aim at: answers, errors, listeners, lost links.
    for (const [name, count] of Object.entries(stats)) {
      if (name !== "refusedConnects") {
        assert.ok(
          count > 0,
          `no ${name} in 40 rounds (${JSON.stringify(stats)}); FUZZ_SEED=${seed}`,
        );
      }
    }
  } finally {
    globalThis.removeEventListener("unhandledrejection", onRejection);
    globalThis.removeEventListener("error", onError);
  }
});
