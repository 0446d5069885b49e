// The typed proxy, checked by the compiler: `deno check` (and `deno test`, which type-checks) fails
// if a use marked @ts-expect-error compiles, or if a use that must compile does not. The tests
// also run each typed call against a real server.

import assert from "node:assert/strict";
import { connect, type Remote, type RpcClient } from "../client.ts";
import { serve } from "../server.ts";
import type * as calc from "../examples/calc.ts";
import * as calcModule from "../examples/calc.ts";
import { certs, serverOptions } from "./_util.ts";

/** Exact type equality: `true` only when A and B are the same type. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true
  : false;
function expectType<T extends true>(_: T): void {}

const objectHandlers = {
  add: (a: number, b: number) => a + b,
  greet: (name: string): Promise<string> => Promise.resolve(`hello, ${name}`),
  math: {
    neg: (x: number) => -x,
    deep: { twice: (s: string) => s + s },
  },
  _hidden: () => "secret",
  version: "1.0", // data, not a method: absent from the proxy
};

class Base {
  ping(): string {
    return "pong";
  }
}
class Service extends Base {
  #count = 0;
  increment(by = 1): number {
    return this.#count += by;
  }
  list(): Promise<{ id: number; tags: string[] }[]> {
    return Promise.resolve([{ id: 1, tags: ["a"] }]);
  }
  _internal(): void {}
}

async function connectTyped<T>(port: number): Promise<RpcClient<T>> {
  return await connect<T>({ hostname: "127.0.0.1", port, caCerts: [certs.ca] });
}

// Compile-time checks, in a function that is never called: the compiler reads them, nothing runs.
function _typeChecks(
  object: RpcClient<typeof objectHandlers>,
  service: RpcClient<Service>,
  module: RpcClient<typeof calc>,
  untyped: RpcClient,
): void {
  expectType<Equal<ReturnType<typeof object.proxy.add>, Promise<number>>>(true);
  expectType<Equal<ReturnType<typeof object.proxy.greet>, Promise<string>>>(true);
  expectType<Equal<ReturnType<typeof object.proxy.math.neg>, Promise<number>>>(true);
  expectType<Equal<ReturnType<typeof object.proxy.math.deep.twice>, Promise<string>>>(true);
  expectType<Equal<ReturnType<typeof service.proxy.ping>, Promise<string>>>(true);
  service.proxy.increment();
  service.proxy.increment(2);
  // @ts-expect-error: an optional parameter keeps its type
  service.proxy.increment("2");
  expectType<
    Equal<ReturnType<typeof service.proxy.list>, Promise<{ id: number; tags: string[] }[]>>
  >(true);
  expectType<
    Equal<ReturnType<typeof module.proxy.stats.range>, Promise<{ min: number; max: number }>>
  >(
    true,
  );
  expectType<Equal<keyof Remote<typeof objectHandlers>, "add" | "greet" | "math">>(true);
  expectType<Equal<keyof Remote<Service>, "ping" | "increment" | "list">>(true);
  // call() stays dynamic.
  expectType<Equal<ReturnType<typeof object.call>, Promise<unknown>>>(true);

  // @ts-expect-error: no such method
  object.proxy.subtract(1, 2);
  // @ts-expect-error: wrong argument type
  object.proxy.add("1", 2);
  // @ts-expect-error: too few arguments
  object.proxy.add(1);
  // @ts-expect-error: too many arguments
  object.proxy.math.neg(1, 2);
  // @ts-expect-error: names starting with _ are never exposed
  object.proxy._hidden();
  // @ts-expect-error: data members are not methods
  object.proxy.version;
  // @ts-expect-error: no such method in the namespace
  object.proxy.math.pos(1);
  // @ts-expect-error: a private-by-convention method of a class
  service.proxy._internal();
  // `constructor` is not a key of the remote type (every object type still has Object's members,
  // so `service.proxy.constructor` itself type-checks as Function; the server never exposes it).
  // @ts-expect-error: a module's function with the wrong argument type
  module.proxy.divide(1, "2");
  // The result is typed: a number has no toUpperCase.
  // @ts-expect-error: wrong use of a typed result
  object.proxy.add(1, 2).then((sum) => sum.toUpperCase());
  // Untyped: any path compiles, and results are whatever the caller says.
  untyped.proxy.anything.goes(1, "two");
}

Deno.test("the typed proxy calls plain objects, class instances and module namespaces", async (t) => {
  await t.step("plain object with nested namespaces", async () => {
    await using server = await serve(objectHandlers, serverOptions());
    await using client = await connectTyped<typeof objectHandlers>(server.addr.port);
    const sum: number = await client.proxy.add(2, 3);
    const greeting: string = await client.proxy.greet("ada");
    assert.equal(sum, 5);
    assert.equal(greeting, "hello, ada");
    assert.equal(await client.proxy.math.neg(4), -4);
    assert.equal(await client.proxy.math.deep.twice("ab"), "abab");
  });
  await t.step("class instance, inherited methods included", async () => {
    await using server = await serve(new Service(), serverOptions());
    await using client = await connectTyped<Service>(server.addr.port);
    assert.equal(await client.proxy.ping(), "pong");
    assert.equal(await client.proxy.increment(), 1);
    assert.equal(await client.proxy.increment(5), 6);
    const items = await client.proxy.list();
    assert.deepEqual(items[0]?.tags, ["a"]);
  });
  await t.step("module namespace through import type", async () => {
    await using server = await serve(calcModule, serverOptions());
    await using client = await connectTyped<typeof calc>(server.addr.port);
    assert.equal(await client.proxy.subtract(7, 2), 5);
    assert.deepEqual(await client.proxy.stats.range(3, 1, 2), { min: 1, max: 3 });
  });
  await t.step("per-call options keep the types", async () => {
    await using server = await serve(objectHandlers, serverOptions());
    await using client = await connectTyped<typeof objectHandlers>(server.addr.port);
    const sum: number = await client.withOptions({ timeout: 1000 }).proxy.add(1, 1);
    assert.equal(sum, 2);
  });
});

Deno.test("connect({ wrap: true }) types results so that any path reads, as the README shows", async () => {
  await using server = await serve({
    snapshot: () => ({ items: [{ name: "a" }, { name: "b" }] }),
  }, serverOptions());
  await using wrapped = await connect({ port: server.addr.port, caCerts: [certs.ca], wrap: true });
  const r = await wrapped.call("snapshot");
  const name: string = r.items[-1].name; // compiles: the result is an AttrWrapper view
  assert.equal(name, "b");
  await using plain = await connect({ port: server.addr.port, caCerts: [certs.ca] });
  const unwrapped = await plain.call("snapshot");
  // @ts-expect-error without wrap the result is unknown: read it through a type or AttrWrapper
  unwrapped.items;
  expectType<Equal<typeof unwrapped, unknown>>(true);
});
