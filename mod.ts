/**
 * tlsrpc: JSON-RPC 2.0 over TLS for Deno. A server that exposes plain functions by introspection
 * and survives any one client's failure, and a thin client that calls them like local functions.
 *
 * @example Serve a function and call it
 * ```ts
 * import { connect, serve } from "./mod.ts";
 *
 * const read = (name: string) => Deno.readTextFile(new URL(`./testdata/${name}`, import.meta.url));
 * await using server = await serve({ add: (a: number, b: number) => a + b }, {
 *   port: 0,
 *   cert: await read("server.pem"),
 *   key: await read("server.key"),
 *   onListen: () => {},
 * });
 * await using client = await connect({ port: server.addr.port, caCerts: [await read("ca.pem")] });
 * console.log(await client.proxy.add(2, 3)); // 5
 * ```
 *
 * @module
 */

export { serve } from "./server.ts";
export type {
  AltName,
  CertificateIdentity,
  InterceptedCall,
  Interceptor,
  Limits,
  LogFields,
  MethodInfo,
  MetricsSnapshot,
  RpcServer,
  ServeOptions,
  ServerAddr,
  ServerMetrics,
} from "./server.ts";
export { DEFAULT_LIMITS, DEFAULT_PORT } from "./server.ts";
export { connect, DEFAULT_CLIENT_OPTIONS, RpcClient } from "./client.ts";
export type {
  CallOptions,
  ClientConnection,
  ConnectOptions,
  Dialer,
  Endpoint,
  ExposedKey,
  KeepaliveOptions,
  ReconnectOptions,
  Remote,
  RemoteProxy,
  RpcCaller,
} from "./client.ts";
export { callContext, requireCallContext } from "./context.ts";
export type { CallContext } from "./context.ts";
export {
  CancelledError,
  ConnectionError,
  ErrorCode,
  ProtocolError,
  RpcError,
  TimeoutError,
} from "./errors.ts";
export type { RpcErrorOptions } from "./errors.ts";
export { DEFAULT_MAX_FRAME_BYTES, FrameReader, FrameWriter, HEADER_BYTES } from "./framing.ts";
export type { ByteSink, ByteSource, FrameReaderOptions, FrameWriterOptions } from "./framing.ts";
export * as AttrWrapper from "./attr_wrapper.ts";
export type { Untyped, Unwrapped, Wrapped, WrappedArray, WrappedObject } from "./attr_wrapper.ts";
