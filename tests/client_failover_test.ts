// Tests of a client with several endpoints on real TLS servers: failing over when one is down or
// dies, spreading connections over them, and riding out a rolling restart (rpc.goaway, -32001)
// without losing a call. Every wait is bounded by a guard; no test asserts how long anything took.

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type Endpoint, type RpcClient } from "../client.ts";
import { ConnectionError } from "../errors.ts";
import { certs, delay, freePort, serveOn, tcpRelay, until, within } from "./_util.ts";

// ---------------------------------------------------------------------------------------------
// Helpers

/** Handlers that say which server ran them: `where()` gives the label. */
function labelled(label: string) {
  return { where: () => label };
}

/** Connects to `endpoints` trusting the test CA. */
function connectAll(endpoints: Endpoint[], options: ConnectOptions = {}): Promise<RpcClient> {
  return connect({ endpoints, caCerts: [certs.ca], ...options });
}

/**
 * Runs `body` with `Math.random` returning 0.99, so that the shuffle of the endpoints keeps them
 * in the order given (Fisher–Yates swaps nothing when each draw picks the last place).
 */
async function inGivenOrder<T>(body: () => Promise<T>): Promise<T> {
  const random = Math.random;
  Math.random = () => 0.99;
  try {
    return await body();
  } finally {
    Math.random = random;
  }
}

// ---------------------------------------------------------------------------------------------
// Failing over

Deno.test("connect() with endpoints goes on to the next when one is a closed port, and names each when none answers", async (t) => {
  await using server = await serveOn(0, labelled("live"));
  const live = { hostname: "127.0.0.1", port: server.addr.port };

  await t.step("the first is closed: the second serves", async () => {
    const down = { hostname: "127.0.0.1", port: freePort() };
    await using client = await inGivenOrder(() => connectAll([down, live]));
    assert.equal(await within(client.call("where"), "a call"), "live");
  });

  await t.step("both closed: one ConnectionError naming both", async () => {
    const ports = [freePort(), freePort()];
    const result = await within(
      inGivenOrder(() =>
        connectAll(ports.map((port) => ({ hostname: "127.0.0.1", port }))).then(
          (client) => client.close().then(() => assert.fail("connected to a closed port")),
          (error: unknown) => error,
        )
      ),
      "connect()",
    );
    assert.ok(result instanceof ConnectionError, `expected ConnectionError, got ${result}`);
    const [a, b] = ports.map((port) => `"127\\.0\\.0\\.1:${port}": .+`);
    assert.match(result.message, new RegExp(`^Cannot connect to any of 2 endpoints: ${a}, ${b}$`));
  });
});

Deno.test("a client with reconnect whose endpoint dies mid-session goes on with the next one", async () => {
  const counts = new Map<string, number>();
  const gate = Promise.withResolvers<void>();
  function handlers(label: string) {
    return {
      where: () => label,
      async held(key: string): Promise<string> {
        counts.set(key, (counts.get(key) ?? 0) + 1);
        await gate.promise;
        return label;
      },
    };
  }
  await using first = await serveOn(0, handlers("first"));
  await using second = await serveOn(0, handlers("second"));
  await using dying = tcpRelay(first.addr.port);
  let disconnects = 0;
  let reconnects = 0;
  await using client = await inGivenOrder(() =>
    connectAll([
      { hostname: "127.0.0.1", port: dying.port },
      { hostname: "127.0.0.1", port: second.addr.port },
    ], {
      reconnect: { initialDelay: 10, maxDelay: 50, maxAttempts: 100 },
      onDisconnect: () => void disconnects++,
      onReconnect: () => void reconnects++,
    })
  );
  assert.equal(await within(client.call("where"), "a call before"), "first");
  const plain = client.call("held", "plain").then(() => undefined, (error: unknown) => error);
  const idempotent = client.withOptions({ idempotent: true }).call("held", "idem");
  await until(() => counts.size === 2, "the two held calls to reach the first server");
  dying.kill();
  // At most once: the plain call's outcome is unknown, so it rejects; the idempotent one moves.
  assert.ok((await within(plain, "the plain call")) instanceof ConnectionError);
  gate.resolve();
  assert.equal(await within(idempotent, "the idempotent call"), "second");
  assert.equal(await within(client.call("where"), "a call after"), "second");
  assert.equal(counts.get("plain"), 1);
  assert.equal(counts.get("idem"), 2);
  assert.equal(disconnects, 1);
  assert.equal(reconnects, 1);
});

Deno.test("endpoints are shuffled: over 20 connects, both of two endpoints get used, each verified under its own hostname", async () => {
  await using v4 = await serveOn(0, labelled("localhost"));
  await using v6 = await serveOn(0, labelled("::1"), { hostname: "::1" });
  const endpoints = [
    { hostname: "localhost", port: v4.addr.port },
    { hostname: "::1", port: v6.addr.port },
  ];
  const seen = new Set<unknown>();
  for (let i = 0; i < 20 && seen.size < 2; i++) {
    await using client = await connectAll(endpoints);
    seen.add(await within(client.call("where"), `call ${i}`));
  }
  assert.deepEqual([...seen].sort(), ["::1", "localhost"]);
});

// ---------------------------------------------------------------------------------------------
// A rolling restart

Deno.test("a rolling restart of two servers under load, with reconnect, loses no call and runs none twice", async () => {
  const counts = new Map<string, number>();
  function handlers(label: string) {
    return {
      async work(key: string, ms: number): Promise<string> {
        counts.set(key, (counts.get(key) ?? 0) + 1);
        await delay(ms); // so that calls are in flight when the server starts shutting down
        return label;
      },
    };
  }
  const servers = [await serveOn(0, handlers("a-0")), await serveOn(0, handlers("b-0"))];
  const ports = servers.map((server) => server.addr.port);
  let reconnects = 0;
  const client = await connectAll(ports.map((port) => ({ hostname: "127.0.0.1", port })), {
    reconnect: { initialDelay: 10, maxDelay: 100, maxAttempts: 1_000 },
    onReconnect: () => void reconnects++,
  });
  const failures: unknown[] = [];
  const served = new Map<string, number>();
  let made = 0;
  let running = true;
  async function load(loop: number): Promise<void> {
    for (let i = 0; running; i++) {
      // A few calls at a time from each loop, of varied length.
      const batch = [0, 1, 2].map(async (j) => {
        made++;
        try {
          const label = await client.call("work", `${loop}-${i}-${j}`, (i + j) % 4);
          served.set(label as string, (served.get(label as string) ?? 0) + 1);
        } catch (error) {
          failures.push(error);
        }
      });
      await Promise.all(batch);
    }
  }
  const loops = [0, 1, 2, 3].map(load);
  try {
    await until(() => made > 100, "the load to start");
    for (let generation = 1; generation <= 2; generation++) {
      for (const [i, name] of ["a", "b"].entries()) {
        await within(servers[i]!.shutdown(), `${name}'s shutdown`, 15_000);
        servers[i] = await serveOn(ports[i]!, handlers(`${name}-${generation}`));
        const before = made;
        await until(() => made > before + 100, `calls after ${name}'s restart`);
      }
    }
  } finally {
    running = false;
    await within(Promise.all(loops), "the load loops", 15_000);
    await client.close();
    await Promise.all(servers.map((server) => server.shutdown()));
  }
  assert.deepEqual(failures, [], `${failures.length} of ${made} calls failed`);
  assert.equal(counts.size, made);
  for (const [key, count] of counts) assert.equal(count, 1, `"${key}" ran ${count} times`);
  // The client was moved by the restarts (at least by three of the four), and served throughout.
  assert.ok(reconnects >= 3, `${reconnects} reconnections`);
  assert.ok(served.size >= 3, `calls served by ${[...served.keys()].join(", ")}`);
});
