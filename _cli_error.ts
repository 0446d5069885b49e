// The CLI's failures: exit codes, the error that carries one to `main` with what to print, and
// the advice for a missing Deno permission, so that a user sees which flag to add rather than a
// stack trace.

/** Exit codes of the CLI. */
export const ExitCode = {
  /** The command did what it was asked. */
  Ok: 0,
  /** The server answered with an error, or the server could not start. */
  Failure: 1,
  /**
   * The command line or what it names is wrong: a bad flag or argument, a file that cannot be read
   * or holds the wrong thing, a token it cannot read, a missing permission, an unsafe state folder.
   */
  Usage: 2,
  /** The server could not be reached, the TLS handshake failed, the token was refused or missing, or the call timed out. */
  Connection: 3,
} as const;

/** What a {@linkcode CliError} prints besides its message. */
export interface CliErrorOptions {
  /** A remote error's data, printed as `data: ...`. */
  data?: unknown;
  /** What to do next, printed in parentheses at the end of the error's line. */
  hint?: string | undefined;
  /**
   * More lines of local text printed after the message, each escaped but kept on its own line:
   * Deno's code frame for a module that fails to load.
   */
  detail?: string | undefined;
  /** Printed on stderr instead of everything else: `call --raw`'s error object, as JSON. */
  json?: string;
  /** The error behind this one. */
  cause?: unknown;
}

/**
 * A failure the CLI reports on stderr: `error: MESSAGE (HINT)` on one line, then any detail lines
 * and a remote error's `data: ...`, and exits with `exitCode`.
 */
export class CliError extends Error {
  /** The exit code. */
  readonly exitCode: number;
  /** A remote error's data. */
  readonly data: unknown;
  /** What to do next. */
  readonly hint: string | undefined;
  /** Lines of local text after the message. */
  readonly detail: string | undefined;
  /** The JSON to print instead of the message, for `--raw`. */
  readonly json: string | undefined;

  constructor(exitCode: number, message: string, options: CliErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "CliError";
    this.exitCode = exitCode;
    this.data = options.data;
    this.hint = options.hint;
    this.detail = options.detail;
    this.json = options.json;
  }
}

/** A missing Deno permission: its kind (`read`, `net`...), what it was for, and the flag to add. */
export interface MissingPermission {
  /** `read`, `write`, `net`, `env`, `sys`, `run`, `ffi` or `import`. */
  readonly kind: string;
  /** The path, host, variable or other thing the permission was wanted for. */
  readonly target: string;
  /** The flag that grants just that, e.g. `--allow-read=cert.pem`. */
  readonly flag: string;
}

/**
 * The Deno message of a missing permission: `Requires read access to "cert.pem", run again with
 * the --allow-read flag`. `Deno.errors.NotCapable` carries it, and so does the `TypeError` of an
 * `import()` that may not read its module.
 */
const REQUIRES = /Requires (\w+) access to "([^"]*)"/;

/**
 * The permission `error` (or an error in its `cause` chain) says is missing, or `undefined` when
 * it is about something else.
 */
export function missingPermission(error: unknown): MissingPermission | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const match = REQUIRES.exec(e.message);
    if (match !== null && (e instanceof Deno.errors.NotCapable || e instanceof TypeError)) {
      const [, kind, target] = match as unknown as [string, string, string];
      return { kind, target, flag: `--allow-${kind}=${shellWord(target)}` };
    }
  }
  return undefined;
}

/**
 * The usage error for `action` when `error` is a missing permission: `Cannot serve "calc.ts": no
 * net permission for "127.0.0.1:7443"`, hinting at the flag (and at `otherwise`, another way
 * out); `undefined` for other errors.
 */
export function permissionError(
  action: string,
  error: unknown,
  otherwise?: string,
): CliError | undefined {
  const missing = missingPermission(error);
  if (missing === undefined) return undefined;
  const hint = `run with ${missing.flag} or --allow-${missing.kind}`;
  return new CliError(
    ExitCode.Usage,
    `Cannot ${action}: no ${missing.kind} permission for "${missing.target}"`,
    { hint: otherwise === undefined ? hint : `${hint}, or ${otherwise}`, cause: error },
  );
}

/** `word` as one word for a POSIX shell, quoted only when it needs to be. */
export function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", `'\\''`)}'`;
}
