#!/usr/bin/env bash
# uWebSockets.js peer over TLS: SSLApp on TLS_PORT for subscribers, a plain App on PORT for
# the publisher (same npm package and lock file as start-uws.sh).
# Usage: start-uws-ssl.sh PORT TLS_PORT CERT_PEM KEY_PEM  -> last stdout line: the server PID
#   subscribe: wss://127.0.0.1:TLS_PORT/sub?cid=CH   (each message arrives as the bare body)
#   publish:   POST http://127.0.0.1:PORT/pub?cid=CH  (body = message; answers 200)
source "$(dirname "$0")/lib.sh"
PORT=${1:?usage: start-uws-ssl.sh PORT TLS_PORT CERT_PEM KEY_PEM}
TLS_PORT=${2:?usage: start-uws-ssl.sh PORT TLS_PORT CERT_PEM KEY_PEM}
CERT=$(realpath "${3:?certificate PEM file}")
KEY=$(realpath "${4:?key PEM file}")
check_port "$PORT"
check_port "$TLS_PORT"
MODULES=$(node_deps uws)
# Both ports are opened by one process, plain first: waiting for TLS_PORT waits for both.
NODE_PATH="$MODULES" launch uws-ssl "$TLS_PORT" node "$PEERS_SRC/uws/ssl-server.js" "$PORT" "$TLS_PORT" "$CERT" "$KEY"
