// Cross-runtime pairings: a client on this runtime against a server on each other runtime, and a
// server on this runtime against a client on each other runtime, over real TLS on loopback. Run
// on Deno, Node.js and Bun, the three cover every ordered pair twice. Each pairing makes 200
// concurrent calls, gets coded errors and sends and gets 3 MB values (see `exercise`).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  connectTo,
  exercise,
  handlers,
  nextMessage,
  runtime,
  RUNTIMES,
  startPeer,
  startServer,
  within,
} from "./_util.ts";

const others = RUNTIMES.filter((name) => name !== runtime);

describe(`a ${runtime} client against a server on another runtime`, () => {
  for (const other of others) {
    test(`${runtime} client, ${other} server: 200 concurrent calls, coded errors, 3 MB values`, async () => {
      await using peer = startPeer(other, ["serve"]);
      const { port } = await nextMessage(peer, `the ${other} server's port`) as { port: number };
      await using client = await within(connectTo(port), `connecting to the ${other} server`);
      const report = await within(exercise(client), "the exercise", 60_000);
      assert.equal(report.server, other);
    });
  }
});

describe(`a ${runtime} server against a client on another runtime`, () => {
  for (const other of others) {
    test(`${other} client, ${runtime} server: 200 concurrent calls, coded errors, 3 MB values`, async () => {
      const logs: string[] = [];
      await using server = await startServer(handlers, { logs });
      await using peer = startPeer(other, ["call", String(server.addr.port)]);
      const outcome = await nextMessage(peer, `the ${other} client's report`, 60_000) as {
        ok: boolean;
        error?: string;
        report?: { server: string; client: string };
      };
      assert.ok(outcome.ok, `the ${other} client failed: ${outcome.error}\n${peer.stderr()}`);
      assert.equal(outcome.report?.server, runtime);
      assert.equal(outcome.report?.client, other);
      assert.equal(await within(peer.exited, `the ${other} client's exit`), 0);
      // The one line the server writes: the runtime error it hid from the client.
      assert.equal(logs.length, 1, logs.join("\n"));
      assert.match(logs[0]!, /^"crash" failed: ENOENT/);
    });
  }
});
