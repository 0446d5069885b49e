import assert from "node:assert/strict";
import { callContext } from "../context.ts";
import { serve } from "../server.ts";
import { connect } from "../client.ts";
import { ConnectionError, ErrorCode, RpcError } from "../errors.ts";
import {
  certs,
  connectTo,
  framed,
  gate,
  header,
  PARTIAL_CLIENT_HELLO,
  RawClient,
  request,
  serverOptions,
  TcpClient,
  watchedOptions,
  within,
} from "./_util.ts";
import * as calc from "../examples/calc.ts";

const encoder = new TextEncoder();

/** The next frame, or null once the server has closed the connection (cleanly or by reset). */
async function receiveOrClosed(raw: RawClient): Promise<unknown> {
  try {
    return await within(raw.receive(), "a frame or the close");
  } catch (error) {
    if (error instanceof Error && error.message.startsWith("Gave up")) throw error;
    return null;
  }
}

Deno.test("serve() exposes the allowed members of each kind of handlers, in methods and on the wire", async (t) => {
  let getterCalls = 0;
  class Base {
    inherited(): string {
      return "base";
    }
    overridden(): string {
      return "base";
    }
    _baseHidden(): string {
      return "hidden";
    }
  }
  class Service extends Base {
    field = (x: unknown) => x;
    _ownHidden = () => "hidden";
    own(): string {
      return "own";
    }
    override overridden(): string {
      return "service";
    }
    get accessor(): number {
      return ++getterCalls;
    }
    _hidden(): string {
      return "hidden";
    }
    static make(): Service {
      return new Service();
    }
  }
  const plain = {
    add: (a: number, b: number) => a + b,
    _hidden: () => "hidden",
    constructor: () => "constructor",
    toString: () => "toString",
    valueOf: () => 1,
    hasOwnProperty: () => true,
    get accessor() {
      return ++getterCalls;
    },
    Klass: class {},
    value: 42,
    nested: { neg: (x: number) => -x, deeper: { id: (x: unknown) => x }, _no: () => 0 },
  };
  Object.defineProperty(plain, "__proto__", { value: () => "proto", enumerable: true });
  const shared = { f: () => "shared" };
  const neverExposed = [
    "toString",
    "constructor",
    "__proto__",
    "hasOwnProperty",
    "__defineGetter__",
    "__lookupGetter__",
    "valueOf",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "_hidden",
    "accessor",
    "Klass",
    "value",
    "rpc.other",
    "",
  ];
  const cases: { name: string; handlers: object; names: string[]; hidden: string[] }[] = [
    {
      name: "plain object",
      handlers: plain,
      names: ["add", "nested.deeper.id", "nested.neg"],
      hidden: ["nested", "nested._no", "nested.constructor", "nested.__proto__", "add.call"],
    },
    {
      name: "class instance with a base class",
      handlers: new Service(),
      names: ["field", "inherited", "own", "overridden"],
      hidden: ["_baseHidden", "_ownHidden", "make", "own.bind", "field.apply"],
    },
    {
      name: "module namespace",
      handlers: calc,
      names: ["add", "divide", "sleep", "stats.mean", "stats.range", "subtract"],
      hidden: ["stats", "stats.constructor", "stats.toString"],
    },
    {
      name: "nested plain objects as dotted namespaces",
      handlers: { a: { b: { c: { d: () => "deep" } } }, x: () => "x" },
      names: ["a.b.c.d", "x"],
      hidden: ["a", "a.b", "a.b.c"],
    },
    {
      name: "the same namespace object under two names",
      handlers: { a: shared, b: shared },
      names: ["a.f", "b.f"],
      hidden: [],
    },
  ];
  for (const { name, handlers, names, hidden } of cases) {
    await t.step(name, async () => {
      await using server = await serve(handlers, serverOptions());
      assert.deepEqual([...server.methods.keys()].sort(), [...names].sort());
      for (const [key, method] of server.methods) assert.equal(method.name, key);
      await using raw = await RawClient.connect(server.addr.port);
      const calls = [...names, ...neverExposed, ...hidden];
      // One param each: a wrong count is -32602, so only a missing method is -32601.
      const responses = await raw.exchange(calls.map((method, id) => request(id, method, [0]))) as {
        id: number;
        error?: { code: number };
      }[];
      const notFound = responses.filter((r) => r.error?.code === ErrorCode.MethodNotFound)
        .map((r) => calls[r.id]).sort();
      assert.deepEqual(notFound, [...neverExposed, ...hidden].sort());
      assert.equal(getterCalls, 0);
    });
  }
  await t.step("a class instance's methods run on the instance", async () => {
    await using server = await serve(new Service(), serverOptions());
    await using client = await connectTo(server.addr.port);
    assert.deepEqual(
      await Promise.all([client.call("overridden"), client.call("inherited"), client.call("own")]),
      ["service", "base", "own"],
    );
  });
});

Deno.test("serve() throws TypeError for a name in the reserved rpc namespace", async (t) => {
  const cases: { name: string; handlers: object }[] = [
    { name: "rpc namespace", handlers: { rpc: { discover: () => 1 } } },
    { name: "rpc namespace with another name", handlers: { rpc: { mine: () => 1 } } },
    { name: "dotted rpc. key", handlers: { "rpc.discover": () => 1 } },
    {
      name: "rpc namespace on a class instance",
      handlers: new (class {
        rpc = { x: () => 1 };
      })(),
    },
  ];
  for (const { name, handlers } of cases) {
    await t.step(name, async () => {
      await assert.rejects(() => serve(handlers, serverOptions()), TypeError);
    });
  }
});

Deno.test("serve() answers rpc.discover with every exposed method and its params", async () => {
  await using server = await serve(calc, {
    ...serverOptions(),
    info: { title: "calc", version: "1.0.0" },
  });
  await using client = await connectTo(server.addr.port);
  const document = await client.call("rpc.discover") as {
    openrpc: string;
    info: unknown;
    methods: { name: string; params: { name: string }[] }[];
  };
  assert.equal(typeof document.openrpc, "string");
  assert.deepEqual(document.info, { title: "calc", version: "1.0.0" });
  assert.deepEqual(
    Object.fromEntries(document.methods.map((m) => [m.name, m.params.map((p) => p.name)])),
    Object.fromEntries([...server.methods.values()].map((m) => [m.name, [...m.params]])),
  );
  assert.deepEqual(document.methods.find((m) => m.name === "add")?.params.map((p) => p.name), [
    "a",
    "b",
  ]);
  await assert.rejects(
    client.call("rpc.describe"),
    (error) => error instanceof RpcError && error.code === ErrorCode.MethodNotFound,
  );
});

Deno.test("serve() never lets a payload pollute a prototype", async (t) => {
  const before = Object.getOwnPropertyNames(Object.prototype).sort();
  await using server = await serve({
    keep: (value: unknown) => value,
    inspect: (params: Record<string, unknown>) => ({
      own: Object.hasOwn(params, "__proto__"),
      plainPrototype: Object.getPrototypeOf(params) === Object.prototype,
      x: (params as { x?: unknown }).x ?? null,
    }),
  }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  const cases = [
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[{"__proto__":{"polluted":true}}]}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[{"constructor":{"prototype":{"polluted":true}}}]}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":{"__proto__":{"polluted":true}}}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":{"constructor":{"prototype":{"polluted":true}}}}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"__proto__":{"polluted":true}}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"constructor":{"prototype":{"polluted":true}}}',
    '{"jsonrpc":"2.0","id":1,"method":"__proto__","params":{"polluted":true}}',
    '{"jsonrpc":"2.0","id":1,"method":"constructor","params":{"prototype":{"polluted":true}}}',
    '[{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"__proto__":{"polluted":true}}]',
  ];
  for (const text of cases) {
    await t.step(text, async () => {
      assert.notEqual(await raw.exchange(text), null);
      assert.equal(({} as { polluted?: unknown }).polluted, undefined);
      assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), before);
    });
  }
  await t.step("by-name __proto__ params reach the handler as an own key", async () => {
    assert.deepEqual(
      await raw.exchange(
        '{"jsonrpc":"2.0","id":7,"method":"inspect","params":{"__proto__":{"x":1}}}',
      ),
      { jsonrpc: "2.0", id: 7, result: { own: true, plainPrototype: true, x: null } },
    );
  });
  await t.step("a method name in the request's __proto__ is not the method", async () => {
    const response = await raw.exchange(
      '{"jsonrpc":"2.0","id":8,"__proto__":{"method":"keep","params":[1]}}',
    ) as { id: unknown; error: { code: number } };
    assert.equal(response.error.code, ErrorCode.InvalidRequest);
  });
});

Deno.test("serve() passes by-position params as arguments and by-name params as one object", async (t) => {
  await using server = await serve({
    ...calc,
    args: (...values: unknown[]) => values,
    pair: (a: unknown, b: unknown) => [a, b],
    pairOr: (a: unknown, b: unknown = "b") => [a, b],
    ping: () => "pong",
  }, serverOptions());
  await using client = await connectTo(server.addr.port);
  const cases: { name: string; call: () => Promise<unknown>; result: unknown }[] = [
    { name: "by position", call: () => client.call("subtract", 5, 3), result: 2 },
    { name: "no params", call: () => client.call("args"), result: [] },
    // An optional param needs a default value: TypeScript's `?` leaves no trace at run time.
    {
      name: "fewer params than declared, the rest with default values",
      call: () => client.call("pairOr", 1),
      result: [1, "b"],
    },
    {
      name: "by name",
      call: () => client.callNamed("args", { a: 1, b: [2] }),
      result: [{ a: 1, b: [2] }],
    },
    {
      name: "by name to a method that declares no params",
      call: () => client.callNamed("ping", {}),
      result: "pong",
    },
    {
      name: "by name to a namespace method",
      call: () => client.callNamed("stats.mean", { values: [1, 2, 3] }),
      result: 2,
    },
    {
      name: "rest params take any number",
      call: () => client.call("args", 1, 2, 3, 4),
      result: [1, 2, 3, 4],
    },
    {
      name: "module rest params",
      call: () => client.call("stats.range", 3, 1, 2),
      result: { min: 1, max: 3 },
    },
  ];
  for (const { name, call, result } of cases) {
    await t.step(name, async () => {
      assert.deepEqual(await call(), result);
    });
  }
  await t.step("more params by position than declared is -32602", async () => {
    await assert.rejects(
      client.call("add", 1, 2, 3),
      (error) => error instanceof RpcError && error.code === ErrorCode.InvalidParams,
    );
    assert.equal(await client.call("add", 1, 2), 3);
  });
});

Deno.test("serve() sends each response when its call finishes, so a slow call never delays a fast one", async (t) => {
  await using server = await serve(calc, serverOptions());
  await t.step("through connect()", async () => {
    await using client = await connectTo(server.addr.port);
    const order: string[] = [];
    await Promise.all([
      client.call("sleep", 300).then(() => order.push("sleep")),
      client.call("add", 1, 2).then(() => order.push("add")),
    ]);
    assert.deepEqual(order, ["add", "sleep"]);
  });
  await t.step("in one write of two frames", async () => {
    await using raw = await RawClient.connect(server.addr.port);
    await raw.sendBytes(
      new Uint8Array([
        ...framed(JSON.stringify(request(1, "sleep", [300]))),
        ...framed(JSON.stringify(request(2, "add", [1, 2]))),
      ]),
    );
    assert.deepEqual(await raw.receive(), { jsonrpc: "2.0", id: 2, result: 3 });
    assert.deepEqual(await raw.receive(), { jsonrpc: "2.0", id: 1, result: 300 });
  });
  await t.step("many calls in flight at once", async () => {
    await using client = await connectTo(server.addr.port);
    const calls = Array.from(
      { length: 200 },
      (_, i) => i % 10 === 0 ? client.call("sleep", i % 30) : client.call("add", i, i),
    );
    const results = await Promise.all(calls);
    assert.deepEqual(results, Array.from({ length: 200 }, (_, i) => i % 10 === 0 ? i % 30 : 2 * i));
  });
});

Deno.test("serve() answers batches as JSON-RPC 2.0 requires", async (t) => {
  const notified: unknown[] = [];
  await using server = await serve({
    add: (a: number, b: number) => a + b,
    note: (x: unknown) => void notified.push(x),
    fail: () => {
      throw new Error("Cannot fail: on purpose");
    },
  }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  const invalid = { jsonrpc: "2.0", id: null, error: { code: ErrorCode.InvalidRequest } };
  const cases: { name: string; text: string; frames: unknown[] }[] = [
    {
      name: "a batch of only notifications gets no frame",
      text:
        '[{"jsonrpc":"2.0","method":"note","params":[1]},{"jsonrpc":"2.0","method":"note","params":[2]}]',
      frames: [],
    },
    {
      name: "a batch of only failing notifications gets no frame",
      text: '[{"jsonrpc":"2.0","method":"fail"},{"jsonrpc":"2.0","method":"missing"}]',
      frames: [],
    },
    { name: "an empty batch gets one error object, not an array", text: "[]", frames: [invalid] },
    {
      name: "[1,2,3] gets an array of three errors",
      text: "[1,2,3]",
      frames: [[invalid, invalid, invalid]],
    },
    {
      name: "a mixed batch gets an array of the responses to its requests",
      text: `[{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]},
        {"jsonrpc":"2.0","method":"note","params":[3]},
        {"jsonrpc":"2.0","id":2,"method":"missing"},
        {"foo":"boo"}]`,
      frames: [[
        { jsonrpc: "2.0", id: 1, result: 3 },
        { jsonrpc: "2.0", id: 2, error: { code: ErrorCode.MethodNotFound } },
        invalid,
      ]],
    },
    {
      name: "a notification is not answered, even on error",
      text: '{"jsonrpc":"2.0","method":"fail"}',
      frames: [],
    },
  ];
  let sentinel = 0;
  for (const { name, text, frames } of cases) {
    await t.step(name, async () => {
      await raw.send(text);
      // A request sent after it marks where its answer, if any, ends.
      const id = `sentinel-${++sentinel}`;
      await raw.send(request(id, "add", [0, 0]));
      const received: unknown[] = [];
      for (let response = await raw.receive(); (response as { id?: unknown }).id !== id;) {
        received.push(response);
        if (received.length > frames.length) break;
        response = await raw.receive();
      }
      assert.deepEqual(received.map(withoutMessages), frames.map(withoutMessages));
    });
  }
  assert.deepEqual(notified, [1, 2, 3]);
});

/** A response (or array of them) without error messages and data, for comparing codes. */
function withoutMessages(response: unknown): unknown {
  // A batch's responses may come in any order: sort them by id.
  if (Array.isArray(response)) {
    return response.map(withoutMessages).sort((a, b) =>
      String((a as { id: unknown }).id).localeCompare(String((b as { id: unknown }).id))
    );
  }
  const { error, ...rest } = response as { error?: { code: number } };
  return error === undefined ? rest : { ...rest, error: { code: error.code } };
}

Deno.test("serve() maps handler errors to code, message and data, without stacks", async (t) => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const handlers = {
    plain: () => {
      throw new Error("Cannot plain: boom");
    },
    typed: () => {
      throw new TypeError("Cannot typed: bad");
    },
    divide: calc.divide,
    reserved: () => {
      throw Object.assign(new Error("Cannot reserved: taken"), { code: -32601 });
    },
    coded: async () => {
      await Promise.resolve();
      throw Object.assign(new Error("Cannot coded: later"), { code: -40000 });
    },
    rpc: () => {
      throw new RpcError(4000, "Cannot rpc: declined");
    },
    rpcReserved: () => {
      throw new RpcError(-32602, "Invalid params: want a number");
    },
    rpcData: async () => {
      await Promise.resolve();
      throw new RpcError(4001, "Cannot rpcData: short", { data: { balance: 3 } });
    },
    text: () => {
      // deno-lint-ignore no-throw-literal -- a handler may throw anything; the server must cope
      throw "just text";
    },
    big: () => 1n,
    circular: () => circular,
  };
  const cases: { method: string; params?: unknown[]; error: unknown }[] = [
    {
      method: "plain",
      error: { code: -32000, message: "Cannot plain: boom", data: { name: "Error" } },
    },
    {
      method: "typed",
      error: { code: -32000, message: "Cannot typed: bad", data: { name: "TypeError" } },
    },
    {
      method: "divide",
      params: [1, 0],
      error: {
        code: 1001,
        message: "Cannot divide: the divisor is 0",
        data: { name: "RangeError" },
      },
    },
    {
      method: "reserved",
      error: { code: -32000, message: "Cannot reserved: taken", data: { name: "Error" } },
    },
    {
      method: "coded",
      error: { code: -40000, message: "Cannot coded: later", data: { name: "Error" } },
    },
    {
      method: "rpc",
      error: { code: 4000, message: "Cannot rpc: declined", data: { name: "RpcError" } },
    },
    {
      method: "rpcReserved",
      error: { code: -32602, message: "Invalid params: want a number", data: { name: "RpcError" } },
    },
    {
      method: "rpcData",
      error: { code: 4001, message: "Cannot rpcData: short", data: { balance: 3 } },
    },
    { method: "text", error: { code: -32000, message: "just text", data: { name: "Error" } } },
  ];
  await using server = await serve(handlers, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  for (const { method, params, error } of cases) {
    await t.step(method, async () => {
      const text = await (raw.send(request(1, method, params)).then(() => raw.receiveText()));
      assert.deepEqual(JSON.parse(text ?? "null"), { jsonrpc: "2.0", id: 1, error });
      assert.doesNotMatch(text ?? "", /stack|\bat .*\.ts:\d+/);
    });
  }
  for (const method of ["big", "circular"]) {
    await t.step(`${method} result is -32603`, async () => {
      const response = await raw.exchange(request(1, method)) as {
        id: number;
        error: { code: number };
      };
      assert.equal(response.id, 1);
      assert.equal(response.error.code, ErrorCode.InternalError);
      assert.deepEqual(await raw.exchange(request(2, "divide", [6, 3])), {
        jsonrpc: "2.0",
        id: 2,
        result: 2,
      });
    });
  }
  await t.step("exposeStack puts the stack in data", async () => {
    await using server = await serve(handlers, { ...serverOptions(), exposeStack: true });
    await using client = await connectTo(server.addr.port);
    const error = await client.call("typed").catch((e) => e);
    assert.ok(error instanceof RpcError);
    const data = error.data as { name: string; stack: string };
    assert.equal(data.name, "TypeError");
    assert.match(data.stack, /Cannot typed: bad/);
  });
});

Deno.test("serve() closes the connection after one -32600 error for a length prefix of 0", async () => {
  await using server = await serve(calc, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  assert.equal(await raw.exchange(request(1, "add", [1, 1])) !== null, true);
  await raw.sendBytes(header(0));
  assert.deepEqual(withoutMessages(await receiveOrClosed(raw)), {
    jsonrpc: "2.0",
    id: null,
    error: { code: ErrorCode.InvalidRequest },
  });
  assert.equal(await receiveOrClosed(raw), null);
});

Deno.test("serve() refuses an oversize length prefix before the payload arrives", async (t) => {
  const cases: { name: string; maxFrameBytes?: number; length: number }[] = [
    { name: "2000 over a limit of 1024", maxFrameBytes: 1024, length: 2000 },
    { name: "1025 over a limit of 1024", maxFrameBytes: 1024, length: 1025 },
    { name: "0xFFFFFFFF over the default limit", length: 0xffff_ffff },
    { name: "16 MiB + 1 over the default limit", length: 16 * 1024 * 1024 + 1 },
  ];
  for (const { name, maxFrameBytes, length } of cases) {
    await t.step(name, async () => {
      await using server = await serve(calc, {
        ...serverOptions(),
        ...(maxFrameBytes === undefined ? {} : { maxFrameBytes }),
      });
      await using raw = await RawClient.connect(server.addr.port);
      // Only the header: an answer proves the server neither waited for nor allocated the payload.
      await raw.sendBytes(header(length));
      assert.deepEqual(withoutMessages(await receiveOrClosed(raw)), {
        jsonrpc: "2.0",
        id: null,
        error: { code: ErrorCode.InvalidRequest },
      });
      assert.equal(await receiveOrClosed(raw), null);
    });
  }
  await t.step("a frame of exactly the limit is accepted", async () => {
    await using server = await serve(calc, { ...serverOptions(), maxFrameBytes: 1024 });
    await using raw = await RawClient.connect(server.addr.port);
    const text = JSON.stringify(request(1, "add", [1, 2]));
    assert.deepEqual(await raw.exchange(text.padEnd(1024, " ")), {
      jsonrpc: "2.0",
      id: 1,
      result: 3,
    });
  });
});

Deno.test("serve() answers a payload that is not UTF-8 or not JSON with -32700 and stays usable", async (t) => {
  await using server = await serve(calc, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  const cases: { name: string; payload: Uint8Array }[] = [
    { name: "invalid UTF-8", payload: new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]) },
    { name: "a lone continuation byte", payload: new Uint8Array([0x5b, 0x80, 0x5d]) },
    { name: "truncated JSON", payload: encoder.encode('{"jsonrpc":"2.0","id":1,"method":"add"') },
    { name: "not JSON at all", payload: encoder.encode("hello") },
    {
      name: "the spec's invalid JSON",
      payload: encoder.encode('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]'),
    },
  ];
  for (const [i, { name, payload }] of cases.entries()) {
    await t.step(name, async () => {
      assert.deepEqual(withoutMessages(await raw.exchange(payload)), {
        jsonrpc: "2.0",
        id: null,
        error: { code: ErrorCode.ParseError },
      });
      assert.deepEqual(await raw.exchange(request(i, "add", [i, 1])), {
        jsonrpc: "2.0",
        id: i,
        result: i + 1,
      });
    });
  }
});

Deno.test("serve() closes a connection whose peer stops mid-frame and keeps serving the others", async (t) => {
  const cases: { name: string; leave(raw: RawClient): Promise<void> }[] = [
    {
      name: "peer closes after part of the header",
      leave: (raw) => raw.sendBytes(new Uint8Array([0, 0])).then(() => raw.close()),
    },
    {
      name: "peer closes after part of the payload",
      leave: (raw) =>
        raw.sendBytes(new Uint8Array([...header(100), ...encoder.encode('{"jsonrpc"')])).then(() =>
          raw.close()
        ),
    },
    {
      name: "peer closes after part of a large payload",
      leave: (raw) =>
        raw.sendBytes(new Uint8Array([...header(100_000), ...new Uint8Array(20_000).fill(0x20)]))
          .then(() => raw.close()),
    },
  ];
  for (const { name, leave } of cases) {
    await t.step(name, async () => {
      await using server = await serve(calc, serverOptions());
      await using client = await connectTo(server.addr.port);
      await using raw = await RawClient.connect(server.addr.port);
      await leave(raw);
      assert.equal(await client.call("add", 2, 3), 5);
      await using other = await connectTo(server.addr.port);
      assert.equal(await other.call("subtract", 2, 3), -1);
    });
  }
  await t.step("peer stops writing mid-frame: the server closes", async () => {
    await using server = await serve(calc, serverOptions());
    await using client = await connectTo(server.addr.port);
    await using raw = await RawClient.connect(server.addr.port);
    await raw.sendBytes(new Uint8Array([...header(100), ...encoder.encode('{"jsonrpc"')]));
    await raw.conn.closeWrite();
    // The error frame is optional here (the peer said it sends no more); the close is not.
    for (let i = 0; i < 3; i++) {
      if (await receiveOrClosed(raw) === null) break;
      assert.notEqual(i, 2, "the server kept the connection open");
    }
    assert.equal(await client.call("add", 2, 3), 5);
  });
});

Deno.test("serve() answers a reply larger than maxFrameBytes with -32603", async (t) => {
  await using server = await serve({ text: (n: number) => "x".repeat(n) }, {
    ...serverOptions(),
    maxFrameBytes: 1024,
  });
  await t.step("through connect()", async () => {
    await using client = await connectTo(server.addr.port);
    await assert.rejects(
      client.call("text", 2000),
      (error) => error instanceof RpcError && error.code === ErrorCode.InternalError,
    );
    assert.equal(await client.call("text", 3), "xxx");
  });
  await t.step("with a string id that needs escaping", async () => {
    await using raw = await RawClient.connect(server.addr.port);
    const id = 'a,"b\\c';
    const response = await raw.exchange(request(id, "text", [5000])) as {
      id: unknown;
      error: { code: number };
    };
    assert.equal(response.id, id);
    assert.equal(response.error.code, ErrorCode.InternalError);
    assert.deepEqual(await raw.exchange(request(2, "text", [1])), {
      jsonrpc: "2.0",
      id: 2,
      result: "x",
    });
  });
});

Deno.test("serve() isolates a failed or stalled TLS handshake from other clients", async (t) => {
  const cases: {
    name: string;
    /**
     * Misbehaves on a connection of its own; `closed` resolves once the server has closed it,
     * and `close` closes it from this side.
     */
    misbehave(port: number): Promise<{ closed: Promise<void>; close(): void }>;
  }[] = [
    {
      name: "plaintext client",
      async misbehave(port) {
        const tcp = await TcpClient.connect(port);
        await tcp.write(encoder.encode("hello\r\n"));
        return tcp;
      },
    },
    {
      name: "plaintext HTTP request",
      async misbehave(port) {
        const tcp = await TcpClient.connect(port);
        await tcp.write(encoder.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
        return tcp;
      },
    },
    {
      name: "client that connects and says nothing",
      misbehave: (port) => TcpClient.connect(port),
    },
    {
      name: "partial ClientHello, then silence",
      async misbehave(port) {
        const tcp = await TcpClient.connect(port);
        await tcp.write(PARTIAL_CLIENT_HELLO);
        return tcp;
      },
    },
    {
      name: "partial ClientHello, then close",
      async misbehave(port) {
        await using tcp = await TcpClient.connect(port);
        await tcp.write(PARTIAL_CLIENT_HELLO);
        return { closed: Promise.resolve(), close: () => {} };
      },
    },
    {
      name: "TLS client that rejects the server's certificate",
      async misbehave(port) {
        let conn: Deno.TlsConn | undefined;
        try {
          conn = await Deno.connectTls({ hostname: "127.0.0.1", port });
          await conn.handshake();
          assert.fail("the handshake succeeded without the test CA");
        } catch (error) {
          assert.ok(!(error instanceof assert.AssertionError), String(error));
        } finally {
          conn?.close();
        }
        return { closed: Promise.resolve(), close: () => {} };
      },
    },
  ];
  for (const { name, misbehave } of cases) {
    await t.step(name, async () => {
      const watched = watchedOptions({ handshakeTimeout: 200 });
      await using server = await serve(calc, watched.options);
      const bad = await misbehave(server.addr.port);
      using _bad = { [Symbol.dispose]: () => bad.close() };
      await using client = await connectTo(server.addr.port);
      assert.deepEqual(
        await Promise.all([client.call("add", 1, 2), client.call("stats.mean", [2, 4])]),
        [3, 3],
      );
      await within(bad.closed, "the server to close the bad connection", 1500);
      await watched.waitFor(
        (lines) => lines.some((line) => /handshake/i.test(line)),
        "the handshake failure in the log",
      );
      assert.equal(watched.lines.filter((line) => /handshake/i.test(line)).length, 1);
      assert.equal(await client.call("subtract", 5, 1), 4);
    });
  }
});

Deno.test("shutdown() lets calls in flight finish, answers new requests with -32001 and refuses new connections", async () => {
  const held = gate(2);
  await using server = await serve({
    wait: async (tag: string) => {
      await held.promise;
      return tag;
    },
    add: (a: number, b: number) => a + b,
  }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  await using client = await connectTo(server.addr.port);
  const clientCall = client.call("wait", "client");
  await raw.send(request(1, "wait", ["raw"]));
  await within(held.entered, "both calls to start");

  const stopping = server.shutdown();
  // First the server tells every client to send its next calls elsewhere (PROTOCOL.md, rpc.goaway).
  assert.deepEqual(await raw.receive(), { jsonrpc: "2.0", method: "rpc.goaway", params: [] });
  await assert.rejects(connectTo(server.addr.port), ConnectionError);
  assert.deepEqual(withoutMessages(await raw.exchange(request(2, "add", [1, 2]))), {
    jsonrpc: "2.0",
    id: 2,
    error: { code: ErrorCode.ShuttingDown },
  });
  await assert.rejects(
    client.call("add", 1, 2),
    (error) => error instanceof RpcError && error.code === ErrorCode.ShuttingDown,
  );
  held.open();
  assert.deepEqual(await raw.receive(), { jsonrpc: "2.0", id: 1, result: "raw" });
  assert.equal(await clientCall, "client");
  await within(stopping, "shutdown() to resolve");
  await within(server.finished, "finished to resolve");
  assert.equal(await receiveOrClosed(raw), null);
  await within(client.closed, "the client to see the close");
});

Deno.test("shutdown() does not wait for a client stalled in its TLS handshake", async () => {
  await using server = await serve(calc, {
    ...serverOptions(),
    handshakeTimeout: 4000,
    shutdownTimeout: 200,
  });
  await using silent = await TcpClient.connect(server.addr.port);
  {
    // Connections are accepted in order: once this one is served, the silent one was accepted.
    await using client = await connectTo(server.addr.port);
    assert.equal(await client.call("add", 1, 1), 2);
  }
  await within(server.shutdown(), "shutdown() to resolve", 2000);
  await within(silent.closed, "the server to close the stalled connection", 1000);
});

Deno.test("a peer that ends its stream is a disconnect: its calls in flight are aborted and the connection closes", async () => {
  const aborted = Promise.withResolvers<unknown>();
  const entered = Promise.withResolvers<void>();
  await using server = await serve({
    wait: async () => {
      const signal = callContext()!.signal;
      entered.resolve();
      await new Promise((resolve) => signal.addEventListener("abort", resolve, { once: true }));
      aborted.resolve(signal.reason);
      return "done";
    },
    add: (a: number, b: number) => a + b,
  }, serverOptions());
  await using raw = await RawClient.connect(server.addr.port);
  await using client = await connectTo(server.addr.port);
  await raw.send(request(1, "wait"));
  await within(entered.promise, "the call to start");
  await raw.conn.closeWrite();
  assert.ok(
    (await within(aborted.promise, "the handler's signal to abort")) instanceof ConnectionError,
  );
  assert.equal(await receiveOrClosed(raw), null, "the dropped result is never sent");
  assert.equal(await client.call("add", 1, 1), 2, "other clients go on");
});

Deno.test("shutdown() closes connections after shutdownTimeout when a handler never resolves", async () => {
  const held = gate(2);
  await using server = await serve({
    never: () => held.promise,
  }, { ...serverOptions(), shutdownTimeout: 200 });
  await using raw = await RawClient.connect(server.addr.port);
  await using client = await connectTo(server.addr.port);
  // Handled from the start: the rejection comes while shutdown() is awaited.
  const pending = assert.rejects(client.call("never"), ConnectionError);
  await raw.send(request(1, "never"));
  await within(held.entered, "both calls to start");
  await within(server.shutdown(), "shutdown() to resolve");
  await within(server.finished, "finished to resolve");
  assert.deepEqual(await raw.receive(), { jsonrpc: "2.0", method: "rpc.goaway", params: [] });
  assert.equal(await receiveOrClosed(raw), null);
  await pending;
});

Deno.test("serve() shuts down when its signal aborts", async (t) => {
  const cases: { name: string; abortBefore: boolean }[] = [
    { name: "aborted after serve()", abortBefore: false },
    { name: "aborted before serve()", abortBefore: true },
  ];
  for (const { name, abortBefore } of cases) {
    await t.step(name, async () => {
      const controller = new AbortController();
      if (abortBefore) controller.abort();
      await using server = await serve(calc, { ...serverOptions(), signal: controller.signal });
      if (!abortBefore) {
        await using client = await connectTo(server.addr.port);
        assert.equal(await client.call("add", 1, 1), 2);
        controller.abort();
      }
      await within(server.finished, "finished to resolve");
      await assert.rejects(connectTo(server.addr.port), ConnectionError);
    });
  }
});

Deno.test("serve() stops when disposed with await using", async () => {
  let port = 0;
  let finished = false;
  {
    await using server = await serve(calc, serverOptions());
    port = server.addr.port;
    void server.finished.then(() => finished = true);
    await using client = await connectTo(server.addr.port);
    assert.equal(await client.call("add", 2, 2), 4);
  }
  assert.equal(finished, true);
  await assert.rejects(
    connect({ hostname: "127.0.0.1", port, caCerts: [certs.ca] }),
    ConnectionError,
  );
});

// Keep this test last: the failure it guards against is an uncaught error, which makes Deno
// cancel every test of the module that has not run yet.
Deno.test("serve() survives a reply or error frame that does not fit a small maxFrameBytes", async (t) => {
  const cases: { name: string; send(raw: RawClient): Promise<void> }[] = [
    { name: "synchronous reply", send: (raw) => raw.send(request(1, "text", [100])) },
    { name: "error frame for a zero-length frame", send: (raw) => raw.sendBytes(header(0)) },
    { name: "asynchronous reply", send: (raw) => raw.send(request(1, "later", [100])) },
  ];
  for (const { name, send } of cases) {
    await t.step(name, async () => {
      await using server = await serve({
        text: (n: number) => "x".repeat(n),
        later: async (n: number) => {
          await Promise.resolve();
          return "x".repeat(n);
        },
      }, { ...serverOptions(), maxFrameBytes: 64 });
      await using raw = await RawClient.connect(server.addr.port);
      await send(raw);
      // Nothing that fits can be said: an error that does fit, or the close, are both right.
      const answer = await receiveOrClosed(raw) as { error?: { code: number } } | null;
      if (answer !== null) assert.ok(answer.error !== undefined, JSON.stringify(answer));
      await using other = await RawClient.connect(server.addr.port);
      assert.deepEqual(await other.exchange(request(2, "text", [1])), {
        jsonrpc: "2.0",
        id: 2,
        result: "x",
      });
    });
  }
});
