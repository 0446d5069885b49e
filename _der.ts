/**
 * A small DER (Distinguished Encoding Rules, X.690) encoder: just enough ASN.1 to write the X.509
 * certificates of {@linkcode ./_x509.ts}. {@linkcode ./_der_read.ts} reads them back. Private to
 * tlsrpc.
 *
 * @example Encode a sequence
 * ```ts
 * import { integer, sequence, utf8String } from "./_der.ts";
 *
 * const der = sequence([integer(42), utf8String("hello")]);
 * console.log(der[0]); // 0x30, SEQUENCE
 * ```
 *
 * @module
 */

import { CONSTRUCTED, Tag } from "./_der_tag.ts";

const CONTEXT = 0x80;
// Low-tag-number form only: X.509 never needs tag numbers of 31 and above.
const MAX_TAG_NUMBER = 30;

const encoder = new TextEncoder();

/**
 * Concatenates byte arrays.
 *
 * @param parts The arrays, in order.
 * @returns A new array holding all their bytes.
 */
export function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  const octets: number[] = [];
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) octets.unshift(rest % 256);
  return Uint8Array.of(0x80 | octets.length, ...octets);
}

/**
 * Encodes a value as tag, length and contents.
 *
 * @param tag The identifier octet, for example {@linkcode Tag.Sequence}.
 * @param contents The contents octets.
 * @returns The DER encoding.
 */
export function tlv(tag: number, contents: Uint8Array): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) > MAX_TAG_NUMBER) {
    throw new RangeError(`Cannot encode DER value: tag ${tag} is not a low-number tag octet`);
  }
  return concat([Uint8Array.of(tag), encodeLength(contents.length), contents]);
}

/**
 * Encodes an INTEGER.
 *
 * A `number` or `bigint` is written in two's complement, so it may be negative. A `Uint8Array` is
 * read as an unsigned big-endian magnitude (as in ECDSA's `r` and `s`, or a serial number): its
 * leading zero bytes are dropped and a zero byte is added when the top bit is set, so that the
 * value stays positive.
 *
 * @param value The integer.
 * @returns The DER encoding.
 */
export function integer(value: number | bigint | Uint8Array): Uint8Array<ArrayBuffer> {
  if (value instanceof Uint8Array) {
    let start = 0;
    while (start < value.length - 1 && value[start] === 0) start++;
    const magnitude = value.length === 0 ? Uint8Array.of(0) : value.subarray(start);
    const padded = magnitude[0]! & 0x80 ? concat([Uint8Array.of(0), magnitude]) : magnitude;
    return tlv(Tag.Integer, padded);
  }
  if (typeof value === "number" && !Number.isSafeInteger(value)) {
    throw new RangeError(`Cannot encode INTEGER: ${value} is not a safe integer`);
  }
  let rest = BigInt(value);
  const octets: number[] = [];
  // Emit low bytes until the rest is pure sign extension of the last byte written.
  for (;;) {
    const byte = Number(BigInt.asUintN(8, rest));
    octets.unshift(byte);
    rest >>= 8n;
    if ((rest === 0n && (byte & 0x80) === 0) || (rest === -1n && (byte & 0x80) !== 0)) break;
  }
  return tlv(Tag.Integer, Uint8Array.from(octets));
}

/**
 * Encodes a BOOLEAN (`0xff` for true, as DER requires).
 *
 * @param value The boolean.
 * @returns The DER encoding.
 */
export function boolean(value: boolean): Uint8Array<ArrayBuffer> {
  return tlv(Tag.Boolean, Uint8Array.of(value ? 0xff : 0x00));
}

/**
 * Encodes NULL.
 *
 * @returns The DER encoding, `05 00`.
 */
export function nullValue(): Uint8Array<ArrayBuffer> {
  return tlv(Tag.Null, new Uint8Array(0));
}

function base128(value: bigint): number[] {
  const out = [Number(value & 0x7fn)];
  for (let rest = value >> 7n; rest > 0n; rest >>= 7n) out.unshift(Number(rest & 0x7fn) | 0x80);
  return out;
}

/**
 * Encodes an OBJECT IDENTIFIER.
 *
 * @param dotted The identifier in dotted form, for example `"2.5.4.3"`.
 * @returns The DER encoding.
 */
export function oid(dotted: string): Uint8Array<ArrayBuffer> {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) {
    throw new TypeError(`Cannot encode OBJECT IDENTIFIER: "${dotted}" is not in dotted form`);
  }
  const arcs = dotted.split(".").map(BigInt);
  const [first, second, ...rest] = arcs as [bigint, bigint, ...bigint[]];
  if (first < 2n && second > 39n) {
    throw new RangeError(`Cannot encode OBJECT IDENTIFIER: second arc of "${dotted}" exceeds 39`);
  }
  const octets = [first * 40n + second, ...rest].flatMap(base128);
  return tlv(Tag.Oid, Uint8Array.from(octets));
}

/**
 * Encodes a SEQUENCE (or SEQUENCE OF) of already encoded values.
 *
 * @param items The encoded members, in order.
 * @returns The DER encoding.
 */
export function sequence(items: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  return tlv(Tag.Sequence, concat(items));
}

/**
 * Encodes a SET OF already encoded values, sorting them as DER requires.
 *
 * @param items The encoded members, in any order.
 * @returns The DER encoding.
 */
export function set(items: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  return tlv(Tag.Set, concat([...items].sort(compareBytes)));
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length);
  for (let i = 0; i < length; i++) {
    if (a[i] !== b[i]) return a[i]! - b[i]!;
  }
  return a.length - b.length;
}

/**
 * Encodes a BIT STRING.
 *
 * @param bytes The bits, most significant first.
 * @param unusedBits How many low bits of the last byte are not part of the string, 0 to 7.
 * @returns The DER encoding.
 */
export function bitString(bytes: Uint8Array, unusedBits = 0): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7) {
    throw new RangeError(`Cannot encode BIT STRING: ${unusedBits} unused bits is not 0 to 7`);
  }
  if (bytes.length === 0 && unusedBits !== 0) {
    throw new RangeError("Cannot encode BIT STRING: an empty string has no unused bits");
  }
  const last = bytes.length === 0 ? 0 : bytes[bytes.length - 1]!;
  if ((last & ((1 << unusedBits) - 1)) !== 0) {
    throw new RangeError("Cannot encode BIT STRING: unused bits must be zero");
  }
  return tlv(Tag.BitString, concat([Uint8Array.of(unusedBits), bytes]));
}

/**
 * Encodes a named-bit BIT STRING (as in X.509 keyUsage), dropping trailing zero bits as DER requires.
 *
 * @param bits The numbers of the bits that are set; bit 0 is the most significant bit of the first byte.
 * @returns The DER encoding.
 */
export function namedBits(bits: readonly number[]): Uint8Array<ArrayBuffer> {
  if (bits.length === 0) return bitString(new Uint8Array(0));
  const highest = Math.max(...bits);
  const bytes = new Uint8Array(Math.floor(highest / 8) + 1);
  for (const bit of bits) {
    if (!Number.isInteger(bit) || bit < 0) {
      throw new RangeError(`Cannot encode BIT STRING: bit ${bit} is not a natural number`);
    }
    bytes[bit >> 3]! |= 0x80 >> (bit & 7);
  }
  return bitString(bytes, 7 - (highest & 7));
}

/**
 * Encodes an OCTET STRING.
 *
 * @param bytes The octets.
 * @returns The DER encoding.
 */
export function octetString(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return tlv(Tag.OctetString, bytes);
}

/**
 * Encodes a UTF8String.
 *
 * @param text The text.
 * @returns The DER encoding.
 */
export function utf8String(text: string): Uint8Array<ArrayBuffer> {
  return tlv(Tag.Utf8String, encoder.encode(text));
}

/**
 * Encodes a PrintableString.
 *
 * @param text The text: letters, digits, space and `'()+,-./:=?` only.
 * @returns The DER encoding.
 */
export function printableString(text: string): Uint8Array<ArrayBuffer> {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(text)) {
    throw new TypeError(`Cannot encode PrintableString: "${text}" has characters outside its set`);
  }
  return tlv(Tag.PrintableString, encoder.encode(text));
}

/**
 * Encodes an IA5String (ASCII).
 *
 * @param text The text: ASCII only.
 * @returns The DER encoding.
 */
export function ia5String(text: string): Uint8Array<ArrayBuffer> {
  // deno-lint-ignore no-control-regex
  if (!/^[\x00-\x7f]*$/.test(text)) {
    throw new TypeError(`Cannot encode IA5String: "${text}" is not ASCII`);
  }
  return tlv(Tag.Ia5String, encoder.encode(text));
}

function pad2(n: number): string {
  return String(n).padStart(2, "0");
}

function timeDigits(date: Date): string {
  if (Number.isNaN(date.getTime())) throw new RangeError("Cannot encode time: the date is invalid");
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) {
    throw new RangeError(`Cannot encode time: year ${year} is not 0 to 9999`);
  }
  return String(year).padStart(4, "0") + pad2(date.getUTCMonth() + 1) + pad2(date.getUTCDate()) +
    pad2(date.getUTCHours()) + pad2(date.getUTCMinutes()) + pad2(date.getUTCSeconds()) + "Z";
}

/**
 * Encodes a UTCTime (`YYMMDDHHMMSSZ`), which covers the years 1950 to 2049. Milliseconds are dropped.
 *
 * @param date The time.
 * @returns The DER encoding.
 */
export function utcTime(date: Date): Uint8Array<ArrayBuffer> {
  const digits = timeDigits(date);
  const year = date.getUTCFullYear();
  if (year < 1950 || year > 2049) {
    throw new RangeError(`Cannot encode UTCTime: year ${year} is not 1950 to 2049`);
  }
  return tlv(Tag.UtcTime, encoder.encode(digits.slice(2)));
}

/**
 * Encodes a GeneralizedTime (`YYYYMMDDHHMMSSZ`). Milliseconds are dropped.
 *
 * @param date The time.
 * @returns The DER encoding.
 */
export function generalizedTime(date: Date): Uint8Array<ArrayBuffer> {
  return tlv(Tag.GeneralizedTime, encoder.encode(timeDigits(date)));
}

/**
 * Encodes an X.509 Time: UTCTime through 2049, GeneralizedTime from 2050 (RFC 5280, 4.1.2.5).
 *
 * @param date The time.
 * @returns The DER encoding.
 */
export function x509Time(date: Date): Uint8Array<ArrayBuffer> {
  const year = date.getUTCFullYear();
  return year >= 1950 && year <= 2049 ? utcTime(date) : generalizedTime(date);
}

/**
 * Wraps an encoded value in an EXPLICIT context-specific tag: `[number] { value }`.
 *
 * @param number The tag number, 0 to 30.
 * @param value The complete encoding of the inner value.
 * @returns The DER encoding.
 */
export function explicit(number: number, value: Uint8Array): Uint8Array<ArrayBuffer> {
  return tlv(CONTEXT | CONSTRUCTED | checkTagNumber(number), value);
}

/** Options for {@linkcode implicit}. */
export interface ImplicitOptions {
  /**
   * Whether the underlying type is constructed (a SEQUENCE or SET), so that the tag must be too.
   *
   * @default {false}
   */
  constructed?: boolean;
}

/**
 * Encodes contents under an IMPLICIT context-specific tag, `[number]`, which replaces the
 * underlying type's own tag.
 *
 * @param number The tag number, 0 to 30.
 * @param contents The contents octets of the underlying value (without its tag and length).
 * @param options Whether the tag is constructed.
 * @returns The DER encoding.
 */
export function implicit(
  number: number,
  contents: Uint8Array,
  options?: ImplicitOptions,
): Uint8Array<ArrayBuffer> {
  const constructed = options?.constructed ? CONSTRUCTED : 0;
  return tlv(CONTEXT | constructed | checkTagNumber(number), contents);
}

function checkTagNumber(number: number): number {
  if (!Number.isInteger(number) || number < 0 || number > MAX_TAG_NUMBER) {
    throw new RangeError(`Cannot encode context tag: ${number} is not 0 to ${MAX_TAG_NUMBER}`);
  }
  return number;
}
