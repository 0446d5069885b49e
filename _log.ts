// The server's log of connection errors, rate-limited so that an attack cannot turn the log into
// a second attack.

/**
 * What a log line is about, for structured logs: its kind, the peer it concerns, and the event's
 * own fields. None holds what a client sent (the line may quote it).
 */
export interface LogFields {
  /**
   * The kind of event: a connection's (`"closed"`, `"protocol_error"`, ...), a listener's
   * (`"handshake_failed"`, `"connection_refused"`, ...: `TransportEvent` in
   * _transport_types.ts), or `"suppressed"`.
   */
  readonly event?: string;
  /** The peer's address, `host:port`, an IPv6 host in brackets. */
  readonly peer?: string;
  /**
   * Why a handshake or a PROXY header failed (`"handshake_failed"`, `"proxy_header_failed"`):
   * `"timeout"`, `"protocol"`, `"certificate"`, `"reset"` or `"other"`, as the metrics count it.
   */
  readonly reason?: string;
  /** The limit that refused a connection (`"connection_refused"`): `"max_connections"`. */
  readonly limit?: string;
  /** The method whose handler failed (`"handler_failed"`): always one of the method table's. */
  readonly method?: string;
}

/**
 * Passes on at most `perSecond` lines a second and counts the rest; `flush` writes the count as
 * one summary line.
 */
export class RateLimitedLog {
  #emit: (error: unknown, line: string, fields: LogFields) => void;
  #perSecond: number;
  #windowStart = 0;
  #lines = 0;
  #suppressed = 0;

  constructor(
    emit: (error: unknown, line: string, fields: LogFields) => void,
    perSecond: number,
  ) {
    this.#emit = emit;
    this.#perSecond = perSecond;
  }

  /** Logs `line` (about `error`, if any) unless this second's lines are used up. */
  report(error: unknown, line: string, fields: LogFields = {}): void {
    const now = Date.now();
    if (now - this.#windowStart >= 1000) this.#roll(now);
    if (this.#lines < this.#perSecond) {
      this.#lines++;
      this.#write(error, line, fields);
    } else {
      this.#suppressed++;
    }
  }

  /** Writes the summary of suppressed lines once their second is over, or now when `force`. */
  flush(force: boolean): void {
    const now = Date.now();
    if (force || now - this.#windowStart >= 1000) this.#roll(now);
  }

  #roll(now: number): void {
    if (this.#suppressed > 0) {
      const seconds = Math.max(1, Math.round((now - this.#windowStart) / 1000));
      this.#write(
        undefined,
        `${this.#suppressed} more connection errors in the last ${seconds} s ` +
          `(at most ${this.#perSecond} are logged a second)`,
        { event: "suppressed" },
      );
    }
    this.#windowStart = now;
    this.#lines = 0;
    this.#suppressed = 0;
  }

  #write(error: unknown, line: string, fields: LogFields): void {
    try {
      this.#emit(error, line, fields);
    } catch {
      // A failing log hook must not take a connection task down with it.
    }
  }
}
