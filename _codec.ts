// Frames to JSON-RPC 2.0 messages and back. The server and the client share it.

import { ErrorCode } from "./errors.ts";
import { parseJson } from "./_json.ts";
import {
  EXTENDED_MARKER,
  ExtendedFrameError,
  extendedParts,
  jsonOnlyProblem,
  parseJson as parseExtendedJson,
  revive,
  RichEncoder,
  splitExtended,
} from "./_rich.ts";

/**
 * The deepest nesting of arrays and objects a message may have: 128 is far beyond any sensible API
 * and far below what would overflow a recursive handler or encoder.
 */
export const DEFAULT_MAX_DEPTH = 128;

/** A JSON-RPC id: the spec allows a string, a number or null. */
export type Id = string | number | null;

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Why a frame could not be decoded; `code` is the JSON-RPC error code to answer with. */
export class DecodeError extends Error {
  readonly code: number;
  /** The JSON text of the message's id when it could be read, else `"null"`. */
  readonly idText: string;
  constructor(code: number, message: string, idText = "null") {
    super(message);
    this.name = "DecodeError";
    this.code = code;
    this.idText = idText;
  }
}

/**
 * Decodes a frame's UTF-8 JSON. JSON.parse makes `__proto__` an own data property, so decoding
 * alone cannot pollute a prototype. Nesting deeper than `maxDepth` is refused, so that no handler
 * or encoder recurses into it: V8 parses deep JSON without recursion, and the depth is then
 * measured by a walk that stops at `maxDepth` levels (3 µs for a 7 KB message).
 */
export function decodeFrame(frame: Uint8Array, maxDepth: number): unknown {
  if (frame[0] === EXTENDED_MARKER) return decodeExtended(frame, maxDepth);
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
  return value;
}

/**
 * Decodes an extended frame (rich values). Its bytes are views of the frame when the frame owns its
 * buffer (large frames are read into one of their own), else copies: a small frame is a view of
 * the connection's read buffer, which the next read overwrites.
 */
function decodeExtended(frame: Uint8Array, maxDepth: number): unknown {
  try {
    const { json, binary } = splitExtended(frame);
    const value = parseExtendedJson(json);
    checkDepth(json, value, maxDepth);
    const owned = frame.byteOffset === 0 && frame.byteLength === frame.buffer.byteLength;
    return revive(value, binary, owned);
  } catch (error) {
    if (error instanceof DecodeError) throw error;
    const why = error instanceof ExtendedFrameError || error instanceof SyntaxError
      ? error.message
      : error instanceof TypeError
      ? "the JSON part is not valid UTF-8"
      : String(error);
    throw new DecodeError(ErrorCode.ParseError, `Parse error: invalid extended frame: ${why}`);
  }
}

/** An encoded message: JSON text (a plain frame), or the parts of an extended frame. */
export type Encoded = string | Uint8Array[];

/** A value that plain JSON would change, for a peer that has not enabled rich values. */
export class NotPlainError extends TypeError {
  /** What JSON would change: `"Map"`, `"Uint8Array"`, `"BigInt"`, `"undefined"`, `"NaN"`... */
  readonly type: string;
  constructor(type: string) {
    super(`${articled(type)} cannot be carried by plain JSON`);
    this.name = "NotPlainError";
    this.type = type;
  }
}

function articled(type: string): string {
  return /^[-\d]|^NaN$|^Infinity$|^undefined$/.test(type)
    ? type
    : /^[AEIO]/.test(type)
    ? `an ${type}`
    : `a ${type}`;
}

/**
 * `prefix + JSON of value + suffix`: plain JSON text when `value` is plain, else, when `rich`, an
 * extended frame.
 *
 * @throws {NotPlainError} When the value is not plain JSON and the peer has no rich values.
 * @throws {RangeError} When the value nests deeper than `maxDepth`, or is circular.
 * @throws {TypeError} When the value holds something that cannot be sent at all (a function).
 */
export function encodeWith(
  prefix: string,
  value: unknown,
  suffix: string,
  rich: boolean,
  maxDepth: number,
  envelope: number,
): Encoded {
  // The receiver measures the whole message: the envelope's objects count, and so do tags.
  const depth = maxDepth - envelope;
  const problem = jsonOnlyProblem(value, depth, rich);
  if (problem === undefined) return `${prefix}${JSON.stringify(value) ?? "null"}${suffix}`;
  if (!rich) throw new NotPlainError(problem);
  const encoder = new RichEncoder(depth);
  const tagged = encoder.encode(value);
  if (exceedsDepth(tagged, depth)) {
    throw new RangeError(`Cannot send value: encoded, it nests deeper than ${maxDepth} levels`);
  }
  return extendedParts(`${prefix}${JSON.stringify(tagged)}${suffix}`, encoder.sections);
}

/** A success response. */
export function resultMessage(
  idText: string,
  result: unknown,
  rich: boolean,
  maxDepth: number,
): Encoded {
  // The result sits in the response object: one level.
  return encodeWith(`{"jsonrpc":"2.0","id":${idText},"result":`, result, "}", rich, maxDepth, 1);
}

/** An error response whose `data` may need rich values. */
export function errorMessage(
  idText: string,
  code: number,
  message: string,
  data: unknown,
  rich: boolean,
  maxDepth: number,
): Encoded {
  if (data === undefined) return errorText(idText, code, message);
  return encodeWith(
    `{"jsonrpc":"2.0","id":${idText},"error":{"code":${code},"message":${
      JSON.stringify(message)
    },"data":`,
    data,
    "}}",
    rich,
    maxDepth,
    2, // the response object, then the error object
  );
}

/** A request, or a notification when `id` is undefined, whose params may need rich values. */
export function requestMessage(
  id: number | undefined,
  method: string,
  params: unknown,
  timeout: number | undefined,
  rich: boolean,
  maxDepth: number,
): Encoded {
  const idText = id === undefined ? "" : `"id":${id},`;
  const timeoutText = timeout === undefined ? "" : `,"timeout":${timeout}`;
  return encodeWith(
    `{"jsonrpc":"2.0",${idText}"method":${JSON.stringify(method)},"params":`,
    params,
    `${timeoutText}}`,
    rich,
    maxDepth,
    1, // the request object; the params array is part of the value
  );
}

/** Frames up to this size are read char by char when ASCII: cheaper than a call into Rust. */
const ASCII_FAST_BYTES = 512;

/** The text of an all-ASCII frame, or `undefined` when a byte is not ASCII. */
function asciiText(frame: Uint8Array): string | undefined {
  for (let i = 0; i < frame.length; i++) if (frame[i]! >= 0x80) return undefined;
  return String.fromCharCode.apply(null, frame as unknown as number[]);
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
    );
  }
}

/** Whether `id` is a valid JSON-RPC id. Fractional numbers are allowed, as the spec only discourages them. */
export function isId(id: unknown): id is Id {
  return typeof id === "string" || (typeof id === "number" && Number.isFinite(id)) || id === null;
}

/** JSON text of a success response. */
export function resultText(idText: string, result: unknown): string {
  return `{"jsonrpc":"2.0","id":${idText},"result":${JSON.stringify(result) ?? "null"}}`;
}

/** JSON text of an error response. */
export function errorText(idText: string, code: number, message: string, data?: unknown): string {
  const dataText = data === undefined ? "" : `,"data":${JSON.stringify(data) ?? "null"}`;
  return `{"jsonrpc":"2.0","id":${idText},"error":{"code":${code},"message":${
    JSON.stringify(message)
  }${dataText}}}`;
}

/** `Object.prototype.hasOwnProperty`, which a wire object may shadow with a key of that name. */
export const hasOwn: (object: object, key: PropertyKey) => boolean = Object.hasOwn;

/** Whether JSON text could nest deeper than `max`: that takes at least two bytes a level. */
function mayExceedDepth(bytes: Uint8Array, max: number): boolean {
  return bytes.length > 2 * max;
}

/**
 * Whether a parsed value nests arrays and objects deeper than `max`. The recursion stops at `max`
 * levels, so however deep the value, the stack never holds more than `max` frames.
 */
export function exceedsDepth(value: unknown, max: number): boolean {
  if (value === null || typeof value !== "object") return false;
  if (max === 0) return true;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (exceedsDepth(value[i], max - 1)) return true;
    return false;
  }
  for (const key in value) {
    if (exceedsDepth((value as Record<string, unknown>)[key], max - 1)) return true;
  }
  return false;
}
