// Rich values (PROTOCOL.md section 8): what the encoder (_rich_encode.ts) and the decoder
// (_rich_decode.ts) share: the frame layout's constants, the tag key, the typed arrays that travel
// and the decoding limits.

/** The first byte of an extended frame's payload: JSON text never starts with it. */
export const EXTENDED_MARKER = 0x00;

/** The key of a tagged value. A user object with this key is escaped, so nothing collides. */
export const TAG = "$t";

/** Marker, then the JSON part's length (u32, big-endian). */
export const EXTENDED_HEADER_BYTES = 5;

/**
 * The most bytes the byte values of one extended frame may hold, views and copies alike: 16 MiB,
 * the largest frame. Sections may not overlap, so a frame never decodes into more bytes than its
 * binary part holds anyway (before that rule, a 164 KB frame of 2 000 tags naming one 64 KiB
 * section decoded into 131 MB of copies); a server that wants less sets it lower.
 */
export const DEFAULT_MAX_DECODED_BYTES = 16 * 1024 * 1024;

/**
 * The most decimal digits a BigInt may have, sign aside: 10 000 digits (33 000 bits) is eight
 * times an RSA-4096 modulus. BigInt parsing and printing are superlinear. Measured on a 2-core
 * shared VM (AMD EPYC, Deno 2.9.6): parsing, adding 1 and printing one BigInt takes 0.3-0.6 ms at
 * 10 000 digits, 15 ms at 100 000, 0.33 s at 1 000 000, and 3-4 s at 8 000 000 (the size one
 * 7.6 MiB frame could carry before this limit). A 15 MiB frame of 1 569 BigInts of 10 000 digits
 * decodes in 0.5-0.6 s, and printing them all takes 0.5 s more; with 1 000-digit ones, 0.3-0.4 s
 * and 0.2 s. A larger limit would cost more a byte.
 */
export const DEFAULT_MAX_BIGINT_DIGITS = 10_000;

/** What one extended frame may decode into. The receiver checks each before it allocates. */
export interface DecodeLimits {
  /**
   * The most bytes the frame's byte values (Uint8Array, ArrayBuffer, DataView, typed arrays) may
   * hold in all, views of the frame and copies alike.
   *
   * @default {DEFAULT_MAX_DECODED_BYTES}
   */
  maxDecodedBytes: number;
  /**
   * The most decimal digits (sign aside) a BigInt may have.
   *
   * @default {DEFAULT_MAX_BIGINT_DIGITS}
   */
  maxBigIntDigits: number;
}

/** The default {@linkcode DecodeLimits}. */
export const DEFAULT_DECODE_LIMITS: Readonly<DecodeLimits> = Object.freeze({
  maxDecodedBytes: DEFAULT_MAX_DECODED_BYTES,
  maxBigIntDigits: DEFAULT_MAX_BIGINT_DIGITS,
});

export const encoder = new TextEncoder();
export const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** A typed array's constructor. */
export interface TypedArrayType {
  new (buffer: ArrayBuffer, byteOffset: number, length: number): ArrayBufferView;
  readonly BYTES_PER_ELEMENT: number;
}

/** Typed arrays that can travel, by the name the tag carries. */
export const TYPED_ARRAYS = new Map<string, TypedArrayType>([
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

/** Where the binary part starts: after the JSON part, padded to a multiple of 8. */
export function binaryStart(jsonLength: number): number {
  return Math.ceil((EXTENDED_HEADER_BYTES + jsonLength) / 8) * 8;
}
