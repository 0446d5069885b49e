// The CLI's command line: flag tables, from which both the parser's options and the help are made
// (so that the help cannot drift from the defaults the code uses), the parser, and the usage
// errors with their exit codes.

import { parseArgs, type ParseArgsConfig } from "node:util";
import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import { reason } from "./_util.ts";

/** One flag: its parseArgs configuration, and its help. */
export interface FlagSpec {
  /** How parseArgs reads it. */
  readonly type: "string" | "boolean";
  /** A one-letter alias, e.g. `h` for `-h`. */
  readonly short?: string;
  /** Whether the flag may be repeated. */
  readonly multiple?: boolean;
  /** The name of the flag's value in the help, e.g. `MS`; none for a boolean flag. */
  readonly arg?: string;
  /** What the flag does, for the help. */
  readonly description: string;
  /** The value used when the flag is not given, as the help shows it: `(default: 7443)`. */
  readonly fallback?: string | number;
}

/** The flags of a command, in the order the help lists them. */
export type FlagTable = Readonly<Record<string, FlagSpec>>;

/** A flag that takes a value, named `arg` in the help. */
export function valueFlag(arg: string, description: string, fallback?: string | number): {
  readonly type: "string";
  readonly arg: string;
  readonly description: string;
  readonly fallback?: string | number;
} {
  return fallback === undefined
    ? { type: "string", arg, description }
    : { type: "string", arg, description, fallback };
}

/** A flag that is on or off. */
export function switchFlag(
  description: string,
): { readonly type: "boolean"; readonly description: string } {
  return { type: "boolean", description };
}

/** `-h, --help`, which every command has. */
export const HELP_FLAG = {
  help: { type: "boolean", short: "h", description: "show this help" },
} as const satisfies FlagTable;

/** The width the help is wrapped to: readable in an 80-column terminal after the indent. */
const HELP_WIDTH = 96;

/**
 * The help lines of `flags`: `  -h, --flag ARG` in a column as wide as the longest, and the
 * description, then the default, wrapped beside it.
 */
export function formatFlags(flags: FlagTable): string {
  const heads = Object.entries(flags).map(([name, spec]) =>
    `  ${spec.short === undefined ? "" : `-${spec.short}, `}--${name}` +
    (spec.arg === undefined ? "" : ` ${spec.arg}`)
  );
  const column = Math.max(...heads.map((head) => head.length)) + 2;
  return Object.values(flags).map((spec, i) => {
    const words = spec.description.split(" ");
    // The default is one word, so that it stays on one line and reads (and parses) as one piece.
    if (spec.fallback !== undefined) words.push(`(default: ${spec.fallback})`);
    const lines: string[] = [];
    let line = heads[i]!.padEnd(column);
    let empty = true;
    for (const word of words) {
      if (!empty && line.length + 1 + word.length > HELP_WIDTH) {
        lines.push(line);
        line = " ".repeat(column);
        empty = true;
      }
      line += empty ? word : ` ${word}`;
      empty = false;
    }
    lines.push(line);
    return lines.join("\n");
  }).join("\n");
}

/** The values parseArgs gives for the flags `T`. */
export type ParsedValues<T extends NonNullable<ParseArgsConfig["options"]>> = ReturnType<
  typeof parseArgs<{ args: string[]; options: T; allowPositionals: true; strict: true }>
>["values"];

/**
 * Parses the flags of `command`; arguments that look like negative numbers are positionals, not
 * short options. A bad flag is a usage error that points at the command's help.
 */
export function parseFlags<T extends NonNullable<ParseArgsConfig["options"]>>(
  command: string,
  args: string[],
  options: T,
): { values: ParsedValues<T>; positionals: string[] } {
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
    throw new CliError(ExitCode.Usage, `Cannot parse arguments: ${message}`, {
      hint: `run "help ${command}" to see its options`,
    });
  }
  const values = parsed.values as Record<string, unknown>;
  for (const [key, value] of Object.entries(values)) {
    if (typeof value === "string") values[key] = unmask(value);
  }
  return { values: parsed.values, positionals: parsed.positionals.map(unmask) };
}

/** The whole number a flag gives, from 0 to `max`, or `fallback` when it is not given. */
export function integer(
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

/** A `HOST:PORT` flag's value: `127.0.0.1:9464`, `localhost:7443`, `[::1]:7443`. */
export interface HostPort {
  /** The host name or address, without brackets. */
  readonly hostname: string;
  /** The port. */
  readonly port: number;
}

/**
 * The host and port of a `HOST:PORT` flag value; an IPv6 address goes in brackets. The port may
 * be 0 (any free one) only when `anyPort`.
 *
 * @throws {CliError} Exit 2 naming the flag and the value.
 */
export function hostPort(flag: string, value: string, anyPort = false): HostPort {
  const match = /^(?:\[([0-9A-Fa-f:.]+(?:%[\w.-]+)?)\]|([^\s:[\]]+)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (match === null || port > 65535 || (port === 0 && !anyPort)) {
    const bare = value.split(":").length > 2 && !value.startsWith("[");
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ${flag} "${value}": it must be HOST:PORT, the port from ${anyPort ? 0 : 1} ` +
        "to 65535",
      { hint: bare ? "put an IPv6 address in brackets, e.g. [::1]:7443" : "e.g. 127.0.0.1:7443" },
    );
  }
  return { hostname: match[1] ?? match[2]!, port };
}

/**
 * The text of the file a flag names. A file that cannot be read is a usage error naming the flag
 * and the file, and, when Deno's permissions are the reason, the flag to add.
 */
export async function readFile(flag: string, path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    throw permissionError(`read ${flag} "${path}"`, error) ??
      new CliError(
        ExitCode.Usage,
        `Cannot read ${flag} "${path}": ${
          error instanceof Deno.errors.NotFound ? "file not found" : reason(error)
        }`,
      );
  }
}

/** Throws the usage error of `command`. */
export function usage(command: string, message: string): never {
  throw new CliError(ExitCode.Usage, `Cannot run "${command}": ${message} (see --help)`);
}

/**
 * What starts like JSON: an array, an object, a string, or a number. An ARG that starts so but does
 * not parse is a typo to report, not a string to send.
 */
const JSON_START = /^\s*(?:[[{"]|-?\d)/;

/**
 * An ARG of `call`: JSON when it is valid JSON, else the string itself, unless it starts like
 * JSON (`[`, `{`, `"`, a digit or `-` and a digit): then it is a usage error naming it.
 *
 * @param arg The argument.
 * @param position Its position among the ARGs, from 1, for the error.
 */
export function parseArg(arg: string, position: number): unknown {
  try {
    return JSON.parse(arg);
  } catch {
    if (!JSON_START.test(arg)) return arg;
    throw new CliError(
      ExitCode.Usage,
      `Cannot use ARG ${position} "${arg}": it starts like JSON but is not valid JSON`,
      { hint: `fix the JSON, or quote a string as JSON: '${JSON.stringify(arg)}'` },
    );
  }
}

/**
 * The `--params` of `call`, a JSON object of by-name params: the value itself, `@FILE` for the
 * contents of FILE, or `-` for standard input.
 */
export async function readNamedParams(value: string): Promise<Record<string, unknown>> {
  let text = value;
  let source = "--params";
  if (value === "-") {
    source = "--params - (standard input)";
    text = await new Response(Deno.stdin.readable).text();
  } else if (value.startsWith("@")) {
    source = `--params "${value}"`;
    text = await readFile("--params", value.slice(1));
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new CliError(ExitCode.Usage, `Cannot use ${source}: ${reason(error)}`, {
      hint: 'give a JSON object, e.g. --params \'{"name":"ada"}\', @FILE or - for stdin',
    });
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new CliError(ExitCode.Usage, `Cannot use ${source}: it must be a JSON object`, {
      hint: "for by-position params, give them as ARGs after METHOD",
    });
  }
  return parsed as Record<string, unknown>;
}
