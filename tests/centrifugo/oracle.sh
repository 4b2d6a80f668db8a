#!/usr/bin/env bash
# The real Centrifugo v6.9.1 as the oracle for herald's Centrifugo compatibility.
#
#   oracle.sh build    build it once with Go into ~/.cache/herald-centrifugo/bin (or
#                      $CENTRIFUGO_CACHE/bin) and print the binary's path; a cached binary of
#                      the right version is reused. Needs Go and the Go module proxy.
#   oracle.sh start CONFIG
#                      start it with CONFIG (a Centrifugo v6 JSON config) in the foreground
#                      (exec), for a manual side-by-side look.
#
# diff.test.mjs does not need `start`: it writes its own config and runs the binary itself
# (CENTRIFUGO_BIN). The first build takes a few minutes (measured: see README,
# "Differential tests"); later runs reuse the binary.
set -euo pipefail
VERSION=v6.9.1
CACHE="${CENTRIFUGO_CACHE:-$HOME/.cache/herald-centrifugo}"
BIN="$CACHE/bin/centrifugo"

build() {
  # `go install` leaves the binary's own version string at 0.0.0, so a stamp file says
  # which version the cached binary is.
  if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null)" = "$VERSION" ]; then
    echo "$BIN"
    return
  fi
  command -v go >/dev/null || { echo "oracle.sh: Go is needed to build Centrifugo $VERSION" >&2; exit 1; }
  mkdir -p "$CACHE/bin"
  echo "oracle.sh: building Centrifugo $VERSION into $CACHE/bin (once)" >&2
  local t0=$SECONDS
  # Outside any module, so the repository's files play no part.
  (cd "$CACHE" && GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "github.com/centrifugal/centrifugo/v6@$VERSION") >&2
  echo "$VERSION" >"$BIN.version"
  echo "oracle.sh: built in $((SECONDS - t0)) s" >&2
  echo "$BIN"
}

case "${1:-build}" in
  build) build ;;
  start)
    [ $# -ge 2 ] || { echo "usage: oracle.sh start CONFIG" >&2; exit 2; }
    b=$(build)
    exec "$b" --config "$2"
    ;;
  *) echo "usage: oracle.sh build | start CONFIG" >&2; exit 2 ;;
esac
