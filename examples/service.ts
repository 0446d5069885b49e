/**
 * A class-based service with a namespace, as a Thrift service becomes in tlsrpc: its methods are
 * the service's methods, a nested plain object is a namespace (`admin.reset`), names starting
 * with `_` stay private, and declared exceptions become errors with codes.
 *
 * Serve it with `deno run -A cli.ts serve examples/service.ts` (the default export, a class, is
 * instantiated), then `deno run -A cli.ts call add apples 3`.
 *
 * @module
 */

import { callContext, RpcError } from "../mod.ts";

/** The error codes this service declares, as a Thrift IDL would list its exceptions. */
export const InventoryErrors = {
  /** No item of that name. */
  NotFound: 1001,
  /** The count would go below zero. */
  Insufficient: 1002,
} as const;

/** An inventory of named items. */
export default class Inventory {
  #items = new Map<string, number>();
  #log: string[] = [];

  /** Administrative methods, under the `admin.` namespace. */
  admin = {
    /** Empties the inventory; answers how many items it held. */
    reset: (): number => {
      const count = this.#items.size;
      this.#items.clear();
      return count;
    },
    /** The last changes, newest last. */
    log: (): string[] => [...this.#log],
  };

  /** Adds `count` of `name`; answers the new count. */
  add(name: string, count = 1): number {
    const total = (this.#items.get(name) ?? 0) + count;
    this._record(`add ${name} ${count}`);
    this.#items.set(name, total);
    return total;
  }

  /** Takes `count` of `name`; fails with code 1001 or 1002 (see InventoryErrors). */
  take(name: string, count = 1): number {
    const have = this.#items.get(name);
    if (have === undefined) {
      throw new RpcError(InventoryErrors.NotFound, `No item named "${name}"`, { data: { name } });
    }
    if (have < count) {
      throw new RpcError(InventoryErrors.Insufficient, `Only ${have} of "${name}" left`, {
        data: { name, have, wanted: count },
      });
    }
    this._record(`take ${name} ${count}`);
    this.#items.set(name, have - count);
    return have - count;
  }

  /** Every item and its count. */
  list(): Record<string, number> {
    return Object.fromEntries(this.#items);
  }

  /** Not exposed: the leading underscore keeps it private to the server. */
  _record(change: string): void {
    const peer = callContext()?.peer;
    this.#log.push(peer ? `${change} (from ${peer.hostname})` : change);
  }
}
