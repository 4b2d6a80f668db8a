#!/usr/bin/env bash
# A/B of two herald builds with the project's load generator, alternating round by round
# so both see the same machine: idle RSS per WebSocket connection and single-channel
# fan-out at max rate. Server pinned to one core, generator to the other.
#
# Usage: tests/perf/ab.sh A_BIN B_BIN [ROUNDS]     (herald-load from target/release)
# Env:   CONNS (10000) fan-out subscribers, IDLE (19000) idle connections, DURATION (10) s
# Prints one JSON summary line per run and a median per build at the end. Every run is
# bounded (timeout 180 s); only the servers this script started are stopped, by PID.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
A=$1 B=$2 ROUNDS=${3:-3}
CONNS=${CONNS:-10000} IDLE=${IDLE:-19000} DURATION=${DURATION:-10}
LOAD=target/release/herald-load
[ -x "$LOAD" ] || cargo build --release -p herald-bench-tools --bin herald-load >&2 || exit 1
OUT=$(mktemp -d /tmp/herald-ab.XXXXXX)
port=19700

start() { # BIN PORT -> PID
  taskset -c 0 "$1" --bind 127.0.0.1 --port "$2" --workers 1 --log-level warn >"$OUT/h-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && { echo $pid; return; }; sleep 0.1; done
  kill $pid; return 1
}
stop() { kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return; sleep 0.1; done; kill -9 "$1"; }

run() { # LABEL BIN ARGS...
  local label=$1 bin=$2; shift 2
  port=$((port + 1))
  local pid; pid=$(start "$bin" $port) || { echo "start failed" >&2; return; }
  local line
  line=$(timeout 180 taskset -c 1 "$LOAD" --quiet --json --server-pid "$pid" --label "$label" --target herald \
    --addr 127.0.0.1:$port --size 100 "$@" | tail -1)
  stop "$pid"
  echo "$line" | tee -a "$OUT/results.jsonl"
}

for r in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ $side = B ] && bin=$B
    run "$side idle x$IDLE" "$bin" --conns "$IDLE" --duration 0 --settle 3 --connect-timeout 60
    run "$side fanout x$CONNS" "$bin" --conns "$CONNS" --rate 0 --duration "$DURATION"
  done
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
def med(side, kind, key):
    v = [r.get(key) for r in rows if r.get("label", "").startswith(side + " " + kind) and r.get(key) is not None]
    return statistics.median(v) if v else None
for kind, key in [("idle", "rss_per_conn_bytes"), ("fanout", "deliveries_per_s")]:
    a, b = med("A", kind, key), med("B", kind, key)
    ratio = f"{b / a:.3f}" if a and b else "n/a"
    print(f"{kind:7s} {key:18s} A median {a}  B median {b}  B/A {ratio}")
PY
echo "results: $OUT/results.jsonl" >&2
