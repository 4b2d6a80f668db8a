#!/usr/bin/env bash
# Install everything Herald's tests need on a fresh Debian 12 machine, then run them all, in
# two tiers. Tier 1 (fast, nothing but a C toolchain installed): cargo fmt --check, cargo
# clippy -D warnings, cargo test (unit tests, and integration tests each against a real
# herald on loopback). Tier 2 (conformance, after installing chromium, node and the SDKs):
# the Autobahn|Testsuite run, the headless-Chromium browser test, and the official
# Centrifugo SDKs (npm centrifuge, PyPI cent and centrifuge-python), both also across a
# cluster (three herald nodes over a private redis-server, installed by tier 1), and the
# differential tests against the real Centrifugo v6.9.1 (built once with Go, cached
# outside the repo).
#
# Usage: bash tests/all.sh            (as root, or a user with sudo for apt-get)
# Env:   HERALD_SKIP_INSTALL=1        skip apt/npm installs (everything already there)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '\n== %s\n' "$*"; }
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

# Tier 1 (fast): formatting, lints, unit and integration tests. A slip fails here in
# seconds to minutes, before anything is installed for the conformance tier. The
# integration tests start their own private redis-server and use curl.
if [ "${HERALD_SKIP_INSTALL:-0}" != 1 ]; then
  base=()
  { command -v cc >/dev/null && command -v make >/dev/null; } || base+=(build-essential)
  command -v redis-server >/dev/null || base+=(redis-server)
  command -v curl >/dev/null || base+=(curl)
  command -v openssl >/dev/null || base+=(openssl)
  if [ ${#base[@]} -gt 0 ]; then
    log "installing ${base[*]} (a C toolchain for jemalloc and ring; redis-server and curl for tests)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${base[@]}" >/dev/null
  fi
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi

log "tier 1: cargo fmt --check"
cargo fmt --all --check

log "tier 1: cargo clippy (all targets, warnings are errors)"
cargo clippy --locked --workspace --all-targets -- -D warnings

log "tier 1: cargo test --workspace (unit tests on byte vectors and through the socket-free test kit; integration tests against a real herald; the load/soak client library)"
cargo test --locked --release --workspace 2>&1

# Tier 2 (conformance): Autobahn, the browser, the Centrifugo SDKs.
if [ "${HERALD_SKIP_INSTALL:-0}" != 1 ]; then
  log "installing system packages (chromium for the browser test, node/npm, curl)"
  need=()
  command -v chromium >/dev/null || need+=(chromium)
  command -v node >/dev/null || need+=(nodejs)
  command -v npm >/dev/null || need+=(npm)
  command -v curl >/dev/null || need+=(curl)
  { command -v cc >/dev/null && command -v make >/dev/null; } || need+=(build-essential)
  command -v python3 >/dev/null || need+=(python3)
  if [ ${#need[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  fi
  if [ -f tests/centrifugo/package.json ]; then
    log "installing the Centrifugo SDK tests' npm and PyPI packages"
    (cd tests/centrifugo && npm ci --no-audit --no-fund --loglevel=error)
    # A private venv: Debian 12's system python refuses pip installs (PEP 668).
    if [ ! -x target/pyenv/bin/python ]; then
      python3 -m venv target/pyenv 2>/dev/null || {
        $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv target/pyenv
      }
    fi
    target/pyenv/bin/python -m pip install -q --disable-pip-version-check -r tests/centrifugo/requirements.txt
  fi
  if [ -f tests/browser/package.json ]; then
    log "installing the browser test's npm packages"
    (cd tests/browser && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi)
  fi
fi

log "tier 2: release build of herald (the conformance runs use it; cargo test built it already)"
cargo build --release --locked -p herald

log "tier 2: Autobahn|Testsuite against /echo (every group, permessage-deflate 12 and 13 included)"
bash tests/autobahn/run.sh --no-build

# Over TLS the framing groups; compression (12, 13) is the same code above TLS and takes
# most of the time, so it runs once, above.
log "tier 2: Autobahn|Testsuite over TLS against wss://.../echo (groups 1-10; self-signed certificate)"
bash tests/autobahn/run.sh --no-build --tls --exclude "12.*,13.*"

if [ -f tests/browser/demo.test.mjs ]; then
  log "browser tests: the demo page over all five transports (plain, and over TLS: tls.test.mjs), the status page, Centrifugo emulation, and across a cluster (cluster.test.mjs: three nodes over a private redis-server; the demo page served by B and centrifuge-js in a page of C receive what A publishes), in headless Chromium (screenshot in target/browser-artifacts/)"
  HERALD_BIN="$PWD/target/release/herald" bash tests/browser/run.sh
fi

if [ -f tests/centrifugo/run.sh ]; then
  log "Centrifugo SDKs (centrifuge on npm, cent and centrifuge-python on PyPI) against herald, and across three nodes over a private redis-server (cluster.test.mjs)"
  PYTHON="$PWD/target/pyenv/bin/python"
  [ -x "$PYTHON" ] || PYTHON=python3
  HERALD_BIN="$PWD/target/release/herald" PYTHON="$PYTHON" bash tests/centrifugo/run.sh
fi

# Go >= 1.26 for centrifuge-go and the Centrifugo build. Without one (Debian 12's golang-go
# is 1.19), fetch the Go toolchain module from the Go module proxy once into
# ~/.cache/herald-go (the same zip `GOTOOLCHAIN` downloads) and use it for those steps.
ensure_go() {
  GO_WANT=1.26.8
  if command -v go >/dev/null && [ "$(printf '%s\n' "$(go env GOVERSION 2>/dev/null | sed 's/^go//')" 1.26 | sort -V | head -1)" = 1.26 ]; then
    return
  fi
  local gocache="$HOME/.cache/herald-go"
  if [ ! -x "$gocache/go/bin/go" ]; then
    log "installing Go $GO_WANT from the Go module proxy into $gocache"
    mkdir -p "$gocache"
    curl -fsSL -o "$gocache/go.zip" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_WANT.linux-amd64.zip"
    (cd "$gocache" && rm -rf go unz && mkdir go && python3 -c "import zipfile; zipfile.ZipFile('go.zip').extractall('unz')" \
      && mv "unz/golang.org/toolchain@v0.0.1-go$GO_WANT.linux-amd64"/* go/ && rm -rf unz go.zip && chmod +x go/bin/* go/pkg/tool/*/*)
  fi
  export PATH="$gocache/go/bin:$PATH"
}

if [ -f tests/centrifugo/go.sh ]; then
  ensure_go
  log "centrifuge-go (protobuf, as the mobile SDKs) against herald"
  HERALD_BIN="$PWD/target/release/herald" bash tests/centrifugo/go.sh
fi

if [ -f tests/centrifugo/diff.sh ]; then
  ensure_go
  # Needs the Go module proxy for the first build (fails saying so without Go).
  log "differential tests: the same scenarios against herald and the real Centrifugo v6.9.1 (built once with Go into ~/.cache/herald-centrifugo; summary in target/centrifugo-diff/summary.md)"
  HERALD_BIN="$PWD/target/release/herald" bash tests/centrifugo/diff.sh
fi

log "all test suites passed"
