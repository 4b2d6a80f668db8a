#!/usr/bin/env bash
# Centrifugo v6.9.1 peer: the real Centrifugo, built once with Go by
# tests/centrifugo/oracle.sh into ~/.cache/herald-centrifugo (reused when cached), run with
# a config in Centrifugo v6's shape that Herald reads too (default centrifugo/config.json
# here: compare.sh starts Herald's Centrifugo endpoint on the very same file).
# Usage: start-centrifugo.sh PORT [CONFIG]   -> last stdout line: the server PID (stop.sh PID)
#   subscribe: ws://127.0.0.1:PORT/connection/websocket, JSON client protocol: connect with
#              an HS256 token signed with client.token.hmac_secret_key, then subscribe
#   publish:   POST http://127.0.0.1:PORT/api/publish  {"channel":CH,"data":MESSAGE}
#              with X-API-Key: http_api.key
#   herald-load --target centrifugo --token-secret SECRET --api-key KEY speaks both.
# Env: CENTRIFUGO_GOMAXPROCS  Go's GOMAXPROCS (default: the number of CPUs in PEER_CPUS, so
#      one core pinned = 1, as Herald's --workers 1 and the one-threaded peers; unset and
#      PEER_CPUS unset: Go's own default, every CPU)
#      CENTRIFUGO_BIN  a Centrifugo binary to use instead of oracle.sh's
source "$(dirname "$0")/lib.sh"
PORT=${1:?usage: start-centrifugo.sh PORT [CONFIG]}
CONFIG=${2:-$PEERS_SRC/centrifugo/config.json}
check_port "$PORT"
[ -f "$CONFIG" ] || die "no config file $CONFIG"
BIN=${CENTRIFUGO_BIN:-$(bash "$PEERS_SRC/../../centrifugo/oracle.sh" build)} || die "Centrifugo build failed (oracle.sh needs Go)"
[ -x "$BIN" ] || die "no Centrifugo binary at $BIN"

# CPUs in a taskset list such as 0, 0,1 or 0-3.
count_cpus() {
  local n=0 part
  IFS=, read -ra parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ "$part" =~ ^([0-9]+)-([0-9]+)$ ]]; then
      n=$((n + BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
    else
      n=$((n + 1))
    fi
  done
  echo "$n"
}
procs=${CENTRIFUGO_GOMAXPROCS:-}
[ -z "$procs" ] && [ -n "${PEER_CPUS:-}" ] && procs=$(count_cpus "$PEER_CPUS")
if [ -n "$procs" ]; then export GOMAXPROCS=$procs; fi
say "centrifugo: $BIN, config $CONFIG, GOMAXPROCS ${GOMAXPROCS:-default}"
# Address and port from flags, so one config file serves any port (Herald's --bind/--port
# play the same part).
launch centrifugo "$PORT" "$BIN" --config "$CONFIG" --http_server.address 127.0.0.1 --http_server.port "$PORT"
