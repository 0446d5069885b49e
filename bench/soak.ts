/**
 * Soak test: a server in this process (node transport, every limit on with short timeouts), good
 * clients calling it for the whole run, and chaos workers opening bad connections of every kind
 * the fault suite (fault_test.ts) knows, in a loop. A good call must never be lost or answered
 * wrongly, and memory must not grow without bound.
 *
 * ```sh
 * deno run -A bench/soak.ts [--seconds 30] [--clients 200]
 * ```
 *
 * Prints the calls made, lost and mismatched, what the chaos did, and the process RSS at start, after
 * the warm-up and at the end. Exits 0 when no call was lost or mismatched and RSS grew less than
 * `RSS_GROWTH_BOUND` after the warm-up; 1 otherwise; 2 on a usage error.
 *
 * @module
 */

import { isDeepStrictEqual, parseArgs } from "node:util";
import { serve } from "../server.ts";
import { connect, type RpcClient } from "../client.ts";
import {
  certs,
  closeQuietly,
  delay,
  framed,
  header,
  PARTIAL_CLIENT_HELLO,
  RawClient,
  recordClientHello,
  request,
  settlesWithin,
  TcpClient,
  writeAll,
} from "../tests/_util.ts";
import { aliasedFrame, bigIntFrame, jsonValuesFrame } from "./attacks.ts";

/**
 * How much the process RSS may grow from the end of the warm-up (a tenth of the run under full
 * load, at least 1 s) to the end of the run. Under load the RSS rises from the idle start to a
 * working set (200 clients' calls, the chaos's 1 MiB replies queued up to maxQueuedBytes, V8's heap
 * slack: about 250 to 320 MiB in all on a 30 s run) and then moves up and down with the garbage
 * collector by some 80 MiB. 192 MiB above the warm reading leaves room for that; a leak of 300
 * bytes a call (some 700 000 calls a run), or of a connection's buffers for each of the thousands
 * of chaos connections, goes over it.
 */
const RSS_GROWTH_BOUND = 192 * 1024 * 1024;

/** Concurrent chaos workers; each runs one bad behaviour at a time. */
const CHAOS_WORKERS = 4;

/** The server's limits: every one on, and short enough that the chaos meets each of them. */
const LIMITS = {
  handshakeTimeout: 1000,
  idleTimeout: 2000,
  frameTimeout: 1000,
  writeTimeout: 1000,
  maxInFlight: 64,
  maxQueuedBytes: 4 * 1024 * 1024,
  maxFrameBytes: 1024 * 1024,
  maxDepth: 128,
  shutdownTimeout: 1000,
} as const;

/** The most a good call may take before it counts as lost. */
const CALL_TIMEOUT_MS = 15_000;

const encoder = new TextEncoder();
const MIB = 1024 * 1024;

// --- command line --------------------------------------------------------------------------------

function usage(message: string): never {
  console.error(`error: ${message}\nUsage: deno run -A bench/soak.ts [--seconds N] [--clients N]`);
  Deno.exit(2);
}

function positive(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < 1) {
    usage(`--${flag} must be a whole number of at least 1, got "${value}"`);
  }
  return number;
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    options: { seconds: { type: "string" }, clients: { type: "string" } },
    strict: true,
  });
} catch (error) {
  usage(error instanceof Error ? error.message : String(error));
}
const seconds = positive("seconds", parsed.values.seconds, 30);
const clientCount = positive("clients", parsed.values.clients, 200);

// --- helpers -------------------------------------------------------------------------------------

function randomInt(below: number): number {
  return Math.floor(Math.random() * below);
}

function pick<T>(items: readonly T[]): T {
  return items[randomInt(items.length)]!;
}

/** Characters of string values: some that JSON escapes, some of two, three and four UTF-8 bytes. */
const CHARACTERS = [...'abcxyz019 _-"\\/\n\téüßñ漢字😀🚀'];

/**
 * Characters of object keys: none that JSON escapes. Deno 2.9.6's V8 (15.0) parses a key with
 * an escape wrongly when an earlier object took the same map transition with another escape of
 * the same length: after `JSON.parse('{"k0":1,"k1\\\\":2}')`, `JSON.parse('{"k0":1,"k1\\t":2}')`
 * has the keys `k0` and `k1\` (backslash), not `k1<TAB>`. tlsrpc cannot work around that, and
 * it is no fault of the server, so the soak keeps it out of its keys.
 */
const KEY_CHARACTERS = [..."abcxyz019 _-éüßñ漢字😀🚀"];

function randomString(maxLength: number, characters = CHARACTERS): string {
  return Array.from({ length: randomInt(maxLength + 1) }, () => pick(characters)).join("");
}

/** A random JSON value; every value survives a JSON round trip unchanged (no -0, no __proto__ key). */
function randomValue(depth = 0): unknown {
  switch (randomInt(depth >= 4 ? 5 : 7)) {
    case 0:
      return null;
    case 1:
      return Math.random() < 0.5;
    case 2:
      return randomInt(2 ** 31) - 2 ** 30;
    case 3:
      return Math.random() * 1e6 + 1;
    case 4:
      return randomString(200);
    case 5:
      return Array.from({ length: randomInt(6) }, () => randomValue(depth + 1));
    default:
      return Object.fromEntries(
        Array.from({ length: randomInt(6) }, (_, i) => [
          `k${i}${randomString(6, KEY_CHARACTERS)}`,
          randomValue(depth + 1),
        ]),
      );
  }
}

// --- the server ----------------------------------------------------------------------------------

/** The reply of `big`: one string, so that the server's buffers, not the handler's, are measured. */
const BIG_REPLY = "x".repeat(MIB - 64);

const handlers = {
  echo: (value: unknown) => value,
  add: (a: number, b: number) => a + b,
  later: async (ms: number, value: unknown) => {
    await delay(Math.min(Math.max(ms, 0), 50));
    return value;
  },
  fail: () => {
    throw new Error("Cannot fail: on purpose");
  },
  never: () => new Promise(() => {}),
  rejectLater: async () => {
    await delay(50);
    throw new Error("Cannot rejectLater: the client is gone");
  },
  big: () => BIG_REPLY,
};

let logLines = 0;
const server = await serve(handlers, {
  port: 0,
  cert: certs.cert,
  key: certs.key,
  transport: "node",
  ...LIMITS,
  // Room for the good clients and a burst of silent connections; two bursts at once meet the cap.
  maxConnections: clientCount + 200,
  onListen: () => {},
  onError: () => void logLines++,
});
const port = server.addr.port;
const hello = await recordClientHello();

// --- good clients --------------------------------------------------------------------------------

let callsMade = 0;
let callsLost = 0;
let mismatched = 0;
let reconnects = 0;
const firstErrors: string[] = [];
let running = true;

function note(kind: string, detail: string): void {
  if (firstErrors.length < 10) firstErrors.push(`${kind}: ${detail}`);
}

function connectGood(): Promise<RpcClient> {
  return connect({
    hostname: "127.0.0.1",
    port,
    caCerts: [certs.ca],
    timeout: CALL_TIMEOUT_MS,
  });
}

/** One good call: counted as made, and as lost or mismatched when it goes wrong. */
async function check(client: RpcClient, method: string, params: unknown[], expected: unknown) {
  callsMade++;
  try {
    const result = await client.call(method, ...params);
    if (!isDeepStrictEqual(result, expected)) {
      mismatched++;
      note("mismatch", `${method} answered ${JSON.stringify(result)?.slice(0, 200)}`);
    }
  } catch (error) {
    callsLost++;
    note("lost", `${method}: ${error instanceof Error ? error.message : String(error)}`);
  }
}

async function goodClient(client: RpcClient): Promise<void> {
  // The run's length bounds the loop; the count only guards against a clock that stands still.
  for (let i = 0; running && i < 10_000_000; i++) {
    if (client.isClosed) {
      // The server dropped a good client: its calls were counted lost; carry on with a new one.
      reconnects++;
      await client.close();
      try {
        client = await connectGood();
      } catch (error) {
        callsLost++;
        note("reconnect", error instanceof Error ? error.message : String(error));
        await delay(100);
        continue;
      }
    }
    const payload = randomValue();
    const a = randomInt(1e6);
    const b = randomInt(1e6);
    const calls = [check(client, "echo", [payload], payload), check(client, "add", [a, b], a + b)];
    if (i % 10 === 0) calls.push(check(client, "later", [randomInt(20), payload], payload));
    await Promise.all(calls);
  }
  await client.close();
}

// --- chaos ---------------------------------------------------------------------------------------

/** A bad client: misbehaves once on a connection (or a few) of its own, then leaves. */
type Chaos = () => Promise<void>;

/** Waits at most `ms` for the server to close a TCP connection, then closes it. */
async function tcpFault(bytes: Uint8Array | undefined, ms: number): Promise<void> {
  await using tcp = await TcpClient.connect(port);
  if (bytes) await tcp.write(bytes);
  await settlesWithin(tcp.closed, ms);
}

/** Runs `misbehave` on a TLS connection, then waits at most `ms` for the server to close it. */
async function rawFault(misbehave: (raw: RawClient) => Promise<void>, ms: number): Promise<void> {
  const raw = await RawClient.connect(port);
  try {
    await misbehave(raw);
    await settlesWithin(raw.closedByServer(), ms);
  } finally {
    raw.close();
  }
}

const chaos: Record<string, Chaos> = {
  plaintext: () => tcpFault(encoder.encode("hello\r\n"), 2000),
  http: () => tcpFault(encoder.encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"), 2000),
  portScan: async () => {
    for (let i = 0; i < 20; i++) closeQuietly(await Deno.connect({ hostname: "127.0.0.1", port }));
  },
  silent: () => tcpFault(undefined, LIMITS.handshakeTimeout + 1000),
  partialHelloSilence: () => tcpFault(PARTIAL_CLIENT_HELLO, LIMITS.handshakeTimeout + 1000),
  partialHelloClose: () => tcpFault(PARTIAL_CLIENT_HELLO, 0),
  hugeRecord: () => tcpFault(new Uint8Array([0x16, 0x03, 0x01, 0xff, 0xff]), 2000),
  corruptHello: () => {
    const bytes = hello.slice();
    bytes[randomInt(bytes.length)]! ^= 1 + randomInt(255);
    return tcpFault(bytes, LIMITS.handshakeTimeout + 1000);
  },
  resetInHandshake: async () => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      await writeAll(conn, hello);
      // Closing with the server's reply unread sends a reset.
      await settlesWithin(conn.read(new Uint8Array(1)), 1000);
    } finally {
      closeQuietly(conn);
    }
  },
  rejectCertificate: async () => {
    const conn = await Deno.connectTls({ hostname: "127.0.0.1", port });
    try {
      await conn.handshake();
    } catch {
      // Expected: the client does not trust the server.
    } finally {
      closeQuietly(conn);
    }
  },
  silentBurst: async () => {
    // With another burst or the other chaos, more than maxConnections leaves room for: refusals.
    const opened = await Promise.allSettled(
      Array.from({ length: 150 }, () => TcpClient.connect(port)),
    );
    await delay(300);
    for (const result of opened) {
      if (result.status === "fulfilled") await result.value[Symbol.asyncDispose]();
    }
  },
  hugeLength: () => rawFault((raw) => raw.sendBytes(header(0xffff_ffff)), 2000),
  zeroLength: () => rawFault((raw) => raw.sendBytes(header(0)), 2000),
  slowloris: () =>
    rawFault(async (raw) => {
      await raw.sendBytes(header(100));
      const closed = raw.closedByServer();
      for (let i = 0; i < 100 && !await settlesWithin(closed, 100); i++) {
        await raw.sendBytes(encoder.encode(" "));
      }
    }, 0),
  closeMidFrame: () =>
    rawFault((raw) => raw.sendBytes(new Uint8Array([...header(100), ...encoder.encode("{")])), 0),
  invalidUtf8: () =>
    rawFault(async (raw) => {
      await raw.send(new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]));
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  invalidJson: () =>
    rawFault(async (raw) => {
      await raw.send('{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]');
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  deepNesting: () =>
    rawFault(async (raw) => {
      await raw.send(`[${"[".repeat(100_000)}${"]".repeat(100_000)}]`);
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  protoPayload: () =>
    rawFault(async (raw) => {
      await raw.send(
        '{"jsonrpc":"2.0","id":1,"method":"echo","params":[{"__proto__":{"polluted":true},' +
          '"constructor":{"prototype":{"polluted":true}}}]}',
      );
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  badMethodNames: () =>
    rawFault(async (raw) => {
      for (
        const [id, method] of ["toString", "constructor", "__proto__", "hasOwnProperty"].entries()
      ) {
        await raw.send(request(id, method, [1]));
        await settlesWithin(raw.receive(), 2000);
      }
    }, 0),
  throwingHandler: () =>
    rawFault(async (raw) => {
      await raw.send(request(1, "fail"));
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  neverResolves: () => rawFault((raw) => raw.send(request(1, "never")), 0),
  rejectsAfterLeaving: () => rawFault((raw) => raw.send(request(1, "rejectLater")), 0),
  flood: () =>
    rawFault(async (raw) => {
      const count = 2000;
      const frames = Array.from(
        { length: count },
        (_, i) => framed(JSON.stringify(request(i, "add", [i, 1]))),
      );
      const bytes = new Uint8Array(frames.reduce((sum, frame) => sum + frame.length, 0));
      frames.reduce((at, frame) => (bytes.set(frame, at), at + frame.length), 0);
      await raw.sendBytes(bytes);
      for (let i = 0; i < count; i++) {
        if (!await settlesWithin(raw.receive(), 2000)) break;
      }
    }, 0),
  neverReads: () =>
    rawFault(async (raw) => {
      const deadline = Date.now() + LIMITS.writeTimeout + 3000;
      for (let i = 0; i < 500 && Date.now() < deadline; i++) {
        try {
          await raw.sendBytes(framed(JSON.stringify(request(i, "big"))));
        } catch {
          return; // closed by the server
        }
        await delay(25);
      }
    }, 0),
  idle: () => rawFault(() => Promise.resolve(), LIMITS.idleTimeout + 1000),
  // The attacks of "Reliability II" (bench/attacks.ts), sized to this server's limits.
  notificationFlood: () =>
    rawFault(async (raw) => {
      // 20 000 calls of 50 ms, 64 at a time (maxInFlight): the server stops reading long before
      // the last, so the writes stall; the bytes are bounded (1 MiB), as the server buffers what it
      // has read (see bench/attacks.ts, notifications-sustained).
      const frame = framed(JSON.stringify({ jsonrpc: "2.0", method: "later", params: [50, 1] }));
      await settlesWithin(raw.sendBytes(repeated(frame, 20_000)), 2000);
    }, 0),
  batchFlood: () =>
    rawFault(async (raw) => {
      const batches = Array.from({ length: 8 }, (_, b) =>
        framed(JSON.stringify(
          Array.from({ length: 1024 }, (_, i) => request(b * 1024 + i, "later", [50, i])),
        )));
      await settlesWithin(raw.sendBytes(repeated(batches, 1)), 2000);
      for (let i = 0; i < batches.length; i++) {
        if (!await settlesWithin(raw.receive(), 2000)) break;
      }
    }, 0),
  oversizedBatch: () =>
    rawFault(async (raw) => {
      await raw.send(Array.from({ length: 1025 }, (_, i) => request(i, "add", [i, 1])));
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  tooManyJsonValues: () =>
    rawFault(async (raw) => {
      // 150 000 objects in 450 KB, a key with an escaped backslash first: over maxJsonValues.
      await raw.sendBytes(jsonValuesFrame(450_000));
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  bigBigInt: () =>
    rawFault(async (raw) => {
      await raw.exchange(request(0, "rpc.hello", { extensions: ["rich"] }));
      await raw.sendBytes(bigIntFrame(900_000)); // 90 times maxBigIntDigits, within the frame limit
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  aliasedSections: () =>
    rawFault(async (raw) => {
      await raw.exchange(request(0, "rpc.hello", { extensions: ["rich"] }));
      await raw.sendBytes(aliasedFrame(1));
      await settlesWithin(raw.receive(), 2000);
    }, 0),
  stopsReading: () =>
    rawFault(async (raw) => {
      // A client that reads its first answers, then asks for 1 MiB replies and reads no more.
      for (let i = 0; i < 3; i++) {
        await settlesWithin(raw.exchange(request(i, "add", [i, 1])), 2000);
      }
      const deadline = Date.now() + LIMITS.writeTimeout + 3000;
      for (let i = 0; i < 100 && Date.now() < deadline; i++) {
        if (!await settlesWithin(raw.sendBytes(framed(JSON.stringify(request(i, "big")))), 1000)) {
          return; // the server stopped reading us, or closed the connection
        }
      }
    }, 0),
};

/** `frames` (one frame or several) back to back, `times` over, in one buffer. */
function repeated(frames: Uint8Array | Uint8Array[], times: number): Uint8Array {
  const parts = Array.isArray(frames) ? frames : [frames];
  const size = parts.reduce((sum, part) => sum + part.length, 0);
  const bytes = new Uint8Array(size * times);
  let at = 0;
  for (let i = 0; i < times; i++) {
    for (const part of parts) {
      bytes.set(part, at);
      at += part.length;
    }
  }
  return bytes;
}

const chaosRuns: Record<string, number> = Object.fromEntries(
  Object.keys(chaos).map((name) => [name, 0]),
);
let chaosErrors = 0;

async function chaosWorker(): Promise<void> {
  const names = Object.keys(chaos);
  for (let i = 0; running && i < 1_000_000; i++) {
    const name = pick(names);
    chaosRuns[name]!++;
    try {
      await chaos[name]!();
    } catch {
      // A bad client failing is no news; only the good clients' calls are checked.
      chaosErrors++;
    }
  }
}

// --- the run -------------------------------------------------------------------------------------

const clients = await Promise.all(Array.from({ length: clientCount }, () => connectGood()));
// Warm up before the first measurement, so that it includes the steady state of the clients.
await Promise.all(clients.map((client) => check(client, "add", [1, 1], 2)));
const rssStart = Deno.memoryUsage().rss;
const started = Date.now();

const goodRuns = clients.map((client) => goodClient(client));
const chaosRunsDone = Array.from({ length: CHAOS_WORKERS }, () => chaosWorker());
const warmUp = Math.max(1000, seconds * 100);
await delay(warmUp);
const rssWarm = Deno.memoryUsage().rss;
await delay(seconds * 1000 - warmUp);
running = false;
await Promise.all([...goodRuns, ...chaosRunsDone]);
const elapsed = (Date.now() - started) / 1000;
const rssEnd = Deno.memoryUsage().rss;
await server.shutdown();

const growth = rssEnd - rssWarm;
const failures = [
  ...(callsLost > 0 ? [`${callsLost} calls lost`] : []),
  ...(mismatched > 0 ? [`${mismatched} responses mismatched`] : []),
  ...(growth > RSS_GROWTH_BOUND
    ? [
      `RSS grew by ${(growth / MIB).toFixed(1)} MiB after the warm-up, over ${
        RSS_GROWTH_BOUND / MIB
      } MiB`,
    ]
    : []),
];
const totalChaos = Object.values(chaosRuns).reduce((sum, n) => sum + n, 0);
console.log(`soak: ${elapsed.toFixed(1)} s, ${clientCount} clients, node transport`);
console.log(`calls made: ${callsMade}`);
console.log(`calls lost: ${callsLost}`);
console.log(`responses mismatched: ${mismatched}`);
console.log(`good clients reconnected: ${reconnects}`);
console.log(`chaos runs: ${totalChaos} (${chaosErrors} ended in an error)`);
console.log(
  `  ${Object.entries(chaosRuns).map(([name, n]) => `${name} ${n}`).join(", ")}`,
);
console.log(`server log lines: ${logLines}`);
console.log(`server rss start: ${(rssStart / MIB).toFixed(1)} MiB (clients connected, no load)`);
console.log(
  `server rss warm: ${(rssWarm / MIB).toFixed(1)} MiB (after ${warmUp / 1000} s under load)`,
);
console.log(
  `server rss end: ${(rssEnd / MIB).toFixed(1)} MiB (bound: warm + ${RSS_GROWTH_BOUND / MIB} MiB)`,
);
for (const line of firstErrors) console.log(`  ${line}`);
console.log(failures.length === 0 ? "result: ok" : `result: FAILED: ${failures.join("; ")}`);
Deno.exit(failures.length === 0 ? 0 : 1);
