// Rich values, decoding: an extended frame split into its JSON and binary parts, and tagged values
// revived within the frame's decoding limits (PROTOCOL.md section 8).

import { parseJson as parseGuarded } from "./_json.ts";
import {
  binaryStart,
  type DecodeLimits,
  decoder,
  DEFAULT_DECODE_LIMITS,
  EXTENDED_HEADER_BYTES,
  TAG,
  TYPED_ARRAYS,
  type TypedArrayType,
} from "./_rich_tags.ts";

/** The JSON part of an extended frame, as text, from the first of its parts. */
export function extendedJsonText(head: Uint8Array): string {
  const { json } = splitExtended(head);
  return new TextDecoder().decode(json);
}

/** Why an extended frame could not be decoded: its message reads "Cannot decode frame: ...". */
export class ExtendedFrameError extends Error {
  /**
   * The limit the frame exceeds (bytes, or a BigInt's digits) when that is why it was refused: the
   * frame is well-formed, the request too large (-32600). `undefined` when the frame is malformed
   * (-32700).
   */
  readonly limit: number | undefined;

  /** `reason` completes the message; `limit` is set when a limit is why (see above). */
  constructor(reason: string, options: { limit?: number; cause?: unknown } = {}) {
    super(`Cannot decode frame: ${reason}`, { cause: options.cause });
    this.name = "ExtendedFrameError";
    this.limit = options.limit;
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
 * place. Bytes are views of `binary` when `owned` (the frame's buffer is the frame's own, so views
 * stay valid, and aligned for any typed array), else copies. Each section may back one value only
 * (sections may not overlap), and `limits` bound what the frame decodes into, checked before
 * anything is allocated.
 *
 * @throws {ExtendedFrameError} On an unknown or malformed tag, a section outside the binary part
 * or overlapping another, byte values beyond `limits.maxDecodedBytes` in all, or a BigInt of more
 * than `limits.maxBigIntDigits` digits (the last two with `limit` set).
 */
export function revive(
  value: unknown,
  binary: Uint8Array,
  owned: boolean,
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): unknown {
  const reviver = new Reviver(binary, owned, limits);
  const revived = reviver.revive(value);
  reviver.checkOverlap();
  return revived;
}

/** Decodes the tagged values of one frame, keeping count of what they cost. */
class Reviver {
  #binary: Uint8Array;
  #owned: boolean;
  #limits: DecodeLimits;
  /** Bytes of byte values so far: at most the binary part's length while sections do not overlap. */
  #decoded = 0;
  /** Start and end of each non-empty section, flat, in the order the tags came. */
  #sections: number[] = [];
  /** Whether each section so far started at or after the end of the one before (the usual order). */
  #ascending = true;

  constructor(binary: Uint8Array, owned: boolean, limits: DecodeLimits) {
    this.#binary = binary;
    this.#owned = owned;
    this.#limits = limits;
  }

  revive(value: unknown): unknown {
    if (value === null || typeof value !== "object") return value;
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) {
        const item = value[i];
        if (item !== null && typeof item === "object") value[i] = this.revive(item);
      }
      return value;
    }
    const record = value as Record<string, unknown>;
    if (Object.hasOwn(record, TAG)) return this.#tagged(record);
    this.#members(record);
    return record;
  }

  /** Revives the values of `record`'s members. Its own data properties: no setter runs. */
  #members(record: Record<string, unknown>): void {
    for (const key of Object.keys(record)) {
      const item = record[key];
      if (item === null || typeof item !== "object") continue;
      const revived = this.revive(item);
      if (revived !== item) record[key] = revived;
    }
  }

  /**
   * Refuses sections that overlap. Tags in order need no more than the check as they came; others
   * are sorted. Until then, no more bytes were decoded than the binary part holds.
   */
  checkOverlap(): void {
    if (this.#ascending) return;
    const sections = this.#sections;
    const order = Array.from({ length: sections.length / 2 }, (_, i) => i * 2);
    order.sort((a, b) => sections[a]! - sections[b]!);
    for (let i = 1; i < order.length; i++) {
      if (sections[order[i]!]! < sections[order[i - 1]! + 1]!) throw overlapping();
    }
  }

  #tagged(tagged: Record<string, unknown>): unknown {
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
        if (typeof v === "string") return this.#bigint(v);
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
            map.set(this.revive(entry[0]), this.revive(entry[1]));
          }
          return map;
        }
        break;
      case "set":
        if (Array.isArray(v)) {
          const set = new Set();
          for (const item of v) set.add(this.revive(item));
          return set;
        }
        break;
      case "object":
        if (v !== null && typeof v === "object" && !Array.isArray(v)) {
          // The escaped object's keys are data, "$t" included: revive only its values.
          this.#members(v as Record<string, unknown>);
          return v;
        }
        break;
      case "bytes":
        return this.#bytes(tagged);
    }
    throw new ExtendedFrameError(`the tagged value ${JSON.stringify(tag)} is not valid`);
  }

  #bigint(text: string): bigint {
    const digits = text.length - (text.startsWith("-") ? 1 : 0);
    // Checked before the pattern and BigInt(), both of which read the whole text.
    if (digits > this.#limits.maxBigIntDigits) {
      throw new ExtendedFrameError(
        `a BigInt of ${digits} digits exceeds the limit of ${this.#limits.maxBigIntDigits} digits`,
        { limit: this.#limits.maxBigIntDigits },
      );
    }
    if (!/^-?\d+$/.test(text)) {
      throw new ExtendedFrameError(`the tagged value "bigint" is not valid`);
    }
    return BigInt(text);
  }

  #bytes(tagged: Record<string, unknown>): unknown {
    const { o, n, k } = tagged;
    const binary = this.#binary;
    if (
      !Number.isSafeInteger(o) || !Number.isSafeInteger(n) || (o as number) < 0 ||
      (n as number) < 0 || (o as number) + (n as number) > binary.length
    ) {
      throw new ExtendedFrameError("a byte section lies outside the frame");
    }
    const offset = o as number;
    const length = n as number;
    let type: TypedArrayType | undefined;
    if (k !== undefined && k !== "ArrayBuffer" && k !== "DataView") {
      type = typeof k === "string" ? TYPED_ARRAYS.get(k) : undefined;
      if (type === undefined) {
        throw new ExtendedFrameError(`${JSON.stringify(k)} is not a typed array`);
      }
      if (length % type.BYTES_PER_ELEMENT !== 0) {
        throw new ExtendedFrameError(`a ${k} section is not a whole number of elements`);
      }
    }
    this.#claim(offset, length);
    const start = binary.byteOffset + offset;
    const buffer = binary.buffer as ArrayBuffer;
    if (type !== undefined) {
      const count = length / type.BYTES_PER_ELEMENT;
      return this.#owned && start % type.BYTES_PER_ELEMENT === 0
        ? new type(buffer, start, count)
        : new type(buffer.slice(start, start + length), 0, count);
    }
    if (k === "ArrayBuffer") return buffer.slice(start, start + length);
    if (k === "DataView") {
      return new DataView(
        this.#owned ? buffer : buffer.slice(start, start + length),
        this.#owned ? start : 0,
        length,
      );
    }
    return this.#owned
      ? new Uint8Array(buffer, start, length)
      : binary.slice(offset, offset + length);
  }

  /**
   * Counts the section `[offset, offset + length)` against the limits, before its value exists.
   * Sections that do not overlap hold no more bytes in all than the binary part: a frame that
   * decodes into more names some bytes twice, and is refused at once.
   */
  #claim(offset: number, length: number): void {
    if (length === 0) return;
    const decoded = this.#decoded + length;
    const max = this.#limits.maxDecodedBytes;
    if (decoded > max) {
      throw new ExtendedFrameError(
        `its byte values (${decoded} bytes so far) exceed the limit of ${max} bytes`,
        { limit: max },
      );
    }
    if (decoded > this.#binary.length) throw overlapping();
    this.#decoded = decoded;
    const sections = this.#sections;
    if (sections.length > 0 && offset < sections[sections.length - 1]!) this.#ascending = false;
    sections.push(offset, offset + length);
  }
}

/** The error for a byte section that more than one value names, in part or whole. */
function overlapping(): ExtendedFrameError {
  return new ExtendedFrameError("byte sections overlap: each section backs one value only");
}
