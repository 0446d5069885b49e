// The accept watchdog. Deno's node:net (2.9.6) stops accepting for good once accept() fails with
// EMFILE: the error never reaches JavaScript (no "error" or "drop" event; deno_core's uv_compat
// keeps only a successful poll_accept), and the listening socket is not polled again, so
// connections pile up in the kernel's accept queue. Listening again on a new socket is the cure;
// the watchdog tells when it is needed.
//
// It looks only after a second without a new connection, less often the longer all stays well,
// and says nothing while the listener accepts. Two ways to look, an `AcceptCheck` each:
// - `AcceptQueue` reads the listening socket's accept queue, by its inode, from /proc/net/tcp
//   (Linux; Deno lets only --allow-all read it). Nothing is sent, so sockets sharing the port
//   (`reusePort`) cannot answer for this one. A queue that holds connections on two looks in a
//   row, none accepted between, is a stuck listener.
// - `SelfProbe` connects to the port and waits for the listener to report that connection, which
//   it recognises by its address and closes without a word. Sound only where no other socket can
//   take the connection, so never with `reusePort`; it needs no permission beyond the port's.
//
// Node.js and Bun keep accepting after EMFILE, but the watchdog costs little and runs there too:
// it reads /proc and connects with node:fs and node:net where there is no Deno.

import { readFile, readlink } from "node:fs/promises";
import net from "node:net";
import { once } from "./_once.ts";
import { deno } from "./_runtime.ts";
import { reason } from "./_util.ts";
import type { TransportLogFields } from "./_transport_types.ts";

/** What one look found: `"unknown"` when it could not tell (no descriptor left for the look). */
export type AcceptState = "accepting" | "stuck" | "unknown";

/** One way to tell whether a listener still accepts. */
export interface AcceptCheck {
  /** Looks once; never rejects. */
  check(): Promise<AcceptState>;
  /** Ends a look under way: it then resolves soon, with any state. */
  cancel(): void;
}

/** Options for {@linkcode AcceptWatchdog}. */
export interface AcceptWatchdogOptions {
  /** How to look. */
  check: AcceptCheck;
  /** Listens again on a new socket; rejects when it cannot. */
  restart(): Promise<void>;
  /**
   * Reports a restart and a failed one, the only lines the watchdog writes: events
   * `watchdog_restart` and `watchdog_restart_failed`.
   */
  log(error: unknown, line: string, fields: TransportLogFields): void;
  /**
   * Milliseconds between ticks; the first look comes one tick after the last connection.
   *
   * @default {1000}
   */
  tickMs?: number;
  /**
   * The most ticks between two looks once the listener looked fine: the gap doubles from one tick
   * after each look that found it accepting, which bounds what an idle server spends on looking
   * (reading /proc/net/tcp costs milliseconds on a host with thousands of sockets).
   *
   * @default {8}
   */
  maxGapTicks?: number;
}

/** A stuck listener is listened again after this many stuck looks in a row: one could be a blip. */
const STRIKES = 2;

/**
 * A timer that fires this many milliseconds late (or more) means the event loop was held up (a
 * handler's long synchronous work, a long GC): connections wait in the accept queue then, and a
 * probe's report behind the timer, because the loop was busy, not because the listener is stuck.
 * A look made then, or a probe's wait that ended then, says nothing. Listening again needlessly is
 * not free: the connections queued on the old socket are reset.
 */
export const STALL_MS = 250;

/** Watches a listener's accepting and has it listen again when it no longer does. */
export class AcceptWatchdog {
  #check: AcceptCheck;
  #restart: () => Promise<void>;
  #log: (error: unknown, line: string, fields: TransportLogFields) => void;
  #maxGap: number;
  #timer: ReturnType<typeof setInterval>;
  #accepts = 0;
  #acceptsSeen = 0;
  #idleTicks = 0;
  #gap = 1;
  #strikes = 0;
  #mustRestart = false;
  #busy = false;
  #closed = false;
  #running: Promise<void> = Promise.resolve();
  #tickMs: number;
  #lastTick = performance.now();

  /** Starts ticking; {@linkcode AcceptWatchdog.close} stops. */
  constructor(options: AcceptWatchdogOptions) {
    this.#check = options.check;
    this.#restart = options.restart;
    this.#log = options.log;
    this.#maxGap = options.maxGapTicks ?? 8;
    this.#tickMs = options.tickMs ?? 1000;
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
  }

  /** Tells the watchdog that the listener accepted a connection (not a probe). */
  accepted(): void {
    this.#accepts++;
  }

  /** Stops; resolves once a look or restart under way has ended. */
  close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      clearInterval(this.#timer);
      this.#check.cancel();
    }
    return this.#running;
  }

  #tick(): void {
    const now = performance.now();
    const late = now - this.#lastTick - this.#tickMs;
    this.#lastTick = now;
    if (this.#busy) return;
    if (this.#accepts !== this.#acceptsSeen) {
      this.#acceptsSeen = this.#accepts;
      this.#idleTicks = 0;
      this.#gap = 1;
      this.#strikes = 0;
      return;
    }
    if (this.#mustRestart) {
      this.#running = this.#guard(() => this.#listenAgain());
      return;
    }
    if (++this.#idleTicks < this.#gap && this.#strikes === 0) return;
    // The loop was held up: what waits in the queue may be accepted in this very turn. The look is
    // put off to the next tick, strikes kept.
    if (late >= STALL_MS) return;
    this.#idleTicks = 0;
    this.#running = this.#guard(() => this.#look());
  }

  async #guard(task: () => Promise<void>): Promise<void> {
    this.#busy = true;
    try {
      await task();
    } finally {
      this.#busy = false;
    }
  }

  async #look(): Promise<void> {
    const accepts = this.#accepts;
    const state = await this.#check.check();
    // A connection accepted meanwhile answers the question; the next tick starts afresh.
    if (this.#closed || this.#accepts !== accepts) return;
    if (state === "accepting") {
      this.#strikes = 0;
      this.#gap = Math.min(this.#gap * 2, this.#maxGap);
    } else if (state === "stuck" && ++this.#strikes >= STRIKES) {
      this.#strikes = 0;
      this.#log(
        undefined,
        "the listener stopped accepting (out of file descriptors?): listening again",
        { event: "watchdog_restart" },
      );
      await this.#listenAgain();
    }
  }

  async #listenAgain(): Promise<void> {
    if (this.#closed) return;
    try {
      await this.#restart();
      this.#mustRestart = false;
      this.#gap = 1;
    } catch (error) {
      if (this.#closed) return;
      // Retried at the next tick: the descriptors may be back by then.
      if (!this.#mustRestart) {
        this.#log(error, `cannot listen again, will retry: ${reason(error)}`, {
          event: "watchdog_restart_failed",
        });
      }
      this.#mustRestart = true;
    }
  }
}

// --- looking at the accept queue -----------------------------------------------------------------

/**
 * Tells a stuck listener by its socket's accept queue in /proc/net/tcp (or tcp6): connections
 * waiting there that the listener does not take. Each look reads the table once.
 */
export class AcceptQueue implements AcceptCheck {
  #inode: () => string | undefined;
  #table: string;

  /**
   * @param inode The listening socket's inode (see {@linkcode socketInode}), asked anew at each
   *   look, for it changes when the listener listens again; `undefined` when unknown.
   * @param ipv6 Whether the socket is IPv6 (its row is then in /proc/net/tcp6).
   */
  constructor(inode: () => string | undefined, ipv6: boolean) {
    this.#inode = inode;
    this.#table = ipv6 ? "/proc/net/tcp6" : "/proc/net/tcp";
  }

  async check(): Promise<AcceptState> {
    const inode = this.#inode();
    if (inode === undefined) return "unknown";
    let table: string;
    try {
      table = deno !== undefined
        ? await deno.readTextFile(this.#table)
        : await readFile(this.#table, "utf8");
    } catch {
      // No descriptor left to open it with.
      return "unknown";
    }
    const pending = acceptQueueLength(table, inode);
    return pending === undefined ? "unknown" : pending > 0 ? "stuck" : "accepting";
  }

  cancel(): void {
    // A look is one file read: nothing to cut short.
  }
}

/**
 * The inode of the socket behind this process's descriptor `fd`, from /proc/self/fd; `undefined`
 * where that cannot be read (not Linux; Deno lets only --allow-all read /proc) or is no socket.
 */
export async function socketInode(fd: number): Promise<string | undefined> {
  try {
    const path = `/proc/self/fd/${fd}`;
    const target = deno !== undefined ? await deno.readLink(path) : await readlink(path);
    return /^socket:\[(\d+)\]$/.exec(target)?.[1];
  } catch {
    return undefined;
  }
}

/** The row of the socket with `inode` in /proc/net/tcp text, as its fields. */
function rowOf(table: string, inode: string): string[] | undefined {
  // Only lines that hold the number are split: the table has a line for every socket of the host.
  for (let at = table.indexOf(` ${inode} `); at >= 0; at = table.indexOf(` ${inode} `, at + 1)) {
    const start = table.lastIndexOf("\n", at) + 1;
    const end = table.indexOf("\n", at);
    // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
    const fields = table.slice(start, end < 0 ? undefined : end).trim().split(/\s+/);
    if (fields[9] === inode) return fields;
  }
  return undefined;
}

/**
 * The accept queue length of the listening socket with `inode`, from the text of /proc/net/tcp:
 * for a socket in state 0A (LISTEN) the rx_queue column counts the connections waiting there.
 */
export function acceptQueueLength(table: string, inode: string): number | undefined {
  const fields = rowOf(table, inode);
  if (fields?.[3] !== "0A") return undefined;
  const queue = Number.parseInt(fields[4]?.split(":")[1] ?? "", 16);
  return Number.isNaN(queue) ? undefined : queue;
}

// --- probing the port ---------------------------------------------------------------------------

/** How long a probe may take to connect and be reported by the listener. */
export const PROBE_WAIT_MS = 500;

/** How long a probe's port is remembered after the probe, for a listener that reports it late. */
const PROBE_MEMORY_MS = 5000;

/** One probe: its address once known, and what the listener reported before then. */
interface Probe {
  /** The probe's own end, as {@linkcode peerKey} makes it, once connect() has resolved. */
  key: string | undefined;
  /** Whether the listener reported the probe's connection. */
  seen: boolean;
  /** Resolves when the listener reported it, the wait ran out, or the look was cancelled. */
  over: PromiseWithResolvers<void>;
  /** Connections reported while the probe's key was unknown: how to tell each. */
  early: Map<string, (isProbe: boolean) => void>;
  /** Log lines about connections reported while the probe's key was unknown. */
  held: { key: string; emit: () => void }[];
}

/** A peer's address as a key: an IPv4-mapped IPv6 address counts as the IPv4 one. */
function peerKey(peer: { hostname: string; port: number }): string {
  return `${peer.hostname.replace(/^::ffff:/i, "")} ${peer.port}`;
}

/**
 * Tells a stuck listener by connecting to its port: the listener reports each connection it
 * accepts with {@linkcode SelfProbe.claim}, which recognises the probe's by its address and port.
 */
export class SelfProbe implements AcceptCheck {
  #hostname: string;
  #port: number;
  #probe: Probe | undefined;
  /** Recent probes the listener had not reported, and until when to recognise them. */
  #recent = new Map<string, number>();

  /**
   * @param hostname The address to connect to: the listener's, or loopback for a wildcard one.
   * @param port The listener's port.
   */
  constructor(hostname: string, port: number) {
    this.#hostname = hostname;
    this.#port = port;
  }

  async check(): Promise<AcceptState> {
    const probe: Probe = {
      key: undefined,
      seen: false,
      over: Promise.withResolvers(),
      early: new Map(),
      held: [],
    };
    this.#probe = probe;
    const started = performance.now();
    const timer = setTimeout(() => probe.over.resolve(), PROBE_WAIT_MS);
    let conn: ProbeConnection | undefined;
    try {
      conn = await connectProbe(this.#hostname, this.#port, AbortSignal.timeout(PROBE_WAIT_MS));
      probe.key = peerKey(conn.localAddr);
      // Deno's listener often reports the connection before connect() resolves here.
      for (const [key, decide] of probe.early) this.#decide(probe, key, decide);
      probe.early.clear();
      for (const line of probe.held) if (line.key !== probe.key) line.emit();
      probe.held = [];
      await probe.over.promise;
      if (probe.seen) return "accepting";
      // A wait that ended late: the report may be queued behind this very timer.
      return performance.now() - started >= PROBE_WAIT_MS + STALL_MS ? "unknown" : "stuck";
    } catch (error) {
      // A connect that timed out waited for room in a full accept queue (unless the loop was held
      // up: then it may not have been polled); anything else (no descriptor for the probe, a
      // refusal) says nothing about the listener.
      const timedOut = error instanceof DOMException && error.name === "TimeoutError";
      return timedOut && performance.now() - started < PROBE_WAIT_MS + STALL_MS
        ? "stuck"
        : "unknown";
    } finally {
      clearTimeout(timer);
      try {
        conn?.close();
      } catch {
        // Already closed.
      }
      this.#probe = undefined;
      for (const decide of probe.early.values()) decide(false);
      for (const line of probe.held) if (line.key !== probe.key) line.emit();
      const now = Date.now();
      for (const [key, until] of this.#recent) if (until < now) this.#recent.delete(key);
      // A listener that reports the probe after the wait must still recognise it.
      if (probe.key !== undefined && !probe.seen) {
        this.#recent.set(probe.key, now + PROBE_MEMORY_MS);
      }
    }
  }

  cancel(): void {
    this.#probe?.over.resolve();
  }

  /**
   * Reports a connection the listener accepted, by its peer's address, and tells whether it is
   * the probe's through `decide`: at once, or once the probe knows its own end. A probe's
   * connection is the listener's to close without a word; any other counts as accepted.
   */
  claim(peer: { hostname: string; port: number }, decide: (isProbe: boolean) => void): void {
    const key = peerKey(peer);
    if (this.#recent.delete(key)) return decide(true);
    const probe = this.#probe;
    if (probe === undefined) return decide(false);
    if (probe.key === undefined) probe.early.set(key, decide);
    else this.#decide(probe, key, decide);
  }

  /**
   * Reports a line about the connection from `peer`: `emit` is called unless the connection is
   * the probe's, at once or once the probe knows its own end.
   */
  report(peer: { hostname: string; port: number }, emit: () => void): void {
    const key = peerKey(peer);
    const probe = this.#probe;
    if (this.#recent.has(key) || probe?.key === key) return;
    if (probe !== undefined && probe.key === undefined) probe.held.push({ key, emit });
    else emit();
  }

  #decide(probe: Probe, key: string, decide: (isProbe: boolean) => void): void {
    const isProbe = key === probe.key;
    if (isProbe) {
      probe.seen = true;
      probe.over.resolve();
    }
    decide(isProbe);
  }
}

/** The probe's end of its connection. */
interface ProbeConnection {
  readonly localAddr: { hostname: string; port: number };
  close(): void;
}

/**
 * Connects to `hostname:port` with Deno.connect, or node:net where there is no Deno; rejects with
 * the signal's reason (a `TimeoutError` DOMException) when it aborts first.
 */
async function connectProbe(
  hostname: string,
  port: number,
  signal: AbortSignal,
): Promise<ProbeConnection> {
  if (deno !== undefined) return await deno.connect({ hostname, port, signal });
  signal.throwIfAborted();
  const socket = net.connect({ host: hostname, port });
  try {
    await once(socket, "connect", { signal });
  } catch (error) {
    socket.destroy();
    throw error;
  }
  // Errors after the connect (a reset by the listener that closes it) are no news to the probe.
  socket.on("error", () => {});
  return {
    localAddr: { hostname: socket.localAddress ?? "", port: socket.localPort ?? 0 },
    close: () => socket.destroy(),
  };
}
