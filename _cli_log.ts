// The log of `serve` on stderr, in one of two formats: `text`, the server's lines as they are
// (escaped: they may quote what a client sent), and `json`, one JSON object a line for log
// collectors, with the time, a level, the line, and the fields the server gave (event, peer, and
// the event's own: reason, limit) or the worker pool adds (worker). The server rate-limits its
// lines before they get here.

import { CliError, ExitCode } from "./_cli_error.ts";
import { escapeJson, escapeText } from "./_format.ts";

/** The formats of `--log-format`. */
export const LOG_FORMATS = ["text", "json"] as const;

/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

/** How much a line matters (see {@linkcode logLevel}). */
export type LogLevel = "info" | "warn" | "error";

/**
 * What a line is about: the server's `event` and `peer`; any other own field of the object is the
 * event's own, and goes into a JSON line as it is.
 */
export interface LogEventFields {
  /** The kind of event: `"handshake_failed"`, `"closed"`, ... */
  readonly event?: string | undefined;
  /** The peer's address, `host:port`. */
  readonly peer?: string | undefined;
  /** Why a handshake or PROXY header failed: `"timeout"`, `"protocol"`, ..., `"other"`. */
  readonly reason?: string | undefined;
}

/** One line to log. */
export interface LogEntry {
  /** The line itself, as the server wrote it. */
  readonly message: string;
  /** How much it matters. */
  readonly level: LogLevel;
  /** The server's fields, or the CLI's own `event`. @default {} */
  readonly fields?: LogEventFields | undefined;
  /** The worker (from 1) whose server wrote it, with `--workers`. */
  readonly worker?: number | undefined;
  /** The name of the `Error` the server's log hook got (`ConnectionError`), if any. */
  readonly errorName?: string | undefined;
}

/** Writes entries to stderr in one format. */
export type Logger = (entry: LogEntry) => void;

/**
 * Events that are the ordinary course of a connection, logged as `info` when no error came
 * with them. Any other line of the server's log hook is a `warn`: the hook is called for what
 * cost a connection (a refusal, a failed handshake, a suppressed burst).
 */
const INFO_EVENTS: ReadonlySet<string> = new Set(["closed", "closing", "listening"]);

/**
 * Events that tell what a client did, not what went wrong in the server: a `warn` even though an
 * error comes with them (a plaintext client, a port scanner, a bad balancer, a frame of length 0
 * or over the limit), unless their `reason` is `"other"`, which may be the server's own fault (a
 * key that does not match its certificate fails every handshake).
 */
const CLIENT_EVENTS: ReadonlySet<string> = new Set([
  "handshake_failed",
  "proxy_header_failed",
  "protocol_error",
]);

/** Keys of a JSON line that the fields of an event cannot take over. */
const RESERVED_KEYS: ReadonlySet<string> = new Set([
  "time",
  "level",
  "message",
  "worker",
  "error",
]);

/**
 * The `--log-format` value, checked.
 *
 * @throws {CliError} Exit 2 for another value.
 */
export function logFormat(value: string | undefined): LogFormat {
  if (value === undefined) return "text";
  if ((LOG_FORMATS as readonly string[]).includes(value)) return value as LogFormat;
  throw new CliError(
    ExitCode.Usage,
    `Cannot use --log-format "${value}": it must be ${LOG_FORMATS.join(" or ")}`,
  );
}

/**
 * The level of a line of the server's log hook: `warn` for what a client did (a failed
 * handshake), else `error` when it got an `Error`, `info` for an ordinary event (`closed`) that
 * came without one, and `warn` for the rest.
 */
export function logLevel(error: unknown, fields: LogEventFields): LogLevel {
  const event = fields.event;
  if (event !== undefined && CLIENT_EVENTS.has(event) && fields.reason !== "other") return "warn";
  if (error instanceof Error) return "error";
  return error === undefined && event !== undefined && INFO_EVENTS.has(event) ? "info" : "warn";
}

/**
 * A logger in `format` that writes with `write` (stderr by default). Text lines are escaped, as
 * they may quote what a client sent, and name their worker as `[worker N] `; JSON lines are one
 * object each, with no raw control or bidi character.
 */
export function makeLogger(
  format: LogFormat,
  write: (line: string) => void = (line) => console.error(line),
  now: () => Date = () => new Date(),
): Logger {
  if (format === "text") {
    return (entry) => {
      const worker = entry.worker === undefined ? "" : `[worker ${entry.worker}] `;
      write(worker + escapeText(entry.message));
    };
  }
  return (entry) => {
    const record: Record<string, unknown> = {
      time: now().toISOString(),
      level: entry.level,
      message: entry.message,
    };
    const fields = entry.fields ?? {};
    if (fields.event !== undefined) record.event = fields.event;
    if (fields.peer !== undefined) record.peer = fields.peer;
    if (entry.worker !== undefined) record.worker = entry.worker;
    if (entry.errorName !== undefined) record.error = entry.errorName;
    for (const [key, value] of Object.entries(fields)) {
      if (!RESERVED_KEYS.has(key) && !Object.hasOwn(record, key) && value !== undefined) {
        record[key] = value;
      }
    }
    write(escapeJson(safeStringify(record)));
  };
}

/** `record` as JSON; a field that cannot be (a BigInt, a cycle) is dropped, never the line. */
function safeStringify(record: Record<string, unknown>): string {
  try {
    return JSON.stringify(record);
  } catch {
    const plain: Record<string, unknown> = {};
    for (const [key, value] of Object.entries(record)) {
      try {
        JSON.stringify(value);
        plain[key] = value;
      } catch {
        plain[key] = String(value);
      }
    }
    return JSON.stringify(plain);
  }
}

/** The name of `error` when it is an `Error`, for {@linkcode LogEntry.errorName}. */
export function errorName(error: unknown): string | undefined {
  return error instanceof Error ? error.name : undefined;
}

/** A failure of the CLI as a log entry: its message and hint, at `error`. */
export function failureEntry(failure: CliError, event: string): LogEntry {
  const hint = failure.hint === undefined ? "" : ` (${failure.hint})`;
  const fields = {
    event,
    ...(failure.detail !== undefined && { detail: failure.detail }),
    exitCode: failure.exitCode,
  };
  return { level: "error", message: `error: ${failure.message}${hint}`, fields };
}
