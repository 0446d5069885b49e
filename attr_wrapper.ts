/**
 * Lazy, read-only attribute access to untyped results: `wrap(result).items[-1].name` instead of
 * casting and indexing JSON data by hand, with errors where the shape is wrong.
 *
 * {@linkcode wrap} returns a view (a `Proxy`) of a plain object or an array; nothing is copied, so
 * wrapping a large result costs O(1), and each value read through a view is wrapped in turn. An
 * object view answers its own keys and gives `undefined` for any other name, so `w.name?.first` is
 * the idiom for an optional field. An array view answers indices (negative ones count from the
 * end), `length` and the non-mutating array methods; an index out of range throws a `RangeError`
 * and any other name a `TypeError`. Views are read-only. The helpers are free functions, so no data
 * key is ever hidden: {@linkcode unwrap} returns the wrapped value itself, {@linkcode isWrapped}
 * tells views apart and {@linkcode isEmpty} replaces the truthiness test that objects cannot offer.
 *
 * @example Read a result whose shape only the caller knows
 * ```ts
 * import { unwrap, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * // RPC results arrive as `unknown`; a view lets any chain of accesses type-check.
 * const d: unknown = { a: 1, b: 2 };
 * const e = wrap(d);
 * assert.equal(e.a, 1);
 * assert.equal(e.name, undefined);
 *
 * const l: unknown = [1, 2, d];
 * const e2 = wrap(l);
 * assert.equal(e2[0], 1);
 * assert.equal(e2[2].b, 2);
 * assert.throws(() => e2[3], RangeError);
 * assert.throws(() => e2.a, TypeError);
 * assert.equal(unwrap(e), d);
 * ```
 *
 * @module
 */

/**
 * The type of a view of data whose type is `unknown` (or `any`): any chain of property and index
 * access type-checks, as it would in the dynamic language this API comes from. The checks happen at
 * run time instead: a missing key reads as `undefined`, a bad index or name on an array throws.
 *
 * @example Chain accesses on an untyped result
 * ```ts
 * import { type Untyped, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const result: unknown = JSON.parse('{"user": {"roles": ["admin", "dev"]}}');
 * const view: Untyped = wrap(result);
 * assert.equal(view.user.roles[-1], "dev");
 * ```
 */
// deno-lint-ignore no-explicit-any -- only `any` lets unchecked chains compile under noUncheckedIndexedAccess
export type Untyped = any;

/**
 * The values that {@linkcode wrap} returns as they are, as far as types can tell: primitives,
 * functions and built-in objects whose methods set them apart from data. (Instances of other
 * classes are returned as they are too, but types cannot tell them from plain objects, so
 * {@linkcode Wrapped} describes them as views.)
 *
 * @example Dates pass through unchanged
 * ```ts
 * import { type Passthrough, type Wrapped, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const when: Wrapped<Date> = wrap(new Date(0)); // a Date, because Date is a Passthrough
 * const value: Passthrough = when;
 * assert.ok(value instanceof Date);
 * ```
 */
export type Passthrough =
  | string
  | number
  | boolean
  | bigint
  | symbol
  | null
  | undefined
  | ((...args: never) => unknown)
  | ArrayBufferLike
  | ArrayBufferView
  | Date
  | RegExp
  | PromiseLike<unknown>
  | ReadonlyMap<unknown, unknown>
  | ReadonlySet<unknown>
  | WeakMap<WeakKey, unknown>
  | WeakSet<WeakKey>;

/**
 * The names that every object has in JavaScript but that an object view answers only when the data
 * has them as own keys; otherwise they read as `undefined`.
 *
 * @example An object view has no inherited members
 * ```ts
 * import { type InheritedName, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const name: InheritedName = "toString";
 * assert.equal(wrap({ a: 1 })[name], undefined);
 * ```
 */
export type InheritedName =
  | "constructor"
  | "hasOwnProperty"
  | "isPrototypeOf"
  | "propertyIsEnumerable"
  | "toLocaleString"
  | "toString"
  | "valueOf";

/**
 * The type of `wrap(value)` for a value of type `T`: a view for arrays and objects, `T` itself for
 * {@linkcode Passthrough} values and {@linkcode Untyped} for `unknown` and `any`. Unions are mapped
 * member by member.
 *
 * @example Known shapes keep their types
 * ```ts
 * import { type Wrapped, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view: Wrapped<{ a: number; tags: string[] }> = wrap({ a: 1, tags: ["x"] });
 * const a: number = view.a;
 * assert.equal(a, 1);
 * assert.equal(view.tags[-1], "x");
 * ```
 */
export type Wrapped<T> = 0 extends 1 & T ? Untyped
  : unknown extends T ? Untyped
  : T extends Passthrough ? T
  : T extends readonly unknown[] ? WrappedArray<T[number]>
  : T extends object ? WrappedObject<T>
  : T;

/**
 * The type of a view of an object of type `T`: each string or number key of `T` is read-only and
 * gives the wrapped value. Names that `T` lacks do not type-check, except the
 * {@linkcode InheritedName}s, which read as `undefined` as they do at run time.
 *
 * @example Read a nested field
 * ```ts
 * import { type WrappedObject, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view: WrappedObject<{ user: { name: string } }> = wrap({ user: { name: "ada" } });
 * assert.equal(view.user.name, "ada");
 * assert.equal(view.toString, undefined);
 * ```
 */
export type WrappedObject<T extends object> =
  & { readonly [K in keyof T as K extends symbol ? never : K]: Wrapped<T[K]> }
  & { readonly [K in Exclude<InheritedName, keyof T>]?: undefined };

/**
 * The type of a view of an array whose elements have type `E`. Besides indices and `length` it has
 * the non-mutating methods of arrays, which see wrapped elements; the methods that build arrays
 * (`map`, `filter`, `slice`, ...) return ordinary arrays of wrapped elements.
 *
 * @example Map over wrapped elements
 * ```ts
 * import { type WrappedArray, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view: WrappedArray<{ id: number }> = wrap([{ id: 1 }, { id: 2 }]);
 * assert.deepEqual(view.map((item) => item.id), [1, 2]);
 * assert.equal(view[-1]?.id, 2);
 * ```
 */
export interface WrappedArray<E> extends ReadonlyArray<Wrapped<E>> {
  /**
   * The wrapped element at `index`; a negative index counts from the end. An index out of range
   * throws a `RangeError` (the type says `undefined` only because of `noUncheckedIndexedAccess`).
   */
  readonly [index: number]: Wrapped<E>;
}

/**
 * The type that {@linkcode unwrap} returns for a value of type `W`: the data type that `W` is a
 * view of, rebuilt from the view's type (so it has the same shape as the wrapped type, though not
 * necessarily its name or its `readonly` marks). `unknown` for {@linkcode Untyped} views.
 *
 * @example Get the data type back
 * ```ts
 * import { type Unwrapped, unwrap, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view = wrap({ a: 1 });
 * const data: Unwrapped<typeof view> = unwrap(view);
 * assert.equal(data.a, 1);
 * ```
 */
export type Unwrapped<W> = 0 extends 1 & W ? unknown
  : W extends Passthrough ? W
  : W extends WrappedArray<infer E> ? E[]
  : W extends object ? {
      -readonly [
        K in keyof W as K extends InheritedName ? (W[K] extends undefined ? never : K) : K
      ]: Unwrapped<W[K]>;
    }
  : W;

/** Views to the data they show, so that {@linkcode unwrap} and {@linkcode isWrapped} need no hidden keys. */
const sources = new WeakMap<object, object>();

/** Data to its view, so that wrapping the same data twice gives the same view. */
const views = new WeakMap<object, object>();

/** The inspection hook of Node.js, which Deno's inspector honours too. */
const nodeInspect: unique symbol = Symbol.for("nodejs.util.inspect.custom");

/**
 * The array methods a view answers. They run on the view itself, so they read wrapped elements
 * through its traps and stay lazy (`at`, `find` and `includes` stop early).
 */
const READ_METHODS: ReadonlyMap<string, unknown> = new Map(
  [
    "at",
    "concat",
    "entries",
    "every",
    "filter",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "flat",
    "flatMap",
    "forEach",
    "includes",
    "indexOf",
    "join",
    "keys",
    "lastIndexOf",
    "map",
    "reduce",
    "reduceRight",
    "slice",
    "some",
    "toLocaleString",
    "toReversed",
    "toSorted",
    "toSpliced",
    "toString",
    "values",
    "with",
  ].map((name) => [name, Reflect.get(Array.prototype, name)]),
);

/** The array methods that would change the array; reading one throws. */
const WRITE_METHODS: ReadonlySet<string> = new Set([
  "copyWithin",
  "fill",
  "pop",
  "push",
  "reverse",
  "shift",
  "sort",
  "splice",
  "unshift",
]);

/**
 * Names that language protocols probe (`await`, `JSON.stringify` and the species lookup of array
 * methods). An array view reads them as `undefined` rather than throwing, so that it is not
 * thenable, serializes as data and its methods build ordinary arrays.
 */
const PROBED_NAMES: ReadonlySet<string> = new Set(["constructor", "then", "toJSON"]);

/** Canonical integer strings: "0", "7", "-1"; not "01", "-0", "1.5" or "1e3". */
const INTEGER_KEY = /^(?:0|-?[1-9][0-9]*)$/;

/** Canonical array indices: "0", "7"; the keys an array's own elements have. */
const INDEX_KEY = /^(?:0|[1-9][0-9]*)$/;

function isPlainObject(value: object): value is Record<string, unknown> {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

function isPlainArray(value: object): value is unknown[] {
  return Array.isArray(value) && Object.getPrototypeOf(value) === Array.prototype;
}

/**
 * The symbol-keyed members of every view, which never hide data since data keys are strings. They
 * live on the prototype of the proxy's target, where `this` is the view.
 */
class ObjectStandIn {
  /** `String(view)` and template literals give the JSON text of the data. */
  [Symbol.toPrimitive](): string {
    return JSON.stringify(unwrap(this));
  }

  /**
   * `Deno.inspect`, `console.log` and `node:util` read this on a proxy's target, without the
   * proxy's traps. Unlike a `Deno.customInspect` result, which they turn into a string, an object
   * returned here is formatted in the same context, so a view looks exactly like its data.
   */
  [nodeInspect](): unknown {
    return unwrap(this);
  }
}

/** {@linkcode ObjectStandIn} for arrays: an array, so that `Array.isArray(view)` holds. */
class ArrayStandIn extends Array {
  [Symbol.toPrimitive](): string {
    return JSON.stringify(unwrap(this));
  }

  [nodeInspect](): unknown {
    return unwrap(this);
  }
}

/** The descriptor a view reports for a data property: read-only, holding the wrapped value. */
function viewDescriptor(data: object, key: string): PropertyDescriptor | undefined {
  const descriptor = Reflect.getOwnPropertyDescriptor(data, key);
  if (descriptor === undefined) return undefined;
  return {
    value: wrap(Reflect.get(data, key)),
    writable: false,
    enumerable: descriptor.enumerable ?? false,
    configurable: true,
  };
}

function readOnly(action: string, key: string | symbol): TypeError {
  return new TypeError(`Cannot ${action} "${String(key)}": wrapped values are read-only`);
}

/** The traps that make a view read-only; shared by object and array views. */
class ReadOnlyHandler implements ProxyHandler<object> {
  set(_target: object, key: string | symbol): boolean {
    throw readOnly("assign", key);
  }

  deleteProperty(_target: object, key: string | symbol): boolean {
    throw readOnly("delete", key);
  }

  defineProperty(_target: object, key: string | symbol): boolean {
    throw readOnly("define", key);
  }

  setPrototypeOf(): boolean {
    throw new TypeError("Cannot set the prototype: wrapped values are read-only");
  }

  preventExtensions(): boolean {
    throw new TypeError("Cannot prevent extensions: wrapped values are read-only");
  }
}

/** The traps of an object view. Symbols are never data keys; they resolve on the stand-in. */
class ObjectHandler extends ReadOnlyHandler {
  #data: Record<string, unknown>;

  constructor(data: Record<string, unknown>) {
    super();
    this.#data = data;
  }

  get(target: object, key: string | symbol, receiver: unknown): unknown {
    if (typeof key === "symbol") return Reflect.get(target, key, receiver);
    return Object.hasOwn(this.#data, key) ? wrap(this.#data[key]) : undefined;
  }

  has(target: object, key: string | symbol): boolean {
    if (typeof key === "symbol") return Reflect.has(target, key);
    return Object.hasOwn(this.#data, key);
  }

  ownKeys(): string[] {
    return Object.getOwnPropertyNames(this.#data);
  }

  getPrototypeOf(): object | null {
    return Object.getPrototypeOf(this.#data);
  }

  getOwnPropertyDescriptor(_target: object, key: string | symbol): PropertyDescriptor | undefined {
    return typeof key === "symbol" ? undefined : viewDescriptor(this.#data, key);
  }
}

/** The traps of an array view. Symbols resolve on the stand-in, whose `Symbol.iterator` is `values`. */
class ArrayHandler extends ReadOnlyHandler {
  #data: unknown[];

  constructor(data: unknown[]) {
    super();
    this.#data = data;
  }

  get(target: object, key: string | symbol, receiver: unknown): unknown {
    if (typeof key === "symbol") return Reflect.get(target, key, receiver);
    const length = this.#data.length;
    if (INTEGER_KEY.test(key)) {
      const given = Number(key);
      const index = given < 0 ? given + length : given;
      if (index < 0 || index >= length) {
        throw new RangeError(
          `Cannot read index "${key}": out of range for a wrapped array of length ${length}`,
        );
      }
      return wrap(this.#data[index]);
    }
    if (key === "length") return length;
    if (READ_METHODS.has(key)) return READ_METHODS.get(key);
    if (PROBED_NAMES.has(key)) return undefined;
    if (WRITE_METHODS.has(key)) {
      throw new TypeError(`Cannot use "${key}": wrapped arrays are read-only`);
    }
    throw new TypeError(
      `Cannot read "${key}" of a wrapped array: it has only indices, "length" and array methods`,
    );
  }

  has(target: object, key: string | symbol): boolean {
    if (typeof key === "symbol") return Reflect.has(target, key);
    return (key === "length" || INDEX_KEY.test(key)) && Object.hasOwn(this.#data, key);
  }

  getPrototypeOf(): object {
    return Array.prototype;
  }

  ownKeys(): string[] {
    return Object.getOwnPropertyNames(this.#data).filter((key) =>
      key === "length" || INDEX_KEY.test(key)
    );
  }

  getOwnPropertyDescriptor(_target: object, key: string | symbol): PropertyDescriptor | undefined {
    if (typeof key === "symbol") return undefined;
    // The stand-in's own `length` is non-configurable and writable, and a proxy must say the same.
    if (key === "length") {
      return { value: this.#data.length, writable: true, enumerable: false, configurable: false };
    }
    return INDEX_KEY.test(key) ? viewDescriptor(this.#data, key) : undefined;
  }
}

/**
 * Returns a read-only, lazy view of `value` if it is a plain object (one whose prototype is
 * `Object.prototype` or `null`) or an array, and `value` itself otherwise: primitives, functions,
 * class instances (`Date`, `Map`, `Uint8Array`, ...) and views. Nothing is copied; values read
 * through the view are wrapped when they are read, and the same data always gets the same view.
 *
 * An object view gives the wrapped value of an own key and `undefined` for any other name, inherited
 * ones (`toString`, `constructor`, `__proto__`) included. An array view gives the wrapped element
 * at an index, counting from the end for a negative index, and throws a `RangeError` for an index
 * out of range; it answers `length`, iteration and the non-mutating array methods, reads `then`,
 * `toJSON` and `constructor` as `undefined`, and throws a `TypeError` for any other name. Assigning,
 * deleting or defining a property of a view throws a `TypeError`. `JSON.stringify`, `String`,
 * `Deno.inspect`, `Object.keys`, `in` and `for...in` see the data. (`JSON.stringify(view)` goes
 * through the view key by key; for large data `JSON.stringify(unwrap(view))` is much faster.)
 *
 * @example Wrap a result and read it
 * ```ts
 * import { wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const result: unknown = JSON.parse('{"items": [{"name": "a"}, {"name": "b"}]}');
 * const view = wrap(result);
 * assert.equal(view.items[-1].name, "b");
 * assert.equal(view.cursor?.next, undefined);
 * assert.equal(JSON.stringify(view), JSON.stringify(result));
 * assert.throws(() => view.items.push({ name: "c" }), TypeError);
 * ```
 *
 * @typeParam T The type of the value.
 * @param value The value to wrap.
 * @returns A view of `value`, or `value` itself if it is not a plain object or an array.
 */
export function wrap<T>(value: T): Wrapped<T> {
  if (typeof value !== "object" || value === null || sources.has(value)) {
    return value as Wrapped<T>;
  }
  const cached = views.get(value);
  if (cached !== undefined) return cached as Wrapped<T>;
  // The only read of the data that wrapping makes; views read the rest when they are read.
  const prototype: object | null = Object.getPrototypeOf(value);
  // The proxy's target is an empty stand-in of the data's kind: `Array.isArray` and
  // `JSON.stringify` see it through the proxy, and the proxy invariants, which tie a proxy to its
  // target's non-configurable properties, never involve the data, which may be frozen.
  let view: object;
  if (prototype === Array.prototype && Array.isArray(value)) {
    view = new Proxy(new ArrayStandIn(), new ArrayHandler(value));
  } else if (prototype === Object.prototype || prototype === null) {
    view = new Proxy(new ObjectStandIn(), new ObjectHandler(value as Record<string, unknown>));
  } else {
    return value as Wrapped<T>;
  }
  sources.set(view, value);
  views.set(value, view);
  return view as Wrapped<T>;
}

/**
 * Returns the very object that the view `value` shows, or `value` itself if it is not a view (as
 * values that {@linkcode wrap} returns unchanged are not), so `unwrap(wrap(x)) === x` for any `x`.
 *
 * @example Get the data back to pass it on
 * ```ts
 * import { unwrap, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const data = { user: { name: "ada" }, id: 7 };
 * const view = wrap(data);
 * assert.equal(unwrap(view.user), data.user);
 * assert.equal(unwrap(view.id), 7);
 * ```
 *
 * @typeParam W The type of the view.
 * @param value A view, or any other value.
 * @returns The data that `value` shows, or `value` itself.
 */
export function unwrap<W>(value: W): Unwrapped<W> {
  if (typeof value !== "object" || value === null) return value as Unwrapped<W>;
  return (sources.get(value) ?? value) as Unwrapped<W>;
}

/**
 * Tells whether `value` is a view that {@linkcode wrap} made.
 *
 * @example Tell views from data
 * ```ts
 * import { isWrapped, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view = wrap({ list: [1, 2], n: 1 });
 * assert.equal(isWrapped(view.list), true);
 * assert.equal(isWrapped(view.n), false);
 * ```
 *
 * @param value Any value.
 * @returns Whether `value` is a view.
 */
export function isWrapped(value: unknown): boolean {
  return typeof value === "object" && value !== null && sources.has(value);
}

/**
 * Tells whether a view (or a plain object or array, as {@linkcode wrap} would wrap it) has no
 * elements or no own enumerable keys. Objects are always truthy in JavaScript, so this is the test
 * for an empty result.
 *
 * @example Test for an empty result
 * ```ts
 * import { isEmpty, wrap } from "./attr_wrapper.ts";
 * import assert from "node:assert/strict";
 *
 * const view = wrap({ errors: [], meta: {}, items: [1] });
 * assert.equal(isEmpty(view.errors), true);
 * assert.equal(isEmpty(view.meta), true);
 * assert.equal(isEmpty(view.items), false);
 * assert.throws(() => isEmpty(view.items[0]), TypeError); // a number is not a container
 * ```
 *
 * @param value A view, plain object or array.
 * @returns Whether `value` is empty.
 * @throws {TypeError} If `value` is neither a view nor a plain object or array.
 */
export function isEmpty(value: unknown): boolean {
  const data = typeof value === "object" && value !== null ? sources.get(value) ?? value : value;
  if (typeof data === "object" && data !== null) {
    if (isPlainArray(data)) return data.length === 0;
    if (isPlainObject(data)) {
      for (const key in data) if (Object.hasOwn(data, key)) return false;
      return true;
    }
  }
  throw new TypeError(
    `Cannot test emptiness: expected a wrapped object or array, got "${describe(data)}"`,
  );
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value !== "object") return typeof value;
  return Object.getPrototypeOf(value)?.constructor?.name ?? "object";
}
