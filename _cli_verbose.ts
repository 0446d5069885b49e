// `call --verbose`: what happened on the way to the result, on stderr, each line as it happens:
// every connection attempt with its TCP connect and TLS handshake times, the TLS version and the
// server's certificate (subject, issuer, names, expiry), connect() as a whole (with rpc.hello and
// the token), the extensions agreed in that rpc.hello, and the call's time. All of it from the one
// connection the call goes over: the dialer is the client's own, on node:tls (which reads the
// server's certificate, where Deno.TlsConn cannot), and the hello's answer is read as it passes.

import type tls from "node:tls";
import {
  type ClientConnection,
  type Dialer,
  tlsDialer,
  type TlsDialOptions,
  type TlsHandshake,
} from "./_dial.ts";
import { escapeText } from "./_format.ts";
import { readCertificate } from "./_x509_read.ts";
import { readCertificateIdentity } from "./_x509_identity.ts";
import { formatAddr, reason } from "./_util.ts";

/** The extensions the CLI's client offers in rpc.hello (connect()'s default, rich values on). */
const OFFERED_EXTENSIONS: readonly string[] = ["rich"];

/** The most bytes read past for the rpc.hello answer: the real one is some 60 bytes. */
const MAX_HELLO_BYTES = 64 * 1024;

const DAY_MS = 86_400_000;

/** What the server answered to rpc.hello: its result, or its error. */
type Hello = { result?: unknown; error?: { code?: unknown; message?: unknown } };

/** Milliseconds since `start`, for a line: `3.2 ms`. */
function since(start: number): string {
  return `${(performance.now() - start).toFixed(1)} ms`;
}

/** The lines of `call --verbose`, written as they happen. */
export class VerboseLog {
  #write: (line: string) => void;
  /** The answer to rpc.hello on the connection that opened, once read. */
  #hello: Hello | undefined;
  #helloRead = false;

  /** @param write Writes one line; by default to stderr, after `* ` as curl does. */
  constructor(write: (line: string) => void = (line) => console.error(`* ${line}`)) {
    this.#write = write;
  }

  /**
   * The client's default TLS dialer, on node:tls: each attempt logged with its times and what its
   * handshake settled, or its failure; the first answer each connection reads (rpc.hello's) kept.
   */
  dialer(options: TlsDialOptions): Dialer {
    const last: { handshake?: TlsHandshake | undefined } = {};
    const dial = tlsDialer({ ...options, onHandshake: (settled) => last.handshake = settled });
    return async (signal, endpoint) => {
      const target = escapeText(formatAddr(endpoint));
      const start = performance.now();
      last.handshake = undefined;
      this.#write(`connecting to ${target}`);
      let conn: ClientConnection;
      try {
        conn = await dial(signal, endpoint);
      } catch (error) {
        this.#write(`${target}: failed after ${since(start)}: ${escapeText(reason(error))}`);
        throw error;
      }
      const handshake = last.handshake as TlsHandshake | undefined; // set by the dial
      if (handshake === undefined) {
        this.#write(`${target}: TCP connect and TLS handshake took ${since(start)}`);
      } else {
        const { tcp, tls, protocol, certificate } = handshake;
        this.#write(
          `${target}: TCP connect ${tcp.toFixed(1)} ms, TLS handshake ${tls.toFixed(1)} ms ` +
            `(${escapeText(protocol ?? "TLS")})`,
        );
        this.#write(`server certificate: ${describeCertificate(certificate)}`);
      }
      this.#hello = undefined;
      this.#helloRead = false;
      return new FirstAnswerTap(conn, (answer) => {
        this.#hello = answer;
        this.#helloRead = true;
      });
    };
  }

  /** connect() resolved, `start` being when it was called; then what its rpc.hello agreed. */
  connected(start: number): void {
    this.#write(`connected in ${since(start)} (connect() as a whole: TCP, TLS, rpc.hello, token)`);
    this.#write(
      `extensions: ${
        this.#helloRead && this.#hello !== undefined
          ? describeHello(this.#hello)
          : "unknown (the server's answer to rpc.hello was not read)"
      }`,
    );
  }

  /** The call of `method` answered, `start` being when it was made. */
  called(method: string, start: number): void {
    this.#write(`call "${escapeText(method)}" took ${since(start)}`);
  }
}

/**
 * A connection that hands the first frame it reads (the answer to rpc.hello, the client's first
 * request) to `onAnswer`, parsed, and otherwise passes everything through untouched. It gives up
 * quietly on a frame that is not JSON, not the hello's answer (id 0), or larger than
 * MAX_HELLO_BYTES: the client reads the frame as it would anyway.
 */
class FirstAnswerTap implements ClientConnection {
  #conn: ClientConnection;
  #onAnswer: ((answer: Hello | undefined) => void) | undefined;
  #seen = new Uint8Array(0);

  constructor(conn: ClientConnection, onAnswer: (answer: Hello | undefined) => void) {
    this.#conn = conn;
    this.#onAnswer = onAnswer;
  }

  async read(buffer: Uint8Array): Promise<number | null> {
    const count = await this.#conn.read(buffer);
    if (this.#onAnswer !== undefined && count !== null) this.#look(buffer.subarray(0, count));
    return count;
  }

  #look(bytes: Uint8Array): void {
    const seen = new Uint8Array(this.#seen.length + bytes.length);
    seen.set(this.#seen);
    seen.set(bytes, this.#seen.length);
    this.#seen = seen;
    if (seen.length < 4) return;
    const length = new DataView(seen.buffer).getUint32(0);
    if (length > MAX_HELLO_BYTES) return this.#done(undefined);
    if (seen.length < 4 + length) return;
    let answer: unknown;
    try {
      answer = JSON.parse(new TextDecoder().decode(seen.subarray(4, 4 + length)));
    } catch {
      return this.#done(undefined);
    }
    const hello = answer !== null && typeof answer === "object" &&
        (answer as { id?: unknown }).id === 0
      ? answer as Hello
      : undefined;
    this.#done(hello);
  }

  #done(answer: Hello | undefined): void {
    this.#onAnswer?.(answer);
    this.#onAnswer = undefined;
    this.#seen = new Uint8Array(0);
  }

  write(bytes: Uint8Array): Promise<number> {
    return this.#conn.write(bytes);
  }

  close(): void {
    this.#conn.close();
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
function describeHello(hello: Hello): string {
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
