/**
 * Client identities: {@linkcode readCertificateIdentity} reads who a certificate names (subject
 * attributes, subject alternative names, fingerprint) from its own DER, for the transports to
 * hand to handlers. Private to tlsrpc; {@linkcode ./_x509.ts} re-exports it.
 *
 * @example Read the identity of a certificate
 * ```ts
 * import { createCa, createKey } from "./_x509.ts";
 * import { fromPem } from "./_x509_read.ts";
 * import { readCertificateIdentity } from "./_x509_identity.ts";
 *
 * const ca = await createCa(await createKey(), undefined, new Date());
 * const identity = readCertificateIdentity(fromPem(ca.certPem, "CERTIFICATE", "certificate"));
 * console.log(identity.subject.CN); // ["tlsrpc development CA (...)"]
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type DerNode, parseDer, readBoolean, readOctetString, readOid } from "./_der_read.ts";
import { Tag } from "./_der_tag.ts";
import { OID } from "./_x509_oid.ts";

/** Who a client certificate says its holder is, read from the certificate's own DER. */
export interface CertificateIdentity {
  /**
   * Subject attributes by short name (CN, O, OU, C, L, ST, emailAddress, serialNumber, DC, UID,
   * or the dotted OID for others); each a list of its values in certificate order, so two CNs are
   * two entries and never joined. Null-prototype object.
   */
  readonly subject: Readonly<Record<string, readonly string[]>>;
  /** Subject alternative names in certificate order, each typed. */
  readonly altNames: readonly AltName[];
  /** SHA-256 fingerprint of the DER, uppercase colon-separated hex (as node's fingerprint256). */
  readonly fingerprint: string;
}

/** One subject alternative name (a GeneralName of RFC 5280, 4.2.1.6). */
export interface AltName {
  /**
   * `"DNS"` (dNSName), `"email"` (rfc822Name), `"URI"` (uniformResourceIdentifier), `"IP"`
   * (iPAddress), or `"other"` for otherName, x400Address, directoryName, ediPartyName and
   * registeredID.
   */
  readonly type: "DNS" | "email" | "URI" | "IP" | "other";
  /**
   * The name, character for character. An IP address is dotted IPv4 or RFC 5952 IPv6 (lowercase,
   * the longest run of zero groups as `::`, `::ffff:a.b.c.d` for IPv4-mapped ones). An `"other"`
   * name is its whole GeneralName DER in lowercase hex, tag included, so that kinds never collide.
   */
  readonly value: string;
}

// OpenSSL's default max_cert_list refuses a whole chain above 100 KiB, so a larger certificate is
// not one that common TLS stacks exchange; the bound keeps parsing time and memory small.
const MAX_CERTIFICATE_BYTES = 100 * 1024;

const SHORT_NAMES: ReadonlyMap<string, string> = new Map([
  ["2.5.4.3", "CN"],
  ["2.5.4.10", "O"],
  ["2.5.4.11", "OU"],
  ["2.5.4.6", "C"],
  ["2.5.4.7", "L"],
  ["2.5.4.8", "ST"],
  ["1.2.840.113549.1.9.1", "emailAddress"],
  ["2.5.4.5", "serialNumber"],
  ["0.9.2342.19200300.100.1.25", "DC"],
  ["0.9.2342.19200300.100.1.1", "UID"],
]);

// GeneralName tags (context-specific, RFC 5280 4.2.1.6) whose value is text.
const TEXT_NAMES: ReadonlyMap<number, AltName["type"]> = new Map([
  [0x81, "email"],
  [0x82, "DNS"],
  [0x86, "URI"],
]);
// otherName [0], x400Address [3], directoryName [4], ediPartyName [5] (constructed) and
// registeredID [8] (primitive).
const OTHER_NAMES: ReadonlySet<number> = new Set([0xa0, 0xa3, 0xa4, 0xa5, 0x88]);

// ignoreBOM: a leading U+FEFF is part of the value, not a byte order mark to drop.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf16 = new TextDecoder("utf-16be", { fatal: true, ignoreBOM: true });

/**
 * Reads who a certificate names: its subject attributes, its subject alternative names and its
 * fingerprint, from its DER. The signature is not checked (the TLS handshake did that).
 *
 * Nothing is joined into a string, so no value can pass for two: a comma in a name stays inside
 * it. Malformed input throws a `TypeError` (a `RangeError` when it is larger than 100 KiB); so
 * does a subject attribute whose value is not a character string, an alternative name that is not
 * ASCII, an IP address that is not 4 or 16 bytes, and a repeated extension.
 *
 * @param der The certificate, DER.
 * @returns Its identity.
 */
export function readCertificateIdentity(der: Uint8Array): CertificateIdentity {
  if (der.length > MAX_CERTIFICATE_BYTES) {
    throw new RangeError(
      `Cannot read certificate identity: ${der.length} bytes exceed ${MAX_CERTIFICATE_BYTES}`,
    );
  }
  const bytes = new Uint8Array(der);
  try {
    const { subject, extensions } = certificateParts(parseDer(bytes));
    const digest = createHash("sha256").update(bytes).digest("hex").toUpperCase();
    return {
      subject: readSubject(subject),
      altNames: extensions === undefined ? [] : readAltNames(extensions),
      fingerprint: digest.match(/../g)!.join(":"),
    };
  } catch (cause) {
    // The reason without its "Cannot ...: " prefix, for one message in the house form.
    const reason = (cause instanceof Error ? cause.message : String(cause)).replace(/^Cannot /, "");
    const message = `Cannot read certificate identity: ${reason}`;
    if (cause instanceof RangeError) throw new RangeError(message, { cause });
    throw new TypeError(message, { cause });
  }
}

function certificateParts(root: DerNode): { subject: DerNode; extensions?: DerNode } {
  const [tbs, algorithm, signature] = root.children;
  if (
    root.tag !== Tag.Sequence || root.children.length !== 3 || tbs?.tag !== Tag.Sequence ||
    algorithm?.tag !== Tag.Sequence || signature?.tag !== Tag.BitString
  ) {
    throw new TypeError("it is not a SEQUENCE of tbsCertificate, algorithm and signature");
  }
  const fields = [...tbs.children];
  if (fields[0]?.tag === 0xa0) fields.shift(); // version
  const [serial, tbsAlgorithm, issuer, validity, subject, spki, ...rest] = fields;
  if (
    serial?.tag !== Tag.Integer || tbsAlgorithm?.tag !== Tag.Sequence ||
    issuer?.tag !== Tag.Sequence || validity?.tag !== Tag.Sequence ||
    subject?.tag !== Tag.Sequence || spki?.tag !== Tag.Sequence
  ) {
    throw new TypeError("its tbsCertificate lacks a field");
  }
  // issuerUniqueID [1] and subjectUniqueID [2], then extensions [3], each at most once.
  let last = 0;
  let extensions: DerNode | undefined;
  for (const node of rest) {
    const number = node.tagClass === 2 ? node.tagNumber : 0;
    if (number <= last || number > 3) {
      throw new TypeError("its tbsCertificate has an unknown field");
    }
    last = number;
    if (number === 3) extensions = node;
  }
  return extensions === undefined ? { subject } : { subject, extensions };
}

function readSubject(name: DerNode): Record<string, string[]> {
  const subject: Record<string, string[]> = Object.create(null);
  for (const rdn of name.children) {
    if (rdn.tag !== Tag.Set || rdn.children.length === 0) {
      throw new TypeError("its subject has a part that is not a SET");
    }
    for (const attribute of rdn.children) {
      const [type, value] = attribute.children;
      if (
        attribute.tag !== Tag.Sequence || attribute.children.length !== 2 || type === undefined ||
        value === undefined
      ) {
        throw new TypeError("its subject has an attribute that is not a type and a value");
      }
      const id = readOid(type);
      const key = SHORT_NAMES.get(id) ?? id;
      (subject[key] ??= []).push(readText(value, `subject attribute "${key}"`));
    }
  }
  return subject;
}

function readAltNames(wrapper: DerNode): AltName[] {
  const [list] = wrapper.children;
  if (wrapper.children.length !== 1 || list?.tag !== Tag.Sequence) {
    throw new TypeError("its extensions are not a SEQUENCE");
  }
  const seen = new Set<string>();
  let names: AltName[] = [];
  for (const ext of list.children) {
    const [id, second, third] = ext.children;
    if (ext.tag !== Tag.Sequence || id === undefined || second === undefined) {
      throw new TypeError("an extension is not an identifier and a value");
    }
    if (third !== undefined) readBoolean(second);
    if (ext.children.length > 3) throw new TypeError("an extension has too many parts");
    const value = readOctetString(third ?? second);
    const oid = readOid(id);
    // RFC 5280, 4.2: a certificate carries each extension at most once; two SANs are ambiguous.
    if (seen.has(oid)) throw new TypeError(`extension "${oid}" appears twice`);
    seen.add(oid);
    if (oid === OID.subjectAltName) names = generalNames(parseDer(value));
  }
  return names;
}

function generalNames(node: DerNode): AltName[] {
  if (node.tag !== Tag.Sequence) {
    throw new TypeError("its subjectAltName is not a SEQUENCE");
  }
  return node.children.map((name): AltName => {
    const type = TEXT_NAMES.get(name.tag);
    if (type !== undefined) return { type, value: ascii(name.contents, `${type} name`) };
    if (name.tag === 0x87) return { type: "IP", value: formatIp(name.contents) };
    if (OTHER_NAMES.has(name.tag)) return { type: "other", value: hexOf(name.raw) };
    throw new TypeError(`its subjectAltName has an unknown name type (tag 0x${hexOf([name.tag])})`);
  });
}

function readText(node: DerNode, what: string): string {
  const bytes = node.contents;
  switch (node.tag) {
    case Tag.Utf8String:
      return utf8.decode(bytes);
    case Tag.PrintableString:
    case Tag.Ia5String:
    case Tag.VisibleString:
      return ascii(bytes, what);
    case Tag.TeletexString:
      return latin1(bytes);
    case Tag.BmpString:
      if (bytes.length % 2 !== 0) throw new TypeError(`${what} is an odd-length BMPString`);
      return utf16.decode(bytes); // fatal: a lone surrogate throws
    case Tag.UniversalString:
      return utf32(bytes, what);
  }
  throw new TypeError(`${what} is not a character string (tag 0x${hexOf([node.tag])})`);
}

function ascii(bytes: Uint8Array, what: string): string {
  if (bytes.some((byte) => byte > 0x7f)) throw new TypeError(`${what} is not ASCII`);
  return latin1(bytes);
}

function latin1(bytes: Uint8Array): string {
  let text = "";
  // In chunks: String.fromCharCode takes its bytes as arguments, of which there is a limit.
  for (let i = 0; i < bytes.length; i += 4096) {
    text += String.fromCharCode(...bytes.subarray(i, i + 4096));
  }
  return text;
}

function utf32(bytes: Uint8Array, what: string): string {
  if (bytes.length % 4 !== 0) throw new TypeError(`${what} is a UniversalString of odd length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let text = "";
  for (let i = 0; i < bytes.length; i += 4) {
    const point = view.getUint32(i);
    if (point > 0x10ffff || (point >= 0xd800 && point <= 0xdfff)) {
      throw new TypeError(`${what} holds a code point that is not a character`);
    }
    text += String.fromCodePoint(point);
  }
  return text;
}

/**
 * Writes an IP address as text: IPv4 dotted, IPv6 in the form of RFC 5952.
 *
 * @param bytes The address, 4 or 16 bytes.
 * @returns The text.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  if (bytes.length !== 16) throw new TypeError(`IP address is ${bytes.length} bytes, not 4 or 16`);
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  // RFC 5952, 5: IPv4-mapped addresses end in dotted IPv4.
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes.subarray(12).join(".")}`;
  }
  // RFC 5952, 4.2: "::" replaces the longest run of two or more zero groups, the first on a tie.
  let best = { start: -1, length: 1 };
  for (let start = 0; start < 8; start++) {
    let length = 0;
    while (start + length < 8 && groups[start + length] === 0) length++;
    if (length > best.length) best = { start, length };
  }
  const text = groups.map((group) => group.toString(16));
  if (best.start < 0) return text.join(":");
  const head = text.slice(0, best.start).join(":");
  const tail = text.slice(best.start + best.length).join(":");
  return `${head}::${tail}`;
}

function hexOf(bytes: ArrayLike<number>): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
