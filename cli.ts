/**
 * The tlsrpc command line: `serve` a module's functions, `call` one method, `list` a server's
 * methods.
 *
 * ```sh
 * deno run -A cli.ts serve examples/calc.ts --cert cert.pem --key key.pem
 * deno run -A cli.ts call --ca ca.pem add 2 3
 * deno run -A cli.ts list --ca ca.pem
 * ```
 *
 * Exit codes: 0 success, 1 the server answered with an error (or serving failed), 2 a usage
 * error (a bad flag, a missing file, a token that cannot be read), 3 the server could not be
 * reached or the TLS handshake failed.
 *
 * Tokens fail closed: `serve`, `call` and `list` take theirs from `--token-file`, else from
 * `TLSRPC_TOKEN`, and stop with exit 2 rather than go without one they cannot read; without
 * permission to read `TLSRPC_TOKEN`, pass `--no-token` to mean none. What a server (or, in the
 * logs of `serve`, a client) sends is printed with control and bidi characters escaped.
 *
 * @example Run the CLI from code
 * ```ts
 * import { main } from "./cli.ts";
 * import { serve } from "./server.ts";
 *
 * const file = (name: string) => new URL(`./testdata/${name}`, import.meta.url).pathname;
 * await using server = await serve({ add: (a: number, b: number) => a + b }, {
 *   port: 0,
 *   cert: await Deno.readTextFile(file("server.pem")),
 *   key: await Deno.readTextFile(file("server.key")),
 *   onListen: () => {},
 * });
 * const port = String(server.addr.port);
 * const code = await main(["call", "--port", port, "--ca", file("ca.pem"), "add", "2", "3"]);
 * console.log(code); // 0, after printing 5
 * ```
 *
 * @module
 */

import { connect, DEFAULT_CLIENT_OPTIONS, type RpcClient } from "./client.ts";
import { ConnectionError, RpcError, TimeoutError } from "./errors.ts";
import { DEFAULT_LIMITS, DEFAULT_PORT, type Limits, serve, type ServeOptions } from "./server.ts";
import { unwrap, wrap } from "./attr_wrapper.ts";
import {
  certificateNotAfter,
  defaultDevCertDir,
  devCertPaths,
  ensureDevCertificates,
  writeDevCertificates,
} from "./dev_cert.ts";
import { formatAddr, reason } from "./_util.ts";
import { escapeText, formatMethod, formatValue, rawJson } from "./_format.ts";
import {
  CliError,
  ExitCode,
  type FlagTable,
  formatFlags,
  HELP_FLAG,
  integer,
  parseArg,
  parseFlags,
  parseNamedParams,
  readFile,
  switchFlag,
  usage,
  valueFlag,
} from "./_cli_flags.ts";
import { readToken, TOKEN_VARIABLE } from "./_cli_token.ts";
import { loadHandlers } from "./_cli_module.ts";

export { ExitCode };

/** The default time `call` and `list` wait for connecting and for the response. */
const DEFAULT_CALL_TIMEOUT = 30_000;

/** The address `serve` listens on: local connections only, as `serve()` does by default. */
const DEFAULT_SERVE_HOSTNAME = "127.0.0.1";

const CONNECTION_FLAGS = {
  hostname: valueFlag("HOST", "server host", DEFAULT_CLIENT_OPTIONS.hostname),
  port: valueFlag("PORT", "server port", DEFAULT_PORT),
  ca: valueFlag(
    "FILE",
    "CA certificate to verify the server with, PEM",
    "the system roots and the development CA, when there is one",
  ),
  timeout: valueFlag(
    "MS",
    "time to wait for the connection, and for the response",
    DEFAULT_CALL_TIMEOUT,
  ),
  "token-file": valueFlag(
    "FILE",
    "present this token (the file's first line)",
    `$${TOKEN_VARIABLE} when it is set`,
  ),
  "no-token": switchFlag(`present no token, even when ${TOKEN_VARIABLE} cannot be read`),
  cert: valueFlag("FILE", "client certificate for mutual TLS, PEM"),
  key: valueFlag("FILE", "the private key of --cert, PEM"),
} as const satisfies FlagTable;

const SERVE_FLAGS = {
  hostname: valueFlag("HOST", "address to listen on", DEFAULT_SERVE_HOSTNAME),
  port: valueFlag("PORT", "port to listen on, 0 for any free one", DEFAULT_PORT),
  cert: valueFlag("FILE", "certificate chain, PEM", "the development certificate"),
  key: valueFlag("FILE", "private key, PEM", "the development key"),
  "expose-stack": switchFlag("send handlers' error stacks to clients"),
  "token-file": valueFlag(
    "FILE",
    "require this token (the file's first line) from every client",
    `$${TOKEN_VARIABLE} when it is set`,
  ),
  "no-token": switchFlag(`require no token, even when ${TOKEN_VARIABLE} cannot be read`),
  "client-ca": valueFlag("FILE", "require client certificates signed by this CA (mutual TLS)"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

/** The `serve` flags that set a limit: the limit, the least value that works, the help. */
const LIMITS = {
  "handshake-timeout": ["handshakeTimeout", 1, "time a client has for the TLS handshake"],
  "auth-timeout": [
    "authTimeout",
    0,
    "time a client has to present the token, when one is required; 0 disables",
  ],
  "idle-timeout": [
    "idleTimeout",
    0,
    "close a connection with no frame and no call for this long; 0 disables",
  ],
  "frame-timeout": [
    "frameTimeout",
    0,
    "a frame must arrive whole within this of its first byte; 0 disables",
  ],
  "write-timeout": [
    "writeTimeout",
    0,
    "close a client that reads none of its replies for this long; 0 disables",
  ],
  "shutdown-timeout": ["shutdownTimeout", 0, "time calls in flight get on shutdown"],
  "max-connections": ["maxConnections", 1, "open connections; more are closed at once"],
  "max-in-flight": ["maxInFlight", 1, "calls in flight per connection before reading pauses"],
  "max-batch": ["maxBatch", 1, "requests in one batch; a larger batch is refused"],
  "max-queued-bytes": ["maxQueuedBytes", 1, "unread reply bytes before a client is closed"],
  "max-frame-bytes": ["maxFrameBytes", 1, "largest frame accepted or sent"],
  "max-depth": ["maxDepth", 1, "deepest nesting of arrays and objects in a message"],
  "max-json-values": [
    "maxJsonValues",
    1,
    "JSON values (numbers, strings, arrays, objects...) in a message",
  ],
} as const satisfies Record<
  string,
  readonly [limit: keyof Limits, min: 0 | 1, description: string]
>;

/** The limit flags as parseArgs and the help take them, each default from DEFAULT_LIMITS. */
const LIMIT_FLAGS = Object.fromEntries(
  Object.entries(LIMITS).map(([flag, [limit, , description]]) => {
    const arg = limit.endsWith("Timeout") ? "MS" : "N";
    return [flag, valueFlag(arg, description, DEFAULT_LIMITS[limit])];
  }),
) as Record<keyof typeof LIMITS, ReturnType<typeof valueFlag>>;

const CALL_FLAGS = {
  ...CONNECTION_FLAGS,
  params: valueFlag("JSON", "by-name params, a JSON object, instead of ARGs"),
  raw: switchFlag("print the exact JSON of the wire, rich values as their tags"),
  get: valueFlag(
    "PATH",
    "print only the value at a dotted path of the result, e.g. 2.dd.ee or items.-1.name " +
      "(exit 1 naming the first missing step)",
  ),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const LIST_FLAGS = { ...CONNECTION_FLAGS, ...HELP_FLAG } as const satisfies FlagTable;

const CERT_FLAGS = {
  dir: valueFlag("DIR", "folder for the files", "the state folder that serve uses"),
  host: {
    ...valueFlag("NAME", "another DNS name or IP address for the server certificate; repeatable"),
    multiple: true,
  },
  client: valueFlag("NAME", "also make a client certificate with this common name"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const CLIENT_TOKENS =
  `The token comes from --token-file, else from ${TOKEN_VARIABLE} when it is set. A token
that cannot be read is an error (exit 2), never a call without it: an empty or unreadable
--token-file, an empty ${TOKEN_VARIABLE}, ${TOKEN_VARIABLE} set along with --no-token, or no
permission to read ${TOKEN_VARIABLE} (run with --allow-env=${TOKEN_VARIABLE}, or pass
--token-file FILE, or --no-token to call without a token).`;

const HELP = {
  main: `tlsrpc: JSON-RPC 2.0 over TLS

Usage: deno run -A cli.ts <command> [options]

Commands:
  serve MODULE           serve the functions of MODULE
  call METHOD [ARG...]   call one method and print its result as JSON
  list                   print the methods a server exposes
  cert                   make development certificates (a CA and a localhost certificate)

Run "deno run -A cli.ts <command> --help" for a command's options.`,
  serve: `Usage: deno run -A cli.ts serve MODULE [options]

Serves the functions of MODULE (a path or URL): its default export when it has one, else its
named exports. Prints "listening on HOST:PORT" on stdout when ready; logs go to stderr.
SIGINT and SIGTERM shut it down gracefully.

Without --cert and --key it uses development certificates from the state folder
($TLSRPC_HOME/dev-certs, else ~/.local/state/tlsrpc/dev-certs), made on first use; call and
list trust their CA when no --ca is given. They are for development only.

Token authentication: with --token-file FILE, else with ${TOKEN_VARIABLE} set, every client
must present that token, and serve says so on stderr (never the token). serve will not start
(exit 2) when it cannot read a token it may be meant to require: an empty or unreadable
--token-file, an empty ${TOKEN_VARIABLE}, ${TOKEN_VARIABLE} set along with --no-token, or no
permission to read ${TOKEN_VARIABLE}, since it cannot tell then whether it is set. Run with
--allow-env=${TOKEN_VARIABLE}, or pass --token-file FILE, or --no-token to serve without a
token: deno run --allow-net --allow-read cli.ts serve MODULE --cert FILE --key FILE --no-token

Options:
${formatFlags(SERVE_FLAGS)}

Limits (each bounds what one client can cost the server):
${formatFlags(LIMIT_FLAGS)}`,
  call: `Usage: deno run -A cli.ts call [options] METHOD [ARG...]

Calls METHOD and prints its result as JSON on stdout; rich values (bytes, BigInt, Date, Map,
Set, NaN...) print as themselves, e.g. 12n or Uint8Array(3 bytes) <01 02 03>. Each ARG is parsed
as JSON when it is valid JSON, else taken as a string: call greet ada, call add 2 3,
call sum '[1,2]'. An error answer prints its code, message and data on stderr. Control and bidi
characters from the server print as escapes (\\x1b, \\u{202e}; \\u001b inside JSON).

${CLIENT_TOKENS}

Options:
${formatFlags(CALL_FLAGS)}

Exit codes: 0 ok, 1 the server answered with an error, 2 usage, 3 connection or timeout.`,
  cert: `Usage: deno run -A cli.ts cert [--dir DIR] [--host NAME ...] [--client NAME]

Makes development certificates in pure TypeScript: a CA (ca.pem, ca.key) and a certificate for
localhost, 127.0.0.1, ::1 and every --host (cert.pem, key.pem), signed by it; --client NAME also
makes a client certificate for mutual TLS (client.pem, client.key). Existing keys are never
overwritten: they are reused, and certificates that no longer fit are renewed. Key files get
mode 0600. The CA lasts 10 years, the certificates 825 days.

These certificates are for development only: anyone who reads ca.key can impersonate any server
to whoever trusts ca.pem.

Options:
${formatFlags(CERT_FLAGS)}`,
  list: `Usage: deno run -A cli.ts list [options]

Prints the methods the server exposes, one per line, as name(params), control and bidi
characters as escapes.

${CLIENT_TOKENS}

Options:
${formatFlags(LIST_FLAGS)}`,
} as const;

/**
 * Runs the CLI with `args` (without the program name) and resolves with the exit code. Output
 * goes to stdout, errors and logs to stderr.
 *
 * @example Print the help
 * ```ts
 * import { main } from "./cli.ts";
 *
 * const code = await main(["--help"]);
 * console.log(code); // 0
 * ```
 *
 * @param args The command line arguments.
 * @returns The exit code.
 */
export async function main(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    switch (command) {
      case "serve":
        return await serveCommand(rest);
      case "call":
        return await callCommand(rest);
      case "list":
        return await listCommand(rest);
      case "cert":
        return await certCommand(rest);
      case "-h":
      case "--help":
      case "help":
        console.log(HELP.main);
        return ExitCode.Ok;
      case undefined:
        console.error(HELP.main);
        return ExitCode.Usage;
      default:
        throw new CliError(ExitCode.Usage, `Cannot run "${command}": unknown command`);
    }
  } catch (error) {
    if (error instanceof CliError) {
      // Messages carry what a server sent (an error's message, a refusal): escaped, as all else.
      console.error(`error: ${escapeText(error.message)}`);
      if (error.data !== undefined) console.error(`data: ${formatValue(error.data)}`);
      return error.exitCode;
    }
    throw error;
  }
}

async function serveCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, { ...SERVE_FLAGS, ...LIMIT_FLAGS });
  if (values.help) return help("serve");
  const [specifier, ...extra] = positionals;
  if (specifier === undefined) usage("serve", "a MODULE is required");
  if (extra.length > 0) usage("serve", `unexpected argument "${extra[0]}"`);
  if ((values.cert === undefined) !== (values.key === undefined)) {
    usage("serve", "give both --cert and --key, or neither for development certificates");
  }
  const token = await readToken("serve", values);
  const { cert, key } = values.cert !== undefined && values.key !== undefined
    ? { cert: await readFile("--cert", values.cert), key: await readFile("--key", values.key) }
    : await developmentCertificate();
  warnIfExpiring(cert);
  const options: ServeOptions = {
    hostname: values.hostname ?? DEFAULT_SERVE_HOSTNAME,
    port: integer("--port", values.port, DEFAULT_PORT, 65535),
    cert,
    key,
    exposeStack: values["expose-stack"] ?? false,
    onListen: (addr) => console.log(`listening on ${formatAddr(addr)}`),
    // Log lines may quote what a client sent: a client must not drive the operator's terminal.
    onError: (_error, line) => console.error(escapeText(line)),
  };
  if (token !== undefined) options.token = token.token;
  if (values["client-ca"] !== undefined) {
    options.clientCa = await readFile("--client-ca", values["client-ca"]);
  }
  for (const [flag, [limit, min]] of Object.entries(LIMITS)) {
    const value = values[flag as keyof typeof LIMITS];
    if (value === undefined) continue;
    options[limit] = integer(`--${flag}`, value, DEFAULT_LIMITS[limit], 0xffff_ffff);
    if (options[limit] < min) usage("serve", `--${flag} must be at least ${min}`);
  }
  const handlers = await loadHandlers(specifier);
  // Listen for signals before "listening on" is printed: whoever reads that line may stop us next.
  const stopping = new AbortController();
  const stop = () => stopping.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  try {
    let server;
    try {
      server = await serve(handlers, { ...options, signal: stopping.signal });
    } catch (error) {
      throw new CliError(ExitCode.Failure, `Cannot serve "${specifier}": ${reason(error)}`);
    }
    if (token !== undefined) {
      console.error(
        `token authentication is on: clients must present the token from ${token.source}`,
      );
    }
    await server.finished;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
  }
  return ExitCode.Ok;
}

async function callCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, CALL_FLAGS);
  if (values.help) return help("call");
  const [method, ...rawParams] = positionals;
  if (method === undefined) usage("call", "a METHOD is required");
  let named: Record<string, unknown> | undefined;
  if (values.params !== undefined) {
    if (rawParams.length > 0) usage("call", "give either ARGs or --params, not both");
    named = parseNamedParams(values.params);
  }
  const result = await withClient(
    "call",
    values,
    (client) =>
      named === undefined
        ? client.call(method, ...rawParams.map(parseArg))
        : client.callNamed(method, named),
  );
  const value = values.get === undefined ? result : pick(result, values.get);
  const indent = Deno.stdout.isTerminal() ? 2 : undefined;
  console.log(values.raw ? rawJson(value) : formatValue(value, indent));
  return ExitCode.Ok;
}

/**
 * The value at a dotted path of `value` (`2.dd.ee`, `items.-1.name`), read through AttrWrapper's
 * rules: own keys of objects, indices of arrays (negative from the end).
 */
function pick(value: unknown, path: string): unknown {
  const steps = path.split(".");
  let current = value;
  for (const [i, step] of steps.entries()) {
    const where = i === 0 ? "the result" : `"${steps.slice(0, i).join(".")}"`;
    let next: unknown;
    try {
      next = Array.isArray(current) && !/^-?\d+$/.test(step)
        ? undefined
        : (wrap(current) as Record<string, unknown>)[step];
    } catch {
      next = undefined; // an index out of range
    }
    if (next === undefined || current === null || typeof current !== "object") {
      throw new CliError(ExitCode.Failure, `Cannot get "${path}": ${where} has no "${step}"`);
    }
    current = unwrap(next);
  }
  return current;
}

async function listCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, LIST_FLAGS);
  if (values.help) return help("list");
  if (positionals.length > 0) usage("list", `unexpected argument "${positionals[0]}"`);
  const document = await withClient("list", values, (client) => client.call("rpc.discover"));
  const methods = (document as { methods?: unknown })?.methods;
  if (!Array.isArray(methods)) {
    throw new CliError(
      ExitCode.Failure,
      "Cannot list methods: the server's rpc.discover answer has no methods",
    );
  }
  for (const method of methods) console.log(formatMethod(method));
  return ExitCode.Ok;
}

type ConnectionValues = {
  hostname?: string | undefined;
  port?: string | undefined;
  ca?: string | undefined;
  timeout?: string | undefined;
  "token-file"?: string | undefined;
  "no-token"?: boolean | undefined;
  cert?: string | undefined;
  key?: string | undefined;
};

async function withClient<T>(
  command: string,
  values: ConnectionValues,
  use: (client: RpcClient) => Promise<T>,
): Promise<T> {
  const timeout = integer("--timeout", values.timeout, DEFAULT_CALL_TIMEOUT);
  const caCerts = values.ca === undefined
    ? await developmentCa()
    : [await readFile("--ca", values.ca)];
  const port = integer("--port", values.port, DEFAULT_PORT, 65535);
  if ((values.cert === undefined) !== (values.key === undefined)) {
    throw new CliError(
      ExitCode.Usage,
      "Cannot use a client certificate: give both --cert and --key",
    );
  }
  const cert = values.cert === undefined ? undefined : await readFile("--cert", values.cert);
  const key = values.key === undefined ? undefined : await readFile("--key", values.key);
  const token = await readToken(command, values);
  let client: RpcClient;
  try {
    client = await connect({
      hostname: values.hostname ?? DEFAULT_CLIENT_OPTIONS.hostname,
      port,
      timeout,
      connectTimeout: timeout,
      ...(caCerts && { caCerts }),
      ...(cert !== undefined && key !== undefined && { cert, key }),
      ...(token !== undefined && { token: token.token }),
    });
  } catch (error) {
    throw new CliError(ExitCode.Connection, reason(error));
  }
  try {
    return await use(client);
  } catch (error) {
    if (error instanceof RpcError) {
      throw new CliError(ExitCode.Failure, `${error.code} ${error.message}`, { data: error.data });
    }
    if (error instanceof ConnectionError || error instanceof TimeoutError) {
      throw new CliError(ExitCode.Connection, error.message);
    }
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new CliError(ExitCode.Usage, error.message);
    }
    throw error;
  } finally {
    await client.close();
  }
}

async function certCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(args, CERT_FLAGS);
  if (values.help) return help("cert");
  if (positionals.length > 0) usage("cert", `unexpected argument "${positionals[0]}"`);
  let files;
  try {
    const dir = values.dir ?? defaultDevCertDir();
    files = await writeDevCertificates(dir, {
      ...(values.host && { hosts: values.host }),
      ...(values.client !== undefined && { clientName: values.client }),
    });
  } catch (error) {
    const code = error instanceof TypeError || error instanceof RangeError
      ? ExitCode.Usage
      : ExitCode.Failure;
    throw new CliError(code, `Cannot make development certificates: ${reason(error)}`);
  }
  const rows = [
    files.caCert,
    files.caKey,
    files.cert,
    files.key,
    files.clientCert,
    files.clientKey,
  ];
  for (const file of rows) if (file) console.log(`${file.status.padEnd(8)} ${file.path}`);
  console.error(
    `Development certificates in ${files.dir}, valid until ${files.notAfter.toISOString()}. ` +
      "For development only: anyone who reads ca.key can impersonate servers to whoever trusts ca.pem.",
  );
  return ExitCode.Ok;
}

/** The development certificate and key for `serve`, made in the state folder on first use. */
async function developmentCertificate(): Promise<{ cert: string; key: string }> {
  let files;
  try {
    files = await ensureDevCertificates();
  } catch (error) {
    throw new CliError(
      ExitCode.Failure,
      `Cannot make development certificates: ${reason(error)} (or pass --cert and --key)`,
    );
  }
  const made = files.caKey.status === "created"
    ? "made a development CA and certificate"
    : "using development certificates";
  console.error(
    `${made} in ${files.dir}: for development only; pass --cert and --key in production`,
  );
  return {
    cert: await readFile("--cert", files.cert.path),
    key: await readFile("--key", files.key.path),
  };
}

/** The development CA, when `cert` or `serve` has made one, for `call` and `list`. */
async function developmentCa(): Promise<string[] | undefined> {
  try {
    return [await Deno.readTextFile(devCertPaths(defaultDevCertDir()).caCert)];
  } catch {
    return undefined; // none made, or no state folder: the system roots alone apply
  }
}

/** The days before expiry from which `serve` warns about its certificate. */
const EXPIRY_WARNING_DAYS = 7;

function warnIfExpiring(cert: string): void {
  let notAfter: Date;
  try {
    notAfter = certificateNotAfter(cert);
  } catch {
    return; // not a certificate we can read; Deno.listenTls will say what is wrong with it
  }
  const days = (notAfter.getTime() - Date.now()) / 86_400_000;
  if (days < EXPIRY_WARNING_DAYS) {
    const when = days < 0 ? "expired on" : "expires on";
    console.error(`warning: the server certificate ${when} ${notAfter.toISOString()}`);
  }
}

function help(command: keyof typeof HELP): number {
  console.log(HELP[command]);
  return ExitCode.Ok;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
