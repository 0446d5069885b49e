// What the CLI prints of what a server sent: results as JSON (rich values in a tagged form that
// any JSON tool reads) or as readable rich values, method signatures, and any text, with every
// character that could drive a terminal shown as a visible escape. A hostile server must not be
// able to retitle or clear the user's terminal, or draw fake output, through a result, an error
// message, its data or a method name.

import { DEFAULT_MAX_DEPTH } from "./_codec.ts";
import { jsonOnlyProblem, RichEncoder } from "./_rich.ts";

/**
 * Characters a terminal acts on rather than shows, or that reorder what it shows: C0 controls,
 * DEL, C1 controls (U+009B is CSI, like ESC [), the line and paragraph separators, and the bidi
 * marks, embeddings, overrides and isolates of "Trojan Source".
 */
// deno-lint-ignore no-control-regex -- matching control characters is the point
const UNSAFE = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

/**
 * The same without C0: JSON.stringify escapes C0 in strings already and writes none outside
 * them except the newlines and spaces of its own indentation.
 */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]/g;

const SHORT_ESCAPES = new Map([["\t", "\\t"], ["\n", "\\n"], ["\r", "\\r"]]);

/**
 * `text` for one line of a terminal: tab, newline and carriage return as `\t`, `\n`, `\r`, other
 * controls as `\x1b`, `\x9b`, and separators and bidi controls as `\u{202e}`. Backslashes stay
 * as they are: text that already reads `\x1b` is harmless, if ambiguous.
 */
export function escapeText(text: string): string {
  return text.replace(UNSAFE, (char) => {
    const code = char.charCodeAt(0);
    return SHORT_ESCAPES.get(char) ??
      (code <= 0xff ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u{${code.toString(16)}}`);
  });
}

/** JSON text with the unsafe characters JSON.stringify leaves raw as `\u009b`: still the same JSON. */
export function escapeJson(json: string): string {
  return json.replace(
    UNSAFE_IN_JSON,
    (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** `value` as JSON that a terminal shows as it is. */
function json(value: unknown, indent?: number): string | undefined {
  const text = JSON.stringify(value, null, indent);
  return text === undefined ? undefined : escapeJson(text);
}

/**
 * A result for a human: JSON when plain JSON carries it, else JSON-like text in which rich values
 * read as themselves: `12345678901234567890n`, `Date(2024-01-01T00:00:00.000Z)`,
 * `Uint8Array(1048576 bytes) <00 01 02 ... ff>`, `Map { "a" => 1 }`, `Set [1, 2]`, `undefined`,
 * `NaN`. Safe for a terminal: no control or bidi character is left raw, and JSON stays JSON.
 *
 * @param value The value, as the client decoded it.
 * @param indent Spaces per level, or none for one line.
 */
export function formatValue(value: unknown, indent?: number): string {
  if (jsonOnlyProblem(value, DEFAULT_MAX_DEPTH, true) === undefined) {
    return json(value, indent) ?? "null";
  }
  return readable(value, indent === undefined ? "" : "\n", indent ?? 0, 0);
}

/**
 * `value` as the exact JSON of the wire, rich values as their tags (PROTOCOL.md section 8), with
 * the characters a terminal would act on escaped as JSON escapes.
 */
export function rawJson(value: unknown): string {
  return json(new RichEncoder(DEFAULT_MAX_DEPTH).encode(value)) ?? "null";
}

/**
 * The keys that mark a rich value in {@linkcode toJson}'s output. A data object that has one of
 * them is printed inside `{"$object": ...}`, so that nothing the server sends reads as a tag.
 */
const TAG_KEYS: ReadonlySet<string> = new Set([
  "$bigint",
  "$bytes",
  "$date",
  "$map",
  "$set",
  "$undefined",
  "$number",
  "$object",
]);

/**
 * `value` as plain JSON that any JSON tool reads, rich values as one-key objects:
 * `{"$bigint":"12"}`, `{"$bytes":"AQID"}` (base64; other typed arrays and ArrayBuffer add
 * `"type":"Float64Array"`), `{"$date":"2024-01-01T00:00:00.000Z"}` (`null` for an invalid date),
 * `{"$map":[[key,value],...]}`, `{"$set":[...]}`, `{"$undefined":true}` and
 * `{"$number":"NaN"}` (also `"Infinity"`, `"-Infinity"`, `"-0"`). A data object with one of these
 * keys comes wrapped as `{"$object":{...}}`. A top-level `undefined` (a function that returns
 * nothing) is `null`. Plain JSON prints as itself, and no control or bidi character is left raw.
 *
 * @param value The value, as the client decoded it.
 * @param indent Spaces per level, or none for one line.
 */
export function toJson(value: unknown, indent?: number): string {
  if (value === undefined) return "null";
  return json(tagged(value, DEFAULT_MAX_DEPTH), indent) ?? "null";
}

function tagged(value: unknown, depth: number): unknown {
  switch (typeof value) {
    case "string":
    case "boolean":
      return value;
    case "number":
      if (!Number.isFinite(value)) return { $number: String(value) };
      return Object.is(value, -0) ? { $number: "-0" } : value;
    case "bigint":
      return { $bigint: String(value) };
    case "object": {
      if (value === null) return null;
      // The client's decoder bounds nesting already; this guards values from anywhere else.
      if (depth <= 0) throw new RangeError("Cannot print value: it nests too deeply");
      const inner = (item: unknown) => tagged(item, depth - 1);
      if (value instanceof Date) {
        return { $date: Number.isNaN(value.getTime()) ? null : value.toISOString() };
      }
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return taggedBytes(value);
      if (value instanceof Map) {
        return { $map: Array.from(value, ([k, v]) => [inner(k), inner(v)]) };
      }
      if (value instanceof Set) return { $set: Array.from(value, inner) };
      if (Array.isArray(value)) return Array.from(value, inner);
      // Null prototype: a "__proto__" key from the wire stays a key.
      const out: Record<string, unknown> = Object.create(null);
      let escape = false;
      for (const [key, item] of Object.entries(value)) {
        if (typeof item === "function" || typeof item === "symbol") continue;
        if (TAG_KEYS.has(key)) escape = true;
        out[key] = inner(item);
      }
      return escape ? { $object: out } : out;
    }
    case "undefined":
      return { $undefined: true };
    default:
      return null; // functions and symbols, which no decoder makes
  }
}

function taggedBytes(value: ArrayBuffer | ArrayBufferView): Record<string, string> {
  const bytes = value instanceof ArrayBuffer
    ? new Uint8Array(value)
    : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  let binary = "";
  // In slices: String.fromCharCode takes its arguments on the stack.
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  const type = value.constructor.name;
  return type === "Uint8Array" ? { $bytes: btoa(binary) } : { $bytes: btoa(binary), type };
}

/** Bytes shown of a binary value, in hex: a line's worth; the length says how many there are. */
export const BYTES_PREVIEW = 16;

function readable(value: unknown, newline: string, indent: number, level: number): string {
  const pad = (n: number) => newline === "" ? "" : newline + " ".repeat(indent * n);
  const list = (open: string, items: string[], close: string) =>
    items.length === 0
      ? `${open}${close}`
      : `${open}${items.map((item) => pad(level + 1) + item).join(newline === "" ? ", " : ",")}${
        pad(level)
      }${close}`;
  const inner = (v: unknown) => readable(v, newline, indent, level + 1);
  switch (typeof value) {
    case "bigint":
      return `${value}n`;
    case "undefined":
      return "undefined";
    case "number":
      return Object.is(value, -0) ? "-0" : String(value);
    case "string":
    case "boolean":
      return json(value)!;
    case "object": {
      if (value === null) return "null";
      if (value instanceof Date) {
        return Number.isNaN(value.getTime()) ? "Date(invalid)" : `Date(${value.toISOString()})`;
      }
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) return bytesPreview(value);
      if (value instanceof Map) {
        return list("Map {", [...value].map(([k, v]) => `${inner(k)} => ${inner(v)}`), "}");
      }
      if (value instanceof Set) return list("Set [", [...value].map(inner), "]");
      if (Array.isArray(value)) return list("[", value.map(inner), "]");
      const entries = Object.entries(value).map(([k, v]) => `${json(k)}: ${inner(v)}`);
      return list("{", entries, "}");
    }
    default:
      return escapeText(String(value));
  }
}

/** `Uint8Array(3 bytes) <01 02 03>`: the type, the length and the first bytes in hex. */
function bytesPreview(value: ArrayBuffer | ArrayBufferView): string {
  const bytes = value instanceof ArrayBuffer
    ? new Uint8Array(value)
    : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  const hex = [...bytes.subarray(0, BYTES_PREVIEW)].map((b) => b.toString(16).padStart(2, "0"));
  const more = bytes.length > BYTES_PREVIEW ? " ..." : "";
  return `${escapeText(value.constructor.name)}(${bytes.length} bytes) <${hex.join(" ")}${more}>`;
}

/**
 * One method of an `rpc.discover` document as a signature, escaped for a terminal: `add(a, b)`,
 * `greet(name, greeting?)` for an optional parameter, `sum(...xs)` for a rest parameter (marked
 * `"x-rest": true`). Names that are not strings print as values; a missing name as `undefined`.
 */
export function formatMethod(method: unknown): string {
  return escapeText(`${text(own(method, "name"))}(${params(method).map(paramText).join(", ")})`);
}

/**
 * One method of an `rpc.discover` document in full, for `describe`: its signature, its summary
 * and description when it has them, then one line per parameter saying whether it is required,
 * optional or a rest parameter. Escaped for a terminal.
 */
export function describeMethod(method: unknown): string {
  const list = params(method);
  const lines = [formatMethod(method)];
  for (const key of ["summary", "description"]) {
    const value = own(method, key);
    if (typeof value === "string" && value !== "") lines.push(`  ${escapeText(value)}`);
  }
  if (list.length === 0) lines.push("  no parameters");
  const names = list.map((param) => escapeText(paramName(param)));
  const width = Math.max(...names.map((name) => name.length));
  for (const [i, param] of list.entries()) {
    const kind = isRest(param)
      ? "rest: takes any number of values, by position"
      : isOptional(param)
      ? "optional"
      : "required";
    lines.push(`  ${names[i]!.padEnd(width)}  ${kind}`);
  }
  return lines.join("\n");
}

function params(method: unknown): unknown[] {
  const list = own(method, "params");
  return Array.isArray(list) ? list : [];
}

/** `name`, or `...name` for a rest parameter. */
function paramName(param: unknown): string {
  const name = text(own(param, "name"));
  return isRest(param) ? `...${name}` : name;
}

/** The parameter as a signature shows it: `name`, `name?` when optional, `...name`. */
function paramText(param: unknown): string {
  return !isRest(param) && isOptional(param) ? `${paramName(param)}?` : paramName(param);
}

function isRest(param: unknown): boolean {
  return own(param, "x-rest") === true;
}

/** Optional when the server says `required: false`; a server that does not say is taken at its word. */
function isOptional(param: unknown): boolean {
  return own(param, "required") === false;
}

/** A member of a value from the wire, read from the value itself, never from its prototype. */
function own(value: unknown, key: string): unknown {
  return value !== null && typeof value === "object" && Object.hasOwn(value, key)
    ? (value as Record<string, unknown>)[key]
    : undefined;
}

function text(value: unknown): string {
  if (value === undefined) return "undefined";
  return typeof value === "string" ? value : formatValue(value);
}
