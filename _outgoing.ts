// Messages to frames, the outgoing half of the codec (_codec.ts decodes, and its Codec makes
// messages with the functions here): the check that a value is plain JSON, responses, errors and
// requests, and `Outgoing`, a message kept in pieces until it is written into its frame.

import { extendedParts, jsonOnlyProblem, RichEncoder } from "./_rich.ts";
import type { FrameWriter } from "./_frame_writer.ts";

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
 * The JSON text of `value` when plain JSON carries it; `undefined` when it needs rich values and
 * the peer takes them (`rich`).
 *
 * @throws {NotPlainError} When the value is not plain JSON and the peer has no rich values.
 * @throws {RangeError} When the value nests deeper than `depth`, or is circular.
 */
function plainText(value: unknown, depth: number, rich: boolean): string | undefined {
  // The fast walk proves most values plain; only what it cannot prove gets the full check, which
  // names the problem (and lets a plain peer's Date or undefined member through, as JSON does).
  if (!isPlainJson(value, depth)) {
    const problem = jsonOnlyProblem(value, depth, rich);
    if (problem !== undefined) {
      if (!rich) throw new NotPlainError(problem);
      return undefined;
    }
  }
  return JSON.stringify(value) ?? "null";
}

/**
 * Whether `value` is made only of strings, booleans, finite numbers other than -0, null, arrays,
 * and objects whose prototype is Object.prototype, nested at most `depth` deep: JSON carries such a
 * value exactly, for any peer. `false` says only that {@linkcode jsonOnlyProblem} must decide; it
 * is the check the encoder pays on every message, so it does nothing else (0.16 to 0.21 times what
 * JSON.stringify costs, where the full check costs 0.45 to 0.55: bench/codec_bench.ts).
 */
export function isPlainJson(value: unknown, depth: number): boolean {
  if (typeof value !== "object") return plainScalar(value);
  return value === null || (depth > 0 && plainContainer(value, depth - 1));
}

function plainScalar(value: unknown): boolean {
  return typeof value === "string" || typeof value === "boolean" ||
    (typeof value === "number" && value - value === 0 && (value !== 0 || 1 / value > 0));
}

/** isPlainJson of an array or object, with `depth` levels left below it. */
function plainContainer(value: object, depth: number): boolean {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (typeof item === "string" || typeof item === "boolean") continue;
      if (typeof item === "number") {
        if (item - item !== 0 || (item === 0 && 1 / item < 0)) return false;
        continue;
      }
      if (typeof item !== "object") return false;
      if (item !== null && (depth === 0 || !plainContainer(item, depth - 1))) return false;
    }
    return true;
  }
  // The constructor first: a property load, whose map checks let the compiler answer
  // getPrototypeOf without a call (a call per object was half the cost of the whole walk).
  if (
    (value as { constructor?: unknown }).constructor !== Object ||
    Object.getPrototypeOf(value) !== Object.prototype
  ) {
    return false;
  }
  for (const key in value) {
    const item = (value as Record<string, unknown>)[key];
    if (typeof item === "string" || typeof item === "boolean") continue;
    if (typeof item === "number") {
      if (item - item !== 0 || (item === 0 && 1 / item < 0)) return false;
      continue;
    }
    if (typeof item !== "object") return false;
    if (item !== null && (depth === 0 || !plainContainer(item, depth - 1))) return false;
  }
  return true;
}

/** `prefix + tagged JSON of value + suffix` and the value's byte sections: an extended frame. */
function extendedMessage(
  prefix: string,
  value: unknown,
  suffix: string,
  depth: number,
  maxDepth: number,
): Uint8Array[] {
  const encoder = new RichEncoder(depth);
  const tagged = encoder.encode(value);
  if (exceedsDepth(tagged, depth)) {
    throw new RangeError(`Cannot send value: encoded, it nests deeper than ${maxDepth} levels`);
  }
  return extendedParts(`${prefix}${JSON.stringify(tagged)}${suffix}`, encoder.sections);
}

/**
 * `prefix + JSON of value + suffix`: plain JSON text when `value` is plain, else, when `rich`, an
 * extended frame. `envelope` is how deep the value sits in the message.
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
  const text = plainText(value, depth, rich);
  if (text !== undefined) return `${prefix}${text}${suffix}`;
  return extendedMessage(prefix, value, suffix, depth, maxDepth);
}

/** The bytes of `text`, encoded once: the fixed pieces of messages. */
function encoded(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

/** What every response and every request with an id starts with, up to the id. */
const ID_HEAD = encoded('{"jsonrpc":"2.0","id":');
/** Between a response's id and its result. */
const RESULT_KEY = encoded(',"result":');

/** A success response. */
export function resultMessage(
  idText: string,
  result: unknown,
  rich: boolean,
  maxDepth: number,
): Outgoing {
  // The result sits in the response object: one level.
  const depth = maxDepth - 1;
  const text = plainText(result, depth, rich);
  if (text !== undefined) return Outgoing.envelope(idText, RESULT_KEY, text, "}");
  return new Outgoing(
    idText,
    extendedMessage(`{"jsonrpc":"2.0","id":${idText},"result":`, result, "}", depth, maxDepth),
  );
}

/** An error response whose `data` may need rich values. */
export function errorMessage(
  idText: string,
  code: number,
  message: string,
  data: unknown,
  rich: boolean,
  maxDepth: number,
): Outgoing {
  if (data === undefined) return new Outgoing(idText, errorText(idText, code, message), code);
  const body = encodeWith(
    `{"jsonrpc":"2.0","id":${idText},"error":{"code":${code},"message":${
      JSON.stringify(message)
    },"data":`,
    data,
    "}}",
    rich,
    maxDepth,
    2, // the response object, then the error object
  );
  return new Outgoing(idText, body, code);
}

/** Method names whose request pieces are kept, so that a call encodes its name only once. */
const METHOD_CACHE_SIZE = 1024;
const methodKeys = new Map<string, Uint8Array>();

/** `,"method":<name>,"params":` as bytes: what lies between a request's id and its params. */
function methodKey(method: string): Uint8Array {
  let bytes = methodKeys.get(method);
  if (bytes === undefined) {
    bytes = encoded(`,"method":${JSON.stringify(method)},"params":`);
    if (methodKeys.size >= METHOD_CACHE_SIZE) methodKeys.clear();
    methodKeys.set(method, bytes);
  }
  return bytes;
}

/**
 * A request, or a notification when `id` is undefined, whose params may need rich values. A
 * `traceparent` (W3C Trace Context, made by `_trace.ts`: JSON-safe) goes in a member of its own.
 */
export function requestMessage(
  id: number | undefined,
  method: string,
  params: unknown,
  timeout: number | undefined,
  rich: boolean,
  maxDepth: number,
  traceparent?: string,
): Outgoing {
  const idText = id === undefined ? "null" : String(id);
  const timeoutText = timeout === undefined ? "" : `,"timeout":${timeout}`;
  const traceText = traceparent === undefined ? "" : `,"traceparent":"${traceparent}"`;
  const suffix = timeoutText === "" && traceText === "" ? "}" : `${timeoutText}${traceText}}`;
  // The request object; the params array is part of the value.
  const depth = maxDepth - 1;
  const text = plainText(params, depth, rich);
  if (text !== undefined && id !== undefined) {
    return Outgoing.envelope(idText, methodKey(method), text, suffix);
  }
  const prefix = `{"jsonrpc":"2.0",${id === undefined ? "" : `"id":${id},`}"method":${
    JSON.stringify(method)
  },"params":`;
  return new Outgoing(
    idText,
    text !== undefined
      ? `${prefix}${text}${suffix}`
      : extendedMessage(prefix, params, suffix, depth, maxDepth),
  );
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

/**
 * Whether a parsed value nests arrays and objects deeper than `max`. The recursion stops at `max`
 * levels, so however deep the value, the stack never holds more than `max` frames.
 */
export function exceedsDepth(value: unknown, max: number): boolean {
  return value !== null && typeof value === "object" && (max === 0 || nestsDeeper(value, max - 1));
}

/** Whether an array or object inside `value` nests deeper than `max`; scalars cost no call. */
function nestsDeeper(value: object, max: number): boolean {
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item = value[i];
      if (item !== null && typeof item === "object" && (max === 0 || nestsDeeper(item, max - 1))) {
        return true;
      }
    }
    return false;
  }
  for (const key in value) {
    const item = (value as Record<string, unknown>)[key];
    if (item !== null && typeof item === "object" && (max === 0 || nestsDeeper(item, max - 1))) {
      return true;
    }
  }
  return false;
}

/**
 * An outgoing message and the JSON text of the id it carries (`"null"` if none). Most messages
 * are an envelope around a value's JSON text, `{"jsonrpc":"2.0","id":<id><key><json><tail>`: kept
 * in pieces and written into the frame piece by piece (no joined string encoded again).
 */
export class Outgoing {
  /** The JSON text of the message's id, `"null"` for none: the reply to send if the body fails. */
  readonly idText: string;
  /** The error code of an error response, 0 for any other message: what metrics count. */
  readonly code: number;
  /** The whole message (JSON text or an extended frame's parts), or undefined for an envelope. */
  #body: Encoded | undefined;
  /** The envelope's pieces: the bytes between the id and the value, the value's JSON, the rest. */
  #key: Uint8Array | undefined;
  #json = "";
  #tail = "";

  constructor(idText: string, body: Encoded, code = 0) {
    this.idText = idText;
    this.#body = body;
    this.code = code;
  }

  /** `{"jsonrpc":"2.0","id":<idText><key><json><tail>`, kept in pieces. */
  static envelope(idText: string, key: Uint8Array, json: string, tail: string): Outgoing {
    const message = new Outgoing(idText, "");
    message.#body = undefined;
    message.#key = key;
    message.#json = json;
    message.#tail = tail;
    return message;
  }

  /** JSON text (a plain frame), or the parts of an extended frame. */
  get body(): Encoded {
    return this.#body ??
      `{"jsonrpc":"2.0","id":${this.idText}${textOf(this.#key!)}${this.#json}${this.#tail}`;
  }

  /** Whether it is an extended frame (rich values), in parts. */
  get extended(): boolean {
    return typeof this.#body === "object";
  }

  /** The size of the message: its parts' bytes, or its text's UTF-16 code units. */
  get size(): number {
    const body = this.#body;
    if (body === undefined) {
      return ID_HEAD.length + this.idText.length + this.#key!.length + this.#json.length +
        this.#tail.length;
    }
    return typeof body === "string" ? body.length : partsSize(body);
  }

  /** The exact size of the frame's payload in bytes. */
  byteLength(): number {
    const body = this.body;
    return typeof body === "string" ? utf8Length(body) : partsSize(body);
  }

  /**
   * Queues the message as one frame.
   *
   * @throws {RangeError} When it is larger than the writer's frame limit.
   */
  writeTo(writer: FrameWriter): void {
    const body = this.#body;
    if (body === undefined) {
      writer.beginFrame();
      writer.appendBytes(ID_HEAD);
      writer.appendText(this.idText);
      writer.appendBytes(this.#key!);
      writer.appendText(this.#json);
      writer.appendText(this.#tail);
      writer.endFrame();
    } else if (typeof body === "string") {
      writer.writeText(body);
    } else {
      writer.writeParts(body);
    }
  }
}

const textDecoder = new TextDecoder();

function textOf(bytes: Uint8Array): string {
  return textDecoder.decode(bytes);
}

/** The total size of `parts`. */
export function partsSize(parts: readonly Uint8Array[]): number {
  let size = 0;
  for (const part of parts) size += part.length;
  return size;
}

/** The length of `text` encoded as UTF-8 (a lone surrogate becomes 3 bytes, as TextEncoder does). */
function utf8Length(text: string): number {
  let bytes = text.length;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) continue;
    if (code < 0x800) bytes += 1;
    else if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 2; // a pair: 4 bytes for 2 code units
        i++;
      } else bytes += 2;
    } else bytes += 2;
  }
  return bytes;
}
