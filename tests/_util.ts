// Helpers for the tests: the test certificates and a raw frame-level TLS client.

import { FrameReader, FrameWriter } from "../framing.ts";

const testdata = new URL("../testdata/", import.meta.url);

/** The test CA and the server certificate for localhost, 127.0.0.1 and ::1. */
export const certs: { ca: string; cert: string; key: string } = {
  ca: Deno.readTextFileSync(new URL("ca.pem", testdata)),
  cert: Deno.readTextFileSync(new URL("server.pem", testdata)),
  key: Deno.readTextFileSync(new URL("server.key", testdata)),
};

/** Options for a test server: port 0, the test certificate, and quiet logs collected in `logs`. */
export function serverOptions(logs: string[] = []): {
  port: number;
  cert: string;
  key: string;
  onListen: () => void;
  onError: (error: unknown, line: string) => void;
} {
  return {
    port: 0,
    cert: certs.cert,
    key: certs.key,
    onListen: () => {},
    onError: (_error, line) => void logs.push(line),
  };
}

const decoder = new TextDecoder();

/** A TLS connection that speaks frames, for tests that send what the client never would. */
export class RawClient implements AsyncDisposable {
  readonly conn: Deno.TlsConn;
  #reader: FrameReader;
  #writer: FrameWriter;
  #queue: Uint8Array[] = [];

  constructor(conn: Deno.TlsConn) {
    this.conn = conn;
    this.#reader = new FrameReader(conn);
    this.#writer = new FrameWriter(conn);
  }

  /** Connects to `port` on 127.0.0.1 with the test CA and completes the handshake. */
  static async connect(port: number, hostname = "127.0.0.1"): Promise<RawClient> {
    const conn = await Deno.connectTls({ hostname, port, caCerts: [certs.ca] });
    await conn.handshake();
    return new RawClient(conn);
  }

  /** Sends one frame: a string as UTF-8, bytes as they are, anything else as JSON. */
  async send(message: unknown): Promise<void> {
    if (message instanceof Uint8Array) this.#writer.writeFrame(message);
    else this.#writer.writeText(typeof message === "string" ? message : JSON.stringify(message));
    await this.#writer.flushed();
  }

  /** Writes raw bytes, framing and all. */
  async sendBytes(bytes: Uint8Array): Promise<void> {
    let offset = 0;
    while (offset < bytes.length) offset += await this.conn.write(bytes.subarray(offset));
  }

  /** The next frame's text, or null when the server closed the connection. */
  async receiveText(): Promise<string | null> {
    while (this.#queue.length === 0) {
      const frames = await this.#reader.read();
      if (frames === null) return null;
      this.#queue.push(...frames.map((frame) => frame.slice()));
    }
    return decoder.decode(this.#queue.shift());
  }

  /** The next frame parsed as JSON, or null when the server closed the connection. */
  async receive(): Promise<unknown> {
    const text = await this.receiveText();
    return text === null ? null : JSON.parse(text);
  }

  /** Sends `message` and resolves with the next frame parsed. */
  async exchange(message: unknown): Promise<unknown> {
    await this.send(message);
    return await this.receive();
  }

  /** Resolves when the server has closed the connection, ignoring frames it sends before. */
  async closedByServer(): Promise<void> {
    try {
      while (await this.receiveText() !== null) { /* drain */ }
    } catch {
      // A reset counts as closed.
    }
  }

  close(): void {
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/**
 * Resolves as `promise` does, or rejects once `ms` have passed: a guard so that a broken behaviour
 * fails the test instead of hanging it. Not a timing assertion; the limit is far above any real wait.
 */
export async function within<T>(promise: Promise<T>, what: string, ms = 5_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Gave up waiting: ${what} (${ms} ms)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * A real ClientHello: the first TLS record `Deno.connectTls` sends, caught by a plain TCP
 * listener. Fault tests and the soak corrupt or cut it.
 */
export async function recordClientHello(): Promise<Uint8Array> {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connecting = Deno.connectTls({
    hostname: "127.0.0.1",
    port: listener.addr.port,
    caCerts: [certs.ca],
  });
  using server = await listener.accept();
  using client = await connecting;
  const handshake = client.handshake().catch(() => {});
  const bytes = new Uint8Array(16 * 1024);
  let length = 0;
  const recordLength = () => length < 5 ? Infinity : 5 + ((bytes[3]! << 8) | bytes[4]!);
  for (let reads = 0; reads < 64 && length < recordLength(); reads++) {
    const count = await server.read(bytes.subarray(length));
    if (count === null) break;
    length += count;
  }
  client.close();
  await handshake;
  if (bytes[0] !== 0x16 || bytes[5] !== 0x01) {
    throw new Error("Cannot record a ClientHello: the first record is not one");
  }
  return bytes.slice(0, recordLength());
}
