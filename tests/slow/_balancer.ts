/**
 * The pieces the balancer tests share (balancer_haproxy_test.ts, balancer_nginx_test.ts): `cli.ts
 * serve` backends on fixed ports, a TCP server that only listens, and a client with `reconnect`
 * under load through a balancer, with the rolling restart both balancers must ride out without
 * losing a call. The balancer process itself is `spawnCollected` of `../_tools.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type ClientConnection, connect, type Dialer, type RpcClient } from "../../client.ts";
import { acceptEach, certs, closeQuietly, freePort, until, within } from "../_util.ts";
import { type ServeProcess, startServe } from "../_cli.ts";

/** The calling loops of the client under load: as many calls in flight at any time. */
export const LOOPS = 6;

// --- backends ------------------------------------------------------------------------------------

/** A `cli.ts serve tests/fixtures/balancer_backend.ts` process on a fixed port; disposing stops it. */
export interface Backend extends AsyncDisposable {
  readonly name: string;
  readonly port: number;
  readonly process: ServeProcess;
  /** Its process id, from its own `served()`. */
  readonly pid: number;
}

/**
 * Asks the backend on `port` (or the one a balancer there picks), on a connection of its own,
 * which process it is and how many `add` calls it has served.
 */
export async function served(port: number): Promise<{ pid: number; adds: number }> {
  await using client = await connect({
    hostname: "127.0.0.1",
    port,
    caCerts: [certs.ca],
    connectTimeout: 10_000,
  });
  const answer = await client.withOptions({ timeout: 10_000 }).call("served");
  return answer as { pid: number; adds: number };
}

/** Starts backend `name` on `port` and resolves once it answers, with its process id. */
export async function startBackend(name: string, port: number): Promise<Backend> {
  const process = await startServe([
    "tests/fixtures/balancer_backend.ts",
    "--port",
    String(port),
    "--cert",
    "testdata/server.pem",
    "--key",
    "testdata/server.key",
  ]);
  const { pid } = await served(port);
  return { name, port, process, pid, [Symbol.asyncDispose]: () => process.stop().then(() => {}) };
}

// --- balancers -----------------------------------------------------------------------------------

/** HAProxy or nginx, started on loopback in front of two backends. */
export interface Balancer extends AsyncDisposable {
  readonly name: string;
  /** The port clients connect to. */
  readonly port: number;
  /** What it has written to stderr so far, for failure messages. */
  log(): string;
  /** Resolves once new connections reach `backend` (restarted on its port) again. */
  waitRouting(backend: Backend): Promise<void>;
  /** Resolves once the balancer has seen that `backend` is gone, if it looks (HAProxy does). */
  waitGone?(backend: Backend): Promise<void>;
}

/** A TCP server from {@linkcode silentTcpServer}. */
export interface SilentTcpServer extends AsyncDisposable {
  readonly port: number;
  /** The first bytes (one read, at most 256) of each connection that sent any, in order. */
  readonly firstBytes: Uint8Array[];
}

/**
 * A TCP listener on 127.0.0.1 that accepts connections, records what each sends first, and never
 * writes: not a TLS server, nor anything else.
 */
export function silentTcpServer(): SilentTcpServer {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns: Deno.Conn[] = [];
  const reads: Promise<void>[] = [];
  const firstBytes: Uint8Array[] = [];
  async function readFirst(conn: Deno.Conn): Promise<void> {
    const buffer = new Uint8Array(256);
    const count = await conn.read(buffer).catch(() => null);
    if (count !== null) firstBytes.push(buffer.slice(0, count));
  }
  const accepting = acceptEach(listener, (conn) => {
    conns.push(conn);
    reads.push(readFirst(conn));
  });
  return {
    port: listener.addr.port,
    firstBytes,
    async [Symbol.asyncDispose]() {
      closeQuietly(listener);
      await accepting;
      for (const conn of conns) closeQuietly(conn);
      await Promise.all(reads);
    },
  };
}

// --- load ----------------------------------------------------------------------------------------

/** What a load run did. */
export interface Figures {
  made: number;
  failed: number;
  ms: number;
  errors: string[];
}

/** What a client's connections brought: rpc.goaway notifications and -32001 answers. */
export interface Tap {
  goaways: number;
  shuttingDown: number;
}

export const latin1 = new TextDecoder("latin1");
const GOAWAY = /"method":\s*"rpc\.goaway"/g;
const SHUTTING_DOWN = /"code":\s*-32001\b/g;

function occurrences(text: string, pattern: RegExp): number {
  return text.match(pattern)?.length ?? 0;
}

/**
 * The client's default dial (TCP without Nagle, then TLS with the test CA), with the bytes it
 * reads counted into `tap`, so that a test can tell what the client saw. A match may straddle two
 * reads: the last bytes of the previous read are scanned again, and matches within them alone
 * are not counted twice.
 */
function tappedDial(tap: Tap): Dialer {
  return async (signal, { hostname, port }) => {
    const tcp = await Deno.connect({ hostname, port });
    tcp.setNoDelay(true);
    const tls = await Deno.startTls(tcp, { hostname, caCerts: [certs.ca] });
    const onAbort = () => closeQuietly(tls);
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await tls.handshake();
    } catch (error) {
      closeQuietly(tls);
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    let tail = "";
    const connection: ClientConnection = {
      async read(buffer) {
        const count = await tls.read(buffer);
        if (count !== null) {
          const text = tail + latin1.decode(buffer.subarray(0, count));
          tap.goaways += occurrences(text, GOAWAY) - occurrences(tail, GOAWAY);
          tap.shuttingDown += occurrences(text, SHUTTING_DOWN) - occurrences(tail, SHUTTING_DOWN);
          tail = text.slice(-64);
        }
        return count;
      },
      write: (bytes) => tls.write(bytes),
      close: () => closeQuietly(tls),
    };
    return connection;
  };
}

/**
 * `LOOPS` loops of plain (not idempotent) `add` calls on `client`, each checking its answer, until
 * stopped. With `slowMs`, every other loop calls `slowAdd`, which answers after `slowMs`, so that
 * calls are still running when a backend is told to stop.
 */
export function startLoad(
  client: RpcClient,
  slowMs = 0,
): { readonly ok: number; stop(): Promise<Figures> } {
  const caller = client.withOptions({ timeout: 30_000 });
  const started = performance.now();
  let stopped = false;
  let made = 0;
  let ok = 0;
  const errors: string[] = [];
  const loops = Array.from({ length: LOOPS }, async (_, loop) => {
    // The stop ends each loop; the bound only keeps a runaway finite.
    for (let i = 0; !stopped && i < 10_000_000; i++) {
      const a = loop * 10_000_000 + i;
      const slow = slowMs > 0 && loop % 2 === 0;
      const call = slow ? `slowAdd(${a}, 1, ${slowMs})` : `add(${a}, 1)`;
      made++;
      try {
        const sum = await (slow ? caller.call("slowAdd", a, 1, slowMs) : caller.call("add", a, 1));
        if (sum === a + 1) ok++;
        else errors.push(`${call} answered ${JSON.stringify(sum)}`);
      } catch (error) {
        errors.push(
          `${call}: ${error instanceof Error ? `${error.name}: ${error.message}` : error}`,
        );
      }
    }
  });
  return {
    get ok() {
      return ok;
    },
    async stop() {
      stopped = true;
      await Promise.all(loops);
      return { made, failed: errors.length, ms: Math.round(performance.now() - started), errors };
    },
  };
}

/** Waits until `load` has made `more` successful calls beyond what it had. */
export async function callsSucceed(
  load: { readonly ok: number },
  more: number,
  what: string,
): Promise<void> {
  const target = load.ok + more;
  await until(() => load.ok >= target, `${more} more calls succeed ${what}`, 30_000);
}

/** A client through a balancer, and what it saw. */
export interface Observed {
  client: RpcClient;
  tap: Tap;
  reconnects(): number;
}

/**
 * Connects a client through the balancer, with `reconnect`, counting its reconnections and what
 * its connections brought.
 */
export async function connectThrough(balancer: Balancer): Promise<Observed> {
  let reconnects = 0;
  const tap: Tap = { goaways: 0, shuttingDown: 0 };
  const client = await connect({
    hostname: "127.0.0.1",
    port: balancer.port,
    reconnect: true,
    onReconnect: () => void reconnects++,
    dial: tappedDial(tap),
  });
  return { client, tap, reconnects: () => reconnects };
}

/**
 * Restarts backend A, then B, under load from one client through the balancer: SIGTERM, wait for
 * the exit, start again on the same port, wait until the balancer routes to it. No call may fail,
 * and each new process must serve calls.
 */
export async function rollingRestart(
  startBalancer: (ports: { a: number; b: number }) => Promise<Balancer>,
  slowMs = 0,
): Promise<void> {
  const backends = [await startBackend("a", freePort()), await startBackend("b", freePort())];
  try {
    await using balancer = await startBalancer({ a: backends[0]!.port, b: backends[1]!.port });
    const { client, tap, reconnects } = await connectThrough(balancer);
    await using _client = client;
    const load = startLoad(client, slowMs);
    let late: Observed | undefined;
    let lateLoad: ReturnType<typeof startLoad> | undefined;
    const steps: string[] = [];
    let figures: Figures;
    let lateFigures: Figures | undefined;
    try {
      await callsSucceed(load, 200, "before the restart");
      for (const [i, old] of backends.entries()) {
        const t0 = performance.now();
        const output = await within(old.process.stop(), `backend ${old.name} exits`, 30_000);
        assert.equal(output.code, 0, `backend ${old.name} exits 0 after SIGTERM: ${output.stderr}`);
        const t1 = performance.now();
        await balancer.waitGone?.(old);
        const t2 = performance.now();
        const fresh = backends[i] = await startBackend(old.name, old.port);
        await balancer.waitRouting(fresh);
        const t3 = performance.now();
        steps.push(
          `${old.name}: drained and exited in ${Math.round(t1 - t0)} ms` +
            (balancer.waitGone ? `, marked down ${Math.round(t2 - t1)} ms later` : "") +
            `, started again and routed to in ${Math.round(t3 - t2)} ms`,
        );
        await callsSucceed(load, 200, `after backend ${old.name} came back`);
      }
      // The client's connection went to A's new process when B stopped, and stays there; a
      // second client lands on B's new one (fewest connections), so that both serve calls.
      late = await connectThrough(balancer);
      lateLoad = startLoad(late.client);
      await until(
        async () => (await served(backends[1]!.port)).adds > 0,
        "a second client's calls reach B's new process",
        30_000,
      );
    } finally {
      figures = await load.stop();
      lateFigures = await lateLoad?.stop();
      await late?.client.close();
    }
    const counts = await Promise.all(backends.map((backend) => served(backend.port)));
    console.log(
      [
        `${balancer.name} rolling restart, one client, ${LOOPS} loops of plain ` +
        (slowMs > 0 ? `add and slowAdd (${slowMs} ms) calls:` : "add calls:"),
        `  calls made ${figures.made}, failed ${figures.failed}, in ${figures.ms} ms`,
        `  the client heard rpc.goaway ${tap.goaways} times, reconnected ${reconnects()} times, ` +
        `and had ${tap.shuttingDown} calls answered -32001 (and sent again)`,
        ...steps.map((step) => `  ${step}`),
        `  second client afterwards: calls made ${lateFigures?.made}, failed ${lateFigures?.failed}`,
        ...counts.map((count, i) =>
          `  new process of ${backends[i]!.name} (pid ${count.pid}) served ${count.adds} add calls`
        ),
      ].join("\n"),
    );
    assert.deepEqual(figures.errors.slice(0, 10), [], `no call fails\n${balancer.log()}`);
    assert.deepEqual(lateFigures?.errors.slice(0, 10), [], "no call of the second client fails");
    // Its backend stopped at least once (B, if not A before), and it moved on.
    assert.ok(tap.goaways >= 1, "the client heard rpc.goaway");
    assert.ok(reconnects() >= tap.goaways, "the client reconnected after each rpc.goaway");
    for (const [i, count] of counts.entries()) {
      assert.ok(count.adds > 0, `backend ${backends[i]!.name} served calls after its restart`);
    }
  } finally {
    await Promise.all(backends.map((backend) => backend.process.stop()));
  }
}
