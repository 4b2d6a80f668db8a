#!/usr/bin/env bash
# The official Centrifugo SDKs, unchanged, against herald's Centrifugo v6 compatible API:
#   centrifuge-js (npm `centrifuge`) with node's test runner: sdk.test.mjs
#   centrifuge-js's protobuf build (centrifuge/build/protobuf): protobuf.test.mjs
#   cent (pycent) and centrifuge-python with pytest:           test_python_sdk.py
#   centrifuge-python with use_protobuf=True:                  test_python_protobuf.py
#   all of them across three herald nodes over a private
#   redis-server (the Redis engine):                           cluster.test.mjs
# Installs what is missing (npm ci; pip install -r requirements.txt), then runs them all.
# Needs a built herald: HERALD_BIN (default ../../target/release/herald), passed through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
export HERALD_BIN="${HERALD_BIN:-$(cd ../.. && pwd)/target/release/herald}"
PYTHON="${PYTHON:-python3}"
export PYTHON

if [ ! -x "$HERALD_BIN" ]; then
  echo "run.sh: herald binary not found at $HERALD_BIN (cargo build --release, or set HERALD_BIN)" >&2
  exit 1
fi
if [ ! -d node_modules/centrifuge ] || [ ! -d node_modules/ws ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = {}
for line in open("requirements.txt"):
    line = line.split("#")[0].strip()
    if line:
        name, _, ver = line.partition("==")
        want[name] = ver
sys.exit(0 if all(m.version(n) == v for n, v in want.items()) else 1)
PY
then
  "$PYTHON" -m pip install -q --disable-pip-version-check -r requirements.txt
fi

status=0
echo "== centrifuge-js (node --test sdk.test.mjs)"
node --test sdk.test.mjs || status=1
echo "== centrifuge-js protobuf build (node --test protobuf.test.mjs)"
node --test protobuf.test.mjs || status=1
echo "== cent + centrifuge-python (pytest)"
"$PYTHON" -m pytest -q -p no:cacheprovider test_python_sdk.py test_python_protobuf.py || status=1
echo "== the SDKs across three nodes over a private redis-server (node --test cluster.test.mjs)"
node --test cluster.test.mjs || status=1
exit $status
