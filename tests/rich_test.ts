// Tests of the rich values extension (PROTOCOL.md section 8, issue 5): what round-trips between this
// project's client and server, what the bytes on the wire look like, what a plain peer gets, and
// what a hostile peer's malformed extended frames get.

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type RpcClient } from "../client.ts";
import { callContext } from "../context.ts";
import { RpcError } from "../errors.ts";
import { FrameReader } from "../framing.ts";
import { decodeFrame, DEFAULT_MAX_DEPTH } from "../_codec.ts";
import { certs, fakeTlsServer, RawClient, startServer, within } from "./_util.ts";
import { extendedPayload, pattern } from "./portable/_data.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * Connects to `port` on 127.0.0.1 trusting the test CA. Calls time out after 5 s, so that a call
 * the server never answers fails its test instead of hanging it (a bound, not a timing assertion);
 * tests that look at the exact bytes of requests pass `timeout: 0`, as the timeout travels with
 * each request.
 */
function connectTo(port: number, options: ConnectOptions = {}): Promise<RpcClient> {
  return connect({ hostname: "127.0.0.1", port, caCerts: [certs.ca], timeout: 5_000, ...options });
}

/** A received response, loosely typed. */
interface Response {
  jsonrpc?: unknown;
  id?: unknown;
  result?: unknown;
  error?: { code: number; message: string; data?: unknown };
}

/**
 * A raw TLS peer of the server that sends what it likes (RawClient) and sees each received frame's
 * bytes as they are, extended frames included.
 */
class RawPeer implements AsyncDisposable {
  readonly raw: RawClient;
  #reader: FrameReader;
  #queue: Uint8Array[] = [];

  constructor(raw: RawClient) {
    this.raw = raw;
    this.#reader = new FrameReader(raw.conn);
  }

  static async connect(port: number): Promise<RawPeer> {
    return new RawPeer(await RawClient.connect(port));
  }

  /** Sends one frame: a string as UTF-8, bytes as they are, anything else as JSON. */
  send(message: unknown): Promise<void> {
    return this.raw.send(message);
  }

  /** The next frame's payload, a copy of its own. */
  async frame(): Promise<Uint8Array> {
    for (let reads = 0; this.#queue.length === 0; reads++) {
      assert.ok(reads < 1_000, "too many reads without a frame");
      const frames = await within(this.#reader.read(), "a frame from the server");
      if (frames === null) throw new Error("The server closed the connection");
      this.#queue.push(...frames.map((frame) => frame.slice()));
    }
    return this.#queue.shift()!;
  }

  /** Sends `message` and resolves with the bytes of the next frame and its decoded message. */
  async exchange(message: unknown): Promise<{ bytes: Uint8Array; message: Response }> {
    await this.send(message);
    const bytes = await this.frame();
    return { bytes, message: decodeFrame(bytes, DEFAULT_MAX_DEPTH) as Response };
  }

  /** Sends `message` and resolves with the next frame, which must be plain JSON text. */
  async exchangePlain(message: unknown): Promise<Response> {
    const { bytes } = await this.exchange(message);
    assertPlainFrame(bytes);
    return JSON.parse(decoder.decode(bytes));
  }

  /** Announces the rich values extension, as this project's client does on connecting. */
  async hello(): Promise<void> {
    const reply = await this.exchangePlain({
      jsonrpc: "2.0",
      id: "hello",
      method: "rpc.hello",
      params: { extensions: ["rich"] },
    });
    assert.deepEqual(reply, { jsonrpc: "2.0", id: "hello", result: { extensions: ["rich"] } });
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.raw[Symbol.asyncDispose]();
  }
}

/** Asserts that a frame is standard JSON text: it starts with `{` or `[` and parses. */
function assertPlainFrame(bytes: Uint8Array): void {
  assert.ok(
    bytes[0] === 0x7b || bytes[0] === 0x5b,
    `expected a plain JSON frame, got one starting with byte ${bytes[0]}`,
  );
  JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
}

/**
 * Asserts that `got` is `want` exactly: the same type (prototype, or `typeof`), `Object.is` for
 * numbers and for a Date's time (so `-0`, `NaN` and invalid dates count), deep strict equality
 * for the rest (which also compares prototypes, own keys and typed array contents).
 */
function assertExact(got: unknown, want: unknown, where: string): void {
  if (typeof want === "number") {
    assert.ok(Object.is(got, want), `${where}: expected ${String(want)}, got ${String(got)}`);
    return;
  }
  if (want === null || typeof want !== "object") {
    assert.equal(typeof got, typeof want, `${where}: type`);
    assert.equal(got, want, where);
    return;
  }
  assert.ok(got !== null && typeof got === "object", `${where}: expected an object, got ${got}`);
  assert.equal(Object.getPrototypeOf(got), Object.getPrototypeOf(want), `${where}: prototype`);
  if (want instanceof Date) {
    assert.ok(got instanceof Date, `${where}: expected a Date`);
    assert.ok(Object.is(got.getTime(), want.getTime()), `${where}: time ${got.getTime()}`);
    return;
  }
  assert.deepStrictEqual(got, want, where);
}

/** Every kind of rich value, one row each: what round-trips exactly between client and server. */
function richCases(): [string, unknown][] {
  const backing = pattern(64);
  return [
    ["an empty Uint8Array", new Uint8Array(0)],
    ["a small Uint8Array", Uint8Array.of(0, 1, 2, 127, 128, 255)],
    ["a 1 MiB Uint8Array", pattern(MiB, 3)],
    ["a Uint8Array subarray with a non-zero byteOffset", backing.subarray(5, 21)],
    ["an Int8Array", Int8Array.of(-128, -1, 0, 1, 127)],
    ["a Uint8ClampedArray", Uint8ClampedArray.of(0, 1, 128, 255)],
    ["an Int16Array", Int16Array.of(-32768, -1, 0, 258, 32767)],
    ["a Uint16Array", Uint16Array.of(0, 1, 258, 65535)],
    ["an Int32Array", Int32Array.of(-(2 ** 31), -1, 0, 0x01020304, 2 ** 31 - 1)],
    ["a Uint32Array", Uint32Array.of(0, 1, 0x01020304, 2 ** 32 - 1)],
    ["a Float32Array", Float32Array.of(1.5, -0, NaN, Infinity, -Infinity, 3.4e38)],
    [
      "a Float64Array",
      Float64Array.of(Math.PI, -0, NaN, -Infinity, Number.MIN_VALUE, Number.MAX_VALUE),
    ],
    ["a BigInt64Array", BigInt64Array.of(-(2n ** 63n), -1n, 0n, 2n ** 63n - 1n)],
    ["a BigUint64Array", BigUint64Array.of(0n, 1n, 2n ** 64n - 1n)],
    ["a Float64Array view at a non-zero byteOffset", new Float64Array(new ArrayBuffer(64), 8, 3)],
    ["a 1 MiB Float64Array", new Float64Array(pattern(MiB, 4).buffer)],
    ["a 1 MiB BigUint64Array", new BigUint64Array(pattern(MiB, 6).buffer)],
    [
      "a 1 MiB Int16Array view at an odd element",
      new Int16Array(pattern(MiB + 4).buffer, 2, MiB / 2),
    ],
    ["a 1 MiB DataView", new DataView(pattern(MiB + 16, 8).buffer, 16)],
    ["a 1 MiB ArrayBuffer", pattern(MiB, 2).buffer],
    ["an ArrayBuffer", pattern(13).buffer],
    ["an empty ArrayBuffer", new ArrayBuffer(0)],
    ["a DataView of part of a buffer", new DataView(pattern(32).buffer, 3, 11)],
    ["a Date", new Date(1_700_000_000_123)],
    ["a Date before 1970", new Date(-1)],
    ["an invalid Date", new Date(NaN)],
    ["0n", 0n],
    ["-1n", -1n],
    ["2n ** 200n", 2n ** 200n],
    ["-(2n ** 200n)", -(2n ** 200n)],
    [
      "a Map with string, number, object, NaN, undefined and null keys",
      new Map<unknown, unknown>([
        ["s", 1],
        [1, "one"],
        [{ k: [1, 2] }, "object key"],
        [NaN, "nan"],
        [undefined, "undefined key"],
        [null, undefined],
        [-0, "minus zero"],
        [1n, new Date(0)],
      ]),
    ],
    ["an empty Map", new Map()],
    ["a Set", new Set<unknown>([1, "1", 1n, undefined, NaN, null, { a: 1 }, Uint8Array.of(9)])],
    ["an empty Set", new Set()],
    ["undefined as an object value", { a: undefined, b: 1 }],
    ["undefined as an array element", [undefined, 1, undefined]],
    ["NaN", NaN],
    ["Infinity", Infinity],
    ["-Infinity", -Infinity],
    ["-0", -0],
    ["-0 in an object", { zero: -0 }],
    [
      "everything nested in a mix",
      {
        list: [new Map([["bytes", [pattern(10), new Set([2n ** 70n])]]]), { when: new Date(5) }],
        deep: { deeper: { values: [NaN, -0, undefined, -Infinity], buffer: pattern(9).buffer } },
        maps: new Map<unknown, unknown>([[new Map([[1, 2]]), new Set([new Map()])]]),
      },
    ],
  ];
}

/** Handlers that hand back what they get, in every way a value can travel. */
function echoHandlers() {
  return {
    echo: (...args: unknown[]) => args,
    one: (value: unknown) => value,
    named: (params: Record<string, unknown>) => params,
    fail(data: unknown): never {
      throw new RpcError(4001, "Cannot comply: see the data", { data });
    },
    announce(value: unknown): string {
      callContext()!.notify("news", value);
      return "sent";
    },
    ping: () => "pong",
  };
}

// ---------------------------------------------------------------------------------------------
// Round trips

Deno.test("rich values round-trip exactly through call() as params and results, in any position", async (t) => {
  await using server = await startServer(echoHandlers());
  await using client = await connectTo(server.addr.port);
  for (const [name, value] of richCases()) {
    await t.step(name, async () => {
      const got = await client.call(
        "echo",
        value,
        { nested: [value], value },
        [1, value],
        new Map([["key", value]]),
      ) as unknown[];
      assert.ok(Array.isArray(got) && got.length === 4, "four params come back");
      const [alone, object, array, map] = got as [
        unknown,
        { nested: unknown[]; value: unknown },
        unknown[],
        Map<string, unknown>,
      ];
      assertExact(alone, value, "as a param of its own");
      assertExact(object.nested[0], value, "in an array in an object");
      assertExact(object.value, value, "as an object member");
      assertExact(array[1], value, "as an array element");
      assert.ok(map instanceof Map, "the Map param is a Map");
      assertExact(map.get("key"), value, "as a Map value");
    });
  }
  await t.step("undefined object members keep their key", async () => {
    const got = await client.call("one", { a: undefined }) as Record<string, unknown>;
    assert.ok(Object.hasOwn(got, "a"));
    assert.equal(got.a, undefined);
  });
  await t.step("-0 stays -0, and 0 stays 0", async () => {
    const [minus, plus] = await client.call("echo", -0, 0) as [number, number];
    assert.ok(Object.is(minus, -0));
    assert.ok(Object.is(plus, 0));
  });
  await t.step("an invalid Date comes back as an invalid Date", async () => {
    const got = await client.call("one", new Date(NaN));
    assert.ok(got instanceof Date);
    assert.ok(Number.isNaN(got.getTime()));
  });
  await t.step("a BigInt comes back as a bigint, not a number or a string", async () => {
    const got = await client.call("one", 2n ** 200n);
    assert.equal(typeof got, "bigint");
    assert.equal(got, 2n ** 200n);
  });
});

Deno.test("the first call after connect() already carries rich values exactly", async (t) => {
  await using server = await startServer(echoHandlers());
  const cases: [string, unknown][] = [
    ["a Date", new Date(1_700_000_000_000)],
    ["-0", -0],
    ["undefined as an object value", { a: undefined }],
    ["a Map", new Map([[1, 2]])],
    ["a Uint8Array", Uint8Array.of(1, 2, 3)],
  ];
  for (const [name, value] of cases) {
    await t.step(name, async () => {
      // A fresh connection each time, and no await between connect and call: the call must not
      // go out in plain JSON before the server has answered rpc.hello.
      await using client = await connectTo(server.addr.port);
      assertExact(await client.call("one", value), value, name);
    });
  }
});

Deno.test("rich values round-trip through RpcClient.proxy and RpcClient.callNamed()", async (t) => {
  await using server = await startServer(echoHandlers());
  await using client = await connectTo(server.addr.port);
  const cases = richCases();
  await t.step("proxy: every value as a by-position param", async () => {
    const got = await client.proxy.echo(...cases.map(([, value]) => value)) as unknown[];
    assert.equal(got.length, cases.length);
    cases.forEach(([name, value], i) => assertExact(got[i], value, name));
  });
  await t.step("callNamed: every value as a by-name param", async () => {
    const params = Object.fromEntries(cases);
    const got = await client.callNamed("named", params) as Record<string, unknown>;
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.deepEqual(Object.keys(got), Object.keys(params));
    for (const [name, value] of cases) assertExact(got[name], value, name);
  });
  await t.step("withOptions().proxy: a Map of bytes", async () => {
    const value = new Map([["a", pattern(100)]]);
    assertExact(await client.withOptions({ timeout: 10_000 }).proxy.one(value), value, "Map");
  });
});

Deno.test("rich values round-trip as the data of an RpcError thrown by a handler", async (t) => {
  await using server = await startServer(echoHandlers());
  await using client = await connectTo(server.addr.port);
  for (const [name, value] of richCases()) {
    await t.step(name, async () => {
      const error = await client.call("fail", value).then(
        () => assert.fail("the call resolved"),
        (error: unknown) => error,
      );
      assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
      assert.equal(error.code, 4001);
      assert.equal(error.message, "Cannot comply: see the data");
      assertExact(error.data, value, "error data");
    });
  }
  await t.step("nested in an object", async () => {
    const data = { bytes: pattern(5), when: new Date(7), count: 3n };
    const error = await client.call("fail", data).catch((error: unknown) => error);
    assert.ok(error instanceof RpcError);
    assertExact(error.data, data, "error data");
  });
});

Deno.test("rich values travel in notifications both ways", async (t) => {
  const heard: unknown[] = [];
  await using server = await startServer({
    ...echoHandlers(),
    record: (value: unknown) => void heard.push(value),
  });
  await using client = await connectTo(server.addr.port);
  const received: unknown[] = [];
  const stop = client.on("news", (value) => void received.push(value));
  await client.call("ping");
  const values: [string, unknown][] = [
    ["a Map of bytes", new Map([["k", pattern(20)]])],
    ["a BigInt", -(2n ** 100n)],
    ["a Date", new Date(1)],
    ["undefined in an object", { gone: undefined }],
  ];
  for (const [name, value] of values) {
    await t.step(`server to client: ${name}`, async () => {
      received.length = 0;
      // The notification goes out before the call's result, on the same connection.
      assert.equal(await client.call("announce", value), "sent");
      assert.equal(received.length, 1);
      assertExact(received[0], value, name);
    });
    await t.step(`client to server: ${name}`, async () => {
      heard.length = 0;
      client.notify("record", value);
      await client.call("ping"); // handled after the notification
      assert.equal(heard.length, 1);
      assertExact(heard[0], value, name);
    });
  }
  stop();
});

Deno.test("a Uint8Array of any size up to the frame limit round-trips, and one byte more is refused", async (t) => {
  const limit = 2 * MiB;
  await using server = await startServer(echoHandlers(), { maxFrameBytes: limit });
  await t.step("sizes around alignment, the read buffer and a large frame", async () => {
    await using client = await connectTo(server.addr.port, { maxFrameBytes: limit });
    const sizes = [0, 1, 7, 8, 9, 63, 16 * 1024 - 100, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 5];
    for (const size of [...sizes, 64 * 1024 + 3, MiB - 1, MiB, MiB + 1]) {
      const bytes = pattern(size, size);
      const got = await client.call("one", bytes);
      assert.ok(got instanceof Uint8Array, `size ${size}: a Uint8Array`);
      assert.equal(got.length, size);
      assert.deepStrictEqual(got, bytes, `size ${size}`);
    }
  });
  await t.step("exactly at the limit, and one byte over it", async () => {
    // A fresh client, so that this is its first call: id 1. The payload is laid out as
    // PROTOCOL.md section 8 says, so its size is known before it is sent.
    await using client = await connectTo(server.addr.port, { maxFrameBytes: limit, timeout: 0 });
    const json = (n: number) =>
      `{"jsonrpc":"2.0","id":1,"method":"one","params":[{"$t":"bytes","o":0,"n":${n}}]}`;
    const payloadSize = (n: number) => Math.ceil((5 + json(n).length) / 8) * 8 + n;
    let size = limit - (payloadSize(limit - 256) - (limit - 256));
    assert.equal(payloadSize(size), limit, "the largest size fills the frame exactly");
    const bytes = pattern(size, 11);
    const got = await client.call("one", bytes);
    assert.ok(got instanceof Uint8Array);
    assert.deepStrictEqual(got, bytes);
    size += 1;
    await assert.rejects(client.call("one", pattern(size)), RangeError);
    assert.equal(await client.call("ping"), "pong", "the connection still works");
  });
});

// ---------------------------------------------------------------------------------------------
// The bytes on the wire

/**
 * A hand-made TLS server for one client at a time that answers rpc.hello with the rich extension,
 * rpc.ping with "pong" and every other request with `null`, and records each frame it receives.
 */
function recordingServer() {
  const frames: Uint8Array[] = [];
  const server = fakeTlsServer(async (peer) => {
    for (let frame = await peer.receiveFrame(); frame !== null; frame = await peer.receiveFrame()) {
      frames.push(frame);
      const message = decodeFrame(frame, DEFAULT_MAX_DEPTH) as { id?: number; method: string };
      if (message.id === undefined) continue;
      const result = message.method === "rpc.hello"
        ? { extensions: ["rich"] }
        : message.method === "rpc.ping"
        ? "pong"
        : null;
      await peer.send({ jsonrpc: "2.0", id: message.id, result });
    }
  });
  return Object.assign(server, {
    frames,
    /** The frames of requests for `method`, in order. */
    requests(method: string): Uint8Array[] {
      return frames.filter((frame) =>
        (decodeFrame(frame, DEFAULT_MAX_DEPTH) as { method?: unknown }).method === method
      );
    },
  });
}

Deno.test("bytes travel raw: a 1 MiB Uint8Array param makes a frame of at most 1 MiB plus 200 bytes", async (t) => {
  await using server = recordingServer();
  await using client = await connectTo(server.port, { timeout: 0 });
  const bytes = pattern(MiB, 5);
  assert.equal(await client.call("upload", bytes), null);
  const [frame] = server.requests("upload");
  assert.ok(frame !== undefined, "the server received the request");
  await t.step("the frame is at most 1 MiB plus 200 bytes (no base64)", () => {
    assert.ok(frame.length <= MiB + 200, `the request frame has ${frame.length} bytes`);
    assert.ok(frame.length >= MiB);
  });
  await t.step("it is an extended frame whose last 1 MiB is the bytes as they are", () => {
    assert.equal(frame[0], 0x00);
    assert.deepStrictEqual(frame.subarray(frame.length - MiB), bytes);
  });
  await t.step("a subarray view sends only its own bytes", async () => {
    const backing = pattern(2 * MiB, 1);
    const view = backing.subarray(MiB / 2 + 3, MiB / 2 + 3 + MiB);
    assert.equal(await client.call("view", view), null);
    const [sent] = server.requests("view");
    assert.ok(sent !== undefined);
    assert.ok(sent.length <= MiB + 200, `the request frame has ${sent.length} bytes`);
    assert.deepStrictEqual(sent.subarray(sent.length - MiB), view);
  });
});

Deno.test("a request's frame is laid out as PROTOCOL.md section 8 says, and plain params stay standard JSON", async (t) => {
  await using server = recordingServer();
  await using client = await connectTo(server.port, { timeout: 0 });
  await t.step(
    "plain params: the frame is JSON.stringify of the request, byte for byte",
    async () => {
      const params = ["text", 1.5, -2, true, null, { a: [1, { b: "c" }] }, "ünïcödé ✓", []];
      assert.equal(await client.call("plain", ...params), null);
      const [frame] = server.requests("plain");
      assert.ok(frame !== undefined);
      assert.equal(frame[0], 0x7b, "the first byte is {");
      const { id } = JSON.parse(decoder.decode(frame));
      assert.equal(typeof id, "number");
      assert.deepStrictEqual(
        frame,
        encoder.encode(JSON.stringify({ jsonrpc: "2.0", id, method: "plain", params })),
      );
    },
  );
  await t.step("a plain object that looks like a tag stays plain JSON", async () => {
    const params = [{ $t: "bytes", o: 0, n: 3 }];
    assert.equal(await client.call("lookalike", ...params), null);
    const [frame] = server.requests("lookalike");
    assert.ok(frame !== undefined);
    const { id } = JSON.parse(decoder.decode(frame));
    assert.deepStrictEqual(
      frame,
      encoder.encode(JSON.stringify({ jsonrpc: "2.0", id, method: "lookalike", params })),
    );
  });
  await t.step("echo(Uint8Array [1, 2, 3], 10n) is the example of the specification", async () => {
    assert.equal(await client.call("echo", Uint8Array.of(1, 2, 3), 10n), null);
    const [frame] = server.requests("echo");
    assert.ok(frame !== undefined);
    const id = (decodeFrame(frame, DEFAULT_MAX_DEPTH) as { id: number }).id;
    const expected = extendedPayload(
      `{"jsonrpc":"2.0","id":${id},"method":"echo","params":[{"$t":"bytes","o":0,"n":3},{"$t":"bigint","v":"10"}]}`,
      Uint8Array.of(1, 2, 3),
    );
    assert.deepStrictEqual(frame, expected);
  });
  await t.step("byte sections start at multiples of 8 of the binary part", async () => {
    assert.equal(await client.call("sections", Uint8Array.of(1), Float64Array.of(2.5)), null);
    const [frame] = server.requests("sections");
    assert.ok(frame !== undefined);
    const length = new DataView(frame.buffer, frame.byteOffset).getUint32(1);
    const json = JSON.parse(decoder.decode(frame.subarray(5, 5 + length)));
    assert.deepEqual(json.params, [
      { $t: "bytes", o: 0, n: 1 },
      { $t: "bytes", o: 8, n: 8, k: "Float64Array" },
    ]);
    const binary = frame.subarray(Math.ceil((5 + length) / 8) * 8);
    assert.equal(binary.length, 16);
    assert.deepStrictEqual(binary.subarray(0, 8), Uint8Array.of(1, 0, 0, 0, 0, 0, 0, 0));
    assert.deepStrictEqual(binary.subarray(8), new Uint8Array(Float64Array.of(2.5).buffer));
  });
});

// ---------------------------------------------------------------------------------------------
// Views and copies

Deno.test("received bytes are views of a large frame and independent copies when small", async (t) => {
  const kept: unknown[] = [];
  await using server = await startServer({
    ...echoHandlers(),
    big: () => pattern(MiB, 9),
    small: () => ({
      u8: pattern(16, 1),
      f64: Float64Array.of(1.5, 2.5),
      dv: new DataView(pattern(8, 2).buffer),
    }),
    other: (n: number) => ({
      u8: pattern(16, 100 + n),
      f64: Float64Array.of(-n, n),
      dv: new DataView(pattern(8, n).buffer),
    }),
    keep: (value: unknown) => kept.push(value),
    describe: (bytes: Uint8Array) => ({
      isUint8Array: bytes instanceof Uint8Array,
      length: bytes.byteLength,
      bufferLength: bytes.buffer.byteLength,
    }),
  });
  await using client = await connectTo(server.addr.port);
  await t.step("a 1 MiB result is a view of the received frame, not a copy", async () => {
    const got = await client.call("big");
    assert.ok(got instanceof Uint8Array);
    assert.equal(got.byteLength, MiB);
    assert.ok(got.buffer.byteLength > got.byteLength, "the buffer holds the rest of the frame");
    assert.deepStrictEqual(got, pattern(MiB, 9));
  });
  await t.step("a 1 MiB param reaches the handler as a view of the received frame", async () => {
    const info = await client.call("describe", pattern(MiB)) as Record<string, unknown>;
    assert.equal(info.isUint8Array, true);
    assert.equal(info.length, MiB);
    assert.ok((info.bufferLength as number) > MiB, `buffer of ${info.bufferLength} bytes`);
  });
  await t.step("small results stay correct after 50 more calls on the connection", async () => {
    const got = await client.call("small") as { u8: Uint8Array; f64: Float64Array; dv: DataView };
    for (let i = 0; i < 50; i++) {
      const other = await client.call("other", i) as { u8: Uint8Array };
      assert.deepStrictEqual(other.u8, pattern(16, 100 + i));
    }
    assert.deepStrictEqual(got.u8, pattern(16, 1));
    assert.deepStrictEqual(got.f64, Float64Array.of(1.5, 2.5));
    assert.deepStrictEqual(got.dv, new DataView(pattern(8, 2).buffer));
  });
  await t.step("small params a handler keeps stay correct after 50 more calls", async () => {
    kept.length = 0;
    const first = {
      u8: pattern(16, 7),
      f32: Float32Array.of(0.5),
      dv: new DataView(pattern(4).buffer),
    };
    await client.call("keep", first);
    for (let i = 0; i < 50; i++) {
      await client.call("keep", {
        u8: pattern(16, 50 + i),
        f32: Float32Array.of(i),
        dv: new DataView(pattern(4, i).buffer),
      });
    }
    assert.equal(kept.length, 51);
    assertExact(kept[0], first, "the first params, kept");
  });
});

// ---------------------------------------------------------------------------------------------
// Plain peers

/** Values a handler may return, by name, for the plain peer tests. */
const PLAIN_PEER_RESULTS = new Map<string, () => unknown>([
  ["Map", () => new Map([[1, 2]])],
  ["Uint8Array", () => Uint8Array.of(1, 2, 3)],
  ["BigInt", () => 5n],
  ["Set", () => new Set([1])],
  ["NaN", () => NaN],
  ["Infinity", () => Infinity],
  ["-Infinity", () => -Infinity],
  ["Float64Array", () => Float64Array.of(1)],
  ["ArrayBuffer", () => new ArrayBuffer(2)],
  ["DataView", () => new DataView(new ArrayBuffer(2))],
  ["nested Map", () => ({ list: [1, { deep: new Map() }] })],
  ["Date", () => new Date(Date.UTC(2024, 0, 2, 3, 4, 5, 6))],
  ["undefined member", () => ({ a: undefined, b: 1 })],
  ["undefined element", () => [undefined, 1]],
  ["-0", () => -0],
]);

function plainPeerHandlers() {
  return {
    make: (name: string) => PLAIN_PEER_RESULTS.get(name)!(),
    ping: () => "pong",
  };
}

/** Rows of what a plain peer gets: an error naming the type, or JSON's own conversion. */
const NOT_PLAIN: [string, RegExp][] = [
  ["Map", /\bMap\b/],
  ["Uint8Array", /\bUint8Array\b/],
  ["BigInt", /\bBigInt\b/],
  ["Set", /\bSet\b/],
  ["NaN", /\bNaN\b/],
  ["Infinity", /\bInfinity\b/],
  ["-Infinity", /-Infinity\b/],
  ["Float64Array", /\bFloat64Array\b/],
  ["ArrayBuffer", /\bArrayBuffer\b/],
  ["DataView", /\bDataView\b/],
  ["nested Map", /\bMap\b/],
];
const JSON_CONVERSIONS: [string, unknown][] = [
  ["Date", "2024-01-02T03:04:05.006Z"],
  ["undefined member", { b: 1 }],
  ["undefined element", [null, 1]],
  ["-0", 0],
];

Deno.test("a raw peer that never sent rpc.hello receives only plain JSON frames", async (t) => {
  await using server = await startServer(plainPeerHandlers());
  await using peer = await RawPeer.connect(server.addr.port);
  let id = 0;
  for (const [name, names] of NOT_PLAIN) {
    await t.step(`a ${name} result gets -32603 naming the type`, async () => {
      const reply = await peer.exchangePlain({
        jsonrpc: "2.0",
        id: ++id,
        method: "make",
        params: [name],
      });
      assert.equal(reply.id, id);
      assert.equal(reply.error?.code, -32603);
      assert.match(reply.error.message, names);
      assert.equal(Object.hasOwn(reply, "result"), false);
    });
  }
  for (const [name, want] of JSON_CONVERSIONS) {
    await t.step(`a ${name} result goes as JSON.stringify makes it`, async () => {
      const request = { jsonrpc: "2.0", id: ++id, method: "make", params: [name] };
      await peer.send(request);
      const bytes = await peer.frame();
      const value = PLAIN_PEER_RESULTS.get(name)!();
      assert.equal(
        decoder.decode(bytes),
        JSON.stringify({ jsonrpc: "2.0", id, result: value }),
        "byte for byte JSON.stringify",
      );
      const reply = JSON.parse(decoder.decode(bytes));
      assert.deepStrictEqual(reply.result, want);
    });
  }
  await t.step("the connection still works", async () => {
    const reply = await peer.exchangePlain({ jsonrpc: "2.0", id: "last", method: "ping" });
    assert.deepEqual(reply, { jsonrpc: "2.0", id: "last", result: "pong" });
  });
});

Deno.test("connect({ richValues: false }) gets -32603 for rich results and JSON's conversions for the rest", async (t) => {
  await using server = await startServer(plainPeerHandlers());
  await using client = await connectTo(server.addr.port, { richValues: false });
  for (const [name, names] of NOT_PLAIN) {
    await t.step(`a ${name} result rejects with RpcError -32603 naming the type`, async () => {
      const error = await client.call("make", name).then(
        () => assert.fail("the call resolved"),
        (error: unknown) => error,
      );
      assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
      assert.equal(error.code, -32603);
      assert.match(error.message, names);
    });
  }
  for (const [name, want] of JSON_CONVERSIONS) {
    await t.step(`a ${name} result arrives as JSON makes it`, async () => {
      assertExact(await client.call("make", name), want, name);
    });
  }
  await t.step("its own rich params are refused before sending, with a TypeError", async () => {
    await assert.rejects(client.call("make", new Map()), TypeError);
    await assert.rejects(client.call("make", Uint8Array.of(1)), TypeError);
    assert.equal(await client.call("ping"), "pong", "the connection still works");
  });
});

Deno.test("a client with richValues: false never sends an extended frame", async () => {
  await using server = recordingServer();
  await using client = await connectTo(server.port, { richValues: false, timeout: 0 });
  assert.equal(await client.call("plain", new Date(0), { a: undefined }, -0), null);
  await assert.rejects(client.call("rich", Uint8Array.of(1)), TypeError);
  assert.ok(server.frames.length > 0);
  for (const frame of server.frames) assertPlainFrame(frame);
  assert.equal(server.frames.some((frame) => decoder.decode(frame).includes("rpc.hello")), false);
});

// ---------------------------------------------------------------------------------------------
// rpc.hello

Deno.test('rpc.hello answers { extensions: ["rich"] } and turns on extended frames for that connection only', async (t) => {
  await using server = await startServer({ ...echoHandlers(), map: () => new Map([["k", 1n]]) });
  await using peer = await RawPeer.connect(server.addr.port);
  await using other = await RawPeer.connect(server.addr.port);
  const call = (id: number) => ({ jsonrpc: "2.0", id, method: "map" });
  await t.step("before hello, a Map result is -32603 in a plain frame", async () => {
    const reply = await peer.exchangePlain(call(1));
    assert.equal(reply.error?.code, -32603);
  });
  await t.step('rpc.hello with by-name params is answered { extensions: ["rich"] }', async () => {
    await peer.hello();
  });
  await t.step(
    "after hello, a Map result comes in an extended frame (first byte 0x00)",
    async () => {
      const { bytes, message } = await peer.exchange(call(2));
      assert.equal(bytes[0], 0x00);
      assert.equal(message.id, 2);
      assertExact(message.result, new Map([["k", 1n]]), "result");
    },
  );
  await t.step("after hello, a plain result still comes as plain JSON text", async () => {
    const reply = await peer.exchangePlain({ jsonrpc: "2.0", id: 3, method: "one", params: [7] });
    assert.deepEqual(reply, { jsonrpc: "2.0", id: 3, result: 7 });
  });
  await t.step("another connection that sent no hello still gets plain JSON", async () => {
    const reply = await other.exchangePlain(call(4));
    assert.equal(reply.error?.code, -32603);
  });
  await t.step("rpc.hello with by-position params works too", async () => {
    const reply = await other.exchangePlain({
      jsonrpc: "2.0",
      id: 5,
      method: "rpc.hello",
      params: [{ extensions: ["rich"] }],
    });
    assert.deepEqual(reply.result, { extensions: ["rich"] });
    const { bytes } = await other.exchange(call(6));
    assert.equal(bytes[0], 0x00);
  });
});

Deno.test("rpc.hello with extensions that are not an array gets -32602", async (t) => {
  await using server = await startServer({ map: () => new Map() });
  await using peer = await RawPeer.connect(server.addr.port);
  const cases: [string, unknown][] = [
    ["a string", { extensions: "rich" }],
    ["an object", { extensions: { 0: "rich" } }],
    ["a number", { extensions: 1 }],
    ["null", { extensions: null }],
    ["a string, by position", [{ extensions: "rich" }]],
  ];
  let id = 0;
  for (const [name, params] of cases) {
    await t.step(name, async () => {
      const reply = await peer.exchangePlain({
        jsonrpc: "2.0",
        id: ++id,
        method: "rpc.hello",
        params,
      });
      assert.equal(reply.id, id);
      assert.equal(reply.error?.code, -32602);
    });
  }
  await t.step("and the connection stays plain", async () => {
    const reply = await peer.exchangePlain({ jsonrpc: "2.0", id: 99, method: "map" });
    assert.equal(reply.error?.code, -32603);
  });
});

// ---------------------------------------------------------------------------------------------
// Batches

Deno.test("batches are answered in plain JSON even for a peer with rich values", async (t) => {
  await using server = await startServer({
    map: () => new Map([[1, 2]]),
    date: () => new Date(0),
    one: (value: unknown) => value,
  });
  await using peer = await RawPeer.connect(server.addr.port);
  await peer.hello();
  await t.step("a call that returns a Map gets -32603 inside a JSON array", async () => {
    await peer.send([
      { jsonrpc: "2.0", id: 1, method: "map" },
      { jsonrpc: "2.0", id: 2, method: "one", params: ["fine"] },
      { jsonrpc: "2.0", id: 3, method: "date" },
    ]);
    const bytes = await peer.frame();
    assert.equal(bytes[0], 0x5b, "the first byte is [");
    const replies = JSON.parse(decoder.decode(bytes)) as Response[];
    assert.equal(replies.length, 3);
    const byId = new Map(replies.map((reply) => [reply.id, reply]));
    assert.equal(byId.get(1)?.error?.code, -32603);
    assert.match(byId.get(1)!.error!.message, /\bMap\b/);
    assert.equal(byId.get(2)?.result, "fine");
    assert.equal(byId.get(3)?.result, "1970-01-01T00:00:00.000Z");
  });
  await t.step("a batch sent in an extended frame is answered in plain JSON too", async () => {
    await peer.send(extendedPayload(
      `[{"jsonrpc":"2.0","id":4,"method":"one","params":[{"$t":"bytes","o":0,"n":2}]},` +
        `{"jsonrpc":"2.0","id":5,"method":"one","params":[{"$t":"bigint","v":"1"}]}]`,
      Uint8Array.of(1, 2),
    ));
    const bytes = await peer.frame();
    assertPlainFrame(bytes);
    const replies = JSON.parse(decoder.decode(bytes)) as Response[];
    assert.deepEqual(replies.map((reply) => reply.error?.code).sort(), [-32603, -32603]);
  });
  await t.step("single calls on the same connection are still rich", async () => {
    const { bytes, message } = await peer.exchange({ jsonrpc: "2.0", id: 6, method: "map" });
    assert.equal(bytes[0], 0x00);
    assertExact(message.result, new Map([[1, 2]]), "result");
  });
});

// ---------------------------------------------------------------------------------------------
// Collisions and prototypes

Deno.test("user objects whose keys look like the encoding's tags round-trip unchanged", async (t) => {
  await using server = await startServer(echoHandlers());
  await using client = await connectTo(server.addr.port);
  const lookalikes: [string, unknown][] = [
    ["a bytes tag", { $t: "bytes", o: 0, n: 3 }],
    ["a typed bytes tag", { $t: "bytes", o: 0, n: 8, k: "Float64Array" }],
    ["an object escape", { $t: "object", v: {} }],
    ["a map tag", { $t: "map" }],
    ["a map tag with entries", { $t: "map", v: [["k", 1]] }],
    ["an undefined tag", { $t: "undefined" }],
    ["a number tag", { $t: "number", v: "NaN" }],
    ["a bigint tag", { $t: "bigint", v: "5" }],
    ["a date tag", { $t: "date", v: null }],
    ["an unknown tag", { $t: "nope" }],
    ["a non-string tag", { $t: 1 }],
    ["a tag holding a tag", { $t: { $t: "map", v: [] } }],
    ["a tag holding a rich value", { $t: new Map([[1, Uint8Array.of(1)]]), v: 2n }],
  ];
  for (const [name, lookalike] of lookalikes) {
    await t.step(name, async () => {
      // Real rich values beside it, so that the frame is extended; real bytes at offset 0 too, so
      // that a bytes lookalike taken for a tag would come back as those bytes.
      const value = {
        bytes: Uint8Array.of(7, 8, 9),
        alone: lookalike,
        inArray: [lookalike, 1n],
        inMap: new Map<unknown, unknown>([["v", lookalike], [lookalike, "as a key"]]),
        inSet: new Set([lookalike]),
        deep: [{ x: [lookalike] }],
      };
      assertExact(await client.call("one", value), value, "in a rich message");
      assertExact(await client.call("one", lookalike), lookalike, "alone");
      assertExact(await client.call("echo", [lookalike]), [[lookalike]], "in an array");
    });
  }
  await t.step("an object escape around real user data", async () => {
    const value = { $t: "object", v: { $t: "bytes", o: 0, n: 1 }, bytes: Uint8Array.of(1) };
    assertExact(await client.call("one", value), value, "escape lookalike");
  });
  await t.step("as error data", async () => {
    const data = [{ $t: "bytes", o: 0, n: 3 }, Uint8Array.of(4, 5, 6)];
    const error = await client.call("fail", data).catch((error: unknown) => error);
    assert.ok(error instanceof RpcError);
    assertExact(error.data, data, "error data");
  });
});

/** An object with own `__proto__` and `constructor` keys, as JSON.parse makes it. */
function protoKeys(): Record<string, unknown> {
  return JSON.parse(
    '{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}},"x":1}',
  );
}

/** The same, made with Object.defineProperty, holding rich values. */
function protoKeysDefined(): Record<string, unknown> {
  const value: Record<string, unknown> = { y: 2 };
  Object.defineProperty(value, "__proto__", {
    value: { polluted: Uint8Array.of(1) },
    enumerable: true,
    writable: true,
    configurable: true,
  });
  Object.defineProperty(value, "constructor", {
    value: { prototype: { polluted: 1n } },
    enumerable: true,
    writable: true,
    configurable: true,
  });
  return value;
}

function assertNotPolluted(): void {
  assert.equal((({}) as Record<string, unknown>).polluted, undefined);
  assert.equal(Object.hasOwn(Object.prototype, "polluted"), false);
  assert.equal(([] as unknown as Record<string, unknown>).polluted, undefined);
  assert.equal((new Map() as unknown as Record<string, unknown>).polluted, undefined);
}

/** Asserts that `got` has plain own `__proto__` and `constructor` data keys equal to `want`'s. */
function assertOwnProtoKeys(got: unknown, want: Record<string, unknown>, where: string): void {
  assert.ok(got !== null && typeof got === "object", `${where}: an object`);
  assert.equal(Object.getPrototypeOf(got), Object.prototype, `${where}: prototype`);
  for (const key of ["__proto__", "constructor"]) {
    const descriptor = Object.getOwnPropertyDescriptor(got, key);
    assert.ok(descriptor !== undefined && "value" in descriptor, `${where}: own ${key}`);
    assertExact(descriptor.value, Object.getOwnPropertyDescriptor(want, key)!.value, key);
  }
  assert.deepEqual(Object.keys(got), Object.keys(want), `${where}: keys`);
}

Deno.test("__proto__ and constructor keys round-trip as own keys and never change a prototype", async (t) => {
  const seen: unknown[][] = [];
  await using server = await startServer({
    ...echoHandlers(),
    inspect(...values: unknown[]): string {
      seen.push(values);
      return "seen";
    },
  });
  await using client = await connectTo(server.addr.port);
  /** Where the object under test sits in each case's params. */
  const cases: [
    string,
    () => Record<string, unknown>,
    (value: unknown) => unknown[],
    (params: unknown[]) => unknown,
  ][] = [
    ["made by JSON.parse, in a plain frame", protoKeys, (value) => [value], (got) => got[0]],
    [
      "made by JSON.parse, beside a Map",
      protoKeys,
      (value) => [value, new Map([[1, 2]])],
      (got) => got[0],
    ],
    [
      "made by JSON.parse, inside a Map",
      protoKeys,
      (value) => [new Map([["k", value]])],
      (got) => (got[0] as Map<string, unknown>).get("k"),
    ],
    [
      "made by defineProperty, holding rich values",
      protoKeysDefined,
      (value) => [value],
      (got) => got[0],
    ],
    [
      "in a Set",
      protoKeysDefined,
      (value) => [new Set([value])],
      (got) => [...(got[0] as Set<unknown>)][0],
    ],
  ];
  for (const [name, make, place, find] of cases) {
    await t.step(name, async () => {
      const value = make();
      seen.length = 0;
      assert.equal(await client.call("inspect", ...place(value)), "seen");
      assert.equal(seen.length, 1);
      assertOwnProtoKeys(find(seen[0]!), value, "the handler's param");
      assertNotPolluted();
      const got = await client.call("echo", ...place(value)) as unknown[];
      assertOwnProtoKeys(find(got), value, "the echoed result");
      assertNotPolluted();
    });
  }
  await t.step("as error data and as a result", async () => {
    const value = protoKeysDefined();
    const error = await client.call("fail", value).catch((error: unknown) => error);
    assert.ok(error instanceof RpcError);
    assertOwnProtoKeys(error.data, value, "error data");
    assertOwnProtoKeys(await client.call("one", value), value, "result");
    assertNotPolluted();
  });
  await t.step(
    "in a hostile extended frame, inside an object escape and tagged values",
    async () => {
      await using peer = await RawPeer.connect(server.addr.port);
      seen.length = 0;
      const json = `{"jsonrpc":"2.0","id":1,"method":"inspect","params":[{` +
        `"__proto__":{"polluted":{"$t":"bytes","o":0,"n":1}},` +
        `"constructor":{"prototype":{"polluted":true}},` +
        `"escaped":{"$t":"object","v":{"$t":"x","__proto__":{"polluted":{"$t":"bigint","v":"1"}}}},` +
        `"map":{"$t":"map","v":[["__proto__",{"__proto__":{"polluted":1}}]]}}]}`;
      const reply = await peer.exchangePlain(extendedPayload(json, Uint8Array.of(42)));
      assert.equal(reply.result, "seen");
      assert.equal(seen.length, 1);
      const value = seen[0]![0] as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(value), Object.prototype);
      const proto = Object.getOwnPropertyDescriptor(value, "__proto__")?.value;
      assertExact(proto, { polluted: Uint8Array.of(42) }, "own __proto__");
      const escaped = value.escaped as Record<string, unknown>;
      assert.equal(Object.getPrototypeOf(escaped), Object.prototype);
      assert.equal(escaped.$t, "x");
      assertExact(
        Object.getOwnPropertyDescriptor(escaped, "__proto__")?.value,
        { polluted: 1n },
        "escaped own __proto__",
      );
      const map = value.map as Map<string, Record<string, unknown>>;
      assert.ok(map instanceof Map);
      const inner = map.get("__proto__")!;
      assert.equal(Object.getPrototypeOf(inner), Object.prototype);
      assert.ok(Object.hasOwn(inner, "__proto__"));
      assertNotPolluted();
    },
  );
  assertNotPolluted();
});

// ---------------------------------------------------------------------------------------------
// Hostile peers

Deno.test("malformed extended frames get -32700 with id null and the connection stays usable", async (t) => {
  await using server = await startServer({ ...echoHandlers(), ping: () => "pong" });
  await using peer = await RawPeer.connect(server.addr.port);
  await peer.hello();
  const request = (params: string) =>
    `{"jsonrpc":"2.0","id":5,"method":"one","params":[${params}]}`;
  const eight = pattern(8);
  await t.step(
    "a well-formed hand-made frame is answered (the frames below differ only in their flaw)",
    async () => {
      const { message } = await peer.exchange(
        extendedPayload(request(`{"$t":"bytes","o":0,"n":8,"k":"Float64Array"}`), eight),
      );
      assert.equal(message.id, 5);
      assertExact(message.result, new Float64Array(eight.buffer), "result");
    },
  );
  // Valid JSON but for one byte that is not UTF-8, inside a string.
  const invalidUtf8 = Uint8Array.of(
    ...encoder.encode(`{"jsonrpc":"2.0","id":5,"method":"one","params":["`),
    0xff,
    ...encoder.encode(`"]}`),
  );
  // Header and JSON part, no padding: the stated length is one byte more than there is.
  const short = encoder.encode(request("1"));
  const onePast = new Uint8Array(5 + short.length);
  new DataView(onePast.buffer).setUint32(1, short.length + 1);
  onePast.set(short, 5);
  const cases: [string, Uint8Array][] = [
    [
      "a JSON part's length larger than the frame",
      extendedPayload(request("1"), eight, { statedLength: 200 }),
    ],
    [
      "a JSON part's length of 2**32 - 1",
      extendedPayload(request("1"), eight, { statedLength: 0xffff_ffff }),
    ],
    ["a JSON part's length one past the end of the frame", onePast],
    ["a frame shorter than its header", Uint8Array.of(0x00, 0x00, 0x00)],
    ["a frame of the marker alone", Uint8Array.of(0x00)],
    ["a JSON part that is not JSON", extendedPayload(request("{"))],
    ["a JSON part that is not UTF-8", extendedPayload(invalidUtf8)],
    ["an unknown tag", extendedPayload(request('{"$t":"nope"}'))],
    ["a tag that is not a string", extendedPayload(request('{"$t":5}'))],
    [
      "a bytes section past the binary part",
      extendedPayload(request('{"$t":"bytes","o":0,"n":9}'), eight),
    ],
    [
      "a bytes section starting past the binary part",
      extendedPayload(request('{"$t":"bytes","o":16,"n":0}'), eight),
    ],
    ["a bytes section with no binary part", extendedPayload(request('{"$t":"bytes","o":0,"n":1}'))],
    [
      "a bytes section at a negative offset",
      extendedPayload(request('{"$t":"bytes","o":-8,"n":8}'), eight),
    ],
    [
      "a bytes section with a negative length",
      extendedPayload(request('{"$t":"bytes","o":8,"n":-8}'), eight),
    ],
    [
      "a bytes section at a fractional offset",
      extendedPayload(request('{"$t":"bytes","o":0.5,"n":1}'), eight),
    ],
    [
      "a bytes section whose offset is a string",
      extendedPayload(request('{"$t":"bytes","o":"0","n":1}'), eight),
    ],
    ["a bytes section without a length", extendedPayload(request('{"$t":"bytes","o":0}'), eight)],
    ["a BigInt that is not a number", extendedPayload(request('{"$t":"bigint","v":"12abc"}'))],
    ["a BigInt of the empty string", extendedPayload(request('{"$t":"bigint","v":""}'))],
    ["a BigInt in exponent notation", extendedPayload(request('{"$t":"bigint","v":"1e3"}'))],
    ["a BigInt given as a JSON number", extendedPayload(request('{"$t":"bigint","v":12}'))],
    ["a BigInt in hexadecimal", extendedPayload(request('{"$t":"bigint","v":"0x10"}'))],
    [
      "a typed array of a kind that does not exist",
      extendedPayload(request('{"$t":"bytes","o":0,"n":8,"k":"NopeArray"}'), eight),
    ],
    [
      "a typed array of a kind the encoding lacks",
      extendedPayload(request('{"$t":"bytes","o":0,"n":8,"k":"Float16Array"}'), eight),
    ],
    [
      "a typed array kind that names an Object.prototype member",
      extendedPayload(request('{"$t":"bytes","o":0,"n":8,"k":"constructor"}'), eight),
    ],
    [
      "a typed array kind that is not a string",
      extendedPayload(request('{"$t":"bytes","o":0,"n":8,"k":1}'), eight),
    ],
    [
      "a Float64Array section of 12 bytes",
      extendedPayload(request('{"$t":"bytes","o":0,"n":12,"k":"Float64Array"}'), pattern(16)),
    ],
    [
      "an Int32Array section of 6 bytes",
      extendedPayload(request('{"$t":"bytes","o":0,"n":6,"k":"Int32Array"}'), eight),
    ],
    [
      "a BigInt64Array section of 4 bytes",
      extendedPayload(request('{"$t":"bytes","o":0,"n":4,"k":"BigInt64Array"}'), eight),
    ],
    ["a number tag of an ordinary number", extendedPayload(request('{"$t":"number","v":"5"}'))],
    ["a date tag holding a string", extendedPayload(request('{"$t":"date","v":"2024-01-01"}'))],
    ["a map entry that is not a pair", extendedPayload(request('{"$t":"map","v":[[1]]}'))],
    ["a map whose entries are not an array", extendedPayload(request('{"$t":"map","v":{}}'))],
    ["a set whose items are not an array", extendedPayload(request('{"$t":"set","v":1}'))],
    ["an object escape holding an array", extendedPayload(request('{"$t":"object","v":[]}'))],
    [
      "a bad tag deep inside a Map",
      extendedPayload(request('{"$t":"map","v":[[1,[{"a":{"$t":"nope"}}]]]}')),
    ],
  ];
  let id = 100;
  for (const [name, frame] of cases) {
    await t.step(name, async () => {
      const { bytes, message } = await peer.exchange(frame);
      assertPlainFrame(bytes);
      assert.equal(message.jsonrpc, "2.0");
      assert.equal(message.id, null);
      assert.equal(message.error?.code, -32700, `got ${JSON.stringify(message)}`);
      const after = await peer.exchangePlain({ jsonrpc: "2.0", id: ++id, method: "ping" });
      assert.deepEqual(after, { jsonrpc: "2.0", id, result: "pong" });
    });
  }
});

// ---------------------------------------------------------------------------------------------
// Values that cannot be sent

Deno.test("values that cannot be sent at all fail cleanly: TypeError for params, -32603 for results", async (t) => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cyclicMap = new Map<string, unknown>();
  cyclicMap.set("self", cyclicMap);
  const results = new Map<string, () => unknown>([
    ["a WeakMap", () => new WeakMap()],
    ["a WeakSet", () => new WeakSet()],
    ["a WeakMap nested in a Map", () => new Map([["w", new WeakMap()]])],
    ["a cyclic object", () => cyclic],
    ["a cyclic Map", () => cyclicMap],
    ["a cyclic object beside bytes", () => [Uint8Array.of(1), cyclic]],
    ["a function in an array", () => [1, () => 2]],
    ["a symbol in an array", () => [Symbol("s")]],
  ]);
  await using server = await startServer({
    ...echoHandlers(),
    make: (name: string) => results.get(name)!(),
  });
  await using client = await connectTo(server.addr.port);
  const params: [string, unknown][] = [
    ["a function nested in an array", [1, [() => 2]]],
    ["a symbol nested in an array", [[Symbol("s")]]],
    ["a WeakMap", new WeakMap()],
    ["a cyclic object", cyclic],
    ["a cyclic Map", cyclicMap],
  ];
  for (const [name, value] of params) {
    await t.step(`a param holding ${name}: the call rejects with TypeError`, async () => {
      await assert.rejects(client.call("one", value), TypeError);
      assert.equal(await client.call("ping"), "pong", "the connection still works");
    });
  }
  for (const name of results.keys()) {
    await t.step(`a result holding ${name}: -32603`, async () => {
      const error = await client.call("make", name).then(
        () => assert.fail("the call resolved"),
        (error: unknown) => error,
      );
      assert.ok(error instanceof RpcError, `expected RpcError, got ${error}`);
      assert.equal(error.code, -32603);
      assert.match(error.message, /^Cannot send result of "make": /);
      assert.equal(await client.call("ping"), "pong", "the connection still works");
    });
  }
  await t.step("a WeakMap result's message names the type", async () => {
    const error = await client.call("make", "a WeakMap").catch((error: unknown) => error);
    assert.ok(error instanceof RpcError);
    assert.match(error.message, /\bWeakMap\b/);
  });
});

/** `depth` Maps, each the only value of the next. */
function nestedMaps(depth: number): unknown {
  let value: unknown = Uint8Array.of(1);
  for (let i = 0; i < depth; i++) value = new Map([["k", value]]);
  return value;
}

/** `depth` Sets, each the only item of the next. */
function nestedSets(depth: number): unknown {
  let value: unknown = 1n;
  for (let i = 0; i < depth; i++) value = new Set([value]);
  return value;
}

/** `depth` arrays, each the only element of the next. */
function nestedArrays(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

Deno.test("deeply nested values either round-trip or fail cleanly, and the connection stays usable", async (t) => {
  const cases: [string, () => unknown][] = [
    ["10 nested Maps", () => nestedMaps(10)],
    ["43 nested Maps", () => nestedMaps(43)],
    ["64 nested Sets", () => nestedSets(64)],
    ["127 nested arrays", () => nestedArrays(127)],
    ["128 nested arrays", () => nestedArrays(128)],
  ];
  await using server = await startServer({
    ...echoHandlers(),
    make: (name: string) => new Map(cases).get(name)!(),
  });
  /** How a call settled, within a bound so that a call that never settles fails the test. */
  function outcome(call: Promise<unknown>, what: string): Promise<unknown> {
    const settled = call.then((value) => ({ value }), (error: unknown) => ({ error }));
    return within(settled, `${what} to settle`, 2_000);
  }
  for (const [name, make] of cases) {
    await t.step(`${name} as a param: exact, or a TypeError or RangeError`, async () => {
      // A client of its own, so that each row fails or passes on its own.
      await using client = await connectTo(server.addr.port);
      const value = make();
      const got = await outcome(client.call("one", value), "the call") as {
        value?: unknown;
        error?: unknown;
      };
      if ("error" in got) {
        assert.ok(
          got.error instanceof TypeError || got.error instanceof RangeError,
          `expected TypeError or RangeError, got ${got.error}`,
        );
      } else assertExact(got.value, value, name);
      assert.equal(await client.call("ping"), "pong", "the connection still works");
    });
    await t.step(`${name} as a result: exact, or -32603`, async () => {
      // A client of its own, so that each row fails or passes on its own.
      await using client = await connectTo(server.addr.port);
      const got = await outcome(client.call("make", name), "the call") as {
        value?: unknown;
        error?: unknown;
      };
      if ("error" in got) {
        assert.ok(got.error instanceof RpcError, `expected RpcError, got ${got.error}`);
        assert.equal(got.error.code, -32603);
      } else assertExact(got.value, make(), name);
      assert.equal(client.isClosed, false, "the client is still open");
      assert.equal(await client.call("ping"), "pong", "the connection still works");
    });
  }
});
