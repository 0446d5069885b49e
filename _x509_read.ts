/**
 * Reading X.509 certificates: PEM to DER and back, and the fields of a certificate that
 * {@linkcode ./dev_cert.ts} checks before it reuses one. Private to tlsrpc.
 *
 * @example Read when a certificate expires
 * ```ts
 * import { createCa, createKey } from "./_x509.ts";
 * import { fromPem, readCertificate } from "./_x509_read.ts";
 *
 * const ca = await createCa(await createKey(), undefined, new Date());
 * const cert = readCertificate(fromPem(ca.certPem, "CERTIFICATE", "certificate"));
 * console.log(cert.notAfter > new Date()); // true
 * ```
 *
 * @module
 */

import {
  parseDer,
  readBitString,
  readBoolean,
  readOctetString,
  readOid,
  readString,
  readTime,
} from "./_der_read.ts";
import { Tag } from "./_der_tag.ts";
import { OID } from "./_x509_oid.ts";

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
