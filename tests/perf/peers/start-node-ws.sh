#!/usr/bin/env bash
# Node.js `ws` peer: npm `ws` (pinned in node-ws/package-lock.json) on Node's http server,
# broadcast by looping over the channel's sockets.
# Usage: start-node-ws.sh PORT   -> last stdout line: the server PID (stop with stop.sh PID)
#   subscribe: ws://127.0.0.1:PORT/sub?cid=CH    (WebSocket; each message arrives as the bare body)
#   publish:   POST http://127.0.0.1:PORT/pub?cid=CH   (body = message; answers 200)
# Env: NODE_WS_HEAP_MB  V8 old-space limit in MiB (default 8192; buffered sends at high
#      fan-out live on the JS heap)
source "$(dirname "$0")/lib.sh"
PORT=${1:?usage: start-node-ws.sh PORT}
check_port "$PORT"
MODULES=$(node_deps node-ws)
NODE_PATH="$MODULES" launch node-ws "$PORT" \
  node --max-old-space-size="${NODE_WS_HEAP_MB:-8192}" "$PEERS_SRC/node-ws/server.js" "$PORT"
