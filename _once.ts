// Waiting for one event of a node socket (node:net, node:tls), or its failure, or a signal's
// abort: whichever comes first settles the wait, and the listeners it added go. Not node's
// `events.once`: that rejects an abort with an AbortError instead of the signal's reason (the
// caller's TimeoutError), and knows no failure but "error".

/** The part of a node `EventEmitter` that {@linkcode once} uses. */
export interface Emitter {
  once(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** Options of {@linkcode once}. */
export interface OnceOptions {
  /** Aborting it rejects the wait with its reason. @default none */
  signal?: AbortSignal | undefined;
  /**
   * Events besides "error" that reject the wait, each with what its function returns ("error"
   * rejects with the error emitted). @default {}
   */
  failures?: Record<string, () => unknown>;
  /**
   * Leaves the "error" listener in place once the wait has settled, until it has caught one
   * error: for a caller that hands the emitter on, so that an error before its next owner listens
   * does not go unhandled (node ends the process on an "error" nobody listens to). A later
   * error settles nothing. @default false
   */
  keepErrorListener?: boolean;
}

/**
 * Resolves once `emitter` emits `event`; rejects once it emits "error" or one of
 * `options.failures`, or once `options.signal` aborts (at once if it has already). Every listener
 * it added is removed when it settles, the "error" one unless `options.keepErrorListener`.
 */
export function once(emitter: Emitter, event: string, options: OnceOptions = {}): Promise<void> {
  const { signal, failures = {}, keepErrorListener = false } = options;
  return new Promise<void>((resolve, reject) => {
    const onEvent = () => settle(undefined);
    const onAbort = () => settle(signal!.reason);
    const onFailure = Object.entries(failures).map(([name, error]) => {
      const listener = () => settle(error());
      return [name, listener] as const;
    });
    emitter.once(event, onEvent);
    emitter.once("error", settle);
    for (const [name, listener] of onFailure) emitter.once(name, listener);
    signal?.addEventListener("abort", onAbort, { once: true });
    if (signal?.aborted) onAbort();
    function settle(error: unknown): void {
      emitter.off(event, onEvent);
      if (!keepErrorListener) emitter.off("error", settle);
      for (const [name, listener] of onFailure) emitter.off(name, listener);
      signal?.removeEventListener("abort", onAbort);
      if (error === undefined) resolve();
      else reject(error);
    }
  });
}
