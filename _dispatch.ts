// JSON-RPC 2.0 messages to handler calls: the method table built by introspection, request
// validation, batches, error mapping and rpc.discover. Knows nothing of sockets.

import {
  DecodeError,
  decodeFrame,
  DEFAULT_MAX_DEPTH,
  type Encoded,
  errorMessage,
  errorText,
  hasOwn,
  type Id,
  isId,
  NotPlainError,
  resultMessage,
  resultText,
} from "./_codec.ts";
import { CancelledError, ErrorCode, RpcError, TimeoutError } from "./errors.ts";
import type { CallContext } from "./context.ts";
import { runInContext } from "./_context.ts";
import { type Authenticator, MAX_AUTH_FAILURES } from "./_auth.ts";
import type { MethodInfo } from "./server.ts";

// deno-lint-ignore no-explicit-any
type AnyFunction = (...args: any[]) => unknown;

/** One exposed method: what the server tells of it, and what it calls. */
export interface Method extends MethodInfo {
  readonly fn: AnyFunction;
  readonly thisArg: unknown;
  /** An `async` function or generator: its context must survive `await`. */
  readonly async: boolean;
}

const AsyncFunction = (async () => {}).constructor;
const AsyncGeneratorFunction = (async function* () {}).constructor;

/** The prefix JSON-RPC 2.0 reserves for the protocol's own methods. */
const RESERVED_PREFIX = "rpc.";

/** Namespaces nest at most this deep; deeper is almost surely a cycle or a mistake. */
const MAX_NAMESPACE_DEPTH = 16;

/**
 * What the response to a message is: its text or extended frame, nothing (notifications), or a
 * promise of either.
 */
export type Reply = Encoded | undefined | Promise<Encoded | undefined>;

/** The extensions this server speaks, announced in answer to `rpc.hello`. */
export const EXTENSIONS = ["rich"] as const;

/**
 * Builds the method table of `handlers` once: a plain object or module namespace exposes its own
 * functions and nests its plain-object properties as dotted namespaces; a class instance also
 * exposes the methods of its prototype chain, up to and not including `Object.prototype`. Names
 * starting with `_`, `constructor` and accessors are never exposed, and nothing is ever looked up
 * on a user object with a name from the wire afterwards.
 */
export function buildMethodTable(handlers: object): Map<string, Method> {
  if (handlers === null || (typeof handlers !== "object" && typeof handlers !== "function")) {
    throw new TypeError(
      "Cannot serve handlers: they must be an object, a class instance or a module",
    );
  }
  const table = new Map<string, Method>();
  addNamespace(table, handlers, "", new Set(), 0);
  return table;
}

function addNamespace(
  table: Map<string, Method>,
  target: object,
  prefix: string,
  seen: Set<object>,
  depth: number,
): void {
  // `seen` holds the namespaces on the path here: a cycle stops, an alias is exposed again.
  if (seen.has(target)) return;
  if (depth > MAX_NAMESPACE_DEPTH) {
    throw new TypeError(`Cannot serve handlers: namespace "${prefix}" nests too deeply`);
  }
  seen.add(target);
  for (const [key, value] of exposedMembers(target)) {
    const name = prefix + key;
    if (typeof value === "function") {
      if (isClass(value)) continue;
      if (name.startsWith(RESERVED_PREFIX)) {
        throw new TypeError(`Cannot expose "${name}": the "rpc." prefix is reserved`);
      }
      const fn = value as AnyFunction;
      const async = fn instanceof AsyncFunction || fn instanceof AsyncGeneratorFunction;
      table.set(name, { name, fn, thisArg: target, async, ...parameterNames(fn) });
    } else if (isPlainObject(value)) {
      addNamespace(table, value, `${name}.`, seen, depth + 1);
    }
  }
  seen.delete(target);
}

/** The own enumerable data properties, then, for class instances, the prototype chain's methods. */
function* exposedMembers(target: object): Generator<[string, unknown]> {
  const names = new Set<string>();
  for (const key of Object.keys(target)) {
    const descriptor = Object.getOwnPropertyDescriptor(target, key);
    if (descriptor === undefined || !("value" in descriptor) || !isExposedName(key)) continue;
    names.add(key);
    yield [key, descriptor.value];
  }
  if (isPlainObject(target) || isModule(target)) return;
  for (
    let proto = Object.getPrototypeOf(target);
    proto !== null && proto !== Object.prototype;
    proto = Object.getPrototypeOf(proto)
  ) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (names.has(key) || !isExposedName(key)) continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, key);
      if (descriptor === undefined || typeof descriptor.value !== "function") continue;
      names.add(key);
      yield [key, descriptor.value];
    }
  }
}

function isExposedName(key: string): boolean {
  return key !== "" && !key.startsWith("_") && key !== "constructor" &&
    !hasOwn(Object.prototype, key);
}

function isPlainObject(value: unknown): value is object {
  if (value === null || typeof value !== "object") return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

function isModule(value: object): boolean {
  return Object.prototype.toString.call(value) === "[object Module]";
}

function isClass(fn: unknown): boolean {
  return /^class\b/.test(Function.prototype.toString.call(fn));
}

/**
 * Reads a function's parameter names from its source text. Destructured parameters get the name
 * `argN`; native and bound functions, whose source hides them, get `argN` for each of `length`.
 */
export function parameterNames(fn: AnyFunction): { params: string[]; rest: boolean } {
  const source = Function.prototype.toString.call(fn);
  const list = parameterList(source);
  if (list === undefined) {
    return { params: Array.from({ length: fn.length }, (_, i) => `arg${i}`), rest: false };
  }
  const params: string[] = [];
  let rest = false;
  for (const [i, part] of splitTopLevel(list).entries()) {
    let text = part.trim();
    if (text === "") continue;
    if (text.startsWith("...")) {
      rest = true;
      text = text.slice(3).trim();
    }
    params.push(/^[A-Za-z_$][\w$]*/.exec(text)?.[0] ?? `arg${i}`);
  }
  return { params, rest };
}

/** The text between a function's parameter parentheses, or the lone parameter of `x => ...`. */
function parameterList(source: string): string | undefined {
  if (/\[native code\]\s*\}$/.test(source)) return undefined;
  const arrow = /^(?:async\s+)?([A-Za-z_$][\w$]*)\s*=>/.exec(source);
  if (arrow) return arrow[1];
  const open = source.indexOf("(");
  if (open < 0) return undefined;
  const close = matchingParen(source, open);
  return close < 0 ? undefined : source.slice(open + 1, close);
}

function matchingParen(source: string, open: number): number {
  let depth = 0;
  for (let i = open; i < source.length; i++) {
    const c = source[i];
    if (c === '"' || c === "'" || c === "`") i = skipString(source, i);
    else if (c === "/" && source[i + 1] === "*") {
      i = source.indexOf("*/", i + 2) + 1 || source.length;
    } else if (c === "/" && source[i + 1] === "/") i = source.indexOf("\n", i) >>> 0;
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") {
      if (--depth === 0) return i;
    }
  }
  return -1;
}

function skipString(source: string, start: number): number {
  const quote = source[start];
  for (let i = start + 1; i < source.length; i++) {
    if (source[i] === "\\") i++;
    else if (source[i] === quote) return i;
  }
  return source.length;
}

function splitTopLevel(list: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let from = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === '"' || c === "'" || c === "`") i = skipString(list, i);
    else if (c === "/" && list[i + 1] === "*") i = list.indexOf("*/", i + 2) + 1 || list.length;
    else if (c === "/" && list[i + 1] === "/") i = list.indexOf("\n", i) >>> 0;
    else if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    else if (c === "," && depth === 0) {
      parts.push(list.slice(from, i));
      from = i + 1;
    }
  }
  parts.push(list.slice(from));
  return parts.map((part) => part.replace(/\/\*[\s\S]*?\*\/|\/\/[^\n]*/g, ""));
}

/** The connection a message came on, as the dispatcher sees it. */
export interface Session {
  /** False while the server shuts down: requests are answered with ShuttingDown. */
  readonly accepting: boolean;
  /** The peer's address. */
  readonly peer: { readonly hostname: string; readonly port: number };
  /** Who the peer proved to be (its certificate, or what its token stands for), if anyone. */
  identity: unknown;
  /** Whether the peer may call methods: true from the start unless the server wants a token. */
  authenticated: boolean;
  /** Failed `rpc.auth` attempts so far. */
  authFailures: number;
  /** Closes the connection once the reply to the current message has been written. */
  closeSoon(why: string): void;
  /** Whether the peer announced rich values (`rpc.hello`), so that it may get extended frames. */
  rich: boolean;
  /** The calls in flight on this connection, by the JSON text of their id, for `rpc.cancel`. */
  readonly calls: Map<string, Call>;
  /** Sends a notification to the peer. */
  notify(method: string, params: unknown[]): void;
}

/** A session for messages that come on no connection (tests, other transports). */
export function detachedSession(accepting = true): Session {
  return {
    accepting,
    peer: { hostname: "", port: 0 },
    identity: undefined,
    authenticated: true,
    authFailures: 0,
    closeSoon: () => {},
    rich: false,
    calls: new Map(),
    notify: () => {},
  };
}

/** The longest deadline honoured, in ms: what setTimeout can wait (about 24.8 days). */
const MAX_TIMEOUT = 2 ** 31 - 1;

/** One call being served: its context, and the abort that cancellation, deadline or close fire. */
export class Call implements CallContext {
  readonly peer: { readonly hostname: string; readonly port: number };
  readonly identity: unknown;
  readonly id: string | number | null | undefined;
  readonly method: string;
  readonly deadline: number | undefined;
  #session: Session;
  #controller: AbortController | undefined;
  #reason: unknown;
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(session: Session, id: Id | undefined, method: string, timeout: number | undefined) {
    this.#session = session;
    this.peer = session.peer;
    this.identity = session.identity;
    this.id = id;
    this.method = method;
    this.deadline = timeout === undefined ? undefined : Date.now() + timeout;
  }

  /** Created on first use: most handlers never look, and an AbortController is not free. */
  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#reason !== undefined) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Whether the call was aborted, so that its result is to be dropped. */
  get aborted(): boolean {
    return this.#reason !== undefined;
  }

  notify(method: string, ...params: unknown[]): void {
    this.#session.notify(method, params);
  }

  /** Aborts the handler's signal with `reason`; the first reason wins. */
  abort(reason: unknown): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
    clearTimeout(this.#timer);
  }

  /** Aborts the call with a TimeoutError once its deadline passes. */
  startDeadline(timeout: number): void {
    this.#timer = setTimeout(() => {
      this.abort(
        new TimeoutError(`Cannot finish "${this.method}": its deadline of ${timeout} ms passed`),
      );
    }, timeout);
  }

  /** The handler settled: no timer may outlive it. */
  settle(): void {
    clearTimeout(this.#timer);
  }
}

/** Options for {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  /** The deepest nesting of arrays and objects a message may have; 128 when not given. */
  maxDepth?: number;
  /** The most requests a batch may hold; 1 024 when not given. */
  maxBatch?: number;
  /** Put the stack of a handler's error in the error response's `data`. */
  exposeStack?: boolean;
  /** The `info` member of the rpc.discover document. */
  info?: { title: string; version: string };
  /** When set, a peer must present a token (`rpc.auth`) that this accepts before calling. */
  authenticate?: Authenticator;
}

/** Turns decoded JSON-RPC messages into handler calls and their results into response text. */
export class Dispatcher {
  readonly methods: ReadonlyMap<string, Method>;
  #exposeStack: boolean;
  #maxDepth: number;
  #maxBatch: number;
  #discover: unknown;
  #authenticate: Authenticator | undefined;

  /** Whether peers must present a token before calling. */
  get requiresToken(): boolean {
    return this.#authenticate !== undefined;
  }

  constructor(handlers: object, options: DispatcherOptions = {}) {
    this.methods = buildMethodTable(handlers);
    this.#exposeStack = options.exposeStack ?? false;
    this.#maxDepth = options.maxDepth ?? DEFAULT_MAX_DEPTH;
    this.#maxBatch = options.maxBatch ?? 1024;
    this.#authenticate = options.authenticate;
    this.#discover = {
      openrpc: "1.3.2",
      info: options.info ?? { title: "tlsrpc", version: "0.0.0" },
      methods: [...this.methods.values()].map((method) => ({
        name: method.name,
        params: method.params.map((name) => ({ name, schema: {} })),
        result: { name: "result", schema: {} },
      })),
    };
  }

  /** Answers one frame that came on `session`. */
  handleFrame(frame: Uint8Array, session: Session = detachedSession()): Reply {
    let message: unknown;
    try {
      message = decodeFrame(frame, this.#maxDepth);
    } catch (error) {
      if (error instanceof DecodeError) return errorText(error.idText, error.code, error.message);
      throw error;
    }
    if (!Array.isArray(message)) return this.#handleOne(message, session, session.rich);
    if (message.length === 0) {
      return errorText("null", ErrorCode.InvalidRequest, "Invalid Request: empty batch");
    }
    if (message.length > this.#maxBatch) {
      return errorText(
        "null",
        ErrorCode.InvalidRequest,
        `Invalid Request: a batch may hold at most ${this.#maxBatch} requests`,
      );
    }
    // A batch's answer is one JSON array: its values must be plain JSON.
    const replies = message.map((item) => this.#handleOne(item, session, false));
    if (replies.every((reply) => !(reply instanceof Promise))) {
      return joinBatch(replies as (string | undefined)[]);
    }
    return Promise.all(replies).then((texts) => joinBatch(texts as (string | undefined)[]));
  }

  #handleOne(message: unknown, session: Session, rich: boolean): Reply {
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      return invalid("null", "the message must be an object");
    }
    const request = message as Record<string, unknown>;
    const hasId = hasOwn(request, "id");
    if (hasId && !isId(request.id)) {
      return invalid("null", "id must be a string, a number or null");
    }
    const idText = hasId ? JSON.stringify(request.id) : "null";
    if (request.jsonrpc !== "2.0") return invalid(idText, 'jsonrpc must be "2.0"');
    const method = request.method;
    if (typeof method !== "string") return invalid(idText, "method must be a string");
    const params = request.params;
    if (
      hasOwn(request, "params") &&
      (params === null || typeof params !== "object")
    ) {
      return invalid(idText, "params must be an array or an object");
    }
    const timeout = request.timeout;
    if (
      timeout !== undefined &&
      (typeof timeout !== "number" || !(timeout > 0) || !Number.isFinite(timeout))
    ) {
      return invalid(idText, "timeout must be a positive number of milliseconds");
    }
    const call = new Call(
      session,
      hasId ? request.id as Id : undefined,
      method,
      timeout === undefined ? undefined : Math.min(Math.ceil(timeout), MAX_TIMEOUT),
    );
    const reply = this.#call(call, params as unknown[] | object | undefined, idText, session, rich);
    if (hasId) return reply;
    // Notifications are never answered, not even with an error.
    if (reply instanceof Promise) reply.catch(() => {});
    return undefined;
  }

  #call(
    call: Call,
    params: unknown[] | object | undefined,
    idText: string,
    session: Session,
    rich: boolean,
  ): Reply {
    const method = call.method;
    if (!session.accepting) {
      return errorText(idText, ErrorCode.ShuttingDown, "Server is shutting down");
    }
    // Keepalive, hello and authentication come before everything else, and touch no handler.
    if (method === "rpc.ping") return resultText(idText, "pong");
    if (method === "rpc.hello") return this.#hello(params, idText, session);
    if (method === "rpc.auth") return this.#auth(params, idText, session);
    if (!session.authenticated) {
      return errorText(
        idText,
        ErrorCode.Unauthorized,
        "Unauthorized: present a token with rpc.auth before calling",
      );
    }
    if (method === "rpc.discover") return resultText(idText, this.#discover);
    if (method === "rpc.cancel") return this.#cancel(params, idText, session);
    const entry = this.methods.get(method);
    if (entry === undefined) {
      return errorText(
        idText,
        ErrorCode.MethodNotFound,
        `Method not found: ${JSON.stringify(method)}`,
      );
    }
    const args = params === undefined ? [] : Array.isArray(params) ? params : [params];
    // By-name params are one object whatever the function declares; only by-position ones count.
    if (Array.isArray(params) && !entry.rest && args.length > entry.params.length) {
      return errorText(
        idText,
        ErrorCode.InvalidParams,
        `Invalid params: "${method}" takes at most ${entry.params.length} params, got ${args.length}`,
      );
    }
    let result: unknown;
    try {
      result = runInContext(call, entry.fn, entry.thisArg, args, entry.async);
    } catch (error) {
      return this.#fail(idText, error, rich);
    }
    if (!(result instanceof Promise || isThenable(result))) {
      return this.#succeed(idText, method, result, rich);
    }
    // Only a call still running can be cancelled or pass its deadline.
    const key = call.id === undefined ? undefined : idText;
    if (key !== undefined) session.calls.set(key, call);
    if (call.deadline !== undefined) call.startDeadline(call.deadline - Date.now());
    return Promise.resolve(result).then(
      (value) =>
        this.#finish(call, key, session) ? this.#succeed(idText, method, value, rich) : undefined,
      (error) => this.#finish(call, key, session) ? this.#fail(idText, error, rich) : undefined,
    );
  }

  /** Ends a call that ran asynchronously; whether its result is still to be sent. */
  #finish(call: Call, key: string | undefined, session: Session): boolean {
    call.settle();
    if (key !== undefined && session.calls.get(key) === call) session.calls.delete(key);
    // A cancelled or late call's caller has stopped waiting: the result is dropped.
    return !call.aborted;
  }

  /**
   * `rpc.hello`: the peer announces the extensions it speaks (by-name params
   * `{ "extensions": ["rich"] }`); the answer lists the server's.
   */
  #hello(params: unknown[] | object | undefined, idText: string, session: Session): Reply {
    const offered = Array.isArray(params)
      ? (params[0] as { extensions?: unknown } | undefined)?.extensions
      : (params as { extensions?: unknown } | undefined)?.extensions;
    if (offered !== undefined && !Array.isArray(offered)) {
      return errorText(
        idText,
        ErrorCode.InvalidParams,
        "Invalid params: rpc.hello takes { extensions: string[] }",
      );
    }
    session.rich = offered?.includes("rich") ?? false;
    return resultText(idText, { extensions: EXTENSIONS });
  }

  /**
   * `rpc.auth`: params `[token]` or `{ "token": token }`. The token is never echoed or logged;
   * after {@linkcode MAX_AUTH_FAILURES} refusals the connection is closed.
   */
  #auth(params: unknown[] | object | undefined, idText: string, session: Session): Reply {
    const authenticate = this.#authenticate;
    if (authenticate === undefined) return resultText(idText, true); // nothing to prove
    const token = Array.isArray(params)
      ? params[0]
      : (params as { token?: unknown } | undefined)?.token;
    if (typeof token !== "string") {
      return errorText(
        idText,
        ErrorCode.InvalidParams,
        "Invalid params: rpc.auth takes a token string",
      );
    }
    const settle = (identity: unknown): Encoded => {
      if (identity === undefined || identity === null || identity === false) {
        if (++session.authFailures >= MAX_AUTH_FAILURES) {
          session.closeSoon(`${session.authFailures} failed authentications`);
        }
        return errorText(idText, ErrorCode.AuthenticationFailed, "Authentication failed");
      }
      session.identity = identity;
      session.authenticated = true;
      return resultText(idText, true);
    };
    const refused = (error: unknown): Encoded => {
      // The authenticator's own failure: refuse, and say nothing of the token.
      void error;
      return settle(undefined);
    };
    let verdict: unknown;
    try {
      verdict = authenticate(token, session.peer);
    } catch (error) {
      return refused(error);
    }
    return verdict instanceof Promise ? verdict.then(settle, refused) : settle(verdict);
  }

  /** `rpc.cancel`: params `[id]` or `{ "id": id }` name a call in flight on the same connection. */
  #cancel(params: unknown[] | object | undefined, idText: string, session: Session): Reply {
    const id = Array.isArray(params) ? params[0] : (params as { id?: unknown } | undefined)?.id;
    if (!isId(id)) {
      return errorText(
        idText,
        ErrorCode.InvalidParams,
        "Invalid params: rpc.cancel takes the id of a call",
      );
    }
    const call = session.calls.get(JSON.stringify(id));
    call?.abort(new CancelledError(`Cannot finish "${call.method}": the caller cancelled it`));
    return resultText(idText, call !== undefined);
  }

  #succeed(idText: string, method: string, result: unknown, rich: boolean): Encoded {
    try {
      return resultMessage(idText, result, rich, this.#maxDepth);
    } catch (error) {
      const why = error instanceof NotPlainError
        ? `${error.message}, and the client has not enabled rich values (see rpc.hello)`
        : error instanceof Error
        ? error.message
        : String(error);
      return errorText(
        idText,
        ErrorCode.InternalError,
        `Cannot send result of "${method}": ${why}`,
      );
    }
  }

  #fail(idText: string, error: unknown, rich: boolean): Encoded {
    const { code, message, data } = describeError(error, this.#exposeStack);
    try {
      return errorMessage(idText, code, message, data, rich, this.#maxDepth);
    } catch {
      return errorText(idText, code, message, {
        name: error instanceof Error ? error.name : "Error",
      });
    }
  }
}

function invalid(idText: string, reason: string): string {
  return errorText(idText, ErrorCode.InvalidRequest, `Invalid Request: ${reason}`);
}

function joinBatch(replies: (string | undefined)[]): string | undefined {
  const texts = replies.filter((reply) => reply !== undefined);
  return texts.length === 0 ? undefined : `[${texts.join(",")}]`;
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function";
}

/** The lowest and highest codes JSON-RPC 2.0 reserves for itself. */
const RESERVED_CODES = { min: -32768, max: -32000 } as const;

/**
 * Maps a thrown value to the error member of a response: an {@linkcode RpcError} keeps its code
 * and data; another error keeps an integer `code` of its own outside the reserved range, else
 * gets -32000, and its data is `{ name }`.
 */
export function describeError(
  error: unknown,
  exposeStack: boolean,
): { code: number; message: string; data: unknown } {
  if (!(error instanceof Error)) {
    return { code: ErrorCode.ServerError, message: String(error), data: { name: "Error" } };
  }
  const stack = exposeStack && error.stack !== undefined ? { stack: error.stack } : {};
  if (error instanceof RpcError && Number.isInteger(error.code)) {
    const data = error.data === undefined ? { name: error.name, ...stack } : error.data;
    return { code: error.code, message: error.message, data };
  }
  const own = (error as { code?: unknown }).code;
  const code = typeof own === "number" && Number.isInteger(own) &&
      (own < RESERVED_CODES.min || own > RESERVED_CODES.max)
    ? own
    : ErrorCode.ServerError;
  return { code, message: error.message, data: { name: error.name, ...stack } };
}
