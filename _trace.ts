// OpenTelemetry traces through Deno's built-in support (`OTEL_DENO=true`): one span per call on
// the client and one on the server, linked by a W3C `traceparent` that travels in the request.
// Deno exposes a tracer provider and a context manager (`Deno.telemetry`), not the propagation
// API, so the traceparent is written and read here. With OpenTelemetry off, `tracing` is false
// and nothing here runs: callers test it before anything else.

import type { Outgoing } from "./_codec.ts";
import { RpcError } from "./errors.ts";

/** The subset of an OpenTelemetry.js span context that Deno gives and takes. */
export interface SpanContext {
  traceId: string;
  spanId: string;
  traceFlags: number;
  isRemote?: boolean;
}

/**
 * An attribute's value. Deno exports a number as OTLP's `doubleValue` and a bigint as `intValue`:
 * the conventions' integers (ports, error codes) are given as bigints.
 */
type Attribute = string | number | bigint;

/** The subset of an OpenTelemetry.js span that this module uses. */
export interface TraceSpan {
  spanContext(): SpanContext;
  setAttribute(key: string, value: Attribute): unknown;
  setStatus(status: { code: number; message?: string }): unknown;
  end(): void;
}

interface Context {
  setValue(key: symbol, value: unknown): Context;
}

interface Tracer {
  startSpan(
    name: string,
    options: { kind: number; attributes: Record<string, Attribute>; root?: boolean },
    context?: Context,
  ): TraceSpan;
}

interface ContextManager {
  active(): Context;
  with<A extends unknown[], R>(
    context: Context,
    fn: (...args: A) => R,
    thisArg: unknown,
    ...args: A
  ): R;
}

/** OpenTelemetry.js `SpanKind`. */
const SERVER = 1;
const CLIENT = 2;
/** OpenTelemetry.js `SpanStatusCode.ERROR`. */
const ERROR = 2;

/**
 * Where OpenTelemetry.js keeps the current span in a context: `trace.setSpan()` uses this key,
 * and so does Deno, whose `Deno.serve` and `fetch` spans are found under it.
 */
const SPAN_KEY = Symbol.for("OpenTelemetry Context Key SPAN");

/** "jsonrpc" is the well-known value: the wire protocol is JSON-RPC 2.0, extended compatibly. */
const SYSTEM = "jsonrpc";

const telemetry = (globalThis as { Deno?: { telemetry?: unknown } }).Deno?.telemetry as
  | { tracerProvider?: { getTracer(name: string): Tracer }; contextManager?: ContextManager }
  | undefined;

const tracer: Tracer | undefined = probe();

/**
 * Whether OpenTelemetry is on in this process, decided once at startup: with it off, calls cost
 * nothing more than this test.
 */
export const tracing: boolean = tracer !== undefined;

/**
 * The tracer, or `undefined` with OpenTelemetry off. Deno offers no way to ask: starting a span
 * throws "otel not initialized" when it is off. The probe span is never ended, so never exported.
 */
function probe(): Tracer | undefined {
  const tracer = telemetry?.tracerProvider?.getTracer("tlsrpc");
  if (tracer === undefined || telemetry?.contextManager === undefined) return undefined;
  try {
    tracer.startSpan("tlsrpc.probe", { kind: 0, attributes: {}, root: true });
    return tracer;
  } catch {
    return undefined;
  }
}

/**
 * Starts the client span of call `id` to `method`, a child of the active context (a `Deno.serve`
 * handler's span, say). Only when {@linkcode tracing}.
 */
export function startClientSpan(method: string, id: number): TraceSpan {
  return tracer!.startSpan(method, {
    kind: CLIENT,
    attributes: {
      "rpc.system": SYSTEM,
      "rpc.method": method,
      "rpc.jsonrpc.version": "2.0",
      "rpc.jsonrpc.request_id": String(id),
    },
  });
}

/** Records on a client span the server it went to: `target` is `host:port` or `[v6]:port`. */
export function setServer(span: TraceSpan, target: string): void {
  const colon = target.lastIndexOf(":");
  const host = target.slice(0, colon);
  span.setAttribute("server.address", host.startsWith("[") ? host.slice(1, -1) : host);
  span.setAttribute("server.port", integer(Number(target.slice(colon + 1))));
}

/** The W3C `traceparent` value naming `span` as the parent. */
export function traceparentOf(span: TraceSpan): string {
  const { traceId, spanId, traceFlags } = span.spanContext();
  return `00-${traceId}-${spanId}-${(traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

/** Version 00, exactly: lowercase hex, and ids that are not all zeros (W3C Trace Context). */
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * The parent that a `traceparent` member from the wire names, or `undefined` when it is absent
 * or malformed (which is then ignored, as W3C Trace Context asks).
 */
export function parseTraceparent(value: unknown): SpanContext | undefined {
  if (typeof value !== "string" || value.length !== 55) return undefined;
  const match = TRACEPARENT.exec(value);
  if (match === null) return undefined;
  const [, traceId, spanId, flags] = match as unknown as [string, string, string, string];
  if (/^0+$/.test(traceId) || /^0+$/.test(spanId)) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16), isRemote: true };
}

/**
 * Starts the server span of a call: a child of the caller's span when `traceparent` names one,
 * else the root of a new trace. Only when {@linkcode tracing}.
 */
function startServerSpan(
  method: string,
  id: string | number | null | undefined,
  peer: { readonly hostname: string; readonly port: number },
  traceparent: unknown,
): TraceSpan {
  const attributes: Record<string, Attribute> = {
    "rpc.system": SYSTEM,
    "rpc.method": method,
    "rpc.jsonrpc.version": "2.0",
    "network.peer.address": peer.hostname,
    "network.peer.port": integer(peer.port),
  };
  // Omitted for a notification; the empty string for id null (the convention's words).
  if (id !== undefined) attributes["rpc.jsonrpc.request_id"] = id === null ? "" : String(id);
  const parent = parseTraceparent(traceparent);
  if (parent === undefined) {
    return tracer!.startSpan(method, { kind: SERVER, attributes, root: true });
  }
  const remote = { spanContext: () => parent };
  const context = telemetry!.contextManager!.active().setValue(SPAN_KEY, remote);
  return tracer!.startSpan(method, { kind: SERVER, attributes }, context);
}

/**
 * Runs `fn` with `span` as the active span, so that what it starts (a `fetch`, a call with a
 * tlsrpc client) is a child of it, across its `await`s too.
 */
function runInSpan<A extends unknown[], R>(
  span: TraceSpan,
  fn: (...args: A) => R,
  thisArg: unknown,
  ...args: A
): R {
  const manager = telemetry!.contextManager!;
  return manager.with(manager.active().setValue(SPAN_KEY, span), fn, thisArg, ...args);
}

/** Ends a span with an error response: its JSON-RPC code and message. */
function endWithRpcError(span: TraceSpan, code: number, message: string): void {
  span.setAttribute("rpc.jsonrpc.error_code", integer(code));
  span.setAttribute("rpc.jsonrpc.error_message", message);
  span.setAttribute("error.type", String(code));
  span.setStatus({ code: ERROR, message });
  span.end();
}

/**
 * Ends a span whose call failed without an error response (a timeout, a lost connection, a
 * cancellation): `error.type` is the error's class name.
 */
function endWithFailure(span: TraceSpan, error: unknown): void {
  const type = error instanceof Error ? error.name : "_OTHER";
  span.setAttribute("error.type", type);
  span.setStatus({ code: ERROR, message: error instanceof Error ? error.message : String(error) });
  span.end();
}

/**
 * Wraps a client call's `resolve` and `reject` so that settling it ends `span`: an `RpcError`
 * is an error response, anything else a failure.
 */
export function settling(
  span: TraceSpan,
  resolve: (value: unknown) => void,
  reject: (error: unknown) => void,
): { resolve(value: unknown): void; reject(error: unknown): void } {
  return {
    resolve(value) {
      span.end();
      resolve(value);
    },
    reject(error) {
      if (error instanceof RpcError) endWithRpcError(span, error.code, error.message);
      else endWithFailure(span, error);
      reject(error);
    },
  };
}

/** What the dispatcher knows of a call when it runs the handler. */
export interface TracedCall {
  readonly method: string;
  readonly id: string | number | null | undefined;
  readonly peer: { readonly hostname: string; readonly port: number };
  /** Its reason says why a call whose reply is dropped was aborted. */
  readonly signal: AbortSignal;
}

/** A reply of the dispatcher: sent now, later, or never (`undefined`). */
type Reply = Outgoing | undefined | Promise<Outgoing | undefined>;

/**
 * Runs `invoke` (the handler's call, and the reply made of its outcome) inside the server span of
 * `call`, ended with that reply. Only when {@linkcode tracing}.
 */
export function traceServerCall(
  call: TracedCall,
  traceparent: unknown,
  invoke: () => Reply,
): Reply {
  const span = startServerSpan(call.method, call.id, call.peer, traceparent);
  let reply: Reply;
  try {
    reply = runInSpan(span, invoke, undefined);
  } catch (error) {
    endWithFailure(span, error);
    throw error;
  }
  if (reply instanceof Promise) {
    reply.then((sent) => endServerSpan(span, sent, call), (error) => endWithFailure(span, error));
  } else {
    endServerSpan(span, reply, call);
  }
  return reply;
}

/**
 * Ends a server span with the reply about to be sent: a result, or an error response whose
 * message is read back from its JSON text (an extended frame's is not read). No reply: the call
 * was aborted, and its signal says why.
 */
function endServerSpan(span: TraceSpan, reply: Outgoing | undefined, call: TracedCall): void {
  if (reply === undefined) return endWithFailure(span, call.signal.reason);
  if (reply.code === 0) return span.end();
  endWithRpcError(span, reply.code, errorMessageOf(reply.body));
}

function errorMessageOf(body: string | Uint8Array[]): string {
  if (typeof body !== "string") return "";
  try {
    const message = (JSON.parse(body) as { error?: { message?: unknown } }).error?.message;
    return typeof message === "string" ? message : "";
  } catch {
    return "";
  }
}

/** An integer attribute as Deno exports one (`intValue`); anything else stays a number. */
function integer(value: number): Attribute {
  return Number.isSafeInteger(value) ? BigInt(value) : value;
}
