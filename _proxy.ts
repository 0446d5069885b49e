// The client's proxy: remote methods as functions, `client.proxy.math.add(2, 3)`, and the types
// that give it the shape of the server's handlers.

/**
 * The remote view of a handler type `T`, as the server exposes it: each method returns a promise
 * of its awaited result, nested plain objects are namespaces, and names the server never exposes
 * (starting with `_`, `constructor`) are absent.
 *
 * @typeParam T The type of the server's handlers: `typeof handlers`, or an interface.
 */
export type Remote<T> = {
  readonly [K in keyof T as ExposedKey<K, T[K]>]: T[K] extends (...args: infer A) => infer R
    ? (...params: A) => Promise<Awaited<R>>
    : Remote<T[K]>;
};

/**
 * `K` when the server would expose a member named `K` holding `V` (a function, or a namespace
 * object), else `never`: the key filter of {@linkcode Remote}.
 *
 * @typeParam K The member's name.
 * @typeParam V The member's type.
 */
export type ExposedKey<K, V> = K extends `_${string}` | "constructor" ? never
  : K extends string ? V extends (...args: never[]) => unknown ? K
    : V extends readonly unknown[] ? never
    : V extends object ? K
    : never
  : never;

/**
 * The type of `RpcClient.proxy`: {@linkcode Remote} of the handler type, or, for a client made
 * without one, a proxy on which any property path can be called (typed `any`, as nothing is known
 * of the server's methods).
 *
 * @typeParam T The type of the server's handlers, or `unknown` when not given.
 */
// deno-lint-ignore no-explicit-any
export type RemoteProxy<T> = unknown extends T ? any : Remote<T>;

/** Sends a call: the client's, with or without per-call options bound. */
export type Request = (method: string, params: unknown[]) => Promise<unknown>;

/**
 * The root proxy for `request`: a property names a method or a namespace, a call calls. Each path
 * is made once, with its name, its function and its children: reading a path again allocates
 * nothing and joins no strings.
 */
export function proxyFor(request: Request): object {
  return node("", request);
}

function node(path: string, request: Request): object {
  const children = new Map<string, object>();
  return new Proxy((...params: unknown[]) => request(path, params), {
    get(_, key) {
      // Not a promise: `await client.proxy` must not look for a method named "then".
      if (typeof key !== "string" || key === "then") return undefined;
      let child = children.get(key);
      if (child === undefined) {
        child = node(path === "" ? key : `${path}.${key}`, request);
        children.set(key, child);
      }
      return child;
    },
  });
}
