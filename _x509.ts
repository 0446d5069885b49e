/**
 * X.509 for tlsrpc's development certificates and client identities: ECDSA P-256 keys in
 * PKCS#8, CA and leaf certificates signed with WebCrypto, the fields {@linkcode ./dev_cert.ts}
 * checks before it reuses a certificate, and {@linkcode readCertificateIdentity}, which reads who
 * a client certificate names from its DER. Private to tlsrpc.
 *
 * @example Read the identity of a certificate
 * ```ts
 * import { createCa, createKey, fromPem, readCertificateIdentity } from "./_x509.ts";
 *
 * const ca = await createCa(await createKey(), undefined, new Date());
 * const identity = readCertificateIdentity(fromPem(ca.certPem, "CERTIFICATE", "certificate"));
 * console.log(identity.subject.CN); // ["tlsrpc development CA (...)"]
 * ```
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  bitString,
  boolean,
  concat,
  type DerNode,
  explicit,
  implicit,
  integer,
  namedBits,
  octetString,
  oid,
  parseDer,
  readBitString,
  readBoolean,
  readOctetString,
  readOid,
  readString,
  readTime,
  readUnsigned,
  sequence,
  set,
  Tag,
  utf8String,
  x509Time,
} from "./_der.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const encoder = new TextEncoder();

/**
 * How long development certificates last, in days, and when `writeDevCertificates` renews them.
 * Exported by `dev_cert.ts`.
 */
export const DEV_CERT_VALIDITY = {
  /**
   * The CA lasts 10 years, as mkcert's does: a CA that users add to a trust store should not need
   * adding again every year, and one that lives in a per-user state folder is not worth more care.
   */
  caDays: 3650,
  /**
   * Server and client certificates last 825 days: the longest TLS server certificate that Apple
   * platforms accept even from a private CA, and long enough to forget about.
   */
  leafDays: 825,
  /**
   * Certificates start one day before they are made, so that a peer whose clock runs behind (a VM
   * just resumed, a container without time sync) does not reject them as not yet valid.
   */
  backdateDays: 1,
  /**
   * A certificate that expires within 30 days is replaced (with the same key), so that a server
   * restarted now and then never meets an expired one, nor a warning that one is near.
   */
  renewDays: 30,
} as const;

// ---------------------------------------------------------------------------------------------
// Object identifiers

const OID = {
  commonName: "2.5.4.3",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
} as const;

// keyUsage bit numbers (RFC 5280, 4.2.1.3).
const KEY_USAGE = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

// The hosts every server certificate covers, before the ones a caller adds.
const DEFAULT_HOSTS = ["localhost", "127.0.0.1", "::1"] as const;

// RFC 5280's ub-common-name: longer common names are not interoperable.
const MAX_COMMON_NAME = 64;

const ECDSA_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;
// P-256 scalars (and so the halves of a raw signature) are 32 bytes.
const P256_SCALAR_BYTES = 32;

// ---------------------------------------------------------------------------------------------
// Host names

/** A subjectAltName entry, with a key that is equal for equal names. */
export type HostName =
  | { readonly kind: "dns"; readonly name: string; readonly key: string }
  | { readonly kind: "ip"; readonly bytes: Uint8Array; readonly key: string };

/**
 * Parses the hosts a server certificate covers: the default ones, then the extra ones, each once.
 *
 * @param extra DNS names (optionally `*.`) and IP addresses (IPv6 optionally bracketed).
 * @returns The names, in order.
 */
export function serverNames(extra: readonly string[]): HostName[] {
  const byKey = new Map<string, HostName>();
  for (const host of [...DEFAULT_HOSTS, ...extra]) {
    const name = parseHost(host);
    if (!byKey.has(name.key)) byKey.set(name.key, name);
  }
  return [...byKey.values()];
}

function parseHost(host: string): HostName {
  const ip = parseIp(host);
  if (ip !== undefined) return ipName(ip);
  const dns = host.toLowerCase().replace(/\.$/, "");
  const label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
  const valid = new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`);
  // A name of digits and dots only would be read as a malformed IPv4 address by some clients.
  if (dns.length > 253 || !valid.test(dns) || /^[0-9.]+$/.test(dns)) {
    throw new TypeError(
      `Cannot make server certificate: host "${host}" is neither a DNS name nor an IP address`,
    );
  }
  return dnsName(dns);
}

function dnsName(name: string): HostName {
  return { kind: "dns", name, key: `dns:${name}` };
}

function ipName(bytes: Uint8Array): HostName {
  return { kind: "ip", bytes, key: `ip:${Array.from(bytes).join(".")}` };
}

function parseIp(text: string): Uint8Array | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return v4;
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return bare.includes(":") ? parseIpv6(bare) : undefined;
}

function parseIpv4(text: string): Uint8Array | undefined {
  const octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  const match = new RegExp(`^${octet}\\.${octet}\\.${octet}\\.${octet}$`).exec(text);
  return match === null ? undefined : Uint8Array.from(match.slice(1), Number);
}

function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = ipv6Groups(halves[0]!);
  const tail = halves.length === 2 ? ipv6Groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 1 ? 0 : missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (const [i, group] of all.entries()) {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  }
  return bytes;
}

/** The 16-bit groups of one side of an IPv6 address's `::`; the last may be dotted IPv4. */
function ipv6Groups(part: string): number[] | undefined {
  if (part === "") return [];
  const out: number[] = [];
  const pieces = part.split(":");
  for (const [i, piece] of pieces.entries()) {
    const v4 = i === pieces.length - 1 ? parseIpv4(piece) : undefined;
    if (v4 !== undefined) {
      out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
      out.push(parseInt(piece, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

/**
 * Checks the common name of a client certificate.
 *
 * @param name The name: 1 to 64 characters, none of them a control character.
 */
export function checkClientName(name: string): void {
  // deno-lint-ignore no-control-regex
  if (name.length === 0 || [...name].length > MAX_COMMON_NAME || /[\x00-\x1f\x7f]/.test(name)) {
    throw new TypeError(
      `Cannot make client certificate: name "${name}" is not 1 to ${MAX_COMMON_NAME} printable characters`,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Keys

/** An ECDSA P-256 key pair, ready to sign and to be written. */
export interface Key {
  readonly privateKey: CryptoKey;
  /** The SubjectPublicKeyInfo, DER. */
  readonly spki: Uint8Array<ArrayBuffer>;
  /** The PKCS#8 PEM text. */
  readonly pem: string;
}

/**
 * Makes an ECDSA P-256 key.
 *
 * @returns The key.
 */
export async function createKey(): Promise<Key> {
  // Extractable so that the private key can be exported to PKCS#8, and only for that.
  const pair = await crypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  return { privateKey: pair.privateKey, spki, pem: toPem("PRIVATE KEY", pkcs8) };
}

/**
 * Loads an unencrypted PKCS#8 ECDSA P-256 key.
 *
 * @param pem The PEM text.
 * @param what What the key is, for error messages.
 * @returns The key.
 */
export async function loadKey(pem: string, what: string): Promise<Key> {
  if (/-----BEGIN (EC|ENCRYPTED) PRIVATE KEY-----/.test(pem)) {
    throw new TypeError(
      `Cannot load ${what}: it is not an unencrypted PKCS#8 key (convert it with "openssl pkcs8 -topk8 -nocrypt")`,
    );
  }
  const pkcs8 = fromPem(pem, "PRIVATE KEY", what);
  try {
    const privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, ECDSA_P256, true, ["sign"]);
    // WebCrypto derives no public key from a private one, but the JWK export carries its point.
    const { x = "", y = "" } = await crypto.subtle.exportKey("jwk", privateKey);
    const publicJwk = { kty: "EC", crv: "P-256", x, y };
    const publicKey = await crypto.subtle.importKey("jwk", publicJwk, ECDSA_P256, true, ["verify"]);
    const spki = new Uint8Array(await crypto.subtle.exportKey("spki", publicKey));
    return { privateKey, spki, pem: toPem("PRIVATE KEY", pkcs8) };
  } catch (cause) {
    throw new TypeError(`Cannot load ${what}: it is not an ECDSA P-256 key`, { cause });
  }
}

/** The subject key identifier of RFC 5280, 4.2.1.2, method 1: SHA-1 of the public key bits. */
async function keyIdentifier(spki: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const [, publicKey] = parseDer(spki).children;
  if (publicKey === undefined) throw new TypeError("Cannot read public key: it is truncated");
  const { bytes } = readBitString(publicKey);
  return new Uint8Array(await crypto.subtle.digest("SHA-1", bytes));
}

// ---------------------------------------------------------------------------------------------
// Issuing certificates

/** A CA ready to sign. */
export interface Ca {
  readonly key: Key;
  readonly certPem: string;
  /** The CA's subject Name, DER, to copy byte for byte into the issuer of what it signs. */
  readonly subject: Uint8Array<ArrayBuffer>;
  readonly keyId: Uint8Array<ArrayBuffer>;
  readonly notAfter: Date;
  readonly verifyKey: CryptoKey;
}

/** A certificate just issued. */
export interface Issued {
  readonly pem: string;
  readonly notAfter: Date;
}

/**
 * Makes a self-signed CA certificate for a key.
 *
 * @param key The CA's key.
 * @param subject The subject to keep (when renewing), or `undefined` for a new one.
 * @param now The time the certificate is made at.
 * @returns The CA.
 */
export async function createCa(
  key: Key,
  subject: Uint8Array<ArrayBuffer> | undefined,
  now: Date,
): Promise<Ca> {
  const name = subject ?? distinguishedName(caCommonName());
  const keyId = await keyIdentifier(key.spki);
  const notAfter = new Date(now.getTime() + DEV_CERT_VALIDITY.caDays * DAY_MS);
  const der = await signCertificate({
    issuer: name,
    subject: name,
    notBefore: backdated(now),
    notAfter,
    spki: key.spki,
    extensions: [
      extension(OID.basicConstraints, true, sequence([boolean(true), integer(0)])),
      extension(
        OID.keyUsage,
        true,
        namedBits([KEY_USAGE.keyCertSign, KEY_USAGE.cRLSign]),
      ),
      extension(OID.subjectKeyIdentifier, false, octetString(keyId)),
    ],
    signingKey: key.privateKey,
  });
  return await caFrom(key, toPem("CERTIFICATE", der), readCertificate(der));
}

/**
 * Loads a CA given as a PEM certificate and its key, checking that it can sign at `now`.
 *
 * @param certPem The CA certificate.
 * @param key The CA's key.
 * @param now The time to check its expiry against.
 * @returns The CA.
 */
export async function loadCa(certPem: string, key: Key, now: Date): Promise<Ca> {
  const cert = readCertificate(fromPem(certPem, "CERTIFICATE", "CA certificate"));
  if (!equalBytes(cert.spki, key.spki)) {
    throw new TypeError("Cannot use development CA: its certificate does not match its key");
  }
  if (!isCa(cert)) {
    throw new TypeError("Cannot use development CA: its certificate is not a CA certificate");
  }
  if (cert.notAfter <= now) {
    throw new RangeError(
      `Cannot use development CA: its certificate expired at "${cert.notAfter.toISOString()}"`,
    );
  }
  return await caFrom(key, toPem("CERTIFICATE", cert.der), cert);
}

/**
 * Makes a CA of a key and its certificate, read already.
 *
 * @param key The CA's key.
 * @param certPem The certificate as PEM.
 * @param cert The certificate as read.
 * @returns The CA.
 */
export async function caFrom(key: Key, certPem: string, cert: Certificate): Promise<Ca> {
  const ski = cert.extensions.get(OID.subjectKeyIdentifier);
  const keyId = ski === undefined
    ? await keyIdentifier(cert.spki)
    : readOctetString(parseDer(ski.value));
  const verifyKey = await crypto.subtle.importKey("spki", cert.spki, ECDSA_P256, true, ["verify"]);
  return { key, certPem, subject: cert.subject, keyId, notAfter: cert.notAfter, verifyKey };
}

function caCommonName(): string {
  const prefix = "tlsrpc development CA";
  let host: string;
  try {
    host = Deno.hostname();
  } catch {
    // Without --allow-sys the CA is nameless, which is harmless: the name only helps people.
    return prefix;
  }
  const room = MAX_COMMON_NAME - prefix.length - 3;
  return `${prefix} (${[...host].slice(0, room).join("")})`;
}

/**
 * Issues a server certificate for the hosts.
 *
 * @param ca The CA that signs.
 * @param key The server's key.
 * @param hosts The names, from {@linkcode serverNames}.
 * @param now The time the certificate is made at.
 * @returns The certificate.
 */
export async function issueServer(
  ca: Ca,
  key: Key,
  hosts: readonly HostName[],
  now: Date,
): Promise<Issued> {
  // GeneralName: dNSName [2] IA5String, iPAddress [7] OCTET STRING, both IMPLICIT.
  const names = hosts.map((host) =>
    host.kind === "dns" ? implicit(2, encoder.encode(host.name)) : implicit(7, host.bytes)
  );
  return await issueLeaf(ca, key, now, "tlsrpc development server", [
    extension(OID.extKeyUsage, false, sequence([oid(OID.serverAuth), oid(OID.clientAuth)])),
    extension(OID.subjectAltName, false, sequence(names)),
  ]);
}

/**
 * Issues a client certificate with a common name.
 *
 * @param ca The CA that signs.
 * @param key The client's key.
 * @param name The common name, checked by {@linkcode checkClientName}.
 * @param now The time the certificate is made at.
 * @returns The certificate.
 */
export async function issueClient(ca: Ca, key: Key, name: string, now: Date): Promise<Issued> {
  return await issueLeaf(ca, key, now, name, [
    extension(OID.extKeyUsage, false, sequence([oid(OID.clientAuth)])),
  ]);
}

async function issueLeaf(
  ca: Ca,
  key: Key,
  now: Date,
  commonName: string,
  extensions: readonly Uint8Array[],
): Promise<Issued> {
  const wanted = now.getTime() + DEV_CERT_VALIDITY.leafDays * DAY_MS;
  const notAfter = new Date(Math.min(wanted, ca.notAfter.getTime()));
  const der = await signCertificate({
    issuer: ca.subject,
    subject: distinguishedName(commonName),
    notBefore: backdated(now),
    notAfter,
    spki: key.spki,
    extensions: [
      extension(OID.basicConstraints, true, sequence([])),
      extension(OID.keyUsage, true, namedBits([KEY_USAGE.digitalSignature])),
      ...extensions,
      extension(OID.subjectKeyIdentifier, false, octetString(await keyIdentifier(key.spki))),
      extension(OID.authorityKeyIdentifier, false, sequence([implicit(0, ca.keyId)])),
    ],
    signingKey: ca.key.privateKey,
  });
  return { pem: toPem("CERTIFICATE", der), notAfter: readCertificate(der).notAfter };
}

function backdated(now: Date): Date {
  return new Date(now.getTime() - DEV_CERT_VALIDITY.backdateDays * DAY_MS);
}

function distinguishedName(commonName: string): Uint8Array<ArrayBuffer> {
  return sequence([set([sequence([oid(OID.commonName), utf8String(commonName)])])]);
}

function extension(id: string, critical: boolean, value: Uint8Array): Uint8Array<ArrayBuffer> {
  // DER leaves out a BOOLEAN that equals its DEFAULT (FALSE).
  return sequence([oid(id), ...(critical ? [boolean(true)] : []), octetString(value)]);
}

interface CertificateFields {
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array;
  readonly extensions: readonly Uint8Array[];
  readonly signingKey: CryptoKey;
}

async function signCertificate(fields: CertificateFields): Promise<Uint8Array<ArrayBuffer>> {
  // 16 random bytes with the top bit clear (positive) and the next set (no byte is dropped).
  const serial = crypto.getRandomValues(new Uint8Array(16));
  serial[0] = (serial[0]! & 0x7f) | 0x40;
  const algorithm = sequence([oid(OID.ecdsaWithSha256)]);
  const tbs = sequence([
    explicit(0, integer(2)), // v3
    integer(serial),
    algorithm,
    fields.issuer,
    sequence([x509Time(fields.notBefore), x509Time(fields.notAfter)]),
    fields.subject,
    fields.spki,
    explicit(3, sequence(fields.extensions)),
  ]);
  const raw = new Uint8Array(await crypto.subtle.sign(ECDSA_SHA256, fields.signingKey, tbs));
  return sequence([tbs, algorithm, bitString(rawToDerSignature(raw))]);
}

/**
 * Turns WebCrypto's ECDSA signature, `r || s` (IEEE P1363), into X.509's DER
 * `SEQUENCE { INTEGER r, INTEGER s }`.
 */
function rawToDerSignature(raw: Uint8Array): Uint8Array<ArrayBuffer> {
  const half = raw.length / 2;
  return sequence([integer(raw.subarray(0, half)), integer(raw.subarray(half))]);
}

function derToRawSignature(der: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  const node = parseDer(der);
  const [r, s] = node.children;
  if (node.tag !== Tag.Sequence || r === undefined || s === undefined || node.children.length > 2) {
    throw new TypeError("Cannot read ECDSA signature: it is not a SEQUENCE of two INTEGERs");
  }
  return concat([readUnsigned(r, P256_SCALAR_BYTES), readUnsigned(s, P256_SCALAR_BYTES)]);
}

// ---------------------------------------------------------------------------------------------
// Reading certificates

/** The fields of a certificate that development certificates are checked by. */
export interface Certificate {
  readonly der: Uint8Array<ArrayBuffer>;
  readonly tbs: Uint8Array<ArrayBuffer>;
  readonly issuer: Uint8Array<ArrayBuffer>;
  readonly subject: Uint8Array<ArrayBuffer>;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spki: Uint8Array<ArrayBuffer>;
  readonly extensions: ReadonlyMap<string, { critical: boolean; value: Uint8Array<ArrayBuffer> }>;
  readonly signatureAlgorithm: string;
  readonly signature: Uint8Array<ArrayBuffer>;
}

/**
 * Reads the fields of a DER certificate.
 *
 * @param der The certificate.
 * @returns Its fields.
 */
export function readCertificate(der: Uint8Array<ArrayBuffer>): Certificate {
  try {
    const [tbsNode, algorithm, signature] = parseDer(der).children;
    if (tbsNode === undefined || algorithm?.children[0] === undefined || signature === undefined) {
      throw new TypeError("it lacks a part");
    }
    const fields = [...tbsNode.children];
    if (fields[0]?.tag === 0xa0) fields.shift(); // version
    const [, , issuer, validity, subject, spki, ...rest] = fields;
    const [notBefore, notAfter] = validity?.children ?? [];
    if (subject === undefined || spki === undefined || !notBefore || !notAfter || !issuer) {
      throw new TypeError("it lacks a part");
    }
    const extensions = new Map<string, { critical: boolean; value: Uint8Array<ArrayBuffer> }>();
    for (const ext of rest.find((node) => node.tag === 0xa3)?.children[0]?.children ?? []) {
      const [id, second, third] = ext.children;
      if (id === undefined || second === undefined) throw new TypeError("an extension is empty");
      const critical = third === undefined ? false : readBoolean(second);
      extensions.set(readOid(id), { critical, value: readOctetString(third ?? second) });
    }
    return {
      der,
      tbs: tbsNode.raw,
      issuer: issuer.raw,
      subject: subject.raw,
      notBefore: readTime(notBefore),
      notAfter: readTime(notAfter),
      spki: spki.raw,
      extensions,
      signatureAlgorithm: readOid(algorithm.children[0]),
      signature: readBitString(signature).bytes,
    };
  } catch (cause) {
    throw new TypeError("Cannot read certificate: it is not a valid X.509 certificate", { cause });
  }
}

/**
 * Reads a PEM certificate, or gives `undefined` for a text that is not one.
 *
 * @param pem The text.
 * @returns The certificate's fields, or `undefined`.
 */
export function tryReadCertificate(pem: string): Certificate | undefined {
  try {
    return readCertificate(fromPem(pem, "CERTIFICATE", "certificate"));
  } catch {
    return undefined;
  }
}

/**
 * Tells whether a certificate has basicConstraints `CA:TRUE`.
 *
 * @param cert The certificate.
 * @returns Whether it is a CA certificate.
 */
export function isCa(cert: Certificate): boolean {
  const constraints = cert.extensions.get(OID.basicConstraints);
  if (constraints === undefined) return false;
  try {
    const [ca] = parseDer(constraints.value).children;
    return ca !== undefined && ca.tag === Tag.Boolean && readBoolean(ca);
  } catch {
    return false;
  }
}

/**
 * Tells whether a server certificate is for serverAuth and covers every host.
 *
 * @param cert The certificate.
 * @param hosts The hosts it must cover, from {@linkcode serverNames}.
 * @returns Whether it does.
 */
export function coversHosts(cert: Certificate, hosts: readonly HostName[]): boolean {
  const have = new Set(subjectAltNames(cert).map((host) => host.key));
  return hasServerAuth(cert) && hosts.every((host) => have.has(host.key));
}

function hasServerAuth(cert: Certificate): boolean {
  const eku = cert.extensions.get(OID.extKeyUsage);
  return eku !== undefined &&
    parseDer(eku.value).children.some((node) => readOid(node) === OID.serverAuth);
}

function subjectAltNames(cert: Certificate): HostName[] {
  const san = cert.extensions.get(OID.subjectAltName);
  if (san === undefined) return [];
  const names: HostName[] = [];
  for (const node of parseDer(san.value).children) {
    if (node.tag === 0x82) {
      names.push(dnsName(new TextDecoder().decode(node.contents).toLowerCase()));
    } else if (node.tag === 0x87) {
      names.push(ipName(node.contents));
    }
  }
  return names;
}

/**
 * Reads the first common name of a DER Name.
 *
 * @param name The Name.
 * @returns The common name, or `undefined` when it has none.
 */
export function commonName(name: Uint8Array<ArrayBuffer>): string | undefined {
  for (const rdn of parseDer(name).children) {
    for (const attribute of rdn.children) {
      const [type, value] = attribute.children;
      if (type !== undefined && value !== undefined && readOid(type) === OID.commonName) {
        return readString(value);
      }
    }
  }
  return undefined;
}

async function signedBy(cert: Certificate, ca: Ca): Promise<boolean> {
  if (!equalBytes(cert.issuer, ca.subject) || cert.signatureAlgorithm !== OID.ecdsaWithSha256) {
    return false;
  }
  try {
    const raw = derToRawSignature(cert.signature);
    return await crypto.subtle.verify(ECDSA_SHA256, ca.verifyKey, raw, cert.tbs);
  } catch {
    return false;
  }
}

/**
 * Tells whether an existing certificate can be kept: it is for the key, signed by the CA, does
 * not expire within `renewDays` and passes `fits`.
 *
 * @param cert The certificate.
 * @param key Its key.
 * @param ca The CA that must have signed it.
 * @param now The time to check its expiry against.
 * @param fits Whether its other fields are as wanted.
 * @returns Whether it can be kept.
 */
export async function stillFits(
  cert: Certificate,
  key: Key,
  ca: Ca,
  now: Date,
  fits: (cert: Certificate) => boolean,
): Promise<boolean> {
  try {
    return equalBytes(cert.spki, key.spki) && !expiresSoon(cert, now) && fits(cert) &&
      await signedBy(cert, ca);
  } catch {
    // A malformed extension: the certificate is not one of ours, so it is replaced.
    return false;
  }
}

/**
 * Tells whether a certificate expires within `renewDays` of `now`.
 *
 * @param cert The certificate.
 * @param now The time.
 * @returns Whether it should be renewed.
 */
export function expiresSoon(cert: Certificate, now: Date): boolean {
  return cert.notAfter.getTime() - now.getTime() <= DEV_CERT_VALIDITY.renewDays * DAY_MS;
}

// ---------------------------------------------------------------------------------------------
// PEM and bytes

/**
 * Writes DER as PEM, in lines of 64 characters.
 *
 * @param label The label, for example `"CERTIFICATE"`.
 * @param der The bytes.
 * @returns The PEM text.
 */
export function toPem(label: string, der: Uint8Array): string {
  let binary = "";
  for (const byte of der) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/**
 * Reads the first PEM block of a label.
 *
 * @param text The text.
 * @param label The label, for example `"CERTIFICATE"`.
 * @param what What the block is, for error messages.
 * @returns The bytes.
 */
export function fromPem(text: string, label: string, what: string): Uint8Array<ArrayBuffer> {
  const match = new RegExp(`-----BEGIN ${label}-----([^-]*)-----END ${label}-----`).exec(text);
  if (match === null) {
    throw new TypeError(`Cannot read ${what}: no "${label}" PEM block found`);
  }
  let binary: string;
  try {
    binary = atob(match[1]!.replace(/\s+/g, ""));
  } catch (cause) {
    throw new TypeError(`Cannot read ${what}: the "${label}" PEM block is not base64`, { cause });
  }
  return Uint8Array.from(binary, (char) => char.charCodeAt(0));
}

/**
 * Compares bytes.
 *
 * @param a Some bytes.
 * @param b Other bytes.
 * @returns Whether they are equal.
 */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

// ---------------------------------------------------------------------------------------------
// Certificate identities

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
