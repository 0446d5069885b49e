// The checks the CLI makes on the PEM files it is given, before it listens or connects, so that a
// wrong file is refused at once in one line that names it and says what is wrong, rather than
// later in a TLS library's words: CA files must hold certificates; a server certificate must be
// readable and in force, and its key must be the one it certifies (checked by signing a test
// message with the key and verifying it with the certificate's public key, with WebCrypto).

import { CliError, ExitCode } from "./_cli_error.ts";
import { readFile } from "./_cli_flags.ts";
import { integer, nullValue, octetString, oid, sequence } from "./_der.ts";
import { type DerNode, parseDer, readOid } from "./_der_read.ts";
import { type Certificate, readCertificate } from "./_x509_read.ts";
import { reason } from "./_util.ts";

/** A PEM file as the CLI names it in messages, with its text. */
export interface PemFile {
  /** How messages name it: `--cert "cert.pem"`, `the development certificate "…/cert.pem"`. */
  readonly label: string;
  /** The file's text. */
  readonly text: string;
}

/** A PEM file a flag names, read, and labelled for messages as `--cert "FILE"`. */
export async function readPemFile(flag: string, path: string): Promise<PemFile> {
  return { label: `${flag} "${path}"`, text: await readFile(flag, path) };
}

/** The days before expiry from which `serve` warns about its certificate. */
export const EXPIRY_WARNING_DAYS = 7;

const DAY_MS = 86_400_000;

/** One PEM block: `-----BEGIN LABEL-----`, base64, `-----END LABEL-----`. */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([^-]*)-----END \1-----/g;

/** What swapping --cert and --key looks like, and what to say about it. */
const SWAPPED = "did you swap --cert and --key?";

const OIDS = {
  ecPublicKey: "1.2.840.10045.2.1",
  rsaEncryption: "1.2.840.113549.1.1.1",
  ed25519: "1.3.101.112",
} as const;

/** The curves WebCrypto (and rustls) take, by OID: name and the hash their signatures use. */
const CURVES = new Map([
  ["1.2.840.10045.3.1.7", { namedCurve: "P-256", hash: "SHA-256" }],
  ["1.3.132.0.34", { namedCurve: "P-384", hash: "SHA-384" }],
  ["1.3.132.0.35", { namedCurve: "P-521", hash: "SHA-512" }],
]);

/**
 * The certificates in a PEM file, in order (a chain starts with its leaf).
 *
 * @throws {CliError} Exit 2 when the file holds no certificate or one that cannot be read.
 */
export function readCertificates(file: PemFile): Certificate[] {
  const blocks = pemBlocks(file.text);
  const certificates = blocks.filter((block) => block.label === "CERTIFICATE");
  if (certificates.length === 0) {
    const key = blocks.some((block) => block.label.endsWith("PRIVATE KEY"));
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${file.label}: it holds no PEM certificate (no "-----BEGIN CERTIFICATE-----" block)`,
      { hint: key ? `it holds a private key: ${SWAPPED}` : "give a PEM certificate file" },
    );
  }
  return certificates.map((block, i) => {
    try {
      return readCertificate(block.der());
    } catch {
      const which = certificates.length === 1 ? "the certificate" : `certificate ${i + 1}`;
      throw new CliError(
        ExitCode.Usage,
        `Cannot use ${file.label}: ${which} in it is not a valid X.509 certificate`,
      );
    }
  });
}

/**
 * Checks a CA file of `--ca` or `--client-ca`: it must hold at least one certificate.
 *
 * @throws {CliError} Exit 2 naming the file.
 */
export function checkCaFile(file: PemFile): void {
  readCertificates(file);
}

/**
 * Checks a certificate and its key before they are used (by `serve`, or by a client for mutual
 * TLS): the certificate can be read and has not expired, and the key is the one it certifies.
 *
 * @param role Whose certificate it is, for the warnings.
 * @returns Warnings to print: a certificate not valid yet, or about to expire.
 * @throws {CliError} Exit 2 naming the file and what is wrong.
 */
export async function checkCertificateAndKey(
  cert: PemFile,
  key: PemFile,
  role: "server" | "client",
  now: Date = new Date(),
): Promise<string[]> {
  const leaf = readCertificates(cert)[0]!;
  const warnings: string[] = [];
  if (now > leaf.notAfter) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${cert.label}: it expired on ${leaf.notAfter.toISOString()}`,
      {
        hint: role === "server"
          ? "renew it; development certificates renew themselves when serve may write them"
          : 'renew it; "cert --client NAME" renews a development client certificate',
      },
    );
  }
  if (now < leaf.notBefore) {
    warnings.push(
      `warning: the ${role} certificate ${cert.label} is not valid until ` +
        `${leaf.notBefore.toISOString()}: peers refuse it until then (is the clock right?)`,
    );
  }
  if (leaf.notAfter.getTime() - now.getTime() < EXPIRY_WARNING_DAYS * DAY_MS) {
    warnings.push(
      `warning: the ${role} certificate expires on ${leaf.notAfter.toISOString()} (${cert.label})`,
    );
  }
  await checkKeyPair(leaf, cert.label, key);
  return warnings;
}

/**
 * Checks that `key` holds the private key of `cert`: same algorithm, and a message it signs
 * verifies with the certificate's public key. Algorithms WebCrypto cannot use are not checked
 * here (Deno's TLS still refuses a key that does not match).
 *
 * @throws {CliError} Exit 2 naming the key file and what is wrong.
 */
export async function checkKeyPair(
  cert: Certificate,
  certLabel: string,
  key: PemFile,
): Promise<void> {
  const pkcs8 = privateKeyInfo(key);
  let keyAlgorithm: Algorithm | undefined;
  let certAlgorithm: Algorithm | undefined;
  try {
    keyAlgorithm = algorithm(parseDer(pkcs8).children[1]);
    certAlgorithm = algorithm(parseDer(cert.spki).children[0]);
  } catch {
    throw new CliError(ExitCode.Usage, `Cannot use ${key.label}: it is not a valid private key`);
  }
  if (keyAlgorithm.id !== certAlgorithm.id) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${key.label}: it is not the key of ${certLabel} (the key is ${keyAlgorithm.name}, ` +
        `the certificate's is ${certAlgorithm.name})`,
    );
  }
  const { importParams, signParams } = keyAlgorithm;
  if (importParams === undefined || signParams === undefined) return;
  let privateKey: CryptoKey;
  try {
    privateKey = await crypto.subtle.importKey("pkcs8", pkcs8, importParams, false, ["sign"]);
  } catch (error) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${key.label}: it is not a valid private key (${reason(error)})`,
    );
  }
  let publicKey: CryptoKey;
  try {
    publicKey = await crypto.subtle.importKey("spki", cert.spki, importParams, false, ["verify"]);
  } catch {
    return; // a public key WebCrypto cannot take: Deno's TLS has the last word
  }
  const message = new TextEncoder().encode("tlsrpc: is this the certificate's key?");
  const signature = await crypto.subtle.sign(signParams, privateKey, message);
  if (!await crypto.subtle.verify(signParams, publicKey, signature, message)) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${key.label}: it is not the key of ${certLabel}, their public keys differ`,
      { hint: "give the key the certificate was made for" },
    );
  }
}

interface Algorithm {
  /** The key type and curve, for comparing: `1.2.840.10045.2.1/1.2.840.10045.3.1.7`. */
  readonly id: string;
  /** For messages: `an ECDSA P-256 key`. */
  readonly name: string;
  readonly importParams?: RsaHashedImportParams | EcKeyImportParams | { name: "Ed25519" };
  readonly signParams?: EcdsaParams | { name: "RSASSA-PKCS1-v1_5" } | { name: "Ed25519" };
}

/** The key type of an AlgorithmIdentifier (of a PKCS#8 key or of a certificate's SPKI). */
function algorithm(node: DerNode | undefined): Algorithm {
  const [id, params] = node?.children ?? [];
  if (id === undefined) throw new TypeError("Cannot read key: it has no algorithm");
  const type = readOid(id);
  switch (type) {
    case OIDS.ecPublicKey: {
      const curveId = params === undefined ? "" : readOid(params);
      const curve = CURVES.get(curveId);
      if (curve === undefined) return { id: `${type}/${curveId}`, name: `an EC key (${curveId})` };
      return {
        id: `${type}/${curveId}`,
        name: `an ECDSA ${curve.namedCurve} key`,
        importParams: { name: "ECDSA", namedCurve: curve.namedCurve },
        signParams: { name: "ECDSA", hash: curve.hash },
      };
    }
    case OIDS.rsaEncryption:
      return {
        id: type,
        name: "an RSA key",
        importParams: { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" },
        signParams: { name: "RSASSA-PKCS1-v1_5" },
      };
    case OIDS.ed25519:
      return {
        id: type,
        name: "an Ed25519 key",
        importParams: { name: "Ed25519" },
        signParams: { name: "Ed25519" },
      };
    default:
      return { id: type, name: `a key of algorithm ${type}` };
  }
}

/**
 * The PKCS#8 form of the private key in `key`: a `PRIVATE KEY` block as it is, an `RSA PRIVATE
 * KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC 1) block wrapped, as Deno's TLS takes all three.
 *
 * @throws {CliError} Exit 2 when there is no key, or only an encrypted one.
 */
function privateKeyInfo(key: PemFile): Uint8Array<ArrayBuffer> {
  const block = pemBlocks(key.text).find((block) => block.label.endsWith("PRIVATE KEY"));
  if (block?.label === "ENCRYPTED PRIVATE KEY" || /Proc-Type: *4, *ENCRYPTED/.test(key.text)) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${key.label}: the key is encrypted, and Deno's TLS takes only unencrypted keys`,
      { hint: "decrypt it, e.g. openssl pkey -in KEY -out KEY.plain, and keep that file 0600" },
    );
  }
  if (block === undefined) {
    const cert = /-----BEGIN CERTIFICATE-----/.test(key.text);
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${key.label}: it holds no PEM private key (no "-----BEGIN PRIVATE KEY-----" block)`,
      { hint: cert ? `it holds a certificate: ${SWAPPED}` : "give a PEM private key file" },
    );
  }
  let der: Uint8Array<ArrayBuffer>;
  try {
    der = block.der();
    if (block.label === "PRIVATE KEY") return der;
    if (block.label === "RSA PRIVATE KEY") {
      return sequence([
        integer(0),
        sequence([oid(OIDS.rsaEncryption), nullValue()]),
        octetString(der),
      ]);
    }
    if (block.label === "EC PRIVATE KEY") {
      // ECPrivateKey ::= SEQUENCE { version, privateKey, [0] parameters (the curve), [1] publicKey }
      const curve = parseDer(der).children.find((node) => node.tag === 0xa0)?.children[0];
      if (curve === undefined) throw new TypeError("Cannot read key: it names no curve");
      return sequence([
        integer(0),
        sequence([oid(OIDS.ecPublicKey), oid(readOid(curve))]),
        octetString(der),
      ]);
    }
  } catch {
    // Falls through to the error below.
  }
  throw new CliError(
    ExitCode.Usage,
    `Cannot use ${key.label}: its "${block.label}" block is not a valid private key`,
  );
}

/** The PEM blocks of `text`, each decoded only when asked. */
function pemBlocks(text: string): { label: string; der: () => Uint8Array<ArrayBuffer> }[] {
  return Array.from(text.matchAll(PEM_BLOCK), ([, label, body]) => ({
    label: label!,
    der: () => Uint8Array.from(atob(body!.replace(/\s+/g, "")), (char) => char.charCodeAt(0)),
  }));
}
