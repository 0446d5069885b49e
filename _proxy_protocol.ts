// The PROXY protocol (HAProxy's proxy-protocol.txt), versions 1 and 2: the header a balancer
// (HAProxy `send-proxy`, `send-proxy-v2`; nginx `proxy_protocol on`) writes at the start of each
// connection it relays, before the client's first byte, naming the client's address. The parser
// is a pure function over the bytes received so far; `readProxyHeader` runs it over a node
// stream, which the "node" transport does on each raw socket before the TLS handshake
// (_transport_node.ts).

import { reason } from "./_util.ts";

/** An address and port from a header. */
export interface ProxyAddress {
  readonly hostname: string;
  readonly port: number;
}

/** A complete header. */
export interface ProxyHeader {
  /** The protocol version: 1 (text) or 2 (binary). */
  readonly version: 1 | 2;
  /**
   * `"proxy"` for a relayed connection; `"local"` for the balancer's own (a health check, v2
   * only), whose socket address is the real one.
   */
  readonly command: "proxy" | "local";
  /**
   * The client's address: `undefined` when the header names none to use (v1 `UNKNOWN`, v2
   * `LOCAL` or `UNSPEC`), and the socket's own address stands.
   */
  readonly source: ProxyAddress | undefined;
  /** The address the client connected to, at the balancer; `undefined` as for `source`. */
  readonly destination: ProxyAddress | undefined;
  /** The header's length in bytes: what follows it is the client's. */
  readonly length: number;
}

/**
 * What the bytes received so far hold: a complete header, the valid beginning of one (wait for
 * more), or something that is no header (`reason` says why, for a log line).
 */
export type ProxyParse =
  | { readonly kind: "header"; readonly header: ProxyHeader }
  | { readonly kind: "incomplete" }
  | { readonly kind: "invalid"; readonly reason: string };

/**
 * A v1 line's longest length, CRLF included: the specification's bound, which the longest TCP6
 * line fits.
 */
export const MAX_V1_BYTES = 107;

/**
 * The longest v2 address block, TLVs included, accepted: an IPv6 block is 36 bytes, and the TLVs
 * balancers send (ALPN, authority, a cloud's endpoint id, SSL details) a few dozen more. A longer
 * one is refused as soon as its length field arrives, before it is buffered.
 */
export const MAX_V2_LENGTH = 512;

/** The 12 bytes every v2 header begins with. */
export const V2_SIGNATURE: Uint8Array = new Uint8Array([
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
]);

/** The fixed part of a v2 header: the signature, version and command, family, length. */
const V2_FIXED_BYTES = 16;

const V1_PREFIX = new TextEncoder().encode("PROXY ");
const CR = 0x0d;
const LF = 0x0a;

/** The v2 families this server takes addresses from: TCP over IPv4 and over IPv6. */
const V2_TCP4 = 0x11;
const V2_TCP6 = 0x21;
/** The v2 family byte for "no address" (a LOCAL command's, or a balancer's unknown family). */
const V2_UNSPEC = 0x00;

/**
 * Reads a PROXY header (v1 or v2) from the first bytes of a connection. Call it again with every
 * byte received so far until it answers other than `"incomplete"`; it decides as early as the
 * bytes allow, so garbage is refused at its first wrong byte and an oversized v2 header at its
 * length field.
 */
export function parseProxyHeader(bytes: Uint8Array): ProxyParse {
  if (bytes.length === 0) return INCOMPLETE;
  if (startsLike(bytes, V2_SIGNATURE)) {
    return bytes.length < V2_SIGNATURE.length ? INCOMPLETE : parseV2(bytes);
  }
  if (startsLike(bytes, V1_PREFIX)) {
    return bytes.length < V1_PREFIX.length ? INCOMPLETE : parseV1(bytes);
  }
  return invalid(`no PROXY header: the connection begins with ${describe(bytes)}`);
}

const INCOMPLETE: ProxyParse = { kind: "incomplete" };

function invalid(reason: string): ProxyParse {
  return { kind: "invalid", reason };
}

/** Whether `bytes` and `prefix` agree over the shorter of the two. */
function startsLike(bytes: Uint8Array, prefix: Uint8Array): boolean {
  const n = Math.min(bytes.length, prefix.length);
  for (let i = 0; i < n; i++) if (bytes[i] !== prefix[i]) return false;
  return true;
}

// --- version 1 -----------------------------------------------------------------------------------

function parseV1(bytes: Uint8Array): ProxyParse {
  const limit = Math.min(bytes.length, MAX_V1_BYTES);
  let end = -1;
  for (let i = V1_PREFIX.length; i < limit; i++) {
    const byte = bytes[i]!;
    if (byte === CR) {
      if (i + 2 > MAX_V1_BYTES) break;
      if (i + 1 === bytes.length) return INCOMPLETE;
      if (bytes[i + 1] !== LF) return invalid("v1 header: a CR not followed by LF");
      end = i;
      break;
    }
    if (byte === LF) return invalid("v1 header: a LF without a CR before it");
    // Printable ASCII only: a binary byte means this is no header, and waiting for a CRLF that
    // may never come would only give garbage the whole deadline.
    if (byte < 0x20 || byte > 0x7e) {
      return invalid(`v1 header: byte 0x${hex(byte)} at offset ${i} (no CRLF before it)`);
    }
  }
  if (end < 0) {
    return bytes.length >= MAX_V1_BYTES
      ? invalid(`v1 header: no CRLF within ${MAX_V1_BYTES} bytes`)
      : INCOMPLETE;
  }
  const line = String.fromCharCode(...bytes.subarray(0, end));
  const length = end + 2;
  const fields = line.split(" ");
  const protocol = fields[1]!;
  if (protocol === "UNKNOWN") {
    // The rest of the line is the balancer's to fill and the receiver's to ignore.
    return header({
      version: 1,
      command: "proxy",
      source: undefined,
      destination: undefined,
      length,
    });
  }
  if (protocol !== "TCP4" && protocol !== "TCP6") {
    return invalid(`v1 header: unknown protocol ${quote(protocol)} (TCP4, TCP6 or UNKNOWN)`);
  }
  if (fields.length !== 6) {
    return invalid(
      `v1 header: ${
        fields.length - 2
      } fields after ${protocol}, not 4 (source, destination, ports)`,
    );
  }
  const [, , srcText, dstText, sportText, dportText] = fields as [
    string,
    string,
    string,
    string,
    string,
    string,
  ];
  const family = protocol === "TCP4" ? "IPv4" : "IPv6";
  const src = protocol === "TCP4" ? parseIpv4(srcText) : parseIpv6(srcText);
  if (src === undefined) return invalid(`v1 header: bad ${family} source ${quote(srcText)}`);
  const dst = protocol === "TCP4" ? parseIpv4(dstText) : parseIpv6(dstText);
  if (dst === undefined) return invalid(`v1 header: bad ${family} destination ${quote(dstText)}`);
  const sport = parsePort(sportText);
  if (sport === undefined) return invalid(`v1 header: bad source port ${quote(sportText)}`);
  const dport = parsePort(dportText);
  if (dport === undefined) return invalid(`v1 header: bad destination port ${quote(dportText)}`);
  return header({
    version: 1,
    command: "proxy",
    source: { hostname: formatIp(src), port: sport },
    destination: { hostname: formatIp(dst), port: dport },
    length,
  });
}

function header(header: ProxyHeader): ProxyParse {
  return { kind: "header", header };
}

/** A decimal port, 0 to 65535, without a sign or leading zeros. */
function parsePort(text: string): number | undefined {
  if (!/^(0|[1-9][0-9]{0,4})$/.test(text)) return undefined;
  const port = Number(text);
  return port <= 65535 ? port : undefined;
}

/**
 * Dotted-decimal IPv4 as four bytes. Leading zeros are refused, as inet_pton refuses them: other
 * readers take them for octal.
 */
export function parseIpv4(text: string): Uint8Array | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i]!;
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) return undefined;
    const value = Number(part);
    if (value > 255) return undefined;
    bytes[i] = value;
  }
  return bytes;
}

/**
 * An IPv6 address in any RFC 4291 text form (`::` once at most, a trailing dotted IPv4 allowed,
 * no zone), as 16 bytes.
 */
export function parseIpv6(text: string): Uint8Array | undefined {
  if (text.length > 45) return undefined;
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (half: string): number[] | undefined => {
    if (half === "") return [];
    const out: number[] = [];
    const parts = half.split(":");
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i]!;
      if (i === parts.length - 1 && part.includes(".")) {
        const v4 = parseIpv4(part);
        if (v4 === undefined) return undefined;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else if (/^[0-9a-fA-F]{1,4}$/.test(part)) {
        out.push(Number.parseInt(part, 16));
      } else {
        return undefined;
      }
    }
    return out;
  };
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  // "::" stands for at least one group; without it there must be eight.
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const all = [...head, ...new Array<number>(missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  all.forEach((group, i) => {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  });
  return bytes;
}

// --- version 2 -----------------------------------------------------------------------------------

function parseV2(bytes: Uint8Array): ProxyParse {
  const versionCommand = bytes[12];
  if (versionCommand === undefined) return INCOMPLETE;
  if (versionCommand >> 4 !== 2) {
    return invalid(`v2 header: version ${versionCommand >> 4}, not 2`);
  }
  const commandCode = versionCommand & 0x0f;
  if (commandCode > 1) return invalid(`v2 header: unknown command 0x${hex(commandCode)}`);
  const command = commandCode === 0 ? "local" : "proxy";
  if (bytes.length < V2_FIXED_BYTES) return INCOMPLETE;
  const family = bytes[13]!;
  const length = (bytes[14]! << 8) | bytes[15]!;
  if (length > MAX_V2_LENGTH) {
    return invalid(`v2 header: ${length} bytes of addresses and TLVs, more than ${MAX_V2_LENGTH}`);
  }
  const addressBytes = family === V2_TCP4 ? 12 : family === V2_TCP6 ? 36 : 0;
  if (command === "proxy" && addressBytes === 0 && family !== V2_UNSPEC) {
    return invalid(
      `v2 header: family and protocol 0x${hex(family)}, not TCP over IPv4 (0x11) or IPv6 (0x21)`,
    );
  }
  if (command === "proxy" && length < addressBytes) {
    return invalid(`v2 header: ${length} bytes, too few for the addresses (${addressBytes})`);
  }
  const total = V2_FIXED_BYTES + length;
  if (bytes.length < total) return INCOMPLETE;
  if (command === "local" || addressBytes === 0) {
    // A LOCAL header's addresses, if any, are to be ignored, as are an UNSPEC one's bytes: the
    // socket's addresses are the real ones.
    return header({
      version: 2,
      command,
      source: undefined,
      destination: undefined,
      length: total,
    });
  }
  const body = bytes.subarray(V2_FIXED_BYTES, total);
  const tlvError = checkTlvs(body.subarray(addressBytes));
  if (tlvError !== undefined) return invalid(`v2 header: ${tlvError}`);
  const size = addressBytes === 12 ? 4 : 16;
  const ports = new DataView(body.buffer, body.byteOffset + 2 * size, 4);
  return header({
    version: 2,
    command,
    source: { hostname: formatIp(body.subarray(0, size)), port: ports.getUint16(0) },
    destination: { hostname: formatIp(body.subarray(size, 2 * size)), port: ports.getUint16(2) },
    length: total,
  });
}

/**
 * Why the TLV area (type, 2-byte length, value, repeated) is malformed, or `undefined`. The
 * values are skipped: nothing here needs them.
 */
function checkTlvs(tlvs: Uint8Array): string | undefined {
  let offset = 0;
  while (offset < tlvs.length) {
    if (offset + 3 > tlvs.length) return `a TLV cut short at offset ${offset}`;
    const length = (tlvs[offset + 1]! << 8) | tlvs[offset + 2]!;
    if (offset + 3 + length > tlvs.length) {
      return `TLV 0x${hex(tlvs[offset]!)} of ${length} bytes runs past the header's end`;
    }
    offset += 3 + length;
  }
  return undefined;
}

// --- addresses as text ---------------------------------------------------------------------------

/**
 * An address's text: dotted decimal for 4 bytes; for 16, the RFC 5952 form (lower case, the
 * longest run of two or more zero groups as `::`, the first of equal runs), an IPv4-mapped one as
 * `::ffff:1.2.3.4`.
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  if (groups.slice(0, 5).every((group) => group === 0) && groups[5] === 0xffff) {
    return `::ffff:${bytes.subarray(12).join(".")}`;
  }
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const text = (from: number, to: number) =>
    groups.slice(from, to).map((group) => group.toString(16)).join(":");
  if (bestStart < 0) return text(0, 8);
  return `${text(0, bestStart)}::${text(bestStart + bestLength, 8)}`;
}

// --- describing what came instead ----------------------------------------------------------------

/** A short description of a connection's first bytes, for the line about a missing header. */
function describe(bytes: Uint8Array): string {
  // 0x16 0x03: a TLS handshake record, what a client sends when no balancer is in between.
  if (bytes[0] === 0x16 && (bytes.length < 2 || bytes[1] === 0x03)) {
    return "a TLS handshake (a client not behind the balancer, or a balancer not sending PROXY headers)";
  }
  const head = bytes.subarray(0, 16);
  if (head.every((byte) => byte === CR || byte === LF || (byte >= 0x20 && byte <= 0x7e))) {
    return `${quote(String.fromCharCode(...head))}${bytes.length > head.length ? "..." : ""}`;
  }
  return `bytes ${[...head.subarray(0, 8)].map(hex).join(" ")}${bytes.length > 8 ? " ..." : ""}`;
}

/** A string from the wire, quoted and escaped, at most 40 characters of it. */
function quote(text: string): string {
  return JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}...` : text);
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

// --- reading a header off a stream ---------------------------------------------------------------

/** The part of a node:net socket that {@linkcode readProxyHeader} uses. */
export interface HeaderStream {
  read(): Uint8Array | null;
  unshift(chunk: Uint8Array): void;
  on(event: "readable" | "end" | "close", listener: () => void): unknown;
  on(event: "error", listener: (error: Error) => void): unknown;
  off(event: "readable" | "end" | "close", listener: () => void): unknown;
  off(event: "error", listener: (error: Error) => void): unknown;
}

/** Why a connection has no PROXY header: a missing or malformed one, or the peer gone. */
export interface NoProxyHeader {
  /** `"protocol"` for what is no header, `"reset"` when the peer left before its end. */
  readonly failure: "protocol" | "reset";
  /** Why, for a log line. */
  readonly reason: string;
}

/**
 * Reads a PROXY header off a node stream (a raw socket, in paused mode from then on) and pushes
 * back (`unshift`) what came after it, for whoever reads the stream next. Resolves with the
 * header, or with why there is none, as soon as the bytes tell; soon after the stream is
 * destroyed; never rejects. What it buffers is bounded by the parser: it decides within 107 bytes
 * (v1) or 16 + 512 (v2) of the first, plus the last chunk read.
 */
export function readProxyHeader(stream: HeaderStream): Promise<ProxyHeader | NoProxyHeader> {
  const { promise, resolve } = Promise.withResolvers<ProxyHeader | NoProxyHeader>();
  let received = new Uint8Array(0);
  const finish = (outcome: ProxyHeader | NoProxyHeader) => {
    stream.off("readable", onReadable);
    stream.off("end", onEnd);
    stream.off("close", onEnd);
    stream.off("error", onError);
    resolve(outcome);
  };
  const onReadable = () => {
    let chunk: Uint8Array | null;
    while ((chunk = stream.read()) !== null) {
      const joined = new Uint8Array(received.length + chunk.length);
      joined.set(received);
      joined.set(chunk, received.length);
      received = joined;
      const parse = parseProxyHeader(received);
      if (parse.kind === "incomplete") continue;
      if (parse.kind === "invalid") return finish({ failure: "protocol", reason: parse.reason });
      const rest = received.subarray(parse.header.length);
      if (rest.length > 0) stream.unshift(rest);
      return finish(parse.header);
    }
  };
  const onEnd = () => {
    const when = received.length === 0 ? "before its first byte" : `after ${received.length} bytes`;
    finish({ failure: "reset", reason: `the connection closed ${when}, with no complete header` });
  };
  const onError = (error: Error) =>
    finish({ failure: "reset", reason: `the connection broke: ${reason(error)}` });
  stream.on("readable", onReadable);
  stream.on("end", onEnd);
  stream.on("close", onEnd);
  stream.on("error", onError);
  return promise;
}
