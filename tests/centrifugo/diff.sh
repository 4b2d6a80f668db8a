#!/usr/bin/env bash
# Differential tests: herald against the real Centrifugo v6.9.1 (diff.test.mjs).
# Builds Centrifugo once into ~/.cache/herald-centrifugo (oracle.sh; needs Go and the module
# proxy), installs the npm packages if missing (npm ci), then runs the scenarios.
# HERALD_BIN: the herald to test (default ../../target/release/herald).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export HERALD_BIN="${HERALD_BIN:-$(cd ../.. && pwd)/target/release/herald}"
[ -x "$HERALD_BIN" ] || { echo "diff.sh: herald binary not found at $HERALD_BIN" >&2; exit 1; }
CENTRIFUGO_BIN="${CENTRIFUGO_BIN:-$(bash oracle.sh build)}"
export CENTRIFUGO_BIN
[ -d node_modules/ws ] || npm ci --no-audit --no-fund --loglevel=error
node --test --test-concurrency=1 diff.test.mjs
