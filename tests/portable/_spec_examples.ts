/**
 * The examples of section 7 of the JSON-RPC 2.0 specification, with the handlers they call, for
 * the dispatch tests of every runtime (portable/dispatch.test.ts) and Deno's (dispatch_test.ts).
 * Plain data and functions: no runtime's own API.
 *
 * @module
 */

/** The messages the specification gives its error codes. */
export const SPEC_MESSAGES: ReadonlyMap<number, string> = new Map([
  [-32700, "Parse error"],
  [-32600, "Invalid Request"],
  [-32601, "Method not found"],
  [-32602, "Invalid params"],
]);

/** One example: a request, the response the specification shows, and what the handlers logged. */
export interface SpecExample {
  name: string;
  request: string;
  /** The response, its error messages the specification's; undefined when there is none. */
  response: unknown;
  /** What the notifications logged, in order. @default [] */
  log?: unknown[];
}

/** The handlers of the examples; the notifications push what they got onto `log`. */
export function specHandlers(log: unknown[]): object {
  return {
    subtract(minuend: number | { minuend: number; subtrahend: number }, subtrahend?: number) {
      if (typeof minuend === "object") return minuend.minuend - minuend.subtrahend;
      return minuend - (subtrahend ?? 0);
    },
    sum: (...values: number[]) => values.reduce((total, x) => total + x, 0),
    update: (...values: number[]) => void log.push(["update", values]),
    "notify_hello": (n: number) => void log.push(["notify_hello", n]),
    "notify_sum": (...values: number[]) => void log.push(["notify_sum", values]),
    "get_data": () => ["hello", 5],
  };
}

function E(code: number, id: unknown) {
  return { jsonrpc: "2.0", error: { code, message: SPEC_MESSAGES.get(code) }, id };
}

/** Every example of the specification, in its order. */
export const SPEC_EXAMPLES: readonly SpecExample[] = [
  {
    name: "positional parameters",
    request: '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
    response: { jsonrpc: "2.0", result: 19, id: 1 },
  },
  {
    name: "positional parameters reversed",
    request: '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
    response: { jsonrpc: "2.0", result: -19, id: 2 },
  },
  {
    name: "named parameters",
    request:
      '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, "id": 3}',
    response: { jsonrpc: "2.0", result: 19, id: 3 },
  },
  {
    name: "named parameters in another order",
    request:
      '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, "id": 4}',
    response: { jsonrpc: "2.0", result: 19, id: 4 },
  },
  {
    name: "notification",
    request: '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}',
    response: undefined,
    log: [["update", [1, 2, 3, 4, 5]]],
  },
  {
    name: "notification of a method that does not exist",
    request: '{"jsonrpc": "2.0", "method": "foobar"}',
    response: undefined,
  },
  {
    name: "non-existent method",
    request: '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
    response: E(-32601, "1"),
  },
  {
    name: "invalid JSON",
    request: '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
    response: E(-32700, null),
  },
  {
    name: "invalid Request object",
    request: '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
    response: E(-32600, null),
  },
  {
    name: "batch, invalid JSON",
    request: `[
      {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
      {"jsonrpc": "2.0", "method"
    ]`,
    response: E(-32700, null),
  },
  { name: "empty array", request: "[]", response: E(-32600, null) },
  { name: "invalid batch, not empty", request: "[1]", response: [E(-32600, null)] },
  {
    name: "invalid batch",
    request: "[1,2,3]",
    response: [E(-32600, null), E(-32600, null), E(-32600, null)],
  },
  {
    name: "batch",
    request: `[
      {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
      {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
      {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
      {"foo": "boo"},
      {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
      {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]`,
    response: [
      { jsonrpc: "2.0", result: 7, id: "1" },
      { jsonrpc: "2.0", result: 19, id: "2" },
      E(-32600, null),
      E(-32601, "5"),
      { jsonrpc: "2.0", result: ["hello", 5], id: "9" },
    ],
    log: [["notify_hello", 7]],
  },
  {
    name: "batch of only notifications",
    request: `[
      {"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]},
      {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}
    ]`,
    response: undefined,
    log: [["notify_sum", [1, 2, 4]], ["notify_hello", 7]],
  },
];
