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
 * - {@linkcode checkDevCertDir} checks that a folder is safe to trust, for a client that is about
 *   to trust its CA; the functions that write a folder check it too, and refuse an unsafe one
 *   with an {@linkcode UnsafeStateError}.
 * - {@linkcode certificateNotAfter} tells when a certificate expires.
 *
 * These certificates are for development only: whoever reads the CA key can impersonate any server
 * to every client that trusts the CA. That is why a folder that other users can write, or a key
 * that they can read, is refused rather than used.
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
  checkFolder,
  type DevCertFile,
  type DevCertFileStatus,
  type DevCertPaths,
  devCertPaths,
  keepCa,
  keepIssued,
  UnsafeStateError,
} from "./_dev_cert_dir.ts";
import {
  createCa,
  createKey,
  DEV_CERT_VALIDITY,
  issueClient,
  issueServer,
  loadCa,
  loadKey,
} from "./_x509.ts";
import { checkClientName, coversHosts, serverNames } from "./_x509_names.ts";
import { commonName, fromPem, readCertificate } from "./_x509_read.ts";

export {
  DEV_CERT_VALIDITY,
  type DevCertFile,
  type DevCertFileStatus,
  type DevCertPaths,
  devCertPaths,
  UnsafeStateError,
};

// What to suggest instead of a folder that cannot be fixed.
const USE_ANOTHER_FOLDER = "use another folder";
const SET_TLSRPC_HOME = "set TLSRPC_HOME to a new folder";

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

/** Options for {@linkcode checkDevCertDir}. */
export interface CheckDevCertDirOptions {
  /**
   * Aborts the check; the promise then rejects with the signal's reason.
   *
   * @default {undefined}
   */
  signal?: AbortSignal;
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
 * On POSIX systems it refuses, with an {@linkcode UnsafeStateError} and before changing anything,
 * a folder that is not the current user's or that others can write, a key file that is not the
 * user's or that others can access (mode 0600 is right), and a certificate file that is not the
 * user's or that others can write (see
 * {@linkcode checkDevCertDir}).
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
  return await keepDevCertificates(dir, options, USE_ANOTHER_FOLDER);
}

async function keepDevCertificates(
  dir: string,
  options: WriteDevCertOptions | undefined,
  elsewhere: string,
): Promise<DevCertFiles> {
  const signal = options?.signal;
  signal?.throwIfAborted();
  const now = checkNow(options?.now, "write development certificates");
  const hosts = serverNames(options?.hosts ?? []);
  const clientName = options?.clientName;
  if (clientName !== undefined) checkClientName(clientName);
  const paths = devCertPaths(dir);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  await checkFolder(dir, elsewhere, signal);

  signal?.throwIfAborted();
  const { ca, caCert, caKey } = await keepCa(paths, now);
  signal?.throwIfAborted();
  const server = await keepIssued(
    { cert: paths.cert, key: paths.key },
    ca,
    now,
    (cert) => coversHosts(cert, hosts),
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
  const { dir, ...rest } = options ?? {};
  if (dir !== undefined) return await keepDevCertificates(dir, rest, USE_ANOTHER_FOLDER);
  return await keepDevCertificates(defaultDevCertDir(), rest, SET_TLSRPC_HOME);
}

/**
 * Checks that a development certificate folder is safe to trust, for example before a client
 * trusts its `ca.pem`: on POSIX systems, the folder must belong to the current user and not be
 * writable by group or others, every key file in it must belong to the user and give group and
 * others no access at all (mode 0600), and every certificate file must belong to the user and not
 * be writable by group or others. Windows
 * folders are not checked.
 *
 * The current user is `Deno.uid()` when `--allow-sys=uid` is granted; otherwise, when writing to
 * the folder is allowed, the owner of a temporary file made there (and removed); otherwise the
 * check rejects with `Deno.errors.NotCapable`.
 *
 * @example Trust the development CA only when its folder is safe
 * ```ts
 * import { checkDevCertDir, defaultDevCertDir, devCertPaths } from "./dev_cert.ts";
 *
 * const dir = await Deno.makeTempDir(); // or defaultDevCertDir()
 * try {
 *   await checkDevCertDir(dir);
 *   const caCerts = await Deno.readTextFile(devCertPaths(dir).caCert).then((pem) => [pem], () => []);
 *   console.log(caCerts.length); // 0
 * } finally {
 *   await Deno.remove(dir);
 * }
 * ```
 *
 * @param dir The folder; by default {@linkcode defaultDevCertDir}.
 * @param options A signal to abort the check.
 * @returns A promise that resolves when the folder is safe. It rejects with an
 * {@linkcode UnsafeStateError} when it is not, and with `Deno.errors.NotFound` when the folder
 * does not exist.
 */
export async function checkDevCertDir(
  dir?: string,
  options?: CheckDevCertDirOptions,
): Promise<void> {
  options?.signal?.throwIfAborted();
  if (dir === undefined) await checkFolder(defaultDevCertDir(), SET_TLSRPC_HOME, options?.signal);
  else await checkFolder(dir, USE_ANOTHER_FOLDER, options?.signal);
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

/** Options for {@linkcode devCaCerts}. */
export interface DevCaCertsOptions {
  /**
   * The folder of the development certificates.
   *
   * @default {defaultDevCertDir()}
   */
  dir?: string;
  /** Aborting it rejects with its reason. */
  signal?: AbortSignal;
}

/**
 * The development CA's certificate, for a client to trust as the CLI does:
 * `connect({ caCerts: await devCaCerts() })`. The folder is checked first (owned by this user, not
 * writable by others, keys 0600), so a planted CA is never trusted; an empty list when there is no
 * development CA yet. Needs `--allow-read`, `--allow-sys=uid` and, for the default folder,
 * `--allow-env=TLSRPC_HOME,XDG_STATE_HOME,HOME`.
 *
 * @example Trust the development CA of `cli.ts serve`
 * ```ts ignore
 * import { connect } from "./client.ts";
 * import { devCaCerts } from "./dev_cert.ts";
 *
 * await using client = await connect({ caCerts: await devCaCerts() });
 * console.log(await client.call("add", 2, 3));
 * ```
 *
 * @param options The folder, and a signal.
 * @returns The CA certificate (PEM) in a list, or an empty list.
 * @throws {UnsafeStateError} When the folder or its files are not safe to trust.
 */
export async function devCaCerts(options?: DevCaCertsOptions): Promise<string[]> {
  options?.signal?.throwIfAborted();
  const dir = options?.dir ?? defaultDevCertDir();
  try {
    await Deno.stat(dir);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
  await checkDevCertDir(options?.dir, options?.signal ? { signal: options.signal } : undefined);
  try {
    return [
      await Deno.readTextFile(
        devCertPaths(dir).caCert,
        options?.signal && { signal: options.signal },
      ),
    ];
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return [];
    throw error;
  }
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
