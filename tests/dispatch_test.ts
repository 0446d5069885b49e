import assert from "node:assert/strict";
import { Dispatcher } from "../_dispatch.ts";
import { describeError } from "../_wire_error.ts";
import { buildMethodTable, parameterNames } from "../_introspect.ts";
import { detachedSession } from "../_call.ts";
import { ErrorCode, RpcError } from "../errors.ts";
import * as calc from "../examples/calc.ts";
import { SPEC_EXAMPLES, SPEC_MESSAGES, specHandlers } from "./portable/_spec_examples.ts";

// deno-lint-ignore no-explicit-any
type AnyFunction = (...args: any[]) => unknown;

const encoder = new TextEncoder();

/** Builds a function from source text, so that comments survive the TypeScript transpiler. */
function fromSource(params: string, body = "return 0"): AnyFunction {
  return new Function(params, body) as AnyFunction;
}

/** Answers one frame of text and parses the response, `undefined` when there is none. */
async function answer(dispatcher: Dispatcher, text: string, accept = true): Promise<unknown> {
  const reply = await dispatcher.handleFrame(encoder.encode(text), detachedSession(accept));
  if (reply !== undefined && typeof reply.body !== "string") {
    assert.fail("a plain peer got an extended frame");
  }
  return reply === undefined ? undefined : JSON.parse(reply.body as string);
}

Deno.test("parameterNames() reads the parameter names of every kind of function", async (t) => {
  class Greeter {
    greet(name: string, greeting = "hello"): string {
      return `${greeting}, ${name}`;
    }
    static shout(text: string): string {
      return text.toUpperCase();
    }
  }
  const cases: { name: string; fn: AnyFunction; params: string[]; rest?: boolean }[] = [
    {
      name: "function declaration",
      fn: function add(a: number, b: number) {
        return a + b;
      },
      params: ["a", "b"],
    },
    {
      name: "async function",
      fn: async function fetchTwo(first: string, second: string) {
        return await Promise.resolve(first + second);
      },
      params: ["first", "second"],
    },
    { name: "arrow with parentheses", fn: (a: number, b: number) => a + b, params: ["a", "b"] },
    { name: "arrow without parameters", fn: () => 1, params: [] },
    { name: "function built from source", fn: fromSource("x"), params: ["x"] },
    { name: "single-parameter arrow source", fn: eval1("x => x"), params: ["x"] },
    { name: "async single-parameter arrow source", fn: eval1("async x => x"), params: ["x"] },
    { name: "async arrow", fn: async (a: number) => await Promise.resolve(a), params: ["a"] },
    { name: "default values", fn: (a = 1, b = [1, 2]) => a + b.length, params: ["a", "b"] },
    {
      name: "default that calls a function with commas",
      fn: (a = Math.max(1, 2), b = { x: 1, y: 2 }) => a + b.x,
      params: ["a", "b"],
    },
    {
      name: "destructuring becomes argN",
      fn: ({ a }: { a: number }, [b]: number[], c: number) => a + (b ?? 0) + c,
      params: ["arg0", "arg1", "c"],
    },
    {
      name: "destructuring with a default",
      fn: fromSource("a, { b, c } = {}, [d] = []"),
      params: ["a", "arg1", "arg2"],
    },
    {
      name: "rest parameter",
      fn: (first: number, ...others: number[]) => first + others.length,
      params: ["first", "others"],
      rest: true,
    },
    { name: "rest parameter alone", fn: fromSource("...all"), params: ["all"], rest: true },
    {
      name: "strings with parentheses and commas in defaults",
      fn: fromSource(`a = "(,", b = ')"', c = \`),(\``),
      params: ["a", "b", "c"],
    },
    {
      name: "escaped quotes in string defaults",
      fn: fromSource(`a = "\\"(", b = '\\')'`),
      params: ["a", "b"],
    },
    {
      name: "block comments with parentheses and commas",
      fn: fromSource("a /* first, (left */, b = 1 /* ), */"),
      params: ["a", "b"],
    },
    {
      name: "line comments with parentheses and commas",
      fn: fromSource("a, // the first, (left) one\nb = 2 // ), c\n"),
      params: ["a", "b"],
    },
    { name: "trailing comma", fn: fromSource("a, b,"), params: ["a", "b"] },
    { name: "class method", fn: Greeter.prototype.greet, params: ["name", "greeting"] },
    { name: "static class method", fn: Greeter.shout, params: ["text"] },
    {
      name: "object method shorthand",
      fn: {
        mean(values: number[]) {
          return values.length;
        },
      }.mean,
      params: ["values"],
    },
    {
      name: "bound function",
      fn: function (a: number, b: number, c: number) {
        return a + b + c;
      }.bind(null, 1),
      params: ["arg0", "arg1"],
    },
    { name: "native function", fn: Math.atan2, params: ["arg0", "arg1"] },
    { name: "module function", fn: calc.add, params: ["a", "b"] },
    { name: "module rest function", fn: calc.stats.range, params: ["values"], rest: true },
  ];
  for (const { name, fn, params, rest = false } of cases) {
    await t.step(name, () => {
      assert.deepEqual(parameterNames(fn), { params, rest });
    });
  }
});

/** An arrow function from its exact source text, which the transpiler would otherwise rewrite. */
function eval1(source: string): AnyFunction {
  return new Function(`return ${source}`)() as AnyFunction;
}

Deno.test("buildMethodTable() exposes only the allowed members of each kind of handlers", async (t) => {
  let getterCalls = 0;
  class Base {
    inherited(): string {
      return "base";
    }
    overridden(): string {
      return "base";
    }
    _baseHidden(): void {}
  }
  class Service extends Base {
    field = (x: number) => x;
    _ownHidden = () => 0;
    own(a: number): number {
      return a;
    }
    override overridden(): string {
      return "service";
    }
    get accessor(): number {
      return ++getterCalls;
    }
    _hidden(): void {}
    static make(): Service {
      return new Service();
    }
  }
  const shared = { f: () => 1 };
  const plain = {
    add: (a: number, b: number) => a + b,
    _hidden: () => 0,
    constructor: () => 0,
    toString: () => "x",
    valueOf: () => 1,
    hasOwnProperty: () => true,
    get accessor() {
      return ++getterCalls;
    },
    Klass: class {},
    value: 42,
    text: "hello",
    nested: { neg: (x: number) => -x, deeper: { id: (x: unknown) => x } },
  };
  Object.defineProperty(plain, "__proto__", { value: () => 0, enumerable: true });
  const cases: { name: string; handlers: object; names: string[] }[] = [
    {
      name: "plain object",
      handlers: plain,
      names: ["add", "nested.deeper.id", "nested.neg"],
    },
    {
      name: "class instance with a base class",
      handlers: new Service(),
      names: ["field", "inherited", "own", "overridden"],
    },
    {
      name: "module namespace",
      handlers: calc,
      names: ["add", "divide", "sleep", "stats.mean", "stats.range", "subtract"],
    },
    {
      name: "null-prototype object",
      handlers: Object.assign(Object.create(null), { f: () => 1, ns: { g: () => 2 } }),
      names: ["f", "ns.g"],
    },
    {
      name: "the same namespace object under two names",
      handlers: { a: shared, b: shared },
      names: ["a.f", "b.f"],
    },
    {
      name: "a namespace that refers to itself",
      handlers: (() => {
        const self: Record<string, unknown> = { f: () => 1 };
        self.again = self;
        return self;
      })(),
      names: ["f"],
    },
    {
      name: "a namespace starting with _",
      handlers: { _internal: { f: () => 1 }, pub: { _g: () => 1, h: () => 2 } },
      names: ["pub.h"],
    },
  ];
  for (const { name, handlers, names } of cases) {
    await t.step(name, () => {
      assert.deepEqual([...buildMethodTable(handlers).keys()].sort(), [...names].sort());
      assert.equal(getterCalls, 0);
    });
  }
  await t.step("each entry calls its function on its own object", () => {
    const service = new Service();
    const table = buildMethodTable(service);
    const entry = table.get("overridden");
    assert.equal(entry?.fn.apply(entry.thisArg, []), "service");
    assert.equal(entry?.thisArg, service);
    assert.deepEqual(table.get("own")?.params, ["a"]);
    assert.equal(table.get("own")?.rest, false);
    assert.equal(buildMethodTable(calc).get("stats.range")?.rest, true);
    assert.equal(buildMethodTable(calc).get("stats.range")?.thisArg, calc.stats);
  });
});

Deno.test("buildMethodTable() rejects bad handlers with TypeError", async (t) => {
  const deep: Record<string, unknown> = { f: () => 1 };
  let tip = deep;
  for (let i = 0; i < 20; i++) {
    const next: Record<string, unknown> = { f: () => 1 };
    tip.n = next;
    tip = next;
  }
  const cases: { name: string; handlers: unknown }[] = [
    { name: "null", handlers: null },
    { name: "a number", handlers: 42 },
    { name: "a string", handlers: "add" },
    { name: "a method in the rpc namespace", handlers: { rpc: { discover: () => 1 } } },
    { name: "a dotted rpc. name", handlers: { "rpc.discover": () => 1 } },
    {
      name: "an rpc namespace deeper in a class instance",
      handlers: new (class {
        rpc = { x() {} };
      })(),
    },
    { name: "namespaces nested too deeply", handlers: deep },
  ];
  for (const { name, handlers } of cases) {
    await t.step(name, () => {
      assert.throws(() => buildMethodTable(handlers as object), TypeError);
    });
  }
});

Deno.test("describeError() maps thrown values to code, message and data", async (t) => {
  class QuotaError extends Error {
    code = 4029;
    constructor(message: string) {
      super(message);
      this.name = "QuotaError";
    }
  }
  const withCode = (code: unknown) => Object.assign(new Error("coded"), { code });
  const cases: {
    name: string;
    error: unknown;
    code: number;
    message: string;
    data: unknown;
  }[] = [
    {
      name: "Error",
      error: new Error("boom"),
      code: -32000,
      message: "boom",
      data: { name: "Error" },
    },
    {
      name: "built-in subclass",
      error: new TypeError("bad"),
      code: -32000,
      message: "bad",
      data: { name: "TypeError" },
    },
    {
      name: "own subclass with a code",
      error: new QuotaError("over"),
      code: 4029,
      message: "over",
      data: { name: "QuotaError" },
    },
    {
      name: "positive code",
      error: withCode(1001),
      code: 1001,
      message: "coded",
      data: { name: "Error" },
    },
    {
      name: "negative code",
      error: withCode(-1),
      code: -1,
      message: "coded",
      data: { name: "Error" },
    },
    { name: "code 0", error: withCode(0), code: 0, message: "coded", data: { name: "Error" } },
    {
      name: "code just below the reserved range",
      error: withCode(-32769),
      code: -32769,
      message: "coded",
      data: { name: "Error" },
    },
    {
      name: "code just above the reserved range",
      error: withCode(-31999),
      code: -31999,
      message: "coded",
      data: { name: "Error" },
    },
    ...[-32768, -32700, -32601, -32001, -32000].map((code) => ({
      name: `reserved code ${code}`,
      error: withCode(code),
      code: -32000,
      message: "coded",
      data: { name: "Error" },
    })),
    ...[1.5, "ENOENT", NaN, Infinity, 10n, null].map((code) => ({
      name: `code ${String(code)} that is not an integer`,
      error: withCode(code),
      code: -32000,
      message: "coded",
      data: { name: "Error" },
    })),
    {
      name: "RpcError keeps a reserved code",
      error: new RpcError(-32602, "Invalid params: x"),
      code: -32602,
      message: "Invalid params: x",
      data: { name: "RpcError" },
    },
    {
      name: "RpcError keeps its code",
      error: new RpcError(7, "seven"),
      code: 7,
      message: "seven",
      data: { name: "RpcError" },
    },
    {
      name: "RpcError keeps explicit data",
      error: new RpcError(1001, "Insufficient funds", { data: { balance: 3 } }),
      code: 1001,
      message: "Insufficient funds",
      data: { balance: 3 },
    },
    {
      name: "RpcError keeps explicit null data",
      error: new RpcError(1001, "none", { data: null }),
      code: 1001,
      message: "none",
      data: null,
    },
    {
      name: "thrown string",
      error: "plain",
      code: -32000,
      message: "plain",
      data: { name: "Error" },
    },
    { name: "thrown number", error: 42, code: -32000, message: "42", data: { name: "Error" } },
    {
      name: "thrown undefined",
      error: undefined,
      code: -32000,
      message: "undefined",
      data: { name: "Error" },
    },
  ];
  for (const { name, error, code, message, data } of cases) {
    await t.step(name, () => {
      assert.deepEqual(describeError(error, false), { code, message, data });
    });
  }
  await t.step("exposeStack adds the stack to data", () => {
    const error = new RangeError("far");
    assert.deepEqual(describeError(error, true), {
      code: -32000,
      message: "far",
      data: { name: "RangeError", stack: error.stack },
    });
  });
  await t.step("exposeStack adds the stack to an RpcError without data", () => {
    const error = new RpcError(5, "five");
    assert.deepEqual(describeError(error, true).data, { name: "RpcError", stack: error.stack });
  });
  await t.step("exposeStack leaves an RpcError's explicit data alone", () => {
    const error = new RpcError(5, "five", { data: { x: 1 } });
    assert.deepEqual(describeError(error, true).data, { x: 1 });
  });
});

/** Orders values by their JSON text with sorted keys, so that key order does not matter. */
function byJson(a: unknown, b: unknown): number {
  const [x, y] = [canonicalJson(a), canonicalJson(b)];
  return x < y ? -1 : x > y ? 1 : 0;
}

function canonicalJson(value: unknown): string {
  return JSON.stringify(
    value,
    (_key, v) =>
      v !== null && typeof v === "object" && !Array.isArray(v)
        ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0))
        : v,
  );
}

/** A response with each error message replaced by whether it starts with the spec's message. */
function normalize(response: unknown, messages: ReadonlyMap<number, string>): unknown {
  // A batch's responses may come in any order.
  if (Array.isArray(response)) {
    return response.map((item) => normalize(item, messages)).sort(byJson);
  }
  if (response === null || typeof response !== "object" || !("error" in response)) return response;
  const { error, ...rest } = response as { error: { code: number; message: string } };
  const expected = messages.get(error.code) ?? "";
  return {
    ...rest,
    error: {
      code: error.code,
      message: error.message.startsWith(expected) ? expected : error.message,
    },
  };
}

Deno.test("Dispatcher.handleFrame() answers the examples of the JSON-RPC 2.0 specification", async (t) => {
  for (const { name, request, response, log: expectedLog = [] } of SPEC_EXAMPLES) {
    await t.step(name, async () => {
      const log: unknown[] = [];
      const dispatcher = new Dispatcher(specHandlers(log));
      const actual = await answer(dispatcher, request);
      assert.deepEqual(normalize(actual, SPEC_MESSAGES), normalize(response, SPEC_MESSAGES));
      assert.deepEqual(log, expectedLog);
    });
  }
});

Deno.test("Dispatcher.handleFrame() validates requests and maps outcomes to responses", async (t) => {
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  const handlers = {
    add: (a: number, b: number) => a + b,
    none: () => "none",
    echo: (value: unknown) => value,
    pair: (a: unknown, b: unknown) => [a, b],
    withDefault: (a: unknown, b: unknown = "b") => [a, b],
    all: (...values: unknown[]) => values,
    named: (params: Record<string, unknown>) => Object.keys(params),
    slow: async (x: number) => {
      await Promise.resolve();
      return x;
    },
    big: () => 10n,
    circular: () => circular,
    asyncBig: async () => await Promise.resolve(10n),
    fail: () => {
      throw Object.assign(new Error("Cannot fail: on purpose"), { code: 1234 });
    },
    reject: async () => {
      await Promise.resolve();
      throw new RpcError(-32602, "Invalid params: nope", { data: { why: "nope" } });
    },
    nothing: () => undefined,
  };
  const dispatcher = new Dispatcher(handlers);
  const error = (code: number, id: unknown) => ({
    jsonrpc: "2.0",
    id,
    error: { code, message: SPEC_MESSAGES.get(code) ?? "" },
  });
  const cases: { name: string; request: string; response: unknown }[] = [
    {
      name: "string id",
      request: '{"jsonrpc":"2.0","id":"a-1","method":"add","params":[1,2]}',
      response: { jsonrpc: "2.0", id: "a-1", result: 3 },
    },
    {
      name: "null id is a request",
      request: '{"jsonrpc":"2.0","id":null,"method":"add","params":[1,2]}',
      response: { jsonrpc: "2.0", id: null, result: 3 },
    },
    {
      name: "fractional id",
      request: '{"jsonrpc":"2.0","id":1.5,"method":"add","params":[1,2]}',
      response: { jsonrpc: "2.0", id: 1.5, result: 3 },
    },
    {
      name: "no params",
      request: '{"jsonrpc":"2.0","id":1,"method":"none"}',
      response: { jsonrpc: "2.0", id: 1, result: "none" },
    },
    {
      name: "fewer params than required is -32602 naming the missing one",
      request: '{"jsonrpc":"2.0","id":1,"method":"echo","params":[]}',
      response: {
        jsonrpc: "2.0",
        id: 1,
        error: {
          code: -32602,
          message: 'Invalid params: "echo" needs 1 params, got 0 (missing "value")',
        },
      },
    },
    {
      name: "by-name params as one object",
      request: '{"jsonrpc":"2.0","id":1,"method":"named","params":{"b":1,"a":2}}',
      response: { jsonrpc: "2.0", id: 1, result: ["b", "a"] },
    },
    {
      name: "by-name params matched to the declared names, in any order",
      request: '{"jsonrpc":"2.0","id":1,"method":"pair","params":{"b":2,"a":1}}',
      response: { jsonrpc: "2.0", id: 1, result: [1, 2] },
    },
    {
      name: "by-name params leave a param with a default value to its default",
      request: '{"jsonrpc":"2.0","id":1,"method":"withDefault","params":{"a":1}}',
      response: { jsonrpc: "2.0", id: 1, result: [1, "b"] },
    },
    {
      name: "by-name params missing a required name are -32602 naming it",
      request: '{"jsonrpc":"2.0","id":1,"method":"pair","params":{"a":1}}',
      response: {
        jsonrpc: "2.0",
        id: 1,
        error: { code: -32602, message: 'Invalid params: "pair" misses required params "b"' },
      },
    },
    {
      name: "by-name params with an unknown name are -32602 naming it",
      request: '{"jsonrpc":"2.0","id":1,"method":"pair","params":{"a":1,"c":3}}',
      response: {
        jsonrpc: "2.0",
        id: 1,
        error: {
          code: -32602,
          message: 'Invalid params: "pair" has no params named "c" (it takes "a", "b")',
        },
      },
    },
    {
      name: "by-name params to a method that declares none",
      request: '{"jsonrpc":"2.0","id":1,"method":"none","params":{}}',
      response: { jsonrpc: "2.0", id: 1, result: "none" },
    },
    {
      name: "empty by-position params to a method that declares none",
      request: '{"jsonrpc":"2.0","id":1,"method":"none","params":[]}',
      response: { jsonrpc: "2.0", id: 1, result: "none" },
    },
    {
      name: "rest params take any number",
      request: '{"jsonrpc":"2.0","id":1,"method":"all","params":[1,2,3,4,5,6]}',
      response: { jsonrpc: "2.0", id: 1, result: [1, 2, 3, 4, 5, 6] },
    },
    {
      name: "more params than declared",
      request: '{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2,3]}',
      response: error(-32602, 1),
    },
    {
      name: "params to a method that takes none",
      request: '{"jsonrpc":"2.0","id":1,"method":"none","params":[1]}',
      response: error(-32602, 1),
    },
    {
      name: "undefined result",
      request: '{"jsonrpc":"2.0","id":1,"method":"nothing"}',
      response: { jsonrpc: "2.0", id: 1, result: null },
    },
    {
      name: "async result",
      request: '{"jsonrpc":"2.0","id":1,"method":"slow","params":[5]}',
      response: { jsonrpc: "2.0", id: 1, result: 5 },
    },
    {
      name: "BigInt result",
      request: '{"jsonrpc":"2.0","id":1,"method":"big"}',
      response: error(-32603, 1),
    },
    {
      name: "async BigInt result",
      request: '{"jsonrpc":"2.0","id":1,"method":"asyncBig"}',
      response: error(-32603, 1),
    },
    {
      name: "circular result",
      request: '{"jsonrpc":"2.0","id":1,"method":"circular"}',
      response: error(-32603, 1),
    },
    {
      name: "missing jsonrpc",
      request: '{"id":1,"method":"add","params":[1,2]}',
      response: error(-32600, 1),
    },
    {
      name: "wrong jsonrpc version",
      request: '{"jsonrpc":"1.0","id":1,"method":"add","params":[1,2]}',
      response: error(-32600, 1),
    },
    {
      name: "missing method",
      request: '{"jsonrpc":"2.0","id":1}',
      response: error(-32600, 1),
    },
    {
      name: "params a string",
      request: '{"jsonrpc":"2.0","id":1,"method":"add","params":"1,2"}',
      response: error(-32600, 1),
    },
    {
      name: "params null",
      request: '{"jsonrpc":"2.0","id":1,"method":"add","params":null}',
      response: error(-32600, 1),
    },
    ...["true", "{}", "[1]"].map((id) => ({
      name: `invalid id ${id}`,
      request: `{"jsonrpc":"2.0","id":${id},"method":"add","params":[1,2]}`,
      response: error(-32600, null),
    })),
    ...["null", "1", '"text"', "true"].map((message) => ({
      name: `message ${message} that is not an object`,
      request: message,
      response: error(-32600, null),
    })),
    {
      name: "nested batch",
      request: '[[{"jsonrpc":"2.0","id":1,"method":"add","params":[1,2]}]]',
      response: [error(-32600, null)],
    },
    {
      name: "rpc.foo is not a method",
      request: '{"jsonrpc":"2.0","id":1,"method":"rpc.foo"}',
      response: error(-32601, 1),
    },
    ...["toString", "constructor", "__proto__", "hasOwnProperty", "__defineGetter__", "add.call"]
      .map((method) => ({
        name: `${method} is not a method`,
        request: `{"jsonrpc":"2.0","id":1,"method":"${method}"}`,
        response: error(-32601, 1),
      })),
    {
      name: "mixed batch with async calls",
      request: `[{"jsonrpc":"2.0","id":1,"method":"slow","params":[1]},
        {"jsonrpc":"2.0","method":"fail"},
        {"jsonrpc":"2.0","id":2,"method":"add","params":[1,1]}]`,
      response: [
        { jsonrpc: "2.0", id: 1, result: 1 },
        { jsonrpc: "2.0", id: 2, result: 2 },
      ],
    },
  ];
  for (const { name, request, response } of cases) {
    await t.step(name, async () => {
      assert.deepEqual(
        normalize(await answer(dispatcher, request), SPEC_MESSAGES),
        normalize(response, SPEC_MESSAGES),
      );
    });
  }
  await t.step("invalid UTF-8 is a parse error", async () => {
    const reply = await dispatcher.handleFrame(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]));
    assert.equal(typeof reply?.body, "string");
    assert.deepEqual(
      normalize(JSON.parse(reply?.body as string), SPEC_MESSAGES),
      error(-32700, null),
    );
  });
  await t.step("handler errors carry code, message and data", async () => {
    assert.deepEqual(await answer(dispatcher, '{"jsonrpc":"2.0","id":1,"method":"fail"}'), {
      jsonrpc: "2.0",
      id: 1,
      error: { code: 1234, message: "Cannot fail: on purpose", data: { name: "Error" } },
    });
    assert.deepEqual(await answer(dispatcher, '{"jsonrpc":"2.0","id":2,"method":"reject"}'), {
      jsonrpc: "2.0",
      id: 2,
      error: { code: -32602, message: "Invalid params: nope", data: { why: "nope" } },
    });
  });
  await t.step("notifications are never answered, even on error", async () => {
    for (
      const request of [
        '{"jsonrpc":"2.0","method":"fail"}',
        '{"jsonrpc":"2.0","method":"reject"}',
        '{"jsonrpc":"2.0","method":"big"}',
        '{"jsonrpc":"2.0","method":"missing"}',
        '{"jsonrpc":"2.0","method":"add","params":[1,2,3]}',
        '[{"jsonrpc":"2.0","method":"fail"},{"jsonrpc":"2.0","method":"slow","params":[1]}]',
      ]
    ) {
      assert.equal(await answer(dispatcher, request), undefined, request);
    }
  });
  await t.step("while not accepting, requests get -32001 and notifications nothing", async () => {
    let calls = 0;
    const closing = new Dispatcher({ count: () => ++calls });
    assert.deepEqual(
      normalize(
        await answer(closing, '{"jsonrpc":"2.0","id":1,"method":"count"}', false),
        new Map(),
      ),
      { jsonrpc: "2.0", id: 1, error: { code: ErrorCode.ShuttingDown, message: "" } },
    );
    assert.equal(await answer(closing, '{"jsonrpc":"2.0","method":"count"}', false), undefined);
    assert.equal(calls, 0);
  });
});

Deno.test("Dispatcher.handleFrame() answers rpc.discover with every exposed method", async () => {
  const dispatcher = new Dispatcher(calc, { info: { title: "calc", version: "1.2.3" } });
  const response = await answer(dispatcher, '{"jsonrpc":"2.0","id":1,"method":"rpc.discover"}') as {
    id: number;
    result: {
      openrpc: string;
      info: unknown;
      methods: { name: string; params: { name: string }[] }[];
    };
  };
  assert.equal(response.id, 1);
  assert.equal(typeof response.result.openrpc, "string");
  assert.deepEqual(response.result.info, { title: "calc", version: "1.2.3" });
  const methods = Object.fromEntries(
    response.result.methods.map((method) => [method.name, method.params.map((p) => p.name)]),
  );
  assert.deepEqual(methods, {
    add: ["a", "b"],
    subtract: ["a", "b"],
    divide: ["a", "b"],
    sleep: ["ms"],
    "stats.mean": ["values"],
    "stats.range": ["values"],
  });
});

Deno.test("Dispatcher.handleFrame() never lets a payload pollute a prototype", async (t) => {
  const before = Object.getOwnPropertyNames(Object.prototype).sort();
  const dispatcher = new Dispatcher({
    keep: (value: unknown) => value,
    inspect(params: Record<string, unknown>) {
      return {
        own: Object.hasOwn(params, "__proto__"),
        plainPrototype: Object.getPrototypeOf(params) === Object.prototype,
        x: (params as { x?: unknown }).x ?? null,
      };
    },
  });
  const cases = [
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[{"__proto__":{"polluted":true}}]}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[{"constructor":{"prototype":{"polluted":true}}}]}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":{"__proto__":{"polluted":true}}}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":{"constructor":{"prototype":{"polluted":true}}}}',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"__proto__":{"polluted":true}}',
    '{"jsonrpc":"2.0","id":1,"__proto__":{"method":"keep","polluted":true}}',
    '{"jsonrpc":"2.0","id":1,"method":"__proto__","params":{"polluted":true}}',
    '[{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"__proto__":{"polluted":true}}]',
    '{"jsonrpc":"2.0","id":1,"method":"keep","params":[1],"constructor":{"prototype":{"polluted":true}}}',
  ];
  for (const request of cases) {
    await t.step(request, async () => {
      await answer(dispatcher, request);
      assert.equal(({} as { polluted?: unknown }).polluted, undefined);
      assert.deepEqual(Object.getOwnPropertyNames(Object.prototype).sort(), before);
    });
  }
  await t.step("by-name __proto__ params arrive as an own key", async () => {
    const response = await answer(
      dispatcher,
      '{"jsonrpc":"2.0","id":1,"method":"inspect","params":{"__proto__":{"x":1}}}',
    );
    assert.deepEqual(response, {
      jsonrpc: "2.0",
      id: 1,
      result: { own: true, plainPrototype: true, x: null },
    });
  });
  await t.step("a request whose __proto__ holds the method is invalid", async () => {
    const response = await answer(
      dispatcher,
      '{"jsonrpc":"2.0","id":1,"__proto__":{"method":"keep"}}',
    ) as { error: { code: number } };
    assert.equal(response.error.code, ErrorCode.InvalidRequest);
  });
});
