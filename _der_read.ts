/**
 * A small DER (Distinguished Encoding Rules, X.690) parser: just enough ASN.1 to read the X.509
 * certificates that {@linkcode ./_der.ts} writes, and the ones TLS peers present. Private to tlsrpc.
 *
 * @example Encode a sequence and read it back
 * ```ts
 * import { integer, sequence, utf8String } from "./_der.ts";
 * import { parseDer, readInteger } from "./_der_read.ts";
 *
 * const der = sequence([integer(42), utf8String("hello")]);
 * const node = parseDer(der);
 * console.log(readInteger(node.children[0]!)); // 42n
 * ```
 *
 * @module
 */

import { CONSTRUCTED, Tag } from "./_der_tag.ts";

// Four length octets describe 4 GiB; nothing this module reads comes near that.
const MAX_LENGTH_OCTETS = 4;
// A UUID arc (2.25.n, X.667) takes 19 base-128 octets, the longest arc in use; a longer one is
// hostile, and reading it would take time quadratic in its length.
const MAX_ARC_OCTETS = 20;

const decoder = new TextDecoder("utf-8", { fatal: true });

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
