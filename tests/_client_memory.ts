/**
 * The helpers the in-memory client tests (`client_memory_*_test.ts`) share: the server a test
 * scripts on the far end of a memory pair (`Peer`), a dialer that hands out a new pair on each dial
 * and can play endpoints that are down (`Pairs`), a client connected over one pair
 * (`connectMemory`) and a bounded poll (`waitFor`). The helpers every test file shares are in
 * `_util.ts`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect, type ConnectOptions, type Endpoint, type RpcClient } from "../client.ts";
import { FrameReader, FrameWriter } from "../framing.ts";
import { type MemoryConnection, memoryPair, type MemoryPairOptions } from "../_transport_memory.ts";
import { delay, within } from "./_util.ts";

const decoder = new TextDecoder();

/** A message as the scripted server reads it. */
export interface Message {
  jsonrpc?: string;
  id?: number;
  method?: string;
  params?: unknown;
  timeout?: number;
  result?: unknown;
  error?: unknown;
}

/** The far end of a memory pair, speaking frames: the server a test scripts. */
export class Peer {
  readonly conn: MemoryConnection;
  #reader: FrameReader;
  #writer: FrameWriter;
  #queue: Uint8Array[] = [];

  constructor(conn: MemoryConnection) {
    this.conn = conn;
    this.#reader = new FrameReader(conn);
    this.#writer = new FrameWriter(conn, { onError: () => {} });
  }

  /** The next frame's bytes, or null once the client has closed the connection. */
  async receiveBytes(): Promise<Uint8Array | null> {
    while (this.#queue.length === 0) {
      let frames: Uint8Array[] | null;
      try {
        frames = await this.#reader.read();
      } catch {
        return null;
      }
      if (frames === null) return null;
      for (const frame of frames) this.#queue.push(frame.slice());
    }
    return this.#queue.shift()!;
  }

  /** The next frame parsed, or null once the client has closed the connection. */
  async receive(): Promise<Message | null> {
    const bytes = await this.receiveBytes();
    return bytes === null ? null : JSON.parse(decoder.decode(bytes));
  }

  /** The next frame, which must be a request for `method`. */
  async expect(method: string): Promise<Message> {
    const message = await within(this.receive(), `a "${method}" request`);
    assert.equal(message?.method, method, `expected "${method}", got ${JSON.stringify(message)}`);
    return message!;
  }

  /** Sends a frame: a string as it is, bytes as they are, anything else as JSON. */
  send(message: unknown): void {
    if (message instanceof Uint8Array) this.#writer.writeFrame(message);
    else this.#writer.writeText(typeof message === "string" ? message : JSON.stringify(message));
  }

  reply(request: Message, result: unknown): void {
    this.send({ jsonrpc: "2.0", id: request.id, result });
  }

  fail(request: Message, code: number, message: string): void {
    this.send({ jsonrpc: "2.0", id: request.id, error: { code, message } });
  }

  /** Says what a shutting-down tlsrpc server says on every connection. */
  goAway(): void {
    this.send({ jsonrpc: "2.0", method: "rpc.goaway", params: [] });
  }

  /** Answers as a shutting-down server answers a call it did not run. */
  refuse(request: Message): void {
    this.fail(request, -32001, "Server is shutting down");
  }

  /** Answers the client's rpc.hello, taking rich values unless told otherwise. */
  async hello(extensions: string[] = ["rich"]): Promise<void> {
    this.reply(await this.expect("rpc.hello"), { extensions });
  }

  /** Resolves once the client has closed the connection, ignoring what it sends before. */
  async closedByClient(): Promise<void> {
    while (await this.receiveBytes() !== null) { /* drain */ }
  }

  close(): void {
    this.conn.close();
  }
}

/** A dialer that hands out a new memory pair each time, and the scripted ends of them all. */
export class Pairs {
  readonly peers: Peer[] = [];
  /** The endpoint of each dial, `host:port`, failed ones included. */
  readonly dialed: string[] = [];
  /** Endpoints (`host:port`) whose dials reject, as a closed port does. */
  readonly down = new Set<string>();
  #arrivals: ((peer: Peer) => void)[] = [];
  #options: MemoryPairOptions;

  constructor(options: MemoryPairOptions = {}) {
    this.#options = options;
  }

  readonly dial = (_signal: AbortSignal, endpoint: Endpoint): Promise<MemoryConnection> => {
    const name = `${endpoint.hostname}:${endpoint.port}`;
    this.dialed.push(name);
    if (this.down.has(name)) return Promise.reject(new Error("Connection refused"));
    const [near, far] = memoryPair(this.#options);
    const peer = new Peer(far);
    this.peers.push(peer);
    this.#arrivals.shift()?.(peer);
    return Promise.resolve(near);
  };

  /** The `n`th connection's far end (0-based), once the client has dialed it. */
  async peer(n: number): Promise<Peer> {
    while (this.peers.length <= n) {
      await within(new Promise<Peer>((resolve) => this.#arrivals.push(resolve)), `dial ${n}`);
    }
    return this.peers[n]!;
  }

  closeAll(): void {
    for (const peer of this.peers) peer.close();
  }
}

/** A client connected over a memory pair whose far end `server` has answered the hello. */
export interface Connected extends AsyncDisposable {
  client: RpcClient;
  server: Peer;
}

/** Connects over a new memory pair; the server answers the hello unless `richValues` is false. */
export async function connectMemory(
  options: ConnectOptions = {},
  pair: MemoryPairOptions = {},
): Promise<Connected> {
  const pairs = new Pairs(pair);
  const connecting = connect({ dial: pairs.dial, ...options });
  const server = await pairs.peer(0);
  if (options.richValues !== false) await server.hello();
  if (options.token !== undefined) server.reply(await server.expect("rpc.auth"), true);
  const client = await within(connecting, "connect()");
  return {
    client,
    server,
    async [Symbol.asyncDispose]() {
      server.close();
      await within(client.close(), "client.close()");
    },
  };
}

/** Polls `condition` every 5 ms, at most `ms` in all; fails naming `what` if it never holds. */
export async function waitFor(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited >= ms) assert.fail(`Gave up waiting for ${what} after ${ms} ms`);
    await delay(5);
  }
}
