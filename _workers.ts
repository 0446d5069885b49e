// `serve --workers N`: N Web Workers, each serving the module on the same port through reusePort,
// so that the kernel spreads connections over every core. The pool starts them (the first one
// picks the port when 0 was asked for), restarts one that dies, names each log line's worker,
// sums their metrics (keeping the counts of those that died), and drains them all on shutdown.

import { type MetricsSnapshot, renderMerged, retireSnapshot } from "./_metrics_text.ts";
import type { Limits } from "./_limits.ts";
import type { LogEventFields, LogLevel } from "./_cli_log.ts";

/** The serve options a worker gets: what can cross to a worker (no functions). */
export interface WorkerServeOptions extends Partial<Limits> {
  hostname?: string;
  port: number;
  cert: string;
  key: string;
  token?: string;
  clientCa?: string;
  exposeStack?: boolean;
  /** Read a PROXY protocol header first on every connection (see `ServeOptions`). */
  proxyProtocol?: boolean;
  info?: { title: string; version: string };
  /** Whether workers count metrics (the pool serves their sum). */
  metrics?: boolean;
}

/** Messages to a worker. */
export type ToWorker =
  | { type: "start"; module: string; options: WorkerServeOptions }
  | { type: "metrics"; id: number }
  | { type: "shutdown" };

/** Messages from a worker. */
export type FromWorker =
  | { type: "listening"; port: number }
  | { type: "failed"; message: string }
  | { type: "crashed"; message: string; snapshot: MetricsSnapshot | undefined }
  | { type: "log"; line: string; level: LogLevel; fields: LogEventFields; errorName?: string }
  | { type: "metrics"; id: number; snapshot: MetricsSnapshot | undefined }
  | { type: "stopped" };

/** Options for {@linkcode startWorkers}. */
export interface WorkerPoolOptions {
  /** How many workers; at least 1. */
  count: number;
  /** The module to serve, as a URL. */
  module: string;
  /** The serve options of every worker. */
  options: WorkerServeOptions;
  /**
   * Where log lines go: `line` prefixed with its worker (`[worker 2] closed ...`), and the same
   * as an entry for structured logs.
   */
  log(line: string, entry: WorkerLogEntry): void;
}

/** A log line of the pool, or of a worker's server. */
export interface WorkerLogEntry {
  /** The worker, from 1. */
  readonly worker: number;
  /** The line, without its worker. */
  readonly message: string;
  /** `error` when the server's log hook got an `Error`, or a worker died. */
  readonly level: LogLevel;
  /** The server's fields (`event`, `peer`), or the pool's own `event`. */
  readonly fields: LogEventFields;
  /** The name of the `Error` behind the line, if any. */
  readonly errorName?: string | undefined;
}

/** A running pool of workers. */
export interface WorkerPool {
  /** The port every worker listens on. */
  readonly port: number;
  /** The metrics of every worker, summed, in the Prometheus text format. */
  metrics(): Promise<string>;
  /** Drains every worker (each shuts its server down gracefully) and stops them. */
  shutdown(): Promise<void>;
}

/** Milliseconds before a worker that died is started again: a crash loop must not spin. */
const RESTART_DELAY_MS = 1000;

/** Milliseconds a worker may take to answer a metrics request before it is left out. */
const METRICS_WAIT_MS = 2000;

const WORKER_URL = new URL("./serve_worker.ts", import.meta.url);

/**
 * Starts `count` workers serving `module` on one port; resolves once all listen.
 *
 * @throws {Error} When a worker cannot start (its message says why).
 */
export async function startWorkers(options: WorkerPoolOptions): Promise<WorkerPool> {
  const pool = new Pool(options);
  await pool.start();
  return pool;
}

class Slot {
  worker: Worker | undefined;
  stopped: Promise<void> | undefined;
  /** The worker's latest metrics, kept for when it dies without a last word. */
  last: MetricsSnapshot | undefined;
}

class Pool implements WorkerPool {
  #options: WorkerPoolOptions;
  #slots: Slot[] = [];
  #port = 0;
  #stopping = false;
  /** Whether start() has finished: a worker that dies before is not started again. */
  #started = false;
  #nextId = 0;
  #waiting = new Map<number, (snapshot: MetricsSnapshot | undefined) => void>();
  #timers = new Set<ReturnType<typeof setTimeout>>();
  /** The counters of the workers that died, so that the sum never goes down. */
  #retired: MetricsSnapshot | undefined;
  /** Workers whose counters are in #retired: a snapshot they sent before is not counted again. */
  #retiredWorkers = new WeakSet<Worker>();

  constructor(options: WorkerPoolOptions) {
    if (!Number.isInteger(options.count) || options.count < 1) {
      throw new RangeError(`Cannot start workers: count must be at least 1, got ${options.count}`);
    }
    this.#options = options;
  }

  get port(): number {
    return this.#port;
  }

  async start(): Promise<void> {
    // The first worker binds the port (0 picks one); the others share it.
    const first = new Slot();
    this.#slots.push(first);
    try {
      this.#port = await this.#launch(first, 1, this.#options.options.port);
      const rest = Array.from({ length: this.#options.count - 1 }, () => new Slot());
      this.#slots.push(...rest);
      await Promise.all(rest.map((slot, i) => this.#launch(slot, i + 2, this.#port)));
    } catch (error) {
      await this.shutdown();
      throw error;
    }
    this.#started = true;
  }

  /** Starts the worker of `slot`; resolves with its port once it listens. */
  #launch(slot: Slot, number: number, port: number): Promise<number> {
    const worker = new Worker(WORKER_URL, { type: "module", name: `worker ${number}` });
    slot.worker = worker;
    const done = Promise.withResolvers<void>();
    slot.stopped = done.promise;
    const listening = Promise.withResolvers<number>();
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      const message = event.data;
      if (message.type === "listening") listening.resolve(message.port);
      else if (message.type === "failed") {
        listening.reject(new Error(message.message));
        worker.terminate();
        done.resolve();
      } else if (message.type === "log") {
        this.#log({
          worker: number,
          message: message.line,
          level: message.level,
          fields: message.fields,
          errorName: message.errorName,
        });
      } else if (message.type === "metrics") {
        this.#waiting.get(message.id)?.(message.snapshot);
      } else if (message.type === "stopped") {
        worker.terminate();
        done.resolve();
      } else if (message.type === "crashed") {
        listening.reject(new Error(message.message));
        // Its last word, unless it is counted already (its error event came first).
        if (message.snapshot !== undefined && !this.#retiredWorkers.has(worker)) {
          slot.last = message.snapshot;
        }
        this.#died(slot, worker, number, message.message);
        done.resolve();
      }
    };
    worker.onerror = (event) => {
      event.preventDefault();
      listening.reject(new Error(event.message));
      this.#died(slot, worker, number, event.message);
      done.resolve();
    };
    const start: ToWorker = {
      type: "start",
      module: this.#options.module,
      options: { ...this.#options.options, port },
    };
    worker.postMessage(start);
    return listening.promise;
  }

  /** A worker died: it is ended, logged, and started again after a pause unless stopping. */
  #died(slot: Slot, worker: Worker, number: number, why: string): void {
    worker.terminate();
    this.#retire(slot, worker);
    // Before start() has finished, the caller hears of it and shuts the pool down.
    if (this.#stopping || !this.#started || slot.worker !== worker) return;
    this.#log({
      worker: number,
      message: `died (${why}); starting it again in ${RESTART_DELAY_MS} ms`,
      level: "error",
      fields: { event: "worker_died" },
    });
    this.#restart(slot, number);
  }

  /** Starts the worker of `slot` again after a pause, and again after that if it fails. */
  #restart(slot: Slot, number: number): void {
    slot.worker = undefined;
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (this.#stopping) return;
      this.#launch(slot, number, this.#port).then(
        () =>
          this.#log({
            worker: number,
            message: "started again",
            level: "info",
            fields: { event: "worker_restarted" },
          }),
        (error) => {
          this.#log({
            worker: number,
            message: `cannot start again: ${error instanceof Error ? error.message : error}`,
            level: "error",
            fields: { event: "worker_restart_failed" },
          });
          // A worker that crashed while starting was seen to by #died, which cleared the slot.
          if (slot.worker !== undefined && !this.#stopping) this.#restart(slot, number);
        },
      );
    }, RESTART_DELAY_MS);
    this.#timers.add(timer);
  }

  #log(entry: WorkerLogEntry): void {
    this.#options.log(`[worker ${entry.worker}] ${entry.message}`, entry);
  }

  /**
   * The counters of the worker of `slot`, which died, join those of the workers that died before:
   * its last word, or the latest snapshot it sent (the calls since then are lost with it).
   */
  #retire(slot: Slot, worker: Worker): void {
    if (this.#retiredWorkers.has(worker)) return;
    this.#retiredWorkers.add(worker);
    if (slot.last !== undefined) this.#retired = retireSnapshot(this.#retired, slot.last);
    slot.last = undefined;
  }

  async metrics(): Promise<string> {
    const answers = await Promise.all(this.#slots.map((slot) => this.#snapshot(slot)));
    // Read after every answer is in: a worker that answered and then died is in #retired now, and
    // its answer is left out, so that it is counted once.
    const live = answers.flatMap((answer) =>
      answer === undefined || this.#retiredWorkers.has(answer.worker) ? [] : [answer.snapshot]
    );
    return renderMerged(this.#retired === undefined ? live : [this.#retired, ...live]);
  }

  #snapshot(slot: Slot): Promise<{ worker: Worker; snapshot: MetricsSnapshot } | undefined> {
    const worker = slot.worker;
    if (worker === undefined) return Promise.resolve(undefined);
    const id = this.#nextId++;
    return new Promise((resolve) => {
      const timer = setTimeout(() => finish(undefined), METRICS_WAIT_MS);
      const finish = (snapshot: MetricsSnapshot | undefined) => {
        clearTimeout(timer);
        this.#waiting.delete(id);
        if (snapshot === undefined) return resolve(undefined);
        if (!this.#retiredWorkers.has(worker)) slot.last = snapshot;
        resolve({ worker, snapshot });
      };
      this.#waiting.set(id, finish);
      const request: ToWorker = { type: "metrics", id };
      worker.postMessage(request);
    });
  }

  async shutdown(): Promise<void> {
    this.#stopping = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const stopping: Promise<void>[] = [];
    for (const slot of this.#slots) {
      if (slot.worker === undefined) continue;
      const request: ToWorker = { type: "shutdown" };
      slot.worker.postMessage(request);
      if (slot.stopped) stopping.push(slot.stopped);
    }
    await Promise.all(stopping);
  }
}
