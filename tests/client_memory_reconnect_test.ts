// Tests of the client losing its connection over the in-memory transport, each connection a new
// memory pair whose far end the test scripts (_client_memory.ts): reconnecting (calls in flight
// rejected, an idempotent one sent again once, waiting calls sent after onReconnect), close(), a
// server that shuts down (rpc.goaway and -32001 answers, with a seeded run in which no call runs
// twice), and several endpoints tried in turn. The same on real TLS servers is in
// client_failover_test.ts.

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type RpcClient } from "../client.ts";
import { ConnectionError, RpcError } from "../errors.ts";
import { connectMemory, Pairs, type Peer, waitFor } from "./_client_memory.ts";
import { delay, outcome, rejectsWith, within } from "./_util.ts";
import { seededRandom } from "./portable/_data.ts";

// ---------------------------------------------------------------------------------------------
// Losing the connection, reconnecting, closing

Deno.test("reconnect over new memory pairs: in-flight calls reject, an idempotent one is sent again once, waiting calls go out after onReconnect", async () => {
  const pairs = new Pairs();
  const events: string[] = [];
  const connecting = connect({
    dial: pairs.dial,
    token: "t",
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 5 },
    onDisconnect: () => void events.push("disconnect"),
    onReconnect: () => void events.push("reconnect"),
  });
  const first = await pairs.peer(0);
  await first.hello();
  first.reply(await first.expect("rpc.auth"), true);
  const client = await within(connecting, "connect()");
  try {
    const plain = outcome(client.call("plain"));
    const idempotent = outcome(client.withOptions({ idempotent: true }).call("idem"));
    await first.expect("plain");
    await first.expect("idem");
    first.close();
    const lost = await within(plain, "the plain call");
    assert.ok(!lost.ok && lost.error instanceof ConnectionError, String(lost));
    assert.match(lost.error.message, /closed the connection/);
    const during = outcome(client.call("during"));
    const second = await pairs.peer(1);
    await second.hello();
    second.reply(await second.expect("rpc.auth"), true);
    const again = await second.expect("idem");
    const waited = await second.expect("during");
    assert.deepEqual(events, ["disconnect", "reconnect"]);
    second.reply(again, "idem on second");
    second.reply(waited, "during on second");
    assert.deepEqual(await within(idempotent, "the idempotent call"), {
      ok: true,
      value: "idem on second",
    });
    assert.deepEqual(await within(during, "the call made during"), {
      ok: true,
      value: "during on second",
    });
    // Sent again once only: its second connection dropping too rejects it.
    const once = outcome(client.withOptions({ idempotent: true }).call("once"));
    await second.expect("once");
    second.close();
    const third = await pairs.peer(2);
    await third.hello();
    third.reply(await third.expect("rpc.auth"), true);
    await third.expect("once");
    third.close();
    const result = await within(once, "the twice-dropped call");
    assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("close() during a reconnection's rpc.hello resolves at once, not after connectTimeout", async () => {
  const pairs = new Pairs();
  const connecting = connect({
    dial: pairs.dial,
    connectTimeout: 10_000,
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 5 },
  });
  const first = await pairs.peer(0);
  await first.hello();
  const client = await within(connecting, "connect()");
  const waiting = outcome(client.call("waits"));
  await first.expect("waits");
  first.close();
  const second = await pairs.peer(1);
  await second.expect("rpc.hello"); // never answered
  await within(client.close(), "close() during the hello", 1_000);
  assert.equal(client.isClosed, true);
  const result = await within(waiting, "the call");
  assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
  await within(second.closedByClient(), "the attempt's connection to close", 1_000);
  assert.equal(pairs.peers.length, 2, "no attempt after close()");
});

Deno.test("close() with calls in flight rejects them with ConnectionError and closes the connection", async () => {
  const { client, server } = await connectMemory();
  const calls = [outcome(client.call("a")), outcome(client.call("b"))];
  await server.expect("a");
  await server.expect("b");
  await within(client.close(), "client.close()");
  for (const result of await within(Promise.all(calls), "the calls")) {
    assert.ok(!result.ok && result.error instanceof ConnectionError, String(result));
    assert.match(
      result.error.message,
      /^Cannot complete call: client to "localhost:7443" was closed/,
    );
  }
  await within(server.closedByClient(), "the server to see the close");
  assert.throws(() => client.notify("late"), ConnectionError);
  await rejectsWith(client.call("late"), ConnectionError, "a call after close()");
});

Deno.test("the server refusing a message with id null, then closing, rejects calls with ConnectionError carrying its RpcError", async () => {
  const { client, server } = await connectMemory();
  const call = client.call("a");
  await server.expect("a");
  server.send({ jsonrpc: "2.0", id: null, error: { code: -32600, message: "Invalid Request: x" } });
  await delay(5);
  server.close();
  const error = await rejectsWith(call, ConnectionError, "the call");
  assert.match(error.message, /the server refused a message: Invalid Request: x/);
  assert.ok(error.cause instanceof RpcError && error.cause.code === -32600);
  await within(client.closed, "client.closed");
});

// ---------------------------------------------------------------------------------------------
// A server that shuts down: rpc.goaway and -32001

/** A client with reconnect over `pairs`, connected to its first peer; events are recorded. */
async function connectDraining(
  pairs: Pairs,
  options: ConnectOptions = {},
): Promise<{ client: RpcClient; events: string[] }> {
  const events: string[] = [];
  const connecting = connect({
    dial: pairs.dial,
    // A minute: a connection that comes within the test's guard came without backoff.
    reconnect: { initialDelay: 60_000, maxDelay: 60_000, maxAttempts: 3 },
    onDisconnect: (error) => void events.push(`disconnect: ${error.message}`),
    onReconnect: () => void events.push("reconnect"),
    ...options,
  });
  await (await pairs.peer(pairs.peers.length)).hello();
  return { client: await within(connecting, "connect()"), events };
}

Deno.test("rpc.goaway with reconnect: calls in flight finish on the old connection, new calls go at once to a new one, and the client closes the old one after its last answer", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    const old = pairs.peers[0]!;
    const first = outcome(client.call("slow", 1));
    const second = outcome(client.call("slow", 2));
    const [one, two] = [await old.expect("slow"), await old.expect("slow")];
    old.goAway();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    const later = outcome(client.call("later"));
    fresh.reply(await fresh.expect("later"), "later on the new connection");
    assert.deepEqual(await within(later, "the call made after rpc.goaway"), {
      ok: true,
      value: "later on the new connection",
    });
    // The old connection still carries its calls: the first answer does not close it.
    old.reply(one, "one on the old connection");
    assert.deepEqual(await within(first, "the first call in flight"), {
      ok: true,
      value: "one on the old connection",
    });
    await delay(5);
    assert.equal(old.conn.isClosed, false, "closed with a call still in flight");
    old.reply(two, "two on the old connection");
    assert.deepEqual(await within(second, "the second call in flight"), {
      ok: true,
      value: "two on the old connection",
    });
    // The last answer closes it, and the client sent nothing more on it.
    assert.equal(await within(old.receive(), "the client to close the old connection"), null);
    assert.equal(client.isClosed, false);
    assert.deepEqual(events, ["reconnect"]);
    assert.equal(pairs.peers.length, 2);
    assert.equal(await within(pingThrough(client, fresh), "a call after"), "pong");
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

/** Makes a call and answers it on `peer`. */
async function pingThrough(client: RpcClient, peer: Peer): Promise<unknown> {
  const call = client.call("ping");
  peer.reply(await peer.expect("ping"), "pong");
  return await call;
}

Deno.test("rpc.goaway with no call in flight: the client closes the old connection at once", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    pairs.peers[0]!.goAway();
    assert.equal(await within(pairs.peers[0]!.receive(), "the old connection to close"), null);
    await (await pairs.peer(1)).hello();
    assert.equal(await within(pingThrough(client, pairs.peers[1]!), "a call after"), "pong");
    assert.deepEqual(events, ["reconnect"]);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("a call answered -32001 never ran: with reconnect it is sent once more on a new connection, idempotent or not, and a second -32001 rejects it", async (t) => {
  await t.step("after rpc.goaway, a call that crossed it", async () => {
    const pairs = new Pairs();
    const { client, events } = await connectDraining(pairs);
    try {
      const old = pairs.peers[0]!;
      const crossed = outcome(client.call("crossed"));
      const request = await old.expect("crossed");
      old.goAway();
      old.refuse(request);
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.reply(await fresh.expect("crossed"), "ran once, on the new connection");
      assert.deepEqual(await within(crossed, "the refused call"), {
        ok: true,
        value: "ran once, on the new connection",
      });
      assert.equal(await within(old.receive(), "the old connection to close"), null);
      assert.deepEqual(events, ["reconnect"]);
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });

  await t.step("without rpc.goaway: the -32001 alone moves the client on", async () => {
    const pairs = new Pairs();
    const { client } = await connectDraining(pairs);
    try {
      const old = pairs.peers[0]!;
      const call = outcome(client.call("work"));
      old.refuse(await old.expect("work"));
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.reply(await fresh.expect("work"), "done");
      assert.deepEqual(await within(call, "the refused call"), { ok: true, value: "done" });
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });

  await t.step("refused twice: rejects with the RpcError", async () => {
    const pairs = new Pairs();
    const { client } = await connectDraining(pairs, {
      reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 3 },
    });
    try {
      const call = outcome(client.call("work"));
      pairs.peers[0]!.refuse(await pairs.peers[0]!.expect("work"));
      const fresh = await pairs.peer(1);
      await fresh.hello();
      fresh.refuse(await fresh.expect("work"));
      const result = await within(call, "the twice-refused call");
      assert.ok(!result.ok && result.error instanceof RpcError, String(result));
      assert.equal(result.error.code, -32001);
    } finally {
      pairs.closeAll();
      await client.close();
    }
  });
});

Deno.test("rpc.goaway without reconnect: new calls keep going to the old connection and reject with its -32001; the client closes when the server does", async () => {
  const pairs = new Pairs();
  const disconnects: ConnectionError[] = [];
  const connecting = connect({ dial: pairs.dial, onDisconnect: (e) => void disconnects.push(e) });
  const server = await pairs.peer(0);
  await server.hello();
  const client = await within(connecting, "connect()");
  try {
    const running = outcome(client.call("running"));
    const request = await server.expect("running");
    server.goAway();
    const later = outcome(client.call("later"));
    server.refuse(await server.expect("later"));
    const refused = await within(later, "the call made after rpc.goaway");
    assert.ok(!refused.ok && refused.error instanceof RpcError, String(refused));
    assert.equal(refused.error.code, -32001);
    server.reply(request, "finished");
    assert.deepEqual(await within(running, "the call in flight"), { ok: true, value: "finished" });
    await delay(5);
    assert.equal(server.conn.isClosed, false, "the client closed the connection itself");
    assert.equal(pairs.peers.length, 1, "a new connection without reconnect");
    server.close();
    await within(client.closed, "client.closed");
    assert.equal(disconnects.length, 1);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("a connection that drops while draining: its plain calls reject with ConnectionError, an idempotent one is sent again on the new connection", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs);
  try {
    const old = pairs.peers[0]!;
    const plain = outcome(client.call("plain"));
    const idempotent = outcome(client.withOptions({ idempotent: true }).call("idem"));
    await old.expect("plain");
    await old.expect("idem");
    old.goAway();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    old.close();
    const lost = await within(plain, "the plain call");
    assert.ok(!lost.ok && lost.error instanceof ConnectionError, String(lost));
    fresh.reply(await fresh.expect("idem"), "idem again");
    assert.deepEqual(await within(idempotent, "the idempotent call"), {
      ok: true,
      value: "idem again",
    });
    // Not the connection in use: no onDisconnect, no reconnection.
    assert.deepEqual(events, ["reconnect"]);
    assert.equal(pairs.peers.length, 2);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("rpc.goaway when no new connection opens at once: onDisconnect, then the usual backoff, while the old connection finishes its calls", async () => {
  const pairs = new Pairs();
  const { client, events } = await connectDraining(pairs, {
    endpoints: [{ hostname: "a", port: 1 }, { hostname: "b", port: 2 }],
    reconnect: { initialDelay: 1, maxDelay: 1, maxAttempts: 100 },
  });
  try {
    const old = pairs.peers[0]!;
    const [up, down] = pairs.dialed[0] === "a:1" ? ["a:1", "b:2"] : ["b:2", "a:1"];
    pairs.down.add(down);
    pairs.down.add(up);
    const running = outcome(client.call("running"));
    const request = await old.expect("running");
    old.goAway();
    await waitFor(() => events.length > 0, "onDisconnect");
    assert.match(
      events[0]!,
      new RegExp(
        `^disconnect: Cannot send calls to "${up}": it is shutting down \\(rpc\\.goaway\\), and cannot connect to "${down}"`,
      ),
    );
    const waiting = outcome(client.call("waiting"));
    old.reply(request, "finished");
    assert.deepEqual(await within(running, "the call in flight"), { ok: true, value: "finished" });
    pairs.down.clear();
    const fresh = await pairs.peer(1);
    await fresh.hello();
    fresh.reply(await fresh.expect("waiting"), "went out after the backoff");
    assert.deepEqual(await within(waiting, "the waiting call"), {
      ok: true,
      value: "went out after the backoff",
    });
    assert.equal(events.at(-1), "reconnect");
    assert.equal(events.length, 2);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});

Deno.test("through goaways and -32001 answers no call runs twice, and every call resolves", async () => {
  const seed = Math.floor(Math.random() * 2 ** 32);
  const rng = seededRandom(seed);
  const pairs = new Pairs();
  const { client } = await connectDraining(pairs, {
    reconnect: { initialDelay: 0, maxDelay: 1, maxAttempts: 100 },
  });
  /** How often each call ran: a peer that answers with a result ran it. */
  const ran = new Map<string, number>();
  const goingAway = new Set<Peer>();
  let refused = 0;
  /** A peer's loop: runs each call, or, once it has said rpc.goaway, refuses half of them. */
  async function serveOn(peer: Peer): Promise<void> {
    for (let message = await peer.receive(); message; message = await peer.receive()) {
      if (message.method === "rpc.hello") peer.reply(message, { extensions: ["rich"] });
      if (message.method !== "work") continue;
      if (goingAway.has(peer) && rng() < 0.5) {
        refused++;
        peer.refuse(message);
        continue;
      }
      const key = String((message.params as unknown[])[0]);
      ran.set(key, (ran.get(key) ?? 0) + 1);
      const request = message;
      // A running call's answer comes at once or a little later, after the rpc.goaway maybe.
      if (rng() < 0.5) peer.reply(request, key);
      else setTimeout(() => peer.reply(request, key), Math.floor(rng() * 5));
    }
  }
  const loops: Promise<void>[] = [serveOn(pairs.peers[0]!)];
  try {
    for (let round = 0; round < 5; round++) {
      // Calls go out; the server starts shutting down while they arrive; a new one takes over.
      const calls: Promise<unknown>[] = [];
      for (let i = 0; i < 20; i++) {
        calls.push(client.call("work", `${round}-${i}`));
        if (i === 10) {
          const current = pairs.peers.at(-1)!;
          goingAway.add(current);
          current.goAway();
        }
        if (rng() < 0.3) await delay(1);
      }
      loops.push(serveOn(await pairs.peer(round + 1)));
      const results = await within(Promise.all(calls), `round ${round}; seed ${seed}`);
      for (const [i, key] of results.entries()) {
        assert.equal(key, `${round}-${i}`, `seed ${seed}`);
        assert.equal(ran.get(`${round}-${i}`), 1, `"${key}" ran more than once; seed ${seed}`);
      }
    }
    assert.ok(refused > 0, `no call was refused; seed ${seed}`);
    assert.equal(ran.size, 100);
  } finally {
    pairs.closeAll();
    await client.close();
    await within(Promise.all(loops), "the peers' loops");
  }
});

// ---------------------------------------------------------------------------------------------
// Several endpoints

Deno.test("endpoints: both endpoints and hostname or port, or an empty list, is a TypeError", async (t) => {
  const cases: [string, ConnectOptions][] = [
    ["endpoints and hostname", { endpoints: [{ hostname: "a", port: 1 }], hostname: "b" }],
    ["endpoints and port", { endpoints: [{ hostname: "a", port: 1 }], port: 2 }],
    ["an empty list", { endpoints: [] }],
  ];
  for (const [name, options] of cases) {
    await t.step(name, async () => {
      const pairs = new Pairs();
      const error = await rejectsWith(connect({ dial: pairs.dial, ...options }), TypeError, name);
      assert.match(error.message, /^Cannot connect: /);
      assert.equal(pairs.dialed.length, 0);
    });
  }
});

Deno.test("endpoints: connect() tries each in turn and names every one when none answers", async () => {
  const endpoints = [
    { hostname: "a", port: 1 },
    { hostname: "b", port: 2 },
    { hostname: "::1", port: 3 },
  ];
  const pairs = new Pairs();
  for (const name of ["a:1", "b:2", "::1:3"]) pairs.down.add(name);
  const error = await rejectsWith(
    connect({ dial: pairs.dial, endpoints }),
    ConnectionError,
    "connect() to three closed endpoints",
  );
  assert.equal(pairs.dialed.length, 3);
  assert.deepEqual([...pairs.dialed].sort(), ["::1:3", "a:1", "b:2"]);
  const order = pairs.dialed.map((name) => name === "::1:3" ? "[::1]:3" : name);
  assert.equal(
    error.message,
    `Cannot connect to any of 3 endpoints: ${
      order.map((name) => `"${name}": Connection refused`).join(", ")
    }`,
  );
  assert.ok(error.cause instanceof AggregateError && error.cause.errors.length === 3);
});

Deno.test("endpoints: reconnections and switches after rpc.goaway go to the next endpoint in the order, round and round", async () => {
  const endpoints = [
    { hostname: "a", port: 1 },
    { hostname: "b", port: 2 },
    { hostname: "c", port: 3 },
  ];
  const pairs = new Pairs();
  const { client } = await connectDraining(pairs, {
    endpoints,
    reconnect: { initialDelay: 0, maxDelay: 1, maxAttempts: 10 },
  });
  try {
    for (let n = 1; n <= 6; n++) {
      // Drops and goaways, alternately.
      if (n % 2 === 0) pairs.peers[n - 1]!.close();
      else pairs.peers[n - 1]!.goAway();
      await (await pairs.peer(n)).hello();
      assert.equal(await within(pingThrough(client, pairs.peers[n]!), `call ${n}`), "pong");
    }
    const order = pairs.dialed.slice(0, 3);
    assert.deepEqual([...order].sort(), ["a:1", "b:2", "c:3"]);
    assert.deepEqual(pairs.dialed, [...order, ...order, order[0]]);
  } finally {
    pairs.closeAll();
    await client.close();
  }
});
