#!/usr/bin/env bash
# Installs the runtimes the portable tests run on besides Deno, Node.js and Bun, from the npm
# registry into .ci/cache/ (packages `node` and `bun`, whose binaries ship inside registry packages),
# without touching the system's node. Idempotent: a runtime already installed at the pinned version
# is kept. Prints one line per runtime, "node: PATH (vX)" and "bun: PATH (X)", and, with --paths,
# only the two paths (node first), for scripts to read. Exits non-zero when a runtime cannot be had.
#
# Versions: Node 26 and Bun 1, pinned so that CI runs what was tested; override with
# TLSRPC_NODE_VERSION / TLSRPC_BUN_VERSION (any npm version or range, e.g. 26 or 1.4.5).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
node_version=${TLSRPC_NODE_VERSION:-26.10.0}
bun_version=${TLSRPC_BUN_VERSION:-1.4.5}
paths_only=0
[ "${1:-}" = --paths ] && paths_only=1

install() { # PACKAGE VERSION: installs it into .ci/cache/PACKAGE-VERSION unless it is there
  local pkg=$1 version=$2 dir="$root/.ci/cache/$1-$2"
  # The marker is written last, so that an interrupted install runs again.
  if [ ! -e "$dir/.installed" ]; then
    echo "installing $pkg@$version from the npm registry into $dir" >&2
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error \
      "$pkg@$version" >&2
    touch "$dir/.installed"
  fi
}

# The `node` package puts its binary in node_modules/node/bin/node through its postinstall step;
# `bun` ships per-platform packages (@oven/bun-linux-x64...) and links node_modules/.bin/bun.
binary() { # PACKAGE VERSION: prints the binary's path, or fails
  local dir="$root/.ci/cache/$1-$2/node_modules" candidate
  for candidate in "$dir/$1/bin/$1" "$dir/.bin/$1" "$dir/$1/bin/$1.exe"; do
    if [ -x "$candidate" ]; then
      readlink -f "$candidate"
      return 0
    fi
  done
  echo "Cannot install $1: no binary under $dir after npm install" >&2
  return 1
}

install node "$node_version"
install bun "$bun_version"
node_bin=$(binary node "$node_version")
bun_bin=$(binary bun "$bun_version")
# A binary that does not run (a wrong platform package, a missing library) fails here, not in the tests.
node_v=$("$node_bin" --version)
bun_v=$("$bun_bin" --version)
if [ "$paths_only" -eq 1 ]; then
  echo "$node_bin"
  echo "$bun_bin"
else
  echo "node: $node_bin ($node_v)"
  echo "bun: $bun_bin ($bun_v)"
fi
