// JSON-RPC 2.0 messages to handler calls: request validation, batches, the built-in methods,
// authentication, the call itself and the mapping of its outcome to a response (what a thrown value
// becomes is _wire_error.ts). Knows nothing of sockets: a Session stands for the connection.

import { DecodeError, idTextOf, isId, NotPlainError, Outgoing } from "./_codec.ts";
import type { Codec, Id } from "./_codec.ts";
import { ErrorCode } from "./errors.ts";
import { type CallContext, runInContext } from "./_context.ts";
import { VERSION } from "./_version.ts";
import { type Authenticator, AuthThrottle } from "./_auth.ts";
import { buildMethodTable, type Method } from "./_introspect.ts";
import { Call, detachedSession, LazyCall, MAX_TIMEOUT, type Session } from "./_call.ts";
import { type BatchState, BUILTINS, type BuiltinServer, type Reply } from "./_builtins.ts";
import { traceServerCall, tracing } from "./_trace.ts";
import type { LogFields } from "./_log.ts";
import { formatAddr } from "./_util.ts";
import { describeError, HIDDEN_MESSAGE, safeMessage, safeName } from "./_wire_error.ts";

export type { Reply } from "./_builtins.ts";

/** Options for {@linkcode Dispatcher}. */
export interface DispatcherOptions {
  /** The most requests a batch may hold; 1 024 when not given. */
  maxBatch?: number;
  /** Put the stack of a handler's error in the error response's `data`. */
  exposeStack?: boolean;
  /** The `info` member of the rpc.discover document. */
  info?: { title: string; version: string };
  /** When set, a peer must present a token (`rpc.auth`) that this accepts before calling. */
  authenticate?: Authenticator;
  /** Failed authentications by address; a new one when not given. */
  throttle?: AuthThrottle;
  /** A rate-limited log line: refused authentications, runtime errors hidden from clients. */
  log?: (error: unknown, line: string, fields: LogFields) => void;
  /** Wrap every call to a handler, outermost first. */
  interceptors?: readonly Interceptor[];
  /** Told of every request's outcome (notifications too), for metrics. */
  observer?: CallObserver;
}

/** What an {@linkcode Interceptor} sees of a call. */
export interface InterceptedCall {
  /** The method's name as called. */
  readonly method: string;
  /** The params as the handler gets them. */
  readonly params: readonly unknown[];
  /** The call's context: peer, identity, certificate, id, signal, deadline. */
  readonly context: CallContext;
}

/**
 * Wraps every call to a handler: runs code before and after `next()` (which runs the next
 * interceptor, and finally the handler), and may refuse the call by throwing (an `RpcError` keeps
 * its code) instead of calling `next()`. It runs inside the call's context.
 */
export type Interceptor = (call: InterceptedCall, next: () => Promise<unknown>) => unknown;

/** Told of each request's outcome: the method, the response's error code (0 for a result). */
export interface CallObserver {
  /** One request answered (or a notification done), `seconds` after it was dispatched. */
  callFinished(method: string, code: number, seconds: number): void;
}

/** Turns decoded JSON-RPC messages into handler calls and their results into responses. */
export class Dispatcher {
  /** The exposed methods, by name. */
  readonly methods: ReadonlyMap<string, Method>;
  #exposeStack: boolean;
  #maxBatch: number;
  #server: BuiltinServer;
  #interceptors: readonly Interceptor[];
  #observer: CallObserver | undefined;
  /** The call of the plain handler running now; taken while one runs (a handler may dispatch). */
  #lazy: LazyCall | undefined = new LazyCall();

  constructor(handlers: object, options: DispatcherOptions = {}) {
    this.methods = buildMethodTable(handlers);
    this.#exposeStack = options.exposeStack ?? false;
    this.#maxBatch = options.maxBatch ?? 1024;
    this.#interceptors = options.interceptors ?? [];
    this.#observer = options.observer;
    const log = options.log ?? (() => {});
    this.#server = {
      discover: {
        openrpc: "1.3.2",
        info: options.info ?? { title: "tlsrpc", version: VERSION },
        methods: [...this.methods.values()].map((method) => ({
          name: method.name,
          // OpenRPC's content descriptors; a rest parameter takes any number of params and is
          // marked with the extension field "x-rest".
          params: method.params.map((name, i) => ({
            name,
            schema: {},
            required: i < method.required,
            ...(method.rest && i === method.params.length - 1 && { "x-rest": true }),
          })),
          result: { name: "result", schema: {} },
        })),
      },
      authenticate: options.authenticate,
      throttle: options.throttle ?? new AuthThrottle(),
      log,
    };
  }

  /** Whether peers must present a token before calling. */
  get requiresToken(): boolean {
    return this.#server.authenticate !== undefined;
  }

  /** Answers one frame that came on `session`. */
  handleFrame(frame: Uint8Array, session: Session = detachedSession()): Reply {
    const codec = session.codec;
    let message: unknown;
    try {
      message = codec.decode(frame);
    } catch (error) {
      if (error instanceof DecodeError) {
        if (error.limit !== undefined) session.refused(error.limit);
        return codec.plain.error(error.idText, error.code, error.message);
      }
      throw error;
    }
    if (!Array.isArray(message)) return this.#handleOne(message, session, codec, undefined);
    if (message.length === 0) {
      return invalid(codec, "null", "empty batch");
    }
    if (message.length > this.#maxBatch) {
      session.refused("max_batch");
      return invalid(codec, "null", `a batch may hold at most ${this.#maxBatch} requests`);
    }
    // A batch's answer is one JSON array: its values must be plain JSON.
    const plain = codec.plain;
    const batch: BatchState = { auths: 0 };
    const replies: Reply[] = [];
    for (const item of message) {
      if (session.closing) break; // a connection that is closing dispatches nothing more
      replies.push(this.#handleOne(item, session, plain, batch));
    }
    if (replies.every((reply) => !(reply instanceof Promise))) {
      return joinBatch(replies as (Outgoing | undefined)[]);
    }
    return Promise.all(replies).then(joinBatch);
  }

  #handleOne(
    message: unknown,
    session: Session,
    codec: Codec,
    batch: BatchState | undefined,
  ): Reply {
    if (message === null || typeof message !== "object" || Array.isArray(message)) {
      return invalid(codec, "null", "the message must be an object");
    }
    const request = message as Record<string, unknown>;
    const hasId = Object.hasOwn(request, "id");
    if (hasId && !isId(request.id)) {
      return invalid(codec, "null", "id must be a string, a number or null");
    }
    const idText = hasId ? idTextOf(request) : "null";
    if (request.jsonrpc !== "2.0") return invalid(codec, idText, 'jsonrpc must be "2.0"');
    const method = request.method;
    if (typeof method !== "string") return invalid(codec, idText, "method must be a string");
    const params = request.params;
    if (Object.hasOwn(request, "params") && (params === null || typeof params !== "object")) {
      return invalid(codec, idText, "params must be an array or an object");
    }
    const timeout = request.timeout;
    if (
      timeout !== undefined &&
      (typeof timeout !== "number" || !(timeout > 0) || !Number.isFinite(timeout))
    ) {
      return invalid(codec, idText, "timeout must be a positive number of milliseconds");
    }
    const start = this.#observer === undefined ? 0 : session.receivedAt ?? performance.now();
    const reply = this.#route(
      request,
      method,
      params as unknown[] | object | undefined,
      idText,
      session,
      codec,
      batch,
    );
    if (this.#observer !== undefined) this.#observe(method, reply, start, session);
    if (hasId) return reply;
    // Notifications are never answered, not even with an error.
    if (reply instanceof Promise) reply.catch(() => {});
    return undefined;
  }

  #route(
    request: Record<string, unknown>,
    method: string,
    params: unknown[] | object | undefined,
    idText: string,
    session: Session,
    codec: Codec,
    batch: BatchState | undefined,
  ): Reply {
    if (!session.accepting) {
      return codec.error(idText, ErrorCode.ShuttingDown, "Server is shutting down");
    }
    const builtin = BUILTINS.get(method);
    if (builtin?.beforeAuth) {
      return builtin.handle({ params, idText, session, codec, batch }, this.#server);
    }
    if (!session.authenticated) {
      return codec.error(
        idText,
        ErrorCode.Unauthorized,
        "Unauthorized: present a token with rpc.auth before calling",
      );
    }
    if (builtin) return builtin.handle({ params, idText, session, codec, batch }, this.#server);
    const entry = this.methods.get(method);
    if (entry === undefined) {
      const near = nearestNames(method, this.methods.keys());
      const hint = near.length === 0 ? "" : `; did you mean ${near.map(quote).join(" or ")}?`;
      return codec.error(
        idText,
        ErrorCode.MethodNotFound,
        `Method not found: ${quote(method)}${hint}`,
      );
    }
    const args = Array.isArray(params) ? params : argumentsByName(entry, params);
    if (typeof args === "string") {
      return codec.error(idText, ErrorCode.InvalidParams, `Invalid params: "${method}" ${args}`);
    }
    if (!entry.rest && args.length > entry.params.length) {
      return codec.error(
        idText,
        ErrorCode.InvalidParams,
        `Invalid params: "${method}" takes at most ${entry.params.length} params, got ${args.length}`,
      );
    }
    if (args.length < entry.required) {
      const missing = entry.params.slice(args.length, entry.required).map((name) => `"${name}"`);
      return codec.error(
        idText,
        ErrorCode.InvalidParams,
        `Invalid params: "${method}" needs ${entry.required} params, got ${args.length} (missing ${
          missing.join(", ")
        })`,
      );
    }
    const timeout = request.timeout as number | undefined;
    // The clock is read only for a call that has a deadline.
    const deadline = timeout === undefined
      ? undefined
      : Date.now() + Math.min(Math.ceil(timeout), MAX_TIMEOUT);
    const id = Object.hasOwn(request, "id") ? request.id as Id : undefined;
    if (entry.async || tracing || this.#interceptors.length > 0) {
      const call = new Call(session, id, method, deadline);
      if (tracing) {
        return traceServerCall(
          call,
          request.traceparent,
          () => this.#invoke(entry, call, args, idText, session, codec),
        );
      }
      return this.#invoke(entry, call, args, idText, session, codec);
    }
    return this.#invokePlain(entry, id, method, deadline, args, idText, session, codec);
  }

  /**
   * Calls a plain handler without interceptors: its {@linkcode Call} is made only if it reads its
   * context or returns a promise.
   */
  #invokePlain(
    entry: Method,
    id: Id | undefined,
    method: string,
    deadline: number | undefined,
    args: unknown[],
    idText: string,
    session: Session,
    codec: Codec,
  ): Reply {
    const lazy = this.#lazy ?? new LazyCall();
    this.#lazy = undefined;
    lazy.session = session;
    lazy.id = id;
    lazy.method = method;
    lazy.deadline = deadline;
    lazy.call = undefined;
    let result: unknown;
    let call: Call | undefined;
    try {
      result = runInContext(lazy, entry.fn, entry.thisArg, args, false);
      // Inside the try: a hostile result (a Proxy, a throwing `then` getter) throws right here.
      if (!(result instanceof Promise || isThenable(result))) {
        return this.#succeed(codec, idText, method, result);
      }
      call = lazy.context;
    } catch (error) {
      return this.#fail(codec, idText, method, error, session);
    } finally {
      lazy.call = undefined;
      lazy.session = undefined;
      this.#lazy = lazy;
    }
    return this.#continue(call, result, idText, session, codec);
  }

  #observe(method: string, reply: Reply, start: number, session: Session): void {
    if (reply instanceof Promise) {
      reply.then(
        (message) => this.#finished(method, message?.code ?? 0, start),
        () => this.#finished(method, 0, start),
      );
    } else if (session.answeredAtOnce !== undefined) {
      session.answeredAtOnce(method, reply?.code ?? 0);
    } else {
      this.#finished(method, reply?.code ?? 0, start);
    }
  }

  #finished(method: string, code: number, start: number): void {
    try {
      this.#observer!.callFinished(method, code, (performance.now() - start) / 1000);
    } catch {
      // Metrics must never cost a reply.
    }
  }

  #invoke(
    entry: Method,
    call: Call,
    args: unknown[],
    idText: string,
    session: Session,
    codec: Codec,
  ): Reply {
    let result: unknown;
    try {
      result = this.#interceptors.length === 0
        ? runInContext(call, entry.fn, entry.thisArg, args, entry.async)
        : runInContext(
          call,
          intercepted as (...args: unknown[]) => unknown,
          undefined,
          [this.#interceptors, entry, call, args],
          true,
        );
      // Inside the try: a hostile result (a Proxy, a throwing `then` getter) throws right here.
      if (!(result instanceof Promise || isThenable(result))) {
        return this.#succeed(codec, idText, call.method, result);
      }
    } catch (error) {
      return this.#fail(codec, idText, call.method, error, session);
    }
    return this.#continue(call, result as PromiseLike<unknown>, idText, session, codec);
  }

  /** A call whose handler returned a promise: it runs on, in flight, until that settles. */
  #continue(
    call: Call,
    result: PromiseLike<unknown>,
    idText: string,
    session: Session,
    codec: Codec,
  ): Reply {
    // Only a call still running counts in flight, can be cancelled or pass its deadline.
    session.began();
    const key = call.id === undefined ? undefined : idText;
    if (key !== undefined) session.calls.set(key, call);
    if (call.deadline !== undefined) call.startDeadline(call.deadline - Date.now());
    const finish = (): boolean => {
      call.settle();
      if (key !== undefined && session.calls.get(key) === call) session.calls.delete(key);
      session.settled();
      // A cancelled or late call's caller has stopped waiting: the result is dropped.
      return !call.aborted;
    };
    return Promise.resolve(result).then(
      (value) => finish() ? this.#succeed(codec, idText, call.method, value) : undefined,
      (error) => finish() ? this.#fail(codec, idText, call.method, error, session) : undefined,
    );
  }

  #succeed(codec: Codec, idText: string, method: string, result: unknown): Outgoing {
    try {
      return codec.result(idText, result);
    } catch (error) {
      const why = error instanceof NotPlainError
        ? `${error.message}, and the client has not enabled rich values (see rpc.hello)`
        : safeMessage(error);
      return codec.plain.error(
        idText,
        ErrorCode.InternalError,
        `Cannot send result of "${method}": ${why}`,
      );
    }
  }

  #fail(
    codec: Codec,
    idText: string,
    method: string,
    error: unknown,
    session: Session,
  ): Outgoing {
    const { code, message, data } = describeError(error, this.#exposeStack);
    if (message === HIDDEN_MESSAGE) {
      // The method is one of the table's: a handler ran.
      this.#server.log(error, `"${method}" failed: ${safeMessage(error)}`, {
        event: "handler_failed",
        method,
        peer: formatAddr(session.peer),
      });
    }
    try {
      return codec.error(idText, code, message, data);
    } catch {
      return codec.plain.error(idText, code, message, { name: safeName(error) });
    }
  }
}

/**
 * By-name params as the handler's arguments (JSON-RPC 2.0 section 4.2): matched to its declared
 * parameter names when every name given is one of them; else, for a handler of one parameter (an
 * options object, destructured or not), the object itself. A string says what is wrong.
 */
function argumentsByName(entry: Method, params: object | undefined): unknown[] | string {
  if (params === undefined) return [];
  const names = Object.keys(params);
  if (names.length === 0) return [];
  const declared = entry.rest ? entry.params.slice(0, -1) : entry.params;
  const known = names.every((name) => declared.includes(name) && !/^arg\d+$/.test(name));
  if (known) {
    const args = declared.map((name) => (params as Record<string, unknown>)[name]);
    // Trailing params not given stay absent, so that default values apply.
    let length = args.length;
    while (length > 0 && !Object.hasOwn(params, declared[length - 1]!)) length--;
    const missing = declared.slice(0, entry.required).filter((name) =>
      !Object.hasOwn(params, name)
    );
    if (missing.length > 0) return `misses required params ${missing.map(quote).join(", ")}`;
    return args.slice(0, length);
  }
  // An options object: the one parameter, or the rest of a function that declares nothing else.
  if (entry.takesObject || (entry.rest && entry.params.length === 1)) return [params];
  const unknown = names.filter((name) => !declared.includes(name));
  return unknown.length > 0
    ? `has no params named ${unknown.slice(0, 5).map(quote).join(", ")} (it takes ${
      declared.map(quote).join(", ") || "none"
    })`
    : "cannot take by-name params";
}

/** Names longer than this get no suggestions: the edit distance costs their length squared. */
const MAX_SUGGESTED_LENGTH = 64;

/** Candidates compared at most, so that an unknown name costs a bounded 4 million steps. */
const MAX_SUGGESTION_CANDIDATES = 1000;

/** Up to 3 exposed names within a small edit distance of `name`, nearest first. */
function nearestNames(name: string, names: Iterable<string>): string[] {
  if (name.length > MAX_SUGGESTED_LENGTH) return [];
  const limit = Math.max(1, Math.floor(name.length / 3));
  const found: [number, string][] = [];
  let compared = 0;
  for (const candidate of names) {
    if (Math.abs(candidate.length - name.length) > limit) continue;
    if (++compared > MAX_SUGGESTION_CANDIDATES) break;
    const distance = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (distance <= limit) found.push([distance, candidate]);
  }
  return found.sort((a, b) => a[0] - b[0] || a[1].localeCompare(b[1])).slice(0, 3).map(([, n]) =>
    n
  );
}

/** Levenshtein distance, with adjacent transpositions counted as one edit. */
function editDistance(a: string, b: string): number {
  let before = Array.from({ length: b.length + 1 }, (_, i) => i);
  let previous = before;
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(previous[j]! + 1, row[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, before[j - 2]! + 1);
      }
      row.push(best);
    }
    before = previous;
    previous = row;
  }
  return previous[b.length]!;
}

function quote(name: string): string {
  return JSON.stringify(name.length > 64 ? `${name.slice(0, 64)}…` : name);
}

/** Runs `interceptors` around the handler of `entry`, outermost first. */
function intercepted(
  interceptors: readonly Interceptor[],
  entry: Method,
  call: Call,
  args: unknown[],
): Promise<unknown> {
  const info: InterceptedCall = { method: call.method, params: args, context: call };
  const step = (i: number): Promise<unknown> => {
    try {
      if (i === interceptors.length) {
        return Promise.resolve(Reflect.apply(entry.fn, entry.thisArg, args));
      }
      return Promise.resolve(interceptors[i]!(info, () => step(i + 1)));
    } catch (error) {
      return Promise.reject(error);
    }
  };
  return step(0);
}

function invalid(codec: Codec, idText: string, reason: string): Outgoing {
  return codec.plain.error(idText, ErrorCode.InvalidRequest, `Invalid Request: ${reason}`);
}

function joinBatch(replies: (Outgoing | undefined)[]): Outgoing | undefined {
  const texts: string[] = [];
  for (const reply of replies) if (reply !== undefined) texts.push(reply.body as string);
  return texts.length === 0 ? undefined : new Outgoing("null", `[${texts.join(",")}]`);
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function";
}
