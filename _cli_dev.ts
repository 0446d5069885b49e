// The development certificates as the CLI uses them: `serve` reuses them without writing when it
// can (so it asks for no write permission it does not need), and `call` and `list` trust their CA
// only once the state folder is found safe, asking for no permission at all (a missing one skips
// the CA, and the advice on an untrusted certificate says so). The functions of dev_cert.ts come
// in as a parameter, so that this private module imports no public one.

import type { CaSource } from "./_cli_advice.ts";
import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import { readFile } from "./_cli_flags.ts";
import type { PemFile } from "./_cli_tls.ts";
import { reason } from "./_util.ts";

/** The variables the state folder is found by, on Linux and macOS (Windows: LOCALAPPDATA). */
export const STATE_VARIABLES = "TLSRPC_HOME,XDG_STATE_HOME,HOME";

/** What `call` and `list` need to find, check and read the development CA. */
const DEV_CA_PERMISSIONS = `--allow-env=${STATE_VARIABLES}, --allow-read and --allow-sys=uid`;

/** What the CLI uses of dev_cert.ts. */
export interface DevCertApi {
  defaultDevCertDir(options?: { env?: (name: string) => string | undefined }): string;
  devCertPaths(dir: string): { caCert: string; cert: string; key: string };
  checkDevCertDir(dir?: string): Promise<void>;
  ensureDevCertificates(): Promise<{
    dir: string;
    caKey: { status: string };
    cert: { path: string };
    key: { path: string };
  }>;
  certificateNotAfter(pem: string): Date;
}

/** Whether `error` is dev_cert.ts's UnsafeStateError, which is reported as it is (exit 2). */
export function isUnsafeState(error: unknown): error is Error {
  return error instanceof Error && error.name === "UnsafeStateError";
}

/**
 * The development certificate folder, or a usage error naming the variables to allow, or
 * `otherwise`, the command's other way out.
 */
export function stateFolder(api: DevCertApi, otherwise = "pass --cert and --key"): string {
  try {
    return api.defaultDevCertDir();
  } catch (error) {
    const capable = !(error instanceof Deno.errors.NotCapable);
    throw new CliError(
      ExitCode.Usage,
      `Cannot find the state folder for development certificates: ${reason(error)}`,
      {
        hint: capable
          ? `set TLSRPC_HOME to a folder of yours, or ${otherwise}`
          : `run with --allow-env=${STATE_VARIABLES}, or ${otherwise}`,
      },
    );
  }
}

/**
 * The development certificate and key for `serve`. When they exist and are in force and writing
 * is not already allowed, they are reused as they are: no write, so no prompt for one. Otherwise
 * they are made or renewed in the state folder, which needs (and may ask for) --allow-write.
 */
export async function serverDevCertificate(
  api: DevCertApi,
  notice: (line: string) => void = (line) => console.error(line),
): Promise<{ cert: PemFile; key: PemFile }> {
  const dir = stateFolder(api);
  const paths = api.devCertPaths(dir);
  const file = (what: string, path: string, text: string) => ({
    label: `the development ${what} "${path}"`,
    text,
  });
  if (Deno.permissions.querySync({ name: "write", path: dir }).state !== "granted") {
    const found = await existingCertificate(api, dir, paths);
    if (found !== undefined) {
      notice(
        `using development certificates in ${dir}: for development only; pass --cert and --key ` +
          "in production",
      );
      return {
        cert: file("certificate", paths.cert, found.cert),
        key: file("key", paths.key, found.key),
      };
    }
  }
  let files;
  try {
    files = await api.ensureDevCertificates();
  } catch (error) {
    if (isUnsafeState(error)) throw error;
    throw permissionError(
      `make development certificates in "${dir}"`,
      error,
      "pass --cert and --key",
    ) ??
      new CliError(ExitCode.Usage, `Cannot make development certificates: ${reason(error)}`, {
        hint: "pass --cert and --key",
      });
  }
  const made = files.caKey.status === "created"
    ? "made a development CA and certificate"
    : "using development certificates";
  notice(`${made} in ${files.dir}: for development only; pass --cert and --key in production`);
  return {
    cert: file("certificate", files.cert.path, await readFile("--cert", files.cert.path)),
    key: file("key", files.key.path, await readFile("--key", files.key.path)),
  };
}

/**
 * The development certificate and key when both can be read, have not expired, and their folder
 * is safe; `undefined` when they must be made (or renewed) first.
 */
async function existingCertificate(
  api: DevCertApi,
  dir: string,
  paths: { cert: string; key: string },
): Promise<{ cert: string; key: string } | undefined> {
  if (Deno.permissions.querySync({ name: "read", path: dir }).state !== "granted") return;
  let cert: string;
  let key: string;
  try {
    [cert, key] = await Promise.all([Deno.readTextFile(paths.cert), Deno.readTextFile(paths.key)]);
    if (api.certificateNotAfter(cert) <= new Date()) return; // expired: renewing needs a write
  } catch {
    return; // not there, or not a certificate: making them needs a write
  }
  // Whose the folder is takes the user id: a terminal asks for it, a script is told below.
  if (Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "prompt") {
    Deno.permissions.requestSync({ name: "sys", kind: "uid" });
  }
  try {
    await api.checkDevCertDir();
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable)) throw error;
    throw new CliError(
      ExitCode.Usage,
      `Cannot use the development certificates in "${dir}": whether the folder is yours, and ` +
        "so safe to use, is unknown without --allow-sys=uid",
      { hint: `run with --allow-sys=uid or --allow-write=${dir}, or pass --cert and --key` },
    );
  }
  return { cert, key };
}

/**
 * The development CA for `call` and `list`, once its folder is found safe, and where it came
 * from; no CA when there is none or a permission is missing (the source says which). An unsafe
 * folder is an error (exit 2), never skipped.
 */
export async function trustedDevCa(
  api: DevCertApi,
): Promise<{ caCerts?: string[]; source: CaSource }> {
  const skipped = (why: string) => ({
    source: { kind: "skipped", why: `${why}; trusting it needs ${DEV_CA_PERMISSIONS}` } as const,
  });
  let dir: string;
  try {
    dir = api.defaultDevCertDir({ env: grantedEnv });
  } catch (error) {
    if (error instanceof Deno.errors.NotCapable) {
      return skipped(error.message);
    }
    return skipped(reason(error)); // no state folder at all (no HOME)
  }
  const caPath = api.devCertPaths(dir).caCert;
  if (Deno.permissions.querySync({ name: "read", path: dir }).state !== "granted") {
    return skipped(`no permission to read "${dir}"`);
  }
  const uid = Deno.permissions.querySync({ name: "sys", kind: "uid" }).state === "granted";
  if (!uid && Deno.permissions.querySync({ name: "write", path: dir }).state !== "granted") {
    return skipped(`whether "${dir}" is yours, and so safe to trust, is unknown`);
  }
  try {
    // No folder given: the check then finds the same one, and its advice names TLSRPC_HOME.
    await api.checkDevCertDir();
    return { caCerts: [await Deno.readTextFile(caPath)], source: { kind: "dev", path: caPath } };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return { source: { kind: "none", path: caPath } };
    if (isUnsafeState(error)) {
      throw new CliError(ExitCode.Usage, error.message, {
        hint: "fix the folder as the message says, or pass --ca FILE",
      });
    }
    return skipped(reason(error));
  }
}

/** Reads a variable only when that needs no prompt; otherwise throws NotCapable, as Deno would. */
function grantedEnv(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") {
    throw new Deno.errors.NotCapable(`no permission to read ${name}`);
  }
  return Deno.env.get(name);
}
