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
 * error (a bad flag, a missing file), 3 the server could not be reached or the TLS handshake
 * failed.
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

import { parseArgs, type ParseArgsConfig } from "node:util";
import { connect, type RpcClient } from "./client.ts";
import { ConnectionError, RpcError, TimeoutError } from "./errors.ts";
import { DEFAULT_LIMITS, DEFAULT_PORT, type Limits, serve, type ServeOptions } from "./server.ts";
import { formatAddr, reason } from "./_util.ts";
import { unwrap, wrap } from "./attr_wrapper.ts";
import { DEFAULT_MAX_DEPTH } from "./_codec.ts";
import { jsonOnlyProblem, RichEncoder } from "./_rich.ts";
import {
  certificateNotAfter,
  defaultDevCertDir,
  devCertPaths,
  ensureDevCertificates,
  writeDevCertificates,
} from "./dev_cert.ts";

/** Exit codes of the CLI. */
export const ExitCode = {
  /** The command did what it was asked. */
  Ok: 0,
  /** The server answered with an error, or the server could not start. */
  Failure: 1,
  /** The command line is wrong: a bad flag, a missing argument or file. */
  Usage: 2,
  /** The server could not be reached, the TLS handshake failed, or the call timed out. */
  Connection: 3,
} as const;

class CliError extends Error {
  readonly exitCode: number;
  constructor(exitCode: number, message: string) {
    super(message);
    this.name = "CliError";
    this.exitCode = exitCode;
  }
}

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

Options:
  --hostname HOST          address to listen on (default 127.0.0.1)
  --port PORT              port to listen on, 0 for any free one (default 7443)
  --cert FILE              certificate chain, PEM (default: development certificate)
  --key FILE               private key, PEM (default: development key)
  --expose-stack           send handlers' error stacks to clients
  --token-file FILE        require this token (the file's first line) from every client;
                           default: $TLSRPC_TOKEN when set
  --client-ca FILE         require client certificates signed by this CA (mutual TLS)
  -h, --help               show this help

Limits (each bounds what one client can cost the server):
  --handshake-timeout MS   time a client has for the TLS handshake (default 10000)
  --idle-timeout MS        close a connection with no frame and no call for this long;
                           0 disables (default 300000)
  --frame-timeout MS       a frame must arrive whole within this of its first byte;
                           0 disables (default 30000)
  --write-timeout MS       close a client that reads none of its replies for this long;
                           0 disables (default 30000)
  --shutdown-timeout MS    time calls in flight get on shutdown (default 10000)
  --max-connections N      open connections; more are closed at once (default 10000)
  --max-in-flight N        calls in flight per connection before reading pauses (default 1024)
  --max-queued-bytes N     unread reply bytes before a client is closed (default 67108864)
  --max-frame-bytes N      largest frame accepted or sent (default 16777216)
  --max-depth N            deepest nesting of arrays and objects in a message (default 128)`,
  call: `Usage: deno run -A cli.ts call [options] METHOD [ARG...]

Calls METHOD and prints its result as JSON on stdout; rich values (bytes, BigInt, Date, Map,
Set, NaN...) print as themselves, e.g. 12n or Uint8Array(3 bytes) <01 02 03>. Each ARG is parsed
as JSON when it is valid JSON, else taken as a string: call greet ada, call add 2 3,
call sum '[1,2]'.

Options:
  --hostname HOST    server host (default localhost)
  --port PORT        server port (default 7443)
  --ca FILE          CA certificate to verify the server with, PEM (default: system roots
                     and the development CA, when there is one)
  --timeout MS       time to wait for the response (default 30000)
  --token-file FILE  present this token (the file's first line); default: $TLSRPC_TOKEN
  --cert FILE        client certificate for mutual TLS, PEM, with --key FILE
  --params JSON      by-name params, a JSON object, instead of ARGs
  --raw              print the exact JSON of the wire, rich values as their tags
  --get PATH         print only the value at a dotted path of the result, e.g. 2.dd.ee
                     or items.-1.name (exit 1 naming the first missing step)
  -h, --help         show this help

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
  --dir DIR          folder for the files (default: the state folder that serve uses)
  --host NAME        another DNS name or IP address for the server certificate; repeatable
  --client NAME      also make a client certificate with this common name
  -h, --help         show this help`,
  list: `Usage: deno run -A cli.ts list [options]

Prints the methods the server exposes, one per line, as name(params).

Options:
  --hostname HOST    server host (default localhost)
  --port PORT        server port (default 7443)
  --ca FILE          CA certificate to verify the server with, PEM (default: system roots
                     and the development CA, when there is one)
  --timeout MS       time to wait for the response (default 30000)
  --token-file FILE  present this token (the file's first line); default: $TLSRPC_TOKEN
  --cert FILE        client certificate for mutual TLS, PEM, with --key FILE
  -h, --help         show this help`,
} as const;

/** The default time `call` and `list` wait for connecting and for the response. */
const DEFAULT_CALL_TIMEOUT = 30_000;

const connectionFlags = {
  hostname: { type: "string" },
  port: { type: "string" },
  ca: { type: "string" },
  timeout: { type: "string" },
  "token-file": { type: "string" },
  cert: { type: "string" },
  key: { type: "string" },
  help: { type: "boolean", short: "h" },
} as const satisfies ParseArgsConfig["options"];

/** The environment variable that holds a token when no --token-file is given. */
const TOKEN_VARIABLE = "TLSRPC_TOKEN";

/** The token from --token-file (its first line) or $TLSRPC_TOKEN; never printed. */
async function readToken(file: string | undefined): Promise<string | undefined> {
  let token: string | undefined;
  if (file !== undefined) {
    token = (await readFile("--token-file", file)).split(/\r?\n/)[0]?.trim();
    if (!token) {
      throw new CliError(ExitCode.Usage, `Cannot use --token-file "${file}": it is empty`);
    }
  } else {
    try {
      token = Deno.env.get(TOKEN_VARIABLE) || undefined;
    } catch {
      token = undefined; // no --allow-env: no token from the environment
    }
  }
  return token;
}

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
      console.error(`error: ${error.message}`);
      return error.exitCode;
    }
    throw error;
  }
}

/** The `serve` flags that set a limit, and the limit each sets. */
const LIMIT_FLAGS = {
  "handshake-timeout": "handshakeTimeout",
  "idle-timeout": "idleTimeout",
  "frame-timeout": "frameTimeout",
  "write-timeout": "writeTimeout",
  "shutdown-timeout": "shutdownTimeout",
  "max-connections": "maxConnections",
  "max-in-flight": "maxInFlight",
  "max-queued-bytes": "maxQueuedBytes",
  "max-frame-bytes": "maxFrameBytes",
  "max-depth": "maxDepth",
} as const satisfies Record<string, keyof Limits>;

/** Limits that 0 would make useless rather than unlimited. */
const POSITIVE_LIMITS: ReadonlySet<keyof Limits> = new Set([
  "maxConnections",
  "maxInFlight",
  "maxQueuedBytes",
  "maxFrameBytes",
  "maxDepth",
  "handshakeTimeout",
]);

async function serveCommand(args: string[]): Promise<number> {
  const limitOptions = Object.fromEntries(
    Object.keys(LIMIT_FLAGS).map((flag) => [flag, { type: "string" }] as const),
  ) as Record<keyof typeof LIMIT_FLAGS, { type: "string" }>;
  const { values, positionals } = parse(args, {
    hostname: { type: "string" },
    port: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    "token-file": { type: "string" },
    "client-ca": { type: "string" },
    ...limitOptions,
    "expose-stack": { type: "boolean" },
    help: { type: "boolean", short: "h" },
  });
  if (values.help) return help("serve");
  const [specifier, ...extra] = positionals;
  if (specifier === undefined) usage("serve", "a MODULE is required");
  if (extra.length > 0) usage("serve", `unexpected argument "${extra[0]}"`);
  if ((values.cert === undefined) !== (values.key === undefined)) {
    usage("serve", "give both --cert and --key, or neither for development certificates");
  }
  const { cert, key } = values.cert !== undefined && values.key !== undefined
    ? { cert: await readFile("--cert", values.cert), key: await readFile("--key", values.key) }
    : await developmentCertificate();
  warnIfExpiring(cert);
  const options: ServeOptions = {
    hostname: values.hostname ?? "127.0.0.1",
    port: integer("--port", values.port, DEFAULT_PORT, 65535),
    cert,
    key,
    exposeStack: values["expose-stack"] ?? false,
    onListen: (addr) => console.log(`listening on ${formatAddr(addr)}`),
  };
  const token = await readToken(values["token-file"]);
  if (token !== undefined) options.token = token;
  if (values["client-ca"] !== undefined) {
    options.clientCa = await readFile("--client-ca", values["client-ca"]);
  }
  for (
    const [flag, limit] of Object.entries(LIMIT_FLAGS) as [keyof typeof LIMIT_FLAGS, keyof Limits][]
  ) {
    const value = values[flag];
    if (value === undefined) continue;
    options[limit] = integer(`--${flag}`, value, DEFAULT_LIMITS[limit], 0xffff_ffff);
    if (options[limit] === 0 && POSITIVE_LIMITS.has(limit)) {
      usage("serve", `--${flag} must be at least 1`);
    }
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
    await server.finished;
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
  }
  return ExitCode.Ok;
}

async function callCommand(args: string[]): Promise<number> {
  const { values, positionals } = parse(args, {
    ...connectionFlags,
    params: { type: "string" },
    get: { type: "string" },
    raw: { type: "boolean" },
  });
  if (values.help) return help("call");
  const [method, ...rawParams] = positionals;
  if (method === undefined) usage("call", "a METHOD is required");
  let named: Record<string, unknown> | undefined;
  if (values.params !== undefined) {
    if (rawParams.length > 0) usage("call", "give either ARGs or --params, not both");
    named = parseNamedParams(values.params);
  }
  const result = await withClient(
    values,
    (client) =>
      named === undefined
        ? client.call(method, ...rawParams.map(parseArg))
        : client.callNamed(method, named),
  );
  const value = values.get === undefined ? result : pick(result, values.get);
  console.log(values.raw ? rawJson(value) : formatValue(value));
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
  const { values, positionals } = parse(args, connectionFlags);
  if (values.help) return help("list");
  if (positionals.length > 0) usage("list", `unexpected argument "${positionals[0]}"`);
  const document = await withClient(values, (client) => client.call("rpc.discover"));
  const methods = (document as { methods?: unknown })?.methods;
  if (!Array.isArray(methods)) {
    throw new CliError(
      ExitCode.Failure,
      "Cannot list methods: the server's rpc.discover answer has no methods",
    );
  }
  for (const method of methods) {
    const params = Array.isArray(method?.params)
      ? method.params.map((param: { name?: unknown }) => String(param?.name)).join(", ")
      : "";
    console.log(`${method?.name}(${params})`);
  }
  return ExitCode.Ok;
}

type ConnectionValues = {
  hostname?: string | undefined;
  port?: string | undefined;
  ca?: string | undefined;
  timeout?: string | undefined;
  "token-file"?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
};

async function withClient<T>(
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
  const token = await readToken(values["token-file"]);
  let client: RpcClient;
  try {
    client = await connect({
      hostname: values.hostname ?? "localhost",
      port,
      timeout,
      connectTimeout: timeout,
      ...(caCerts && { caCerts }),
      ...(cert !== undefined && key !== undefined && { cert, key }),
      ...(token !== undefined && { token }),
    });
  } catch (error) {
    throw new CliError(ExitCode.Connection, reason(error));
  }
  try {
    return await use(client);
  } catch (error) {
    if (error instanceof RpcError) {
      throw new CliError(ExitCode.Failure, `${error.code} ${error.message}`);
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
  const { values, positionals } = parse(args, {
    dir: { type: "string" },
    host: { type: "string", multiple: true },
    client: { type: "string" },
    help: { type: "boolean", short: "h" },
  });
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

async function loadHandlers(specifier: string): Promise<object> {
  const url = /^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)
    ? specifier
    : new URL(specifier, `file://${Deno.cwd()}/`).href;
  if (url.startsWith("file:")) {
    try {
      await Deno.stat(new URL(url));
    } catch (error) {
      const why = error instanceof Deno.errors.NotFound ? "file not found" : reason(error);
      throw new CliError(ExitCode.Usage, `Cannot load module "${specifier}": ${why}`);
    }
  }
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    const first = reason(error).split("\n")[0];
    throw new CliError(ExitCode.Failure, `Cannot load module "${specifier}": ${first}`);
  }
  const fallback = module.default;
  if (
    typeof fallback === "function" && /^class\b/.test(Function.prototype.toString.call(fallback))
  ) {
    return new (fallback as new () => object)();
  }
  if (fallback !== null && typeof fallback === "object") return fallback;
  return module;
}

async function readFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const why = error instanceof Deno.errors.NotFound ? "file not found" : reason(error);
    throw new CliError(ExitCode.Usage, `Cannot read ${flag} "${path}": ${why}`);
  }
}

/** Parses flags; arguments that look like negative numbers are positionals, not short options. */
function parse<T extends NonNullable<ParseArgsConfig["options"]>>(args: string[], options: T) {
  const negatives: string[] = [];
  const masked = args.map((arg) => {
    if (!/^-[\d.]/.test(arg)) return arg;
    negatives.push(arg);
    return `\u0000${negatives.length - 1}`;
  });
  const unmask = (value: string) =>
    value.startsWith("\u0000") ? negatives[Number(value.slice(1))] ?? value : value;
  let parsed;
  try {
    parsed = parseArgs({ args: masked, options, allowPositionals: true, strict: true });
  } catch (error) {
    const message = unmask(reason(error)).split(". To specify")[0];
    throw new CliError(ExitCode.Usage, `Cannot parse arguments: ${message}`);
  }
  const values = parsed.values as Record<string, unknown>;
  for (const [key, value] of Object.entries(values)) {
    if (typeof value === "string") values[key] = unmask(value);
  }
  return { values: parsed.values, positionals: parsed.positionals.map(unmask) };
}

function integer(
  flag: string,
  value: string | undefined,
  fallback: number,
  max = 2 ** 31 - 1,
): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(number) || number > max) {
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${flag} "${value}": it must be a whole number from 0 to ${max}`,
    );
  }
  return number;
}

function parseArg(arg: string): unknown {
  try {
    return JSON.parse(arg);
  } catch {
    return arg;
  }
}

function parseNamedParams(text: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new CliError(ExitCode.Usage, `Cannot use --params: ${reason(error)}`);
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    throw new CliError(ExitCode.Usage, "Cannot use --params: it must be a JSON object");
  }
  return value as Record<string, unknown>;
}

/**
 * The result for a human: JSON when plain JSON carries it, else JSON-like text in which rich
 * values read as themselves: `12345678901234567890n`, `Date(2024-01-01T00:00:00.000Z)`,
 * `Uint8Array(1048576) <00 01 02 ... ff>`, `Map { "a" => 1 }`, `Set [1, 2]`, `undefined`, `NaN`.
 */
function formatValue(value: unknown): string {
  const indent = Deno.stdout.isTerminal() ? 2 : undefined;
  if (jsonOnlyProblem(value, DEFAULT_MAX_DEPTH, true) === undefined) {
    return JSON.stringify(value, null, indent) ?? "null";
  }
  return readable(value, indent === undefined ? "" : "\n", indent ?? 0, 0);
}

/** Bytes shown of a binary value, in hex. */
const BYTES_PREVIEW = 16;

function readable(value: unknown, newline: string, indent: number, level: number): string {
  const pad = (n: number) => newline === "" ? "" : newline + " ".repeat(indent * n);
  const list = (open: string, items: string[], close: string) =>
    items.length === 0
      ? `${open}${close}`
      : `${open}${items.map((item) => pad(level + 1) + item).join(newline === "" ? ", " : ",")}${
        pad(level)
      }${close}`;
  const inner = (v: unknown) => readable(v, newline, indent, level + 1);
  switch (typeof value) {
    case "bigint":
      return `${value}n`;
    case "undefined":
      return "undefined";
    case "number":
      return Object.is(value, -0) ? "-0" : String(value);
    case "string":
    case "boolean":
      return JSON.stringify(value);
    case "object": {
      if (value === null) return "null";
      if (value instanceof Date) {
        return Number.isNaN(value.getTime()) ? "Date(invalid)" : `Date(${value.toISOString()})`;
      }
      if (value instanceof ArrayBuffer || ArrayBuffer.isView(value)) {
        const bytes = value instanceof ArrayBuffer
          ? new Uint8Array(value)
          : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
        const hex = [...bytes.subarray(0, BYTES_PREVIEW)].map((b) =>
          b.toString(16).padStart(2, "0")
        );
        const more = bytes.length > BYTES_PREVIEW ? " ..." : "";
        return `${value.constructor.name}(${bytes.length} bytes) <${hex.join(" ")}${more}>`;
      }
      if (value instanceof Map) {
        return list("Map {", [...value].map(([k, v]) => `${inner(k)} => ${inner(v)}`), "}");
      }
      if (value instanceof Set) return list("Set [", [...value].map(inner), "]");
      if (Array.isArray(value)) return list("[", value.map(inner), "]");
      const entries = Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${inner(v)}`);
      return list("{", entries, "}");
    }
    default:
      return String(value);
  }
}

/** The value as the exact JSON of the wire: rich values as their tags (PROTOCOL.md section 8). */
function rawJson(value: unknown): string {
  return JSON.stringify(new RichEncoder(DEFAULT_MAX_DEPTH).encode(value)) ?? "null";
}

function help(command: keyof typeof HELP): number {
  console.log(HELP[command]);
  return ExitCode.Ok;
}

function usage(command: string, message: string): never {
  throw new CliError(ExitCode.Usage, `Cannot run "${command}": ${message} (see --help)`);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
