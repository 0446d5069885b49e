// Tests of which methods a handlers object exposes, through serve(): `server.methods` and calls on
// a real socket. A class exposes the methods its own code defines, never those of a built-in class
// it extends, of Function.prototype, or the JSON and conversion hooks.

import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { serve } from "../server.ts";
import { ErrorCode } from "../errors.ts";
import { RawClient, request, serverOptions } from "./_util.ts";

/** A JSON-RPC response as it comes off the wire. */
interface Response {
  id: unknown;
  result?: unknown;
  error?: { code: number; message: string };
}

/** One handlers object: what it must expose, a call that must work, and names that must not. */
interface Case {
  name: string;
  handlers: () => object;
  exposed: string[];
  call: [method: string, params: unknown[], result: unknown];
  hidden: string[];
}

class KeyStore extends Map<string, number> {
  read(key: string): number | undefined {
    return this.get(key);
  }
}

class Bus extends EventTarget {
  fire(): string {
    return "fired";
  }
}

class Stack extends Array<number> {
  peek(): number | undefined {
    return this[this.length - 1];
  }
}

class AppError extends Error {
  describe(): string {
    return `AppError: ${this.message}`;
  }
}

class Job extends Promise<string> {
  status(): string {
    return "pending";
  }
}

class Bag extends Set<string> {
  pick(): string | undefined {
    return this.values().next().value;
  }
}

class Hooks {
  hello(): string {
    return "hello";
  }
  toJSON(): string {
    return "json";
  }
  valueOf(): number {
    return 1;
  }
  toString(): string {
    return "hooks";
  }
  toLocaleString(): string {
    return "hooks";
  }
}

class Base {
  base(): string {
    return "base";
  }
  shared(): string {
    return "from Base";
  }
}

class Derived extends Base {
  derived(): string {
    return "derived";
  }
  override shared(): string {
    return "from Derived";
  }
}

const FUNCTION_PROTOTYPE = ["call", "apply", "bind", "toString", "length", "name", "caller"];

const CASES: Case[] = [
  {
    name: "class KeyStore extends Map",
    handlers: () => new KeyStore([["a", 1]]),
    exposed: ["read"],
    call: ["read", ["a"], 1],
    hidden: [
      "get",
      "set",
      "delete",
      "clear",
      "has",
      "forEach",
      "entries",
      "keys",
      "values",
      "size",
    ],
  },
  {
    name: "class Bus extends EventTarget",
    handlers: () => new Bus(),
    exposed: ["fire"],
    call: ["fire", [], "fired"],
    hidden: ["addEventListener", "removeEventListener", "dispatchEvent"],
  },
  {
    name: "a plain function",
    handlers: () => function handlers() {},
    exposed: [],
    call: ["rpc.ping", [], "pong"],
    hidden: FUNCTION_PROTOTYPE,
  },
  {
    name: "a function with a function of its own",
    handlers: () => Object.assign(function handlers() {}, { add: (a: number, b: number) => a + b }),
    exposed: ["add"],
    call: ["add", [2, 3], 5],
    hidden: FUNCTION_PROTOTYPE,
  },
  {
    name: "class Stack extends Array",
    handlers: () => Stack.from([1, 2, 3]),
    exposed: ["peek"],
    call: ["peek", [], 3],
    hidden: ["push", "pop", "map", "join", "at", "slice", "splice", "fill", "0"],
  },
  {
    name: "class AppError extends Error",
    handlers: () => new AppError("broken"),
    exposed: ["describe"],
    call: ["describe", [], "AppError: broken"],
    hidden: ["message", "name", "stack", "toString", "captureStackTrace"],
  },
  {
    name: "class Job extends Promise",
    handlers: () => new Job(() => {}),
    exposed: ["status"],
    call: ["status", [], "pending"],
    hidden: ["then", "catch", "finally"],
  },
  {
    name: "class Bag extends Set",
    handlers: () => new Bag(["x"]),
    exposed: ["pick"],
    call: ["pick", [], "x"],
    hidden: ["add", "has", "delete", "clear", "forEach", "entries", "keys", "values", "union"],
  },
  {
    name: "a class defining toJSON, valueOf, toString and toLocaleString",
    handlers: () => new Hooks(),
    exposed: ["hello"],
    call: ["hello", [], "hello"],
    hidden: ["toJSON", "valueOf", "toString", "toLocaleString"],
  },
  {
    name: "a plain object defining toJSON, valueOf, toString and toLocaleString",
    handlers: () => ({
      hello: () => "hello",
      toJSON: () => "json",
      valueOf: () => 1,
      toString: () => "hooks",
      toLocaleString: () => "hooks",
    }),
    exposed: ["hello"],
    call: ["hello", [], "hello"],
    hidden: ["toJSON", "valueOf", "toString", "toLocaleString"],
  },
  {
    name: "a namespace defining toJSON, valueOf and toString",
    handlers: () => ({
      math: { neg: (x: number) => -x, toJSON: () => "json", valueOf: () => 1, toString: () => "" },
    }),
    exposed: ["math.neg"],
    call: ["math.neg", [4], -4],
    hidden: ["math.toJSON", "math.valueOf", "math.toString"],
  },
  {
    name: "class Derived extends Base (both user classes)",
    handlers: () => new Derived(),
    exposed: ["base", "derived", "shared"],
    call: ["shared", [], "from Derived"],
    hidden: ["constructor"],
  },
];

/** Serves `handlers`, checks what `server.methods` lists, and calls each name of the case. */
async function checkCase(
  t: Deno.TestContext,
  { name, handlers, exposed, call, hidden }: Case,
): Promise<void> {
  await t.step(name, async () => {
    await using server = await serve(handlers(), serverOptions());
    assert.deepEqual([...server.methods.keys()].sort(), [...exposed].sort());
    await using client = await RawClient.connect(server.addr.port);
    const [method, params, result] = call;
    assert.deepEqual(await client.exchange(request(1, method, params)), {
      jsonrpc: "2.0",
      id: 1,
      result,
    });
    for (const [i, hiddenName] of hidden.entries()) {
      const answer = await client.exchange(request(i + 2, hiddenName, [])) as Response;
      assert.equal(
        answer.error?.code,
        ErrorCode.MethodNotFound,
        `"${hiddenName}" answered ${JSON.stringify(answer)}`,
      );
    }
  });
}

Deno.test("a class extending a built-in class exposes only its own methods, and a function nothing of Function.prototype", async (t) => {
  for (const entry of CASES) await checkCase(t, entry);
});

// Found by this test and fixed: the walk up the prototype chain stops at BUILTIN_PROTOTYPES,
// built from the globals whose property descriptor has a `value`. Deno defines most of its web
// classes on globalThis lazily, as getters (Headers, Request, Response, FormData, ReadableStream,
// WritableStream, TransformStream, TextEncoder, WebSocket, BroadcastChannel, ...), so their
// prototypes are missed; and their constructors are JavaScript, not "[native code]", so
// isBuiltinPrototype misses them too. A class extending one exposes every method of the web
// class: `class H extends Headers { fire() {} }` exposes append, delete, get, getSetCookie, has,
// set, entries, keys, values and forEach.
Deno.test("a class extending a Deno web class that globalThis defines by a getter exposes only its own methods", async (t) => {
  class Meta extends Headers {
    fire(): string {
      return "fired";
    }
  }
  class Sink extends WritableStream {
    fire(): string {
      return "fired";
    }
  }
  class Reply extends Response {
    fire(): string {
      return "fired";
    }
  }
  const cases: Case[] = [
    {
      name: "class Meta extends Headers",
      handlers: () => new Meta(),
      exposed: ["fire"],
      call: ["fire", [], "fired"],
      hidden: ["append", "delete", "get", "set", "has", "forEach", "entries"],
    },
    {
      name: "class Sink extends WritableStream",
      handlers: () => new Sink(),
      exposed: ["fire"],
      call: ["fire", [], "fired"],
      hidden: ["abort", "close", "getWriter"],
    },
    {
      name: "class Reply extends Response",
      handlers: () => new Reply(null),
      exposed: ["fire"],
      call: ["fire", [], "fired"],
      hidden: ["clone", "text", "json", "arrayBuffer", "blob", "formData", "bytes"],
    },
  ];
  for (const entry of cases) await checkCase(t, entry);
});

// Found by this test and fixed: node:events' EventEmitter is not on
// globalThis and is written in JavaScript, so a class extending it (a common shape for a service)
// exposes emit, on, once, off, removeAllListeners, setMaxListeners, ... to every client: a client
// can remove the server's own listeners or emit its events. The same holds for node:stream's
// classes. The module doc says only methods "defined by user code" are exposed.
Deno.test("a class extending node:events' EventEmitter exposes only its own methods", async (t) => {
  class Service extends EventEmitter {
    fire(): string {
      return "fired";
    }
  }
  await checkCase(t, {
    name: "class Service extends EventEmitter",
    handlers: () => new Service(),
    exposed: ["fire"],
    call: ["fire", [], "fired"],
    hidden: ["emit", "on", "once", "off", "removeAllListeners", "setMaxListeners", "listeners"],
  });
});
