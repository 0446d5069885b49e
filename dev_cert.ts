/**
 * Development certificates in pure TypeScript: a local certificate authority (CA) and the server
 * and client certificates it signs, made with WebCrypto (ECDSA P-256, SHA-256), so that a tlsrpc
 * server can speak TLS on `localhost` without openssl or any other setup.
 *
 * - {@linkcode generateDevCertificates} makes them in memory, as PEM texts.
 * - {@linkcode writeDevCertificates} keeps them in a folder: it never overwrites a key, reuses what
 *   is still good and replaces only certificates that no longer fit.
 * - {@linkcode ensureDevCertificates} does the same in the tlsrpc state folder
 *   ({@linkcode defaultDevCertDir}), for a server that was given no certificate.
 * - {@linkcode certificateNotAfter} tells when a certificate expires.
 *
 * These certificates are for development only: whoever reads the CA key can impersonate any server
 * to every client that trusts the CA.
 *
 * @example Serve TLS on localhost with a fresh development CA
 * ```ts
 * import { generateDevCertificates } from "./dev_cert.ts";
 *
 * const { caCert, cert, key } = await generateDevCertificates();
 * using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
 * const accepted = listener.accept();
 * using client = await Deno.connectTls({
 *   hostname: "localhost",
 *   port: listener.addr.port,
 *   caCerts: [caCert],
 * });
 * using server = await accepted;
 * await Promise.all([client.handshake(), server.handshake()]);
 * ```
 *
 * @module
 */

import { posix, win32 } from "node:path";
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
 * How long development certificates last, in days, and when {@linkcode writeDevCertificates}
 * renews them.
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
// Public types

/** Options for {@linkcode generateDevCertificates}. */
export interface DevCertOptions {
  /**
   * Host names and IP addresses the server certificate covers besides `localhost`, `127.0.0.1` and
   * `::1`. IPv6 addresses may be bracketed (`"[fd00::1]"`); DNS names may start with `*.`.
   *
   * @default {[]}
   */
  hosts?: readonly string[];
  /**
   * The common name of a client certificate for mutual TLS; without it, none is made.
   *
   * @default {undefined}
   */
  clientName?: string;
  /**
   * The time the certificates are made at, from which their validity is counted.
   *
   * @default {new Date()}
   */
  now?: Date;
  /**
   * An existing CA, as PEM texts, to sign with instead of making a new one. The key must be an
   * ECDSA P-256 key in PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
   *
   * @default {undefined}
   */
  ca?: { readonly cert: string; readonly key: string };
  /**
   * Aborts the work; the promise then rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
}

/** The certificates and keys {@linkcode generateDevCertificates} makes, as PEM texts. */
export interface DevCertificates {
  /** The CA certificate, which clients trust (`caCerts`). */
  caCert: string;
  /** The CA's private key in PKCS#8. */
  caKey: string;
  /** The server certificate, signed by the CA. */
  cert: string;
  /** The server's private key in PKCS#8. */
  key: string;
  /** The client certificate, when {@linkcode DevCertOptions.clientName} was given. */
  clientCert?: string;
  /** The client's private key in PKCS#8, when {@linkcode DevCertOptions.clientName} was given. */
  clientKey?: string;
  /** When the server certificate expires. */
  notAfter: Date;
}

/** Options for {@linkcode writeDevCertificates}. */
export interface WriteDevCertOptions {
  /**
   * Host names and IP addresses the server certificate covers besides `localhost`, `127.0.0.1` and
   * `::1`. An existing server certificate that lacks one of them is replaced.
   *
   * @default {[]}
   */
  hosts?: readonly string[];
  /**
   * The common name of a client certificate for mutual TLS, kept in `client.pem` and `client.key`;
   * without it, those files are neither made nor touched.
   *
   * @default {undefined}
   */
  clientName?: string;
  /**
   * The time to check existing certificates against and to make new ones at.
   *
   * @default {new Date()}
   */
  now?: Date;
  /**
   * Aborts the work between files; the promise then rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
}

/** Options for {@linkcode ensureDevCertificates}. */
export interface EnsureDevCertOptions extends WriteDevCertOptions {
  /**
   * The folder of the certificates.
   *
   * @default {defaultDevCertDir()}
   */
  dir?: string;
}

/**
 * What {@linkcode writeDevCertificates} did with a file: `"created"` it, `"reused"` it as it was, or
 * `"replaced"` a certificate that no longer fit. Keys are never replaced.
 */
export type DevCertFileStatus = "created" | "reused" | "replaced";

/** A file {@linkcode writeDevCertificates} manages. */
export interface DevCertFile {
  /** The file's path. */
  readonly path: string;
  /** What was done with it. */
  readonly status: DevCertFileStatus;
}

/** The files of {@linkcode writeDevCertificates}, and what it did with each. */
export interface DevCertFiles {
  /** The folder. */
  readonly dir: string;
  /** `ca.pem`: the CA certificate, which clients trust. */
  readonly caCert: DevCertFile;
  /** `ca.key`: the CA's private key. */
  readonly caKey: DevCertFile;
  /** `cert.pem`: the server certificate. */
  readonly cert: DevCertFile;
  /** `key.pem`: the server's private key. */
  readonly key: DevCertFile;
  /** `client.pem`: the client certificate, when a client name was given. */
  readonly clientCert?: DevCertFile;
  /** `client.key`: the client's private key, when a client name was given. */
  readonly clientKey?: DevCertFile;
  /** When the server certificate expires. */
  readonly notAfter: Date;
}

/** The paths of the files in a development certificate folder, whether they exist or not. */
export interface DevCertPaths {
  /** `ca.pem`: the CA certificate, which clients trust. */
  readonly caCert: string;
  /** `ca.key`: the CA's private key. */
  readonly caKey: string;
  /** `cert.pem`: the server certificate. */
  readonly cert: string;
  /** `key.pem`: the server's private key. */
  readonly key: string;
  /** `client.pem`: the client certificate. */
  readonly clientCert: string;
  /** `client.key`: the client's private key. */
  readonly clientKey: string;
}

/** Options for {@linkcode defaultStateDir} and {@linkcode defaultDevCertDir}. */
export interface StateDirOptions {
  /**
   * Reads an environment variable.
   *
   * @default {(name) => Deno.env.get(name)}
   */
  env?: (name: string) => string | undefined;
  /**
   * The operating system whose conventions to follow.
   *
   * @default {Deno.build.os}
   */
  os?: typeof Deno.build.os;
}

// ---------------------------------------------------------------------------------------------
// Public functions

/**
 * Makes a development CA (unless {@linkcode DevCertOptions.ca} gives one), a server certificate it
 * signs for `localhost`, `127.0.0.1`, `::1` and the given hosts, and optionally a client
 * certificate, all in memory.
 *
 * The CA is self-signed, with basicConstraints `CA:TRUE, pathlen:0` and keyUsage `keyCertSign,
 * cRLSign`, both critical. The server certificate has keyUsage `digitalSignature` and
 * extendedKeyUsage `serverAuth, clientAuth`; the client certificate has its name as common name and
 * extendedKeyUsage `clientAuth`. Validity periods are in {@linkcode DEV_CERT_VALIDITY}; a
 * certificate never outlives its CA.
 *
 * @example Make certificates that also cover a LAN address
 * ```ts
 * import { generateDevCertificates } from "./dev_cert.ts";
 *
 * const certs = await generateDevCertificates({ hosts: ["192.168.1.20", "dev.example.test"] });
 * console.log(certs.cert.startsWith("-----BEGIN CERTIFICATE-----")); // true
 * console.log(certs.key.startsWith("-----BEGIN PRIVATE KEY-----")); // true
 * ```
 *
 * @param options The extra hosts, the client name, the time and an existing CA.
 * @returns The certificates and keys as PEM texts.
 */
export async function generateDevCertificates(options?: DevCertOptions): Promise<DevCertificates> {
  const signal = options?.signal;
  signal?.throwIfAborted();
  const now = checkNow(options?.now, "generate development certificates");
  const hosts = serverNames(options?.hosts ?? []);
  const clientName = options?.clientName;
  if (clientName !== undefined) checkClientName(clientName);
  const ca = options?.ca === undefined
    ? await createCa(await createKey(), undefined, now)
    : await loadCa(options.ca.cert, await loadKey(options.ca.key, "CA key"), now);
  signal?.throwIfAborted();
  const server = await createKey();
  const cert = await issueServer(ca, server, hosts, now);
  const certs: DevCertificates = {
    caCert: ca.certPem,
    caKey: ca.key.pem,
    cert: cert.pem,
    key: server.pem,
    notAfter: cert.notAfter,
  };
  if (clientName !== undefined) {
    signal?.throwIfAborted();
    const client = await createKey();
    certs.clientCert = (await issueClient(ca, client, clientName, now)).pem;
    certs.clientKey = client.pem;
  }
  signal?.throwIfAborted();
  return certs;
}

/**
 * Keeps development certificates in a folder, created if missing (mode 0700): `ca.pem`, `ca.key`,
 * `cert.pem`, `key.pem`, and `client.pem`, `client.key` when a client name is given. Key files are
 * written with mode 0600.
 *
 * It never overwrites a key file. What it does with files that exist:
 *
 * - A key is always reused: a certificate for it is issued when its certificate is missing or no
 *   longer fits.
 * - `ca.pem` is reused unless it expires within {@linkcode DEV_CERT_VALIDITY}`.renewDays` (or is not
 *   a certificate); it is then re-signed with the same key and subject, so that certificates it
 *   signed stay valid. A `ca.pem` that does not match `ca.key`, or one without `ca.key`, is an error
 *   rather than replaced, since it may be trusted somewhere: remove it to start over.
 * - `cert.pem` is reused when it matches `key.pem`, was signed by the CA, covers every requested
 *   host and does not expire within `renewDays`; otherwise it is replaced, covering the default and
 *   requested hosts only. `client.pem` likewise, when its common name is the client name.
 *
 * Certificates are written to a temporary file that is then renamed, so a reader never sees half
 * of one. Two calls racing on a new folder may fail with `Deno.errors.AlreadyExists` (one of them
 * created a key first); calling again then succeeds.
 *
 * @example Keep certificates in a folder and run again
 * ```ts
 * import { writeDevCertificates } from "./dev_cert.ts";
 *
 * const dir = await Deno.makeTempDir();
 * try {
 *   const first = await writeDevCertificates(dir, { hosts: ["dev.example.test"] });
 *   console.log(first.key.status); // "created"
 *   const again = await writeDevCertificates(dir);
 *   console.log(again.key.status, again.cert.status); // "reused" "reused"
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 * }
 * ```
 *
 * @param dir The folder.
 * @param options The extra hosts, the client name and the time.
 * @returns The files and what was done with each.
 */
export async function writeDevCertificates(
  dir: string,
  options?: WriteDevCertOptions,
): Promise<DevCertFiles> {
  const signal = options?.signal;
  signal?.throwIfAborted();
  const now = checkNow(options?.now, "write development certificates");
  const hosts = serverNames(options?.hosts ?? []);
  const clientName = options?.clientName;
  if (clientName !== undefined) checkClientName(clientName);
  const paths = devCertPaths(dir);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });

  signal?.throwIfAborted();
  const { ca, caCert, caKey } = await keepCa(paths, now);
  signal?.throwIfAborted();
  const wanted = hosts.map((host) => host.key);
  const server = await keepIssued(
    { cert: paths.cert, key: paths.key },
    ca,
    now,
    (cert) => {
      const have = new Set(subjectAltNames(cert).map((host) => host.key));
      return hasServerAuth(cert) && wanted.every((key) => have.has(key));
    },
    (key) => issueServer(ca, key, hosts, now),
  );
  const client = clientName === undefined ? undefined : await keepIssued(
    { cert: paths.clientCert, key: paths.clientKey },
    ca,
    now,
    (cert) => commonName(cert.subject) === clientName,
    (key) => issueClient(ca, key, clientName, now),
  );
  return {
    dir,
    caCert,
    caKey,
    cert: server.cert,
    key: server.key,
    ...(client && { clientCert: client.cert, clientKey: client.key }),
    notAfter: server.notAfter,
  };
}

/**
 * Makes sure development certificates exist for a server started without a certificate of its
 * own: {@linkcode writeDevCertificates} on a folder that defaults to {@linkcode defaultDevCertDir}.
 * The first call makes them; later ones reuse them, renewing a certificate near its expiry.
 *
 * @example Serve with the development certificates of a folder
 * ```ts
 * import { ensureDevCertificates } from "./dev_cert.ts";
 *
 * const dir = await Deno.makeTempDir(); // omit `dir` to use the tlsrpc state folder
 * try {
 *   const files = await ensureDevCertificates({ dir });
 *   using listener = Deno.listenTls({
 *     hostname: "127.0.0.1",
 *     port: 0,
 *     cert: await Deno.readTextFile(files.cert.path),
 *     key: await Deno.readTextFile(files.key.path),
 *   });
 *   console.log(`clients trust ${files.caCert.path}, port ${listener.addr.port}`);
 * } finally {
 *   await Deno.remove(dir, { recursive: true });
 * }
 * ```
 *
 * @param options The folder, the extra hosts, the client name and the time.
 * @returns The files and what was done with each.
 */
export async function ensureDevCertificates(
  options?: EnsureDevCertOptions,
): Promise<DevCertFiles> {
  const { dir = defaultDevCertDir(), ...rest } = options ?? {};
  return await writeDevCertificates(dir, rest);
}

/**
 * Reads when a PEM certificate expires (its notAfter), for example to warn that a server's
 * certificate is about to. The first certificate of the text counts (the leaf, in a chain).
 *
 * @example Warn a week before expiry
 * ```ts
 * import { certificateNotAfter, generateDevCertificates } from "./dev_cert.ts";
 *
 * const { cert } = await generateDevCertificates();
 * const left = certificateNotAfter(cert).getTime() - Date.now();
 * if (left < 7 * 24 * 60 * 60 * 1000) console.warn("The certificate expires within 7 days");
 * ```
 *
 * @param pem The certificate, `-----BEGIN CERTIFICATE-----` and all.
 * @returns When it expires.
 */
export function certificateNotAfter(pem: string): Date {
  return readCertificate(fromPem(pem, "CERTIFICATE", "certificate")).notAfter;
}

/**
 * The tlsrpc state folder: `$TLSRPC_HOME` when set; otherwise `$XDG_STATE_HOME/tlsrpc` or
 * `$HOME/.local/state/tlsrpc`; on Windows `%LOCALAPPDATA%\tlsrpc`. The folder may not exist yet.
 *
 * @example Find the state folder
 * ```ts
 * import { defaultStateDir } from "./dev_cert.ts";
 *
 * const env = new Map([["HOME", "/home/ada"]]);
 * console.log(defaultStateDir({ env: (name) => env.get(name), os: "linux" }));
 * // "/home/ada/.local/state/tlsrpc"
 * ```
 *
 * @param options Where to read the environment and which system's conventions to follow.
 * @returns The folder's path.
 */
export function defaultStateDir(options?: StateDirOptions): string {
  const env = options?.env ?? readEnv;
  const os = options?.os ?? Deno.build.os;
  // An empty variable counts as unset, as the XDG spec says.
  const get = (name: string) => env(name) || undefined;
  const home = get("TLSRPC_HOME");
  if (home !== undefined) return home;
  if (os === "windows") {
    const local = get("LOCALAPPDATA");
    if (local !== undefined) return win32.join(local, "tlsrpc");
    const profile = get("USERPROFILE");
    if (profile !== undefined) return win32.join(profile, "AppData", "Local", "tlsrpc");
    throw new Error(
      'Cannot find state folder: none of "TLSRPC_HOME", "LOCALAPPDATA" and "USERPROFILE" is set',
    );
  }
  // The XDG spec says to ignore a relative XDG_STATE_HOME.
  const xdg = get("XDG_STATE_HOME");
  if (xdg !== undefined && xdg.startsWith("/")) return posix.join(xdg, "tlsrpc");
  const userHome = get("HOME");
  if (userHome !== undefined) return posix.join(userHome, ".local", "state", "tlsrpc");
  throw new Error(
    'Cannot find state folder: none of "TLSRPC_HOME", "XDG_STATE_HOME" and "HOME" is set',
  );
}

/**
 * The folder of the development certificates: `dev-certs` in {@linkcode defaultStateDir}.
 *
 * @example Find the development CA a client should trust
 * ```ts
 * import { defaultDevCertDir, devCertPaths } from "./dev_cert.ts";
 *
 * const env = new Map([["TLSRPC_HOME", "/srv/tlsrpc"]]);
 * const dir = defaultDevCertDir({ env: (name) => env.get(name), os: "linux" });
 * console.log(devCertPaths(dir).caCert); // "/srv/tlsrpc/dev-certs/ca.pem"
 * ```
 *
 * @param options Where to read the environment and which system's conventions to follow.
 * @returns The folder's path.
 */
export function defaultDevCertDir(options?: StateDirOptions): string {
  const os = options?.os ?? Deno.build.os;
  return (os === "windows" ? win32 : posix).join(defaultStateDir(options), "dev-certs");
}

/**
 * The paths of the files {@linkcode writeDevCertificates} keeps in a folder, for example for a
 * client to find `ca.pem` without creating anything.
 *
 * @example Trust the development CA when it exists
 * ```ts
 * import { devCertPaths } from "./dev_cert.ts";
 *
 * const { caCert } = devCertPaths("/nonexistent/dev-certs");
 * const caCerts = await Deno.readTextFile(caCert).then((pem) => [pem], () => []);
 * console.log(caCerts.length); // 0
 * ```
 *
 * @param dir The folder.
 * @returns The paths, whether the files exist or not.
 */
export function devCertPaths(dir: string): DevCertPaths {
  const path = Deno.build.os === "windows" ? win32 : posix;
  return {
    caCert: path.join(dir, "ca.pem"),
    caKey: path.join(dir, "ca.key"),
    cert: path.join(dir, "cert.pem"),
    key: path.join(dir, "key.pem"),
    clientCert: path.join(dir, "client.pem"),
    clientKey: path.join(dir, "client.key"),
  };
}

// ---------------------------------------------------------------------------------------------
// Validating input

function readEnv(name: string): string | undefined {
  return Deno.env.get(name);
}

function checkNow(now: Date | undefined, action: string): Date {
  const date = now ?? new Date();
  if (Number.isNaN(date.getTime())) throw new RangeError(`Cannot ${action}: "now" is invalid`);
  return date;
}

function checkClientName(name: string): void {
  // deno-lint-ignore no-control-regex
  if (name.length === 0 || [...name].length > MAX_COMMON_NAME || /[\x00-\x1f\x7f]/.test(name)) {
    throw new TypeError(
      `Cannot make client certificate: name "${name}" is not 1 to ${MAX_COMMON_NAME} printable characters`,
    );
  }
}

/** A subjectAltName entry, with a key that is equal for equal names. */
type HostName =
  | { readonly kind: "dns"; readonly name: string; readonly key: string }
  | { readonly kind: "ip"; readonly bytes: Uint8Array; readonly key: string };

function serverNames(extra: readonly string[]): HostName[] {
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

// ---------------------------------------------------------------------------------------------
// Keys

interface Key {
  readonly privateKey: CryptoKey;
  /** The SubjectPublicKeyInfo, DER. */
  readonly spki: Uint8Array<ArrayBuffer>;
  /** The PKCS#8 PEM text. */
  readonly pem: string;
}

async function createKey(): Promise<Key> {
  // Extractable so that the private key can be exported to PKCS#8, and only for that.
  const pair = await crypto.subtle.generateKey(ECDSA_P256, true, ["sign", "verify"]);
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  return { privateKey: pair.privateKey, spki, pem: toPem("PRIVATE KEY", pkcs8) };
}

async function loadKey(pem: string, what: string): Promise<Key> {
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

interface Ca {
  readonly key: Key;
  readonly certPem: string;
  /** The CA's subject Name, DER, to copy byte for byte into the issuer of what it signs. */
  readonly subject: Uint8Array<ArrayBuffer>;
  readonly keyId: Uint8Array<ArrayBuffer>;
  readonly notAfter: Date;
  readonly verifyKey: CryptoKey;
}

interface Issued {
  readonly pem: string;
  readonly notAfter: Date;
}

async function createCa(
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

async function loadCa(certPem: string, key: Key, now: Date): Promise<Ca> {
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

async function caFrom(key: Key, certPem: string, cert: Certificate): Promise<Ca> {
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

async function issueServer(
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

async function issueClient(ca: Ca, key: Key, name: string, now: Date): Promise<Issued> {
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

interface Certificate {
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

function readCertificate(der: Uint8Array<ArrayBuffer>): Certificate {
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

function isCa(cert: Certificate): boolean {
  const constraints = cert.extensions.get(OID.basicConstraints);
  if (constraints === undefined) return false;
  try {
    const [ca] = parseDer(constraints.value).children;
    return ca !== undefined && ca.tag === Tag.Boolean && readBoolean(ca);
  } catch {
    return false;
  }
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

function commonName(name: Uint8Array<ArrayBuffer>): string | undefined {
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

async function stillFits(
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

function expiresSoon(cert: Certificate, now: Date): boolean {
  return cert.notAfter.getTime() - now.getTime() <= DEV_CERT_VALIDITY.renewDays * DAY_MS;
}

// ---------------------------------------------------------------------------------------------
// Files

async function keepCa(
  paths: DevCertPaths,
  now: Date,
): Promise<{ ca: Ca; caCert: DevCertFile; caKey: DevCertFile }> {
  const keyPem = await readIfExists(paths.caKey);
  const certPem = await readIfExists(paths.caCert);
  if (keyPem === undefined) {
    if (certPem !== undefined) {
      throw new Error(
        `Cannot write development certificates: "${paths.caCert}" exists without its key "${paths.caKey}"`,
      );
    }
    const ca = await createCa(await createKey(), undefined, now);
    await writeKey(paths.caKey, ca.key.pem);
    await writeCertificate(paths.caCert, ca.certPem);
    return {
      ca,
      caKey: { path: paths.caKey, status: "created" },
      caCert: { path: paths.caCert, status: "created" },
    };
  }
  const key = await loadKey(keyPem, `key "${paths.caKey}"`);
  const caKey: DevCertFile = { path: paths.caKey, status: "reused" };
  const existing = certPem === undefined ? undefined : tryReadCertificate(certPem);
  if (existing !== undefined && !equalBytes(existing.spki, key.spki)) {
    throw new Error(
      `Cannot write development certificates: "${paths.caCert}" does not match its key "${paths.caKey}"`,
    );
  }
  if (existing !== undefined && isCa(existing) && !expiresSoon(existing, now)) {
    const ca = await caFrom(key, toPem("CERTIFICATE", existing.der), existing);
    return { ca, caKey, caCert: { path: paths.caCert, status: "reused" } };
  }
  // Same key and subject: what the old certificate signed still chains to the new one.
  const ca = await createCa(key, existing?.subject, now);
  await writeCertificate(paths.caCert, ca.certPem);
  const status = certPem === undefined ? "created" : "replaced";
  return { ca, caKey, caCert: { path: paths.caCert, status } };
}

async function keepIssued(
  paths: { cert: string; key: string },
  ca: Ca,
  now: Date,
  fits: (cert: Certificate) => boolean,
  issue: (key: Key) => Promise<Issued>,
): Promise<{ cert: DevCertFile; key: DevCertFile; notAfter: Date }> {
  const keyPem = await readIfExists(paths.key);
  const certPem = await readIfExists(paths.cert);
  let key: Key;
  if (keyPem === undefined) {
    key = await createKey();
    await writeKey(paths.key, key.pem);
  } else {
    key = await loadKey(keyPem, `key "${paths.key}"`);
    const existing = certPem === undefined ? undefined : tryReadCertificate(certPem);
    if (existing !== undefined && await stillFits(existing, key, ca, now, fits)) {
      return {
        cert: { path: paths.cert, status: "reused" },
        key: { path: paths.key, status: "reused" },
        notAfter: existing.notAfter,
      };
    }
  }
  const issued = await issue(key);
  await writeCertificate(paths.cert, issued.pem);
  return {
    cert: { path: paths.cert, status: certPem === undefined ? "created" : "replaced" },
    key: { path: paths.key, status: keyPem === undefined ? "created" : "reused" },
    notAfter: issued.notAfter,
  };
}

function tryReadCertificate(pem: string): Certificate | undefined {
  try {
    return readCertificate(fromPem(pem, "CERTIFICATE", "certificate"));
  } catch {
    return undefined;
  }
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
}

async function writeKey(path: string, pem: string): Promise<void> {
  // createNew: a key that appeared meanwhile is not overwritten; the write fails instead.
  await Deno.writeTextFile(path, pem, { createNew: true, mode: 0o600 });
}

async function writeCertificate(path: string, pem: string): Promise<void> {
  const suffix = Array.from(crypto.getRandomValues(new Uint8Array(6)), hex).join("");
  const temporary = `${path}.${suffix}.tmp`;
  try {
    await Deno.writeTextFile(temporary, pem, { createNew: true, mode: 0o644 });
    await Deno.rename(temporary, path);
  } catch (error) {
    await Deno.remove(temporary).catch(() => {});
    throw error;
  }
}

// ---------------------------------------------------------------------------------------------
// PEM and bytes

function toPem(label: string, der: Uint8Array): string {
  let binary = "";
  for (const byte of der) binary += String.fromCharCode(byte);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function fromPem(text: string, label: string, what: string): Uint8Array<ArrayBuffer> {
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

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
