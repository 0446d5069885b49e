// Tests of the client's connection lifecycle on real sockets: reconnecting after the server goes
// away (server restarts, dropped connections, giving up), and keepalive pings that find a silent
// server. Every wait is bounded by a guard that fails the test instead of hanging it; no test
// asserts how long anything took.

import assert from "node:assert/strict";
import type { RpcClient } from "../client.ts";
import { ConnectionError, RpcError, TimeoutError } from "../errors.ts";
import { serve } from "../server.ts";
import { callContext } from "../context.ts";
import {
  connectTo,
  delay,
  type FakeTlsServer,
  fakeTlsServer,
  type Outcome,
  outcome,
  rejectsWith,
  serveOn,
  serverOptions,
  tcpRelay,
  until,
  within as settles,
} from "./_util.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** Runs `counts.set(key, counts.get(key) + 1)`: each call's unique key proves how often it ran. */
function count(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/**
 * A hand-made TLS server that completes the handshake, records the method of every frame it
 * reads and never answers, keeping each connection open until the client leaves.
 */
interface SilentServer extends FakeTlsServer {
  /** The methods of the requests received, in order, over all connections. */
  readonly methods: string[];
}

function silentServer(): SilentServer {
  const methods: string[] = [];
  // It answers nothing, not even rpc.ping.
  const server = fakeTlsServer(async (peer) => {
    for (let text = await peer.receiveText(); text !== null; text = await peer.receiveText()) {
      methods.push(String(JSON.parse(text).method));
    }
  });
  return Object.assign(server, { methods });
}

// ---------------------------------------------------------------------------------------------
// Reconnecting

Deno.test("a client with reconnect rides out a server restart on the same port: in-flight calls reject with ConnectionError, an idempotent one is retried, calls made during the outage go out after, and nothing runs twice", async () => {
  // Every call passes a unique key; counts, shared by both servers, prove how often each ran.
  const counts = new Map<string, number>();
  const held: string[] = [];
  const gate = Promise.withResolvers<void>();
  function handlers(label: string, hold: boolean) {
    return {
      work(key: string): string {
        count(counts, key);
        return label;
      },
      async held(key: string): Promise<string> {
        count(counts, key);
        held.push(key);
        if (hold) await gate.promise;
        return label;
      },
    };
  }
  const disconnects: unknown[] = [];
  let reconnects = 0;
  const logs: string[] = [];
  // shutdownTimeout 0: the first server closes its connections with calls still in flight.
  await using first = await serve(handlers("first", true), {
    ...serverOptions(logs),
    shutdownTimeout: 0,
  });
  const port = first.addr.port;
  await using client = await connectTo(port, {
    reconnect: { initialDelay: 20, maxDelay: 200, maxAttempts: 100 },
    onDisconnect: (error) => void disconnects.push(error),
    onReconnect: () => void reconnects++,
  });

  // A stream of calls that all complete on the first server.
  const before = Array.from({ length: 20 }, (_, i) => `before-${i}`);
  const beforeResults = await settles(
    Promise.all(before.map((key) => client.call("work", key))),
    "the calls before the restart",
  );
  assert.deepEqual(beforeResults, before.map(() => "first"));

  // Calls in flight when the server goes: three plain ones and one idempotent one.
  const inFlight = ["flight-0", "flight-1", "flight-2"];
  const inFlightOutcomes = inFlight.map((key) => outcome(client.call("held", key)));
  const idempotent = outcome(client.withOptions({ idempotent: true }).call("held", "flight-idem"));
  await until(() => held.length === 4, "the four held calls to reach the first server");

  await settles(first.shutdown(), "the first server's shutdown");
  await until(() => disconnects.length > 0, "onDisconnect");
  assert.equal(client.isClosed, false);

  // Calls made during the outage wait for the new connection.
  const during = Array.from({ length: 5 }, (_, i) => `during-${i}`);
  const duringOutcomes = during.map((key) => outcome(client.call("work", key)));
  // The plain in-flight calls rejected when the connection dropped, before any new server.
  for (const [i, result] of (await settles(Promise.all(inFlightOutcomes), "in-flight")).entries()) {
    assert.ok(!result.ok, `in-flight call ${i} resolved: ${JSON.stringify(result)}`);
    assert.ok(
      result.error instanceof ConnectionError,
      `in-flight call ${i}: expected ConnectionError, got ${result.error}`,
    );
  }

  await using second = await serveOn(port, handlers("second", false));
  assert.equal(second.addr.port, port);

  assert.deepEqual(await settles(idempotent, "the idempotent in-flight call"), {
    ok: true,
    value: "second",
  });
  assert.deepEqual(
    await settles(Promise.all(duringOutcomes), "the calls made during the outage"),
    during.map(() => ({ ok: true, value: "second" })),
  );
  const after = Array.from({ length: 20 }, (_, i) => `after-${i}`);
  assert.deepEqual(
    await settles(Promise.all(after.map((key) => client.call("work", key))), "calls after"),
    after.map(() => "second"),
  );

  // Nothing ran twice, except the idempotent call, once on each server.
  for (const key of [...before, ...inFlight, ...during, ...after]) {
    assert.equal(counts.get(key), 1, `"${key}" ran ${counts.get(key) ?? 0} times`);
  }
  assert.equal(counts.get("flight-idem"), 2);
  assert.equal(disconnects.length, 1);
  assert.ok(disconnects[0] instanceof ConnectionError, `onDisconnect got ${disconnects[0]}`);
  assert.equal(reconnects, 1);
  assert.equal(client.isClosed, false);
  gate.resolve();
});

Deno.test("an idempotent call is sent again only once: when the retried call's connection drops too, it rejects with ConnectionError", async () => {
  const counts = new Map<string, number>();
  const gate = Promise.withResolvers<void>();
  await using server = await serve({
    async held(key: string): Promise<string> {
      count(counts, key);
      await gate.promise;
      return "done";
    },
    ping: () => "pong",
  }, serverOptions());
  await using proxy = tcpRelay(server.addr.port);
  let disconnects = 0;
  let reconnects = 0;
  await using client = await connectTo(proxy.port, {
    reconnect: { initialDelay: 10, maxDelay: 50, maxAttempts: 100 },
    onDisconnect: () => void disconnects++,
    onReconnect: () => void reconnects++,
  });
  const call = outcome(client.withOptions({ idempotent: true }).call("held", "idem"));
  await until(() => counts.get("idem") === 1, "the call to reach the server");
  proxy.cut();
  await until(() => counts.get("idem") === 2, "the call to be sent again after reconnecting");
  assert.equal(reconnects, 1);
  proxy.cut();
  const result = await settles(call, "the idempotent call");
  assert.ok(!result.ok, `the call resolved: ${JSON.stringify(result)}`);
  assert.ok(result.error instanceof ConnectionError, `expected ConnectionError: ${result.error}`);
  // The client comes back once more, and the call is not sent a third time.
  await until(() => reconnects === 2, "the second reconnection");
  assert.equal(await settles(client.call("ping"), "a call after"), "pong");
  assert.equal(counts.get("idem"), 2);
  assert.equal(disconnects, 2);
  gate.resolve();
});

Deno.test("a client with reconnect gives up after maxAttempts failed attempts: it closes, and the calls waiting reject with ConnectionError saying it could not reconnect", async () => {
  await using server = await serve({ ping: () => "pong" }, serverOptions());
  await using proxy = tcpRelay(server.addr.port);
  const waiting: Promise<Outcome>[] = [];
  const disconnects: unknown[] = [];
  let reconnects = 0;
  const holder: { client?: RpcClient } = {};
  await using client = await connectTo(proxy.port, {
    reconnect: { initialDelay: 10, maxDelay: 20, maxAttempts: 3 },
    onDisconnect: (error) => {
      disconnects.push(error);
      // Made the moment the connection drops, so they surely wait for the reconnection.
      waiting.push(outcome(holder.client!.call("ping")));
      waiting.push(outcome(holder.client!.withOptions({ timeout: 60_000 }).call("ping")));
    },
    onReconnect: () => void reconnects++,
  });
  holder.client = client;
  assert.equal(await client.call("ping"), "pong");
  proxy.mode = "refuse";
  proxy.cut();
  await settles(client.closed, "client.closed after the last attempt");
  assert.equal(client.isClosed, true);
  assert.equal(disconnects.length, 1);
  assert.equal(reconnects, 0);
  assert.equal(proxy.refused, 3, "one connection attempt per allowed attempt");
  assert.equal(waiting.length, 2);
  for (const [i, result] of (await settles(Promise.all(waiting), "the waiting calls")).entries()) {
    assert.ok(!result.ok, `waiting call ${i} resolved: ${JSON.stringify(result)}`);
    assert.ok(result.error instanceof ConnectionError, `waiting call ${i}: ${result.error}`);
    assert.match(
      result.error.message,
      new RegExp(`^Cannot reconnect to "127\\.0\\.0\\.1:${proxy.port}" after 3 attempts`),
    );
  }
  const later = await rejectsWith(client.call("ping"), ConnectionError, "a call after giving up");
  assert.match(later.message, /^Cannot /);
});

Deno.test("a call that waits for a reconnection rejects with TimeoutError when its own timeout passes first, and close() ends the reconnecting", async () => {
  await using server = await serve({ ping: () => "pong" }, serverOptions());
  await using proxy = tcpRelay(server.addr.port);
  let disconnects = 0;
  const client = await connectTo(proxy.port, {
    reconnect: { initialDelay: 10, maxDelay: 50, maxAttempts: 1_000 },
    onDisconnect: () => void disconnects++,
  });
  try {
    assert.equal(await client.call("ping"), "pong");
    proxy.mode = "refuse";
    proxy.cut();
    await until(() => disconnects === 1, "onDisconnect");
    const timedOut = await rejectsWith(
      client.withOptions({ timeout: 150 }).call("ping"),
      TimeoutError,
      "a call with a 150 ms timeout during the outage",
    );
    assert.match(timedOut.message, /^Cannot call "ping": no response within 150 ms/);
    // Still reconnecting: a call without a timeout keeps waiting until close() rejects it.
    assert.equal(client.isClosed, false);
    const waiting = outcome(client.call("ping"));
    await settles(client.close(), "close() while reconnecting");
    const result = await settles(waiting, "the waiting call");
    assert.ok(!result.ok && result.error instanceof ConnectionError, JSON.stringify(result));
  } finally {
    await client.close();
  }
  // Whatever attempt was under way when close() came must have ended: the sanitizers check that
  // no timer or socket of the client outlives the test.
});

Deno.test("close() while a reconnection attempt hangs in its TLS handshake abandons the attempt and stops reconnecting", async () => {
  await using server = await serve({ ping: () => "pong" }, serverOptions());
  await using proxy = tcpRelay(server.addr.port);
  let disconnects = 0;
  const client = await connectTo(proxy.port, {
    connectTimeout: 30_000,
    reconnect: { initialDelay: 10, maxDelay: 10, maxAttempts: 100 },
    onDisconnect: () => void disconnects++,
  });
  try {
    assert.equal(await client.call("ping"), "pong");
    proxy.mode = "stall";
    proxy.cut();
    await until(() => disconnects === 1, "onDisconnect");
    await until(() => proxy.stalled === 1, "a reconnection attempt to reach the stalling proxy");
    const waiting = outcome(client.call("ping"));
    await settles(client.close(), "close() during the attempt");
    const result = await settles(waiting, "the waiting call");
    assert.ok(!result.ok && result.error instanceof ConnectionError, JSON.stringify(result));
    // The attempt is abandoned at once, not left to its 30 s connectTimeout. Its socket is not
    // closed until the proxy lets go: Deno 2.9's TLS stream keeps a socket whose handshake is under
    // way open after close() (see _transport.ts), on the client side as on the server's.
    assert.equal(proxy.stalled, 1, "no attempt after close()");
    assert.equal(client.isClosed, true);
  } finally {
    await client.close();
  }
});

Deno.test("a client without reconnect closes when the connection drops, after calling onDisconnect", async () => {
  await using server = await serve({ ping: () => "pong" }, serverOptions());
  await using proxy = tcpRelay(server.addr.port);
  const disconnects: unknown[] = [];
  let reconnects = 0;
  await using client = await connectTo(proxy.port, {
    onDisconnect: (error) => void disconnects.push(error),
    onReconnect: () => void reconnects++,
  });
  assert.equal(await client.call("ping"), "pong");
  proxy.cut();
  await settles(client.closed, "client.closed");
  assert.equal(disconnects.length, 1);
  assert.ok(disconnects[0] instanceof ConnectionError);
  assert.equal(reconnects, 0);
  await rejectsWith(client.call("ping"), ConnectionError, "a call after the drop");
});

Deno.test("a client with reconnect presents its token again on every new connection", async () => {
  const tokens: string[] = [];
  await using server = await serve({
    whoami: () => callContext()?.identity,
  }, {
    ...serverOptions(),
    authenticate: (token) => {
      tokens.push(token);
      return token === "reconnect-token" ? { user: "ada", connection: tokens.length } : undefined;
    },
  });
  await using proxy = tcpRelay(server.addr.port);
  let reconnects = 0;
  await using client = await connectTo(proxy.port, {
    token: "reconnect-token",
    reconnect: { initialDelay: 10, maxDelay: 50, maxAttempts: 100 },
    onReconnect: () => void reconnects++,
  });
  assert.deepEqual(await client.call("whoami"), { user: "ada", connection: 1 });
  proxy.cut();
  await until(() => reconnects === 1, "the reconnection");
  // Without a new rpc.auth this would be refused with -32004.
  const identity = await settles(
    client.call("whoami").catch((error: unknown) => {
      if (error instanceof RpcError) assert.fail(`call refused: ${error.code} ${error.message}`);
      throw error;
    }),
    "a call after reconnecting",
  );
  assert.deepEqual(identity, { user: "ada", connection: 2 });
  assert.deepEqual(tokens, ["reconnect-token", "reconnect-token"]);
});

// ---------------------------------------------------------------------------------------------
// Keepalive

Deno.test("keepalive marks a silent server's connection dead: onDisconnect is called and pending calls reject with ConnectionError naming the keepalive", async (t) => {
  await t.step("without reconnect the client closes", async () => {
    await using server = silentServer();
    const disconnects: unknown[] = [];
    await using client = await connectTo(server.port, {
      richValues: false,
      keepalive: { interval: 100, timeout: 100 },
      onDisconnect: (error) => void disconnects.push(error),
    });
    const pending = [client.call("never"), client.call("answered", 1)];
    for (const [i, call] of pending.entries()) {
      const error = await rejectsWith(call, ConnectionError, `pending call ${i}`);
      assert.match(error.message, /keepalive/);
    }
    await settles(client.closed, "client.closed");
    assert.equal(client.isClosed, true);
    assert.equal(disconnects.length, 1);
    assert.ok(disconnects[0] instanceof ConnectionError);
    assert.match(disconnects[0].message, /keepalive/);
    assert.ok(server.methods.includes("rpc.ping"), `the server saw ${server.methods}`);
    await rejectsWith(client.call("never"), ConnectionError, "a call after");
  });

  await t.step("with reconnect the client connects again", async () => {
    await using server = silentServer();
    const disconnects: unknown[] = [];
    let reconnects = 0;
    const client = await connectTo(server.port, {
      richValues: false,
      keepalive: { interval: 100, timeout: 100 },
      reconnect: { initialDelay: 10, maxDelay: 50, maxAttempts: 100 },
      onDisconnect: (error) => void disconnects.push(error),
      onReconnect: () => void reconnects++,
    });
    try {
      const error = await rejectsWith(client.call("never"), ConnectionError, "the pending call");
      assert.match(error.message, /keepalive/);
      await until(() => reconnects >= 1, "onReconnect");
      assert.ok(disconnects.length >= 1);
      assert.match((disconnects[0] as Error).message, /keepalive/);
      assert.ok(server.connections >= 2, `${server.connections} connections`);
      assert.equal(client.isClosed, false);
    } finally {
      await settles(client.close(), "client.close()");
    }
  });
});

Deno.test("keepalive pings are answered by the server without calling any handler, and keep an idle connection open", async () => {
  let calls = 0;
  const disconnects: unknown[] = [];
  // The server closes connections idle for 300 ms: only the pings keep this one open.
  await using server = await serve({
    count: () => ++calls,
  }, { ...serverOptions(), idleTimeout: 300 });
  await using client = await connectTo(server.addr.port, {
    keepalive: { interval: 30, timeout: 2_000 },
    onDisconnect: (error) => void disconnects.push(error),
  });
  // Several idle timeouts' worth of quiet: a wait, not a measurement.
  await delay(1_200);
  assert.deepEqual(disconnects, []);
  assert.equal(client.isClosed, false);
  assert.equal(calls, 0, "keepalive must not reach a handler");
  assert.equal(await client.call("count"), 1);
});
