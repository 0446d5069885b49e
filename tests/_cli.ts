/**
 * The runners of the CLI the tests share: `deno run cli.ts` as a subprocess (a one-shot command,
 * or `serve` until stopped), the environment it runs in, and the CLI as a newcomer meets it: no
 * token, an empty state folder, a handful of handlers.
 *
 * @module
 */

import assert from "node:assert/strict";
import { writeDevCertificates } from "../dev_cert.ts";
import { RpcError } from "../errors.ts";
import { root, within } from "./_util.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** What a subprocess left: its exit code and its whole output. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of {@linkcode runDeno} and {@linkcode runCli}. */
export interface RunOptions {
  /** Variables added to this process's environment. @default {} */
  env?: Record<string, string>;
  /** A guard: the process is killed after this many ms, so that a hang fails the test. @default 60_000 */
  timeout?: number;
  /** Text for its standard input, which is closed after it. @default none: stdin is null */
  stdin?: string;
}

/** Options of {@linkcode runCli}. */
export interface RunCliOptions extends RunOptions {
  /** Deno's permission flags for the CLI (and `--no-prompt`, say). @default ["-A"] */
  permissions?: readonly string[];
}

/**
 * The environment a subprocess runs in: this process's with `env` over it. For the CLI,
 * TLSRPC_TOKEN is left out unless `env` sets it, so that the caller's own token cannot change what
 * it does.
 */
export function childEnv(cli: boolean, env: Record<string, string> = {}): Record<string, string> {
  const inherited = Deno.env.toObject();
  if (cli) delete inherited.TLSRPC_TOKEN;
  return { ...inherited, ...env };
}

/** `run PERMISSIONS cli.ts ARGS`: what Deno is given to run the CLI from the repository's root. */
export function cliArgs(
  args: readonly string[],
  permissions: readonly string[] = ["-A"],
): string[] {
  return ["run", ...permissions, "cli.ts", ...args];
}

/** Options of {@linkcode spawnChild}. */
export interface SpawnOptions {
  /** The program. @default this process's Deno */
  command?: string;
  /** Its whole environment. @default `childEnv(true)`: this process's, without TLSRPC_TOKEN */
  env?: Record<string, string>;
  /** Whether its stdin is a pipe. @default false: null */
  stdin?: boolean;
}

/** Spawns `deno ARGS` (or `options.command ARGS`) in the repository's root, stdout and stderr piped. */
export function spawnChild(args: readonly string[], options: SpawnOptions = {}): Deno.ChildProcess {
  return new Deno.Command(options.command ?? Deno.execPath(), {
    args: [...args],
    cwd: root.pathname,
    clearEnv: true,
    env: options.env ?? childEnv(true),
    stdin: options.stdin ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** Runs `deno ARGS` in the repository's root, stdin null, and resolves with its output. */
export function runDeno(args: string[], options: RunOptions = {}): Promise<Output> {
  return run(args, options, false);
}

/**
 * Runs `deno run PERMISSIONS cli.ts ARGS` in the repository's root, `-A` unless
 * `options.permissions` says otherwise (see {@linkcode runDeno}).
 */
export function runCli(args: readonly string[], options: RunCliOptions = {}): Promise<Output> {
  return run(cliArgs(args, options.permissions), options, true);
}

async function run(args: string[], options: RunOptions, cli: boolean): Promise<Output> {
  const child = spawnChild(args, {
    env: childEnv(cli, options.env),
    stdin: options.stdin !== undefined,
  });
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already exited.
    }
  }, options.timeout ?? 60_000);
  try {
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(encoder.encode(options.stdin));
      await writer.close();
    }
    const output = await child.output();
    return {
      code: output.code,
      stdout: decoder.decode(output.stdout),
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Options of {@linkcode startServe}. */
export interface StartServeOptions {
  /** Variables added to this process's environment (TLSRPC_TOKEN left out unless given). @default {} */
  env?: Record<string, string>;
  /** Deno's permission flags for the CLI (and `--no-prompt`, say). @default ["-A"] */
  permissions?: readonly string[];
  /** How long to wait for the "listening on" line. @default 20_000 */
  timeout?: number;
  /** Runs the server under `ulimit -n fileLimit` (through bash). @default no limit of its own */
  fileLimit?: number;
}

/** A `cli.ts serve` subprocess; disposing it stops it. */
export interface ServeProcess extends AsyncDisposable {
  /** The port from its "listening on 127.0.0.1:PORT" line. */
  readonly port: number;
  /**
   * Sends `signal` (SIGTERM unless given) and resolves with the exit status and the whole output.
   * Only the first call sends a signal; later ones resolve as it does.
   */
  stop(signal?: Deno.Signal): Promise<Output>;
}

/**
 * Starts `deno run PERMISSIONS cli.ts serve ARGS` in the repository's root, stdin null, and
 * resolves once it prints its first line, which must name the port.
 */
export async function startServe(
  args: readonly string[],
  options: StartServeOptions = {},
): Promise<ServeProcess> {
  const serveArgs = cliArgs(["serve", ...args], options.permissions);
  const [command, commandArgs] = options.fileLimit === undefined
    ? [Deno.execPath(), serveArgs]
    : ["bash", [
      "-c",
      `ulimit -n ${options.fileLimit}; exec "$0" "$@"`,
      Deno.execPath(),
      ...serveArgs,
    ]];
  const child = spawnChild(commandArgs, { command, env: childEnv(true, options.env) });
  const stderr = new Response(child.stderr).text();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let stdout = "";
  let stopping: Promise<Output> | undefined;
  function stop(signal: Deno.Signal = "SIGTERM"): Promise<Output> {
    stopping ??= (async () => {
      try {
        child.kill(signal);
      } catch {
        // Already exited.
      }
      for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
        stdout += chunk.value;
      }
      const status = await child.status;
      return { code: status.code, stdout, stderr: await stderr };
    })();
    return stopping;
  }
  try {
    await within(
      (async () => {
        while (!stdout.includes("\n")) {
          const { value, done } = await reader.read();
          if (done) break;
          stdout += value;
        }
      })(),
      "cli serve's first line",
      options.timeout ?? 20_000,
    );
  } catch (error) {
    const output = await stop();
    throw new Error(`cli serve did not start: ${output.stderr}`, { cause: error });
  }
  const port = Number(/^listening on 127\.0\.0\.1:(\d+)\n/.exec(stdout)?.[1]);
  if (!(port > 0)) {
    const output = await stop();
    assert.fail(`cli serve printed no port: ${JSON.stringify(output)}`);
  }
  return {
    port,
    stop,
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}

/** Asserts a CLI failure: the exit code, nothing on stdout, `lines` lines on stderr, no stack. */
export function assertFailure(out: Output, code: number, pattern: RegExp, lines = 1): void {
  assert.equal(out.code, code, JSON.stringify(out));
  assert.equal(out.stdout, "", JSON.stringify(out));
  assert.match(out.stderr, pattern);
  assert.equal(out.stderr.trimEnd().split("\n").length, lines, out.stderr);
  assert.doesNotMatch(out.stderr, /Uncaught|ext:|\.ts:\d+:\d+\)/, "a stack trace");
}

// --- the CLI as a newcomer meets it --------------------------------------------------------------

/** The variables the state folder is found by, as the CLI's permission sets name them. */
export const STATE_ENV = "TLSRPC_TOKEN,TLSRPC_HOME,XDG_STATE_HOME,HOME";

/** The smallest permission sets the README shows (serve also needs what its module needs). */
export const PERMISSIONS = {
  /** serve --cert --key, and call and list --ca. */
  files: ["--allow-net", "--allow-read", "--allow-env=TLSRPC_TOKEN"],
  /** serve, call and list with development certificates that exist. */
  dev: ["--allow-net", "--allow-read", `--allow-env=${STATE_ENV}`, "--allow-sys=uid"],
} as const;

/**
 * The methods the newcomer's CLI tests call: defaults and rest parameters, rich values, a slow
 * answer and an error with data.
 */
export const newcomerHandlers = {
  greet: (name: string, greeting = "Hello") => `${greeting}, ${name}`,
  sum: (...xs: number[]) => xs.reduce((a, b) => a + b, 0),
  echo: (value: unknown) => value,
  sleep: (ms: number) => new Promise((resolve) => setTimeout(resolve, ms, ms)),
  rich: () => ({
    big: 12n,
    bytes: new Uint8Array([1, 2, 3]),
    when: new Date(Date.UTC(2024, 0, 1)),
    byKey: new Map<unknown, unknown>([[1, "one"], ["1", "string one"], [2n, "two"], ["k", {
      x: [true],
    }]]),
    tags: new Set(["a"]),
    nothing: undefined,
    nan: NaN,
  }),
  fail: () => {
    throw new RpcError(4000, "Cannot fail: as asked", { data: { n: 1n, why: "asked" } });
  },
};

/** Options of {@linkcode newcomerCli} and {@linkcode newcomerServe}. */
export interface NewcomerOptions {
  /** Deno's permission flags; `--no-prompt` is always added. @default ["-A"] */
  permissions?: readonly string[];
  /** The state folder (TLSRPC_HOME). @default an empty folder, the same for every run */
  home?: string;
  /** Variables besides this process's, without TLSRPC_TOKEN and TLSRPC_HOME. @default {} */
  env?: Record<string, string>;
  /** Text for standard input. @default none */
  stdin?: string;
}

let emptyHome: string | undefined;

/**
 * One empty state folder for the runs that name none, so that none reads the user's own: made at
 * the first run, removed when the tests end.
 */
function emptyStateFolder(): string {
  if (emptyHome === undefined) {
    const home = emptyHome = Deno.makeTempDirSync({ prefix: "tlsrpc-home-" });
    globalThis.addEventListener("unload", () => Deno.removeSync(home, { recursive: true }));
  }
  return emptyHome;
}

/**
 * What {@linkcode runCli} and {@linkcode startServe} need to run the CLI as a newcomer meets it:
 * never prompting for a permission, without colour, and with a state folder of the test's.
 */
export function newcomerRunOptions(options: NewcomerOptions = {}): RunCliOptions {
  return {
    permissions: ["--no-prompt", ...(options.permissions ?? ["-A"])],
    env: { NO_COLOR: "1", TLSRPC_HOME: options.home ?? emptyStateFolder(), ...options.env },
    ...(options.stdin !== undefined && { stdin: options.stdin }),
  };
}

/** Runs `deno run --no-prompt PERMISSIONS cli.ts ARGS` as {@linkcode newcomerRunOptions} says. */
export function newcomerCli(
  args: readonly string[],
  options: NewcomerOptions = {},
): Promise<Output> {
  return runCli(args, newcomerRunOptions(options));
}

/** Starts `cli.ts serve ARGS` as {@linkcode newcomerRunOptions} says, by {@linkcode startServe}. */
export function newcomerServe(
  args: readonly string[],
  options: NewcomerOptions = {},
): Promise<ServeProcess> {
  const { permissions, env } = newcomerRunOptions(options);
  // The guard of runCli: a first run makes development certificates before it listens.
  return startServe(args, {
    ...(permissions && { permissions }),
    ...(env && { env }),
    timeout: 60_000,
  });
}

/**
 * Makes `dir` a state folder holding development certificates (and a client certificate "worker"),
 * and resolves with their folder.
 */
export async function devHome(dir: string): Promise<string> {
  await Deno.chmod(dir, 0o700);
  await writeDevCertificates(`${dir}/dev-certs`, { clientName: "worker" });
  return `${dir}/dev-certs`;
}
