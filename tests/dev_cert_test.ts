import assert from "node:assert/strict";
import { once } from "node:events";
import tls from "node:tls";
import {
  type DerNode,
  parseDer,
  readBitString,
  readBoolean,
  readInteger,
  readNamedBits,
  readOctetString,
  readOid,
  readString,
  readTime,
  readUnsigned,
} from "../_der_read.ts";
import { Tag } from "../_der_tag.ts";
import {
  certificateNotAfter,
  checkDevCertDir,
  defaultDevCertDir,
  defaultStateDir,
  DEV_CERT_VALIDITY,
  type DevCertPaths,
  devCertPaths,
  ensureDevCertificates,
  generateDevCertificates,
  UnsafeStateError,
  writeDevCertificates,
} from "../dev_cert.ts";

const DAY_MS = 24 * 60 * 60 * 1000;
const NOW = new Date("2026-01-15T12:00:00Z");
const OID = {
  commonName: "2.5.4.3",
  ecPublicKey: "1.2.840.10045.2.1",
  prime256v1: "1.2.840.10045.3.1.7",
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  subjectKeyIdentifier: "2.5.29.14",
  keyUsage: "2.5.29.15",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  authorityKeyIdentifier: "2.5.29.35",
  extKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1",
  clientAuth: "1.3.6.1.5.5.7.3.2",
};
const encoder = new TextEncoder();
const decoder = new TextDecoder();

// ---------------------------------------------------------------------------------------------
// Reading certificates with the DER parser alone, independently of dev_cert.ts

interface Inspected {
  version: bigint;
  serial: Uint8Array;
  issuer: DerNode;
  subject: DerNode;
  notBefore: DerNode;
  notAfter: DerNode;
  spki: DerNode;
  extensions: Map<string, { critical: boolean; value: DerNode }>;
  tbs: Uint8Array<ArrayBuffer>;
  signatureAlgorithm: string;
  signature: Uint8Array<ArrayBuffer>;
}

function pemToDer(pem: string, label = "CERTIFICATE"): Uint8Array<ArrayBuffer> {
  const match = new RegExp(`-----BEGIN ${label}-----\n([^-]+)-----END ${label}-----\n`).exec(pem);
  assert.ok(match, `no ${label} block in ${pem}`);
  const lines = match[1]!.trimEnd().split("\n");
  for (const line of lines.slice(0, -1)) {
    assert.equal(line.length, 64, "PEM lines are 64 characters");
  }
  assert.ok(lines.at(-1)!.length <= 64);
  return Uint8Array.from(atob(lines.join("")), (char) => char.charCodeAt(0));
}

function inspect(pem: string): Inspected {
  const [tbsNode, algorithm, signature] = parseDer(pemToDer(pem)).children;
  assert.ok(tbsNode && algorithm && signature);
  const [version, serial, innerAlgorithm, issuer, validity, subject, spki, extensionsNode] =
    tbsNode.children;
  assert.equal(tbsNode.children.length, 8);
  assert.equal(version!.tag, 0xa0);
  assert.equal(extensionsNode!.tag, 0xa3);
  assert.deepEqual(innerAlgorithm!.raw, algorithm.raw);
  const extensions = new Map<string, { critical: boolean; value: DerNode }>();
  for (const extension of extensionsNode!.children[0]!.children) {
    const [id, second, third] = extension.children;
    if (third !== undefined) assert.equal(readBoolean(second!), true, "DER omits critical FALSE");
    const value = parseDer(readOctetString(third ?? second!));
    extensions.set(readOid(id!), { critical: third !== undefined, value });
  }
  return {
    version: readInteger(version!.children[0]!),
    serial: serial!.contents,
    issuer: issuer!,
    subject: subject!,
    notBefore: validity!.children[0]!,
    notAfter: validity!.children[1]!,
    spki: spki!,
    extensions,
    tbs: tbsNode.raw,
    signatureAlgorithm: readOid(algorithm.children[0]!),
    signature: readBitString(signature).bytes,
  };
}

function commonNameOf(name: DerNode): string {
  assert.equal(name.children.length, 1);
  const [type, value] = name.children[0]!.children[0]!.children;
  assert.equal(readOid(type!), OID.commonName);
  return readString(value!);
}

function extension(cert: Inspected, id: string): { critical: boolean; value: DerNode } {
  const found = cert.extensions.get(id);
  assert.ok(found, `extension ${id} is present`);
  return found;
}

function subjectAltNames(cert: Inspected): string[] {
  return extension(cert, OID.subjectAltName).value.children.map((node) => {
    if (node.tag === 0x82) return `DNS:${decoder.decode(node.contents)}`;
    assert.equal(node.tag, 0x87);
    return `IP:${Array.from(node.contents, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
  });
}

async function verifiedBy(cert: Inspected, issuer: Inspected): Promise<boolean> {
  assert.equal(cert.signatureAlgorithm, OID.ecdsaWithSha256);
  const signature = parseDer(cert.signature);
  assert.equal(signature.tag, Tag.Sequence);
  assert.equal(signature.children.length, 2);
  // X.509 holds SEQUENCE { r, s }; WebCrypto wants r || s, each 32 bytes.
  const raw = new Uint8Array(64);
  raw.set(readUnsigned(signature.children[0]!, 32), 0);
  raw.set(readUnsigned(signature.children[1]!, 32), 32);
  const key = await crypto.subtle.importKey(
    "spki",
    issuer.spki.raw,
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["verify"],
  );
  return await crypto.subtle.verify({ name: "ECDSA", hash: "SHA-256" }, key, raw, cert.tbs);
}

async function keyIdentifierOf(cert: Inspected): Promise<Uint8Array> {
  const publicKey = readBitString(cert.spki.children[1]!).bytes;
  return new Uint8Array(await crypto.subtle.digest("SHA-1", publicKey));
}

// ---------------------------------------------------------------------------------------------
// Certificate contents

Deno.test("generateDevCertificates() makes a self-signed v3 CA with critical constraints", async () => {
  const { caCert, caKey } = await generateDevCertificates({ now: NOW });
  const ca = inspect(caCert);
  assert.equal(ca.version, 2n);
  assert.equal(ca.serial.length, 16, "16-byte serial");
  assert.equal(ca.serial[0]! & 0x80, 0, "positive serial");
  assert.deepEqual(ca.issuer.raw, ca.subject.raw);
  assert.match(commonNameOf(ca.subject), /^tlsrpc development CA( \(.+\))?$/);
  assert.ok(commonNameOf(ca.subject).length <= 64);

  const [algorithm, curve] = ca.spki.children[0]!.children;
  assert.equal(readOid(algorithm!), OID.ecPublicKey);
  assert.equal(readOid(curve!), OID.prime256v1);

  const constraints = extension(ca, OID.basicConstraints);
  assert.equal(constraints.critical, true);
  assert.equal(readBoolean(constraints.value.children[0]!), true);
  assert.equal(readInteger(constraints.value.children[1]!), 0n, "pathlen 0");
  const usage = extension(ca, OID.keyUsage);
  assert.equal(usage.critical, true);
  assert.deepEqual(readNamedBits(usage.value), [5, 6], "keyCertSign, cRLSign");
  const ski = extension(ca, OID.subjectKeyIdentifier);
  assert.equal(ski.critical, false);
  assert.deepEqual(readOctetString(ski.value), await keyIdentifierOf(ca));

  assert.equal(
    readTime(ca.notBefore).getTime(),
    NOW.getTime() - DEV_CERT_VALIDITY.backdateDays * DAY_MS,
  );
  assert.equal(readTime(ca.notAfter).getTime(), NOW.getTime() + DEV_CERT_VALIDITY.caDays * DAY_MS);
  assert.equal(await verifiedBy(ca, ca), true);
  assert.match(caKey, /^-----BEGIN PRIVATE KEY-----\n[^-]+-----END PRIVATE KEY-----\n$/);
});

Deno.test("generateDevCertificates() makes a server certificate for localhost, loopback and extra hosts", async () => {
  const certs = await generateDevCertificates({
    now: NOW,
    hosts: ["Dev.Example.TEST.", "*.apps.test", "192.168.1.20", "[fd00::1:2]", "::ffff:10.0.0.1"],
  });
  const ca = inspect(certs.caCert);
  const cert = inspect(certs.cert);
  assert.equal(cert.version, 2n);
  assert.equal(cert.serial.length, 16);
  assert.equal(cert.serial[0]! & 0x80, 0);
  assert.notDeepEqual(cert.serial, ca.serial);
  assert.deepEqual(cert.issuer.raw, ca.subject.raw);
  assert.equal(commonNameOf(cert.subject), "tlsrpc development server");
  assert.deepEqual(subjectAltNames(cert), [
    "DNS:localhost",
    "IP:7f000001",
    "IP:00000000000000000000000000000001",
    "DNS:dev.example.test",
    "DNS:*.apps.test",
    "IP:c0a80114",
    "IP:fd000000000000000000000000010002",
    "IP:00000000000000000000ffff0a000001",
  ]);

  const constraints = extension(cert, OID.basicConstraints);
  assert.equal(constraints.critical, true);
  assert.equal(constraints.value.children.length, 0, "CA:FALSE is the empty SEQUENCE");
  const usage = extension(cert, OID.keyUsage);
  assert.equal(usage.critical, true);
  assert.deepEqual(readNamedBits(usage.value), [0], "digitalSignature");
  assert.deepEqual(extension(cert, OID.extKeyUsage).value.children.map(readOid), [
    OID.serverAuth,
    OID.clientAuth,
  ]);
  const aki = extension(cert, OID.authorityKeyIdentifier).value.children[0]!;
  assert.equal(aki.tag, 0x80, "keyIdentifier [0] IMPLICIT");
  assert.deepEqual(aki.contents, readOctetString(extension(ca, OID.subjectKeyIdentifier).value));
  assert.deepEqual(
    readOctetString(extension(cert, OID.subjectKeyIdentifier).value),
    await keyIdentifierOf(cert),
  );

  assert.equal(readTime(cert.notBefore).getTime(), NOW.getTime() - DAY_MS);
  const notAfter = NOW.getTime() + DEV_CERT_VALIDITY.leafDays * DAY_MS;
  assert.equal(readTime(cert.notAfter).getTime(), notAfter);
  assert.equal(certs.notAfter.getTime(), notAfter);
  assert.equal(await verifiedBy(cert, ca), true);
  assert.equal(await verifiedBy(cert, cert), false);
  assert.equal(certs.clientCert, undefined);
  assert.equal(certs.clientKey, undefined);
});

Deno.test("generateDevCertificates() lists each host once", async () => {
  const { cert } = await generateDevCertificates({
    hosts: ["LOCALHOST", "localhost.", "0:0:0:0:0:0:0:1", "[::1]", "127.0.0.1", "a.test", "A.test"],
  });
  assert.deepEqual(subjectAltNames(inspect(cert)), [
    "DNS:localhost",
    "IP:7f000001",
    "IP:00000000000000000000000000000001",
    "DNS:a.test",
  ]);
});

Deno.test("generateDevCertificates() rejects hosts that are neither DNS names nor IP addresses", async (t) => {
  const bad = [
    "",
    "a b",
    "-x.test",
    "x-.test",
    "x..test",
    "host:80",
    "1.2.3.256",
    "01.2.3.4",
    "1.2.3",
    "::1::2",
    "1:2:3:4:5:6:7:8:9",
    "1:2:3:4:5:6:7",
    "[::1",
    "fe80::1%eth0",
    "*.*.test",
    "ünï.test",
    `${"a".repeat(64)}.test`,
  ];
  for (const host of bad) {
    await t.step(JSON.stringify(host), async () => {
      await assert.rejects(
        generateDevCertificates({ hosts: [host] }),
        (error: unknown) =>
          error instanceof TypeError &&
          error.message ===
            `Cannot make server certificate: host "${host}" is neither a DNS name nor an IP address`,
      );
    });
  }
});

Deno.test("generateDevCertificates() makes a client certificate with the name and clientAuth", async () => {
  const certs = await generateDevCertificates({ now: NOW, clientName: "alice@laptop" });
  assert.ok(certs.clientCert !== undefined && certs.clientKey !== undefined);
  const client = inspect(certs.clientCert);
  assert.equal(commonNameOf(client.subject), "alice@laptop");
  assert.deepEqual(extension(client, OID.extKeyUsage).value.children.map(readOid), [
    OID.clientAuth,
  ]);
  assert.deepEqual(readNamedBits(extension(client, OID.keyUsage).value), [0]);
  assert.equal(extension(client, OID.basicConstraints).value.children.length, 0);
  assert.equal(client.extensions.has(OID.subjectAltName), false);
  assert.equal(await verifiedBy(client, inspect(certs.caCert)), true);
  assert.notEqual(certs.clientKey, certs.key);
});

Deno.test("generateDevCertificates() rejects a client name that is empty, too long or has control characters", async (t) => {
  for (const name of ["", "x".repeat(65), "a\nb"]) {
    await t.step(JSON.stringify(name), async () => {
      await assert.rejects(
        generateDevCertificates({ clientName: name }),
        /^TypeError: Cannot make client certificate: name ".*" is not 1 to 64 printable characters$/s,
      );
    });
  }
});

Deno.test("generateDevCertificates() writes signatures as minimal DER INTEGERs that WebCrypto verifies", async () => {
  // Half of all r and s have their top bit set (a zero byte is added) and 1 in 256 starts with a
  // zero byte (it is dropped); 40 certificates make both likely, and the parser refuses any
  // non-minimal INTEGER.
  const certs = await Promise.all(
    Array.from({ length: 20 }, () => generateDevCertificates({ clientName: "c" })),
  );
  let padded = 0;
  for (const { caCert, cert, clientCert } of certs) {
    const ca = inspect(caCert);
    for (const leaf of [inspect(cert), inspect(clientCert!)]) {
      assert.equal(await verifiedBy(leaf, ca), true);
      for (const half of parseDer(leaf.signature).children) {
        assert.ok(half.contents.length >= 1 && half.contents.length <= 33);
        if (half.contents.length === 33) padded++;
      }
    }
  }
  assert.ok(padded > 0, "some r or s needed a leading zero byte");
});

Deno.test("generateDevCertificates() switches to GeneralizedTime for times from 2050", async () => {
  const now = new Date("2045-06-01T00:00:00Z");
  const { caCert, cert } = await generateDevCertificates({ now });
  const ca = inspect(caCert);
  assert.equal(ca.notBefore.tag, Tag.UtcTime);
  assert.equal(ca.notAfter.tag, Tag.GeneralizedTime);
  assert.equal(readTime(ca.notAfter).getUTCFullYear(), 2055);
  assert.equal(inspect(cert).notAfter.tag, Tag.UtcTime);
});

Deno.test("generateDevCertificates() signs with a given CA and never outlives it", async () => {
  const first = await generateDevCertificates({ now: NOW });
  const later = new Date(NOW.getTime() + (DEV_CERT_VALIDITY.caDays - 100) * DAY_MS);
  const second = await generateDevCertificates({
    now: later,
    ca: { cert: first.caCert, key: first.caKey },
    clientName: "bob",
  });
  assert.equal(second.caCert, first.caCert);
  assert.equal(second.caKey, first.caKey);
  const ca = inspect(first.caCert);
  const cert = inspect(second.cert);
  assert.equal(await verifiedBy(cert, ca), true);
  assert.equal(await verifiedBy(inspect(second.clientCert!), ca), true);
  assert.deepEqual(readTime(cert.notAfter), readTime(ca.notAfter));
  assert.deepEqual(second.notAfter, readTime(ca.notAfter));
});

Deno.test("generateDevCertificates() refuses a given CA that cannot sign", async (t) => {
  const one = await generateDevCertificates({ now: NOW });
  const other = await generateDevCertificates({ now: NOW });
  const rsa = await crypto.subtle.generateKey(
    {
      name: "RSASSA-PKCS1-v1_5",
      modulusLength: 2048,
      publicExponent: Uint8Array.of(1, 0, 1),
      hash: "SHA-256",
    },
    true,
    ["sign"],
  );
  const rsaDer = new Uint8Array(await crypto.subtle.exportKey("pkcs8", rsa.privateKey));
  const rsaPem = `-----BEGIN PRIVATE KEY-----\n${
    btoa(String.fromCharCode(...rsaDer)).replace(/.{64}/g, "$&\n")
  }\n-----END PRIVATE KEY-----\n`;
  const cases: [string, { cert: string; key: string }, Date, RegExp][] = [
    [
      "key of another CA",
      { cert: one.caCert, key: other.caKey },
      NOW,
      /^TypeError: Cannot use development CA: its certificate does not match its key$/,
    ],
    [
      "a leaf certificate",
      { cert: one.cert, key: one.key },
      NOW,
      /^TypeError: Cannot use development CA: its certificate is not a CA certificate$/,
    ],
    [
      "expired",
      { cert: one.caCert, key: one.caKey },
      new Date(NOW.getTime() + 4000 * DAY_MS),
      /^RangeError: Cannot use development CA: its certificate expired at "2036-/,
    ],
    [
      "SEC1 key",
      {
        cert: one.caCert,
        key: "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
      },
      NOW,
      /^TypeError: Cannot load CA key: it is not an unencrypted PKCS#8 key/,
    ],
    [
      "RSA key",
      { cert: one.caCert, key: rsaPem },
      NOW,
      /^TypeError: Cannot load CA key: it is not an ECDSA P-256 key$/,
    ],
    [
      "no PEM",
      { cert: "hello", key: one.caKey },
      NOW,
      /^TypeError: Cannot read CA certificate: no "CERTIFICATE" PEM block found$/,
    ],
  ];
  for (const [name, ca, now, message] of cases) {
    await t.step(name, async () => {
      await assert.rejects(generateDevCertificates({ ca, now }), message);
    });
  }
});

Deno.test("generateDevCertificates() rejects with the reason of an aborted signal", async () => {
  const reason = new Error("stop");
  await assert.rejects(generateDevCertificates({ signal: AbortSignal.abort(reason) }), reason);
});

Deno.test("certificateNotAfter() reads the notAfter of a PEM certificate", async (t) => {
  await t.step("generated", async () => {
    const { cert, caCert, notAfter } = await generateDevCertificates({ now: NOW });
    assert.deepEqual(certificateNotAfter(cert), notAfter);
    assert.deepEqual(certificateNotAfter(caCert), new Date(NOW.getTime() + 3650 * DAY_MS));
    assert.deepEqual(certificateNotAfter(cert + caCert), notAfter, "the first of a chain");
  });
  await t.step("not a certificate", () => {
    assert.throws(
      () => certificateNotAfter("nothing"),
      /^TypeError: Cannot read certificate: no "CERTIFICATE" PEM block found$/,
    );
    const garbage = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert.throws(
      () => certificateNotAfter(garbage),
      /^TypeError: Cannot read certificate: it is not a valid X.509 certificate$/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Real TLS connections

async function readExactly(conn: Deno.Conn, length: number): Promise<string> {
  const buffer = new Uint8Array(length);
  let filled = 0;
  while (filled < length) {
    const n = await conn.read(buffer.subarray(filled));
    if (n === null) break;
    filled += n;
  }
  return decoder.decode(buffer.subarray(0, filled));
}

/** Connects a Deno TLS client to a Deno TLS server and exchanges "ping" and "pong". */
async function pingPong(
  server: { hostname: string; cert: string; key: string },
  client: Omit<Deno.ConnectTlsOptions, "port">,
): Promise<string> {
  using listener = Deno.listenTls({ port: 0, ...server });
  const accepted = listener.accept();
  using conn = await Deno.connectTls({ port: listener.addr.port, ...client });
  using peer = await accepted;
  const [clientSide, serverSide] = await Promise.allSettled([conn.handshake(), peer.handshake()]);
  if (clientSide.status === "rejected") throw clientSide.reason;
  if (serverSide.status === "rejected") throw serverSide.reason;
  await conn.write(encoder.encode("ping"));
  assert.equal(await readExactly(peer, 4), "ping");
  await peer.write(encoder.encode("pong"));
  return await readExactly(conn, 4);
}

function canListenOnIpv6(): boolean {
  try {
    Deno.listen({ hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
}

Deno.test("rustls accepts the development chain over a real connection", async (t) => {
  const { caCert, cert, key } = await generateDevCertificates();
  const cases: [string, string][] = [
    ["localhost", "127.0.0.1"],
    ["127.0.0.1", "127.0.0.1"],
    ["::1", "::1"],
  ];
  const ipv6 = canListenOnIpv6();
  for (const [hostname, listenOn] of cases) {
    await t.step({
      name: `connect to ${hostname}`,
      ignore: listenOn === "::1" && !ipv6,
      fn: async () => {
        const reply = await pingPong({ hostname: listenOn, cert, key }, {
          hostname,
          caCerts: [caCert],
        });
        assert.equal(reply, "pong");
      },
    });
  }
  await t.step("a client that trusts another CA refuses the server", async () => {
    const other = await generateDevCertificates();
    await assert.rejects(
      pingPong({ hostname: "127.0.0.1", cert, key }, {
        hostname: "localhost",
        caCerts: [other.caCert],
      }),
      /UnknownIssuer|invalid peer certificate/,
    );
  });
});

Deno.test("a node:tls server that requires client certificates accepts the development client certificate", async (t) => {
  const certs = await generateDevCertificates({ clientName: "alice" });
  const stranger = await generateDevCertificates({ clientName: "mallory" });
  const server = tls.createServer({
    cert: certs.cert,
    key: certs.key,
    ca: [certs.caCert],
    requestCert: true,
    rejectUnauthorized: true,
  }, (socket) => {
    const peer = socket.getPeerCertificate();
    socket.end(`hello ${peer.subject.CN}`);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  async function call(keys: { cert: string; key: string } | undefined): Promise<string> {
    using conn = await Deno.connectTls({
      hostname: "localhost",
      port,
      caCerts: [certs.caCert],
      ...keys,
    });
    await conn.handshake();
    return await readExactly(conn, "hello alice".length);
  }
  try {
    await t.step("with the client certificate", async () => {
      assert.equal(await call({ cert: certs.clientCert!, key: certs.clientKey! }), "hello alice");
    });
    await t.step("without a client certificate", async () => {
      await assert.rejects(call(undefined), /CertificateRequired|alert|closed|reset/i);
    });
    await t.step("with a certificate from another CA", async () => {
      await assert.rejects(
        call({ cert: stranger.clientCert!, key: stranger.clientKey! }),
        /alert|closed|reset|BadCertificate|UnknownCA/i,
      );
    });
  } finally {
    server.close();
    await once(server, "close");
  }
});

// ---------------------------------------------------------------------------------------------
// openssl, when installed

async function findOpenssl(): Promise<boolean> {
  try {
    const command = new Deno.Command("openssl", {
      args: ["version"],
      stdout: "null",
      stderr: "null",
    });
    return (await command.output()).success;
  } catch {
    return false;
  }
}

const hasOpenssl = await findOpenssl();

async function openssl(args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command("openssl", {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(encoder.encode(stdin));
    await writer.close();
  }
  const { success, stdout, stderr } = await child.output();
  const output = decoder.decode(stdout) + decoder.decode(stderr);
  assert.ok(success, `openssl ${args.join(" ")} failed:\n${output}`);
  return output;
}

async function withFiles<T>(
  files: Record<string, string>,
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir();
  try {
    for (const [name, text] of Object.entries(files)) {
      await Deno.writeTextFile(`${dir}/${name}`, text);
    }
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "openssl verifies the development chain strictly and shows the SANs",
  ignore: !hasOpenssl,
  fn: async () => {
    const certs = await generateDevCertificates({
      hosts: ["dev.example.test"],
      clientName: "alice",
    });
    await withFiles({
      "ca.pem": certs.caCert,
      "cert.pem": certs.cert,
      "client.pem": certs.clientCert!,
      "key.pem": certs.key,
    }, async (dir) => {
      const ca = `${dir}/ca.pem`;
      const server = ["-x509_strict", "-purpose", "sslserver", "-CAfile", ca, `${dir}/cert.pem`];
      assert.match(await openssl(["verify", ...server]), /cert\.pem: OK/);
      const client = ["-x509_strict", "-purpose", "sslclient", "-CAfile", ca, `${dir}/client.pem`];
      assert.match(await openssl(["verify", ...client]), /client\.pem: OK/);
      const text = await openssl(["x509", "-in", `${dir}/cert.pem`, "-noout", "-text"]);
      assert.match(
        text,
        /DNS:localhost, IP Address:127\.0\.0\.1, IP Address:0:0:0:0:0:0:0:1, DNS:dev\.example\.test/,
      );
      assert.match(text, /Version: 3 \(0x2\)/);
      assert.match(text, /CA:FALSE/);
      assert.match(text, /TLS Web Server Authentication, TLS Web Client Authentication/);
      const caText = await openssl(["x509", "-in", ca, "-noout", "-text"]);
      assert.match(caText, /X509v3 Basic Constraints: critical\n\s+CA:TRUE, pathlen:0/);
      assert.match(caText, /X509v3 Key Usage: critical\n\s+Certificate Sign, CRL Sign/);
      assert.match(await openssl(["pkey", "-in", `${dir}/key.pem`, "-noout", "-check"]), /valid/);
    });
  },
});

Deno.test({
  name: "openssl s_client verifies a Deno.listenTls server using the development certificate",
  ignore: !hasOpenssl,
  fn: async () => {
    const { caCert, cert, key } = await generateDevCertificates();
    await withFiles({ "ca.pem": caCert }, async (dir) => {
      using listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert, key });
      const client = openssl([
        "s_client",
        "-connect",
        `127.0.0.1:${listener.addr.port}`,
        "-servername",
        "localhost",
        "-verify_hostname",
        "localhost",
        "-CAfile",
        `${dir}/ca.pem`,
        "-verify_return_error",
        "-brief",
        "-ign_eof", // wait for the server to close, so that its reply is read
      ], "ping");
      {
        using conn = await listener.accept();
        await conn.handshake();
        assert.equal(await readExactly(conn, 4), "ping");
        await conn.write(encoder.encode("pong"));
      }
      const output = await client;
      assert.match(output, /Verification: OK/);
      assert.match(output, /Verified peername: localhost/);
      assert.match(output, /pong/);
    });
  },
});

Deno.test({
  name: "generateDevCertificates() signs with a CA that openssl made",
  ignore: !hasOpenssl,
  fn: async () => {
    await withFiles({}, async (dir) => {
      await openssl([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        `${dir}/ca.key`,
      ]);
      await openssl([
        "req",
        "-x509",
        "-new",
        "-key",
        `${dir}/ca.key`,
        "-sha256",
        "-days",
        "30",
        "-subj",
        "/CN=openssl CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        `${dir}/ca.pem`,
      ]);
      const ca = {
        cert: await Deno.readTextFile(`${dir}/ca.pem`),
        key: await Deno.readTextFile(`${dir}/ca.key`),
      };
      const { cert } = await generateDevCertificates({ ca });
      await Deno.writeTextFile(`${dir}/cert.pem`, cert);
      const args = ["verify", "-x509_strict", "-CAfile", `${dir}/ca.pem`, `${dir}/cert.pem`];
      assert.match(await openssl(args), /OK/);
      assert.ok(certificateNotAfter(cert) <= certificateNotAfter(ca.cert));
    });
  },
});

// ---------------------------------------------------------------------------------------------
// Files

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_dev_cert_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

type Texts = { -readonly [K in keyof DevCertPaths]: string };

async function readAll(paths: DevCertPaths): Promise<Texts> {
  const read = (path: string) => Deno.readTextFile(path);
  return {
    caCert: await read(paths.caCert),
    caKey: await read(paths.caKey),
    cert: await read(paths.cert),
    key: await read(paths.key),
    clientCert: await read(paths.clientCert).catch(() => ""),
    clientKey: await read(paths.clientKey).catch(() => ""),
  };
}

Deno.test("writeDevCertificates() creates the folder and the files, keys readable by the owner only", async () => {
  await withTempDir(async (base) => {
    const dir = `${base}/a/b/dev-certs`;
    const files = await writeDevCertificates(dir, { now: NOW, clientName: "alice" });
    const paths = devCertPaths(dir);
    assert.deepEqual(files, {
      dir,
      caCert: { path: paths.caCert, status: "created" },
      caKey: { path: paths.caKey, status: "created" },
      cert: { path: paths.cert, status: "created" },
      key: { path: paths.key, status: "created" },
      clientCert: { path: paths.clientCert, status: "created" },
      clientKey: { path: paths.clientKey, status: "created" },
      notAfter: new Date(NOW.getTime() + DEV_CERT_VALIDITY.leafDays * DAY_MS),
    });
    assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((entry) => entry.name).sort(), [
      "ca.key",
      "ca.pem",
      "cert.pem",
      "client.key",
      "client.pem",
      "key.pem",
    ]);
    if (Deno.build.os !== "windows") {
      for (const key of [paths.caKey, paths.key, paths.clientKey]) {
        assert.equal((await Deno.stat(key)).mode! & 0o777, 0o600, key);
      }
      assert.equal((await Deno.stat(dir)).mode! & 0o077, 0, "the folder is private");
    }
    const texts = await readAll(paths);
    assert.match(texts.caKey, /^-----BEGIN PRIVATE KEY-----\n/);
    const ca = inspect(texts.caCert);
    assert.equal(await verifiedBy(inspect(texts.cert), ca), true);
    assert.equal(await verifiedBy(inspect(texts.clientCert), ca), true);
  });
});

Deno.test("writeDevCertificates() reuses every file of a folder it made", async () => {
  await withTempDir(async (dir) => {
    await writeDevCertificates(dir, { now: NOW, hosts: ["a.test"], clientName: "alice" });
    const before = await readAll(devCertPaths(dir));
    const later = new Date(NOW.getTime() + 100 * DAY_MS);
    const files = await writeDevCertificates(dir, { now: later, clientName: "alice" });
    for (const name of ["caCert", "caKey", "cert", "key", "clientCert", "clientKey"] as const) {
      assert.equal(files[name]?.status, "reused", name);
    }
    assert.deepEqual(await readAll(devCertPaths(dir)), before);
    assert.deepEqual(files.notAfter, certificateNotAfter(before.cert));
  });
});

Deno.test("writeDevCertificates() replaces a certificate that no longer fits but keeps its key", async (t) => {
  const cases: {
    name: string;
    options: Parameters<typeof writeDevCertificates>[1];
    changed: string[];
  }[] = [
    { name: "a new host", options: { now: NOW, hosts: ["b.test"] }, changed: ["cert"] },
    {
      name: "the server certificate expires within renewDays",
      options: { now: new Date(NOW.getTime() + 800 * DAY_MS) },
      changed: ["cert"],
    },
    {
      name: "another client name",
      options: { now: NOW, clientName: "bob" },
      changed: ["clientCert"],
    },
    {
      name: "the CA expires within renewDays",
      options: { now: new Date(NOW.getTime() + 3630 * DAY_MS), clientName: "alice" },
      changed: ["caCert", "cert", "clientCert"],
    },
  ];
  for (const { name, options, changed } of cases) {
    await t.step(name, async () => {
      await withTempDir(async (dir) => {
        await writeDevCertificates(dir, { now: NOW, hosts: ["a.test"], clientName: "alice" });
        const before = await readAll(devCertPaths(dir));
        const files = await writeDevCertificates(dir, options);
        const after = await readAll(devCertPaths(dir));
        for (const file of ["caCert", "caKey", "cert", "key", "clientCert", "clientKey"] as const) {
          if (changed.includes(file)) {
            assert.equal(files[file]?.status, "replaced", file);
            assert.notEqual(after[file], before[file], file);
          } else {
            assert.equal(after[file], before[file], file);
          }
        }
        const ca = inspect(after.caCert);
        assert.equal(await verifiedBy(inspect(after.cert), ca), true);
        assert.equal(await verifiedBy(inspect(after.clientCert), ca), true);
      });
    });
  }
  await t.step("the new server certificate covers the requested hosts", async () => {
    await withTempDir(async (dir) => {
      await writeDevCertificates(dir, { hosts: ["a.test"] });
      await writeDevCertificates(dir, { hosts: ["b.test", "10.0.0.2"] });
      assert.deepEqual(subjectAltNames(inspect(await Deno.readTextFile(devCertPaths(dir).cert))), [
        "DNS:localhost",
        "IP:7f000001",
        "IP:00000000000000000000000000000001",
        "DNS:b.test",
        "IP:0a000002",
      ]);
    });
  });
  await t.step(
    "a renewed CA keeps its key and subject, so old certificates still chain",
    async () => {
      await withTempDir(async (dir) => {
        await writeDevCertificates(dir, { now: NOW });
        const old = await readAll(devCertPaths(dir));
        await writeDevCertificates(dir, { now: new Date(NOW.getTime() + 3630 * DAY_MS) });
        const renewed = inspect(await Deno.readTextFile(devCertPaths(dir).caCert));
        const previous = inspect(old.caCert);
        assert.deepEqual(renewed.subject.raw, previous.subject.raw);
        assert.deepEqual(renewed.spki.raw, previous.spki.raw);
        assert.notDeepEqual(renewed.serial, previous.serial);
        assert.equal(await verifiedBy(inspect(old.cert), renewed), true);
      });
    },
  );
});

Deno.test("writeDevCertificates() issues a certificate for a key whose certificate is missing", async (t) => {
  for (
    const [cert, key] of [["caCert", "caKey"], ["cert", "key"], [
      "clientCert",
      "clientKey",
    ]] as const
  ) {
    await t.step(key, async () => {
      await withTempDir(async (dir) => {
        const paths = devCertPaths(dir);
        await writeDevCertificates(dir, { clientName: "alice" });
        const keyText = await Deno.readTextFile(paths[key]);
        await Deno.remove(paths[cert]);
        const files = await writeDevCertificates(dir, { clientName: "alice" });
        assert.equal(files[cert]?.status, "created");
        assert.equal(files[key]?.status, "reused");
        assert.equal(await Deno.readTextFile(paths[key]), keyText);
        const ca = inspect(await Deno.readTextFile(paths.caCert));
        assert.equal(await verifiedBy(inspect(await Deno.readTextFile(paths.cert)), ca), true);
      });
    });
  }
  await t.step("a certificate whose key is missing gets a new key", async () => {
    await withTempDir(async (dir) => {
      const paths = devCertPaths(dir);
      await writeDevCertificates(dir);
      await Deno.remove(paths.key);
      const files = await writeDevCertificates(dir);
      assert.equal(files.key.status, "created");
      assert.equal(files.cert.status, "replaced");
      const cert = await Deno.readTextFile(paths.cert);
      const key = await Deno.readTextFile(paths.key);
      assert.equal(
        await pingPong({ hostname: "127.0.0.1", cert, key }, {
          hostname: "localhost",
          caCerts: [await Deno.readTextFile(paths.caCert)],
        }),
        "pong",
      );
    });
  });
});

Deno.test("writeDevCertificates() refuses, and changes nothing, when a CA or key file is unusable", async (t) => {
  const sec1 = "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n";
  const cases: {
    name: string;
    spoil: (dir: string, paths: ReturnType<typeof devCertPaths>) => Promise<void>;
    message: (paths: ReturnType<typeof devCertPaths>) => string;
  }[] = [
    {
      name: "ca.pem without ca.key",
      spoil: (_, paths) => Deno.remove(paths.caKey),
      message: (paths) =>
        `Cannot write development certificates: "${paths.caCert}" exists without its key "${paths.caKey}"`,
    },
    {
      name: "ca.pem of another key",
      spoil: async (_, paths) => {
        const other = await generateDevCertificates();
        await Deno.writeTextFile(paths.caCert, other.caCert);
      },
      message: (paths) =>
        `Cannot write development certificates: "${paths.caCert}" does not match its key "${paths.caKey}"`,
    },
    {
      name: "key.pem that is not PKCS#8",
      spoil: (_, paths) => Deno.writeTextFile(paths.key, sec1),
      message: (paths) =>
        `Cannot load key "${paths.key}": it is not an unencrypted PKCS#8 key (convert it with "openssl pkcs8 -topk8 -nocrypt")`,
    },
    {
      name: "ca.key that is not a key",
      spoil: (_, paths) => Deno.writeTextFile(paths.caKey, "hello"),
      message: (paths) => `Cannot read key "${paths.caKey}": no "PRIVATE KEY" PEM block found`,
    },
  ];
  for (const { name, spoil, message } of cases) {
    await t.step(name, async () => {
      await withTempDir(async (dir) => {
        const paths = devCertPaths(dir);
        await writeDevCertificates(dir);
        await spoil(dir, paths);
        const before = await Array.fromAsync(Deno.readDir(dir));
        const texts: Record<string, string> = {};
        for (const entry of before) {
          texts[entry.name] = await Deno.readTextFile(`${dir}/${entry.name}`);
        }
        await assert.rejects(writeDevCertificates(dir), (error: unknown) => {
          assert.ok(error instanceof Error);
          assert.equal(error.message, message(paths));
          return true;
        });
        const after: Record<string, string> = {};
        for await (const entry of Deno.readDir(dir)) {
          after[entry.name] = await Deno.readTextFile(`${dir}/${entry.name}`);
        }
        assert.deepEqual(after, texts);
      });
    });
  }
});

Deno.test("writeDevCertificates() leaves client files alone without a client name", async () => {
  await withTempDir(async (dir) => {
    const files = await writeDevCertificates(dir);
    assert.equal(files.clientCert, undefined);
    assert.equal(files.clientKey, undefined);
    assert.equal("clientCert" in files, false);
    await assert.rejects(Deno.stat(devCertPaths(dir).clientKey), Deno.errors.NotFound);
  });
});

Deno.test("writeDevCertificates() rejects bad input and an aborted signal before touching the folder", async (t) => {
  await withTempDir(async (base) => {
    const dir = `${base}/never`;
    await t.step("bad host", async () => {
      await assert.rejects(writeDevCertificates(dir, { hosts: ["a b"] }), TypeError);
    });
    await t.step("aborted", async () => {
      const reason = new Error("stop");
      await assert.rejects(
        writeDevCertificates(dir, { signal: AbortSignal.abort(reason) }),
        reason,
      );
    });
    await assert.rejects(Deno.stat(dir), Deno.errors.NotFound);
  });
});

Deno.test("ensureDevCertificates() makes certificates on first use that a TLS server can use", async () => {
  await withTempDir(async (dir) => {
    const first = await ensureDevCertificates({ dir });
    assert.equal(first.cert.status, "created");
    const second = await ensureDevCertificates({ dir });
    assert.equal(second.cert.status, "reused");
    assert.equal(second.key.status, "reused");
    const cert = await Deno.readTextFile(second.cert.path);
    const key = await Deno.readTextFile(second.key.path);
    const caCert = await Deno.readTextFile(second.caCert.path);
    assert.deepEqual(certificateNotAfter(cert), second.notAfter);
    const reply = await pingPong({ hostname: "127.0.0.1", cert, key }, {
      hostname: "localhost",
      caCerts: [caCert],
    });
    assert.equal(reply, "pong");
  });
});

Deno.test("ensureDevCertificates() defaults to dev-certs in $TLSRPC_HOME", async () => {
  await withTempDir(async (home) => {
    const saved = Deno.env.get("TLSRPC_HOME");
    Deno.env.set("TLSRPC_HOME", home);
    try {
      const files = await ensureDevCertificates();
      assert.equal(files.dir, `${home}/dev-certs`);
      assert.equal(defaultDevCertDir(), `${home}/dev-certs`);
      assert.equal((await Deno.stat(`${home}/dev-certs/key.pem`)).isFile, true);
    } finally {
      if (saved === undefined) Deno.env.delete("TLSRPC_HOME");
      else Deno.env.set("TLSRPC_HOME", saved);
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Unsafe folders (POSIX only: Windows folders are not checked)

const posixOnly = Deno.build.os === "windows";
// Only root can give a file to another user; tests run as root in CI.
const canChown = !posixOnly && Deno.uid() === 0;
const NOBODY = 65534;

/** The names and texts of the files in a folder, to show that nothing changed. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const texts: Record<string, string> = {};
  for await (const entry of Deno.readDir(dir)) {
    texts[entry.name] = await Deno.readTextFile(`${dir}/${entry.name}`);
  }
  return texts;
}

async function assertUnsafe(
  promise: Promise<unknown>,
  path: string,
  message: string,
): Promise<void> {
  await assert.rejects(promise, (error: unknown) => {
    assert.ok(error instanceof UnsafeStateError, `${error}`);
    assert.equal(error.name, "UnsafeStateError");
    assert.equal(error.path, path);
    assert.equal(error.message, message);
    return true;
  });
}

Deno.test({
  name: "writeDevCertificates() refuses, and changes nothing in, a folder that others can write",
  ignore: posixOnly,
  fn: async (t) => {
    const cases: [string, number][] = [
      ["world-writable", 0o777],
      ["group-writable", 0o770],
      ["writable by others only", 0o702],
      ["sticky but world-writable", 0o1777],
    ];
    for (const [name, mode] of cases) {
      await t.step(name, async () => {
        await withTempDir(async (base) => {
          // Someone else's CA, planted where the user's state folder will be.
          const dir = `${base}/dev-certs`;
          const planted = await generateDevCertificates();
          await Deno.mkdir(dir);
          await Deno.writeTextFile(`${dir}/ca.key`, planted.caKey, { mode: 0o644 });
          await Deno.writeTextFile(`${dir}/ca.pem`, planted.caCert, { mode: 0o644 });
          await Deno.chmod(dir, mode);
          const before = await snapshot(dir);
          const octal = mode.toString(8).padStart(4, "0");
          const message =
            `Cannot use development certificates: "${dir}" is writable by other users (mode ${octal}); run "chmod 700 ${dir}" or use another folder`;
          await assertUnsafe(writeDevCertificates(dir), dir, message);
          await assertUnsafe(ensureDevCertificates({ dir }), dir, message);
          await assertUnsafe(checkDevCertDir(dir), dir, message);
          assert.deepEqual(await snapshot(dir), before);
        });
      });
    }
    await t.step("a path that needs quoting is quoted in the command", async () => {
      await withTempDir(async (base) => {
        const dir = `${base}/it's here`;
        await Deno.mkdir(dir);
        await Deno.chmod(dir, 0o777);
        await assertUnsafe(
          checkDevCertDir(dir),
          dir,
          `Cannot use development certificates: "${dir}" is writable by other users (mode 0777); run "chmod 700 '${base}/it'\\''s here'" or use another folder`,
        );
      });
    });
  },
});

Deno.test({
  name: "writeDevCertificates() refuses, and changes nothing, when a key file is open to others",
  ignore: posixOnly,
  fn: async (t) => {
    const cases: [keyof DevCertPaths, number][] = [
      ["caKey", 0o644],
      ["key", 0o644],
      ["clientKey", 0o640],
      ["key", 0o604],
      ["caKey", 0o660],
    ];
    for (const [file, mode] of cases) {
      await t.step(`${file} with mode ${mode.toString(8)}`, async () => {
        await withTempDir(async (dir) => {
          const paths = devCertPaths(dir);
          await writeDevCertificates(dir, { now: NOW, clientName: "alice" });
          await Deno.chmod(paths[file], mode);
          const before = await snapshot(dir);
          const octal = mode.toString(8).padStart(4, "0");
          const path = paths[file];
          const message =
            `Cannot use development certificates: "${path}" is open to other users (mode ${octal}); run "chmod 600 ${path}", or if others may have read it, remove "${dir}" to start over with new keys`;
          // A later time and a new host: without the check, certificates would be replaced.
          const options = { now: new Date(NOW.getTime() + 3630 * DAY_MS), hosts: ["b.test"] };
          await assertUnsafe(writeDevCertificates(dir, options), path, message);
          await assertUnsafe(checkDevCertDir(dir), path, message);
          assert.deepEqual(await snapshot(dir), before);
        });
      });
    }
  },
});

Deno.test({
  name: "writeDevCertificates() refuses a certificate file that others can write",
  ignore: posixOnly,
  fn: async (t) => {
    for (const file of ["caCert", "cert", "clientCert"] as const) {
      await t.step(file, async () => {
        await withTempDir(async (dir) => {
          const paths = devCertPaths(dir);
          await writeDevCertificates(dir, { clientName: "alice" });
          await Deno.chmod(paths[file], 0o666);
          const path = paths[file];
          await assertUnsafe(
            writeDevCertificates(dir),
            path,
            `Cannot use development certificates: "${path}" is writable by other users (mode 0666); run "chmod 644 ${path}"`,
          );
        });
      });
    }
  },
});

Deno.test({
  name: "writeDevCertificates() refuses a folder or file that belongs to another user",
  ignore: !canChown,
  fn: async (t) => {
    const uid = Deno.uid();
    await t.step("the folder", async () => {
      await withTempDir(async (base) => {
        const dir = `${base}/dev-certs`;
        await Deno.mkdir(dir, { mode: 0o755 });
        await Deno.chown(dir, NOBODY, NOBODY);
        const message =
          `Cannot use development certificates: "${dir}" belongs to another user (uid ${NOBODY}, not ${uid}); use another folder`;
        await assertUnsafe(writeDevCertificates(dir), dir, message);
        await assertUnsafe(checkDevCertDir(dir), dir, message);
        assert.deepEqual(await snapshot(dir), {});
      });
    });
    for (const file of ["caKey", "caCert", "key"] as const) {
      await t.step(file, async () => {
        await withTempDir(async (dir) => {
          const paths = devCertPaths(dir);
          await writeDevCertificates(dir);
          await Deno.chown(paths[file], NOBODY, NOBODY);
          const before = await snapshot(dir);
          const path = paths[file];
          await assertUnsafe(
            writeDevCertificates(dir, { hosts: ["b.test"] }),
            path,
            `Cannot use development certificates: "${path}" belongs to another user (uid ${NOBODY}, not ${uid}); remove "${dir}" to start over or use another folder`,
          );
          assert.deepEqual(await snapshot(dir), before);
        });
      });
    }
  },
});

Deno.test({
  name: "ensureDevCertificates() and checkDevCertDir() suggest TLSRPC_HOME for the default folder",
  ignore: posixOnly,
  fn: async () => {
    await withTempDir(async (home) => {
      const saved = Deno.env.get("TLSRPC_HOME");
      Deno.env.set("TLSRPC_HOME", home);
      try {
        const dir = `${home}/dev-certs`;
        await Deno.mkdir(dir);
        await Deno.chmod(dir, 0o777);
        const message =
          `Cannot use development certificates: "${dir}" is writable by other users (mode 0777); run "chmod 700 ${dir}" or set TLSRPC_HOME to a new folder`;
        await assertUnsafe(ensureDevCertificates(), dir, message);
        await assertUnsafe(checkDevCertDir(), dir, message);
        await Deno.chmod(dir, 0o700);
        await ensureDevCertificates();
        await checkDevCertDir();
      } finally {
        if (saved === undefined) Deno.env.delete("TLSRPC_HOME");
        else Deno.env.set("TLSRPC_HOME", saved);
      }
    });
  },
});

Deno.test("checkDevCertDir() accepts a folder writeDevCertificates() made, and rejects a missing one", async () => {
  await withTempDir(async (base) => {
    const dir = `${base}/dev-certs`;
    await assert.rejects(checkDevCertDir(dir), Deno.errors.NotFound);
    await writeDevCertificates(dir, { clientName: "alice" });
    await checkDevCertDir(dir);
    const reason = new Error("stop");
    await assert.rejects(checkDevCertDir(dir, { signal: AbortSignal.abort(reason) }), reason);
    await Deno.writeTextFile(`${base}/file`, "");
    await assert.rejects(checkDevCertDir(`${base}/file`), Deno.errors.NotADirectory);
  });
});

/** Runs a script in a Deno without --allow-sys, so that Deno.uid() is not allowed. */
async function runWithout(
  permissions: string[],
  script: string,
): Promise<{ success: boolean; output: string }> {
  const dir = await Deno.makeTempDir({ prefix: "tlsrpc_dev_cert_script_" });
  try {
    const module = new URL("../dev_cert.ts", import.meta.url).href;
    await Deno.writeTextFile(
      `${dir}/script.ts`,
      `import * as devCert from ${JSON.stringify(module)};\n${script}`,
    );
    const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", "--quiet", ...permissions, `${dir}/script.ts`],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { success, output: decoder.decode(stdout) + decoder.decode(stderr) };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test({
  name: "without --allow-sys, the current user is found from a file made in the folder",
  ignore: posixOnly,
  fn: async (t) => {
    await t.step("a fresh folder works, and no probe file is left", async () => {
      await withTempDir(async (base) => {
        const dir = `${base}/dev-certs`;
        const { success, output } = await runWithout(
          ["--allow-read", `--allow-write=${base}`],
          `const files = await devCert.writeDevCertificates(${JSON.stringify(dir)});
           await devCert.checkDevCertDir(${JSON.stringify(dir)});
           console.log(files.key.status);`,
        );
        assert.ok(success, output);
        assert.equal(output.trim(), "created");
        assert.deepEqual(Object.keys(await snapshot(dir)).sort(), [
          "ca.key",
          "ca.pem",
          "cert.pem",
          "key.pem",
        ]);
      });
    });
    await t.step({
      name: "a folder of another user is refused",
      ignore: !canChown,
      fn: async () => {
        await withTempDir(async (base) => {
          const dir = `${base}/dev-certs`;
          await Deno.mkdir(dir, { mode: 0o755 });
          await Deno.chown(dir, NOBODY, NOBODY);
          const { success, output } = await runWithout(
            ["--allow-read", `--allow-write=${base}`],
            `await devCert.writeDevCertificates(${JSON.stringify(dir)});`,
          );
          assert.equal(success, false);
          assert.match(output, /UnsafeStateError: .* belongs to another user \(uid 65534, not 0\)/);
          assert.deepEqual(await snapshot(dir), {});
        });
      },
    });
    await t.step("without write access either, the check is refused", async () => {
      await withTempDir(async (dir) => {
        const { success, output } = await runWithout(
          ["--allow-read"],
          `await devCert.checkDevCertDir(${JSON.stringify(dir)});`,
        );
        assert.equal(success, false);
        assert.match(
          output,
          /NotCapable: Cannot check development certificates: .*--allow-sys=uid/,
        );
      });
    });
  },
});

Deno.test("defaultStateDir() follows TLSRPC_HOME, then the XDG and Windows conventions", async (t) => {
  const cases: [string, typeof Deno.build.os, Record<string, string>, string | RegExp][] = [
    [
      "TLSRPC_HOME wins",
      "linux",
      { TLSRPC_HOME: "/opt/t", XDG_STATE_HOME: "/x", HOME: "/h" },
      "/opt/t",
    ],
    ["XDG_STATE_HOME", "linux", { XDG_STATE_HOME: "/x/state", HOME: "/h" }, "/x/state/tlsrpc"],
    [
      "relative XDG_STATE_HOME is ignored",
      "linux",
      { XDG_STATE_HOME: "x", HOME: "/h" },
      "/h/.local/state/tlsrpc",
    ],
    [
      "empty TLSRPC_HOME is ignored",
      "darwin",
      { TLSRPC_HOME: "", HOME: "/Users/a" },
      "/Users/a/.local/state/tlsrpc",
    ],
    ["HOME", "linux", { HOME: "/home/ada" }, "/home/ada/.local/state/tlsrpc"],
    [
      "LOCALAPPDATA",
      "windows",
      { LOCALAPPDATA: "C:\\Users\\a\\AppData\\Local", HOME: "/h" },
      "C:\\Users\\a\\AppData\\Local\\tlsrpc",
    ],
    [
      "USERPROFILE",
      "windows",
      { USERPROFILE: "C:\\Users\\a" },
      "C:\\Users\\a\\AppData\\Local\\tlsrpc",
    ],
    ["TLSRPC_HOME on Windows", "windows", { TLSRPC_HOME: "D:\\t", LOCALAPPDATA: "C:\\l" }, "D:\\t"],
    [
      "nothing set",
      "linux",
      {},
      /^Error: Cannot find state folder: none of "TLSRPC_HOME", "XDG_STATE_HOME" and "HOME" is set$/,
    ],
    [
      "nothing set on Windows",
      "windows",
      {},
      /^Error: Cannot find state folder: none of "TLSRPC_HOME", "LOCALAPPDATA" and "USERPROFILE" is set$/,
    ],
  ];
  for (const [name, os, vars, expected] of cases) {
    await t.step(name, () => {
      const options = { env: (key: string) => vars[key], os };
      if (expected instanceof RegExp) {
        assert.throws(() => defaultStateDir(options), expected);
      } else {
        assert.equal(defaultStateDir(options), expected);
      }
    });
  }
  await t.step("defaultDevCertDir() adds dev-certs", () => {
    const env = (key: string) =>
      ({ HOME: "/h", LOCALAPPDATA: "C:\\l" } as Record<string, string>)[key];
    assert.equal(defaultDevCertDir({ env, os: "linux" }), "/h/.local/state/tlsrpc/dev-certs");
    assert.equal(defaultDevCertDir({ env, os: "windows" }), "C:\\l\\tlsrpc\\dev-certs");
  });
});
