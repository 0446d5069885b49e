// What `call`, `list` and `describe` say when they cannot get an answer: the failure in plain
// words (a TLS library's "UnknownIssuer" or "InvalidContentType" means nothing to most users),
// and a hint that says what to do next. Errors are told apart by their name, code and message,
// which is all that crosses the client's API.

import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import { TOKEN_VARIABLE } from "./_cli_token.ts";
import { rawJson } from "./_format.ts";
import { reason } from "./_util.ts";

/** Where the CA the client trusts came from, for the advice on an untrusted certificate. */
export type CaSource =
  /** `--ca FILE`. */
  | { readonly kind: "flag"; readonly path: string }
  /** The development CA, trusted (with the system roots). */
  | { readonly kind: "dev"; readonly path: string }
  /** No development CA at `path`: the system roots alone. */
  | { readonly kind: "none"; readonly path: string }
  /** The development CA was not looked for: `why` (a missing permission) and the flag to add. */
  | { readonly kind: "skipped"; readonly why: string };

/** What the client was doing, for the advice. */
export interface ConnectContext {
  /** `host:port`. */
  readonly target: string;
  /** Where the trusted CA came from. */
  readonly ca: CaSource;
  /** The `--cert` file, when a client certificate was given. */
  readonly clientCert?: string | undefined;
  /** Whether the server was named with `--endpoint`, which the hints then name. */
  readonly endpoint?: boolean | undefined;
}

const CLIENT_CERT_HINT = "pass --cert FILE --key FILE, a client certificate signed by the CA " +
  'the server trusts; for development, "cert --client NAME" makes client.pem and client.key';

/**
 * The error to report when connecting failed: exit 2 for a missing permission, else exit 3, with
 * the failure in plain words and a hint.
 */
export function connectFailure(error: unknown, context: ConnectContext): CliError {
  const failure = adviseConnect(error, context);
  if (!context.endpoint || failure.hint === undefined) return failure;
  const hint = failure.hint
    .replace(/--hostname(?: and |, )--port/g, "--endpoint")
    .replace(/check --hostname\b/g, "check --endpoint");
  return new CliError(failure.exitCode, failure.message, { hint, cause: error });
}

function adviseConnect(error: unknown, context: ConnectContext): CliError {
  const permission = permissionError(`connect to "${context.target}"`, error);
  if (permission !== undefined) return permission;
  if (isTimeout(error)) return timeout(error);
  const text = causes(error);
  const { target } = context;
  const fail = (what: string, hint: string) =>
    new CliError(ExitCode.Connection, `Cannot connect to "${target}": ${what}`, {
      hint,
      cause: error,
    });
  if (text.includes("UnknownIssuer")) {
    return fail(
      "UnknownIssuer: the server's certificate is not signed by a CA this client trusts",
      untrustedHint(context.ca),
    );
  }
  const name = /certificate not valid for name "([^"]*)"/.exec(text);
  if (name !== null) {
    const names = Array.from(text.matchAll(/(?:DnsName|IpAddress)\("?([^")]*)"?\)/g), (m) => m[1]);
    const valid = names.length > 0 ? `; it is for ${names.join(", ")}` : "";
    return fail(
      `the server's certificate is not valid for "${name[1]}"${valid}`,
      "connect with --hostname set to a name the certificate has" +
        (names.length > 0 ? `, e.g. --hostname ${names[0]}` : "") +
        '; a development certificate gets more names from "cert --host NAME"',
    );
  }
  if (text.includes("certificate expired")) {
    return fail(
      "the server's certificate has expired",
      "the server must renew its certificate, as serve does for development certificates when it " +
        "may write them; if it has, check this machine's clock",
    );
  }
  if (text.includes("certificate not valid yet")) {
    return fail(
      "the server's certificate is not valid yet",
      "check the clocks of this machine and of the server",
    );
  }
  const peer = /invalid peer certificate: ([^\n]*)/.exec(text);
  if (peer !== null) {
    return fail(
      `the server's certificate is not acceptable (${peer[1]})`,
      "check --hostname and --ca, or the server's certificate",
    );
  }
  if (/InvalidContentType|corrupt message|InvalidMessage/.test(text)) {
    // The question is the hint: a second pair of parentheses would read worse.
    return new CliError(
      ExitCode.Connection,
      `Cannot connect to "${target}": the server at ${target} does not speak TLS (is it a plain ` +
        "TCP or HTTP port? Check --hostname and --port)",
      { cause: error },
    );
  }
  if (/CertificateRequired|UnknownCA|BadCertificate|AccessDenied|close_notify/.test(text)) {
    return context.clientCert === undefined
      ? fail(
        "the server closed the connection during the handshake: it requires a client " +
          "certificate for mutual TLS",
        CLIENT_CERT_HINT,
      )
      : fail(
        `the server refused the client certificate --cert "${context.clientCert}"`,
        "give a client certificate signed by the CA the server trusts, its --client-ca",
      );
  }
  if (/refused the token/.test(text)) {
    return fail(
      "the server refused the token",
      `check the token in --token-file or ${TOKEN_VARIABLE}: it must be the server's`,
    );
  }
  if (/[Cc]onnection refused/.test(text)) {
    return fail(
      "nothing listens there, the connection was refused",
      "start the server, or check --hostname and --port",
    );
  }
  if (/lookup address|not known|No address associated/.test(text)) {
    return fail("the host name cannot be resolved", "check --hostname");
  }
  return new CliError(ExitCode.Connection, reason(error), {
    hint: `check that a tlsrpc server runs at ${target}: --hostname, --port`,
    cause: error,
  });
}

/**
 * The error to report when none of several endpoints (`--endpoint`, repeated) answered: one line,
 * then each endpoint's failure in plain words with its own hint, in the order they were tried.
 * Exit 2 when one of them lacked a permission, else 3. An error that does not list the endpoints'
 * own errors is reported as {@linkcode connectFailure} reports it.
 */
export function endpointsFailure(
  error: unknown,
  targets: readonly string[],
  context: Omit<ConnectContext, "target">,
): CliError {
  const cause = error instanceof Error ? error.cause : undefined;
  if (!(cause instanceof AggregateError) || cause.errors.length === 0) {
    return connectFailure(error, { ...context, target: targets.join('", "') });
  }
  const lines: string[] = [];
  let exitCode: number = ExitCode.Connection;
  for (const [i, each] of cause.errors.entries()) {
    // Each endpoint's error names it: `Cannot connect to "HOST:PORT": ...`.
    const target = /^Cannot connect to "([^"]*)"/.exec(reason(each))?.[1] ?? targets[i] ?? "?";
    const failure = connectFailure(each, { ...context, target });
    if (failure.exitCode === ExitCode.Usage) exitCode = ExitCode.Usage;
    const hint = failure.hint === undefined ? "" : ` (${failure.hint})`;
    const message = failure.message.startsWith(`Cannot connect to "${target}": `)
      ? failure.message.slice(`Cannot connect to "${target}": `.length)
      : failure.message;
    lines.push(`  "${target}": ${message}${hint}`);
  }
  return new CliError(
    exitCode,
    `Cannot connect to any of ${targets.length} endpoints`,
    {
      hint: "what went wrong at each follows; check --endpoint",
      detail: lines.join("\n"),
      cause: error,
    },
  );
}

/**
 * The error to report when a call failed once connected: a timeout or a lost connection (exit 3),
 * a missing permission (exit 2), or `undefined` for errors that are not about the connection.
 */
export function callFailure(error: unknown): CliError | undefined {
  if (isTimeout(error)) return timeout(error);
  if (error instanceof Error && error.name === "ConnectionError") {
    return new CliError(ExitCode.Connection, error.message, {
      hint: "the server closed the connection or stopped: run the command again once it is up",
      cause: error,
    });
  }
  return undefined;
}

/** An error a server answered with, as the client gives it (an RpcError). */
export interface RemoteError {
  readonly code: number;
  readonly message: string;
  readonly data?: unknown;
}

/**
 * The error to report when the server answered with an error: exit 1, or 3 for a missing token
 * (the call never ran), with the code, message, data and what to do next; with `raw`, the error
 * object as received, JSON.
 *
 * @param context The command, `--raw`, and the method `call` called.
 */
export function remoteFailure(
  error: RemoteError,
  context: { command: string; raw: boolean; method?: string | undefined },
): CliError {
  const exitCode = error.code === -32004 ? ExitCode.Connection : ExitCode.Failure;
  if (context.raw) {
    const object = {
      code: error.code,
      message: error.message,
      ...(error.data !== undefined && { data: error.data }),
    };
    return new CliError(exitCode, error.message, { json: rawJson(object) });
  }
  return new CliError(exitCode, `${error.code} ${error.message}`, {
    data: error.data,
    hint: remoteErrorHint(error.code, context.command, context.method),
  });
}

/**
 * What to do about an error the server answered `command` with, by its code; `method` is what
 * `call` called.
 */
function remoteErrorHint(
  code: number,
  command: string,
  method?: string,
): string | undefined {
  switch (code) {
    case -32601:
      return command === "call"
        ? 'run "list" to see the methods'
        : "the server does not describe its methods: is it a tlsrpc server?";
    case -32602:
      return method === undefined ? undefined : `run "describe ${method}" to see its parameters`;
    case -32004:
      return `the server requires a token: pass --token-file FILE, or set ${TOKEN_VARIABLE}`;
    case -32001:
      return "the server is shutting down: run the command again once it is back";
    default:
      return undefined;
  }
}

function untrustedHint(ca: CaSource): string {
  switch (ca.kind) {
    case "flag":
      return `--ca "${ca.path}" did not sign it: pass the CA that did with --ca FILE`;
    case "dev":
      return `the development CA "${ca.path}" did not sign it either: pass the server's CA ` +
        "with --ca FILE";
    case "none":
      return "pass the server's CA with --ca FILE; a server on development certificates is " +
        `trusted through the development CA, which is not there: "${ca.path}"`;
    case "skipped":
      return `pass the server's CA with --ca FILE; the development CA was not tried: ${ca.why}`;
  }
}

function isTimeout(error: unknown): boolean {
  return error instanceof Error && error.name === "TimeoutError";
}

function timeout(error: unknown): CliError {
  return new CliError(ExitCode.Connection, reason(error), {
    hint: "raise --timeout, 0 waits for ever; or check that the server is not overloaded",
    cause: error,
  });
}

/** The messages of `error` and its causes, one a line, for matching. */
function causes(error: unknown): string {
  const lines: string[] = [];
  for (let e = error, depth = 0; e !== undefined && depth < 8; depth++) {
    lines.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return lines.join("\n");
}
