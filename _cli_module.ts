// The module `serve` serves: loaded by path or URL, and the handlers it holds picked out, with
// every failure reported before the server listens: a missing file, a module that does not
// load (with Deno's own text: file, line and code frame), or one that exposes no method.

import { CliError, ExitCode, permissionError } from "./_cli_error.ts";
import { buildMethodTable } from "./_introspect.ts";
import { reason } from "./_util.ts";

/** Terminal colours that Deno leaves in some of its error texts, even when stderr is a file. */
// deno-lint-ignore no-control-regex -- removing colour codes is the point
const ANSI_COLOURS = /\x1b\[[0-9;]*m/g;

/** The first frame of a stack: `    at file:///app/mod.ts:3:9`. */
const STACK_FRAME = /^\s+at .*$/m;

/**
 * The handlers of the module at `specifier` (a path, relative to the working folder, or a URL):
 * its default export when that is an object, an instance of it when it is a class, else the
 * module's named exports. Each failure is a usage error (exit 2) naming the module: a missing
 * file, a module that fails to load or to run (the message, then Deno's code frame or the line
 * that threw), no permission to read it, or no method to serve.
 */
export async function loadHandlers(specifier: string): Promise<object> {
  const url = moduleUrl(specifier);
  if (url.startsWith("file:")) {
    try {
      await Deno.stat(new URL(url));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw new CliError(ExitCode.Usage, `Cannot load module "${specifier}": file not found`);
      }
      throw permissionError(`load module "${specifier}"`, error) ??
        new CliError(ExitCode.Usage, `Cannot load module "${specifier}": ${reason(error)}`);
    }
  }
  let module: Record<string, unknown>;
  try {
    module = await import(url);
  } catch (error) {
    throw permissionError(`load module "${specifier}"`, error) ?? loadError(specifier, error);
  }
  let handlers: object = module;
  const fallback = module.default;
  try {
    if (
      typeof fallback === "function" &&
      /^class\b/.test(Function.prototype.toString.call(fallback))
    ) {
      handlers = new (fallback as new () => object)();
    } else if (fallback !== null && typeof fallback === "object") {
      handlers = fallback;
    }
  } catch (error) {
    throw loadError(specifier, error, "its default export class cannot be made");
  }
  let methods;
  try {
    methods = buildMethodTable(handlers);
  } catch (error) {
    throw new CliError(ExitCode.Usage, `Cannot serve "${specifier}": ${reason(error)}`);
  }
  if (methods.size === 0) {
    throw new CliError(ExitCode.Usage, `Cannot serve "${specifier}": it exposes no method`, {
      hint: "export functions, or a default export object or class with methods; " +
        'names starting with "_" are not exposed',
    });
  }
  return handlers;
}

/**
 * The URL of the module at `specifier`: a URL as it is, a path (a Windows one included) resolved
 * against the working folder. Workers load it by this URL, so that they find the same module.
 */
export function moduleUrl(specifier: string): string {
  return /^[a-z][a-z0-9+.-]*:/i.test(specifier) && !/^[a-z]:[\\/]/i.test(specifier)
    ? specifier
    : new URL(specifier, `file://${Deno.cwd()}/`).href;
}

/**
 * A module's load failure: the first line of Deno's text on the error line, the rest (the code
 * frame of a syntax error, the import that failed) as detail; an error thrown while the module
 * ran gets its name and the stack frame that threw.
 */
function loadError(specifier: string, error: unknown, what?: string): CliError {
  const text = (error instanceof Error ? error.message : String(error)).replace(ANSI_COLOURS, "");
  const [first = "", ...rest] = text.split("\n");
  let detail = rest.join("\n");
  let head = first;
  // Deno's loader errors carry their location in the message; a thrown error has it in its stack.
  if (error instanceof Error && !/\n\s+at /.test(text)) {
    if (!/^\w*Error: /.test(first)) head = `${error.name}: ${first}`;
    const frame = STACK_FRAME.exec((error.stack ?? "").replace(ANSI_COLOURS, ""));
    if (frame !== null) detail = detail === "" ? frame[0] : `${detail}\n${frame[0]}`;
  }
  const prefix = what === undefined ? "" : `${what}: `;
  return new CliError(ExitCode.Usage, `Cannot load module "${specifier}": ${prefix}${head}`, {
    ...(detail.trim() !== "" && { detail: detail.trimEnd() }),
  });
}
