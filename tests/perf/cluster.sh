#!/usr/bin/env bash
# Several herald nodes over the Redis engine (issue #12's performance section), measured with
# the project's load generator (herald-load) against private redis-server processes on
# 127.0.0.1, in one run each:
#   part 1  Redis is the bottleneck, not Herald: publishes/s through the engine at the maximum
#           rate (several pipelined publisher connections on node A, a few subscribers on B),
#           with the CPU share of redis-server and of each node from /proc; next to it
#           redis-benchmark on the same redis-server (PUBLISH, and EVALSHA of herald's own
#           publish script) with the same connections and pipelining.
#   part 2  the Redis hop: publish on A, deliver on B, p50/p99 at 2/s and 1,000/s to a few
#           subscribers, next to one node with the memory engine.
#   part 3  cross-node fan-out: subscribers spread over nodes B and C, publishing on A, next to
#           nginx+Nchan with Redis storage (two nginx, subscribers on one, publish on the other)
#           and to one node with the memory engine.
#   part 4  PROCS herald processes sharing one port (`reuse_port`) over Redis, PER_PROC WebSocket
#           connections each, one herald-load process per PER_PROC (each with its own channel,
#           so every channel's subscribers are spread over all processes by the kernel), every
#           broadcast counted; memory per connection box-wide (MemAvailable) and in user space.
#   part 5  the box (issue #15 part 2): P5_PROCS herald processes on one port (`reuse_port`)
#           over Redis and at least 100,000 connections of three transports, one generator
#           process per P5_WS_PER WebSocket subscribers plus one of SSE and one of long-poll,
#           each generator on its own channel broadcasting P5_RATE/s for P5_DURATION s to all
#           its subscribers (spread over every herald process by the kernel), every delivery
#           counted per transport; memory read after each transport's generators connected
#           (MemAvailable, Slab, sockstat TCP, RSS of the herald processes, the generators and
#           redis-server), so bytes per connection are per transport; during the broadcasts,
#           the lowest MemAvailable and the highest sockstat TCP mem. With NETNS=default or
#           NETNS=tuned the whole part runs in a network namespace of its own
#           (`ip netns add herald-tune-PID`, deleted at the end) with that namespace's
#           net.ipv4.tcp_rmem/tcp_wmem set to the kernel's defaults or to tuning/99-herald.conf's
#           (both are per namespace): the machine's own settings are not touched.
#
# Usage: tests/perf/cluster.sh [OUTDIR]         (from a clean clone: builds both binaries)
# Env:   PARTS          parts to run                               (default "1 2 3 4")
#        DURATION       seconds of publishing at max rate / 1,000/s (default 10)
#        SLOW_DURATION  seconds of publishing at 2/s                (default 30)
#        P2_ROUNDS      part 2's rounds at 1,000/s, the cluster and one node alternating
#                       (default 3); part 2's generator runs --quiet and its CPU figures
#                       are read before and after each run, not during it (nothing of this
#                       script may run on the cores while latency is measured)
#        QUIET_PCT / QUIET_WAIT  part 2: before each run wait up to QUIET_WAIT s (default
#                       120) for the machine to be under QUIET_PCT % busy (default 25); the
#                       figure is recorded with the run (busy_before_pct)
#        FEW            subscribers of part 2 (one channel)         (default 16)
#        PUB_BATCH_LIST  part 1 again with the publishes carried N to a request over
#                       Centrifugo's server API (`POST /api/batch`, herald-load --pub-batch N),
#                       BATCH_CONNS connections x BATCH_PIPELINE requests in flight, one run per
#                       N (default "64"; "" skips); all of a batch's publishes go to Redis in
#                       one write                                   (BATCH_CONNS 4, BATCH_PIPELINE 4)
#        PUB_CONNS_LIST / PUB_PIPELINE / MAX_WINDOW   part 1's publisher connections (one run
#                       each, with as many channels and one subscriber each; default "16 64"),
#                       requests pipelined on each (32), most messages in flight (4096);
#                       redis-benchmark uses the first of the list with the same -P
#        FANOUT_CONNS   subscribers of part 3                       (default 10000)
#        DRAIN          part 3: seconds to wait for deliveries after the last publish (default
#                       10); what has not arrived by then counts as lost
#        PROCS / PER_PROC   part 4                                  (default 5 / 19000)
#        P5_PROCS / P5_WS_GENS / P5_WS_PER / P5_SSE_PER / P5_LP_PER   part 5: herald processes,
#                       WebSocket generators and subscribers per generator, SSE and long-poll
#                       subscribers (one generator each; 0: none) (default 6 / 5 / 16000 /
#                       10000 / 10000: 100,000 connections, about 16,700 per herald process)
#        P5_RATE / P5_DURATION / P5_SETTLE   part 5's broadcasts per second and seconds per
#                       generator, and the WebSocket generators' idle time after connecting
#                       (the later generators' is cut so all publish together) (2 / 5 / 40)
#        NETNS          default | tuned: run part 5 in a network namespace of its own with
#                       tcp_rmem/tcp_wmem at the kernel's defaults (4096 131072 33554432 /
#                       4096 16384 4194304 on this 6.18 kernel; NETNS_RMEM/NETNS_WMEM override)
#                       or at 99-herald.conf's (4096 16384 4194304 both); needs root
#        BUILD          0: do not build (the binaries in target/release are used)
#        REDIS_CPU / NODE_CPU   part 1's split: redis-server alone on REDIS_CPU, the nodes and
#                       the generator on NODE_CPU                   (default 0 / 1)
#        SERVER_CPU / LOAD_CPU  parts 2 and 3: every server process (redis-server, nodes,
#                       nginx) on SERVER_CPU, the generator on LOAD_CPU (default 0 / 1);
#                       part 4 is not pinned (PROCS servers and generators on both cores)
#        QUIET_LOAD / QUIET_MAX  after building, poll /proc/loadavg every 30 s for up to
#                       QUIET_MAX seconds (default 0: do not wait) until the 1-minute load is
#                       below QUIET_LOAD (default 1.5); the load average is recorded with
#                       every run either way
#        PORT_BASE      ports are taken upward from here, skipping any in use (default 29800)
# Output: OUTDIR/results.jsonl (one JSON object per run, with the exact command in "cmd"),
#         OUTDIR/commands.txt, OUTDIR/tables.md (also printed), server logs.
# Bounds: every load run has its own phases' deadlines and a `timeout` around it; every
# server this script starts is stopped by its PID at the end (trap), nothing else is touched.
# Needs: cargo, redis-server and redis-benchmark (Debian's redis-server package; installed with
# apt-get when missing), python3, taskset; part 3's Nchan comes from tests/perf/peers.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$(pwd)
# busy_pct
source "$ROOT/tests/perf/lib.sh"
OUT=${1:-$ROOT/target/perf-cluster-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
PARTS=${PARTS:-"1 2 3 4"}
DURATION=${DURATION:-10}
SLOW_DURATION=${SLOW_DURATION:-30}
FEW=${FEW:-16}
P2_ROUNDS=${P2_ROUNDS:-3}
QUIET_PCT=${QUIET_PCT:-25}
QUIET_WAIT=${QUIET_WAIT:-120}
PUB_CONNS_LIST=${PUB_CONNS_LIST:-"16 64"}
PUB_CONNS=${PUB_CONNS_LIST%% *}
PUB_PIPELINE=${PUB_PIPELINE:-32}
MAX_WINDOW=${MAX_WINDOW:-4096}
PUB_BATCH_LIST=${PUB_BATCH_LIST-64}
BATCH_CONNS=${BATCH_CONNS:-4}
BATCH_PIPELINE=${BATCH_PIPELINE:-4}
FANOUT_CONNS=${FANOUT_CONNS:-10000}
DRAIN=${DRAIN:-10}
PROCS=${PROCS:-5}
PER_PROC=${PER_PROC:-19000}
REDIS_CPU=${REDIS_CPU:-0}
NODE_CPU=${NODE_CPU:-1}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
QUIET_LOAD=${QUIET_LOAD:-1.5}
QUIET_MAX=${QUIET_MAX:-0}
PORT_BASE=${PORT_BASE:-29800}
PEERS_DIR=${PEERS_DIR:-$ROOT/tests/perf/peers}
PY="python3 $ROOT/tests/perf/cluster.py"
RESULTS=$OUT/results.jsonl
CMDS=$OUT/commands.txt
BUILD=${BUILD:-1}
NETNS=${NETNS:-}
say() { echo "[cluster] $*" >&2; }

# NETNS: build here, then run this script again inside a network namespace of its own, with
# the namespace's TCP buffer settings set (they are per namespace; the machine's stay as they
# are), and delete the namespace at the end. Everything the inner run starts is in it.
if [ -n "$NETNS" ] && [ -z "${NETNS_INNER:-}" ]; then
  case $NETNS in
    default) rmem=${NETNS_RMEM:-"4096 131072 33554432"}; wmem=${NETNS_WMEM:-"4096 16384 4194304"} ;;
    tuned)
      rmem=${NETNS_RMEM:-$(sed -n 's/^net.ipv4.tcp_rmem *= *//p' tuning/99-herald.conf)}
      wmem=${NETNS_WMEM:-$(sed -n 's/^net.ipv4.tcp_wmem *= *//p' tuning/99-herald.conf)} ;;
    *) say "NETNS=$NETNS: use default or tuned"; exit 2 ;;
  esac
  if [ "$BUILD" != 0 ]; then
    cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-load >&2 || exit 1
  fi
  NS=herald-tune-$$
  ip netns add "$NS" || { say "ip netns add $NS failed (needs root / CAP_SYS_ADMIN)"; exit 1; }
  trap 'ip netns del "$NS" 2>/dev/null' EXIT
  ip netns exec "$NS" ip link set lo up || exit 1
  ip netns exec "$NS" sysctl -q -w "net.ipv4.tcp_rmem=$rmem" "net.ipv4.tcp_wmem=$wmem" || exit 1
  say "network namespace $NS: tcp_rmem $(ip netns exec "$NS" sysctl -n net.ipv4.tcp_rmem | tr '\t' ' '), tcp_wmem $(ip netns exec "$NS" sysctl -n net.ipv4.tcp_wmem | tr '\t' ' ')"
  : >"$RESULTS"
  { echo "# NETNS=$NETNS: ip netns add $NS; ip netns exec $NS ip link set lo up"
    echo "# ip netns exec $NS sysctl -w net.ipv4.tcp_rmem='$rmem' net.ipv4.tcp_wmem='$wmem'"
    echo "# ip netns exec $NS $0 $OUT    (PARTS=$PARTS BUILD=0)"; } >"$CMDS"
  NETNS_INNER=$NS NETNS_RMEM=$rmem NETNS_WMEM=$wmem BUILD=0 ip netns exec "$NS" "$0" "$OUT"
  exit $?
fi
if [ -z "${NETNS_INNER:-}" ]; then
  : >"$RESULTS"
  : >"$CMDS"
fi

command -v python3 >/dev/null || { say "python3 is needed"; exit 1; }
command -v taskset >/dev/null || { say "taskset (util-linux) is needed"; exit 1; }
if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
  say "installing Debian's redis-server (redis-server, redis-benchmark) with apt-get"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server redis-tools >&2 || exit 1
fi

if [ "$BUILD" != 0 ]; then
  say "building herald and herald-load (release)..."
  cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-load >&2 || exit 1
fi
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-$ROOT/target}/release
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{ echo "# tests/perf/cluster.sh at $COMMIT, $(date -u '+%F %T') UTC, $(nproc) cores"
  echo "# redis: $(redis-server --version)"; } >>"$CMDS"

# Every server started here, stopped by PID at the end (nginx through the peers' stop.sh).
HERALDS=() PEERS=()
cleanup() {
  local p
  for p in "${PEERS[@]}"; do "$PEERS_DIR/stop.sh" "$p" >/dev/null 2>&1; done
  # Newest first, each gone before the next: the nodes before their redis-server (else
  # they log a lost connection while they shut down).
  local i
  for ((i = ${#HERALDS[@]} - 1; i >= 0; i--)); do
    p=${HERALDS[i]}
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 1 70); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null
  done
  HERALDS=() PEERS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
q() { printf '%q ' "$@" | sed 's/ $//'; }   # a command as it can be pasted back into a shell

if [ "$QUIET_MAX" -gt 0 ]; then
  waited=0
  while awk -v q="$QUIET_LOAD" '{exit !($1 >= q)}' /proc/loadavg && [ "$waited" -lt "$QUIET_MAX" ]; do
    say "load average $(loadavg): waiting for the 1-minute load to fall below $QUIET_LOAD ($waited/$QUIET_MAX s)"
    sleep 30; waited=$((waited + 30))
  done
  say "load average $(loadavg) after waiting $waited s"
  echo "# quiet wait: $waited s, then load average $(loadavg)" >>"$CMDS"
fi

spawn() { # CPU CMD... : exec CMD (under taskset when CPU is set); call it with `&`, so the
  # background subshell becomes CMD and $! is CMD's own PID
  local cpu=$1; shift
  if [ -n "$cpu" ]; then exec taskset -c "$cpu" "$@"; else exec "$@"; fi
}

port_free() { # PORT: nothing answers there yet (so what answers later is ours)
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then say "127.0.0.1:$1 is in use already"; return 1; fi
}

wait_port() { # PORT PID LOG
  for _ in $(seq 1 200); do
    kill -0 "$2" 2>/dev/null || { say "pid $2 exited; see $3"; tail -5 "$3" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  say "port $1 not open after 10 s (see $3)"; return 1
}

# The start_* functions run in this shell (not in $(...)), so the PIDs they add to HERALDS and
# PEERS are there for cleanup; each leaves the PID it started in LAST_PID.
LAST_PID=""
start_redis() { # PORT CPU -> LAST_PID
  local port=$1 cpu=$2 log=$OUT/redis-$1.log
  local cmd=(redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --maxclients 1000)
  echo "${cpu:+taskset -c $cpu }$(q "${cmd[@]}")" >>"$CMDS"
  port_free "$port" || return 1
  spawn "$cpu" "${cmd[@]}" >"$log" 2>&1 &
  local pid=$!
  HERALDS+=("$pid")
  wait_port "$port" "$pid" "$log" || return 1
  LAST_PID=$pid
}

node_conf() { # FILE REDIS_PORT PREFIX REUSE(true|false) [EXTRA: more "key":value pairs]
  local engine='{"type":"memory"}'
  [ -n "$2" ] && engine="{\"type\":\"redis\",\"redis\":{\"address\":[\"redis://127.0.0.1:$2\"],\"prefix\":\"$3\"}}"
  echo "{\"reuse_port\":$4,\"engine\":$engine${5:+,$5}}" >"$1"
}

start_herald() { # NAME PORT CPU CONF [SHARED] -> LAST_PID (waits for the port; SHARED: the
  # port may be open already, another process of the same reuse_port group)
  local name=$1 port=$2 cpu=$3 conf=$4 log=$OUT/herald-$1.log
  local cmd=("$BIN/herald" --config "$conf" --bind 127.0.0.1 --port "$port" --workers 1 --log-level warn)
  echo "${cpu:+taskset -c $cpu }$(q "${cmd[@]}")    # $name: $(cat "$conf")" >>"$CMDS"
  [ -n "${5:-}" ] || port_free "$port" || return 1
  spawn "$cpu" "${cmd[@]}" >"$log" 2>&1 &
  local pid=$!
  HERALDS+=("$pid")
  wait_port "$port" "$pid" "$log" || return 1
  LAST_PID=$pid
}

start_nchan() { # PORT CPU REDIS_URL -> LAST_PID
  local pid
  echo "NCHAN_REDIS_URL=$3 PEER_CPUS=$2 tests/perf/peers/start-nchan.sh $1" >>"$CMDS"
  pid=$(NCHAN_REDIS_URL=$3 PEER_CPUS=$2 timeout 300 "$PEERS_DIR/start-nchan.sh" "$1" 2>>"$OUT/peers.log" | tail -1)
  [[ "$pid" =~ ^[0-9]+$ ]] || { say "nchan did not start on $1 (see $OUT/peers.log)"; return 1; }
  PEERS+=("$pid")
  LAST_PID=$pid
}

# Wait up to QUIET_WAIT s for the machine to be under QUIET_PCT % busy; BUSY_BEFORE is
# recorded with the next run.
wait_quiet() {
  local waited=0
  BUSY_BEFORE=$(busy_pct)
  while [ "$BUSY_BEFORE" -ge "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2; waited=$((waited + 3)); BUSY_BEFORE=$(busy_pct)
  done
  [ "$BUSY_BEFORE" -ge "$QUIET_PCT" ] && say "  note: machine ${BUSY_BEFORE}% busy before the next run (waited ${waited} s)"
  return 0
}

# run_load PART LABEL CPU WATCH ARGS... : one herald-load run (progress to a log), its JSON
# summary merged with the command, the load average and, when WATCH ("label=pid ...") is not
# empty, the CPU of those processes, threads and cores over the middle of the publish phase
# (from the second progress line of publishing to DURATION-3 s later).
run_load() {
  local part=$1 label=$2 cpu=$3 watch=$4; shift 4
  local la; la=$(loadavg)
  local cmd=("$BIN/herald-load" --json --label "$label" "$@")
  local shown; shown="${cpu:+taskset -c $cpu }$(q "${cmd[@]}")"
  echo "[part $part] $shown" >>"$CMDS"
  say "part $part: $label (load average $la)"
  RUN_NO=$((${RUN_NO:-0} + 1))
  local log=$OUT/load-$RUN_NO.log json=$OUT/load-$RUN_NO.json
  : >"$log"
  # shellcheck disable=SC2086
  [ -n "$watch" ] && [ -n "${WATCH_AROUND:-}" ] && $PY snap $watch >"$OUT/snap-a.json"
  (if [ -n "$cpu" ]; then exec timeout 300 taskset -c "$cpu" "${cmd[@]}"; else exec timeout 300 "${cmd[@]}"; fi) >"$json" 2>"$log" &
  local lp=$!
  local cpujson=null
  if [ -n "$watch" ] && [ -n "${WATCH_AROUND:-}" ]; then
    # Latency runs: nothing of this script runs while the generator measures (a python
    # snapshot or a grep loop in the window delays the threads it shares a core with); the
    # CPU figures then cover the whole run (connect, settle and drain included).
    wait "$lp"
    # shellcheck disable=SC2086
    $PY snap $watch >"$OUT/snap-b.json"
    cpujson=$($PY cpu "$OUT/snap-a.json" "$OUT/snap-b.json")
  elif [ -n "$watch" ]; then
    local t=0
    while kill -0 "$lp" 2>/dev/null && [ "$(grep -c '^\[publish\]' "$log")" -lt 2 ] && [ $t -lt 3000 ]; do
      sleep 0.1; t=$((t + 1))
    done
    if kill -0 "$lp" 2>/dev/null; then
      # shellcheck disable=SC2086
      $PY snap $watch >"$OUT/snap-a.json"
      local span=$(( ${DUR_OF_RUN:-$DURATION} - 3 )); [ "$span" -lt 1 ] && span=1
      sleep "$span"
      # shellcheck disable=SC2086
      $PY snap $watch >"$OUT/snap-b.json"
      cpujson=$($PY cpu "$OUT/snap-a.json" "$OUT/snap-b.json")
    fi
  fi
  wait "$lp" 2>/dev/null
  local line; line=$(tail -1 "$json")
  if [[ "$line" != \{* ]]; then say "  no summary (failed or timed out; see $log)"; tail -3 "$log" >&2; return 1; fi
  line=$($PY merge "$line" "part=\"$part\"" "loadavg=\"$la\"" "cmd=$(printf '%s' "$shown" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" "cpu=$cpujson" "busy_before_pct=${BUSY_BEFORE:-null}")
  BUSY_BEFORE=
  echo "$line" >>"$RESULTS"
  echo "$line" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); l=r["latency_ms"]; print("  open %s pub/s %s deliv/s %s lost %s dup %s p50 %s p99 %s ms; cpu %s" % (r["open_at_end"], r["publishes_per_s"], r["deliveries_per_s"], r["lost"], r["duplicates"], l["p50"], l["p99"], (r.get("cpu") or {}).get("procs")))' >&2
}

port=$PORT_BASE
next_port() { # the next port nothing listens on yet (other benchmarks share this machine)
  port=$((port + 1))
  while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do port=$((port + 1)); done
}

# ---------------------------------------------------------------------------------------
part1() {
  say "== part 1: publishes/s through Redis at max rate; redis-server on core $REDIS_CPU, nodes + generator on core $NODE_CPU"
  next_port; local rp=$port
  start_redis $rp "$REDIS_CPU" || { cleanup; return; }; local rpid=$LAST_PID
  node_conf "$OUT/p1.json" $rp p1 false '"http_api":{"key":"bench"}'
  next_port; local pa=$port; start_herald p1-A $pa "$NODE_CPU" "$OUT/p1.json" || { cleanup; return; }; local apid=$LAST_PID
  next_port; local pb=$port; start_herald p1-B $pb "$NODE_CPU" "$OUT/p1.json" || { cleanup; return; }; local bpid=$LAST_PID
  local watch="redis=$rpid A=$apid B=$bpid"
  # The generator's own CPU is in its summary (generator_cpu_pct). A node answers the
  # publishes of one connection one at a time (the session waits for Redis's answer before
  # parsing the next request), so the connection count sets how many are in flight.
  local pc
  for pc in $PUB_CONNS_LIST; do
    run_load 1 "cluster max-rate publish A->B, $pc pub conns x $PUB_PIPELINE pipelined, $pc channels x 1 sub" "$NODE_CPU" "$watch" \
      --sub-url "ws://127.0.0.1:$pb/ws/?cid={ch}" --pub-url "http://127.0.0.1:$pa/publish/?cid={ch}" \
      --conns "$pc" --channels "$pc" --pub-conns "$pc" --pub-pipeline "$PUB_PIPELINE" --window "$MAX_WINDOW" \
      --rate 0 --duration "$DURATION" --settle 2 --size 100 --server-pid "$apid"
  done
  # The same through /api/batch: N publishes per HTTP request, so the nodes and the
  # generator spend far less per publish on HTTP and each request's publishes reach Redis
  # in one write (pipelined, answered in order).
  local nb chans
  for nb in $PUB_BATCH_LIST; do
    chans=64
    run_load 1 "cluster max-rate publish A->B via /api/batch, $BATCH_CONNS conns x $BATCH_PIPELINE requests x $nb publishes, $chans channels x 1 sub" "$NODE_CPU" "$watch" \
      --sub-url "ws://127.0.0.1:$pb/ws/?cid={ch}" --pub-url "http://127.0.0.1:$pa/api/publish" \
      --pub-proto centrifugo-api --api-key bench --pub-batch "$nb" \
      --conns "$chans" --channels "$chans" --pub-conns "$BATCH_CONNS" --pub-pipeline "$BATCH_PIPELINE" \
      --window $((BATCH_CONNS * BATCH_PIPELINE * nb * 2)) \
      --rate 0 --duration "$DURATION" --settle 2 --size 100 --server-pid "$apid"
  done
  # redis-benchmark on the same redis-server, same connections and pipelining.
  local payload; payload=$(printf 'x%.0s' $(seq 1 100))
  bench() { # LABEL N ARGS...
    local label=$1 n=$2; shift 2
    local cmd=(redis-benchmark -h 127.0.0.1 -p $rp -c "${BENCH_C:-$PUB_CONNS}" -P "${BENCH_P:-$PUB_PIPELINE}" -n "$n" --csv "$@")
    local shown; shown="taskset -c $NODE_CPU $(q "${cmd[@]}")"
    echo "[part 1] $shown" >>"$CMDS"
    say "part 1: $label"
    local la; la=$(loadavg)
    $PY snap redis=$rpid >"$OUT/snap-a.json"
    local csv; csv=$(timeout 120 taskset -c "$NODE_CPU" "${cmd[@]}" 2>/dev/null | tail -1)
    $PY snap redis=$rpid >"$OUT/snap-b.json"
    local cpu; cpu=$($PY cpu "$OUT/snap-a.json" "$OUT/snap-b.json")
    local rps p50
    rps=$(echo "$csv" | cut -d, -f2 | tr -d '"'); p50=$(echo "$csv" | cut -d, -f5 | tr -d '"')
    [[ "$rps" =~ ^[0-9.]+$ ]] || { say "  redis-benchmark gave no figure: $csv"; return; }
    $PY merge '{}' "part=\"1\"" "kind=\"redis-benchmark\"" "label=\"$label\"" "rps=$rps" \
      "p50_ms=${p50:-null}" "loadavg=\"$la\"" "cmd=$(printf '%s' "$shown" | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read()))')" "cpu=$cpu" >>"$RESULTS"
    say "  $rps requests/s, redis-server $(echo "$cpu" | python3 -c 'import json,sys; print(json.load(sys.stdin)["procs"]["redis"])')% of a core"
  }
  bench "redis-benchmark PUBLISH (no subscriber)" 4000000 -r 16 PUBLISH "p1.bench.__rand_int__" "$payload"
  # Herald's own publish script (the text herald sends, from src/hub/redis/script.rs), as
  # EVALSHA on one channel (redis-benchmark randomizes each __rand_int__ on its own, so the
  # meta and stream keys would not match): the work Redis does for each herald publish, minus
  # the delivery to node B's pub/sub connection.
  local script; script=$(sed -n '/^pub const PUBLISH: &str = r#"$/,/^"#;$/p' src/hub/redis/script.rs | sed '1d;$d')
  local sha; sha=$(redis-cli -p $rp SCRIPT LOAD "$script")
  if [[ "$sha" =~ ^[0-9a-f]{40}$ ]]; then
    bench "redis-benchmark EVALSHA herald's publish script (history 100)" 1000000 EVALSHA "$sha" 3 \
      p1b.meta.ch p1b.stream.ch p1b.idem. "$payload" 100 300 p1b.pub.ch ep0 300 ""
    # The shape of the /api/batch runs: node A keeps at most connections x requests x
    # publishes in flight on its one Redis connection; here as many, over one connection.
    local last_nb=${PUB_BATCH_LIST##* }
    if [ -n "$last_nb" ]; then
      BENCH_C=1 BENCH_P=$((BATCH_CONNS * BATCH_PIPELINE * last_nb)) bench "redis-benchmark EVALSHA herald's publish script, 1 conn x $((BATCH_CONNS * BATCH_PIPELINE * last_nb)) pipelined" 1000000 EVALSHA "$sha" 3 \
        p1b.meta.ch p1b.stream.ch p1b.idem. "$payload" 100 300 p1b.pub.ch ep0 300 ""
      BENCH_C=1 BENCH_P=$((BATCH_CONNS * BATCH_PIPELINE * last_nb)) bench "redis-benchmark PUBLISH, 1 conn x $((BATCH_CONNS * BATCH_PIPELINE * last_nb)) pipelined" 4000000 -r 16 PUBLISH "p1.bench.__rand_int__" "$payload"
    fi
  else
    say "  could not load herald's publish script into redis ($sha)"
  fi
  cleanup
}

# ---------------------------------------------------------------------------------------
part2() {
  local WATCH_AROUND=1
  say "== part 2: latency of the Redis hop; servers on core $SERVER_CPU, generator on core $LOAD_CPU, $P2_ROUNDS round(s)"
  next_port; local rp=$port
  start_redis $rp "$SERVER_CPU" || { cleanup; return; }; local rpid=$LAST_PID
  node_conf "$OUT/p2.json" $rp p2 false
  next_port; local pa=$port; start_herald p2-A $pa "$SERVER_CPU" "$OUT/p2.json" || { cleanup; return; }; local apid=$LAST_PID
  next_port; local pb=$port; start_herald p2-B $pb "$SERVER_CPU" "$OUT/p2.json" || { cleanup; return; }; local bpid=$LAST_PID
  node_conf "$OUT/mem.json" "" "" false
  next_port; local p1=$port; start_herald p2-single $p1 "$SERVER_CPU" "$OUT/mem.json" || { cleanup; return; }; local spid=$LAST_PID
  local c=(--quiet --sub-url "ws://127.0.0.1:$pb/ws/?cid={ch}" --pub-url "http://127.0.0.1:$pa/publish/?cid={ch}" --conns "$FEW")
  local s=(--quiet --target herald --addr "127.0.0.1:$p1" --conns "$FEW")
  wait_quiet; DUR_OF_RUN=$SLOW_DURATION run_load 2 "cluster A->B 2/s x$FEW" "$LOAD_CPU" "redis=$rpid A=$apid B=$bpid" "${c[@]}" --rate 2 --duration "$SLOW_DURATION"
  wait_quiet; DUR_OF_RUN=$SLOW_DURATION run_load 2 "single node (memory) 2/s x$FEW" "$LOAD_CPU" "node=$spid" "${s[@]}" --rate 2 --duration "$SLOW_DURATION"
  # 1,000/s: the cluster and the single node alternate, round by round (which goes first
  # alternates too), each run after waiting for a quiet machine.
  local r
  for r in $(seq 1 "$P2_ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
      wait_quiet; run_load 2 "cluster A->B 1000/s x$FEW, round $r" "$LOAD_CPU" "redis=$rpid A=$apid B=$bpid" "${c[@]}" --rate 1000 --duration "$DURATION"
      wait_quiet; run_load 2 "single node (memory) 1000/s x$FEW, round $r" "$LOAD_CPU" "node=$spid" "${s[@]}" --rate 1000 --duration "$DURATION"
    else
      wait_quiet; run_load 2 "single node (memory) 1000/s x$FEW, round $r" "$LOAD_CPU" "node=$spid" "${s[@]}" --rate 1000 --duration "$DURATION"
      wait_quiet; run_load 2 "cluster A->B 1000/s x$FEW, round $r" "$LOAD_CPU" "redis=$rpid A=$apid B=$bpid" "${c[@]}" --rate 1000 --duration "$DURATION"
    fi
  done
  cleanup
}

# ---------------------------------------------------------------------------------------
part3() {
  say "== part 3: fan-out to $FANOUT_CONNS subscribers; servers on core $SERVER_CPU, generator on core $LOAD_CPU"
  next_port; local rp=$port
  start_redis $rp "$SERVER_CPU" || { cleanup; return; }; local rpid=$LAST_PID
  node_conf "$OUT/p3.json" $rp p3 false
  next_port; local pa=$port; start_herald p3-A $pa "$SERVER_CPU" "$OUT/p3.json" || { cleanup; return; }; local apid=$LAST_PID
  next_port; local pb=$port; start_herald p3-B $pb "$SERVER_CPU" "$OUT/p3.json" || { cleanup; return; }; local bpid=$LAST_PID
  next_port; local pc=$port; start_herald p3-C $pc "$SERVER_CPU" "$OUT/p3.json" || { cleanup; return; }; local cpid=$LAST_PID
  run_load 3 "3 nodes: publish A, x$FANOUT_CONNS on B+C, max rate" "$LOAD_CPU" "redis=$rpid A=$apid B=$bpid C=$cpid" \
    --sub-url "ws://127.0.0.1:$pb/ws/?cid={ch}" --sub-url "ws://127.0.0.1:$pc/ws/?cid={ch}" \
    --pub-url "http://127.0.0.1:$pa/publish/?cid={ch}" --conns "$FANOUT_CONNS" --rate 0 --duration "$DURATION" --drain "$DRAIN"
  cleanup
  node_conf "$OUT/mem.json" "" "" false
  next_port; local p1=$port; start_herald p3-single $p1 "$SERVER_CPU" "$OUT/mem.json" || { cleanup; return; }; local spid=$LAST_PID
  run_load 3 "1 node (memory): x$FANOUT_CONNS, max rate" "$LOAD_CPU" "node=$spid" \
    --target herald --addr "127.0.0.1:$p1" --conns "$FANOUT_CONNS" --rate 0 --duration "$DURATION" --drain "$DRAIN"
  cleanup
  if [ ! -x "$PEERS_DIR/start-nchan.sh" ]; then say "no $PEERS_DIR/start-nchan.sh: Nchan skipped"; return; fi
  next_port; rp=$port
  start_redis $rp "$SERVER_CPU" || { cleanup; return; }; rpid=$LAST_PID
  next_port; local n1=$port; start_nchan $n1 "$SERVER_CPU" "redis://127.0.0.1:$rp" || { cleanup; return; }; local n1pid=$LAST_PID
  next_port; local n2=$port; start_nchan $n2 "$SERVER_CPU" "redis://127.0.0.1:$rp" || { cleanup; return; }; local n2pid=$LAST_PID
  run_load 3 "Nchan+Redis: publish nginx 2, x$FANOUT_CONNS on nginx 1, max rate" "$LOAD_CPU" "redis=$rpid nginx1=$n1pid nginx2=$n2pid" \
    --sub-url "ws://127.0.0.1:$n1/sub/{ch}" --pub-url "http://127.0.0.1:$n2/pub/{ch}" \
    --conns "$FANOUT_CONNS" --rate 0 --duration "$DURATION" --drain "$DRAIN"
  cleanup
}

# ---------------------------------------------------------------------------------------
part4() {
  local total=$((PROCS * PER_PROC))
  say "== part 4: $PROCS herald processes on one port (reuse_port) over Redis, $PROCS x $PER_PROC WebSocket subscribers"
  next_port; local rp=$port
  local mem0; mem0=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  start_redis $rp "" || { cleanup; return; }; local rpid=$LAST_PID
  # handshake_timeout_ms: each generator opens its publisher connection when its subscribers
  # are open and sends the first publish after the settle phase; the default 10 s would close
  # that idle connection when the generators finish connecting far apart.
  node_conf "$OUT/p4.json" $rp p4 true '"handshake_timeout_ms":120000' 
  next_port; local sp=$port
  local pids=() i pid
  for i in $(seq 1 "$PROCS"); do
    start_herald "p4-$i" $sp "" "$OUT/p4.json" "$([ "$i" -gt 1 ] && echo shared)" || { cleanup; return; }; pid=$LAST_PID
    pids+=("$pid")
    # Each process's own listener is up before the next starts (the port answers from the first).
    for _ in $(seq 1 100); do ss -Hltnp "sport = :$sp" 2>/dev/null | grep -q "pid=$pid," && break; sleep 0.1; done
  done
  sleep 2
  local rss0; rss0=$($PY rss "${pids[@]}")
  local redis0; redis0=$($PY rss "$rpid")
  local memb; memb=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  local slabb; slabb=$(awk '/^Slab:/{print $2}' /proc/meminfo)
  local tcpb; tcpb=$(awk '/^TCP:/{for (i = 1; i < NF; i++) if ($i == "mem") print $(i+1)}' /proc/net/sockstat)
  local la; la=$(loadavg)
  # One generator per PER_PROC subscribers, each on its own channel (its own prefix),
  # publishing through the shared port; the settle phase is long enough for all of them to
  # be connected before the first publishes.
  local settle=${P4_SETTLE:-20} lps=() logs=() jsons=()
  for i in $(seq 1 "$PROCS"); do
    local cmd=("$BIN/herald-load" --json --label "reuse_port gen $i" --target herald --addr "127.0.0.1:$sp"
      --conns "$PER_PROC" --sources 64 --connect-concurrency 128 --connect-timeout 150 --settle "$settle"
      --rate 2 --duration 5 --drain 10 --chan-prefix "p4g${i}x$RANDOM")
    echo "[part 4] $(q "${cmd[@]}") &" >>"$CMDS"
    timeout 400 "${cmd[@]}" >"$OUT/p4-gen$i.json" 2>"$OUT/p4-gen$i.log" &
    lps+=($!); logs+=("$OUT/p4-gen$i.log"); jsons+=("$OUT/p4-gen$i.json")
  done
  # Wait for every generator to be in its settle phase (all connected), then read memory.
  local t=0 ready
  while [ $t -lt 1800 ]; do
    ready=0
    for l in "${logs[@]}"; do grep -q '^\[ *settle\]' "$l" && ready=$((ready + 1)); done
    [ $ready -eq "$PROCS" ] && break
    sleep 0.1; t=$((t + 1))
  done
  sleep 3
  local memi; memi=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  local slabi; slabi=$(awk '/^Slab:/{print $2}' /proc/meminfo)
  local tcpi; tcpi=$(awk '/^TCP:/{for (i = 1; i < NF; i++) if ($i == "mem") print $(i+1)}' /proc/net/sockstat)
  local rssi; rssi=$($PY rss "${pids[@]}")
  local redisi; redisi=$($PY rss "$rpid")
  local genrss; genrss=$($PY rss "${lps[@]}")
  local per=() est=()
  for pid in "${pids[@]}"; do per+=("$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"); done
  say "  all $ready generators connected after $((t / 10)) s; fds per process: ${per[*]}"
  for p in "${lps[@]}"; do wait "$p"; done
  {
    echo "{\"ready\": $ready}"
    for j in "${jsons[@]}"; do tail -1 "$j"; done
  } >"$OUT/p4-all.jsonl"
  python3 - "$OUT/p4-all.jsonl" "$PROCS" "$total" "$mem0" "$memb" "$memi" "$rss0" "$rssi" "$genrss" "$redis0" "$redisi" "$la" "${per[*]}" "$slabb" "$slabi" "$tcpb" "$tcpi" <<'PY' >>"$RESULTS"
import json, sys
a = sys.argv
lines = [json.loads(l) for l in open(a[1]) if l.strip().startswith("{")]
gens = [l for l in lines if "label" in l]
procs, total = int(a[2]), int(a[3])
mem0, memb, memi = int(a[4]), int(a[5]), int(a[6])
rss0, rssi, genrss, redis0, redisi = (int(x) for x in a[7:12])
opened = sum(g["opened"] for g in gens)
lat = [g["latency_ms"] for g in gens]
out = {
    "part": "4", "kind": "reuse_port", "procs": procs, "wanted": total, "generators": len(gens),
    "opened": opened, "open": sum(g["open_at_end"] for g in gens),
    "connect_errors": sum(g["connect_errors"] for g in gens), "connect_timeouts": sum(g["connect_timeouts"] for g in gens),
    "published": sum(g["published"] for g in gens), "expected": sum(g["expected"] for g in gens),
    "delivered": sum(g["delivered"] for g in gens), "lost": sum(g["lost"] for g in gens),
    "duplicates": sum(g["duplicates"] for g in gens), "publish_errors": sum(g["publish_errors"] for g in gens),
    "p50_ms": max(l["p50"] for l in lat) if lat else None, "p99_ms": max(l["p99"] for l in lat) if lat else None,
    "connect_secs_max": max(g["connect_secs"] for g in gens) if gens else None,
    "mem_available_kb": {"before_servers": mem0, "servers_idle": memb, "all_connected": memi},
    "box_bytes_per_conn": round((memb - memi) * 1024 / opened) if opened else None,
    "server_rss_bytes": {"idle": rss0, "connected": rssi},
    "server_rss_bytes_per_conn": round((rssi - rss0) / opened) if opened else None,
    "gen_rss_bytes": genrss, "gen_rss_bytes_per_conn": round(genrss / opened) if opened else None,
    "redis_rss_bytes": {"idle": redis0, "connected": redisi},
    "loadavg": a[12], "per_process": [int(x) - 0 for x in a[13].split()],
    "first_errors": [g["first_error"] for g in gens if g.get("first_error")],
    # Both ends of every loopback connection are on this box: kernel figures count two sockets.
    "slab_kb": {"servers_idle": int(a[14]), "all_connected": int(a[15])},
    "slab_bytes_per_conn": round((int(a[15]) - int(a[14])) * 1024 / opened) if opened else None,
    "tcp_mem_pages": {"servers_idle": int(a[16]), "all_connected": int(a[17])},
}
print(json.dumps(out))
PY
  tail -1 "$RESULTS" | cut -c1-600 >&2
  cleanup
}

# ---------------------------------------------------------------------------------------
P5_PROCS=${P5_PROCS:-6}
P5_WS_GENS=${P5_WS_GENS:-5}
P5_WS_PER=${P5_WS_PER:-16000}
P5_SSE_PER=${P5_SSE_PER:-10000}
P5_LP_PER=${P5_LP_PER:-10000}
P5_RATE=${P5_RATE:-2}
P5_DURATION=${P5_DURATION:-5}
P5_SETTLE=${P5_SETTLE:-40}
part5() {
  local total=$((P5_WS_GENS * P5_WS_PER + P5_SSE_PER + P5_LP_PER))
  local rmem wmem
  rmem=$(sysctl -n net.ipv4.tcp_rmem | tr '\t' ' '); wmem=$(sysctl -n net.ipv4.tcp_wmem | tr '\t' ' ')
  say "== part 5: $P5_PROCS herald processes on one port (reuse_port) over Redis; $P5_WS_GENS x $P5_WS_PER WebSocket + $P5_SSE_PER SSE + $P5_LP_PER long-poll = $total; netns ${NETNS_INNER:-none}, tcp_rmem $rmem, tcp_wmem $wmem"
  echo "# part 5 in netns ${NETNS_INNER:-none, the machine namespace}: tcp_rmem $rmem; tcp_wmem $wmem" >>"$CMDS"
  local memf=$OUT/p5-mem.jsonl gensf=$OUT/p5-gens.jsonl
  : >"$memf"; : >"$gensf"
  next_port; local rp=$port
  $PY mem before_servers >>"$memf"
  start_redis $rp "" || { cleanup; return; }; local rpid=$LAST_PID
  # handshake_timeout_ms: as in part 4 (each generator's publisher connection is idle until
  # its settle ends).
  node_conf "$OUT/p5.json" $rp p5 true '"handshake_timeout_ms":120000'
  next_port; local sp=$port
  local pids=() i pid
  for i in $(seq 1 "$P5_PROCS"); do
    start_herald "p5-$i" $sp "" "$OUT/p5.json" "$([ "$i" -gt 1 ] && echo shared)" || { cleanup; return; }; pid=$LAST_PID
    pids+=("$pid")
    for _ in $(seq 1 100); do ss -Hltnp "sport = :$sp" 2>/dev/null | grep -q "pid=$pid," && break; sleep 0.1; done
  done
  sleep 2
  local hl; hl=$(IFS=,; echo "${pids[*]}")
  local lps=() jsons=() logs=()
  memread() { # LABEL: memory now, with the RSS of the herald processes, redis and generators so far
    local gl; gl=$(IFS=,; echo "${lps[*]}")
    $PY mem "$1" "herald=$hl" "redis=$rpid" "gens=$gl" >>"$memf"
  }
  memread servers_idle
  local la; la=$(loadavg)
  local t_start; t_start=$(date +%s.%N)
  local publish_at=""
  # gen TRANSPORT N INDEX: start one generator in the background (settle cut so that it
  # publishes with the first ones), then wait until it is connected (its settle phase).
  gen() {
    local tr=$1 n=$2 idx=$3 settle=$P5_SETTLE
    if [ -n "$publish_at" ]; then
      settle=$(python3 -c "import time; print(max(5, round($publish_at - time.time(), 1)))")
    fi
    local cmd=("$BIN/herald-load" --json --label "box $tr gen $idx" --target herald --transport "$tr"
      --addr "127.0.0.1:$sp" --conns "$n" --sources 64 --connect-concurrency 128 --connect-timeout 150
      --settle "$settle" --rate "$P5_RATE" --duration "$P5_DURATION" --drain 15 --chan-prefix "p5${tr}${idx}x$RANDOM")
    echo "[part 5] $(q "${cmd[@]}") &" >>"$CMDS"
    timeout 400 "${cmd[@]}" >"$OUT/p5-$tr$idx.json" 2>"$OUT/p5-$tr$idx.log" &
    lps+=($!); jsons+=("$OUT/p5-$tr$idx.json"); logs+=("$OUT/p5-$tr$idx.log")
  }
  settled() { # wait until every generator started so far is in its settle phase
    local t=0 ready l
    while [ $t -lt 1800 ]; do
      ready=0
      for l in "${logs[@]}"; do grep -q '^\[ *settle\]' "$l" && ready=$((ready + 1)); done
      [ $ready -eq ${#logs[@]} ] && return 0
      for l in "${lps[@]}"; do kill -0 "$l" 2>/dev/null || { say "  a generator exited early (see $OUT/p5-*.log)"; return 1; }; done
      sleep 0.1; t=$((t + 1))
    done
    say "  generators not connected after 180 s"; return 1
  }
  for i in $(seq 1 "$P5_WS_GENS"); do gen ws "$P5_WS_PER" "$i"; done
  settled || { cleanup; return; }
  # The WebSocket generators publish P5_SETTLE s after they connected; the others are cut to that.
  publish_at=$(python3 -c "import time; print(time.time() + $P5_SETTLE - 1.5)")
  local t_ws; t_ws=$(python3 -c "print(round($(date +%s.%N) - $t_start, 1))")
  sleep 3; memread ws
  if [ "$P5_SSE_PER" -gt 0 ]; then gen sse "$P5_SSE_PER" 1; settled || { cleanup; return; }; sleep 3; memread sse; fi
  if [ "$P5_LP_PER" -gt 0 ]; then gen longpoll "$P5_LP_PER" 1; settled || { cleanup; return; }; sleep 3; memread longpoll; fi
  local t_all; t_all=$(python3 -c "print(round($(date +%s.%N) - $t_start, 1))")
  local per=()
  for pid in "${pids[@]}"; do per+=("$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)"); done
  say "  all ${#lps[@]} generators connected (ws after $t_ws s, all read at $t_all s); fds per herald process: ${per[*]}"
  # A sample of socket memory (skmem: rb = receive buffer limit, tb = send buffer limit).
  { echo "# server side"; ss -tmnH state established "( sport = :$sp )" 2>/dev/null | head -6
    echo "# client side"; ss -tmnH state established "( dport = :$sp )" 2>/dev/null | head -6; } >"$OUT/p5-skmem.txt"
  local before_pub; before_pub=$(awk '/^MemAvailable:/{print $2}' /proc/meminfo)
  local watchf=$OUT/p5-watch.json
  $PY watch 300 "${lps[@]}" >"$watchf" &
  local wpid=$!
  for p in "${lps[@]}"; do wait "$p"; done
  wait "$wpid"
  for j in "${jsons[@]}"; do tail -1 "$j"; done >"$gensf"
  local peak; peak=$(python3 -c "import json,sys; w=json.load(open('$watchf')); print(json.dumps({'max_tcp_mem_pages': w['max_tcp_mem_pages'], 'mem_drop_kb': ($before_pub - w['min_mem_available_kb']) if w['min_mem_available_kb'] is not None else None}))")
  $PY p5sum "$memf" "$gensf" "procs=$P5_PROCS" "wanted=$total" "netns=\"${NETNS:-none}\"" \
    "tcp_rmem=\"$rmem\"" "tcp_wmem=\"$wmem\"" "loadavg=\"$la\"" "loadavg_end=\"$(loadavg)\"" \
    "per_process=[$(IFS=,; echo "${per[*]}")]" "connected_secs={\"ws\": $t_ws, \"all\": $t_all}" \
    "rate=$P5_RATE" "duration=$P5_DURATION" "publish_peak=$peak" >>"$RESULTS"
  tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(json.dumps({"by_transport": r["by_transport"], "per_conn": r["per_conn"]}))' >&2
  cleanup
}

for p in $PARTS; do "part$p"; done
$PY table "$RESULTS" | tee "$OUT/tables.md"
say "results: $RESULTS; commands: $CMDS"
