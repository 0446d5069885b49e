import assert from "node:assert/strict";
import { inspect as nodeInspect } from "node:util";
import { isEmpty, isWrapped, type Untyped, unwrap, wrap } from "../attr_wrapper.ts";

/** Wraps `value` as a result of unknown shape, the way RPC results arrive. */
function view(value: unknown): Untyped {
  return wrap(value);
}

class Point {
  x = 1;
}

Deno.test("wrap() returns a view of plain objects, null-prototype objects and arrays", async (t) => {
  const cases: [string, object][] = [
    ["an object literal", { a: 1 }],
    ["an empty object", {}],
    ["a null-prototype object", Object.assign(Object.create(null), { a: 1 })],
    ["JSON.parse() output", JSON.parse('{"a": [1, {"b": 2}]}')],
    ["an array", [1, 2, 3]],
    ["an empty array", []],
    ["a frozen object", Object.freeze({ a: Object.freeze([1]) })],
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      const wrapped = view(value);
      assert.equal(isWrapped(wrapped), true);
      assert.notEqual(wrapped, value);
      assert.equal(unwrap(wrapped), value);
      assert.equal(Array.isArray(wrapped), Array.isArray(value));
    });
  }
});

Deno.test("wrap() returns primitives and other objects as they are", async (t) => {
  const cases: [string, unknown][] = [
    ["a string", "text"],
    ["a number", 42],
    ["a boolean", true],
    ["a bigint", 10n],
    ["null", null],
    ["undefined", undefined],
    ["a symbol", Symbol("s")],
    ["a function", function f() {}],
    ["a Uint8Array", new Uint8Array([1, 2])],
    ["a Date", new Date(0)],
    ["a Map", new Map([["a", 1]])],
    ["a Set", new Set([1])],
    ["a RegExp", /x/],
    ["a class instance", new Point()],
    ["an Error", new Error("boom")],
    ["an array subclass instance", new (class List extends Array {})()],
  ];
  for (const [name, value] of cases) {
    await t.step(name, () => {
      assert.equal(wrap(value), value);
      assert.equal(isWrapped(wrap(value)), false);
    });
  }
});

Deno.test("wrap() copies nothing and reads the data only when a view is read", () => {
  let reads = 0;
  const data = {
    get lazy() {
      reads += 1;
      return { n: reads };
    },
  };
  const wrapped = view(data);
  assert.equal(reads, 0);
  assert.equal(wrapped.lazy.n, 1);
  assert.equal(reads, 1);

  const big = Array.from({ length: 100_000 }, (_, i) => ({ i }));
  const bigView = view(big);
  assert.equal(unwrap(bigView), big);
  big.push({ i: -1 });
  assert.equal(bigView.length, 100_001, "a view sees later changes to its data");
  assert.equal(bigView[-1].i, -1);
});

Deno.test("wrap() touches nothing but the prototype of the data", () => {
  const touched: string[] = [];
  const spy: ProxyHandler<object> = {};
  for (const trap of ["get", "has", "ownKeys", "getOwnPropertyDescriptor", "getPrototypeOf"]) {
    Reflect.set(spy, trap, (...args: unknown[]) => {
      touched.push(trap);
      return Reflect.apply(Reflect.get(Reflect, trap), Reflect, args);
    });
  }
  const data = new Proxy({ a: { b: 1 }, list: Array.from({ length: 1000 }, (_, i) => i) }, spy);
  const wrapped = view(data);
  assert.deepEqual(touched, ["getPrototypeOf"]);
  assert.equal(wrapped.a.b, 1);
});

Deno.test("wrap() gives the same view for the same data and leaves views as they are", () => {
  const data = { inner: { a: 1 }, list: [1] };
  const wrapped = view(data);
  assert.equal(view(data), wrapped);
  assert.equal(wrapped.inner, wrapped.inner);
  assert.equal(wrapped.inner, view(data.inner));
  assert.equal(view(wrapped), wrapped);
  assert.equal(view(wrapped.list), wrapped.list);
});

Deno.test("An object view gives the wrapped value of an own key and undefined for a missing key", async (t) => {
  const data = {
    n: 1,
    s: "x",
    nil: null,
    undef: undefined,
    list: [1, 2],
    obj: { deep: { er: 3 } },
  };
  const wrapped = view(data);
  const cases: [string, (w: Untyped) => unknown, unknown][] = [
    ["a number", (w) => w.n, 1],
    ["a string", (w) => w.s, "x"],
    ["null", (w) => w.nil, null],
    ["an own key holding undefined", (w) => w.undef, undefined],
    ["a missing key", (w) => w.name, undefined],
    ["a chain through a missing key with ?.", (w) => w.name?.name, undefined],
    ["a nested key", (w) => w.obj.deep.er, 3],
    ["a nested array element", (w) => w.list[1], 2],
    ["a computed key", (w) => w["s"], "x"],
  ];
  for (const [name, read, expected] of cases) {
    await t.step(name, () => assert.equal(read(wrapped), expected));
  }
  await t.step("nested objects and arrays come wrapped", () => {
    assert.equal(isWrapped(wrapped.obj), true);
    assert.equal(unwrap(wrapped.obj), data.obj);
    assert.equal(isWrapped(wrapped.list), true);
    assert.equal(unwrap(wrapped.list), data.list);
  });
  await t.step("a missing key fails loudly only when the chain goes on without ?.", () => {
    assert.throws(() => wrapped.name.name, TypeError);
  });
});

Deno.test("An object view answers only own keys", async (t) => {
  const inherited = [
    "toString",
    "constructor",
    "__proto__",
    "valueOf",
    "hasOwnProperty",
    "isPrototypeOf",
    "propertyIsEnumerable",
    "toLocaleString",
    "__defineGetter__",
  ];
  for (const name of inherited) {
    await t.step(`${name} is undefined without an own key`, () => {
      const wrapped = view({ a: 1 });
      assert.equal(wrapped[name], undefined);
      assert.equal(name in wrapped, false);
    });
    await t.step(`${name} is data with an own key`, () => {
      const wrapped = view(JSON.parse(`{${JSON.stringify(name)}: {"v": 1}}`));
      assert.equal(wrapped[name].v, 1);
      assert.equal(name in wrapped, true);
    });
  }
  await t.step("keys inherited from a prototype do not count", () => {
    const wrapped = view(Object.assign(Object.create(null), { own: 1 }));
    assert.equal(wrapped.own, 1);
    assert.equal(wrapped.toString, undefined);
  });
});

Deno.test("An array view gives the wrapped element at an index, counting negative ones from the end", async (t) => {
  const data = [10, { b: 2 }, [3], "last"];
  const wrapped = view(data);
  const cases: [string, number | string, unknown][] = [
    ["the first", 0, 10],
    ["a middle one", 2, data[2]],
    ["the last", 3, "last"],
    ["-1 as the last", -1, "last"],
    ["-4 as the first", -4, 10],
    ["a string index", "1", data[1]],
    ["a negative string index", "-3", data[1]],
  ];
  for (const [name, index, expected] of cases) {
    await t.step(name, () => assert.equal(unwrap(wrapped[index]), expected));
  }
  await t.step("elements that are objects or arrays come wrapped", () => {
    assert.equal(isWrapped(wrapped[1]), true);
    assert.equal(wrapped[1].b, 2);
    assert.equal(isWrapped(wrapped[-2]), true);
    assert.equal(wrapped[-2][0], 3);
  });
  await t.step("a hole reads as undefined", () => {
    // deno-lint-ignore no-sparse-arrays -- a hole is what is tested
    assert.equal(view([1, , 3])[1], undefined);
  });
});

Deno.test("An array view throws a RangeError naming the index and the length for an index out of range", async (t) => {
  const cases: [string, number | string, RegExp][] = [
    ["just past the end", 3, /"3".*length 3/],
    ["far past the end", 1000, /"1000".*length 3/],
    ["just before the start", -4, /"-4".*length 3/],
    ["a huge index", "99999999999999999999", /"99999999999999999999".*length 3/],
  ];
  for (const [name, index, message] of cases) {
    await t.step(name, () => {
      assert.throws(() => view([1, 2, 3])[index], { name: "RangeError", message });
    });
  }
  await t.step("any index of an empty array", () => {
    assert.throws(() => view([])[0], { name: "RangeError", message: /"0".*length 0/ });
    assert.throws(() => view([])[-1], { name: "RangeError", message: /"-1".*length 0/ });
  });
});

Deno.test("An array view throws a TypeError naming the key for a name other than an index, length or method", async (t) => {
  const names = [
    "a",
    "name",
    "valueOf",
    "hasOwnProperty",
    "__proto__",
    "01",
    "-0",
    "1.5",
    "1e3",
    "",
  ];
  for (const name of names) {
    await t.step(JSON.stringify(name), () => {
      assert.throws(() => view([1, 2])[name], {
        name: "TypeError",
        message: new RegExp(
          `^Cannot read ${RegExp.escape(JSON.stringify(name))} of a wrapped array`,
        ),
      });
    });
  }
  await t.step("then, toJSON and constructor read as undefined", () => {
    const wrapped = view([1]);
    assert.equal(wrapped.then, undefined);
    assert.equal(wrapped.toJSON, undefined);
    assert.equal(wrapped.constructor, undefined);
  });
});

Deno.test("An array view supports length, iteration and the non-mutating array methods on wrapped elements", async (t) => {
  const data = [{ id: 1 }, { id: 2 }, { id: 3 }];
  const wrapped = view(data);
  const allWrapped = (values: unknown[]) => values.every(isWrapped);
  const cases: [string, () => void][] = [
    ["length", () => assert.equal(wrapped.length, 3)],
    ["for...of", () => {
      const seen = [];
      for (const item of wrapped) seen.push(item);
      assert.ok(allWrapped(seen));
      assert.deepEqual(seen.map(unwrap), data);
    }],
    ["spread", () => assert.deepEqual([...wrapped].map((item) => item.id), [1, 2, 3])],
    ["Array.from()", () => assert.ok(allWrapped(Array.from(wrapped)))],
    ["destructuring", () => {
      const [first, ...rest] = wrapped;
      assert.equal(first.id, 1);
      assert.equal(rest.length, 2);
    }],
    ["at()", () => assert.equal(wrapped.at(-1).id, 3)],
    ["concat()", () => {
      const joined = wrapped.concat([{ id: 4 }]);
      assert.deepEqual(joined.slice(0, 3).map(isWrapped), [true, true, true]);
      assert.equal(joined.length, 4);
    }],
    ["entries()", () => assert.equal([...wrapped.entries()][1][1].id, 2)],
    ["every()", () => assert.ok(wrapped.every((item: Untyped) => isWrapped(item) && item.id > 0))],
    ["filter()", () => assert.deepEqual(wrapped.filter((item: Untyped) => item.id > 1).length, 2)],
    ["find()", () => assert.equal(wrapped.find((item: Untyped) => item.id === 2).id, 2)],
    ["findIndex()", () => assert.equal(wrapped.findIndex((item: Untyped) => item.id === 2), 1)],
    ["findLast()", () => assert.equal(wrapped.findLast((item: Untyped) => item.id < 3).id, 2)],
    ["findLastIndex()", () => assert.equal(wrapped.findLastIndex((item: Untyped) => item.id), 2)],
    ["flat()", () => assert.equal(view([[{ id: 1 }], [[{ id: 2 }]]]).flat(2)[1].id, 2)],
    ["flatMap()", () => assert.deepEqual(wrapped.flatMap((item: Untyped) => [item.id]), [1, 2, 3])],
    ["forEach()", () => {
      const ids: number[] = [];
      wrapped.forEach((item: Untyped, index: number, array: Untyped) => {
        assert.equal(array, wrapped);
        ids.push(item.id + index);
      });
      assert.deepEqual(ids, [1, 3, 5]);
    }],
    ["includes() of a view of an element", () => {
      assert.equal(wrapped.includes(view(data[1])), true);
      assert.equal(wrapped.includes(data[1]), false);
    }],
    ["indexOf()", () => assert.equal(wrapped.indexOf(wrapped[2]), 2)],
    ["join()", () => assert.equal(view([1, "a", null]).join("-"), "1-a-")],
    ["keys()", () => assert.deepEqual([...wrapped.keys()], [0, 1, 2])],
    ["lastIndexOf()", () => assert.equal(view([1, 2, 1]).lastIndexOf(1), 2)],
    ["map()", () => assert.deepEqual(wrapped.map((item: Untyped) => item.id), [1, 2, 3])],
    [
      "reduce()",
      () => assert.equal(wrapped.reduce((sum: number, item: Untyped) => sum + item.id, 0), 6),
    ],
    ["reduceRight()", () => {
      assert.equal(wrapped.reduceRight((ids: string, item: Untyped) => ids + item.id, ""), "321");
    }],
    ["slice()", () => {
      const part = wrapped.slice(-2);
      assert.equal(Array.isArray(part), true);
      assert.equal(isWrapped(part), false);
      assert.equal(part[0].id, 2);
    }],
    ["some()", () => assert.ok(wrapped.some((item: Untyped) => item.id === 3))],
    [
      "toLocaleString()",
      () => assert.equal(view([1, 2]).toLocaleString(), [1, 2].toLocaleString()),
    ],
    ["toReversed()", () => assert.equal(wrapped.toReversed()[0].id, 3)],
    ["toSorted()", () => {
      const sorted = wrapped.toSorted((a: Untyped, b: Untyped) => b.id - a.id);
      assert.deepEqual(sorted.map((item: Untyped) => item.id), [3, 2, 1]);
      assert.deepEqual(data.map((item) => item.id), [1, 2, 3]);
    }],
    ["toSpliced()", () => assert.equal(wrapped.toSpliced(0, 1).length, 2)],
    ["toString()", () => assert.equal(view([1, [2, 3]]).toString(), "1,[2,3]")],
    ["values()", () => assert.ok(allWrapped([...wrapped.values()]))],
    ["with()", () => {
      const changed = wrapped.with(0, "new");
      assert.equal(changed[0], "new");
      assert.equal(changed[1].id, 2);
      assert.equal(data[0]?.id, 1);
    }],
  ];
  for (const [name, check] of cases) await t.step(name, check);
});

Deno.test("An array view throws a TypeError for the mutating array methods", async (t) => {
  const methods = [
    "copyWithin",
    "fill",
    "pop",
    "push",
    "reverse",
    "shift",
    "sort",
    "splice",
    "unshift",
  ];
  for (const method of methods) {
    await t.step(method, () => {
      const data = [3, 1, 2];
      assert.throws(() => view(data)[method](0), {
        name: "TypeError",
        message: `Cannot use "${method}": wrapped arrays are read-only`,
      });
      assert.deepEqual(data, [3, 1, 2]);
    });
  }
});

Deno.test("A view is read-only", async (t) => {
  const cases: [string, (w: Untyped) => unknown, RegExp][] = [
    ["assigning an existing key", (w) => (w.a = 2), /^Cannot assign "a": /],
    ["assigning a new key", (w) => (w.z = 2), /^Cannot assign "z": /],
    ["assigning a symbol key", (w) => (w[Symbol.iterator] = 2), /^Cannot assign "Symbol\(/],
    ["Reflect.set()", (w) => Reflect.set(w, "a", 2), /^Cannot assign "a": /],
    ["deleting a key", (w) => delete w.a, /^Cannot delete "a": /],
    ["Reflect.deleteProperty()", (w) => Reflect.deleteProperty(w, "a"), /^Cannot delete "a": /],
    ["defining a key", (w) => Object.defineProperty(w, "a", { value: 2 }), /^Cannot define "a": /],
    ["Object.assign()", (w) => Object.assign(w, { a: 2 }), /^Cannot assign "a": /],
    ["Object.setPrototypeOf()", (w) => Object.setPrototypeOf(w, null), /^Cannot set the prototype/],
    ["Object.freeze()", (w) => Object.freeze(w), /^Cannot prevent extensions/],
  ];
  for (const [name, act, message] of cases) {
    await t.step(`an object view: ${name}`, () => {
      const data = { a: 1 };
      assert.throws(() => act(view(data)), { name: "TypeError", message });
      assert.deepEqual(data, { a: 1 });
    });
  }
  const arrayCases: [string, (w: Untyped) => unknown, RegExp][] = [
    ["assigning an element", (w) => (w[0] = 2), /^Cannot assign "0": /],
    ["assigning length", (w) => (w.length = 0), /^Cannot assign "length": /],
    ["deleting an element", (w) => delete w[0], /^Cannot delete "0": /],
    [
      "defining an element",
      (w) => Object.defineProperty(w, 1, { value: 2 }),
      /^Cannot define "1": /,
    ],
  ];
  for (const [name, act, message] of arrayCases) {
    await t.step(`an array view: ${name}`, () => {
      const data = [1];
      assert.throws(() => act(view(data)), { name: "TypeError", message });
      assert.deepEqual(data, [1]);
    });
  }
  await t.step("the message says why", () => {
    assert.throws(() => (view({}).a = 1), {
      message: 'Cannot assign "a": wrapped values are read-only',
    });
  });
});

Deno.test("unwrap() returns the very object that was wrapped and other values as they are", async (t) => {
  const object = { a: { b: [1] } };
  const array = [object];
  const date = new Date(0);
  const cases: [string, unknown, unknown][] = [
    ["an object view", view(object), object],
    ["a nested object view", view(object).a, object.a],
    ["an array view", view(array), array],
    ["a nested array view", view(object).a.b, object.a.b],
    ["an element view", view(array)[0], object],
    ["a number", 1, 1],
    ["undefined", undefined, undefined],
    ["null", null, null],
    ["plain data", object, object],
    ["a Date", date, date],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => assert.equal(unwrap(value), expected));
  }
});

Deno.test("isWrapped() tells views from everything else", async (t) => {
  const cases: [string, unknown, boolean][] = [
    ["an object view", view({}), true],
    ["an array view", view([]), true],
    ["a nested view", view({ a: {} }).a, true],
    ["the wrapped data", unwrap(view({})), false],
    ["a plain object", {}, false],
    ["an array", [], false],
    ["another proxy", new Proxy({}, {}), false],
    ["a primitive", "view", false],
    ["null", null, false],
    ["undefined", undefined, false],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => assert.equal(isWrapped(value), expected));
  }
});

Deno.test("isEmpty() is true for empty objects and arrays, wrapped or not", async (t) => {
  const cases: [string, unknown, boolean][] = [
    ["a view of {}", view({}), true],
    ["a view of []", view([]), true],
    ["a view of a null-prototype {}", view(Object.create(null)), true],
    ["a view of a non-empty object", view({ a: undefined }), false],
    ["a view of a non-empty array", view([undefined]), false],
    ["a nested empty view", view({ a: [] }).a, true],
    ["{}", {}, true],
    ["[]", [], true],
    ["an object with only non-enumerable keys", Object.defineProperty({}, "a", { value: 1 }), true],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => assert.equal(isEmpty(value), expected));
  }
  const invalid: [string, unknown, string][] = [
    ["undefined", undefined, "undefined"],
    ["null", null, "null"],
    ["a number", 0, "number"],
    ["a string", "", "string"],
    ["a Map", new Map(), "Map"],
  ];
  for (const [name, value, got] of invalid) {
    await t.step(`throws a TypeError for ${name}`, () => {
      assert.throws(() => isEmpty(value), {
        name: "TypeError",
        message: `Cannot test emptiness: expected a wrapped object or array, got "${got}"`,
      });
    });
  }
  await t.step("every view is truthy, which is why isEmpty() exists", () => {
    assert.equal(Boolean(view({})), true);
    assert.equal(Boolean(view([])), true);
  });
});

Deno.test("Data keys named like helpers or protocols are reachable as data", async (t) => {
  const data = {
    unwrap: 1,
    wrap: { x: 2 },
    isWrapped: 3,
    isEmpty: [4],
    then: "not a function",
    toJSON: "data",
  };
  const wrapped = view(data);
  const cases: [string, unknown, unknown][] = [
    ["unwrap", wrapped.unwrap, 1],
    ["wrap", wrapped.wrap.x, 2],
    ["isWrapped", wrapped.isWrapped, 3],
    ["isEmpty", wrapped.isEmpty[0], 4],
    ["then", wrapped.then, "not a function"],
    ["toJSON", wrapped.toJSON, "data"],
  ];
  for (const [name, actual, expected] of cases) {
    await t.step(name, () => assert.equal(actual, expected));
  }
  await t.step("a toJSON string key is serialized as data", () => {
    assert.equal(JSON.stringify(wrapped), JSON.stringify(data));
  });
});

Deno.test("A view is not thenable unless its data has an own then", async (t) => {
  await t.step("an object view without then", async () => {
    const wrapped = view({ a: 1 });
    assert.equal(await Promise.resolve(wrapped), wrapped);
  });
  await t.step("an array view", async () => {
    const wrapped = view([1]);
    assert.equal(await Promise.resolve(wrapped), wrapped);
  });
  await t.step("returned from an async function", async () => {
    const wrapped = view({ a: 1 });
    async function fetchResult() {
      await Promise.resolve();
      return wrapped;
    }
    assert.equal(await fetchResult(), wrapped);
  });
  await t.step("an object view whose data has an own then function", async () => {
    const data = { then: (resolve: (value: number) => void) => resolve(7) };
    assert.equal(await view(data), 7);
  });
});

Deno.test("JSON.stringify() of a view equals that of its data", async (t) => {
  const cases: [string, unknown][] = [
    ["an object", { a: 1, b: "x", c: null, d: true }],
    ["nested objects and arrays", { a: [1, { b: [2, [3, { c: {} }]] }], e: [] }],
    ["an array of objects", [{ a: 1 }, [], {}, [[]]]],
    // deno-lint-ignore no-sparse-arrays -- holes serialize as null, in views too
    ["undefined values and holes", { a: undefined, b: [undefined, , 3] }],
    ["a null-prototype object", Object.assign(Object.create(null), { a: [1] })],
    ["a Date inside", { when: new Date(0) }],
    ["a toJSON data key", { toJSON: "data", list: [{ toJSON: 1 }] }],
    ["a frozen object", Object.freeze({ a: Object.freeze([1, 2]) })],
    ["keys that look like indices", { 0: "a", 1: "b", length: 2 }],
  ];
  for (const [name, data] of cases) {
    await t.step(name, () => {
      assert.equal(JSON.stringify(view(data)), JSON.stringify(data));
      assert.equal(JSON.stringify(view(data), null, 2), JSON.stringify(data, null, 2));
    });
  }
  await t.step("a view nested in other data", () => {
    const data = { a: [1, 2] };
    assert.equal(JSON.stringify({ result: view(data) }), JSON.stringify({ result: data }));
  });
});

Deno.test("String() of a view is its JSON text", async (t) => {
  const cases: [string, unknown][] = [
    ["an object", { a: 1, b: [1, 2] }],
    ["an array", [1, { a: "x" }, null]],
    ["an empty object", {}],
    ["a null-prototype object", Object.assign(Object.create(null), { a: 1 })],
    ["an object with own toString data", { toString: "data" }],
  ];
  for (const [name, data] of cases) {
    await t.step(name, () => {
      const wrapped = view(data);
      assert.equal(String(wrapped), JSON.stringify(data));
      assert.equal(`${wrapped}`, JSON.stringify(data));
      assert.equal(wrapped + "", JSON.stringify(data));
    });
  }
});

Deno.test("Deno.inspect() and node:util inspect() show the data", async (t) => {
  const cases: [string, unknown][] = [
    ["an object", { a: 1, b: [1, { c: "x" }] }],
    ["an array", [1, { a: [2] }, null]],
    ["a null-prototype object", Object.assign(Object.create(null), { a: 1 })],
    ["a frozen object", Object.freeze({ a: 1 })],
  ];
  for (const [name, data] of cases) {
    await t.step(name, () => {
      assert.equal(Deno.inspect(view(data)), Deno.inspect(data));
      assert.equal(Deno.inspect({ result: view(data) }), Deno.inspect({ result: data }));
      assert.equal(
        Deno.inspect(view(data), { colors: true }),
        Deno.inspect(data, { colors: true }),
      );
      assert.equal(nodeInspect(view(data)), nodeInspect(data));
    });
  }
  await t.step("deep data, as deep as the inspector goes", () => {
    const data = { a: [1, { b: [2, [3, [4, [5]]]] }], c: "x" };
    assert.equal(Deno.inspect(view(data)), Deno.inspect(data));
    assert.equal(Deno.inspect(view(data), { depth: 1 }), Deno.inspect(data, { depth: 1 }));
    assert.equal(Deno.inspect([view(data), view(data).a]), Deno.inspect([data, data.a]));
  });
  await t.step("circular data", () => {
    const data: Record<string, unknown> = { a: 1 };
    data.self = data;
    assert.equal(Deno.inspect(view(data)), Deno.inspect(data));
  });
});

Deno.test({
  name: "console.log() shows a view as it shows the data",
  ignore: Deno.permissions.querySync({ name: "run" }).state !== "granted",
  async fn() {
    const module = new URL("../attr_wrapper.ts", import.meta.url).href;
    const code = `
      import { wrap } from ${JSON.stringify(module)};
      const data = { a: 1, b: [1, { c: "x", d: [1, [2, [3]]] }] };
      const self = { a: 1 };
      self.self = self;
      for (const value of [data, { nested: data }, data.b, self]) {
        console.log(wrap(value));
        console.log("-----");
        console.log(value);
        console.log("-----");
        console.log("%o %O", wrap(value), wrap(value));
        console.log("-----");
        console.log("%o %O", value, value);
        console.log("-----");
      }
    `;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--no-config", code],
      stdin: "null",
      env: { NO_COLOR: "1" },
    }).output();
    assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
    const blocks = new TextDecoder().decode(output.stdout).split("-----\n");
    assert.equal(blocks.pop(), "");
    assert.equal(blocks.length, 16);
    for (let i = 0; i < blocks.length; i += 2) assert.equal(blocks[i], blocks[i + 1]);
    assert.match(blocks[0] ?? "", /c: "x"/);
  },
});

Deno.test("Object.keys(), in and for...in reflect the data's own keys", async (t) => {
  const keysOf = (value: object) => {
    const keys = [];
    for (const key in value) keys.push(key);
    return keys;
  };
  const cases: [string, object][] = [
    ["an object", { a: 1, b: { c: 2 }, 3: "x" }],
    ["an empty object", {}],
    ["a null-prototype object", Object.assign(Object.create(null), { a: 1 })],
    ["an object with a __proto__ key", JSON.parse('{"__proto__": 1, "x": 2}')],
    ["an array", [1, 2, 3]],
    ["an empty array", []],
  ];
  for (const [name, data] of cases) {
    await t.step(name, () => {
      const wrapped = view(data);
      assert.deepEqual(Object.keys(wrapped), Object.keys(data));
      assert.deepEqual(keysOf(wrapped), keysOf(data));
      assert.deepEqual(Object.getOwnPropertyNames(wrapped), Object.getOwnPropertyNames(data));
      for (const key of Object.keys(data)) assert.equal(key in wrapped, true);
      assert.equal("missing" in wrapped, false);
    });
  }
  await t.step("Object.entries() and spread give wrapped values", () => {
    const data = { a: { b: 1 }, c: 2 };
    const wrapped = view(data);
    assert.equal(Object.entries(wrapped)[0]?.[1], wrapped.a);
    const copy = { ...wrapped };
    assert.equal(isWrapped(copy), false);
    assert.equal(copy.a, wrapped.a);
  });
  await t.step("an array view has its indices and length, but no methods, in it", () => {
    const wrapped = view([1, 2]);
    assert.equal(1 in wrapped, true);
    assert.equal(2 in wrapped, false);
    assert.equal((-1) in wrapped, false);
    assert.equal("length" in wrapped, true);
  });
  await t.step("a view's own property descriptors are read-only and hold wrapped values", () => {
    const data = { a: { b: 1 } };
    const descriptor = Object.getOwnPropertyDescriptor(view(data), "a");
    assert.equal(descriptor?.writable, false);
    assert.equal(descriptor?.enumerable, true);
    assert.equal(unwrap(descriptor?.value), data.a);
  });
});
