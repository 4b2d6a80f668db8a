#!/usr/bin/env bash
# centrifuge-go (protobuf) against herald: starts its own herald (HERALD_BIN) on a free port
# with a token secret and a `chat` namespace, runs tests/centrifugo/go/main.go, stops herald.
# Needs Go >= 1.25 and the Go module proxy (tests/all.sh provides both).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/go"
HERALD_BIN="${HERALD_BIN:-$(cd ../../.. && pwd)/target/release/herald}"
cfg=$(mktemp /tmp/herald-go-XXXXXX.json)
log=$(mktemp /tmp/herald-go-XXXXXX.log)
cat > "$cfg" <<'JSON'
{"client": {"token": {"hmac_secret_key": "go-test-secret"}, "ping_interval": "1s", "pong_timeout": "500ms"},
 "channel": {"without_namespace": {"allow_subscribe_for_client": true},
  "namespaces": [{"name": "chat", "history_size": 10, "history_ttl": "300s", "force_recovery": true, "presence": true,
   "allow_subscribe_for_client": true, "allow_publish_for_subscriber": true, "allow_history_for_subscriber": true,
   "allow_presence_for_subscriber": true}]}}
JSON
"$HERALD_BIN" --bind 127.0.0.1 --port 0 --config "$cfg" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$cfg" "$log"' EXIT
addr=""
for _ in $(seq 1 100); do
  addr=$(sed -n 's/.*listening on \(127\.0\.0\.1:[0-9]*\).*/\1/p' "$log" | head -1)
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "go.sh: herald did not start" >&2; cat "$log" >&2; exit 1; }
timeout 120 go run . "ws://$addr/connection/websocket" go-test-secret
