#!/usr/bin/env bash
# Herald against its peers, side by side, with the same load generator (herald-load) and the
# same message size, in one run. Bounded in time (each load run has its own deadline and a
# `timeout` around it; the whole script takes about 10 minutes with the defaults).
#
# Usage: tests/perf/compare.sh [OUTDIR]
#   env CONNS_LIST   subscriber counts for the max-rate fan-out   (default "1000 5000 10000 19000")
#       MAX_CONNS    connections for the idle-memory figure         (default 19000; one process
#                    here holds at most 20000 descriptors)
#       DURATION     seconds of publishing per run                  (default 8)
#       PEERS        peers to include                                (default "uws node-ws nchan")
#       PEERS_DIR    peer start scripts                              (default tests/perf/peers)
#       SERVER_CPU / LOAD_CPU   cores for the server and the generator (default 0 / 1)
#       QUIET_PCT / QUIET_WAIT  before each run, wait up to QUIET_WAIT s (default 90) for the
#                    machine to be less than QUIET_PCT % busy (default 25); the busy figure is
#                    recorded with each result either way
# Peers are started with PEERS_DIR/start-PEER.sh PORT and stopped with PEERS_DIR/stop.sh PID.
# The project's own scripts in tests/perf/peers/ (see its README.md) install each peer on
# first use into ~/.cache/herald-perf-peers (uWS and ws with npm, Nchan with apt-get), never
# into the repo. A peer that does not start is skipped with a note (see OUTDIR/peers.log);
# when PEERS_DIR does not exist, Herald runs alone.
# Output: one JSON summary per run in OUTDIR/results.jsonl, and a table on stdout.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
OUT=${1:-$ROOT/target/perf-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
CONNS_LIST=${CONNS_LIST:-"1000 5000 10000 19000"}
MAX_CONNS=${MAX_CONNS:-19000}
DURATION=${DURATION:-8}
PEERS=${PEERS:-"uws node-ws nchan"}
PEERS_DIR=${PEERS_DIR:-$ROOT/tests/perf/peers}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-19400}
QUIET_PCT=${QUIET_PCT:-25}
QUIET_WAIT=${QUIET_WAIT:-90}
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

echo "building herald and herald-load (release)..." >&2
# herald-load lives in the workspace's tool crate (benches/load); both land in target/release.
cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-load >&2 || exit 1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-$ROOT/target}/release

# Percent of all CPUs busy over one second (from /proc/stat): other work on the machine
# skews every figure, so it is recorded with each run.
busy_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

# run_load LABEL SERVERPID ARGS... : one herald-load run, its summary appended to RESULTS.
run_load() {
  local label=$1 pid=$2; shift 2
  local busy waited=0; busy=$(busy_pct)
  while [ "$busy" -ge "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2; waited=$((waited + 3)); busy=$(busy_pct)
  done
  [ "$busy" -gt 20 ] && echo "  note: machine ${busy}% busy before $label (other processes); figures are skewed" >&2
  echo "== $label (machine busy before: ${busy}%)" >&2
  local line
  line=$(timeout 180 taskset -c "$LOAD_CPU" "$BIN/herald-load" --quiet --json --server-pid "$pid" --label "$label" "$@" | tail -1)
  if [ -z "$line" ]; then echo "  (no summary: run failed or timed out)" >&2; return; fi
  echo "${line%\}},\"machine_busy_before_pct\":$busy}" >> "$RESULTS"
  echo "  $line" | cut -c1-400 >&2
}

start_herald() { # PORT -> PID
  local port=$1 log=$OUT/herald-$1.log
  taskset -c "$SERVER_CPU" "$BIN/herald" --bind 127.0.0.1 --port "$port" --workers 1 --log-level warn >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && { echo "$pid"; return 0; }
    sleep 0.1
  done
  echo "herald did not start (see $log)" >&2; kill "$pid" 2>/dev/null; return 1
}

stop_pid() { # stop a server we started (herald) or through the peers' stop.sh
  local name=$1 pid=$2
  if [ "$name" = herald ]; then
    kill "$pid" 2>/dev/null; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  else
    "$PEERS_DIR/stop.sh" "$pid"
  fi
}

# The scenarios every server gets (WebSocket, 100-byte messages).
scenarios() { # NAME PID TARGET PORT
  local name=$1 pid=$2 target=$3 port=$4
  local a=(--target "$target" --addr "127.0.0.1:$port" --size 100)
  run_load "$name idle ws x$MAX_CONNS" "$pid" "${a[@]}" --conns "$MAX_CONNS" --duration 0 --settle 3 --connect-timeout 60
  for n in $CONNS_LIST; do
    run_load "$name fanout ws x$n max-rate" "$pid" "${a[@]}" --conns "$n" --rate 0 --duration "$DURATION"
  done
  run_load "$name fanout ws x10000 2/s" "$pid" "${a[@]}" --conns 10000 --rate 2 --duration "$DURATION"
  run_load "$name 1000ch ws x10000 max-rate" "$pid" "${a[@]}" --conns 10000 --channels 1000 --rate 0 \
    --window 2000 --duration "$DURATION"
}

port=$PORT_BASE
# Herald, and its other transports.
pid=$(start_herald $port) || exit 1
scenarios herald "$pid" herald $port
for tr in sse longpoll; do
  run_load "herald fanout $tr x10000 max-rate" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns 10000 --rate 0 --duration "$DURATION"
  run_load "herald fanout $tr x10000 2/s" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns 10000 --rate 2 --duration "$DURATION"
  run_load "herald 1000ch $tr x10000 max-rate" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns 10000 --channels 1000 --rate 0 --window 2000 --duration "$DURATION"
done
stop_pid herald "$pid"

if [ -d "$PEERS_DIR" ]; then
  for peer in $PEERS; do
    port=$((port + 1))
    pid=$(PEER_CPUS=$SERVER_CPU timeout 300 "$PEERS_DIR/start-$peer.sh" $port 2>>"$OUT/peers.log" | tail -1)
    if ! [[ "$pid" =~ ^[0-9]+$ ]]; then echo "note: $peer did not start (see $OUT/peers.log); skipped" >&2; continue; fi
    scenarios "$peer" "$pid" "$peer" $port
    stop_pid "$peer" "$pid"
  done
else
  echo "note: $PEERS_DIR not found: peers skipped, Herald measured alone" >&2
fi

# The table.
if command -v python3 >/dev/null; then
  python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
hdr = ("run", "open", "conn/s", "pub/s", "deliv/s", "loss%", "dup", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
       "RSS B/conn", "srv CPU%", "gen CPU%", "busy%")
print("| " + " | ".join(hdr) + " |")
print("|" + "---|" * len(hdr))
for r in rows:
    l = r["latency_ms"]
    pub = r["published"] > 0
    f = lambda v, d=0: "-" if v is None else (f"{v:,.{d}f}" if isinstance(v, (int, float)) else str(v))
    print("| " + " | ".join([r["label"], f(r["open_at_end"]), f(r["connects_per_s"]),
        f(r["publishes_per_s"]) if pub else "-", f(r["deliveries_per_s"]) if pub else "-",
        f(r["loss_pct"], 2) if pub else "-", f(r["duplicates"]) if pub else "-",
        f(l["p50"], 2) if pub else "-", f(l["p99"], 2) if pub else "-", f(l["p99.9"], 2) if pub else "-",
        f(l["max"], 2) if pub else "-",
        f(r["rss_per_conn_bytes"]) if not pub else "-", f(r["server_cpu_pct"]) if pub else "-",
        f(r["generator_cpu_pct"]) if pub else "-", f(r["machine_busy_before_pct"])]) + " |")
PY
else
  cat "$RESULTS"
fi
echo "results: $RESULTS" >&2
