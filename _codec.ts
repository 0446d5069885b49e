// Frames to JSON-RPC 2.0 messages and back. The server and the client share it.

import { ErrorCode } from "./errors.ts";

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
  constructor(code: number, message: string) {
    super(message);
    this.name = "DecodeError";
    this.code = code;
  }
}

/**
 * Decodes a frame's UTF-8 JSON. JSON.parse makes `__proto__` an own data property, so decoding
 * alone cannot pollute a prototype. Nesting deeper than `maxDepth` is refused before parsing, so
 * that no handler or encoder recurses into it.
 */
export function decodeFrame(frame: Uint8Array, maxDepth: number): unknown {
  if (exceedsDepth(frame, maxDepth)) {
    throw new DecodeError(
      ErrorCode.InvalidRequest,
      `Invalid Request: arrays and objects nest deeper than ${maxDepth} levels`,
    );
  }
  let text: string;
  try {
    text = decoder.decode(frame);
  } catch {
    throw new DecodeError(ErrorCode.ParseError, "Parse error: the frame is not valid UTF-8");
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new DecodeError(
      ErrorCode.ParseError,
      `Parse error: ${error instanceof Error ? error.message : "invalid JSON"}`,
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

/** JSON text of a request, or of a notification when `id` is undefined. */
export function requestText(
  id: number | undefined,
  method: string,
  params: unknown,
  timeout?: number,
): string {
  const idText = id === undefined ? "" : `"id":${id},`;
  const paramsText = params === undefined ? "" : `,"params":${JSON.stringify(params)}`;
  const timeoutText = timeout === undefined ? "" : `,"timeout":${timeout}`;
  return `{"jsonrpc":"2.0",${idText}"method":${JSON.stringify(method)}${paramsText}${timeoutText}}`;
}

/** `Object.prototype.hasOwnProperty`, which a wire object may shadow with a key of that name. */
export const hasOwn: (object: object, key: PropertyKey) => boolean = Object.hasOwn;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;

/**
 * Whether the JSON text in `bytes` nests arrays and objects deeper than `max`, found with a loop
 * rather than recursion. Text with at most `max` opening brackets cannot, which `indexOf` (native
 * and fast) tells without a scan of every byte in the common case.
 */
export function exceedsDepth(bytes: Uint8Array, max: number): boolean {
  let opening = 0;
  for (const bracket of [OPEN_ARRAY, OPEN_OBJECT]) {
    for (
      let i = bytes.indexOf(bracket);
      i >= 0 && opening <= max;
      i = bytes.indexOf(bracket, i + 1)
    ) {
      opening++;
    }
  }
  if (opening <= max) return false;
  let depth = 0;
  for (let i = 0; i < bytes.length; i++) {
    const byte = bytes[i];
    if (byte === QUOTE) {
      for (i++; i < bytes.length && bytes[i] !== QUOTE; i++) {
        if (bytes[i] === BACKSLASH) i++;
      }
    } else if (byte === OPEN_ARRAY || byte === OPEN_OBJECT) {
      if (++depth > max) return true;
    } else if (byte === CLOSE_ARRAY || byte === CLOSE_OBJECT) {
      depth--;
    }
  }
  return false;
}
