// devCaCerts(): the library's way to trust the development CA as the CLI does, never a planted one.

import assert from "node:assert/strict";
import { devCaCerts, UnsafeStateError, writeDevCertificates } from "../dev_cert.ts";
import { connect } from "../client.ts";
import { serve } from "../server.ts";

Deno.test("devCaCerts() gives the development CA, which connect() then trusts", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeDevCertificates(dir);
    const caCerts = await devCaCerts({ dir });
    assert.equal(caCerts.length, 1);
    assert.match(caCerts[0]!, /^-----BEGIN CERTIFICATE-----/);
    await using server = await serve({ add: (a: number, b: number) => a + b }, {
      port: 0,
      cert: await Deno.readTextFile(`${dir}/cert.pem`),
      key: await Deno.readTextFile(`${dir}/key.pem`),
      onListen: () => {},
    });
    await using client = await connect({ port: server.addr.port, caCerts });
    assert.equal(await client.call("add", 2, 3), 5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("devCaCerts() is empty when there is no development CA yet", async () => {
  const dir = await Deno.makeTempDir();
  try {
    assert.deepEqual(await devCaCerts({ dir: `${dir}/none` }), []);
    assert.deepEqual(await devCaCerts({ dir }), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "devCaCerts() refuses a folder others can write to, so a planted CA is never trusted",
  ignore: Deno.build.os === "windows",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      await writeDevCertificates(dir);
      await Deno.chmod(dir, 0o777);
      await assert.rejects(devCaCerts({ dir }), UnsafeStateError);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
