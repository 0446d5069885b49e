// What the CLI prints of what a server sent: results as JSON or as readable rich values, method
// lines, and any text, with every character that could drive a terminal shown as a visible
// escape. A hostile server must not be able to retitle or clear the user's terminal, or draw
// fake output, through a result, an error message, its data or a method name.

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
function escapeJson(json: string): string {
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
 * One method of an `rpc.discover` document as `name(a, b)`, escaped for a terminal. Names that
 * are not strings print as values; a missing name prints as `undefined`.
 */
export function formatMethod(method: unknown): string {
  const params = own(method, "params");
  const names = Array.isArray(params) ? params.map((param) => text(own(param, "name"))) : [];
  return escapeText(`${text(own(method, "name"))}(${names.join(", ")})`);
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
