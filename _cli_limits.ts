// The `serve` flags that set a server limit: each one's limit, least working value and help, the
// flags as the parser and the help take them (defaults from DEFAULT_LIMITS, so that the help
// cannot drift from the server), and their values checked into serve()'s options.

import { integer, usage, valueFlag } from "./_cli_flags.ts";
import { DEFAULT_LIMITS, type Limits } from "./_limits.ts";

/**
 * Each limit's least working value and help, by limit. Typed to cover every limit, so that a new
 * one does not compile until it has its flag here.
 */
const LIMITS = {
  handshakeTimeout: [1, "time a client has for the TLS handshake"],
  authTimeout: [0, "time a client has to present the token, when one is required; 0 disables"],
  maxAuthFailures: [
    1,
    "failed tokens one address may present in a burst before its attempts are refused unchecked",
  ],
  idleTimeout: [0, "close a connection with no frame and no call for this long; 0 disables"],
  frameTimeout: [0, "a frame must arrive whole within this of its first byte; 0 disables"],
  writeTimeout: [0, "close a client that reads none of its replies for this long; 0 disables"],
  shutdownTimeout: [0, "time calls in flight get on shutdown"],
  maxConnections: [1, "open connections; more are closed at once"],
  maxInFlight: [1, "calls in flight per connection before reading pauses"],
  maxBatch: [1, "requests in one batch; a larger batch is refused"],
  maxQueuedBytes: [1, "unread reply bytes before a client is closed"],
  maxFrameBytes: [1, "largest frame accepted or sent"],
  maxDepth: [1, "deepest nesting of arrays and objects in a message"],
  maxJsonValues: [1, "JSON values (numbers, strings, arrays, objects...) in a message"],
  maxDecodedBytes: [1, "bytes the binary sections of one rich message may decode into"],
  maxBigIntDigits: [1, "decimal digits of a BigInt in a rich message"],
} as const satisfies Record<keyof Limits, readonly [min: 0 | 1, description: string]>;

type LimitFlag = `${string}-${string}`;

/** `maxFrameBytes` as a flag name: `max-frame-bytes`. */
function flagName(limit: string): LimitFlag {
  return limit.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`) as LimitFlag;
}

const ENTRIES = Object.entries(LIMITS) as [keyof Limits, readonly [0 | 1, string]][];

/** The limit flags as parseArgs and the help take them, each default from DEFAULT_LIMITS. */
export const LIMIT_FLAGS: Record<LimitFlag, ReturnType<typeof valueFlag>> = Object.fromEntries(
  ENTRIES.map(([limit, [, description]]) => {
    const arg = limit.endsWith("Timeout") ? "MS" : "N";
    return [flagName(limit), valueFlag(arg, description, DEFAULT_LIMITS[limit])];
  }),
);

/**
 * The limits the flags set, checked: whole numbers, at least their least working value.
 *
 * @throws {CliError} Exit 2 naming the flag.
 */
export function limitOptions(values: Record<string, unknown>): Partial<Limits> {
  const options: Partial<Limits> = {};
  for (const [limit, [min]] of ENTRIES) {
    const flag = flagName(limit);
    const value = values[flag];
    if (typeof value !== "string") continue;
    const number = integer(`--${flag}`, value, DEFAULT_LIMITS[limit], 0xffff_ffff);
    if (number < min) usage("serve", `--${flag} must be at least ${min}`);
    options[limit] = number;
  }
  return options;
}
