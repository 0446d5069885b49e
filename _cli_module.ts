// The module `serve` serves: loaded by path or URL, and the handlers it holds picked out.

import { CliError, ExitCode } from "./_cli_flags.ts";
import { reason } from "./_util.ts";

/**
 * The handlers of the module at `specifier` (a path, relative to the working folder, or a URL):
 * its default export when that is an object, an instance of it when it is a class, else the
 * module's named exports. A missing file is a usage error, a module that fails to load a failure.
 */
export async function loadHandlers(specifier: string): Promise<object> {
  const url = /^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)
    ? specifier
    : new URL(specifier, `file://${Deno.cwd()}/`).href;
  if (url.startsWith("file:")) {
    try {
      await Deno.stat(new URL(url));
    } catch (error) {
      const why = error instanceof Deno.errors.NotFound ? "file not found" : reason(error);
      throw new CliError(ExitCode.Usage, `Cannot load module "${specifier}": ${why}`);
    }
  }
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    const first = reason(error).split("\n")[0];
    throw new CliError(ExitCode.Failure, `Cannot load module "${specifier}": ${first}`);
  }
  const fallback = module.default;
  if (
    typeof fallback === "function" && /^class\b/.test(Function.prototype.toString.call(fallback))
  ) {
    return new (fallback as new () => object)();
  }
  if (fallback !== null && typeof fallback === "object") return fallback;
  return module;
}
