// `call --verbose`: what happened on the way to the result, on stderr, each line as it happens:
// every connection attempt and its time (TCP connect and TLS handshake together, as the client's
// TLS dialer does both), connect() as a whole (with rpc.hello and the token), the call's time;
// and, from a second connection of its own to the endpoint the client chose, what Deno's TLS API
// does not tell a client: the TCP connect and TLS handshake times apart, the TLS version, the
// server's certificate (subject, issuer, names, expiry), and the extensions the server speaks
// (one raw rpc.hello, which needs no token). node:tls reads the peer certificate; Deno.TlsConn
// cannot.

import { isIP } from "node:net";
import tls from "node:tls";
import { type Dialer, type Endpoint, tlsDialer, type TlsDialOptions } from "./_dial.ts";
import { escapeText } from "./_format.ts";
import { readCertificate } from "./_x509_read.ts";
import { readCertificateIdentity } from "./_x509_identity.ts";
import { formatAddr, reason } from "./_util.ts";

/** The extensions the CLI's client offers in rpc.hello (connect()'s default, rich values on). */
const OFFERED_EXTENSIONS: readonly string[] = ["rich"];

/** The largest rpc.hello answer the probe reads: the real one is some 60 bytes. */
const MAX_HELLO_BYTES = 64 * 1024;

const DAY_MS = 86_400_000;

/** What the second connection learnt. */
interface Probe {
  /** Milliseconds to the TCP connection. */
  readonly tcp: number;
  /** Milliseconds from it to the end of the TLS handshake. */
  readonly tls: number;
  /** `TLSv1.3`. */
  readonly protocol: string | null;
  /** The server's certificate, as node:tls gives it. */
  readonly certificate: tls.PeerCertificate;
  /** The server's answer to rpc.hello: its result, or its error. */
  readonly hello: { result?: unknown; error?: { code?: unknown; message?: unknown } };
}

/** Milliseconds since `start`, for a line: `3.2 ms`. */
function since(start: number): string {
  return `${(performance.now() - start).toFixed(1)} ms`;
}

/** The lines of `call --verbose`, written as they happen. */
export class VerboseLog {
  #write: (line: string) => void;
  #endpoint: Endpoint | undefined;

  /** @param write Writes one line; by default to stderr, after `* ` as curl does. */
  constructor(write: (line: string) => void = (line) => console.error(`* ${line}`)) {
    this.#write = write;
  }

  /** The client's default TLS dialer, each attempt logged with its time or its failure. */
  dialer(options: TlsDialOptions): Dialer {
    const dial = tlsDialer(options);
    return async (signal, endpoint) => {
      const target = formatAddr(endpoint);
      const start = performance.now();
      this.#write(`connecting to ${escapeText(target)}`);
      try {
        const conn = await dial(signal, endpoint);
        this.#endpoint = endpoint;
        this.#write(`${escapeText(target)}: TCP connect and TLS handshake took ${since(start)}`);
        return conn;
      } catch (error) {
        this.#write(
          `${escapeText(target)}: failed after ${since(start)}: ${escapeText(reason(error))}`,
        );
        throw error;
      }
    };
  }

  /** connect() resolved, `start` being when it was called. */
  connected(start: number): void {
    this.#write(`connected in ${since(start)} (connect() as a whole: TCP, TLS, rpc.hello, token)`);
  }

  /** The call of `method` answered, `start` being when it was made. */
  called(method: string, start: number): void {
    this.#write(`call "${escapeText(method)}" took ${since(start)}`);
  }

  /**
   * Opens a second connection to the endpoint the client connected to, verified as the client's
   * was, and logs what it learns: times, certificate, extensions. A failure is one line, never
   * the command's.
   */
  async inspect(options: TlsDialOptions, timeout: number): Promise<void> {
    const endpoint = this.#endpoint;
    if (endpoint === undefined) return;
    const target = escapeText(formatAddr(endpoint));
    let probe: Probe;
    try {
      probe = await probeServer(endpoint, options, timeout);
    } catch (error) {
      this.#write(`cannot inspect ${target} on a second connection: ${escapeText(reason(error))}`);
      return;
    }
    this.#write(
      `${target}, second connection: TCP connect ${probe.tcp.toFixed(1)} ms, TLS handshake ` +
        `${probe.tls.toFixed(1)} ms (${escapeText(probe.protocol ?? "TLS")})`,
    );
    this.#write(`server certificate: ${describeCertificate(probe.certificate)}`);
    this.#write(`extensions: ${describeHello(probe.hello)}`);
  }
}

/** Subject, issuer, names and expiry, from what the server sent: escaped. */
function describeCertificate(certificate: tls.PeerCertificate, now = Date.now()): string {
  const parts = [
    `subject ${distinguishedName(certificate.subject)}`,
    `issuer ${distinguishedName(certificate.issuer)}`,
  ];
  const der = certificate.raw === undefined ? undefined : new Uint8Array(certificate.raw);
  let notAfter: Date | undefined;
  try {
    if (der !== undefined) {
      const names = readCertificateIdentity(der).altNames.map((name) =>
        `${name.type}:${name.value}`
      );
      if (names.length > 0) parts.push(`names ${names.join(", ")}`);
      notAfter = readCertificate(der).notAfter;
    }
  } catch {
    // Node's own fields say enough.
  }
  notAfter ??= new Date(certificate.valid_to);
  const days = Math.floor((notAfter.getTime() - now) / DAY_MS);
  parts.push(
    `expires ${Number.isNaN(notAfter.getTime()) ? certificate.valid_to : notAfter.toISOString()}` +
      (Number.isNaN(days) ? "" : days >= 0 ? ` (in ${days} days)` : ` (expired ${-days} days ago)`),
  );
  return escapeText(parts.join("; "));
}

/** `CN=localhost, O=Example`, from node's object of a name. */
function distinguishedName(name: object | undefined): string {
  if (name === undefined) return "(none)";
  const parts = Object.entries(name).flatMap(([key, value]: [string, unknown]) =>
    value === undefined ? [] : (Array.isArray(value) ? value : [value]).map((v) => `${key}=${v}`)
  );
  return parts.length === 0 ? "(empty)" : parts.join(", ");
}

/** What the rpc.hello answer says was negotiated, and what the server speaks. */
function describeHello(hello: Probe["hello"]): string {
  if (hello.error !== undefined) {
    const { code, message } = hello.error;
    return escapeText(
      `none: the server answered rpc.hello with ${String(code)} ${String(message)} (a plain ` +
        "JSON-RPC server: calls go as plain JSON)",
    );
  }
  const result = hello.result as { extensions?: unknown } | null | undefined;
  const spoken = Array.isArray(result?.extensions)
    ? result.extensions.filter((name): name is string => typeof name === "string")
    : [];
  const agreed = OFFERED_EXTENSIONS.filter((name) => spoken.includes(name));
  return escapeText(
    `${agreed.length === 0 ? "none" : agreed.join(", ")} (the client offers ` +
      `${OFFERED_EXTENSIONS.join(", ")}; the server speaks ${
        spoken.length === 0 ? "none" : spoken.join(", ")
      })`,
  );
}

/**
 * A TLS connection with node:tls, verified against the system's roots and `caCerts` (as Deno's
 * client verifies), presenting the client certificate when there is one; then one rpc.hello.
 */
function probeServer(
  endpoint: Endpoint,
  options: TlsDialOptions,
  timeout: number,
): Promise<Probe> {
  const { hostname, port } = endpoint;
  const start = performance.now();
  const socket = tls.connect({
    host: hostname,
    port,
    // An IP address is no server name (SNI); node checks it against the certificate's IP names.
    ...(isIP(hostname) === 0 && { servername: hostname }),
    ...(options.caCerts !== undefined && { ca: [...tls.rootCertificates, ...options.caCerts] }),
    ...(options.cert !== undefined && options.key !== undefined &&
      { cert: options.cert, key: options.key }),
  });
  const { promise, resolve, reject } = Promise.withResolvers<Probe>();
  const timer = setTimeout(
    () => reject(new Error(`no answer within ${timeout} ms`)),
    timeout,
  );
  let tcp = 0;
  let handshake = 0;
  let received = new Uint8Array(0);
  socket.once("connect", () => tcp = performance.now() - start);
  socket.once("secureConnect", () => {
    handshake = performance.now() - start - tcp;
    const body = new TextEncoder().encode(JSON.stringify({
      jsonrpc: "2.0",
      id: 1,
      method: "rpc.hello",
      params: { extensions: OFFERED_EXTENSIONS },
    }));
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length);
    frame.set(body, 4);
    socket.write(frame);
  });
  socket.on("data", (chunk: Uint8Array) => {
    const joined = new Uint8Array(received.length + chunk.length);
    joined.set(received);
    joined.set(chunk, received.length);
    received = joined;
    if (received.length < 4) return;
    const length = new DataView(received.buffer).getUint32(0);
    if (length > MAX_HELLO_BYTES) {
      return reject(new Error(`its rpc.hello answer has ${length} bytes`));
    }
    if (received.length < 4 + length) return;
    let answer: unknown;
    try {
      answer = JSON.parse(new TextDecoder().decode(received.subarray(4, 4 + length)));
    } catch {
      return reject(new Error("its rpc.hello answer is not JSON"));
    }
    if (answer === null || typeof answer !== "object") {
      return reject(new Error("its rpc.hello answer is not a JSON-RPC response"));
    }
    resolve({
      tcp,
      tls: handshake,
      protocol: socket.getProtocol(),
      certificate: socket.getPeerCertificate(),
      hello: answer as Probe["hello"],
    });
  });
  socket.once("error", reject);
  socket.once("close", () => reject(new Error("the server closed the connection")));
  return promise.finally(() => {
    clearTimeout(timer);
    socket.destroy();
  });
}
