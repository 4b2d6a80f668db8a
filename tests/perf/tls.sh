#!/usr/bin/env bash
# TLS benchmark: fan-out to wss:// subscribers next to ws:// ones, on the same herald build in
# the same run, and the same next to uWebSockets.js (App and SSLApp) on the same certificate,
# with the same generator. Server pinned to core 0, generator to core 1, round by round.
#
# Usage: tests/perf/tls.sh [ROUNDS]      (herald and herald-load from target/release, or
#        HERALD=/path/to/herald LOAD=/path/to/herald-load: an A/B of two builds is one run
#        of this script per build, alternated)
# Env:   CONNS (10000) subscribers, DURATION (10) s of max-rate publishing, SIZE (100) bytes,
#        PEERS (1: include uWebSockets.js; 0: herald only), QUIET_PCT (25) / QUIET_WAIT (60 s):
#        wait up to QUIET_WAIT for the machine to be under QUIET_PCT % busy before each run
# The machine's busy figure before each run is recorded (machine_busy_before_pct), and so is
# deliveries per second of server CPU (deliveries_per_server_cpu_s): on a shared machine a
# pinned server may get less than its core, and that figure is the one that survives it.
# Every run starts a fresh server: idle memory per connection (`rss_per_conn_bytes`, read after
# the subscribers are connected and before publishing) comes from the same runs.
# Prints one JSON summary line per run and medians per configuration. Every run is bounded
# (timeout 180 s); only the servers this script started are stopped, by PID.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# busy_pct
source tests/perf/lib.sh
ROUNDS=${1:-3}
CONNS=${CONNS:-10000} DURATION=${DURATION:-10} SIZE=${SIZE:-100} PEERS=${PEERS:-1}
QUIET_PCT=${QUIET_PCT:-25} QUIET_WAIT=${QUIET_WAIT:-60}
HERALD=${HERALD:-target/release/herald} LOAD=${LOAD:-target/release/herald-load}
[ -x "$HERALD" ] && [ -x "$LOAD" ] || cargo build --release -p herald -p herald-bench-tools >&2 || exit 1
OUT=$(mktemp -d /tmp/herald-tls-bench.XXXXXX)
# A self-signed P-256 certificate for 127.0.0.1. CA:FALSE: webpki (the generator's verifier)
# refuses a CA certificate as the server's own.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -keyout "$OUT/key.pem" -out "$OUT/cert.pem" -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -addext basicConstraints=critical,CA:FALSE 2>/dev/null || exit 1
port=19720


wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
stop() { kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return; sleep 0.1; done; kill -9 "$1"; }

start_herald() { # PORT TLS_PORT -> PID (plain on PORT, TLS on TLS_PORT)
  printf '{"http_server":{"tls":{"enabled":true,"cert_pem_file":"%s","key_pem_file":"%s"}},"tls_port":%s}\n' \
    "$OUT/cert.pem" "$OUT/key.pem" "$2" >"$OUT/herald-$1.json"
  taskset -c 0 "$HERALD" --bind 127.0.0.1 --port "$1" --workers 1 --log-level warn --config "$OUT/herald-$1.json" \
    >"$OUT/h-$1.log" 2>&1 &
  local pid=$!
  wait_port "$2" && wait_port "$1" && { echo $pid; return; }
  kill $pid; return 1
}

run() { # LABEL SERVER(herald|uws) TLS(0|1)
  local label=$1 server=$2 tls=$3 pid="" args
  port=$((port + 2))
  case "$server:$tls" in
    herald:*) pid=$(start_herald $port $((port + 1))) ;;
    uws:0) pid=$(PEER_CPUS=0 tests/perf/peers/start-uws.sh $port 2>>"$OUT/peers.log" | tail -1) ;;
    uws:1) pid=$(PEER_CPUS=0 tests/perf/peers/start-uws-ssl.sh $port $((port + 1)) "$OUT/cert.pem" "$OUT/key.pem" \
             2>>"$OUT/peers.log" | tail -1) ;;
  esac
  [ -n "$pid" ] || { echo "$label: server start failed (see $OUT)" >&2; return; }
  # Publisher on plain http://PORT in every configuration; subscribers ws://PORT or wss://PORT+1.
  args=(--target "$server" --addr 127.0.0.1:$port)
  [ "$tls" = 1 ] && args+=(--tls --tls-addr 127.0.0.1:$((port + 1)) --ca "$OUT/cert.pem")
  local busy waited=0; busy=$(busy_pct)
  while [ "$busy" -ge "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2; waited=$((waited + 3)); busy=$(busy_pct)
  done
  echo "== $label (machine busy before: ${busy}%)" >&2
  local line
  line=$(timeout 180 taskset -c 1 "$LOAD" --quiet --json --server-pid "$pid" --label "$label" "${args[@]}" \
    --conns "$CONNS" --rate 0 --duration "$DURATION" --size "$SIZE" --settle 3 --connect-timeout 60 | tail -1)
  if [ "$server" = herald ]; then stop "$pid"; else tests/perf/peers/stop.sh "$pid" >/dev/null 2>&1; fi
  [ -n "$line" ] || { echo "$label: no summary (run failed or timed out)" >&2; return; }
  echo "${line%\}},\"machine_busy_before_pct\":$busy}" | tee -a "$OUT/results.jsonl"
}

for r in $(seq 1 "$ROUNDS"); do
  run "herald ws" herald 0
  run "herald wss" herald 1
  if [ "$PEERS" = 1 ]; then
    run "uws ws" uws 0
    run "uws wss" uws 1
  fi
done

python3 - "$OUT/results.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
for r in rows:
    cpu = r.get("server_cpu_pct")
    r["deliveries_per_server_cpu_s"] = round(r["deliveries_per_s"] / (cpu / 100)) if cpu else None
def med(label, key):
    v = [r.get(key) for r in rows if r.get("label") == label and r.get(key) is not None]
    return (statistics.median(v), len(v)) if v else (None, 0)
keys = ["deliveries_per_s", "deliveries_per_server_cpu_s", "rss_per_conn_bytes", "connects_per_s",
        "server_cpu_pct", "lost", "machine_busy_before_pct"]
print("medians (%d-byte messages, %s subscribers)" % (rows[0]["size"], rows[0]["conns"]) if rows else "no runs")
print("%-11s " % "config" + " ".join("%s" % k for k in keys) + " runs")
for label in ["herald ws", "herald wss", "uws ws", "uws wss"]:
    vals = [med(label, k) for k in keys]
    if vals[0][1] == 0:
        continue
    print("%-11s " % label + " ".join("%*s" % (len(k), v[0]) for k, v in zip(keys, vals)) + " %4d" % vals[0][1])
PY
echo "results: $OUT/results.jsonl" >&2
