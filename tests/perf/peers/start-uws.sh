#!/usr/bin/env bash
# uWebSockets.js peer: npm @trufflesuite/uws-js-unofficial (pinned in uws/package-lock.json),
# the prebuilt native addon, its built-in topic pub/sub.
# Usage: start-uws.sh PORT   -> last stdout line: the server PID (stop with stop.sh PID)
#   subscribe: ws://127.0.0.1:PORT/sub?cid=CH    (WebSocket; each message arrives as the bare body)
#   publish:   POST http://127.0.0.1:PORT/pub?cid=CH   (body = message; answers 200)
source "$(dirname "$0")/lib.sh"
PORT=${1:?usage: start-uws.sh PORT}
check_port "$PORT"
MODULES=$(node_deps uws)
NODE_PATH="$MODULES" launch uws "$PORT" node "$PEERS_SRC/uws/server.js" "$PORT"
