// Why a TLS handshake failed, from the error either transport got: the reason a server counts it
// under (tlsrpc_handshake_failures_total{reason}). Both transports run rustls (Deno's node:tls
// too), so its messages tell the cases apart, and node:tls adds node's error codes. What each
// client did, and what the transports said, on Deno 2.9.6:
// - plaintext, HTTP, an SSLv2 hello: ERR_SSL_WRONG_VERSION_NUMBER (node:tls), InvalidData (Deno),
//   both "received corrupt message of type InvalidContentType": "protocol";
// - TLS this server does not speak (a TLS 1.0 hello): "peer is incompatible: ...": "protocol";
// - stalled: "TLS handshake timeout" (node:tls), the "deno" transport's own deadline: "timeout";
// - left mid-handshake: ECONNRESET "socket hang up" (node:tls), UnexpectedEof (Deno): "reset";
// - no certificate though clientCa is set: ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE
//   "peer sent no certificates": "certificate";
// - a certificate clientCa did not sign: node:tls says ECONNRESET "socket hang up", and only the
//   TLS socket's authorizationError tells (the node transport checks it first): "certificate";
// - refused the server's certificate: "received fatal alert: ...": "other", as it is the server's
//   certificate, not the client's, that failed (and a key that does not match the certificate
//   gives ERR_SSL_UNSUPPORTED_PROTOCOL "unsupported protocol": "other" too).

import type { HandshakeFailure } from "./_metrics_text.ts";
import { isDisconnect } from "./_util.ts";

export type { HandshakeFailure } from "./_metrics_text.ts";

/** The code node gives a handshake timeout, and the "deno" transport's own deadline too. */
export const HANDSHAKE_TIMEOUT_CODE = "ERR_TLS_HANDSHAKE_TIMEOUT";

/** rustls's words for a peer that does not speak TLS, or no TLS this server speaks. */
const PROTOCOL_ERROR =
  /^(received corrupt message|received unexpected message|peer is incompatible|peer misbehaved|inappropriate (handshake )?message)/;

/** rustls's words for a client certificate refused or missing (a server verifies only those). */
const CERTIFICATE_ERROR = /^(peer sent no certificates|invalid peer certificate)/;

/**
 * The reason to count a failed handshake under, from its error: `"timeout"`, `"certificate"` (the
 * client's refused or missing), `"protocol"` (not TLS, or TLS broken or too old), `"reset"` (the
 * peer left or reset the connection), else `"other"`. node:tls reports a refused client
 * certificate as a reset: the caller checks the socket's `authorizationError` first.
 */
export function handshakeFailure(error: unknown): HandshakeFailure {
  const code = typeof error === "object" && error !== null
    ? (error as { code?: unknown }).code
    : undefined;
  const message = error instanceof Error ? error.message : "";
  if (code === HANDSHAKE_TIMEOUT_CODE || message === "TLS handshake timeout") return "timeout";
  if (code === "ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE" || CERTIFICATE_ERROR.test(message)) {
    return "certificate";
  }
  if (code === "ERR_SSL_WRONG_VERSION_NUMBER" || PROTOCOL_ERROR.test(message)) return "protocol";
  if (isDisconnect(error)) return "reset";
  return "other";
}
