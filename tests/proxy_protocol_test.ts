// Tests of the PROXY protocol: the header parser (_proxy_protocol.ts) field by field, a byte at a
// time, and against garbage; and a server with `proxyProtocol` on real sockets, behind a balancer
// made here that sends the header in the same write as the client's first bytes, as HAProxy does.

import assert from "node:assert/strict";
import {
  formatIp,
  MAX_V1_BYTES,
  MAX_V2_LENGTH,
  parseIpv6,
  parseProxyHeader,
  type ProxyHeader,
  type ProxyParse,
  V2_SIGNATURE,
} from "../_proxy_protocol.ts";
import { callContext } from "../context.ts";
import { type RpcServer, serve } from "../server.ts";
import { formatAddr } from "../_util.ts";
import {
  certs,
  closeQuietly,
  delay,
  RawClient,
  recordClientHello,
  request,
  TcpClient,
  watchedOptions,
  whileGoodClientCalls,
  within,
  writeAll,
} from "./_util.ts";
import { concat } from "./portable/_data.ts";

const encoder = new TextEncoder();

/** The bytes of a v1 line, CRLF added. */
function v1(line: string): Uint8Array {
  return encoder.encode(`${line}\r\n`);
}

/** A v2 header: `command` 0x21 (PROXY) or 0x20 (LOCAL), `family`, the address block, TLVs. */
function v2(
  family: number,
  addresses: Uint8Array,
  options: { command?: number; tlvs?: Uint8Array; length?: number } = {},
): Uint8Array {
  const tlvs = options.tlvs ?? new Uint8Array(0);
  const length = options.length ?? addresses.length + tlvs.length;
  const bytes = new Uint8Array(16 + addresses.length + tlvs.length);
  bytes.set(V2_SIGNATURE);
  bytes[12] = options.command ?? 0x21;
  bytes[13] = family;
  new DataView(bytes.buffer).setUint16(14, length);
  bytes.set(addresses, 16);
  bytes.set(tlvs, 16 + addresses.length);
  return bytes;
}

/** A v2 address block: source, destination, source port, destination port. */
function addressBlock(source: number[], destination: number[], sport: number, dport: number) {
  const bytes = new Uint8Array(source.length * 2 + 4);
  bytes.set(source);
  bytes.set(destination, source.length);
  new DataView(bytes.buffer).setUint16(source.length * 2, sport);
  new DataView(bytes.buffer).setUint16(source.length * 2 + 2, dport);
  return bytes;
}

/** The 16 bytes of an IPv6 address in text. */
function ipv6(text: string): number[] {
  const bytes = parseIpv6(text);
  assert.ok(bytes !== undefined, text);
  return [...bytes];
}

/** One TLV: type, 2-byte length, value. */
function tlv(type: number, value: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(3 + value.length);
  bytes[0] = type;
  new DataView(bytes.buffer).setUint16(1, value.length);
  bytes.set(value, 3);
  return bytes;
}

function headerOf(parse: ProxyParse): ProxyHeader {
  assert.equal(parse.kind, "header", JSON.stringify(parse));
  return (parse as { header: ProxyHeader }).header;
}

function reasonOf(parse: ProxyParse): string {
  assert.equal(parse.kind, "invalid", JSON.stringify(parse));
  return (parse as { reason: string }).reason;
}

const V2_TCP4 = v2(0x11, addressBlock([203, 0, 113, 7], [192, 0, 2, 1], 4711, 443));
const V2_TCP6 = v2(0x21, addressBlock(ipv6("2001:db8::7"), ipv6("2001:db8::1"), 4711, 443));
const V2_LOCAL = v2(0x00, new Uint8Array(0), { command: 0x20 });

// --- the parser ------------------------------------------------------------------------------------

Deno.test("parseProxyHeader() reads every field of a complete header", async (t) => {
  const tcp4 = {
    source: { hostname: "203.0.113.7", port: 4711 },
    destination: { hostname: "192.0.2.1", port: 443 },
  };
  const none = { source: undefined, destination: undefined };
  const cases: [string, Uint8Array, Omit<ProxyHeader, "length">][] = [
    [
      "v1 TCP4",
      v1("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443"),
      { version: 1, command: "proxy", ...tcp4 },
    ],
    ["v1 TCP6, in its canonical form", v1("PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 65535 0"), {
      version: 1,
      command: "proxy",
      source: { hostname: "2001:db8::7", port: 65535 },
      destination: { hostname: "::1", port: 0 },
    }],
    ["v1 TCP6 with an IPv4-mapped address", v1("PROXY TCP6 ::ffff:192.0.2.9 ::1 1 2"), {
      version: 1,
      command: "proxy",
      source: { hostname: "::ffff:192.0.2.9", port: 1 },
      destination: { hostname: "::1", port: 2 },
    }],
    ["v1 UNKNOWN", v1("PROXY UNKNOWN"), { version: 1, command: "proxy", ...none }],
    [
      "v1 UNKNOWN with addresses, ignored",
      v1("PROXY UNKNOWN ffff:: 1.2.3.4 1 2"),
      { version: 1, command: "proxy", ...none },
    ],
    ["v2 PROXY TCP over IPv4", V2_TCP4, { version: 2, command: "proxy", ...tcp4 }],
    ["v2 PROXY TCP over IPv6", V2_TCP6, {
      version: 2,
      command: "proxy",
      source: { hostname: "2001:db8::7", port: 4711 },
      destination: { hostname: "2001:db8::1", port: 443 },
    }],
    ["v2 LOCAL (a health check): no address", V2_LOCAL, { version: 2, command: "local", ...none }],
    [
      "v2 LOCAL with addresses, ignored",
      v2(0x11, addressBlock([10, 0, 0, 1], [10, 0, 0, 2], 1, 2), { command: 0x20 }),
      { version: 2, command: "local", ...none },
    ],
    [
      "v2 PROXY UNSPEC: no address",
      v2(0x00, new Uint8Array(0)),
      { version: 2, command: "proxy", ...none },
    ],
    [
      "v2 with TLVs, skipped",
      v2(0x11, addressBlock([203, 0, 113, 7], [192, 0, 2, 1], 4711, 443), {
        tlvs: concat([
          tlv(0x01, encoder.encode("h2")), // ALPN
          tlv(0x04, new Uint8Array(0)), // NOOP, empty
          tlv(0xea, encoder.encode("\x01vpce-0123456789abcdef")), // AWS VPC endpoint id
        ]),
      }),
      { version: 2, command: "proxy", ...tcp4 },
    ],
  ];
  for (const [name, bytes, expected] of cases) {
    await t.step(name, () => {
      // What follows the header is the client's: it is neither read nor counted.
      const clientHello = new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
      const header = headerOf(parseProxyHeader(concat([bytes, clientHello])));
      assert.deepEqual(header, { ...expected, length: bytes.length });
    });
  }
});

Deno.test("parseProxyHeader() answers incomplete for every beginning of a header, arriving a byte at a time", async (t) => {
  const headers: [string, Uint8Array][] = [
    ["v1 TCP4", v1("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443")],
    ["v1 TCP6", v1("PROXY TCP6 2001:db8::7 2001:db8::1 4711 443")],
    ["v1 UNKNOWN", v1("PROXY UNKNOWN")],
    ["v2 TCP4", V2_TCP4],
    ["v2 TCP6", V2_TCP6],
    ["v2 LOCAL", V2_LOCAL],
    [
      "v2 with a TLV",
      v2(0x11, addressBlock([1, 2, 3, 4], [5, 6, 7, 8], 1, 2), {
        tlvs: tlv(0x02, encoder.encode("rpc.example.com")),
      }),
    ],
  ];
  for (const [name, bytes] of headers) {
    await t.step(name, () => {
      for (let n = 0; n < bytes.length; n++) {
        assert.deepEqual(parseProxyHeader(bytes.subarray(0, n)), { kind: "incomplete" }, `${n}`);
      }
      assert.equal(headerOf(parseProxyHeader(bytes)).length, bytes.length);
    });
  }
});

Deno.test("parseProxyHeader() refuses a malformed v1 header, naming what is wrong", async (t) => {
  const long = `PROXY UNKNOWN ${"x".repeat(MAX_V1_BYTES)}`;
  const cases: [string, Uint8Array, RegExp][] = [
    ["an unknown protocol", v1("PROXY TCP5 1.2.3.4 5.6.7.8 1 2"), /unknown protocol "TCP5"/],
    ["UDP", v1("PROXY UDP4 1.2.3.4 5.6.7.8 1 2"), /unknown protocol "UDP4"/],
    ["a source byte over 255", v1("PROXY TCP4 256.2.3.4 5.6.7.8 1 2"), /bad IPv4 source/],
    ["three bytes", v1("PROXY TCP4 1.2.3 5.6.7.8 1 2"), /bad IPv4 source "1\.2\.3"/],
    ["a leading zero", v1("PROXY TCP4 01.2.3.4 5.6.7.8 1 2"), /bad IPv4 source/],
    ["IPv6 under TCP4", v1("PROXY TCP4 ::1 5.6.7.8 1 2"), /bad IPv4 source/],
    ["a bad destination", v1("PROXY TCP4 1.2.3.4 5.6.7 1 2"), /bad IPv4 destination/],
    ["two ::", v1("PROXY TCP6 1::2::3 ::1 1 2"), /bad IPv6 source/],
    ["a five-digit group", v1("PROXY TCP6 12345:: ::1 1 2"), /bad IPv6 source/],
    ["nine groups", v1("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2"), /bad IPv6 source/],
    ["a zone", v1("PROXY TCP6 fe80::1%eth0 ::1 1 2"), /bad IPv6 source/],
    ["IPv4 under TCP6", v1("PROXY TCP6 1.2.3.4 ::1 1 2"), /bad IPv6 source/],
    ["a port over 65535", v1("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2"), /bad source port "65536"/],
    ["a negative port", v1("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2"), /bad source port/],
    ["a port with a leading zero", v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 02"), /bad destination port/],
    ["a field missing", v1("PROXY TCP4 1.2.3.4 5.6.7.8 1"), /3 fields after TCP4, not 4/],
    ["a field too many", v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3"), /5 fields after TCP4/],
    ["two spaces", v1("PROXY TCP4  1.2.3.4 5.6.7.8 1 2"), /fields after TCP4|bad IPv4/],
    ["a trailing space", v1("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 "), /5 fields after TCP4/],
    ["a CR without LF", encoder.encode("PROXY UNKNOWN\rX"), /a CR not followed by LF/],
    ["a LF without CR", encoder.encode("PROXY UNKNOWN\n"), /a LF without a CR/],
    ["a binary byte", encoder.encode("PROXY TCP4 \x00"), /byte 0x00 at offset 11/],
    ["no CRLF within 107 bytes", encoder.encode(long), /no CRLF within 107 bytes/],
    ["a 108-byte line", v1(long.slice(0, MAX_V1_BYTES - 1)), /no CRLF within 107 bytes/],
  ];
  for (const [name, bytes, reason] of cases) {
    await t.step(name, () => assert.match(reasonOf(parseProxyHeader(bytes)), reason));
  }
  await t.step("a 107-byte line is the longest accepted", () => {
    const line = v1(long.slice(0, MAX_V1_BYTES - 2));
    assert.equal(line.length, MAX_V1_BYTES);
    assert.equal(headerOf(parseProxyHeader(line)).length, MAX_V1_BYTES);
  });
});

Deno.test("parseProxyHeader() refuses a malformed v2 header as soon as its bytes tell", async (t) => {
  const tcp4 = addressBlock([1, 2, 3, 4], [5, 6, 7, 8], 1, 2);
  const cases: [string, Uint8Array, RegExp][] = [
    ["version 1 in the version nibble", v2(0x11, tcp4, { command: 0x11 }), /version 1, not 2/],
    ["an unknown command", v2(0x11, tcp4, { command: 0x22 }), /unknown command 0x02/],
    ["TCP over an unknown family", v2(0x41, tcp4), /family and protocol 0x41/],
    ["UDP over IPv4", v2(0x12, tcp4), /family and protocol 0x12/],
    ["a UNIX socket", v2(0x31, new Uint8Array(216)), /family and protocol 0x31/],
    ["a length too short for IPv4", v2(0x11, tcp4.subarray(0, 8)), /8 bytes, too few .* \(12\)/],
    ["a length too short for IPv6", v2(0x21, tcp4), /12 bytes, too few .* \(36\)/],
    [
      "a TLV cut short",
      v2(0x11, tcp4, { tlvs: new Uint8Array([0x01, 0x00]) }),
      /a TLV cut short at offset 0/,
    ],
    [
      "a TLV longer than the header",
      v2(0x11, tcp4, { tlvs: new Uint8Array([0x01, 0x00, 0x05, 0x68, 0x32]) }),
      /TLV 0x01 of 5 bytes runs past/,
    ],
  ];
  for (const [name, bytes, reason] of cases) {
    await t.step(name, () => assert.match(reasonOf(parseProxyHeader(bytes)), reason));
  }
  await t.step("a bad version at its 13th byte, before the rest", () => {
    const bytes = v2(0x11, tcp4, { command: 0x31 }).subarray(0, 13);
    assert.match(reasonOf(parseProxyHeader(bytes)), /version 3/);
  });
  await t.step(`a length over ${MAX_V2_LENGTH} at its length field, before the rest`, () => {
    const bytes = v2(0x11, tcp4, { length: MAX_V2_LENGTH + 1 }).subarray(0, 16);
    assert.match(
      reasonOf(parseProxyHeader(bytes)),
      /513 bytes of addresses and TLVs, more than 512/,
    );
    const most = v2(0x11, tcp4, { tlvs: tlv(0x04, new Uint8Array(MAX_V2_LENGTH - 15)) });
    assert.equal(headerOf(parseProxyHeader(most)).length, 16 + MAX_V2_LENGTH);
  });
});

Deno.test("parseProxyHeader() refuses what is no header at its first wrong byte, saying what it is", async (t) => {
  const clientHello = await recordClientHello();
  const cases: [string, Uint8Array, RegExp][] = [
    ["a TLS ClientHello", clientHello, /begins with a TLS handshake/],
    ["a TLS record's first byte", clientHello.subarray(0, 1), /begins with a TLS handshake/],
    [
      "HTTP",
      encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      /begins with "GET \/ HTTP\/1\.1\\r\\n"\.\.\./,
    ],
    ["one wrong letter", encoder.encode("X"), /no PROXY header: the connection begins with "X"$/],
    ["PROXY in lower case", encoder.encode("proxy TCP4"), /no PROXY header/],
    ["PROXY without its space", encoder.encode("PROXY\r\n"), /no PROXY header/],
    [
      "binary",
      new Uint8Array([0, 1, 2, 0xff, 4, 5, 6, 7, 8, 9]),
      /begins with bytes 00 01 02 ff 04 05 06 07 \.\.\./,
    ],
    ["a v2 signature gone wrong", encoder.encode("\r\n\r\n\0\r\nQUIX"), /no PROXY header/],
  ];
  for (const [name, bytes, reason] of cases) {
    await t.step(name, () => assert.match(reasonOf(parseProxyHeader(bytes)), reason));
  }
});

Deno.test("formatIp() writes IPv6 as RFC 5952 does, IPv4 in dotted decimal", async (t) => {
  const cases: [string, string][] = [
    ["::", "::"],
    ["0:0:0:0:0:0:0:1", "::1"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"], // the first of equal runs
    ["2001:db8:0:0:1:0:0:0", "2001:db8:0:0:1::"], // the longest run
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group stays
    ["fe80::1:2", "fe80::1:2"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"], // IPv4-mapped, in mixed notation
    ["::ffff:c000:201", "::ffff:192.0.2.1"],
    ["64:ff9b::192.0.2.1", "64:ff9b::c000:201"],
  ];
  for (const [text, expected] of cases) {
    await t.step(text, () => assert.equal(formatIp(parseIpv6(text)!), expected));
  }
  await t.step(
    "IPv4",
    () => assert.equal(formatIp(new Uint8Array([192, 0, 2, 255])), "192.0.2.255"),
  );
});

// --- a server behind a balancer --------------------------------------------------------------------

/**
 * A TCP balancer on 127.0.0.1 in front of `port`: each connection's first bytes go upstream in one
 * write after the header `header()` makes from the client's address (HAProxy's way), then bytes
 * are relayed both ways until either side closes.
 */
class Balancer implements AsyncDisposable {
  readonly #listener: Deno.TcpListener;
  readonly #conns = new Set<Deno.Conn>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;

  constructor(port: number, header: (client: Deno.NetAddr) => Uint8Array) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.#accepting = (async () => {
      for (;;) {
        let client: Deno.TcpConn;
        try {
          client = await listener.accept();
        } catch {
          return;
        }
        this.#track(this.#relay(client, port, header(client.remoteAddr)));
      }
    })();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    void task.finally(() => this.#tasks.delete(task));
  }

  async #relay(client: Deno.TcpConn, port: number, header: Uint8Array): Promise<void> {
    this.#conns.add(client);
    let upstream: Deno.TcpConn | undefined;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port });
      this.#conns.add(upstream);
      const first = new Uint8Array(16 * 1024);
      const count = await client.read(first);
      if (count === null) return;
      await writeAll(upstream, concat([header, first.subarray(0, count)]));
      await Promise.race([pump(client, upstream), pump(upstream, client)]);
    } catch {
      // Either side went away.
    } finally {
      for (const conn of [client, upstream]) {
        if (conn === undefined) continue;
        closeQuietly(conn);
        this.#conns.delete(conn);
      }
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    closeQuietly(this.#listener);
    await this.#accepting;
    for (const conn of this.#conns) closeQuietly(conn);
    while (this.#tasks.size > 0) await Promise.all(this.#tasks);
  }
}

/** Copies `from` to `to` until `from` ends or either fails. */
async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buffer = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const count = await from.read(buffer);
      if (count === null) return;
      await writeAll(to, buffer.subarray(0, count));
    }
  } catch {
    // Closed.
  }
}

const handlers = {
  peer: () => callContext()!.peer,
  add: (a: number, b: number) => a + b,
  subtract: (a: number, b: number) => a - b,
};

/** A server with `proxyProtocol`, its log lines awaitable, and its metrics on. */
async function proxiedServer(handshakeTimeout = 5000) {
  const watched = watchedOptions({ proxyProtocol: true, metrics: true, handshakeTimeout });
  const server = await serve(handlers, watched.options);
  return { server, ...watched };
}

/** The handshake failures a server counted, by reason, leaving out the zeros. */
function failures(server: RpcServer): Record<string, number> {
  const counts = server.metrics!.snapshot().handshakeFailures;
  return Object.fromEntries(Object.entries(counts).filter(([, count]) => count > 0));
}

/** Asks the server behind `port` for `callContext().peer` on a TLS connection of its own. */
async function peerThrough(port: number): Promise<unknown> {
  await using client = await RawClient.connect(port);
  const answer = await within(client.exchange(request(1, "peer")), "the answer") as {
    result?: unknown;
  };
  return answer.result;
}

Deno.test("serve() with proxyProtocol: callContext().peer is the address in the balancer's header", async (t) => {
  const { server } = await proxiedServer();
  await using _server = server;
  const cases: [string, Uint8Array, { hostname: string; port: number }][] = [
    ["v1 TCP4", v1("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443"), {
      hostname: "203.0.113.7",
      port: 4711,
    }],
    ["v1 TCP6", v1("PROXY TCP6 2001:db8::7 2001:db8::1 4712 443"), {
      hostname: "2001:db8::7",
      port: 4712,
    }],
    ["v2 TCP over IPv4", V2_TCP4, { hostname: "203.0.113.7", port: 4711 }],
    ["v2 TCP over IPv6", V2_TCP6, { hostname: "2001:db8::7", port: 4711 }],
  ];
  for (const [name, header, expected] of cases) {
    await t.step(name, async () => {
      await using balancer = new Balancer(server.addr.port, () => header);
      assert.deepEqual(await peerThrough(balancer.port), expected);
    });
  }
  await t.step("v2 LOCAL (a health check): the socket's own address", async () => {
    // The balancer's own connection, as HAProxy's health checks send it: no relayed client.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await writeAll(conn, V2_LOCAL);
    const tls = await Deno.startTls(conn, { hostname: "127.0.0.1", caCerts: [certs.ca] });
    await using client = new RawClient(tls);
    const answer = await client.exchange(request(1, "peer")) as { result?: unknown };
    assert.deepEqual(answer.result, { hostname: "127.0.0.1", port: conn.localAddr.port });
  });
  await t.step("a header arriving a byte at a time, then the handshake", async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    for (const byte of v1("PROXY TCP4 198.51.100.2 192.0.2.1 65535 443")) {
      await writeAll(conn, new Uint8Array([byte]));
      await delay(1);
    }
    const tls = await Deno.startTls(conn, { hostname: "127.0.0.1", caCerts: [certs.ca] });
    await using client = new RawClient(tls);
    const answer = await client.exchange(request(1, "peer")) as { result?: unknown };
    assert.deepEqual(answer.result, { hostname: "198.51.100.2", port: 65535 });
  });
  assert.deepEqual(failures(server), {});
});

Deno.test("serve() with proxyProtocol: a connection without a header, with a malformed one, or with one too slow is closed, logged once and counted, while a good client keeps being served", async () => {
  const { server, lines, waitFor } = await proxiedServer(600);
  await using _server = server;
  await using balancer = new Balancer(
    server.addr.port,
    (client) => v1(`PROXY TCP4 ${client.hostname} 127.0.0.1 ${client.port} 443`),
  );
  /** The lines about the connection from `conn`, once there is one, after a moment for more. */
  async function linesAbout(conn: Deno.Conn, what: string): Promise<string[]> {
    const addr = formatAddr(conn.localAddr as Deno.NetAddr);
    const about = () => lines.filter((line) => line.includes(`${addr} `));
    await waitFor(() => about().length > 0, what);
    await delay(100);
    return about();
  }
  await whileGoodClientCalls(balancer.port, async () => {
    // A TLS client that bypasses the balancer: its ClientHello comes where the header should.
    const direct = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    const tls = await Deno.startTls(direct, { hostname: "127.0.0.1", caCerts: [certs.ca] });
    await assert.rejects(tls.handshake());
    const missing = await linesAbout(direct, "the missing header's line");
    closeQuietly(tls);
    assert.equal(missing.length, 1, missing.join("\n"));
    assert.match(
      missing[0]!,
      /^PROXY header from 127\.0\.0\.1:\d+ failed: no PROXY header: the connection begins with a TLS handshake/,
    );

    await using malformed = await TcpClient.connect(server.addr.port);
    await malformed.write(v1("PROXY TCP4 203.0.113.7 192.0.2.1 99999 443"));
    await within(malformed.closed, "the malformed header's connection to close");
    assert.ok(malformed.closedByServer);
    const bad = await linesAbout(malformed.conn, "the malformed header's line");
    assert.deepEqual(bad.length, 1, bad.join("\n"));
    assert.match(bad[0]!, /failed: v1 header: bad source port "99999"$/);

    await using slow = await TcpClient.connect(server.addr.port);
    const header = v1("PROXY TCP4 203.0.113.7 192.0.2.1 4711 443");
    const dribbling = (async () => {
      for (const byte of header) {
        if (!await slow.write(new Uint8Array([byte]))) return;
        await delay(100);
      }
    })();
    await within(slow.closed, "the slow header's connection to close");
    assert.ok(slow.closedByServer);
    const late = await linesAbout(slow.conn, "the slow header's line");
    assert.equal(late.length, 1, late.join("\n"));
    assert.match(late[0]!, /failed: no complete header within 600 ms$/);
    await dribbling;
  });
  assert.deepEqual(failures(server), { protocol: 2, timeout: 1 });
});

Deno.test("serve() with proxyProtocol: the accept watchdog's probe, which sends no header, is never logged nor counted", async () => {
  // A deadline shorter than the probe's wait: a probe not yet recognised would time out first.
  const { server, lines } = await proxiedServer(200);
  await using _server = server;
  // Long enough for the watchdog to look twice (after 1 s, then 2 s).
  await delay(3200);
  assert.deepEqual(lines, []);
  assert.deepEqual(failures(server), {});
  await using balancer = new Balancer(server.addr.port, () => V2_TCP4);
  assert.deepEqual(await peerThrough(balancer.port), { hostname: "203.0.113.7", port: 4711 });
});

Deno.test('serve() refuses proxyProtocol with transport "deno" with a TypeError', async () => {
  await assert.rejects(
    serve(handlers, { ...watchedOptions().options, transport: "deno", proxyProtocol: true }),
    (error: unknown) => {
      assert.ok(error instanceof TypeError);
      assert.match(error.message, /^Cannot serve: proxyProtocol needs the "node" transport/);
      return true;
    },
  );
});
