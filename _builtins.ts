// The protocol's own methods (`rpc.*`), as a table of handlers looked up by name: keepalive,
// extension negotiation, authentication, discovery and cancellation. None touches a user handler.

import { CancelledError, ErrorCode } from "./errors.ts";
import { type Codec, isId, type Outgoing } from "./_codec.ts";
import type { Session } from "./_call.ts";
import { type Authenticator, type AuthThrottle, MAX_AUTH_FAILURES } from "./_auth.ts";
import type { LogFields } from "./_log.ts";
import { formatAddr } from "./_util.ts";

/** What the response to a message is: its frame, nothing (notifications), or a promise of either. */
export type Reply = Outgoing | undefined | Promise<Outgoing | undefined>;

/** The extensions this server speaks, announced in answer to `rpc.hello`. */
export const EXTENSIONS = ["rich"] as const;

/** What a built-in method is given. */
export interface BuiltinRequest {
  readonly params: unknown[] | object | undefined;
  /** The JSON text of the request's id, to answer with. */
  readonly idText: string;
  readonly session: Session;
  /** The codec to answer with: the session's, or a plain one inside a batch. */
  readonly codec: Codec;
  /** Set inside a batch: what the batch has used so far. */
  readonly batch: BatchState | undefined;
}

/** Per-batch counts, so that one frame cannot buy more than one of some things. */
export interface BatchState {
  /** `rpc.auth` requests seen in this batch. */
  auths: number;
}

/** What a built-in method may use of the server. */
export interface BuiltinServer {
  /** The `rpc.discover` document. */
  readonly discover: unknown;
  /** Decides tokens, when the server wants one. */
  readonly authenticate: Authenticator | undefined;
  /** Failed authentications by address. */
  readonly throttle: AuthThrottle;
  /** A rate-limited log line. */
  log(error: unknown, line: string, fields: LogFields): void;
}

/** A built-in method. */
export interface Builtin {
  /** Whether a peer may call it before it has authenticated. */
  readonly beforeAuth: boolean;
  /** Answers the request. */
  handle(request: BuiltinRequest, server: BuiltinServer): Reply;
}

/** The built-in methods by name; any other `rpc.` name is "method not found". */
export const BUILTINS: ReadonlyMap<string, Builtin> = new Map<string, Builtin>([
  ["rpc.ping", { beforeAuth: true, handle: ({ idText, codec }) => codec.result(idText, "pong") }],
  ["rpc.hello", { beforeAuth: true, handle: hello }],
  ["rpc.auth", { beforeAuth: true, handle: auth }],
  [
    "rpc.discover",
    {
      beforeAuth: false,
      handle: ({ idText, codec }, server) => codec.result(idText, server.discover),
    },
  ],
  ["rpc.cancel", { beforeAuth: false, handle: cancel }],
]);

/**
 * `rpc.hello`: the peer announces the extensions it speaks (by-name params
 * `{ "extensions": ["rich"] }`); the answer lists the server's.
 */
function hello({ params, idText, session, codec }: BuiltinRequest): Reply {
  const offered = Array.isArray(params)
    ? (params[0] as { extensions?: unknown } | undefined)?.extensions
    : (params as { extensions?: unknown } | undefined)?.extensions;
  if (offered !== undefined && !Array.isArray(offered)) {
    return codec.error(
      idText,
      ErrorCode.InvalidParams,
      "Invalid params: rpc.hello takes { extensions: string[] }",
    );
  }
  session.codec.rich = offered?.includes("rich") ?? false;
  return codec.result(idText, { extensions: EXTENSIONS });
}

/**
 * `rpc.auth`: params `[token]` or `{ "token": token }`. Every guess counts: a connection gets
 * {@linkcode MAX_AUTH_FAILURES} attempts, a batch one, an address a few failures a minute; past
 * those, requests are refused without the token being checked. The token is never echoed or logged.
 */
function auth(request: BuiltinRequest, server: BuiltinServer): Reply {
  const { params, idText, session, codec, batch } = request;
  const authenticate = server.authenticate;
  if (authenticate === undefined) return codec.result(idText, true); // nothing to prove
  const token = Array.isArray(params)
    ? params[0]
    : (params as { token?: unknown } | undefined)?.token;
  if (typeof token !== "string") {
    return codec.error(
      idText,
      ErrorCode.InvalidParams,
      "Invalid params: rpc.auth takes a token string",
    );
  }
  const refuse = (why: string) =>
    codec.error(idText, ErrorCode.AuthenticationFailed, `Authentication failed: ${why}`);
  if (session.authenticated) return refuse("this connection is authenticated already");
  if (batch !== undefined && batch.auths++ > 0) return refuse("one rpc.auth per batch");
  const peer = session.peer;
  if (session.authAttempts >= MAX_AUTH_FAILURES) {
    session.refused("auth_attempts");
    session.closeSoon(`${session.authAttempts} failed authentications`);
    return refuse(`${MAX_AUTH_FAILURES} attempts on this connection`);
  }
  if (!server.throttle.allows(peer.hostname)) {
    session.refused("auth_throttle");
    server.log(undefined, `refused authentication from ${peer.hostname}: too many failures`, {
      event: "auth_throttled",
      peer: formatAddr(peer),
    });
    session.closeSoon("too many failed authentications from its address");
    return refuse("too many failures from this address, try again later");
  }
  session.authAttempts++;
  const settle = (identity: unknown): Outgoing => {
    if (identity === undefined || identity === null || identity === false) {
      server.throttle.failed(peer.hostname);
      server.log(undefined, `failed authentication from ${peer.hostname}:${peer.port}`, {
        event: "auth_failed",
        peer: formatAddr(peer),
      });
      if (session.authAttempts >= MAX_AUTH_FAILURES) {
        session.closeSoon(`${session.authAttempts} failed authentications`);
      }
      return codec.error(idText, ErrorCode.AuthenticationFailed, "Authentication failed");
    }
    session.tokenIdentity = identity;
    session.authenticated = true;
    return codec.result(idText, true);
  };
  let verdict: unknown;
  try {
    verdict = authenticate(token, peer);
  } catch {
    // The authenticator's own failure: refuse, and say nothing of the token.
    return settle(undefined);
  }
  if (!(verdict instanceof Promise)) return settle(verdict);
  session.began();
  return verdict.then(settle, () => settle(undefined)).finally(() => session.settled());
}

/** `rpc.cancel`: params `[id]` or `{ "id": id }` name a call in flight on the same connection. */
function cancel({ params, idText, session, codec }: BuiltinRequest): Reply {
  const id = Array.isArray(params) ? params[0] : (params as { id?: unknown } | undefined)?.id;
  if (!isId(id)) {
    return codec.error(
      idText,
      ErrorCode.InvalidParams,
      "Invalid params: rpc.cancel takes the id of a call",
    );
  }
  const call = session.calls.get(typeof id === "number" ? String(id) : JSON.stringify(id)) ??
    // An id a double cannot hold exactly was stored under the text the client wrote.
    (typeof id === "number" ? [...session.calls.values()].find((c) => c.id === id) : undefined);
  call?.abort(new CancelledError(`Cannot finish "${call.method}": the caller cancelled it`));
  return codec.result(idText, call !== undefined);
}
