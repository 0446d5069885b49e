/**
 * Binary upload: bytes travel raw (no base64), as one frame of about their own size. The server
 * stores uploads and answers their SHA-256; the client checks it.
 *
 *     deno run --allow-net --allow-read examples/upload.ts
 *
 * Runs its own server on a free port with the test certificates, then uploads 8 MiB.
 *
 * @module
 */

import { connect, serve } from "../mod.ts";

/** The upload service: bytes in, digest out. */
const store = new Map<string, Uint8Array>();
const handlers = {
  async put(name: string, bytes: Uint8Array): Promise<{ size: number; sha256: string }> {
    // The bytes are a view of the received frame; keep a copy of what we store.
    store.set(name, bytes.slice());
    return { size: bytes.length, sha256: await sha256(bytes) };
  },
  get(name: string): Uint8Array | null {
    return store.get(name) ?? null;
  },
};

async function sha256(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

const read = (name: string) => Deno.readTextFile(new URL(`../testdata/${name}`, import.meta.url));
await using server = await serve(handlers, {
  port: 0,
  cert: await read("server.pem"),
  key: await read("server.key"),
  onListen: () => {},
});
await using client = await connect<typeof handlers>({
  port: server.addr.port,
  caCerts: [await read("ca.pem")],
});

const data = new Uint8Array(8 * 1024 * 1024);
for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
const receipt = await client.proxy.put("blob", data);
const expected = await sha256(data);
console.log(`uploaded ${receipt.size} bytes, sha256 ${receipt.sha256.slice(0, 16)}...`);
console.log(`digest matches: ${receipt.sha256 === expected}`);
const back = await client.proxy.get("blob");
console.log(
  `downloaded ${back?.length} bytes, equal: ${back !== null && (await sha256(back)) === expected}`,
);
