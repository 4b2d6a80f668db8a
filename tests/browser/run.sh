#!/usr/bin/env bash
# Browser tests of the demo page: headless Debian Chromium (/usr/bin/chromium) driven by
# playwright-core. Needs a built herald (cargo build --release) or HERALD_BIN.
# Never downloads a browser.
set -euo pipefail
cd "$(dirname "$0")"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -x /usr/bin/chromium ]; then
  echo "run.sh: /usr/bin/chromium is missing (apt-get install -y chromium)" >&2
  exit 1
fi
if [ ! -d node_modules/playwright-core ]; then
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi
fi
exec node --test "$@"
