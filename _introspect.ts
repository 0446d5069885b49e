// Method discovery: the method table of a handlers object, built once by introspection, and
// each method's parameter names read from its source. Nothing is ever looked up on a user object
// with a name from the wire afterwards.

import { EventEmitter } from "node:events";
import { Duplex, PassThrough, Readable, Transform, Writable } from "node:stream";

/** An exposed method, as introspection found it. */
export interface MethodInfo {
  /** The name callers use, dotted for namespaces (`"math.add"`). */
  readonly name: string;
  /** The parameter names, read from the function's source; destructured ones are `argN`. */
  readonly params: readonly string[];
  /** Whether the last parameter is a rest parameter, so that any number of params fits. */
  readonly rest: boolean;
}

// deno-lint-ignore no-explicit-any
type AnyFunction = (...args: any[]) => unknown;

/** One exposed method: what the server tells of it, and what it calls. */
export interface Method extends MethodInfo {
  readonly fn: AnyFunction;
  readonly thisArg: unknown;
  /** By-position params it needs at least; by-name params must name these. */
  readonly required: number;
  /** Whether it takes one object (a single parameter): by-name params may be that object. */
  readonly takesObject: boolean;
  /** An `async` function or generator: its context must survive `await`. */
  readonly async: boolean;
}

const AsyncFunction = (async () => {}).constructor;
const AsyncGeneratorFunction = (async function* () {}).constructor;

/** The prefix JSON-RPC 2.0 reserves for the protocol's own methods. */
const RESERVED_PREFIX = "rpc.";

/** Namespaces nest at most this deep; deeper is almost surely a cycle or a mistake. */
const MAX_NAMESPACE_DEPTH = 16;

/**
 * Builds the method table of `handlers` once: a plain object or module namespace exposes its own
 * functions and nests its plain-object properties as dotted namespaces; a class instance also
 * exposes the methods of its prototype chain defined by user code: the walk stops at the first
 * built-in prototype (`Object`, `Map`, `EventTarget`, `Function`, ...), so that a class extending
 * `Map` exposes its own methods and not `get` or `clear`. Names
 * starting with `_`, `constructor` and accessors are never exposed, and nothing is ever looked up
 * on a user object with a name from the wire afterwards.
 */
export function buildMethodTable(handlers: object): Map<string, Method> {
  if (handlers === null || (typeof handlers !== "object" && typeof handlers !== "function")) {
    throw new TypeError(
      "Cannot serve handlers: they must be an object, a class instance or a module",
    );
  }
  const table = new Map<string, Method>();
  addNamespace(table, handlers, "", new Set(), 0);
  return table;
}

function addNamespace(
  table: Map<string, Method>,
  target: object,
  prefix: string,
  seen: Set<object>,
  depth: number,
): void {
  // `seen` holds the namespaces on the path here: a cycle stops, an alias is exposed again.
  if (seen.has(target)) return;
  if (depth > MAX_NAMESPACE_DEPTH) {
    throw new TypeError(`Cannot serve handlers: namespace "${prefix}" nests too deeply`);
  }
  seen.add(target);
  for (const [key, value] of exposedMembers(target)) {
    const name = prefix + key;
    if (typeof value === "function") {
      if (isClass(value)) continue;
      if (name.startsWith(RESERVED_PREFIX)) {
        throw new TypeError(`Cannot expose "${name}": the "rpc." prefix is reserved`);
      }
      const fn = value as AnyFunction;
      const async = fn instanceof AsyncFunction || fn instanceof AsyncGeneratorFunction;
      const { params, rest } = parameterNames(fn);
      const { required } = parameterShape(fn);
      const takesObject = params.length === 1 && !rest;
      table.set(name, { name, fn, thisArg: target, async, params, rest, required, takesObject });
    } else if (isPlainObject(value)) {
      addNamespace(table, value, `${name}.`, seen, depth + 1);
    }
  }
  seen.delete(target);
}

/** The own enumerable data properties, then, for class instances, the prototype chain's methods. */
function* exposedMembers(target: object): Generator<[string, unknown]> {
  const names = new Set<string>();
  for (const key of Object.keys(target)) {
    const descriptor = Object.getOwnPropertyDescriptor(target, key);
    if (descriptor === undefined || !("value" in descriptor) || !isExposedName(key)) continue;
    names.add(key);
    yield [key, descriptor.value];
  }
  if (isPlainObject(target) || isModule(target)) return;
  for (
    let proto = Object.getPrototypeOf(target);
    proto !== null && !isBuiltinPrototype(proto);
    proto = Object.getPrototypeOf(proto)
  ) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (names.has(key) || !isExposedName(key)) continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, key);
      if (descriptor === undefined || typeof descriptor.value !== "function") continue;
      names.add(key);
      yield [key, descriptor.value];
    }
  }
}

/** Names never exposed, whatever defines them: JSON and conversion hooks. */
const NEVER_EXPOSED: ReadonlySet<string> = new Set([
  "constructor",
  "toJSON",
  "toString",
  "toLocaleString",
  "valueOf",
]);

function isExposedName(key: string): boolean {
  return key !== "" && !key.startsWith("_") && !NEVER_EXPOSED.has(key) &&
    !Object.hasOwn(Object.prototype, key);
}

/**
 * The prototypes of the runtime's own classes, and everything they inherit: those of every
 * constructor on `globalThis` (Deno's web classes included, which are written in JavaScript) and
 * of the intrinsics that no global names.
 */
let builtinPrototypes: ReadonlySet<object> | undefined;

function findBuiltinPrototypes(): ReadonlySet<object> {
  const found = new Set<object>();
  const add = (proto: unknown) => {
    for (
      let p = proto;
      p !== null && (typeof p === "object" || typeof p === "function") && !found.has(p);
      p = Object.getPrototypeOf(p)
    ) found.add(p as object);
  };
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    let value: unknown;
    try {
      // Deno defines many web classes as lazy getters (Headers, Response, streams...): read them.
      value = (globalThis as Record<string, unknown>)[name];
    } catch {
      continue;
    }
    if (typeof value === "function" && typeof value.prototype === "object") add(value.prototype);
  }
  // Node's classes that user classes extend, whose methods are the runtime's own.
  for (const type of [EventEmitter, Readable, Writable, Duplex, Transform, PassThrough]) {
    add(type.prototype);
  }
  add(Object.getPrototypeOf(async function () {}));
  add(Object.getPrototypeOf(function* () {}));
  add(Object.getPrototypeOf(async function* () {}));
  add(Object.getPrototypeOf(function* () {}).prototype);
  add(Object.getPrototypeOf(async function* () {}).prototype);
  add(Object.getPrototypeOf(Uint8Array));
  add(Object.getPrototypeOf(Uint8Array.prototype));
  add(Object.getPrototypeOf([][Symbol.iterator]()));
  add(Object.getPrototypeOf(new Map()[Symbol.iterator]()));
  add(Object.getPrototypeOf(new Set()[Symbol.iterator]()));
  add(Object.getPrototypeOf(""[Symbol.iterator]()));
  add(Object.getPrototypeOf(/a/[Symbol.matchAll]("")));
  return found;
}

/** Whether `proto` is the runtime's: a built-in prototype, or the prototype of a native class. */
function isBuiltinPrototype(proto: object): boolean {
  builtinPrototypes ??= findBuiltinPrototypes();
  if (builtinPrototypes.has(proto)) return true;
  const descriptor = Object.getOwnPropertyDescriptor(proto, "constructor");
  const ctor = descriptor && "value" in descriptor ? descriptor.value : undefined;
  return typeof ctor === "function" &&
    /\{\s*\[native code\]\s*\}$/.test(Function.prototype.toString.call(ctor));
}

function isPlainObject(value: unknown): value is object {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isModule(value: object): boolean {
  return Object.prototype.toString.call(value) === "[object Module]";
}

function isClass(fn: unknown): boolean {
  return /^class\b/.test(Function.prototype.toString.call(fn));
}

/**
 * Reads a function's parameter names from its source text. Destructured parameters get the name
 * `argN`; native and bound functions, whose source hides them, get `argN` for each of `length`.
 */
export function parameterNames(fn: AnyFunction): { params: string[]; rest: boolean } {
  const source = Function.prototype.toString.call(fn);
  const list = parameterList(source);
  if (list === undefined) {
    return { params: Array.from({ length: fn.length }, (_, i) => `arg${i}`), rest: false };
  }
  const params: string[] = [];
  let rest = false;
  for (const [i, part] of splitTopLevel(list).entries()) {
    let text = part.trim();
    if (text === "") continue;
    if (text.startsWith("...")) {
      rest = true;
      text = text.slice(3).trim();
    }
    params.push(/^[A-Za-z_$][\w$]*/.exec(text)?.[0] ?? `arg${i}`);
  }
  return { params, rest };
}

/** What by-name params and arity checks need to know of a function's parameters. */
export interface ParameterShape {
  /** Parameters before the first one with a default value or the rest parameter. */
  readonly required: number;
  /** Whether each parameter is destructured (`{ a, b }` or `[a, b]`). */
  readonly destructured: readonly boolean[];
}

/**
 * Reads which parameters are required and which are destructured from a function's source text.
 * TypeScript's `?` leaves no trace at run time: a parameter is optional only with a default value.
 * Native and bound functions, whose source hides them, require `length` params.
 */
export function parameterShape(fn: AnyFunction): ParameterShape {
  const list = parameterList(Function.prototype.toString.call(fn));
  if (list === undefined) {
    return { required: fn.length, destructured: Array.from({ length: fn.length }, () => false) };
  }
  let required = -1;
  const destructured: boolean[] = [];
  for (const part of splitTopLevel(list)) {
    const text = part.trim();
    if (text === "") continue;
    if (required < 0 && (text.startsWith("...") || hasTopLevelDefault(text))) {
      required = destructured.length;
    }
    destructured.push(/^(?:\.\.\.\s*)?[[{]/.test(text));
  }
  return { required: required < 0 ? destructured.length : required, destructured };
}

/** Whether a parameter's text has a default value: an `=` outside brackets and strings. */
function hasTopLevelDefault(text: string): boolean {
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"' || c === "'" || c === "`") i = skipString(text, i);
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    else if (c === "=" && depth === 0 && text[i + 1] !== ">") return true;
  }
  return false;
}

/** The text between a function's parameter parentheses, or the lone parameter of `x => ...`. */
function parameterList(source: string): string | undefined {
  if (/\[native code\]\s*\}$/.test(source)) return undefined;
  const arrow = /^(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(source);
  if (arrow) return arrow[1];
  const open = source.indexOf("(");
  if (open < 0) return undefined;
  const close = matchingParen(source, open);
  return close < 0 ? undefined : source.slice(open + 1, close);
}

function matchingParen(source: string, open: number): number {
  let depth = 0;
  for (let i = open; i < source.length; i++) {
    const c = source[i];
    if (c === '"' || c === "'" || c === "`") i = skipString(source, i);
    else if (c === "/" && source[i + 1] === "*") {
      i = source.indexOf("*/", i + 2) + 1 || source.length;
    } else if (c === "/" && source[i + 1] === "/") i = source.indexOf("\n", i) >>> 0;
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") {
      if (--depth === 0) return i;
    }
  }
  return -1;
}

function skipString(source: string, start: number): number {
  const quote = source[start];
  for (let i = start + 1; i < source.length; i++) {
    if (source[i] === "\\") i++;
    else if (source[i] === quote) return i;
  }
  return source.length;
}

function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let from = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === '"' || c === "'" || c === "`") i = skipString(list, i);
    else if (c === "/" && list[i + 1] === "*") i = list.indexOf("*/", i + 2) + 1 || list.length;
    else if (c === "/" && list[i + 1] === "/") i = list.indexOf("\n", i) >>> 0;
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    else if (c === "," && depth === 0) {
      parts.push(list.slice(from, i));
      from = i + 1;
    }
  }
  parts.push(list.slice(from));
  return parts.map((part) => part.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, ""));
}
