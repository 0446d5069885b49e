// Rich values, encoding: which values plain JSON would change, and the encoder of tagged JSON plus
// raw byte sections (PROTOCOL.md section 8).

import {
  binaryStart,
  DEFAULT_MAX_BIGINT_DIGITS,
  encoder,
  EXTENDED_HEADER_BYTES,
  EXTENDED_MARKER,
  TAG,
  TYPED_ARRAYS,
} from "./_rich_tags.ts";

/** A value that cannot be sent at all (a function, a symbol, a WeakMap...). */
export class UnsendableError extends TypeError {
  /** `what` names the value, capitalised: `"A WeakMap"`. */
  constructor(what: string) {
    super(`${what} cannot be sent`);
    this.name = "UnsendableError";
  }
}

/**
 * The name of the first value in `value` that needs the extension (`"Map"`, `"Uint8Array"`,
 * `"BigInt"`, `"NaN"`...), or `undefined` when plain JSON carries it.
 *
 * `strict` (a peer with rich values) counts everything JSON.stringify would change: `undefined`
 * members, `-0` and `Date` too. Otherwise (a plain peer) JSON's own conversions stand: a `Date` goes
 * as its ISO text (its toJSON), `undefined` members are left out (`null` in arrays), `-0` is 0; what
 * JSON would mangle (Map, Set, bytes, BigInt, NaN, ±Infinity) is a problem. A top-level
 * `undefined` is plain either way: it is sent as `null`, the result of a function that returns
 * nothing.
 *
 * @throws {RangeError} When the value nests deeper than `maxDepth` (a cycle does too).
 */
export function jsonOnlyProblem(
  value: unknown,
  maxDepth: number,
  strict: boolean,
): string | undefined {
  return value === undefined ? undefined : problem(value, maxDepth, strict);
}

function problem(value: unknown, depth: number, strict: boolean): string | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      if (Number.isFinite(value)) return strict && value === 0 && 1 / value < 0 ? "-0" : undefined;
      return String(value);
    case "object": {
      if (value === null) return undefined;
      if (--depth < 0) {
        throw new RangeError("Cannot send value: it nests too deeply or is circular");
      }
      if (Array.isArray(value)) {
        for (let i = 0; i < value.length; i++) {
          const item = value[i];
          if (item === null || (typeof item !== "object" && plainPrimitive(item, strict))) continue;
          const found = item === undefined ? "undefined" : problem(item, depth, strict);
          if (found !== undefined) return found;
        }
        return undefined;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        const special = specialObject(value);
        if (special !== undefined) return special === "Date" && !strict ? undefined : special;
        if (typeof (value as { toJSON?: unknown }).toJSON === "function") return undefined;
        const primitive = unboxed(value);
        if (primitive !== NOT_BOXED) return problem(primitive, depth, strict);
      }
      // for-in without hasOwn: an inherited enumerable key can only cause a false alarm.
      for (const key in value) {
        const item = (value as Record<string, unknown>)[key];
        if (item === null || (typeof item !== "object" && plainPrimitive(item, strict))) continue;
        // Methods and symbols are left out, as JSON.stringify and the rich encoder leave them.
        if (typeof item === "function" || typeof item === "symbol") continue;
        const found = item === undefined ? "undefined" : problem(item, depth, strict);
        if (found !== undefined) return found;
      }
      return undefined;
    }
    case "bigint":
      return "BigInt";
    case "undefined":
      return strict ? "undefined" : undefined;
    default:
      return typeof value; // function, symbol
  }
}

/** Whether a non-object value is plain JSON; `undefined` and `-0` only for a plain peer. */
function plainPrimitive(value: unknown, strict: boolean): boolean {
  switch (typeof value) {
    case "string":
    case "boolean":
      return true;
    case "number":
      return Number.isFinite(value) && !(strict && value === 0 && 1 / value < 0);
    case "undefined":
      return !strict;
    default:
      return false;
  }
}

/**
 * The name of a built-in object that JSON cannot carry, or `undefined` for data objects. A
 * SharedArrayBuffer is one: JSON makes it `{}`, and no peer can share its memory. Sending a copy of
 * its bytes as an ArrayBuffer would change its type, so it is refused (as unsendable); a
 * Uint8Array over it sends its bytes as they are when the message is encoded.
 */
function specialObject(value: object): string | undefined {
  const proto = Object.getPrototypeOf(value);
  if (proto === Object.prototype || proto === null) return undefined;
  if (value instanceof Date) return "Date";
  if (value instanceof Map) return "Map";
  if (value instanceof Set) return "Set";
  if (ArrayBuffer.isView(value)) return value.constructor.name;
  if (value instanceof ArrayBuffer) return "ArrayBuffer";
  if (
    value instanceof RegExp || value instanceof Error || value instanceof Promise ||
    value instanceof WeakMap || value instanceof WeakSet || value instanceof SharedArrayBuffer
  ) {
    return value.constructor.name;
  }
  return undefined; // an instance of the program's own class: its own fields, as JSON does
}

/** What `unboxed` returns for an object that is not a boxed primitive. */
const NOT_BOXED: unique symbol = Symbol("not boxed");

/**
 * The primitive a Number, String, Boolean, BigInt or Symbol object holds, unboxed as JSON.stringify
 * unboxes it (ToNumber, ToString, or the value itself), or NOT_BOXED. Both encoders send a boxed
 * primitive as the primitive, so `new Number(5)` is 5 alone and beside a Map alike; a boxed NaN or
 * BigInt needs the extension as the primitive does, and a boxed Symbol cannot be sent.
 */
function unboxed(value: object): unknown {
  // instanceof first, as cheap as it gets for the program's own classes; then the internal slot,
  // as JSON.stringify reads it: an object that merely inherits from Number.prototype is no box.
  if (value instanceof Number && boxes(Number.prototype.valueOf, value)) return Number(value);
  if (value instanceof String && boxes(String.prototype.valueOf, value)) return String(value);
  if (value instanceof Boolean && boxes(Boolean.prototype.valueOf, value)) {
    return Boolean.prototype.valueOf.call(value);
  }
  if (value instanceof BigInt && boxes(BigInt.prototype.valueOf, value)) {
    return BigInt.prototype.valueOf.call(value);
  }
  if (value instanceof Symbol && boxes(Symbol.prototype.valueOf, value)) {
    return Symbol.prototype.valueOf.call(value);
  }
  return NOT_BOXED;
}

/** Whether `value` has the internal slot that `valueOf` (a built-in's) reads. */
function boxes(valueOf: (this: unknown) => unknown, value: object): boolean {
  try {
    valueOf.call(value);
    return true;
  } catch {
    return false;
  }
}

/**
 * Encodes values into tagged JSON, collecting their bytes as sections. Each byte value gets a
 * section of its own, even one that appears twice: receivers refuse sections that overlap, so
 * that a frame cannot decode into more bytes than it carries.
 */
export class RichEncoder {
  /** The byte sections, in order. */
  readonly sections: Uint8Array[] = [];
  #size = 0;
  #maxDepth: number;
  #maxBigIntDigits: number;

  /**
   * `maxBigIntDigits` bounds BigInts as receivers do (see {@linkcode DEFAULT_MAX_BIGINT_DIGITS}),
   * so that a BigInt no peer would accept fails here, with a clear error, and is never printed.
   */
  constructor(maxDepth: number, maxBigIntDigits: number = DEFAULT_MAX_BIGINT_DIGITS) {
    this.#maxDepth = maxDepth;
    this.#maxBigIntDigits = maxBigIntDigits;
  }

  /** The total size of the sections. */
  get size(): number {
    return this.#size;
  }

  /** A JSON-able form of `value`: plain parts as they are, the rest tagged. */
  encode(value: unknown): unknown {
    return this.#encode(value, this.#maxDepth);
  }

  #encode(value: unknown, depth: number): unknown {
    switch (typeof value) {
      case "string":
      case "boolean":
        return value;
      case "number":
        if (Number.isFinite(value) && !(value === 0 && 1 / value < 0)) return value;
        return { [TAG]: "number", v: Object.is(value, -0) ? "-0" : String(value) };
      case "bigint":
        if (
          Number.isSafeInteger(this.#maxBigIntDigits) &&
          (value < 0n ? -value : value) >= tenToThe(this.#maxBigIntDigits)
        ) {
          throw new RangeError(
            `Cannot send value: a BigInt exceeds the limit of ${this.#maxBigIntDigits} digits`,
          );
        }
        return { [TAG]: "bigint", v: value.toString() };
      case "undefined":
        return { [TAG]: "undefined" };
      case "object":
        if (value === null) return null;
        if (--depth < 0) {
          throw new RangeError("Cannot send value: it nests too deeply or is circular");
        }
        return this.#encodeObject(value, depth);
      default:
        throw new UnsendableError(`A ${typeof value}`);
    }
  }

  #encodeObject(value: object, depth: number): unknown {
    if (Array.isArray(value)) {
      const out = new Array(value.length);
      for (let i = 0; i < value.length; i++) out[i] = this.#encode(value[i], depth);
      return out;
    }
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) {
      if (value instanceof Date) {
        const time = value.getTime();
        return { [TAG]: "date", v: Number.isNaN(time) ? null : time };
      }
      if (value instanceof Map) {
        const entries = [];
        for (const [k, v] of value) entries.push([this.#encode(k, depth), this.#encode(v, depth)]);
        return { [TAG]: "map", v: entries };
      }
      if (value instanceof Set) {
        const items = [];
        for (const item of value) items.push(this.#encode(item, depth));
        return { [TAG]: "set", v: items };
      }
      if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return this.#bytes(value);
      const special = specialObject(value);
      if (special !== undefined) throw new UnsendableError(`A ${special}`);
      const toJSON = (value as { toJSON?: unknown }).toJSON;
      if (typeof toJSON === "function") return this.#encode(toJSON.call(value), depth);
      const primitive = unboxed(value);
      if (primitive !== NOT_BOXED) return this.#encode(primitive, depth);
    }
    const out: Record<string, unknown> = {};
    let escaped = false;
    for (const key in value) {
      if (!Object.hasOwn(value, key)) continue;
      const item = (value as Record<string, unknown>)[key];
      if (typeof item === "function" || typeof item === "symbol") continue; // as JSON does
      if (key === TAG) escaped = true;
      // defineProperty: a key named __proto__ stays an own key and never sets a prototype.
      Object.defineProperty(out, key, {
        value: this.#encode(item, depth),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return escaped ? { [TAG]: "object", v: out } : out;
  }

  #bytes(value: ArrayBufferView | ArrayBuffer): unknown {
    const kind = value instanceof ArrayBuffer
      ? "ArrayBuffer"
      : value instanceof Uint8Array
      ? undefined
      : value instanceof DataView
      ? "DataView"
      : value.constructor.name;
    if (
      kind !== undefined && kind !== "ArrayBuffer" && kind !== "DataView" && !TYPED_ARRAYS.has(kind)
    ) {
      throw new UnsendableError(`A ${kind}`);
    }
    const bytes = value instanceof ArrayBuffer
      ? new Uint8Array(value)
      : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    // Sections start at multiples of 8, so that a receiver can view any typed array in place.
    const padding = (8 - this.#size % 8) % 8;
    if (padding > 0) this.sections.push(new Uint8Array(padding));
    const offset = this.#size + padding;
    this.sections.push(bytes);
    this.#size = offset + bytes.length;
    return kind === undefined
      ? { [TAG]: "bytes", o: offset, n: bytes.length }
      : { [TAG]: "bytes", o: offset, n: bytes.length, k: kind };
  }
}

/** The last power of ten asked for: every encoder of a process asks for the same one. */
let powerOfTen: { digits: number; value: bigint } | undefined;

/** 10 ** `digits`: the least BigInt with `digits + 1` digits. */
function tenToThe(digits: number): bigint {
  if (powerOfTen?.digits !== digits) powerOfTen = { digits, value: 10n ** BigInt(digits) };
  return powerOfTen.value;
}

/**
 * The parts of an extended frame's payload: the marker, the JSON part's length, the JSON part and
 * padding to a multiple of 8 in one buffer, then the sections as they are (no copy here).
 */
export function extendedParts(json: string, sections: readonly Uint8Array[]): Uint8Array[] {
  const text = encoder.encode(json);
  const head = new Uint8Array(binaryStart(text.length));
  head[0] = EXTENDED_MARKER;
  new DataView(head.buffer).setUint32(1, text.length);
  head.set(text, EXTENDED_HEADER_BYTES);
  return [head, ...sections];
}
