#!/usr/bin/env bash
# Fetches the programs the tests start (Prometheus and promtool, HAProxy, nginx with its stream
# module) from Debian's packages into .ci/cache/tools/, without installing anything system-wide:
# `apt-get download` into a temp dir, then `dpkg -x` into the cache. Shared libraries that the
# binaries need and the machine lacks are fetched the same way (the packages' lib* dependencies
# that are not installed), and `ldd` then checks that nothing is missing. Each binary that needs
# such a library gets a wrapper in .ci/cache/tools/bin/ that sets LD_LIBRARY_PATH; the others are
# linked there as they are.
#
# Idempotent: a package already extracted (marker in .ci/cache/tools/.fetched/) is skipped.
# Prints where the binaries are. Exits non-zero when a package cannot be had or a library is
# still missing. nginx's stream module is a file nginx loads (load_module), not a binary: it is at
# .ci/cache/tools/usr/lib/nginx/modules/ngx_stream_module.so, Debian's path under the cache.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="$root/.ci/cache/tools"
marks="$tools/.fetched"
# The packages the tests need, and the binaries of each that they run. On bookworm the package
# `nginx` holds the binary (`nginx-core` is an empty package that depends on it and on every
# module); `libnginx-mod-stream` holds the stream (TCP proxy) module.
packages=(prometheus haproxy nginx libnginx-mod-stream)
binaries=(usr/bin/prometheus usr/bin/promtool usr/sbin/haproxy usr/sbin/nginx)
# Files the tests load that are not binaries run from bin/.
modules=(usr/lib/nginx/modules/ngx_stream_module.so)

mkdir -p "$marks" "$tools/bin"
downloads=$(mktemp -d)
trap 'rm -rf "$downloads"' EXIT
# apt-get run as root drops to the _apt user to download; let it write here so that it does not
# warn about downloading unsandboxed.
if [ "$(id -u)" -eq 0 ] && id _apt >/dev/null 2>&1; then
  chown _apt "$downloads"
fi

updated=0
download() { # PACKAGE: downloads its .deb into $downloads, updating the package lists once if need be
  if (cd "$downloads" && apt-get download -q "$1" >/dev/null 2>"$downloads/apt.err"); then
    return 0
  fi
  if [ "$updated" -eq 0 ]; then
    updated=1
    echo "apt-get download $1 failed; updating the package lists" >&2
    apt-get update -q >/dev/null || true
    (cd "$downloads" && apt-get download -q "$1" >/dev/null 2>"$downloads/apt.err") && return 0
  fi
  cat "$downloads/apt.err" >&2
  echo "Cannot fetch tools: apt-get download $1 failed" >&2
  return 1
}

installed() { # PACKAGE: whether the system has it installed
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

extract() { # PACKAGE: downloads it and extracts it into $tools
  local pkg=$1 deb
  echo "fetching $pkg"
  download "$pkg"
  deb=$(ls "$downloads/${pkg}"_*.deb | head -1)
  dpkg -x "$deb" "$tools"
  rm -f "$deb"
}

# The shared-library packages that PACKAGE depends on, directly or through other such packages,
# that the system lacks. Alternatives ("a | b") are resolved to the first that apt names; libjs-*
# (web assets for Prometheus's UI, which the tests do not use) are not libraries.
missing_libs() {
  local queue=("$1") seen=" $1 " pkg dep out=()
  while [ "${#queue[@]}" -gt 0 ]; do
    pkg=${queue[0]}
    queue=("${queue[@]:1}")
    while read -r dep; do
      case "$dep" in libjs-*) continue ;; lib*) ;; *) continue ;; esac
      case "$seen" in *" $dep "*) continue ;; esac
      seen+="$dep "
      installed "$dep" && continue
      out+=("$dep")
      queue+=("$dep")
    done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks \
      --no-replaces --no-enhances "$pkg" 2>/dev/null |
      sed -n -E 's/^ *(Pre)?Depends: <?([^ >]+)>?$/\2/p')
  done
  [ "${#out[@]}" -eq 0 ] || printf '%s\n' "${out[@]}"
}

# The marker is written last, so that an interrupted run fetches the package again; it lists the
# libraries fetched with it.
for pkg in "${packages[@]}"; do
  [ -e "$marks/$pkg" ] && continue
  extract "$pkg"
  libs=$(missing_libs "$pkg")
  for lib in $libs; do extract "$lib"; done
  echo "$libs" >"$marks/$pkg"
done

# The library directories of everything extracted, for the binaries that need them.
libpath=$(find "$tools" -name '*.so*' \( -type f -o -type l \) -printf '%h\n' 2>/dev/null |
  sort -u | paste -sd: -)

version() { # NAME: the first line of its version (nginx has -v, not --version)
  local flag=--version
  [ "$1" = nginx ] && flag=-v
  "$tools/bin/$1" "$flag" 2>&1 | head -1
}

failed=0
for module in "${modules[@]}"; do
  if [ ! -f "$tools/$module" ]; then
    echo "Cannot fetch tools: $tools/$module is missing after extracting the packages" >&2
    failed=1
  elif LD_LIBRARY_PATH="$libpath" ldd "$tools/$module" | grep -q 'not found'; then
    echo "Cannot fetch tools: $tools/$module misses shared libraries:" >&2
    LD_LIBRARY_PATH="$libpath" ldd "$tools/$module" | grep 'not found' >&2
    failed=1
  else
    echo "$(basename "$module"): $tools/$module"
  fi
done
for bin in "${binaries[@]}"; do
  path="$tools/$bin"
  name=$(basename "$bin")
  if [ ! -x "$path" ]; then
    echo "Cannot fetch tools: $path is missing after extracting the packages" >&2
    failed=1
    continue
  fi
  if ! ldd "$path" >/dev/null 2>&1 || ! ldd "$path" | grep -q 'not found'; then
    # Static, or every library is on the system: link it as it is.
    ln -sfn "../$bin" "$tools/bin/$name"
  elif LD_LIBRARY_PATH="$libpath" ldd "$path" | grep -q 'not found'; then
    echo "Cannot fetch tools: $path still misses shared libraries:" >&2
    LD_LIBRARY_PATH="$libpath" ldd "$path" | grep 'not found' >&2
    failed=1
    continue
  else
    rm -f "$tools/bin/$name"
    # Paths relative to the wrapper, so that the cache still works when the checkout moves.
    rel=$(echo "$libpath" | sed "s|$tools|\$tools|g")
    cat >"$tools/bin/$name" <<EOF
#!/bin/sh
# Runs $bin from .ci/cache/tools with the shared libraries fetched beside it.
tools=\$(cd "\$(dirname "\$0")/.." && pwd)
LD_LIBRARY_PATH="$rel\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$tools/$bin" "\$@"
EOF
    chmod +x "$tools/bin/$name"
  fi
  echo "$name: $tools/bin/$name ($(version "$name"))"
done
exit "$failed"
