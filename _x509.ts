/**
 * X.509 for tlsrpc's development certificates: ECDSA P-256 keys in PKCS#8, and CA and leaf
 * certificates signed with WebCrypto, with the checks {@linkcode ./dev_cert.ts} makes before it
 * keeps a certificate it finds. Reading certificates is in {@linkcode ./_x509_read.ts}, their
 * names in {@linkcode ./_x509_names.ts}, and client identities in
 * {@linkcode ./_x509_identity.ts}, whose {@linkcode readCertificateIdentity} this module
 * re-exports for the transports. Private to tlsrpc.
 *
 * @example Make a CA and a server certificate it signs
 * ```ts
 * import { createCa, createKey, issueServer } from "./_x509.ts";
 * import { serverNames } from "./_x509_names.ts";
 *
 * const now = new Date();
 * const ca = await createCa(await createKey(), undefined, now);
 * const server = await issueServer(ca, await createKey(), serverNames([]), now);
 * console.log(server.pem.startsWith("-----BEGIN CERTIFICATE-----")); // true
 * ```
 *
 * @module
 */

import {
  bitString,
  boolean,
  concat,
  explicit,
  implicit,
  integer,
  namedBits,
  octetString,
  oid,
  sequence,
  set,
  utf8String,
  x509Time,
} from "./_der.ts";
import { parseDer, readBitString, readOctetString, readUnsigned } from "./_der_read.ts";
import { Tag } from "./_der_tag.ts";
import { type HostName, MAX_COMMON_NAME } from "./_x509_names.ts";
import { OID } from "./_x509_oid.ts";
import {
  type Certificate,
  equalBytes,
  fromPem,
  isCa,
  readCertificate,
  toPem,
} from "./_x509_read.ts";

// The transports import client identities from here.
export { type CertificateIdentity, readCertificateIdentity } from "./_x509_identity.ts";

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

// keyUsage bit numbers (RFC 5280, 4.2.1.3).
const KEY_USAGE = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

const ECDSA_P256 = { name: "ECDSA", namedCurve: "P-256" } as const;
const ECDSA_SHA256 = { name: "ECDSA", hash: "SHA-256" } as const;
// P-256 scalars (and so the halves of a raw signature) are 32 bytes.
const P256_SCALAR_BYTES = 32;

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
// Keeping certificates

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
