#!/usr/bin/env bash
# permessage-deflate figures, one run: idle memory per WebSocket connection with the
# extension negotiated vs not, and max-rate fan-out of 1 KiB JSON messages (herald-load
# --json-payload: varied items, compressible like a real feed) to CONNS subscribers with compression
# on vs off: deliveries/s and bytes subscribers read per delivery. Then the same fan-out on
# uWebSockets.js with compression DISABLED and with SHARED_COMPRESSOR (tests/perf/peers,
# UWS_COMPRESSION=shared), same generator, same pinning.
#
# Usage: tests/perf/deflate.sh [OUTDIR]
# Env:   CONNS (10000) subscribers, IDLE (19000) idle connections, DURATION (8) s,
#        SIZE (1024) message bytes, LEVELS ("1 6") ws_compression_level values for the
#        compressed fan-out runs, PEERS ("uws"; "" = Herald only), ROUNDS (1): the fan-out
#        runs are repeated round by round (alternating servers; medians printed at the end),
#        IDLE=0 skips the idle-memory runs
# herald-load --deflate inflates each distinct compressed payload once (a server that
# compresses once sends identical bytes to every subscriber); otherwise the generator's
# inflating, not the server, would bound the figure.
# Needs target/release/herald and target/release/herald-load (built if missing). Every run is
# bounded (timeout 240 s); only the servers this script started are stopped, by PID.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
OUT=${1:-$ROOT/target/perf-deflate-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
CONNS=${CONNS:-10000} IDLE=${IDLE:-19000} DURATION=${DURATION:-8} SIZE=${SIZE:-1024} LEVELS=${LEVELS:-"1 6"} ROUNDS=${ROUNDS:-1}
PEERS=${PEERS-uws}
HERALD=target/release/herald LOAD=target/release/herald-load
[ -x "$HERALD" ] || cargo build --release >&2 || exit 1
[ -x "$LOAD" ] || cargo build --release -p herald-bench-tools --bin herald-load >&2 || exit 1
RESULTS=$OUT/results.jsonl
: > "$RESULTS"
port=19800

start_herald() { # CONFIG_JSON PORT -> PID
  echo "$1" > "$OUT/herald-$2.json"
  taskset -c 0 "$HERALD" --bind 127.0.0.1 --port "$2" --workers 1 --log-level warn \
    --config "$OUT/herald-$2.json" >"$OUT/h-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && { echo $pid; return; }; sleep 0.1; done
  kill $pid; return 1
}
stop() { kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return; sleep 0.1; done; kill -9 "$1"; }

load() { # LABEL TARGET PORT PID ARGS...
  local label=$1 target=$2 p=$3 pid=$4; shift 4
  timeout 240 taskset -c 1 "$LOAD" --quiet --server-pid "$pid" --label "$label" --target "$target" \
    --addr 127.0.0.1:$p "$@" | tail -1 | tee -a "$RESULTS"
}

herald_run() { # LABEL CONFIG ARGS...
  local label=$1 cfg=$2; shift 2
  port=$((port + 1))
  local pid; pid=$(start_herald "$cfg" $port) || { echo "herald did not start" >&2; return; }
  load "$label" herald $port "$pid" "$@"
  stop "$pid"
}

ON='{"ws_compression": true}'
OFF='{"ws_compression": false}'
if [ "$IDLE" -gt 0 ]; then
  herald_run "herald idle x$IDLE deflate off" "$OFF" --conns "$IDLE" --duration 0 --settle 3 --connect-timeout 60 --deflate
  herald_run "herald idle x$IDLE deflate on" "$ON" --conns "$IDLE" --duration 0 --settle 3 --connect-timeout 60 --deflate
fi

for round in $(seq 1 "$ROUNDS"); do
  herald_run "herald fanout x$CONNS ${SIZE}B json deflate off" "$OFF" --conns "$CONNS" --rate 0 --duration "$DURATION" --size "$SIZE" --json-payload --json --deflate
  for lv in $LEVELS; do
    herald_run "herald fanout x$CONNS ${SIZE}B json deflate on level $lv" "{\"ws_compression\": true, \"ws_compression_level\": $lv}" \
      --conns "$CONNS" --rate 0 --duration "$DURATION" --size "$SIZE" --json-payload --json --deflate
  done
  for peer in $PEERS; do
    [ "$peer" = uws ] || continue
    for mode in off shared; do
      port=$((port + 1))
      if [ "$mode" = shared ]; then export UWS_COMPRESSION=shared; else unset UWS_COMPRESSION; fi
      pid=$(PEER_CPUS=0 tests/perf/peers/start-uws.sh $port 2>>"$OUT/peers.log" | tail -1)
      if ! [[ "$pid" =~ ^[0-9]+$ ]]; then echo "uws did not start (see $OUT/peers.log)" >&2; continue; fi
      load "uws fanout x$CONNS ${SIZE}B json compression $mode" uws $port "$pid" \
        --conns "$CONNS" --rate 0 --duration "$DURATION" --size "$SIZE" --json-payload --json --deflate
      tests/perf/peers/stop.sh "$pid" >/dev/null
    done
    unset UWS_COMPRESSION
  done
done

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
print(f"{'run':48s} {'negotiated':>10s} {'deliv/s':>10s} {'B/deliv':>8s} {'srv cpu%':>8s} {'p50 ms':>7s} {'p99 ms':>7s} {'RSS/conn':>8s} {'lost':>5s}")
for r in rows:
    lat = r.get("latency_ms") or {}
    print(f"{r['label']:48s} {r.get('deflate_negotiated',0):>10} {r.get('deliveries_per_s',0):>10} "
          f"{str(r.get('sub_bytes_per_delivery')):>8s} {str(r.get('server_cpu_pct')):>8s} {lat.get('p50',0):>7} {lat.get('p99',0):>7} "
          f"{str(r.get('rss_per_conn_bytes')):>8s} {r.get('lost',0):>5}")
import statistics
labels = []
for r in rows:
    if r["label"] not in labels and r.get("deliveries_per_s"):
        labels.append(r["label"])
print()
print(f"{'median over rounds':48s} {'n':>2s} {'deliv/s':>10s} {'B/deliv':>8s} {'us CPU/deliv':>12s}")
for l in labels:
    rs = [r for r in rows if r["label"] == l]
    d = statistics.median(r["deliveries_per_s"] for r in rs)
    b = statistics.median(r.get("sub_bytes_per_delivery") or 0 for r in rs)
    c = statistics.median((r.get("server_cpu_pct") or 0) / 100 / max(r["deliveries_per_s"], 1e-9) * 1e6 for r in rs)
    print(f"{l:48s} {len(rs):>2d} {d:>10.0f} {b:>8.1f} {c:>12.2f}")
PY
echo "results: $RESULTS" >&2
