/**
 * The names development certificates are for: the hosts of a server certificate, parsed and
 * checked against an existing certificate's subjectAltName, and the common name of a client
 * certificate. Private to tlsrpc.
 *
 * @example Parse the hosts of a server certificate
 * ```ts
 * import { serverNames } from "./_x509_names.ts";
 *
 * const names = serverNames(["dev.example.test", "[fd00::1]"]);
 * console.log(names.map((name) => name.key)); // ["dns:localhost", "ip:127.0.0.1", ...]
 * ```
 *
 * @module
 */

import { parseDer, readOid } from "./_der_read.ts";
import { OID } from "./_x509_oid.ts";
import type { Certificate } from "./_x509_read.ts";

// The hosts every server certificate covers, before the ones a caller adds.
const DEFAULT_HOSTS = ["localhost", "127.0.0.1", "::1"] as const;

/** RFC 5280's ub-common-name: longer common names are not interoperable. */
export const MAX_COMMON_NAME = 64;

/** A subjectAltName entry, with a key that is equal for equal names. */
export type HostName =
  | { readonly kind: "dns"; readonly name: string; readonly key: string }
  | { readonly kind: "ip"; readonly bytes: Uint8Array; readonly key: string };

/**
 * Parses the hosts a server certificate covers: the default ones, then the extra ones, each once.
 *
 * @param extra DNS names (optionally `*.`) and IP addresses (IPv6 optionally bracketed).
 * @returns The names, in order.
 */
export function serverNames(extra: readonly string[]): HostName[] {
  const byKey = new Map<string, HostName>();
  for (const host of [...DEFAULT_HOSTS, ...extra]) {
    const name = parseHost(host);
    if (!byKey.has(name.key)) byKey.set(name.key, name);
  }
  return [...byKey.values()];
}

function parseHost(host: string): HostName {
  const ip = parseIp(host);
  if (ip !== undefined) return ipName(ip);
  const dns = host.toLowerCase().replace(/\.$/, "");
  const label = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";
  const valid = new RegExp(`^(?:\\*\\.)?${label}(?:\\.${label})*$`);
  // A name of digits and dots only would be read as a malformed IPv4 address by some clients.
  if (dns.length > 253 || !valid.test(dns) || /^[0-9.]+$/.test(dns)) {
    throw new TypeError(
      `Cannot make server certificate: host "${host}" is neither a DNS name nor an IP address`,
    );
  }
  return dnsName(dns);
}

function dnsName(name: string): HostName {
  return { kind: "dns", name, key: `dns:${name}` };
}

function ipName(bytes: Uint8Array): HostName {
  return { kind: "ip", bytes, key: `ip:${Array.from(bytes).join(".")}` };
}

function parseIp(text: string): Uint8Array | undefined {
  const v4 = parseIpv4(text);
  if (v4 !== undefined) return v4;
  const bare = text.startsWith("[") && text.endsWith("]") ? text.slice(1, -1) : text;
  return bare.includes(":") ? parseIpv6(bare) : undefined;
}

function parseIpv4(text: string): Uint8Array | undefined {
  const octet = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
  const match = new RegExp(`^${octet}\\.${octet}\\.${octet}\\.${octet}$`).exec(text);
  return match === null ? undefined : Uint8Array.from(match.slice(1), Number);
}

function parseIpv6(text: string): Uint8Array | undefined {
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = ipv6Groups(halves[0]!);
  const tail = halves.length === 2 ? ipv6Groups(halves[1]!) : [];
  if (head === undefined || tail === undefined) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...new Array<number>(halves.length === 1 ? 0 : missing).fill(0), ...tail];
  const bytes = new Uint8Array(16);
  for (const [i, group] of all.entries()) {
    bytes[2 * i] = group >> 8;
    bytes[2 * i + 1] = group & 0xff;
  }
  return bytes;
}

/** The 16-bit groups of one side of an IPv6 address's `::`; the last may be dotted IPv4. */
function ipv6Groups(part: string): number[] | undefined {
  if (part === "") return [];
  const out: number[] = [];
  const pieces = part.split(":");
  for (const [i, piece] of pieces.entries()) {
    const v4 = i === pieces.length - 1 ? parseIpv4(piece) : undefined;
    if (v4 !== undefined) {
      out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else if (/^[0-9a-fA-F]{1,4}$/.test(piece)) {
      out.push(parseInt(piece, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

/**
 * Checks the common name of a client certificate.
 *
 * @param name The name: 1 to 64 characters, none of them a control character.
 */
export function checkClientName(name: string): void {
  // deno-lint-ignore no-control-regex
  if (name.length === 0 || [...name].length > MAX_COMMON_NAME || /[\x00-\x1f\x7f]/.test(name)) {
    throw new TypeError(
      `Cannot make client certificate: name "${name}" is not 1 to ${MAX_COMMON_NAME} printable characters`,
    );
  }
}

/**
 * Tells whether a server certificate is for serverAuth and covers every host.
 *
 * @param cert The certificate.
 * @param hosts The hosts it must cover, from {@linkcode serverNames}.
 * @returns Whether it does.
 */
export function coversHosts(cert: Certificate, hosts: readonly HostName[]): boolean {
  const have = new Set(subjectAltNames(cert).map((host) => host.key));
  return hasServerAuth(cert) && hosts.every((host) => have.has(host.key));
}

function hasServerAuth(cert: Certificate): boolean {
  const eku = cert.extensions.get(OID.extKeyUsage);
  return eku !== undefined &&
    parseDer(eku.value).children.some((node) => readOid(node) === OID.serverAuth);
}

function subjectAltNames(cert: Certificate): HostName[] {
  const san = cert.extensions.get(OID.subjectAltName);
  if (san === undefined) return [];
  const names: HostName[] = [];
  for (const node of parseDer(san.value).children) {
    if (node.tag === 0x82) {
      names.push(dnsName(new TextDecoder().decode(node.contents).toLowerCase()));
    } else if (node.tag === 0x87) {
      names.push(ipName(node.contents));
    }
  }
  return names;
}
