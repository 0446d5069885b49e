// `serve`: its flags, and the command. Everything is checked before anything listens (flags,
// token, certificate and key, client CA, module), then one server or a pool of workers sharing
// the port serves the module, with the metrics endpoint beside it when asked, logs in the format
// asked, and a graceful stop on SIGINT and SIGTERM. serve() and dev_cert.ts come in as a
// parameter, so that this private module imports no public one.

import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import {
  type FlagTable,
  HELP_FLAG,
  type HostPort,
  hostPort,
  integer,
  type ParsedValues,
  parseFlags,
  switchFlag,
  usage,
  valueFlag,
} from "./_cli_flags.ts";
import { LIMIT_FLAGS, limitOptions } from "./_cli_limits.ts";
import { readToken, TOKEN_VARIABLE } from "./_cli_token.ts";
import { loadHandlers, moduleUrl } from "./_cli_module.ts";
import { checkCaFile, checkCertificateAndKey, readPemFile } from "./_cli_tls.ts";
import { type DevCertApi, serverDevCertificate } from "./_cli_dev.ts";
import {
  errorName,
  failureEntry,
  type LogEventFields,
  logFormat,
  type Logger,
  logLevel,
  makeLogger,
} from "./_cli_log.ts";
import { startWorkers, type WorkerServeOptions } from "./_workers.ts";
import { serveMetrics } from "./_metrics_http.ts";
import { DEFAULT_CLIENT_OPTIONS } from "./_client_options.ts";
import { formatAddr, reason } from "./_util.ts";

/** The address `serve` listens on: local connections only, as `serve()` does by default. */
export const DEFAULT_SERVE_HOSTNAME = "127.0.0.1";

/** The port `serve` listens on unless told otherwise: the one clients and `serve()` default to. */
const DEFAULT_SERVE_PORT = DEFAULT_CLIENT_OPTIONS.port;

/** The most workers `--workers` takes: far more threads than cores only costs memory. */
const MAX_WORKERS = 1024;

/** The flags of `serve` besides the limits, in the order the help lists them. */
export const SERVE_FLAGS = {
  hostname: valueFlag("HOST", "address to listen on", DEFAULT_SERVE_HOSTNAME),
  port: valueFlag("PORT", "port to listen on, 0 for any free one", DEFAULT_SERVE_PORT),
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
  workers: valueFlag(
    "N",
    "serve from N worker threads sharing the port, 0 for one per core; limits such as " +
      "--max-connections and the module's state are per worker (Linux only)",
  ),
  metrics: valueFlag(
    "HOST:PORT",
    "serve Prometheus metrics at http://HOST:PORT/metrics over plain HTTP, summed over the " +
      "workers; PORT 0 for any free one",
  ),
  "proxy-protocol": switchFlag(
    "read a PROXY protocol header (v1 or v2) at the start of every connection: only behind a " +
      "balancer that sends one, as anyone who can connect can claim any address",
  ),
  "log-format": valueFlag("FORMAT", "text, or json: one JSON object a line on stderr", "text"),
  ...HELP_FLAG,
} as const satisfies FlagTable;

/** Every flag `serve` parses: its own and the limits. */
const ALL_FLAGS = { ...SERVE_FLAGS, ...LIMIT_FLAGS };

/** What `serve` passes to serve(): the part of its options the CLI sets. */
export interface CliServeOptions extends WorkerServeOptions {
  /** Shuts the server down when aborted. */
  signal?: AbortSignal;
  /** Called once it listens. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Called with each line of the server's log. */
  onError?: (error: unknown, line: string, fields: LogEventFields) => void;
}

/** What `serve` uses of a running server. */
export interface CliServer {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;
  readonly metrics: { render(): string } | undefined;
  shutdown(): Promise<void>;
}

/** What `serve` needs from the public modules and from the CLI around it. */
export interface ServeCommandApi {
  /** server.ts's serve(). */
  serve(handlers: object, options: CliServeOptions): Promise<CliServer>;
  /** dev_cert.ts. */
  devCert: DevCertApi;
  /** Prints the help of `serve` and returns the exit code. */
  help(): number;
  /** The failure to report for `error`, as `main` reports it; `undefined` for a bug. */
  failure(error: unknown): CliError | undefined;
}

/** One server or a pool of workers, serving. */
interface Serving {
  /** The port it listens on. */
  readonly port: number;
  /** The metrics in the Prometheus text format. */
  metrics(): string | Promise<string>;
  /** Resolves once it has been stopped (by the signal) and has drained. */
  readonly finished: Promise<void>;
  /** Stops it now. */
  stop(): Promise<void>;
}

/**
 * Runs `serve ARGS`. Before it listens, a failure throws (as every command's does); with
 * `--log-format json` it is logged as a JSON line instead, and its exit code returned.
 */
export async function serveCommand(args: string[], api: ServeCommandApi): Promise<number> {
  const { values, positionals } = parseFlags("serve", args, ALL_FLAGS);
  if (values.help) return api.help();
  const format = logFormat(values["log-format"]);
  const log = makeLogger(format);
  if (format === "text") return await serveWith(values, positionals, api, log);
  try {
    return await serveWith(values, positionals, api, log);
  } catch (error) {
    const failure = api.failure(error);
    if (failure === undefined) throw error;
    log(failureEntry(failure, "serve_failed"));
    return failure.exitCode;
  }
}

type ServeValues = ParsedValues<typeof ALL_FLAGS>;

async function serveWith(
  values: ServeValues,
  positionals: string[],
  api: ServeCommandApi,
  log: Logger,
): Promise<number> {
  const [specifier, ...extra] = positionals;
  if (specifier === undefined) usage("serve", "a MODULE is required");
  if (extra.length > 0) usage("serve", `unexpected argument "${extra[0]}"`);
  if ((values.cert === undefined) !== (values.key === undefined)) {
    usage("serve", "give both --cert and --key, or neither for development certificates");
  }
  const hostname = values.hostname ?? DEFAULT_SERVE_HOSTNAME;
  const port = integer("--port", values.port, DEFAULT_SERVE_PORT, 65535);
  const workers = workerCount(values.workers);
  const metrics = values.metrics === undefined
    ? undefined
    : hostPort("--metrics", values.metrics, true);
  const options: WorkerServeOptions = {
    hostname,
    port,
    cert: "",
    key: "",
    exposeStack: values["expose-stack"] ?? false,
    ...(values["proxy-protocol"] && { proxyProtocol: true }),
    ...limitOptions(values),
  };
  const token = await readToken("serve", values);
  if (token !== undefined) options.token = token.token;
  const notice = (message: string, event: string) =>
    log({ level: "info", message, fields: { event } });
  // Everything is checked before the server listens: a client never meets a half-working one.
  const { cert, key } = values.cert !== undefined && values.key !== undefined
    ? {
      cert: await readPemFile("--cert", values.cert),
      key: await readPemFile("--key", values.key),
    }
    : await serverDevCertificate(api.devCert, (line) => notice(line, "dev_certificates"));
  for (const warning of await checkCertificateAndKey(cert, key, "server")) {
    log({ level: "warn", message: warning, fields: { event: "certificate_warning" } });
  }
  options.cert = cert.text;
  options.key = key.text;
  if (values["client-ca"] !== undefined) {
    const clientCa = await readPemFile("--client-ca", values["client-ca"]);
    checkCaFile(clientCa);
    options.clientCa = clientCa.text;
  }
  // Loaded here, once, even with workers: a module that fails fails as it does for one server.
  const handlers = await loadHandlers(specifier);
  requireNet(`serve "${specifier}"`, hostname, port);
  if (metrics !== undefined) requireNet("serve metrics", metrics.hostname, metrics.port);
  // Listen for signals before "listening on" is printed: whoever reads that line may stop us next.
  const stopping = new AbortController();
  const stop = () => stopping.abort();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const signal of signals) Deno.addSignalListener(signal, stop);
  try {
    let serving: Serving;
    const serveOptions = { ...options, metrics: metrics !== undefined };
    const context = { signal: stopping.signal, log };
    try {
      serving = workers === undefined
        ? await single(api, handlers, serveOptions, context)
        : await pool(workers, moduleUrl(specifier), serveOptions, context);
    } catch (error) {
      throw permissionError(`serve "${specifier}"`, error) ??
        new CliError(ExitCode.Failure, `Cannot serve "${specifier}": ${reason(error)}`, {
          hint: /in use/i.test(reason(error))
            ? "stop what uses the port, or pick another with --port, 0 for any free one"
            : undefined,
        });
    }
    const endpoint = metrics === undefined ? undefined : await metricsEndpoint(serving, metrics);
    if (endpoint !== undefined) {
      const url = `http://${formatAddr(endpoint.addr)}/metrics`;
      notice(`metrics on ${url}`, "metrics_listening");
    }
    // Scripts read this line for the port: plain text on stdout, whatever the log format.
    console.log(`listening on ${formatAddr({ hostname, port: serving.port })}`);
    if (token !== undefined) {
      notice(
        `token authentication is on: clients must present the token from ${token.source}`,
        "token_authentication",
      );
    }
    await serving.finished;
    await endpoint?.shutdown();
  } finally {
    for (const signal of signals) Deno.removeSignalListener(signal, stop);
  }
  return ExitCode.Ok;
}

/** The worker count of `--workers`: 0 is one per core. Workers share the port on Linux only. */
function workerCount(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const count = integer("--workers", value, 0, MAX_WORKERS);
  if (Deno.build.os !== "linux") {
    usage(
      "serve",
      "--workers shares the port through SO_REUSEPORT, which spreads connections over the " +
        "workers on Linux only",
    );
  }
  return count === 0 ? Math.max(1, navigator.hardwareConcurrency) : count;
}

interface Context {
  readonly signal: AbortSignal;
  readonly log: Logger;
}

/** One server in this thread. */
async function single(
  api: ServeCommandApi,
  handlers: object,
  options: WorkerServeOptions,
  { signal, log }: Context,
): Promise<Serving> {
  const server = await api.serve(handlers, {
    ...options,
    signal,
    onListen: () => {},
    // Log lines may quote what a client sent: the logger escapes them.
    onError: (error, message, fields) =>
      log({ message, level: logLevel(error, fields), fields, errorName: errorName(error) }),
  });
  return {
    port: server.addr.port,
    metrics: () => server.metrics?.render() ?? "",
    finished: server.finished,
    stop: () => server.shutdown(),
  };
}

/** `count` workers sharing the port; they drain once `signal` aborts. */
async function pool(
  count: number,
  module: string,
  options: WorkerServeOptions,
  { signal, log }: Context,
): Promise<Serving> {
  const workers = await startWorkers({ count, module, options, log: (_line, entry) => log(entry) });
  const aborted = new Promise<void>((resolve) => {
    if (signal.aborted) resolve();
    else signal.addEventListener("abort", () => resolve(), { once: true });
  });
  return {
    port: workers.port,
    metrics: () => workers.metrics(),
    finished: aborted.then(() => workers.shutdown()),
    stop: () => workers.shutdown(),
  };
}

/** Serves `/metrics` for `serving`; stops it when the endpoint cannot listen. */
async function metricsEndpoint(serving: Serving, address: HostPort) {
  try {
    return serveMetrics(() => serving.metrics(), {
      hostname: address.hostname,
      port: address.port,
    });
  } catch (error) {
    await serving.stop();
    const target = formatAddr(address);
    throw permissionError(`serve metrics on "${target}"`, error) ??
      new CliError(ExitCode.Failure, `Cannot serve metrics on "${target}": ${reason(error)}`, {
        hint: /in use/i.test(reason(error))
          ? "stop what uses the port, or pick another with --metrics, port 0 for any free one"
          : undefined,
      });
  }
}

/**
 * Makes sure `host` may be listened on, asking in a terminal: the listener reports a missing
 * permission asynchronously, too late for serve() to reject with it.
 */
function requireNet(action: string, hostname: string, port: number): void {
  const host = formatAddr({ hostname, port });
  let { state } = Deno.permissions.querySync({ name: "net", host });
  if (state === "prompt") state = Deno.permissions.requestSync({ name: "net", host }).state;
  if (state !== "granted") {
    // Any free port (0) cannot be named ahead: the host alone then.
    const flag = `--allow-net=${port === 0 ? host.replace(/:0$/, "") : host}`;
    throw new CliError(ExitCode.Usage, `Cannot ${action}: no net permission for "${host}"`, {
      hint: `run with ${flag} or --allow-net`,
    });
  }
}
