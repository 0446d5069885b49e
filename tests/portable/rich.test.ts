// Rich values between a client and a server on the runtime that runs the tests, over real TLS:
// what round-trips in params, results and error data, and what a client that turned them off gets.

import assert from "node:assert/strict";
import { test } from "node:test";
import { RpcError } from "../../mod.ts";
import { pattern } from "./_data.ts";
import { connectTo, handlers, startServer } from "./_util.ts";

const values: [string, unknown][] = [
  ["undefined, in an array and as a member", [undefined, { a: undefined }]],
  ["NaN, the infinities and -0", [NaN, Infinity, -Infinity, -0]],
  ["BigInts, large and negative", [0n, -(2n ** 200n), 2n ** 64n]],
  ["Dates, one invalid", [new Date(0), new Date(8.64e15), new Date(NaN)]],
  ["a Map with keys of any kind", new Map<unknown, unknown>([[1, "one"], ["1", 1], [null, [2n]]])],
  ["a Set", new Set([1, "1", undefined])],
  ["a Uint8Array", pattern(1000)],
  ["every typed array", [
    new Int8Array([-1]),
    new Uint8ClampedArray([255]),
    new Int16Array([-2]),
    new Uint16Array([2]),
    new Int32Array([-3]),
    new Uint32Array([3]),
    new Float32Array([0.5]),
    new Float64Array([-0.25]),
    new BigInt64Array([-4n]),
    new BigUint64Array([4n]),
  ]],
  ["an ArrayBuffer and a DataView", [
    new Uint8Array([1, 2]).buffer,
    new DataView(new ArrayBuffer(3)),
  ]],
  ["an object with a member named like the tag", { $t: "date", v: 0 }],
  ["nested all together", { list: [new Map([["k", new Set([1n])]]), { when: new Date(1) }] }],
];

test("rich values round-trip as params and results", async (t) => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port);
  for (const [name, value] of values) {
    await t.test(name, async () => {
      assert.deepEqual(await client.call("echo", value), value);
    });
  }
});

test("an error's data carries rich values", async () => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port);
  const data = { at: new Date(5), ids: new Set([1n]) };
  await assert.rejects(client.call("fail", 4100, "Cannot do it", data), (error) => {
    assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
    assert.equal(error.code, 4100);
    assert.deepEqual(error.data, data);
    return true;
  });
});

test("a client with richValues: false speaks plain JSON, and cannot send a rich value", async () => {
  await using server = await startServer(handlers);
  await using client = await connectTo(server.addr.port, { richValues: false });
  assert.deepEqual(await client.call("echo", { a: [1, "b", null] }), { a: [1, "b", null] });
  await assert.rejects(client.call("echo", 1n), TypeError);
});
