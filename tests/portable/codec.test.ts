// The codec on every runtime: frames to messages and back, plain and rich, and the errors a bad
// frame gets.

import assert from "node:assert/strict";
import { test } from "node:test";
import { Codec, DecodeError, NotPlainError } from "../../_codec.ts";
import { ErrorCode } from "../../errors.ts";

const encoder = new TextEncoder();

/** The payload of an outgoing message, as a frame carries it. */
function payload(body: string | Uint8Array[]): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  const bytes = new Uint8Array(body.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of body) {
    bytes.set(part, at);
    at += part.length;
  }
  return bytes;
}

test("Codec decodes a request and encodes JSON-RPC 2.0 results and errors as JSON text", () => {
  const codec = new Codec();
  assert.deepEqual(
    codec.decode(encoder.encode('{"jsonrpc":"2.0","method":"sum","params":[1,2],"id":7}')),
    { jsonrpc: "2.0", method: "sum", params: [1, 2], id: 7 },
  );
  const result = codec.result("7", { total: 3, names: ["a", "é"] });
  assert.equal(typeof result.body, "string");
  assert.deepEqual(JSON.parse(result.body as string), {
    jsonrpc: "2.0",
    result: { total: 3, names: ["a", "é"] },
    id: 7,
  });
  const error = codec.error('"x"', ErrorCode.MethodNotFound, "Method not found");
  assert.equal(error.code, ErrorCode.MethodNotFound);
  assert.deepEqual(JSON.parse(error.body as string), {
    jsonrpc: "2.0",
    error: { code: -32601, message: "Method not found" },
    id: "x",
  });
});

test("Codec refuses a bad frame with DecodeError carrying the code to answer and the id", async (t) => {
  const cases = [
    { name: "invalid JSON", text: "{bad", code: ErrorCode.ParseError, idText: "null" },
    {
      name: "nesting deeper than maxDepth",
      text: '{"jsonrpc":"2.0","method":"m","params":[[[[[1]]]]],"id":"x"}',
      code: ErrorCode.InvalidRequest,
      idText: '"x"',
    },
    {
      name: "bytes that are not UTF-8",
      bytes: [0x22, 0xff, 0x22],
      code: ErrorCode.ParseError,
      idText: "null",
    },
  ];
  const codec = new Codec({ maxDepth: 4 });
  for (const { name, text, bytes, code, idText } of cases) {
    await t.test(name, () => {
      const frame = text === undefined ? new Uint8Array(bytes!) : encoder.encode(text);
      assert.throws(() => codec.decode(frame), (error) => {
        assert.ok(error instanceof DecodeError, `expected DecodeError, got ${error}`);
        assert.equal(error.code, code);
        assert.equal(error.idText, idText);
        return true;
      });
    });
  }
});

test("A rich codec's extended frames decode back into equal rich values", () => {
  const codec = new Codec({ rich: true });
  const value = {
    date: new Date(1_700_000_000_000),
    invalid: new Date(NaN),
    map: new Map<unknown, unknown>([["k", new Set([1n, -2n])]]),
    bytes: new Uint8Array([0, 1, 2, 255]),
    ints: new Int32Array([-1, 2_000_000_000]),
    buffer: new Uint8Array([9, 8, 7]).buffer,
    special: [NaN, Infinity, -Infinity, -0, undefined],
    $t: "not a tag",
  };
  const result = codec.result("1", value);
  assert.ok(Array.isArray(result.body), "rich values travel in an extended frame");
  const message = codec.decode(payload(result.body)) as { result: unknown; id: unknown };
  assert.equal(message.id, 1);
  assert.deepEqual(message.result, value);
});

test("A plain codec refuses a value JSON cannot carry with NotPlainError, a TypeError", () => {
  const codec = new Codec();
  // A Date is JSON's (its ISO text) and undefined in an array is null, as JSON.stringify has it.
  assert.equal(
    codec.result("1", [new Date(0), undefined]).body,
    '{"jsonrpc":"2.0","id":1,"result":["1970-01-01T00:00:00.000Z",null]}',
  );
  for (const value of [1n, new Map(), new Uint8Array(1), NaN]) {
    assert.throws(() => codec.result("1", { value: [value] }), (error) => {
      assert.ok(error instanceof NotPlainError, `expected NotPlainError, got ${error}`);
      assert.ok(error instanceof TypeError);
      return true;
    });
  }
});

test("Codec reads text alike on both sides of its ASCII fast path (2 KiB), in a view of a larger buffer", () => {
  const codec = new Codec({ maxJsonValues: 1_000_000 });
  for (const size of [40, 63, 64, 65, 2047, 2048, 2049, 5000]) {
    for (const filler of [String.raw`a\u0001\\\"~`, "é", "😀"]) {
      const head = '{"jsonrpc":"2.0","id":1,"result":"';
      const tail = '"}';
      let text = head;
      while (encoder.encode(text + filler + tail).length <= size) text += filler;
      text += "x".repeat(size - encoder.encode(text + tail).length) + tail;
      const bytes = encoder.encode(text);
      assert.equal(bytes.length, size);
      // As the reader hands it over: a view into its read buffer, other bytes around it.
      const buffer = new Uint8Array(size + 20).fill(0xff);
      buffer.set(bytes, 10);
      const frame = buffer.subarray(10, 10 + size);
      assert.deepEqual(codec.decode(frame), JSON.parse(text), `${size} bytes of ${filler}`);
    }
  }
  // A byte that is not UTF-8 is refused below the fast path's size as above it.
  for (const size of [40, 3000]) {
    const bytes = encoder.encode(`{"jsonrpc":"2.0","id":1,"result":"${"x".repeat(size - 36)}"}`);
    bytes[bytes.length - 4] = 0xff;
    assert.throws(
      () => codec.decode(bytes),
      (error) => error instanceof DecodeError && error.code === ErrorCode.ParseError,
    );
  }
});
