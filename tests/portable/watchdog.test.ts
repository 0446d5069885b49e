// The accept watchdog's probe on every runtime: it connects with Deno.connect on Deno and node:net
// elsewhere, and an idle server's probes are silent (no log line, no handshake failure counted).

import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { SelfProbe } from "../../_watchdog.ts";
import { connectTo, handlers, sleep, startServer } from "./_util.ts";

/** A TCP server on 127.0.0.1 that tells `probe` of each connection, when `claim` is true. */
async function listener(claim: boolean, probe: () => SelfProbe | undefined) {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    const peer = { hostname: socket.remoteAddress ?? "?", port: socket.remotePort ?? 0 };
    if (claim) probe()?.claim(peer, (isProbe) => isProbe && socket.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

test("SelfProbe tells a listener that reports the probe's connection from one that does not", async (t) => {
  for (
    const [name, claim, expected] of [
      ["a listener that reports it: accepting", true, "accepting"],
      ["a listener that does not: stuck", false, "stuck"],
    ] as const
  ) {
    await t.test(name, async () => {
      let probe: SelfProbe | undefined;
      const server = await listener(claim, () => probe);
      try {
        probe = new SelfProbe("127.0.0.1", (server.address() as net.AddressInfo).port);
        assert.equal(await probe.check(), expected);
      } finally {
        server.close();
      }
    });
  }
  await t.test("a port where nothing listens: unknown", async () => {
    const server = await listener(false, () => undefined);
    const { port } = server.address() as net.AddressInfo;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    assert.equal(await new SelfProbe("127.0.0.1", port).check(), "unknown");
  });
});

test("an idle server's watchdog probes it without a log line or a handshake failure", async () => {
  const logs: string[] = [];
  await using server = await startServer(handlers, { logs, metrics: true });
  // The first look comes after a second without a connection, the next two seconds later.
  await sleep(3500);
  const snapshot = server.metrics!.snapshot();
  assert.deepEqual(logs, []);
  assert.ok(
    Object.values(snapshot.handshakeFailures).every((n) => n === 0),
    JSON.stringify(snapshot),
  );
  assert.equal(snapshot.connectionsTotal, 0, "a probe is no connection");
  await using client = await connectTo(server.addr.port);
  assert.equal(await client.call("add", 1, 2), 3);
});
