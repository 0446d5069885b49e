import assert from "node:assert/strict";
import { once } from "node:events";
import tls from "node:tls";
import {
  boolean,
  explicit,
  implicit,
  integer,
  octetString,
  oid,
  sequence,
  set,
  tlv,
  utf8String,
} from "../_der.ts";
import { type CertificateIdentity, formatIp, readCertificateIdentity } from "../_x509_identity.ts";
import { fromPem } from "../_x509_read.ts";
import { generateDevCertificates } from "../dev_cert.ts";
import { seededRandom } from "./portable/_data.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Certificates made by openssl

async function openssl(args: string[], cwd: string): Promise<string> {
  const { success, stdout, stderr } = await new Deno.Command("openssl", {
    args,
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const output = decoder.decode(stdout) + decoder.decode(stderr);
  assert.ok(success, `openssl ${args.join(" ")} failed:\n${output}`);
  return decoder.decode(stdout);
}

interface Made {
  der: Uint8Array<ArrayBuffer>;
  /** What `openssl x509 -fingerprint -sha256` says. */
  fingerprint: string;
}

interface MakeOptions {
  /** The `-subj` argument. */
  subject: string;
  /** Lines of the `[alt]` section, one name each, as `email.1 = bob@x.com`. */
  altNames?: string[];
  /** A `string_mask` for the subject's string types, as `MASK:0x0800`. */
  stringMask?: string;
}

/** Makes a self-signed certificate with openssl in a temporary folder. */
async function makeCertificate(options: MakeOptions): Promise<Made> {
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_x509_" });
  try {
    const config = [
      "[req]",
      "distinguished_name = dn",
      ...(options.stringMask === undefined ? [] : [`string_mask = ${options.stringMask}`]),
      "[dn]",
      "[ext]",
      "basicConstraints = critical,CA:FALSE",
      ...(options.altNames === undefined ? [] : ["subjectAltName = @alt", "[alt]"]),
      ...(options.altNames ?? []),
      "",
    ].join("\n");
    await Deno.writeTextFile(`${dir}/openssl.cnf`, config);
    // deno-fmt-ignore
    await openssl([
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
      "-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-utf8",
      "-subj", options.subject, "-config", "openssl.cnf", "-extensions", "ext",
    ], dir);
    await openssl(["x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der"], dir);
    const text = await openssl(
      ["x509", "-in", "cert.pem", "-noout", "-fingerprint", "-sha256"],
      dir,
    );
    const fingerprint = /Fingerprint=([0-9A-F:]+)/.exec(text)?.[1];
    assert.ok(fingerprint, `no fingerprint in ${text}`);
    return { der: await Deno.readFile(`${dir}/cert.der`), fingerprint };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function subjectOf(identity: CertificateIdentity): Record<string, readonly string[]> {
  assert.equal(Object.getPrototypeOf(identity.subject), null, "the subject has no prototype");
  return { ...identity.subject };
}

Deno.test("readCertificateIdentity() keeps an email name that holds a comma and DNS: as one email name", async () => {
  const { der } = await makeCertificate({
    subject: "/CN=bob",
    altNames: ["email.1 = bob@x.com, DNS:admin.example"],
  });
  assert.deepEqual(readCertificateIdentity(der).altNames, [
    { type: "email", value: "bob@x.com, DNS:admin.example" },
  ]);
});

Deno.test("readCertificateIdentity() types each alternative name and keeps their order", async () => {
  const { der } = await makeCertificate({
    subject: "/CN=x",
    altNames: [
      "DNS.1 = Admin.Example",
      "URI.1 = https://x.example/a,b?c=d",
      "email.1 = a@b.example",
      "DNS.2 = *.example",
      "URI.2 = spiffe://example/ns/a, DNS:evil.example",
    ],
  });
  assert.deepEqual(readCertificateIdentity(der).altNames, [
    { type: "DNS", value: "Admin.Example" },
    { type: "URI", value: "https://x.example/a,b?c=d" },
    { type: "email", value: "a@b.example" },
    { type: "DNS", value: "*.example" },
    { type: "URI", value: "spiffe://example/ns/a, DNS:evil.example" },
  ]);
});

Deno.test("readCertificateIdentity() writes IPv4 dotted and IPv6 as RFC 5952 says", async (t) => {
  const cases: [string, string][] = [
    ["10.1.2.3", "10.1.2.3"],
    ["0.0.0.0", "0.0.0.0"],
    ["255.255.255.255", "255.255.255.255"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["::1", "::1"],
    ["::", "::"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["fe80:0:0:0:1:0:0:0", "fe80::1:0:0:0"],
    ["2001:db8:0:1:2:3:4:5", "2001:db8:0:1:2:3:4:5"],
    ["2001:db8:1:2:3:4:5:0", "2001:db8:1:2:3:4:5:0"],
    ["1:0:0:0:0:0:0:0", "1::"],
    ["2001:0db8:00aa::0bb", "2001:db8:aa::bb"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
    ["::192.0.2.1", "::c000:201"],
  ];
  const { der } = await makeCertificate({
    subject: "/CN=x",
    altNames: cases.map(([ip], i) => `IP.${i + 1} = ${ip}`),
  });
  const names = readCertificateIdentity(der).altNames;
  assert.equal(names.length, cases.length);
  for (const [i, [ip, expected]] of cases.entries()) {
    await t.step(ip, () => {
      assert.deepEqual(names[i], { type: "IP", value: expected });
    });
  }
});

Deno.test("readCertificateIdentity() gives other names as their DER in hex", async () => {
  const { der } = await makeCertificate({
    subject: "/CN=x",
    altNames: [
      "RID.1 = 1.2.3.4",
      "otherName.1 = 1.2.3.4;UTF8:hello",
      "dirName.1 = dir",
      "[dir]",
      "CN = d",
    ],
  });
  const names = readCertificateIdentity(der).altNames;
  assert.deepEqual(names.map((name) => name.type), ["other", "other", "other"]);
  assert.equal(names[0]!.value, "88032a0304"); // [8] registeredID 1.2.3.4
  assert.equal(names[1]!.value, "a00e" + "06032a0304" + "a007" + "0c0568656c6c6f");
  assert.match(names[2]!.value, /^a4/);
});

Deno.test("readCertificateIdentity() keeps subject values apart, in order, character for character", async (t) => {
  const cases: {
    name: string;
    subject: string;
    stringMask?: string;
    expected: Record<string, string[]>;
  }[] = [
    { name: "two CNs", subject: "/CN=alice/CN=admin", expected: { CN: ["alice", "admin"] } },
    {
      name: "one CN with a comma",
      subject: "/CN=alice, admin",
      expected: { CN: ["alice, admin"] },
    },
    {
      name: "a multi-valued RDN",
      subject: "/O=Acme+OU=Eng+CN=carol/OU=Ops",
      expected: { O: ["Acme"], OU: ["Eng", "Ops"], CN: ["carol"] },
    },
    {
      name: "control characters",
      subject: "/CN=a\nb\tc\x01d\x1fe\x7ff/O=\x1b[31mred",
      expected: { CN: ["a\nb\tc\x01d\x1fe\x7ff"], O: ["\x1b[31mred"] },
    },
    {
      name: "short names, and the dotted OID of others",
      subject:
        "/C=NZ/ST=Otago/L=Dunedin/O=Acme/OU=Eng/CN=dee/emailAddress=dee@acme.example/serialNumber=42/DC=example/UID=u1/title=Boss",
      expected: {
        C: ["NZ"],
        ST: ["Otago"],
        L: ["Dunedin"],
        O: ["Acme"],
        OU: ["Eng"],
        CN: ["dee"],
        emailAddress: ["dee@acme.example"],
        serialNumber: ["42"],
        DC: ["example"],
        UID: ["u1"],
        "2.5.4.12": ["Boss"],
      },
    },
    { name: "UTF8String", subject: "/CN=Zoë 𝄞 \uFEFFx", expected: { CN: ["Zoë 𝄞 \uFEFFx"] } },
    {
      name: "BMPString",
      subject: "/CN=Zoë ü",
      stringMask: "MASK:0x0800",
      expected: { CN: ["Zoë ü"] },
    },
    {
      name: "TeletexString",
      subject: "/CN=Zoë ü",
      stringMask: "MASK:0x0004",
      expected: { CN: ["Zoë ü"] },
    },
    {
      name: "PrintableString",
      subject: "/CN=plain",
      stringMask: "MASK:0x0002",
      expected: { CN: ["plain"] },
    },
  ];
  for (const { name, subject, stringMask, expected } of cases) {
    await t.step(name, async () => {
      const { der } = await makeCertificate({ subject, ...(stringMask && { stringMask }) });
      assert.deepEqual(subjectOf(readCertificateIdentity(der)), expected);
    });
  }
});

Deno.test("readCertificateIdentity() gives the fingerprint openssl gives", async () => {
  const { der, fingerprint } = await makeCertificate({ subject: "/CN=alice" });
  assert.equal(readCertificateIdentity(der).fingerprint, fingerprint);
  assert.match(fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
});

Deno.test("readCertificateIdentity() reads development certificates", async () => {
  const certs = await generateDevCertificates({ hosts: ["dev.example.test"], clientName: "alice" });
  const client = readCertificateIdentity(fromPem(certs.clientCert!, "CERTIFICATE", "client"));
  assert.deepEqual(subjectOf(client), { CN: ["alice"] });
  assert.deepEqual(client.altNames, []);
  const server = readCertificateIdentity(fromPem(certs.cert, "CERTIFICATE", "server"));
  assert.deepEqual(server.altNames, [
    { type: "DNS", value: "localhost" },
    { type: "IP", value: "127.0.0.1" },
    { type: "IP", value: "::1" },
    { type: "DNS", value: "dev.example.test" },
  ]);
});

Deno.test("readCertificateIdentity() of a node:tls peer's raw DER matches its fingerprint256, not its joined fields", async () => {
  const certs = await generateDevCertificates({ clientName: "alice, admin" });
  const server = tls.createServer({
    cert: certs.cert,
    key: certs.key,
    ca: [certs.caCert],
    requestCert: true,
    rejectUnauthorized: true,
  });
  const peer = new Promise<tls.DetailedPeerCertificate>((resolve) => {
    server.once("secureConnection", (socket: tls.TLSSocket) => {
      resolve(socket.getPeerCertificate(true));
      socket.end("bye");
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  try {
    using conn = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [certs.caCert],
      cert: certs.clientCert!,
      key: certs.clientKey!,
    });
    await conn.handshake();
    const { raw, fingerprint256 } = await peer;
    const identity = readCertificateIdentity(raw);
    assert.equal(identity.fingerprint, fingerprint256);
    assert.deepEqual(subjectOf(identity), { CN: ["alice, admin"] });
    await conn.read(new Uint8Array(16));
  } finally {
    server.close();
    await once(server, "close");
  }
});

// ---------------------------------------------------------------------------------------------
// Hostile input

const OID = { subjectAltName: "2.5.29.17", commonName: "2.5.4.3" };

/** A certificate put together from DER parts; its signature is not checked, so it is garbage. */
function synthetic(parts: { subject?: Uint8Array; extensions?: Uint8Array[] }): Uint8Array {
  const algorithm = sequence([oid("1.2.840.10045.4.3.2")]);
  const name = parts.subject ?? sequence([]);
  const tbs = sequence([
    explicit(0, integer(2)),
    integer(1),
    algorithm,
    sequence([]),
    sequence([]),
    name,
    sequence([]),
    ...(parts.extensions === undefined ? [] : [explicit(3, sequence(parts.extensions))]),
  ]);
  return sequence([tbs, algorithm, tlv(0x03, Uint8Array.of(0))]);
}

function attribute(type: string, value: Uint8Array): Uint8Array {
  return sequence([set([sequence([oid(type), value])])]);
}

function sanExtension(names: Uint8Array[], critical = false): Uint8Array {
  const value = octetString(sequence(names));
  return sequence([oid(OID.subjectAltName), ...(critical ? [boolean(true)] : []), value]);
}

Deno.test("readCertificateIdentity() decodes every DirectoryString type", async (t) => {
  const cases: [string, Uint8Array, string][] = [
    ["UniversalString", tlv(0x1c, Uint8Array.of(0, 0, 0, 0x5a, 0, 1, 0xd1, 0x1e)), "Z𝄞"],
    ["BMPString with a surrogate pair", tlv(0x1e, Uint8Array.of(0xd8, 0x34, 0xdd, 0x1e)), "𝄞"],
    ["TeletexString as Latin-1", tlv(0x14, Uint8Array.of(0x5a, 0xe9, 0x80)), "Zé\x80"],
    ["VisibleString", tlv(0x1a, encoder.encode("v")), "v"],
    ["IA5String", tlv(0x16, encoder.encode("a@b")), "a@b"],
    ["UTF8String with NUL", utf8String("a\0b"), "a\0b"],
  ];
  for (const [name, value, expected] of cases) {
    await t.step(name, () => {
      const identity = readCertificateIdentity(
        synthetic({ subject: attribute(OID.commonName, value) }),
      );
      assert.deepEqual(subjectOf(identity), { CN: [expected] });
    });
  }
});

Deno.test("readCertificateIdentity() throws TypeError or RangeError on malformed certificates", async (t) => {
  const valid = (await makeCertificate({ subject: "/CN=x", altNames: ["DNS.1 = a.example"] })).der;
  const cn = (value: Uint8Array) => synthetic({ subject: attribute(OID.commonName, value) });
  const cases: [string, Uint8Array, typeof TypeError | typeof RangeError][] = [
    ["no bytes", new Uint8Array(0), TypeError],
    ["an empty SEQUENCE", Uint8Array.of(0x30, 0x00), TypeError],
    ["text", encoder.encode("-----BEGIN CERTIFICATE-----"), TypeError],
    ["a trailing byte", Uint8Array.of(...valid, 0), TypeError],
    ["a length of 4 GiB", Uint8Array.of(0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0), TypeError],
    ["nesting 10,000 deep", nested(10_000), TypeError],
    ["more than 100 KiB", new Uint8Array(100 * 1024 + 1), RangeError],
    ["an OID arc of 5,000 octets", cnWithType(5_000), RangeError],
    ["an INTEGER as a subject value", cn(integer(7)), TypeError],
    ["invalid UTF-8", cn(tlv(0x0c, Uint8Array.of(0xc3, 0x28))), TypeError],
    ["non-ASCII PrintableString", cn(tlv(0x13, Uint8Array.of(0xe9))), TypeError],
    ["an odd BMPString", cn(tlv(0x1e, Uint8Array.of(0, 0x41, 0))), TypeError],
    [
      "a lone surrogate in a BMPString",
      cn(tlv(0x1e, Uint8Array.of(0xd8, 0x00, 0, 0x41))),
      TypeError,
    ],
    ["a UniversalString above U+10FFFF", cn(tlv(0x1c, Uint8Array.of(0, 0x11, 0, 0))), TypeError],
    ["a surrogate in a UniversalString", cn(tlv(0x1c, Uint8Array.of(0, 0, 0xdc, 0))), TypeError],
    [
      "two subjectAltName extensions",
      synthetic({
        extensions: [
          sanExtension([implicit(2, encoder.encode("a"))]),
          sanExtension([
            implicit(2, encoder.encode("b")),
          ]),
        ],
      }),
      TypeError,
    ],
    [
      "a 5-byte IP address",
      synthetic({ extensions: [sanExtension([implicit(7, new Uint8Array(5))])] }),
      TypeError,
    ],
    [
      "a non-ASCII DNS name",
      synthetic({ extensions: [sanExtension([implicit(2, Uint8Array.of(0xe9))])] }),
      TypeError,
    ],
    [
      "an unknown name type",
      synthetic({ extensions: [sanExtension([implicit(9, new Uint8Array(1))])] }),
      TypeError,
    ],
    [
      "a subjectAltName that is not a SEQUENCE",
      synthetic({
        extensions: [sequence([oid(OID.subjectAltName), octetString(utf8String("DNS:x"))])],
      }),
      TypeError,
    ],
  ];
  for (const [name, der, type] of cases) {
    await t.step(name, () => {
      assert.throws(() => readCertificateIdentity(der), (error: unknown) => {
        assert.ok(error instanceof type, `${name}: ${error}`);
        assert.match((error as Error).message, /^Cannot read certificate identity: /);
        return true;
      });
    });
  }
  await t.step("every truncation of a valid certificate", () => {
    for (let length = 0; length < valid.length; length++) {
      assert.throws(
        () => readCertificateIdentity(valid.subarray(0, length)),
        TypeError,
        `${length}`,
      );
    }
  });
});

function nested(depth: number): Uint8Array {
  // SEQUENCE { SEQUENCE { ... } } with three-octet lengths, innermost empty.
  const bytes = new Uint8Array(5 * depth);
  for (let level = 0; level < depth; level++) {
    const length = 5 * (depth - level - 1);
    bytes.set([0x30, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff], 5 * level);
  }
  return bytes;
}

function cnWithType(arcOctets: number): Uint8Array {
  const contents = new Uint8Array(arcOctets + 1).fill(0x81);
  contents[0] = 0x2a;
  contents[arcOctets] = 0x01;
  return synthetic({
    subject: sequence([set([sequence([tlv(0x06, contents), utf8String("x")])])]),
  });
}

Deno.test("readCertificateIdentity() returns or throws TypeError/RangeError on mutated certificates (seeded)", async () => {
  const { der } = await makeCertificate({
    subject: "/CN=alice/O=Acme+OU=Eng",
    altNames: ["DNS.1 = a.example", "IP.1 = 10.0.0.1", "email.1 = a@b.example"],
  });
  const seed = Date.now() >>> 0;
  const next = seededRandom(seed);
  const started = performance.now();
  for (let i = 0; i < 3000; i++) {
    const mutated = new Uint8Array(der);
    for (let flips = 1 + Math.floor(next() * 3); flips > 0; flips--) {
      mutated[Math.floor(next() * mutated.length)] = Math.floor(next() * 256);
    }
    try {
      readCertificateIdentity(mutated);
    } catch (error) {
      assert.ok(
        error instanceof TypeError || error instanceof RangeError,
        `mutation ${i} threw ${error} (seed ${seed})`,
      );
    }
  }
  assert.ok(
    performance.now() - started < 10_000,
    `3,000 certificates took too long (seed ${seed})`,
  );
});

Deno.test("formatIp() refuses addresses that are not 4 or 16 bytes", () => {
  assert.throws(() => formatIp(new Uint8Array(8)), TypeError);
  assert.equal(formatIp(new Uint8Array(16)), "::");
});
