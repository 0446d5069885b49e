// The transport seam: TLS byte streams below, frames and everything else above. A `Connection` is
// a byte source and sink plus `close`; the server gets them from a `Listener`, and everything
// above (framing, dispatch) is the same whatever made them. Two listeners, chosen by name:
// - "node" (the default, _transport_node.ts) on Deno's node:tls: client certificates, Nagle off,
//   `reusePort`, PROXY headers; a handshake that fails or stalls closes its socket at once.
// - "deno" (_transport_deno.ts) on Deno.listenTls: none of those, and a socket may outlive its
//   connection's close (see the top of that module).
// The types (`Connection`, `ListenOptions`, the events of the listeners' log lines) are in
// _transport_types.ts, below both listeners, which fit them.

import { listenDeno } from "./_transport_deno.ts";
import { listenNode } from "./_transport_node.ts";

export type { CertificateIdentity } from "./_x509.ts";
export type { HandshakeFailure } from "./_handshake_failure.ts";
export type {
  Connection,
  ListenOptions,
  TransportEvent,
  TransportLogFields,
} from "./_transport_types.ts";
import type { ListenOptions } from "./_transport_types.ts";

/** A listening transport. */
export interface Listener {
  /** The bound address, with the real port when 0 was asked for. */
  readonly addr: Deno.NetAddr;
  /** Stops accepting; connections already handed out stay open. Idempotent. */
  close(): void;
  /**
   * Resolves once the listener has stopped after `close()`, and the connections closed by then
   * have let their sockets go (the listener's close cuts their waits short).
   */
  readonly closed: Promise<void>;
}

/** The transports a server can use. */
export type TransportName = "node" | "deno";

/**
 * Starts listening with the named transport. Resolves once the port is bound; rejects with a
 * `TypeError` when the transport cannot do what the options ask.
 */
export function listen(transport: TransportName, options: ListenOptions): Promise<Listener> {
  return transport === "deno" ? listenDeno(options) : listenNode(options);
}
