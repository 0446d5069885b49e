/**
 * The development certificate folder of {@linkcode ./dev_cert.ts}: where its files are, keeping
 * them (never overwriting a key, replacing only certificates that no longer fit), and checking
 * that other users can neither change nor read them. Private to tlsrpc; `dev_cert.ts` re-exports
 * its public types, {@linkcode devCertPaths} and {@linkcode UnsafeStateError}.
 *
 * @module
 */

import { posix, win32 } from "node:path";
import {
  type Ca,
  caFrom,
  createCa,
  createKey,
  expiresSoon,
  type Issued,
  type Key,
  loadKey,
  stillFits,
} from "./_x509.ts";
import { type Certificate, equalBytes, isCa, toPem, tryReadCertificate } from "./_x509_read.ts";

// Group and other write bits: with either, someone else can add, replace or remove files.
const WRITABLE_BY_OTHERS = 0o022;
// Any group or other bit: a private key is its owner's alone (mode 0600).
const OPEN_TO_OTHERS = 0o077;
const KEY_FILES: ReadonlySet<keyof DevCertPaths> = new Set(["caKey", "key", "clientKey"]);

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

/**
 * A development certificate folder, or a file in it, that other users could have changed or
 * read, so that trusting its CA or using its keys would not be safe. The message says what is
 * wrong and how to fix it. Only POSIX systems are checked.
 *
 * @example Tell an unsafe folder from other failures
 * ```ts
 * import { checkDevCertDir, UnsafeStateError } from "./dev_cert.ts";
 *
 * const dir = await Deno.makeTempDir();
 * try {
 *   if (Deno.build.os !== "windows") await Deno.chmod(dir, 0o777);
 *   await checkDevCertDir(dir);
 * } catch (error) {
 *   if (!(error instanceof UnsafeStateError)) throw error;
 *   console.error(error.message, error.path);
 * } finally {
 *   await Deno.remove(dir);
 * }
 * ```
 */
export class UnsafeStateError extends Error {
  /** The folder or file that is not safe. */
  readonly path: string;

  /**
   * Makes the error.
   *
   * @param message What is wrong and how to fix it.
   * @param path The folder or file that is not safe.
   * @param options The cause, if any.
   */
  constructor(message: string, path: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UnsafeStateError";
    this.path = path;
  }
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
// Files

/**
 * Keeps the CA of a folder: makes `ca.key` and `ca.pem` when both are missing, reuses a `ca.pem`
 * that matches its key and does not expire soon, and re-signs it (same key and subject) otherwise.
 * A `ca.pem` without its key, or for another key, is an error rather than replaced.
 *
 * @param paths The folder's files.
 * @param now The time to check the certificate against and to make a new one at.
 * @returns The CA, and what was done with its two files.
 */
export async function keepCa(
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

/**
 * Keeps a certificate and its key: makes the key when it is missing (never overwriting one), and
 * reuses the certificate when it still fits; otherwise issues and writes a new one.
 *
 * @param paths The certificate's and the key's files.
 * @param ca The CA that must have signed it.
 * @param now The time to check the certificate against.
 * @param fits Whether an existing certificate's other fields are as wanted.
 * @param issue Issues a new certificate for the key.
 * @returns What was done with the two files, and when the certificate expires.
 */
export async function keepIssued(
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

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

// ---------------------------------------------------------------------------------------------
// Folder safety

/**
 * Checks that a folder is safe to trust (see `checkDevCertDir`); Windows folders are not checked.
 *
 * @param dir The folder.
 * @param elsewhere What to suggest instead of a folder that cannot be fixed.
 * @param signal Aborts the check.
 * @returns A promise that rejects with an {@linkcode UnsafeStateError} when the folder is unsafe.
 */
export async function checkFolder(
  dir: string,
  elsewhere: string,
  signal?: AbortSignal,
): Promise<void> {
  if (Deno.build.os === "windows") return;
  const folder = await Deno.stat(dir);
  if (!folder.isDirectory) {
    throw new Deno.errors.NotADirectory(
      `Cannot use development certificates: "${dir}" is not a folder`,
    );
  }
  const mode = folder.mode! & 0o7777;
  if (mode & WRITABLE_BY_OTHERS) {
    throw unsafe(
      dir,
      `is writable by other users (mode ${octal(mode)}); run "chmod 700 ${
        shell(dir)
      }" or ${elsewhere}`,
    );
  }
  signal?.throwIfAborted();
  const uid = await currentUid(dir);
  if (folder.uid !== uid) throw unsafe(dir, `${ownedBy(folder.uid, uid)}; ${elsewhere}`);
  for (const [name, path] of Object.entries(devCertPaths(dir)) as [keyof DevCertPaths, string][]) {
    signal?.throwIfAborted();
    let file: Deno.FileInfo;
    try {
      file = await Deno.stat(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) continue;
      throw error;
    }
    const fileMode = file.mode! & 0o7777;
    if (file.uid !== uid) {
      throw unsafe(
        path,
        `${ownedBy(file.uid, uid)}; remove "${dir}" to start over or ${elsewhere}`,
      );
    }
    if (KEY_FILES.has(name) && fileMode & OPEN_TO_OTHERS) {
      throw unsafe(
        path,
        `is open to other users (mode ${octal(fileMode)}); run "chmod 600 ${shell(path)}", ` +
          `or if others may have read it, remove "${dir}" to start over with new keys`,
      );
    }
    if (fileMode & WRITABLE_BY_OTHERS) {
      throw unsafe(
        path,
        `is writable by other users (mode ${octal(fileMode)}); run "chmod 644 ${shell(path)}"`,
      );
    }
  }
}

async function currentUid(dir: string): Promise<number> {
  if ((await Deno.permissions.query({ name: "sys", kind: "uid" })).state === "granted") {
    return Deno.uid()!;
  }
  // Without --allow-sys=uid a process cannot ask who it runs as, but what it creates is its own.
  if ((await Deno.permissions.query({ name: "write", path: dir })).state === "granted") {
    const probe = await Deno.makeTempFile({ dir, prefix: ".owner-", suffix: ".tmp" });
    try {
      return (await Deno.stat(probe)).uid!;
    } finally {
      await Deno.remove(probe);
    }
  }
  throw new Deno.errors.NotCapable(
    `Cannot check development certificates: whether "${dir}" belongs to the current user is unknown without --allow-sys=uid or --allow-write`,
  );
}

function unsafe(path: string, problem: string): UnsafeStateError {
  return new UnsafeStateError(`Cannot use development certificates: "${path}" ${problem}`, path);
}

function ownedBy(owner: number | null, uid: number): string {
  return `belongs to another user (uid ${owner}, not ${uid})`;
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, "0");
}

/** Quotes a path for a POSIX shell, when it needs quoting. */
function shell(path: string): string {
  return /^[\w@%+=:,./-]+$/.test(path) ? path : `'${path.replaceAll("'", `'\\''`)}'`;
}
