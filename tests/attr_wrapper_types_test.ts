// Type-level tests of attr_wrapper.ts: `deno check` fails if a type changes, and each
// `@ts-expect-error` line fails the check if that use ever compiles. The test also runs every
// statement, so the types are checked against what the views do.
import assert from "node:assert/strict";
import * as AttrWrapper from "../attr_wrapper.ts";
import {
  isEmpty,
  isWrapped,
  type Untyped,
  unwrap,
  type Unwrapped,
  wrap,
  type Wrapped,
  type WrappedArray,
  type WrappedObject,
} from "../attr_wrapper.ts";

/** True if `A` and `B` are the same type, not merely assignable to each other. */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true
  : false;

/** True if `A` and `B` are assignable to each other: for mapped types that print differently. */
type Alike<A, B> = [A] extends [B] ? [B] extends [A] ? true : false : false;

/** Compiles only if `T` is `true`. */
function expectType<T extends true>(..._: T[]): void {}

interface User {
  name: string;
  age?: number;
  tags: string[];
  address: { city: string } | null;
  born: Date;
}

Deno.test("wrap() keeps known shapes", async (t) => {
  const user: User = {
    name: "ada",
    tags: ["admin"],
    address: { city: "London" },
    born: new Date(0),
  };
  const view = wrap(user);

  await t.step("wrap({a: 1}).a is number", () => {
    const a = wrap({ a: 1 }).a;
    expectType<Equal<typeof a, number>>();
    assert.equal(a, 1);
  });
  await t.step("keys give their wrapped types", () => {
    expectType<Equal<typeof view.name, string>>();
    expectType<Equal<typeof view.age, number | undefined>>();
    expectType<Equal<typeof view.tags, WrappedArray<string>>>();
    expectType<Equal<typeof view.address, WrappedObject<{ city: string }> | null>>();
    expectType<Equal<typeof view.born, Date>>();
    assert.equal(view.address?.city, "London");
  });
  await t.step("array elements are wrapped and may be out of range", () => {
    const tag = view.tags[-1];
    expectType<Equal<typeof tag, string | undefined>>();
    const rows = wrap([{ id: 1 }]);
    expectType<Equal<typeof rows, WrappedArray<{ id: number }>>>();
    const first = rows[0];
    expectType<Equal<typeof first, WrappedObject<{ id: number }> | undefined>>();
    assert.equal(first?.id, 1);
  });
  await t.step("array methods see wrapped elements", () => {
    const rows = wrap([{ id: 1 }, { id: 2 }]);
    const ids = rows.map((row) => {
      expectType<Equal<typeof row, WrappedObject<{ id: number }>>>();
      return row.id;
    });
    expectType<Equal<typeof ids, number[]>>();
    expectType<Equal<typeof rows.length, number>>();
    for (const row of rows) expectType<Equal<typeof row.id, number>>();
    assert.deepEqual(ids, [1, 2]);
  });
  await t.step("values wrap() returns as they are keep their types", () => {
    expectType<Equal<Wrapped<string>, string>>();
    expectType<Equal<Wrapped<number | null | undefined>, number | null | undefined>>();
    expectType<Equal<Wrapped<Uint8Array>, Uint8Array>>();
    expectType<Equal<Wrapped<Map<string, number>>, Map<string, number>>>();
    expectType<Equal<Wrapped<() => void>, () => void>>();
    const bytes = wrap(new Uint8Array(1));
    expectType<Equal<typeof bytes, Uint8Array<ArrayBuffer>>>();
    assert.ok(bytes instanceof Uint8Array);
  });
  await t.step("unions are wrapped member by member", () => {
    const mixed = wrap<number | { a: number } | string[]>({ a: 1 });
    expectType<Equal<typeof mixed, number | WrappedObject<{ a: number }> | WrappedArray<string>>>();
    assert.equal((mixed as WrappedObject<{ a: number }>).a, 1);
  });
  await t.step("data shaped like a built-in is still a view", () => {
    const error = wrap({ code: -32601, message: "Method not found", name: "RpcError" });
    expectType<
      Equal<typeof error, WrappedObject<{ code: number; message: string; name: string }>>
    >();
    assert.equal(isWrapped(error), true);
  });
  await t.step("index signatures read as possibly undefined", () => {
    const scores = wrap<Record<string, { best: number }>>({ ada: { best: 3 } });
    expectType<Equal<typeof scores.bob, WrappedObject<{ best: number }> | undefined>>();
    assert.equal(scores.ada?.best, 3);
    assert.equal(scores.bob?.best, undefined);
  });
});

Deno.test("A known shape rejects what the view would reject", async (t) => {
  const view = wrap({ a: 1, list: [1, 2], nested: { b: "x" } });

  await t.step("a key the shape lacks", () => {
    // @ts-expect-error: `missing` is not a key of the data
    assert.equal(view.missing, undefined);
  });
  await t.step("names inherited from Object.prototype read as undefined", () => {
    expectType<Equal<typeof view.toString, undefined>>();
    expectType<Equal<typeof view.constructor, undefined>>();
    expectType<Equal<typeof view.hasOwnProperty, undefined>>();
    // @ts-expect-error: a view has no toString method
    assert.throws(() => view.toString(), TypeError);
    // @ts-expect-error: nor __proto__
    assert.equal(view.__proto__, undefined);
  });
  await t.step("an own key named like an inherited member keeps its data type", () => {
    const own = wrap({ toString: "data" });
    expectType<Equal<typeof own.toString, string>>();
    assert.equal(own.toString, "data");
  });
  await t.step("assigning and deleting", () => {
    assert.throws(() => {
      // @ts-expect-error: views are read-only
      view.a = 2;
    }, TypeError);
    assert.throws(() => {
      // @ts-expect-error: views are read-only
      view.nested.b = "y";
    }, TypeError);
    assert.throws(() => {
      // @ts-expect-error: views are read-only
      delete view.a;
    }, TypeError);
    assert.throws(() => {
      // @ts-expect-error: views are read-only
      view.list[0] = 3;
    }, TypeError);
  });
  await t.step("mutating array methods", () => {
    // @ts-expect-error: a wrapped array has no push
    assert.throws(() => view.list.push(3), TypeError);
    // @ts-expect-error: nor sort
    assert.throws(() => view.list.sort(), TypeError);
    // @ts-expect-error: nor splice
    assert.throws(() => view.list.splice(0), TypeError);
  });
  await t.step("a name on an array", () => {
    const e2 = wrap([1, 2, { a: 1, b: 2 }]);
    // @ts-expect-error: a wrapped array has no key `a`
    assert.throws(() => e2.a, TypeError);
  });
  await t.step("a primitive's members through a key", () => {
    // @ts-expect-error: `a` is a number, which has no key `b`
    assert.equal(view.a.b, undefined);
  });
  await t.step("a chain through an element that may be out of range needs ?.", () => {
    const rows = wrap([{ id: 1 }]);
    // @ts-expect-error: rows[1] may be out of range (it throws a RangeError at run time)
    assert.throws(() => rows[1].id, RangeError);
    assert.equal(rows[0]?.id, 1);
  });
});

Deno.test("For unknown input any chain of property and index access type-checks", async (t) => {
  const result: unknown = JSON.parse('{"a": {"b": [0, 1, {"c": [{"d": "deep"}]}]}, "n": 1}');
  const view = wrap(result);
  expectType<Equal<typeof view, Untyped>>();

  await t.step("property and index chains", () => {
    assert.equal(view.a.b[2].c[0].d, "deep");
    assert.equal(view.a.b[-1].c[-1].d, "deep");
    assert.equal(view["a"]["b"][1], 1);
  });
  await t.step("optional chains for missing keys", () => {
    assert.equal(view.missing?.key?.[0], undefined);
  });
  await t.step("array methods", () => {
    assert.deepEqual(view.a.b.map((x: Untyped) => typeof x), ["number", "number", "object"]);
  });
  await t.step("any input chains too", () => {
    // deno-lint-ignore no-explicit-any -- `any` input is what is tested
    const anyView = wrap(JSON.parse('{"x": [1]}') as any);
    expectType<Equal<typeof anyView, Untyped>>();
    assert.equal(anyView.x[0], 1);
  });
  await t.step("unknown nested in a known shape", () => {
    const rpc = wrap<{ id: number; result: unknown }>({ id: 1, result: { rows: [{ v: 5 }] } });
    expectType<Equal<typeof rpc.id, number>>();
    assert.equal(rpc.result.rows[0].v, 5);
  });
});

Deno.test("unwrap() gives the data type back", async (t) => {
  await t.step("for a known shape", () => {
    const data = { a: 1, nested: { b: "x" }, list: [{ c: true }], when: new Date(0) };
    const back = unwrap(wrap(data));
    expectType<Alike<typeof back, typeof data>>();
    expectType<Equal<typeof back.nested.b, string>>();
    expectType<Equal<typeof back.list, { c: boolean }[]>>();
    assert.equal(back, data);
  });
  await t.step("for an array", () => {
    const list = [1, 2];
    const back = unwrap(wrap(list));
    expectType<Equal<typeof back, number[]>>();
    assert.equal(back, list);
  });
  await t.step("for optional keys and own keys named like inherited members", () => {
    type Data = { a?: number; toString: string };
    const back = unwrap(wrap<Data>({ toString: "x" }));
    expectType<Alike<typeof back, Data>>();
    expectType<Alike<Unwrapped<WrappedObject<{ a?: number }>>, { a?: number }>>();
  });
  await t.step("for values wrap() returns as they are", () => {
    expectType<Equal<ReturnType<typeof unwrap<number>>, number>>();
    expectType<Equal<Unwrapped<Date | null>, Date | null>>();
    assert.equal(unwrap(3), 3);
  });
  await t.step("for unknown input", () => {
    const result: unknown = { a: 1 };
    const back = unwrap(wrap(result));
    expectType<Equal<typeof back, unknown>>();
    assert.equal(back, result);
  });
});

Deno.test("The helpers take any value and answer booleans", () => {
  expectType<Equal<ReturnType<typeof isWrapped>, boolean>>();
  expectType<Equal<ReturnType<typeof isEmpty>, boolean>>();
  expectType<Equal<Parameters<typeof isWrapped>, [value: unknown]>>();
  expectType<Equal<Parameters<typeof isEmpty>, [value: unknown]>>();
  assert.equal(isEmpty(wrap([])), true);
  assert.equal(isWrapped(wrap([])), true);
});

Deno.test("The namespace import carries the functions and the types", () => {
  const view: AttrWrapper.Wrapped<{ a: number[] }> = AttrWrapper.wrap({ a: [1] });
  const back: AttrWrapper.Unwrapped<typeof view> = AttrWrapper.unwrap(view);
  expectType<Equal<typeof view, WrappedObject<{ a: number[] }>>>();
  expectType<Equal<typeof back.a, number[]>>();
  assert.equal(AttrWrapper.isWrapped(view), true);
  assert.equal(AttrWrapper.isEmpty(view.a), false);
  assert.deepEqual(Object.keys(AttrWrapper).sort(), ["isEmpty", "isWrapped", "unwrap", "wrap"]);
});
