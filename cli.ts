/**
 * The tlsrpc command line: `serve` a module's functions, `call` one method, `list` a server's
 * methods, `describe` one, and make development certificates (`cert`).
 *
 * ```sh
 * deno install -g -n tlsrpc --allow-net --allow-read \
 *   --allow-env=TLSRPC_TOKEN,TLSRPC_HOME,XDG_STATE_HOME,HOME --allow-sys=uid jsr:@tlsrpc/tlsrpc/cli
 * tlsrpc serve examples/calc.ts --cert cert.pem --key key.pem
 * tlsrpc call --ca ca.pem add 2 3
 * tlsrpc list --ca ca.pem
 * ```
 *
 * Exit codes: 0 success, 1 the server answered with an error (or serving failed), 2 a usage
 * error (a bad flag or argument, a file that cannot be read or holds the wrong thing, a missing
 * permission, a token that cannot be read), 3 the server could not be reached, the TLS handshake
 * failed, a token was refused or missing, or the call timed out. Every error is one line that
 * ends with what to do next, in parentheses.
 *
 * `serve` checks its certificate, key, CA file and module before it listens; `call` prints
 * results as JSON when stdout is not a terminal (rich values as `{"$bigint":"12"}` and the
 * like: see `call --help`). Tokens fail closed: `serve`, `call` and `list` take theirs from
 * `--token-file`, else from `TLSRPC_TOKEN`, and stop with exit 2 rather than go without one they
 * cannot read. What a server (or, in the logs of `serve`, a client) sends is printed with control
 * and bidi characters escaped.
 *
 * In production, `serve --workers N` serves from N threads sharing the port (Linux), `--metrics
 * HOST:PORT` serves Prometheus metrics (summed over the workers), `--proxy-protocol` reads the
 * client's address from a balancer's PROXY header, and `--log-format json` writes one JSON object
 * a line. `call`, `list` and `describe` take `--endpoint HOST:PORT`, repeatable, to fail over
 * between servers; `call --verbose` shows the connection's timings, the server's certificate and
 * the extensions negotiated.
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
import { RpcError } from "./errors.ts";
import { DEFAULT_PORT, serve } from "./server.ts";
import * as devCert from "./dev_cert.ts";
import { formatAddr, reason } from "./_util.ts";
import {
  describeMethod,
  escapeText,
  formatMethod,
  formatValue,
  rawJson,
  toJson,
} from "./_format.ts";
import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import {
  type FlagTable,
  formatFlags,
  HELP_FLAG,
  hostPort,
  integer,
  parseArg,
  parseFlags,
  readNamedParams,
  switchFlag,
  usage,
  valueFlag,
} from "./_cli_flags.ts";
import { readToken, TOKEN_VARIABLE } from "./_cli_token.ts";
import { pick } from "./_cli_pick.ts";
import {
  callFailure,
  type CaSource,
  connectFailure,
  endpointsFailure,
  remoteFailure,
} from "./_cli_advice.ts";
import { checkCaFile, checkCertificateAndKey, readPemFile } from "./_cli_tls.ts";
import { helpTexts } from "./_cli_help.ts";
import { LIMIT_FLAGS } from "./_cli_limits.ts";
import { isUnsafeState, stateFolder, trustedDevCa } from "./_cli_dev.ts";
import { SERVE_FLAGS, serveCommand } from "./_cli_serve.ts";
import { VerboseLog } from "./_cli_verbose.ts";
import { VERSION } from "./_version.ts";

export { ExitCode };

/** The default time `call` and `list` wait for connecting and for the response. */
const DEFAULT_CALL_TIMEOUT = 30_000;

/** What `--timeout 0` (no timeout) means for connecting: the longest timer there is, 24 days. */
const NO_TIMEOUT = 2 ** 31 - 1;

const CONNECTION_FLAGS = {
  hostname: valueFlag("HOST", "server host", DEFAULT_CLIENT_OPTIONS.hostname),
  port: valueFlag("PORT", "server port", DEFAULT_PORT),
  endpoint: {
    ...valueFlag(
      "HOST:PORT",
      "a server, instead of --hostname and --port; repeatable: the client tries them in a " +
        "random order until one answers (an IPv6 address in brackets, [::1]:7443)",
    ),
    multiple: true,
  },
  ca: valueFlag(
    "FILE",
    "CA certificate(s) to verify the server with, PEM",
    "the system roots and the development CA, when there is one",
  ),
  timeout: valueFlag(
    "MS",
    "time to wait for the connection, and for the response; 0 waits for ever",
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

const CALL_FLAGS = {
  ...CONNECTION_FLAGS,
  params: valueFlag(
    "JSON",
    "by-name params instead of ARGs: a JSON object, @FILE to read it from FILE, - from stdin",
  ),
  json: switchFlag("print the result as JSON even on a terminal (rich values tagged)"),
  raw: switchFlag(
    "print the exact JSON of the wire, rich values as their tags; an error as its JSON object",
  ),
  get: valueFlag(
    "PATH",
    "print only the value at a dotted path of the result, e.g. 2.dd.ee, items.-1.name or a " +
      "Map's key (exit 1 naming the first missing step)",
  ),
  verbose: switchFlag(
    "print on stderr, before the result: connection and call times, the server's certificate " +
      "and the extensions negotiated (see above)",
  ),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const LIST_FLAGS = {
  ...CONNECTION_FLAGS,
  json: switchFlag("print the rpc.discover document as JSON"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const DESCRIBE_FLAGS = {
  ...CONNECTION_FLAGS,
  json: switchFlag("print the method's entry of the rpc.discover document as JSON"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const CERT_FLAGS = {
  dir: valueFlag("DIR", "folder for the files", "the state folder that serve uses"),
  host: {
    ...valueFlag("NAME", "another DNS name or IP address for the server certificate; repeatable"),
    multiple: true,
  },
  client: valueFlag("NAME", "also make a client certificate with this common name"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

const HELP = helpTexts({
  serve: formatFlags(SERVE_FLAGS),
  limits: formatFlags(LIMIT_FLAGS),
  call: formatFlags(CALL_FLAGS),
  list: formatFlags(LIST_FLAGS),
  describe: formatFlags(DESCRIBE_FLAGS),
  cert: formatFlags(CERT_FLAGS),
});

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
    return await run(command, rest);
  } catch (error) {
    const failure = failureOf(command, error);
    if (failure === undefined) throw error;
    report(failure);
    return failure.exitCode;
  }
}

/** What to report of `error`: a CliError as it is, an unsafe state folder or a permission. */
function failureOf(command: string | undefined, error: unknown): CliError | undefined {
  return error instanceof CliError
    ? error
    : isUnsafeState(error)
    ? new CliError(ExitCode.Usage, error.message)
    : permissionError(`run "${command}"`, error);
}

async function run(command: string | undefined, args: string[]): Promise<number> {
  switch (command) {
    case "serve":
      return await serveCommand(args, {
        serve,
        devCert,
        help: () => help("serve"),
        failure: (error) => failureOf(command, error),
      });
    case "call":
      return await callCommand(args);
    case "list":
      return await listCommand(args);
    case "describe":
      return await describeCommand(args);
    case "cert":
      return await certCommand(args);
    case "help":
      return helpCommand(args);
    case "-h":
    case "--help":
      console.log(HELP.main);
      return ExitCode.Ok;
    case "-V":
    case "--version":
      console.log(`tlsrpc ${VERSION}`);
      return ExitCode.Ok;
    case undefined:
      console.error(HELP.main);
      return ExitCode.Usage;
    default:
      throw new CliError(ExitCode.Usage, `Cannot run "${command}": unknown command`, {
        hint: 'run "help" to see the commands',
      });
  }
}

/**
 * Prints a failure on stderr: the message and what to do next on one line, then its detail lines
 * and a remote error's data.
 */
function report(error: CliError): void {
  if (error.json !== undefined) return console.error(error.json);
  // Messages carry what a server sent (an error's message, a refusal): escaped, as all else.
  const hint = error.hint === undefined ? "" : ` (${error.hint})`;
  console.error(`error: ${escapeText(error.message + hint)}`);
  for (const line of error.detail?.split("\n") ?? []) console.error(escapeText(line));
  if (error.data !== undefined) console.error(`data: ${formatValue(error.data)}`);
}

function helpCommand(args: string[]): number {
  const [topic, ...extra] = args;
  if (extra.length > 0) usage("help", `unexpected argument "${extra[0]}"`);
  if (topic === undefined) return help("main");
  if (!Object.hasOwn(HELP, topic) || topic === "main") {
    throw new CliError(ExitCode.Usage, `Cannot run "help ${topic}": unknown command`, {
      hint: 'run "help" to see the commands',
    });
  }
  return help(topic as keyof typeof HELP);
}

function help(topic: keyof typeof HELP): number {
  console.log(HELP[topic]);
  return ExitCode.Ok;
}

async function callCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags("call", args, CALL_FLAGS);
  if (values.help) return help("call");
  const [method, ...rawArgs] = positionals;
  if (method === undefined) usage("call", "a METHOD is required");
  let named: Record<string, unknown> | undefined;
  if (values.params !== undefined) {
    if (rawArgs.length > 0) usage("call", "give either ARGs or --params, not both");
    named = await readNamedParams(values.params);
  }
  // Parsed before connecting: a typo in an ARG costs no connection.
  const params = rawArgs.map((arg, i) => parseArg(arg, i + 1));
  const verbose = values.verbose ? new VerboseLog() : undefined;
  const result = await withClient("call", { ...values, method }, async (client) => {
    const start = performance.now();
    try {
      return await (named === undefined
        ? client.call(method, ...params)
        : client.callNamed(method, named));
    } finally {
      verbose?.called(method, start);
    }
  }, verbose);
  const value = values.get === undefined ? result : pick(result, values.get);
  const terminal = Deno.stdout.isTerminal();
  console.log(
    values.raw
      ? rawJson(value)
      : values.json || !terminal
      ? toJson(value, terminal ? 2 : undefined)
      : formatValue(value, 2),
  );
  return ExitCode.Ok;
}

async function listCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags("list", args, LIST_FLAGS);
  if (values.help) return help("list");
  if (positionals.length > 0) usage("list", `unexpected argument "${positionals[0]}"`);
  const { document, methods } = await discover("list", values);
  if (values.json) console.log(toJson(document, Deno.stdout.isTerminal() ? 2 : undefined));
  else for (const method of methods) console.log(formatMethod(method));
  return ExitCode.Ok;
}

async function describeCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags("describe", args, DESCRIBE_FLAGS);
  if (values.help) return help("describe");
  const [name, ...extra] = positionals;
  if (name === undefined) usage("describe", "a METHOD is required");
  if (extra.length > 0) usage("describe", `unexpected argument "${extra[0]}"`);
  const { methods } = await discover("describe", values);
  const method = methods.find((entry) =>
    entry !== null && typeof entry === "object" && Object.hasOwn(entry, "name") &&
    (entry as { name: unknown }).name === name
  );
  if (method === undefined) {
    throw new CliError(
      ExitCode.Failure,
      `Cannot describe "${name}": the server has no such method`,
      {
        hint: 'run "list" to see the methods',
      },
    );
  }
  console.log(
    values.json ? toJson(method, Deno.stdout.isTerminal() ? 2 : undefined) : describeMethod(method),
  );
  return ExitCode.Ok;
}

/** The server's rpc.discover document, and its methods. */
async function discover(
  command: string,
  values: ConnectionValues,
): Promise<{ document: unknown; methods: unknown[] }> {
  const document = await withClient(command, values, (client) => client.call("rpc.discover"));
  const methods = document !== null && typeof document === "object" &&
      Object.hasOwn(document, "methods")
    ? (document as { methods: unknown }).methods
    : undefined;
  if (!Array.isArray(methods)) {
    throw new CliError(
      ExitCode.Failure,
      `Cannot ${command} methods: the server's rpc.discover answer has no methods`,
      { hint: "is it a tlsrpc server? Plain JSON-RPC servers may not describe their methods" },
    );
  }
  return { document, methods };
}

type ConnectionValues = {
  hostname?: string | undefined;
  port?: string | undefined;
  endpoint?: string[] | undefined;
  ca?: string | undefined;
  timeout?: string | undefined;
  "token-file"?: string | undefined;
  "no-token"?: boolean | undefined;
  cert?: string | undefined;
  key?: string | undefined;
  raw?: boolean | undefined;
  /** The method `call` calls, for hints. */
  method?: string | undefined;
};

/**
 * Connects as the flags say, runs `use`, and closes; each failure becomes the CliError that says
 * what went wrong and what to do. With `verbose`, connecting is timed and the server inspected.
 */
async function withClient<T>(
  command: string,
  values: ConnectionValues,
  use: (client: RpcClient) => Promise<T>,
  verbose?: VerboseLog,
): Promise<T> {
  const timeout = integer("--timeout", values.timeout, DEFAULT_CALL_TIMEOUT);
  const port = integer("--port", values.port, DEFAULT_PORT, 65535);
  const hostname = values.hostname ?? DEFAULT_CLIENT_OPTIONS.hostname;
  const endpoints = values.endpoint?.map((value) => hostPort("--endpoint", value));
  if (endpoints !== undefined && (values.hostname !== undefined || values.port !== undefined)) {
    usage(command, "give --endpoint, or --hostname and --port, not both");
  }
  if ((values.cert === undefined) !== (values.key === undefined)) {
    usage(command, "give both --cert and --key for a client certificate, or neither");
  }
  const token = await readToken(command, values);
  let clientCert: { cert: string; key: string } | undefined;
  if (values.cert !== undefined && values.key !== undefined) {
    const cert = await readPemFile("--cert", values.cert);
    const key = await readPemFile("--key", values.key);
    for (const warning of await checkCertificateAndKey(cert, key, "client")) {
      console.error(escapeText(warning));
    }
    clientCert = { cert: cert.text, key: key.text };
  }
  const trust = await trustedCa(values.ca);
  const tls = { ...(trust.caCerts && { caCerts: trust.caCerts }), ...clientCert };
  let client: RpcClient;
  const start = performance.now();
  try {
    client = await connect({
      ...(endpoints === undefined ? { hostname, port } : { endpoints }),
      timeout,
      connectTimeout: timeout === 0 ? NO_TIMEOUT : timeout,
      ...tls,
      ...(token !== undefined && { token: token.token }),
      ...(verbose && { dial: verbose.dialer(tls) }),
    });
  } catch (error) {
    const context = {
      ca: trust.source,
      clientCert: values.cert,
      endpoint: endpoints !== undefined,
    };
    throw endpoints !== undefined && endpoints.length > 1
      ? endpointsFailure(error, endpoints.map(formatAddr), context)
      : connectFailure(error, {
        ...context,
        target: formatAddr(endpoints?.[0] ?? { hostname, port }),
      });
  }
  verbose?.connected(start);
  try {
    return await use(client);
  } catch (error) {
    if (error instanceof RpcError) {
      throw remoteFailure(error, { command, raw: values.raw ?? false, method: values.method });
    }
    const failure = callFailure(error);
    if (failure !== undefined) throw failure;
    if (error instanceof TypeError || error instanceof RangeError) {
      throw new CliError(ExitCode.Usage, error.message);
    }
    throw error;
  } finally {
    await client.close();
  }
}

/**
 * The CAs `call` and `list` trust besides the system's: `--ca FILE`, which must hold a
 * certificate; else the development CA, once its folder is found safe (see trustedDevCa).
 */
async function trustedCa(ca: string | undefined): Promise<{
  caCerts?: string[];
  source: CaSource;
}> {
  if (ca !== undefined) {
    const file = await readPemFile("--ca", ca);
    checkCaFile(file);
    return { caCerts: [file.text], source: { kind: "flag", path: ca } };
  }
  return await trustedDevCa(devCert);
}

async function certCommand(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags("cert", args, CERT_FLAGS);
  if (values.help) return help("cert");
  if (positionals.length > 0) usage("cert", `unexpected argument "${positionals[0]}"`);
  let files;
  try {
    const dir = values.dir ?? stateFolder(devCert, "pass --dir DIR");
    files = await devCert.writeDevCertificates(dir, {
      ...(values.host && { hosts: values.host }),
      ...(values.client !== undefined && { clientName: values.client }),
    });
  } catch (error) {
    if (error instanceof CliError || isUnsafeState(error)) throw error;
    const code = error instanceof TypeError || error instanceof RangeError
      ? ExitCode.Usage
      : ExitCode.Failure;
    throw permissionError("make development certificates", error) ??
      new CliError(code, `Cannot make development certificates: ${reason(error)}`);
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

if (import.meta.main) Deno.exit(await main(Deno.args));
