// Frames to JSON-RPC 2.0 messages and back: a Codec per connection, made once with its settings
// (rich values, depth), with methods for requests, results and errors. Decoding is here, making
// messages in _outgoing.ts. Every outgoing message carries the id it answers, so that one too
// large to send can still be answered by an error. The server and the client share it.

import { Buffer } from "node:buffer";
import { ErrorCode } from "./errors.ts";
import { parseJson } from "./_json.ts";
import {
  type DecodeLimits,
  DEFAULT_DECODE_LIMITS,
  EXTENDED_MARKER,
  ExtendedFrameError,
  parseJson as parseExtendedJson,
  revive,
  splitExtended,
} from "./_rich.ts";
import { DEFAULT_MAX_DEPTH, DEFAULT_MAX_JSON_VALUES } from "./_limits.ts";
import {
  errorMessage,
  exceedsDepth,
  type Outgoing,
  requestMessage,
  resultMessage,
} from "./_outgoing.ts";

export {
  type Encoded,
  errorText,
  exceedsDepth,
  isPlainJson,
  NotPlainError,
  Outgoing,
  resultText,
} from "./_outgoing.ts";
export { DEFAULT_MAX_DEPTH };

/** A JSON-RPC id: the spec allows a string, a number or null. */
export type Id = string | number | null;

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Why a frame could not be decoded; `code` is the JSON-RPC error code to answer with. */
export class DecodeError extends Error {
  readonly code: number;
  /** The JSON text of the message's id when it could be read, else `"null"`. */
  readonly idText: string;
  /** The limit the frame broke (`"max_depth"`, `"max_json_values"`), if that was why. */
  readonly limit: string | undefined;
  constructor(code: number, message: string, idText = "null", limit?: string) {
    super(message);
    this.name = "DecodeError";
    this.code = code;
    this.idText = idText;
    this.limit = limit;
  }
}

/**
 * Decodes a frame's UTF-8 JSON. JSON.parse makes `__proto__` an own data property, so decoding
 * alone cannot pollute a prototype. Nesting deeper than `maxDepth` is refused, so that no handler
 * or encoder recurses into it: V8 parses deep JSON without recursion, and the depth is then
 * measured by a walk that stops at `maxDepth` levels (3 µs for a 7 KB message).
 */
export function decodeFrame(
  frame: Uint8Array,
  maxDepth: number,
  maxJsonValues: number = DEFAULT_MAX_JSON_VALUES,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): unknown {
  if (frame[0] === EXTENDED_MARKER) return decodeExtended(frame, maxDepth, maxJsonValues, limits);
  checkJsonValues(frame, maxJsonValues, maxDepth);
  let text: string | undefined = frame.length <= ASCII_FAST_BYTES ? asciiText(frame) : undefined;
  try {
    text ??= decoder.decode(frame);
  } catch {
    throw new DecodeError(ErrorCode.ParseError, "Parse error: the frame is not valid UTF-8");
  }
  let value: unknown;
  try {
    value = parseJson(text);
  } catch (error) {
    throw new DecodeError(
      ErrorCode.ParseError,
      `Parse error: ${error instanceof Error ? error.message : "invalid JSON"}`,
    );
  }
  checkDepth(frame, value, maxDepth);
  if (hasInexactId(value)) recordIdTexts(text, value);
  return value;
}

/** The exact JSON text of ids that a JS number cannot hold (64-bit integers), by request object. */
const RAW_IDS = new WeakMap<object, string>();

/**
 * The JSON text of a request's id, to answer with: exactly as the peer wrote it when a number
 * would change it (an id of 9223372036854775807 is answered as that, not 9223372036854776000).
 */
export function idTextOf(request: { id?: unknown }): string {
  const id = request.id;
  if (typeof id === "number") {
    // Only ids a number changed were recorded: a safe integer needs no look-up.
    return Number.isSafeInteger(id) ? String(id) : RAW_IDS.get(request) ?? String(id);
  }
  return id === undefined ? "null" : JSON.stringify(id);
}

function hasInexactId(value: unknown): boolean {
  if (Array.isArray(value)) return value.some((item) => inexact(item));
  return inexact(value);
}

function inexact(message: unknown): boolean {
  if (message === null || typeof message !== "object") return false;
  const id = (message as { id?: unknown }).id;
  return typeof id === "number" && !Number.isSafeInteger(id);
}

/** Parses `text` again for the source text of its ids: rare, only for ids a number changed. */
function recordIdTexts(text: string, value: unknown): void {
  const sources = new Map<object, string>();
  const again = JSON.parse(
    text,
    function (this: object, key, parsed, context?: { source?: string }) {
      if (key === "id" && typeof parsed === "number" && context?.source !== undefined) {
        sources.set(this, context.source);
      }
      return parsed;
    },
  );
  // The holders above belong to the second parse: match them to `value` by position.
  const pairs: [unknown, unknown][] = Array.isArray(value) && Array.isArray(again)
    ? value.map((item, i) => [item, again[i]])
    : [[value, again]];
  for (const [mine, theirs] of pairs) {
    const source = sources.get(theirs as object);
    if (source !== undefined && inexact(mine)) RAW_IDS.set(mine as object, source);
  }
}

/**
 * Decodes an extended frame (rich values). Its bytes are views of the frame when the frame owns its
 * buffer (large frames are read into one of their own), else copies: a small frame is a view of
 * the connection's read buffer, which the next read overwrites.
 */
function decodeExtended(
  frame: Uint8Array,
  maxDepth: number,
  maxJsonValues: number,
  limits: DecodeLimits,
): unknown {
  try {
    const { json, binary } = splitExtended(frame);
    checkJsonValues(json, maxJsonValues, maxDepth);
    const value = parseExtendedJson(json);
    checkDepth(json, value, maxDepth);
    const owned = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
    return revive(value, binary, owned, limits);
  } catch (error) {
    if (error instanceof DecodeError) throw error;
    if (error instanceof ExtendedFrameError && error.limit !== undefined) {
      // Well-formed but too costly: the request is refused, not unreadable.
      const limit = /BigInt/.test(error.message) ? "max_bigint_digits" : "max_decoded_bytes";
      throw new DecodeError(
        ErrorCode.InvalidRequest,
        `Invalid Request: ${error.message}`,
        "null",
        limit,
      );
    }
    const why = error instanceof ExtendedFrameError || error instanceof SyntaxError
      ? error.message
      : error instanceof TypeError
      ? "the JSON part is not valid UTF-8"
      : String(error);
    throw new DecodeError(ErrorCode.ParseError, `Parse error: invalid extended frame: ${why}`);
  }
}

/**
 * Refuses JSON text with more than `max` structural tokens (`{`, `[`, `:` and `,` outside strings):
 * what parsing costs grows with them, not with the bytes (a 16 MiB string parses in 50 ms, 16 MiB
 * of `[{},{},...]` in 2.7 s). Text no longer than `max` bytes cannot exceed it and is not scanned.
 * The same pass refuses nesting deeper than `maxDepth`, and reads a top-level `"id"` on the way so
 * that the refusal can name the request it answers.
 */
function checkJsonValues(bytes: Uint8Array, max: number, maxDepth: number): void {
  if (bytes.length <= max) return;
  let count = 0;
  let depth = 0;
  let idText = "null";
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i]!;
    if (byte === 0x22) {
      const end = stringEnd(bytes, i);
      if (depth === 1 && end === i + 3 && bytes[i + 1] === 0x69 && bytes[i + 2] === 0x64) {
        idText = scalarAfterColon(bytes, end + 1) ?? idText; // "id": its value, when a scalar
      }
      i = end;
    } else if (byte === 0x5b || byte === 0x7b) {
      if (++depth > maxDepth) {
        throw new DecodeError(
          ErrorCode.InvalidRequest,
          `Invalid Request: arrays and objects nest deeper than ${maxDepth} levels`,
          idText,
          "max_depth",
        );
      }
      count++;
    } else if (byte === 0x5d || byte === 0x7d) {
      depth--;
    } else if (byte === 0x2c || byte === 0x3a) {
      count++;
    } else continue;
    if (count > max) {
      throw new DecodeError(
        ErrorCode.InvalidRequest,
        `Invalid Request: the message holds more than ${max} JSON values`,
        idText,
        "max_json_values",
      );
    }
  }
}

/** The JSON text of the number or short string after the colon at or after `at`, if valid. */
function scalarAfterColon(bytes: Uint8Array, at: number): string | undefined {
  while (bytes[at] === 0x20 || bytes[at] === 0x0a || bytes[at] === 0x0d || bytes[at] === 0x09) at++;
  if (bytes[at] !== 0x3a) return undefined;
  at++;
  while (bytes[at] === 0x20 || bytes[at] === 0x0a || bytes[at] === 0x0d || bytes[at] === 0x09) at++;
  let end = at;
  if (bytes[at] === 0x22) end = stringEnd(bytes, at) + 1;
  else while (end < bytes.length && /[-+.\deE]/.test(String.fromCharCode(bytes[end]!))) end++;
  if (end === at || end - at > 256) return undefined;
  const text = String.fromCharCode(...bytes.subarray(at, end));
  try {
    return isId(JSON.parse(text)) ? text : undefined;
  } catch {
    return undefined;
  }
}

/** The index of the quote that closes the string opened at `open`, or the end of `bytes`. */
function stringEnd(bytes: Uint8Array, open: number): number {
  for (let at = open + 1;;) {
    const quote = bytes.indexOf(0x22, at);
    if (quote < 0) return bytes.length;
    let backslashes = 0;
    while (bytes[quote - 1 - backslashes] === 0x5c) backslashes++;
    if (backslashes % 2 === 0) return quote;
    at = quote + 1;
  }
}

/**
 * Frames up to this size are checked for ASCII in JavaScript and made a string by `latin1Slice`:
 * 1.3 to 4 times cheaper than the fatal UTF-8 decoder from 50 bytes to 2 KiB (`deno bench`, a
 * frame viewed in the read buffer), the same at 4 KiB.
 */
const ASCII_FAST_BYTES = 2048;

/**
 * Node's `Buffer.prototype.latin1Slice`: bytes to a one-byte string in one native step, which for
 * ASCII is the UTF-8 text. Undocumented, but on Deno, Node.js and Bun alike; called on a plain
 * Uint8Array. Where it is missing, `String.fromCharCode` does the same, more slowly.
 */
const latin1Slice = (Buffer.prototype as {
  latin1Slice?: (this: Uint8Array, start: number, end: number) => string;
}).latin1Slice;

/** The text of an all-ASCII frame, or `undefined` when a byte is not ASCII. */
function asciiText(frame: Uint8Array): string | undefined {
  const length = frame.length;
  let bits = 0;
  for (let i = 0; i < length; i++) bits |= frame[i]!;
  if (bits >= 0x80) return undefined;
  return latin1Slice !== undefined
    ? latin1Slice.call(frame, 0, length)
    : String.fromCharCode.apply(null, Array.from(frame));
}

/** Refuses `value` (parsed from `bytes`) when it nests deeper than `maxDepth`. */
function checkDepth(bytes: Uint8Array, value: unknown, maxDepth: number): void {
  if (mayExceedDepth(bytes, maxDepth) && exceedsDepth(value, maxDepth)) {
    // The message parsed, so its id is known: the caller's call can settle.
    const id = value !== null && typeof value === "object" && !Array.isArray(value) &&
        Object.hasOwn(value, "id") && isId((value as { id: unknown }).id)
      ? JSON.stringify((value as { id: unknown }).id)
      : "null";
    throw new DecodeError(
      ErrorCode.InvalidRequest,
      `Invalid Request: arrays and objects nest deeper than ${maxDepth} levels`,
      id,
      "max_depth",
    );
  }
}

/** Whether `id` is a valid JSON-RPC id. Fractional numbers are allowed, as the spec only discourages them. */
export function isId(id: unknown): id is Id {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id)) || id === null;
}

/** `Object.prototype.hasOwnProperty`, which a wire object may shadow with a key of that name. */
export const hasOwn: (object: object, key: PropertyKey) => boolean = Object.hasOwn;

/** Whether JSON text could nest deeper than `max`: that takes at least two bytes a level. */
function mayExceedDepth(bytes: Uint8Array, max: number): boolean {
  return bytes.length > 2 * max;
}

/** Options for {@linkcode Codec}. */
export interface CodecOptions {
  /** Whether the peer takes rich values (extended frames); it may change after `rpc.hello`. */
  rich?: boolean;
  /** The deepest nesting of arrays and objects a message may have. */
  maxDepth?: number;
  /** The most JSON values (containers, keys, items) a message may hold. */
  maxJsonValues?: number;
  /** What a rich frame's byte sections and BigInts may decode into. */
  decodeLimits?: DecodeLimits;
}

/** One connection's codec: frames to messages and messages to frames, with its settings. */
export class Codec {
  /** Whether the peer took rich values (`rpc.hello`), so that it may get extended frames. */
  rich: boolean;
  /** The deepest nesting of arrays and objects a message may have. */
  readonly maxDepth: number;
  /** The most JSON values (containers, keys, items) a message may hold. */
  readonly maxJsonValues: number;
  /** What a rich frame's byte sections and BigInts may decode into. */
  readonly decodeLimits: DecodeLimits;
  #plain: Codec | undefined;

  constructor(options: CodecOptions = {}) {
    this.rich = options.rich ?? false;
    this.maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.maxJsonValues = options.maxJsonValues ?? DEFAULT_MAX_JSON_VALUES;
    this.decodeLimits = options.decodeLimits ?? DEFAULT_DECODE_LIMITS;
  }

  /** These settings without rich values: a batch's answer is one plain JSON array. */
  get plain(): Codec {
    if (!this.rich) return this;
    this.#plain ??= new Codec({
      rich: false,
      maxDepth: this.maxDepth,
      maxJsonValues: this.maxJsonValues,
      decodeLimits: this.decodeLimits,
    });
    return this.#plain;
  }

  /**
   * The message in `frame`.
   *
   * @throws {DecodeError} When the frame is not a message, with the code to answer with.
   */
  decode(frame: Uint8Array): unknown {
    return decodeFrame(frame, this.maxDepth, this.maxJsonValues, this.decodeLimits);
  }

  /**
   * A success response.
   *
   * @throws {NotPlainError} When the result needs rich values the peer has not taken.
   * @throws {RangeError} When the result nests too deeply or is circular.
   * @throws {TypeError} When the result holds something that cannot be sent at all.
   */
  result(idText: string, result: unknown): Outgoing {
    return resultMessage(idText, result, this.rich, this.maxDepth);
  }

  /** An error response; `data`, when given, may need rich values (throws as `result` does). */
  error(idText: string, code: number, message: string, data?: unknown): Outgoing {
    return errorMessage(idText, code, message, data, this.rich, this.maxDepth);
  }

  /**
   * A request, or a notification when `id` is undefined.
   *
   * @throws As `result` does, for the params.
   */
  request(
    id: number | undefined,
    method: string,
    params: unknown,
    timeout?: number,
  ): Outgoing {
    return requestMessage(id, method, params, timeout, this.rich, this.maxDepth);
  }
}
