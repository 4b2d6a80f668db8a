#!/usr/bin/env bash
# A/B of the two reactor backends of one herald build, `--io epoll` (A) against
# `--io uring` (B), alternating A and B within every round so both see the same machine:
# idle memory and connect rate at IDLE connections, max-rate fan-out to CONNS subscribers
# on one channel, CONNS subscribers over 1,000 channels, latency at 2 publishes/s, and the
# server's CPU at a fixed 8 publishes/s (80k deliveries/s at 10k: the cost per delivery
# when neither side is saturated, the steadiest measure on a shared machine).
# Server pinned to CPU 0 (one worker), herald-load to CPU 1, as in ab.sh.
#
# Each measure is taken for A and B back to back (B first in even rounds), so a pair sees
# the same machine; before each run the script waits up to QUIET_WAIT s for the machine to
# be under QUIET_PCT % busy (as compare.sh does) and records how busy it was.
#
# With UWS=1, uWebSockets.js (tests/perf/peers/start-uws.sh, pinned the same way) is run
# as side C right after A and B in the fan-out and 2/s measures.
#
# Usage: tests/perf/io_ab.sh [ROUNDS]          (release builds in target/release)
# Env:   CONNS (10000), IDLE (19000), DURATION (10) s, BIN (target/release/herald),
#        QUIET_PCT (25), QUIET_WAIT (60), UWS (0)
# Prints one JSON line per run (with the load average and busy % before it), then per
# measure: the median of each side and the median and range of the per-round B/A ratios.
# Every run is bounded (timeout 180 s); only the servers this script started are stopped,
# by PID.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
# busy_pct
source tests/perf/lib.sh
ROUNDS=${1:-5}
CONNS=${CONNS:-10000} IDLE=${IDLE:-19000} DURATION=${DURATION:-10}
BIN=${BIN:-target/release/herald}
QUIET_PCT=${QUIET_PCT:-25} QUIET_WAIT=${QUIET_WAIT:-60} UWS=${UWS:-0}
PEERS=tests/perf/peers
LOAD=target/release/herald-load
[ -x "$BIN" ] || cargo build --release -p herald --bin herald >&2 || exit 1
[ -x "$LOAD" ] || cargo build --release -p herald-bench-tools --bin herald-load >&2 || exit 1
OUT=$(mktemp -d /tmp/herald-io-ab.XXXXXX)
port=19900

start() { # IO PORT -> PID
  taskset -c 0 "$BIN" --bind 127.0.0.1 --port "$2" --workers 1 --log-level warn --io "$1" >"$OUT/h-$2.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && { echo $pid; return; }; sleep 0.1; done
  kill $pid; return 1
}
# Busy % of CPU 0 (the server's core: herald and the softirq work its sends cause, some of
# which runs in ksoftirqd/0 rather than in herald) from /proc/stat, sampled over the
# publishing window of a run (after connecting and settling), written to file $2.
core0_busy() { # DELAY_S FILE
  sleep "$1"
  local a b; a=($(grep '^cpu0 ' /proc/stat)); sleep $(( DURATION > 4 ? DURATION - 3 : 1 )); b=($(grep '^cpu0 ' /proc/stat))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 )) > "$2"
}
stop() { kill "$1" 2>/dev/null; for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return; sleep 0.1; done; kill -9 "$1"; }

run() { # SIDE KIND ARGS...
  local side=$1 kind=$2; shift 2
  local io=epoll target=herald; [ "$side" = B ] && io=uring; [ "$side" = C ] && io=uws && target=uws
  port=$((port + 1))
  local busy waited=0; busy=$(busy_pct)
  while [ "$busy" -ge "$QUIET_PCT" ] && [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 2; waited=$((waited + 3)); busy=$(busy_pct)
  done
  local load; load=$(cut -d' ' -f1 /proc/loadavg)
  local pid
  if [ "$side" = C ]; then
    pid=$(PEER_CPUS=0 "$PEERS/start-uws.sh" $port | tail -1) || { echo "uws start failed" >&2; return; }
  else
    pid=$(start $io $port) || { echo "start failed" >&2; return; }
  fi
  local line core=null sampler=
  rm -f "$OUT/core0"
  if [ "$kind" != idle ]; then core0_busy 4 "$OUT/core0" & sampler=$!; fi
  line=$(timeout 180 taskset -c 1 "$LOAD" --quiet --json --server-pid "$pid" --label "$side $kind" --target $target \
    --addr 127.0.0.1:$port --size 100 "$@" | tail -1)
  [ -n "$sampler" ] && wait "$sampler"
  [ -s "$OUT/core0" ] && core=$(cat "$OUT/core0")
  if [ "$side" = C ]; then "$PEERS/stop.sh" "$pid" >/dev/null; else stop "$pid"; fi
  [ -n "$line" ] && echo "{\"round\":$r,\"io\":\"$io\",\"loadavg\":$load,\"busy_before_pct\":$busy,\"core0_busy_pct\":$core,${line#\{}" | tee -a "$OUT/results.jsonl"
}

for r in $(seq 1 "$ROUNDS"); do
  order="A B"; [ $((r % 2)) = 0 ] && order="B A"
  for side in $order; do run $side idle --conns "$IDLE" --duration 0 --settle 3 --connect-timeout 60; done
  for side in $order $([ "$UWS" = 1 ] && echo C); do run $side fanout --conns "$CONNS" --rate 0 --duration "$DURATION"; done
  for side in $order; do run $side ch1000 --conns "$CONNS" --channels 1000 --window 2000 --rate 0 --duration "$DURATION"; done
  for side in $order $([ "$UWS" = 1 ] && echo C); do run $side rate2 --conns "$CONNS" --rate 2 --duration "$DURATION"; done
  for side in $order; do run $side rate8 --conns "$CONNS" --rate 8 --duration "$DURATION"; done
done

python3 - "$OUT/results.jsonl" "$QUIET_PCT" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
QUIET = int(sys.argv[2])
def get(r, key):
    v = r
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v
measures = [("idle", "rss_per_conn_bytes"), ("idle", "connects_per_s"), ("fanout", "deliveries_per_s"),
            ("fanout", "core0_busy_pct"), ("ch1000", "deliveries_per_s"), ("rate2", "latency_ms.p50"),
            ("rate2", "latency_ms.p99"), ("rate8", "core0_busy_pct"), ("rate8", "server_cpu_pct")]
for kind, key in measures:
    a = {r["round"]: get(r, key) for r in rows if r["label"] == "A " + kind and get(r, key) is not None}
    b = {r["round"]: get(r, key) for r in rows if r["label"] == "B " + kind and get(r, key) is not None}
    ratios = sorted(b[k] / a[k] for k in a if k in b and a[k])
    if not ratios:
        continue
    print(f"{kind:7s} {key:20s} epoll median {statistics.median(a.values()):>10}  uring median {statistics.median(b.values()):>10}"
          f"  uring/epoll per round: median {statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f}, n={len(ratios)})")
# Per busy second of the server's core (herald's own CPU figure leaves out the softirq work
# that runs in ksoftirqd/0, which differs between the backends).
for kind in ("fanout", "ch1000"):
    for side, io in (("A", "epoll"), ("B", "uring")):
        v = [r["deliveries_per_s"] / r["core0_busy_pct"] * 100 for r in rows
             if r["label"] == side + " " + kind and r.get("core0_busy_pct")]
        if v:
            print(f"{kind:7s} deliveries per busy second of CPU 0, {io}: median {statistics.median(v):,.0f}")
# Pairs in which neither run found the machine busy (under QUIET_PCT before it).
for kind in ("fanout", "ch1000"):
    q = []
    for rnd in sorted({r["round"] for r in rows}):
        a = [r for r in rows if r["round"] == rnd and r["label"] == "A " + kind]
        b = [r for r in rows if r["round"] == rnd and r["label"] == "B " + kind]
        if a and b and a[0]["busy_before_pct"] < QUIET and b[0]["busy_before_pct"] < QUIET:
            q.append(b[0]["deliveries_per_s"] / a[0]["deliveries_per_s"])
    if q:
        print(f"{kind:7s} uring/epoll deliveries/s in quiet pairs: {', '.join(f'{x:.3f}' for x in q)} (median {statistics.median(q):.3f})")
for kind, key in [("fanout", "deliveries_per_s"), ("rate2", "latency_ms.p99")]:
    c = {r["round"]: get(r, key) for r in rows if r["label"] == "C " + kind and get(r, key) is not None}
    if not c:
        continue
    for side, io in (("A", "epoll"), ("B", "uring")):
        x = {r["round"]: get(r, key) for r in rows if r["label"] == side + " " + kind and get(r, key) is not None}
        ratios = sorted(x[k] / c[k] for k in x if k in c and c[k])
        if ratios:
            print(f"{kind:7s} {key:20s} uWS median {statistics.median(c.values()):>10}  herald {io}/uWS per round: "
                  f"{', '.join(f'{v:.3f}' for v in ratios)} (median {statistics.median(ratios):.3f})")
lost = sum(r.get("lost", 0) or 0 for r in rows)
loads = [r["loadavg"] for r in rows]
busy = [r["busy_before_pct"] for r in rows]
print(f"lost {lost}; load average before the runs {min(loads)}-{max(loads)} (median {statistics.median(loads)}); "
      f"machine busy before the runs {min(busy)}-{max(busy)}% (median {statistics.median(busy)}%)")
PY
echo "results: $OUT/results.jsonl" >&2
