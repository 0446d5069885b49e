/**
 * A small DER (Distinguished Encoding Rules, X.690) encoder and parser: just enough ASN.1 to write
 * and read the X.509 certificates of {@linkcode ./_x509.ts}. Private to tlsrpc.
 *
 * @example Encode a sequence and read it back
 * ```ts
 * import { integer, parseDer, readInteger, sequence, utf8String } from "./_der.ts";
 *
 * const der = sequence([integer(42), utf8String("hello")]);
 * const node = parseDer(der);
 * console.log(readInteger(node.children[0]!)); // 42n
 * ```
 *
 * @module
 */

/** The universal tags (identifier octets) this module writes and reads. */
export const Tag = {
  /** BOOLEAN. */
  Boolean: 0x01,
  /** INTEGER. */
  Integer: 0x02,
  /** BIT STRING. */
  BitString: 0x03,
  /** OCTET STRING. */
  OctetString: 0x04,
  /** NULL. */
  Null: 0x05,
  /** OBJECT IDENTIFIER. */
  Oid: 0x06,
  /** UTF8String. */
  Utf8String: 0x0c,
  /** PrintableString. */
  PrintableString: 0x13,
  /** TeletexString (T61String), read as Latin-1 as most software does. */
  TeletexString: 0x14,
  /** IA5String (ASCII). */
  Ia5String: 0x16,
  /** UTCTime. */
  UtcTime: 0x17,
  /** GeneralizedTime. */
  GeneralizedTime: 0x18,
  /** VisibleString (printable ASCII). */
  VisibleString: 0x1a,
  /** UniversalString (UTF-32BE). */
  UniversalString: 0x1c,
  /** BMPString (UTF-16BE). */
  BmpString: 0x1e,
  /** SEQUENCE and SEQUENCE OF (constructed). */
  Sequence: 0x30,
  /** SET and SET OF (constructed). */
  Set: 0x31,
} as const;

const CONSTRUCTED = 0x20;
const CONTEXT = 0x80;
// Low-tag-number form only: X.509 never needs tag numbers of 31 and above.
const MAX_TAG_NUMBER = 30;
// Four length octets describe 4 GiB; nothing this module reads comes near that.
const MAX_LENGTH_OCTETS = 4;
// A UUID arc (2.25.n, X.667) takes 19 base-128 octets, the longest arc in use; a longer one is
// hostile, and reading it would take time quadratic in its length.
const MAX_ARC_OCTETS = 20;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

// ---------------------------------------------------------------------------------------------
// Encoding

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

// ---------------------------------------------------------------------------------------------
// Parsing

/** One parsed DER value. */
export interface DerNode {
  /** The identifier octet, for example {@linkcode Tag.Sequence} or `0xa3` for `[3]` EXPLICIT. */
  readonly tag: number;
  /** The tag class: 0 universal, 1 application, 2 context-specific, 3 private. */
  readonly tagClass: number;
  /** The tag number within its class. */
  readonly tagNumber: number;
  /** Whether the encoding is constructed, so that {@linkcode DerNode.children} is filled. */
  readonly constructed: boolean;
  /** The contents octets. */
  readonly contents: Uint8Array<ArrayBuffer>;
  /** The whole encoding, tag and length included (for example, the signed part of a certificate). */
  readonly raw: Uint8Array<ArrayBuffer>;
  /** The parsed members of a constructed value; empty for a primitive one. */
  readonly children: readonly DerNode[];
}

/**
 * Parses one DER value, which must span all of `bytes`. Rejects indefinite lengths, lengths not in
 * their shortest form and high tag numbers, as DER does.
 *
 * @param bytes The encoding.
 * @returns The parsed value, with its constructed members parsed recursively.
 */
export function parseDer(bytes: Uint8Array<ArrayBuffer>): DerNode {
  const [node, end] = parseAt(bytes, 0, 0);
  if (end !== bytes.length) {
    throw new TypeError(`Cannot parse DER: ${bytes.length - end} bytes follow the value`);
  }
  return node;
}

// Certificates nest about ten deep; the bound keeps hostile input from exhausting the stack.
const MAX_DEPTH = 32;

function parseAt(bytes: Uint8Array<ArrayBuffer>, offset: number, depth: number): [DerNode, number] {
  if (depth > MAX_DEPTH) throw new TypeError(`Cannot parse DER: nested deeper than ${MAX_DEPTH}`);
  const start = offset;
  if (offset + 2 > bytes.length) {
    throw new TypeError(`Cannot parse DER: value at offset ${start} is truncated`);
  }
  const tag = bytes[offset++]!;
  if ((tag & 0x1f) === 0x1f) {
    throw new TypeError(`Cannot parse DER: high tag number at offset ${start} is not supported`);
  }
  let length = bytes[offset++]!;
  if (length === 0x80) {
    throw new TypeError(`Cannot parse DER: indefinite length at offset ${start}`);
  }
  if (length > 0x80) {
    const count = length & 0x7f;
    if (count > MAX_LENGTH_OCTETS || offset + count > bytes.length) {
      throw new TypeError(`Cannot parse DER: length at offset ${start} is too long`);
    }
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + bytes[offset++]!;
    if (length < 0x80 || bytes[offset - count] === 0) {
      throw new TypeError(`Cannot parse DER: length at offset ${start} is not minimal`);
    }
  }
  const end = offset + length;
  if (end > bytes.length) {
    throw new TypeError(`Cannot parse DER: value at offset ${start} is truncated`);
  }
  const constructed = (tag & CONSTRUCTED) !== 0;
  const children: DerNode[] = [];
  if (constructed) {
    let at = offset;
    while (at < end) {
      const [child, next] = parseAt(bytes.subarray(0, end), at, depth + 1);
      children.push(child);
      at = next;
    }
  }
  const node: DerNode = {
    tag,
    tagClass: tag >> 6,
    tagNumber: tag & 0x1f,
    constructed,
    contents: bytes.subarray(offset, end),
    raw: bytes.subarray(start, end),
    children,
  };
  return [node, end];
}

function hex(n: number): string {
  return "0x" + n.toString(16).padStart(2, "0");
}

function expectTag(node: DerNode, tag: number, what: string): void {
  if (node.tag !== tag) {
    throw new TypeError(`Cannot read ${what}: tag is ${hex(node.tag)}, not ${hex(tag)}`);
  }
}

/**
 * Reads an INTEGER in two's complement.
 *
 * @param node The parsed value.
 * @returns The integer.
 */
export function readInteger(node: DerNode): bigint {
  expectTag(node, Tag.Integer, "INTEGER");
  const bytes = node.contents;
  if (bytes.length === 0) throw new TypeError("Cannot read INTEGER: it has no contents");
  if (
    bytes.length > 1 &&
    ((bytes[0] === 0 && (bytes[1]! & 0x80) === 0) ||
      (bytes[0] === 0xff && (bytes[1]! & 0x80) !== 0))
  ) {
    throw new TypeError("Cannot read INTEGER: it is not in its shortest form");
  }
  // Through hex text: shifting a bigint byte by byte takes time quadratic in the length.
  let digits = "0x";
  for (const byte of bytes) digits += byte.toString(16).padStart(2, "0");
  return BigInt.asIntN(bytes.length * 8, BigInt(digits));
}

/**
 * Reads a non-negative INTEGER as a big-endian magnitude of a fixed size (as ECDSA's `r` and `s`).
 *
 * @param node The parsed value.
 * @param size The number of bytes to return; the value is left-padded with zeros.
 * @returns The magnitude.
 */
export function readUnsigned(node: DerNode, size: number): Uint8Array<ArrayBuffer> {
  const value = readInteger(node);
  if (value < 0n) throw new RangeError("Cannot read unsigned INTEGER: it is negative");
  const out = new Uint8Array(size);
  let rest = value;
  for (let i = size - 1; i >= 0; i--) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  if (rest !== 0n) throw new RangeError(`Cannot read unsigned INTEGER: it exceeds ${size} bytes`);
  return out;
}

/**
 * Reads a BOOLEAN.
 *
 * @param node The parsed value.
 * @returns The boolean.
 */
export function readBoolean(node: DerNode): boolean {
  expectTag(node, Tag.Boolean, "BOOLEAN");
  const [byte] = node.contents;
  if (node.contents.length !== 1 || (byte !== 0 && byte !== 0xff)) {
    throw new TypeError("Cannot read BOOLEAN: contents are not 00 or ff");
  }
  return byte === 0xff;
}

/**
 * Reads an OBJECT IDENTIFIER.
 *
 * @param node The parsed value.
 * @returns The identifier in dotted form.
 */
export function readOid(node: DerNode): string {
  expectTag(node, Tag.Oid, "OBJECT IDENTIFIER");
  const arcs: bigint[] = [];
  let value = 0n;
  let fresh = true;
  let octets = 0;
  for (const byte of node.contents) {
    if (fresh && byte === 0x80) {
      throw new TypeError("Cannot read OBJECT IDENTIFIER: an arc has a leading zero");
    }
    if (++octets > MAX_ARC_OCTETS) {
      throw new RangeError(
        `Cannot read OBJECT IDENTIFIER: an arc exceeds ${MAX_ARC_OCTETS} octets`,
      );
    }
    value = (value << 7n) | BigInt(byte & 0x7f);
    fresh = (byte & 0x80) === 0;
    if (fresh) {
      arcs.push(value);
      value = 0n;
      octets = 0;
    }
  }
  if (!fresh || arcs.length === 0) throw new TypeError("Cannot read OBJECT IDENTIFIER: truncated");
  const head = arcs[0]!;
  const first = head < 80n ? head / 40n : 2n;
  return [first, head - first * 40n, ...arcs.slice(1)].join(".");
}

/**
 * Reads a BIT STRING.
 *
 * @param node The parsed value.
 * @returns The bits, most significant first, and how many low bits of the last byte are unused.
 */
export function readBitString(
  node: DerNode,
): { bytes: Uint8Array<ArrayBuffer>; unusedBits: number } {
  expectTag(node, Tag.BitString, "BIT STRING");
  const unusedBits = node.contents[0];
  if (unusedBits === undefined || unusedBits > 7 || (node.contents.length === 1 && unusedBits)) {
    throw new TypeError("Cannot read BIT STRING: the unused-bits octet is invalid");
  }
  return { bytes: node.contents.subarray(1), unusedBits };
}

/**
 * Reads a named-bit BIT STRING (as in X.509 keyUsage).
 *
 * @param node The parsed value.
 * @returns The numbers of the bits that are set, ascending.
 */
export function readNamedBits(node: DerNode): number[] {
  const { bytes, unusedBits } = readBitString(node);
  const bits: number[] = [];
  const total = bytes.length * 8 - unusedBits;
  for (let bit = 0; bit < total; bit++) {
    if (bytes[bit >> 3]! & (0x80 >> (bit & 7))) bits.push(bit);
  }
  return bits;
}

/**
 * Reads an OCTET STRING.
 *
 * @param node The parsed value.
 * @returns The octets.
 */
export function readOctetString(node: DerNode): Uint8Array<ArrayBuffer> {
  expectTag(node, Tag.OctetString, "OCTET STRING");
  return node.contents;
}

/**
 * Reads a UTF8String, PrintableString or IA5String.
 *
 * @param node The parsed value.
 * @returns The text.
 */
export function readString(node: DerNode): string {
  if (
    node.tag !== Tag.Utf8String && node.tag !== Tag.PrintableString && node.tag !== Tag.Ia5String
  ) {
    throw new TypeError(`Cannot read string: tag ${hex(node.tag)} is not a string type`);
  }
  return decoder.decode(node.contents);
}

/**
 * Reads a UTCTime or GeneralizedTime in the forms DER allows (`Z`, whole seconds).
 *
 * @param node The parsed value.
 * @returns The time.
 */
export function readTime(node: DerNode): Date {
  const text = new TextDecoder().decode(node.contents);
  let match: RegExpExecArray | null;
  let year: number;
  if (node.tag === Tag.UtcTime) {
    match = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (match === null) throw new TypeError(`Cannot read UTCTime: "${text}" is not YYMMDDHHMMSSZ`);
    const yy = Number(match[1]);
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
  } else if (node.tag === Tag.GeneralizedTime) {
    match = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/.exec(text);
    if (match === null) {
      throw new TypeError(`Cannot read GeneralizedTime: "${text}" is not YYYYMMDDHHMMSSZ`);
    }
    year = Number(match[1]);
  } else {
    throw new TypeError(`Cannot read time: tag ${hex(node.tag)} is not a time type`);
  }
  const [month, day, hours, minutes, seconds] = match.slice(2).map(Number) as [
    number,
    number,
    number,
    number,
    number,
  ];
  const date = new Date(Date.UTC(2000, month - 1, day, hours, minutes, seconds));
  date.setUTCFullYear(year);
  if (
    date.getUTCMonth() !== month - 1 || date.getUTCDate() !== day || date.getUTCHours() !== hours ||
    date.getUTCMinutes() !== minutes || date.getUTCSeconds() !== seconds
  ) {
    throw new TypeError(`Cannot read time: "${text}" is not a valid date`);
  }
  return date;
}
