// Rich values: what plain JSON cannot carry faithfully (bytes, Date, BigInt, Map, Set, undefined,
// NaN, ±Infinity, -0) as tagged JSON plus raw byte sections, for peers that announced the
// extension. PROTOCOL.md section 8 is the specification; this file is its implementation.
//
// A message whose values are all plain JSON never comes here: it goes out as standard JSON-RPC,
// byte for byte. `jsonOnlyProblem` tells the two apart.

/** The first byte of an extended frame's payload: JSON text never starts with it. */
export const EXTENDED_MARKER = 0x00;

/** The key of a tagged value. A user object with this key is escaped, so nothing collides. */
const TAG = "$t";

/** Marker, then the JSON part's length (u32, big-endian). */
const EXTENDED_HEADER_BYTES = 5;

import { parseJson as parseGuarded } from "./_json.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Typed arrays that can travel, by the name the tag carries. */
const TYPED_ARRAYS = new Map<
  string,
  { new (b: ArrayBuffer, o: number, n: number): ArrayBufferView; BYTES_PER_ELEMENT: number }
>([
  ["Int8Array", Int8Array],
  ["Uint8ClampedArray", Uint8ClampedArray],
  ["Int16Array", Int16Array],
  ["Uint16Array", Uint16Array],
  ["Int32Array", Int32Array],
  ["Uint32Array", Uint32Array],
  ["Float32Array", Float32Array],
  ["Float64Array", Float64Array],
  ["BigInt64Array", BigInt64Array],
  ["BigUint64Array", BigUint64Array],
]);

/** A value that cannot be sent at all (a function, a symbol, a WeakMap...). */
export class UnsendableError extends TypeError {
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

/** The name of a built-in object that JSON cannot carry, or `undefined` for data objects. */
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
    value instanceof WeakMap || value instanceof WeakSet
  ) {
    return value.constructor.name;
  }
  return undefined; // an instance of the program's own class: its own fields, as JSON does
}

/** Encodes values into tagged JSON, collecting their bytes as sections. */
export class RichEncoder {
  /** The byte sections, in order. */
  readonly sections: Uint8Array[] = [];
  #size = 0;
  #maxDepth: number;
  #offsets = new Map<ArrayBufferView | ArrayBuffer, number>();

  constructor(maxDepth: number) {
    this.#maxDepth = maxDepth;
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
    let offset = this.#offsets.get(value);
    const bytes = value instanceof ArrayBuffer
      ? new Uint8Array(value)
      : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
    if (offset === undefined) {
      // Sections start at multiples of 8, so that a receiver can view any typed array in place.
      const padding = (8 - this.#size % 8) % 8;
      if (padding > 0) this.sections.push(new Uint8Array(padding));
      offset = this.#size + padding;
      this.sections.push(bytes);
      this.#size = offset + bytes.length;
      this.#offsets.set(value, offset);
    }
    return kind === undefined
      ? { [TAG]: "bytes", o: offset, n: bytes.length }
      : { [TAG]: "bytes", o: offset, n: bytes.length, k: kind };
  }
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

/** The JSON part of an extended frame, as text, from the first of its parts. */
export function extendedJsonText(head: Uint8Array): string {
  const { json } = splitExtended(head);
  return new TextDecoder().decode(json);
}

/** Where the binary part starts: after the JSON part, padded to a multiple of 8. */
function binaryStart(jsonLength: number): number {
  return Math.ceil((EXTENDED_HEADER_BYTES + jsonLength) / 8) * 8;
}

/** Why an extended frame could not be decoded. */
export class ExtendedFrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExtendedFrameError";
  }
}

/**
 * Splits an extended payload into its JSON text and its binary part. The binary part is a view of
 * `payload`.
 */
export function splitExtended(payload: Uint8Array): { json: Uint8Array; binary: Uint8Array } {
  if (payload.length < EXTENDED_HEADER_BYTES) {
    throw new ExtendedFrameError("the extended frame is shorter than its header");
  }
  const length = new DataView(payload.buffer, payload.byteOffset).getUint32(1);
  if (EXTENDED_HEADER_BYTES + length > payload.length) {
    throw new ExtendedFrameError(`the JSON part's length ${length} exceeds the frame`);
  }
  const start = Math.min(binaryStart(length), payload.length);
  return {
    json: payload.subarray(EXTENDED_HEADER_BYTES, EXTENDED_HEADER_BYTES + length),
    binary: payload.subarray(start),
  };
}

/** Decodes the JSON text of an extended frame (the depth was checked before). */
export function parseJson(bytes: Uint8Array): unknown {
  return parseGuarded(decoder.decode(bytes));
}

/**
 * Replaces the tagged values in a parsed extended message with the values they stand for, in
 * place. Bytes are views of `binary` when `keep` (the frame's buffer is the frame's own, so views
 * stay valid and aligned), else copies.
 *
 * @throws {ExtendedFrameError} On an unknown tag or a section outside the binary part.
 */
export function revive(value: unknown, binary: Uint8Array, keep: boolean): unknown {
  if (value === null || typeof value !== "object") return value;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = revive(value[i], binary, keep);
    return value;
  }
  const record = value as Record<string, unknown>;
  if (Object.hasOwn(record, TAG)) return reviveTagged(record, binary, keep);
  for (const key of Object.keys(record)) {
    const item = record[key];
    if (item === null || typeof item !== "object") continue;
    Object.defineProperty(record, key, {
      value: revive(item, binary, keep),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return record;
}

function reviveTagged(tagged: Record<string, unknown>, binary: Uint8Array, keep: boolean): unknown {
  const tag = tagged[TAG];
  const v = tagged.v;
  switch (tag) {
    case "undefined":
      return undefined;
    case "number":
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      if (v === "-0") return -0;
      break;
    case "bigint":
      if (typeof v === "string" && /^-?\d+$/.test(v)) return BigInt(v);
      break;
    case "date":
      if (v === null) return new Date(NaN);
      if (typeof v === "number") return new Date(v);
      break;
    case "map":
      if (Array.isArray(v)) {
        const map = new Map();
        for (const entry of v) {
          if (!Array.isArray(entry) || entry.length !== 2) {
            throw new ExtendedFrameError("a map entry is not a [key, value] pair");
          }
          map.set(revive(entry[0], binary, keep), revive(entry[1], binary, keep));
        }
        return map;
      }
      break;
    case "set":
      if (Array.isArray(v)) return new Set(v.map((item) => revive(item, binary, keep)));
      break;
    case "object":
      if (v !== null && typeof v === "object" && !Array.isArray(v)) {
        // The escaped object's keys are data, "$t" included: revive only its values.
        const record = v as Record<string, unknown>;
        for (const key of Object.keys(record)) {
          Object.defineProperty(record, key, {
            value: revive(record[key], binary, keep),
            enumerable: true,
            writable: true,
            configurable: true,
          });
        }
        return record;
      }
      break;
    case "bytes":
      return reviveBytes(tagged, binary, keep);
  }
  throw new ExtendedFrameError(`the tagged value ${JSON.stringify(tag)} is not valid`);
}

function reviveBytes(tagged: Record<string, unknown>, binary: Uint8Array, keep: boolean): unknown {
  const { o, n, k } = tagged;
  if (
    !Number.isSafeInteger(o) || !Number.isSafeInteger(n) || (o as number) < 0 ||
    (n as number) < 0 || (o as number) + (n as number) > binary.length
  ) {
    throw new ExtendedFrameError("a byte section lies outside the frame");
  }
  const start = binary.byteOffset + (o as number);
  const length = n as number;
  if (k === undefined) {
    return keep
      ? new Uint8Array(binary.buffer, start, length)
      : binary.slice(o as number, (o as number) + length);
  }
  if (k === "ArrayBuffer") return binary.buffer.slice(start, start + length);
  if (k === "DataView") {
    return new DataView(
      keep ? binary.buffer : binary.buffer.slice(start, start + length),
      keep ? start : 0,
      length,
    );
  }
  const type = typeof k === "string" ? TYPED_ARRAYS.get(k) : undefined;
  if (type === undefined) throw new ExtendedFrameError(`${JSON.stringify(k)} is not a typed array`);
  if (length % type.BYTES_PER_ELEMENT !== 0) {
    throw new ExtendedFrameError(`a ${k} section is not a whole number of elements`);
  }
  const count = length / type.BYTES_PER_ELEMENT;
  if (keep && start % type.BYTES_PER_ELEMENT === 0) {
    return new type(binary.buffer as ArrayBuffer, start, count);
  }
  return new type(binary.buffer.slice(start, start + length) as ArrayBuffer, 0, count);
}
