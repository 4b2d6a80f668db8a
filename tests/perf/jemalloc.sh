#!/usr/bin/env bash
# jemalloc under fan-out (issue #15 part 4): one herald per (configuration, workers, round),
# each taken through the same phases while RSS and jemalloc's own figures
# (herald_allocator_* on /metrics: allocated, active, resident, metadata, mapped, retained,
# dirty, muzzy, tcache, arenas) are sampled every SAMPLE_S seconds:
#   idle    IDLE (19,000) idle WebSocket connections, settled 3 s, then closed
#   max     CONNS (10,000) subscribers on one channel, publishing as fast as the window allows
#   steady  CONNS subscribers, RATE publishes/s (RATE x CONNS deliveries/s)
#   after   AFTER s with no client (what the allocator keeps, and hands back)
# A configuration is a _RJEM_MALLOC_CONF string (the prefixed name is the one jemalloc reads
# in this build; it overrides the built-in malloc_conf in src/main.rs option by option; "-"
# is the built-in one alone). jemalloc prints its options and merged statistics at exit
# (stats_print), kept per run in OUTDIR.
#
# Usage: tests/perf/jemalloc.sh [OUTDIR]
# Env:   CONFIGS "name=conf ..." (default: the survey below), WORKERS_LIST ("1 2"),
#        ROUNDS (1; even rounds run the configurations in reverse order), IDLE (19000),
#        CONNS (10000), DURATION (6) s per publishing phase, RATE (8), AFTER (4) s,
#        SAMPLE_S (0.5), HERALD (target/release/herald), LOCK (/tmp/herald-perf.lock),
#        ONE_LOCK (0; 1: every run of every round under a single hold of LOCK, for an A/B
#        whose rounds should see the same machine)
#        tests/perf/jemalloc.sh --summary OUTDIR   the tables again
# Server pinned to CPU 0 (all its workers), generator to CPU 1. The runs of one (round,
# workers) hold LOCK (flock) together, so they never overlap another benchmark that takes
# it and are not spread over an hour of waiting for it; every run is bounded
# (timeout) and only the processes this script started are stopped, by PID.
# Outputs in OUTDIR: commands.txt, results.jsonl (herald-load summaries), samples.tsv,
# runs.tsv (machine load per run), stats-*.txt (jemalloc at exit), summary.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
HERALD=${HERALD:-$ROOT/target/release/herald}
LOAD=${LOAD:-$ROOT/target/release/herald-load}
LOCK=${LOCK:-/tmp/herald-perf.lock}
IDLE=${IDLE:-19000} CONNS=${CONNS:-10000} DURATION=${DURATION:-6} RATE=${RATE:-8}
AFTER=${AFTER:-4} SAMPLE_S=${SAMPLE_S:-0.5}

# One run: jemalloc.sh --run OUTDIR NAME CONF WORKERS ROUND PORT (called under flock).
if [ "${1:-}" = --run ]; then
  OUT=$2 NAME=$3 CONF=$4 W=$5 R=$6 PORT=$7
  ID="$NAME-w$W-r$R"
  PHASE="$OUT/.phase-$ID"
  conf="stats_print:true,stats_print_opts:daxh"
  [ "$CONF" != - ] && conf="$CONF,$conf"
  read -r l1 l5 _ </proc/loadavg
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) total=0
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  busy=$(( total > 0 ? 100 * (total - idle) / total : 0 ))
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$NAME" "$W" "$R" "$(date +%T)" "$l1" "$l5" "$busy" "$conf" >>"$OUT/runs.tsv"
  echo "== $ID  _RJEM_MALLOC_CONF=$conf  (load $l1, machine ${busy}% busy before)" >&2
  _RJEM_MALLOC_CONF=$conf taskset -c 0 "$HERALD" --bind 127.0.0.1 --port "$PORT" --workers "$W" \
    --log-level warn >"$OUT/herald-$ID.log" 2>"$OUT/stats-$ID.txt" &
  pid=$! sampler=
  # Stopped on any exit (timeout included; bash runs the trap once the current, itself
  # bounded, command returns): this herald and its sampler, by PID, nothing else.
  trap 'kill "$pid" $sampler 2>/dev/null' EXIT
  up=0
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && { up=1; break; }; sleep 0.1; done
  [ $up = 1 ] || { kill "$pid"; echo "herald did not start" >&2; exit 1; }
  echo start >"$PHASE"
  # The sampler: one line per SAMPLE_S with the phase, VmRSS and every herald_allocator_* gauge.
  (
    while kill -0 "$pid" 2>/dev/null; do
      t=$(date +%s.%N)
      rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      anon=$(awk '/^RssAnon/ {print $2}' "/proc/$pid/status" 2>/dev/null)
      m=$(curl -s -m 2 "http://127.0.0.1:$PORT/metrics" | awk '/^herald_allocator_/ {sub("herald_allocator_", "", $1); printf "%s=%s ", $1, $2}')
      m="anon_kb=$anon $m"
      [ -n "$rss" ] && printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$NAME" "$W" "$R" "$(cat "$PHASE")" "$t" "$rss" "$m" >>"$OUT/samples.tsv"
      sleep "$SAMPLE_S"
    done
  ) &
  sampler=$!
  sleep 1
  load() { # PHASE ARGS...
    echo "$1" >"$PHASE"
    local ph=$1; shift
    timeout 180 taskset -c 1 "$LOAD" --quiet --json --server-pid "$pid" --label "$NAME w=$W r=$R $ph" \
      --target herald --addr "127.0.0.1:$PORT" --size 100 "$@" | tail -1 >>"$OUT/results.jsonl"
  }
  load idle --conns "$IDLE" --duration 0 --settle 3 --connect-timeout 60
  echo gap >"$PHASE"; sleep 2
  load max --conns "$CONNS" --rate 0 --duration "$DURATION"
  echo gap >"$PHASE"; sleep 2
  load steady --conns "$CONNS" --rate "$RATE" --duration "$DURATION"
  echo after >"$PHASE"; sleep "$AFTER"
  kill "$pid" 2>/dev/null
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  rm -f "$PHASE"
  exit 0
fi

# One group = runs back to back under one hold of LOCK (taken by the caller):
# jemalloc.sh --group OUTDIR PORT ROUND/WORKERS/NAME=CONF...
if [ "${1:-}" = --group ]; then
  OUT=$2 port=$3; shift 3
  entries=("$@")
  case "${1:-}" in */*) ;; *) # the older form: OUTDIR ROUND WORKERS PORT NAME=CONF...
    r=$port w=$1 port=$2; shift 2; entries=(); for c in "$@"; do entries+=("$r/$w/$c"); done ;;
  esac
  for e in "${entries[@]}"; do
    port=$((port + 1))
    r=${e%%/*} rest=${e#*/}; w=${rest%%/*} c=${rest#*/}
    echo "  $ROOT/tests/perf/jemalloc.sh --run $OUT ${c%%=*} ${c#*=} $w $r $port" >>"$OUT/commands.txt"
    timeout 600 "$ROOT/tests/perf/jemalloc.sh" --run "$OUT" "${c%%=*}" "${c#*=}" "$w" "$r" "$port"
  done
  exit 0
fi

if [ "${1:-}" = --summary ]; then OUT=$2 SUMMARY_ONLY=1; else SUMMARY_ONLY=0; fi
[ $SUMMARY_ONLY = 1 ] || {
OUT=${1:-$ROOT/target/perf-jemalloc-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
[ -x "$HERALD" ] && [ -x "$LOAD" ] || {
  nice -n 10 cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-load >&2 || exit 1
}
# The survey: the built-in malloc_conf (background_thread:true,dirty_decay_ms:1000,
# muzzy_decay_ms:0) against one setting changed at a time. jemalloc counts the CPUs it may run
# on (sched_getaffinity): pinned to one, its default is ONE arena (plus the huge-allocation
# arena), as in every pinned benchmark here; narenas:8 is what it picks unpinned on this
# 2-core machine (4 per CPU).
CONFIGS=${CONFIGS:-"default=- narenas8=narenas:8 narenas2=narenas:2 tcache_off=tcache:false \
tcache_max4k=tcache_max:4096 dirty0=dirty_decay_ms:0 stock_decay=dirty_decay_ms:10000,muzzy_decay_ms:10000 \
no_bg=background_thread:false"}
WORKERS_LIST=${WORKERS_LIST:-"1 2"} ROUNDS=${ROUNDS:-1} ONE_LOCK=${ONE_LOCK:-0}
{
  echo "# $(date -Is) $(git rev-parse --short HEAD 2>/dev/null) $0 $*"
  echo "# HERALD=$HERALD IDLE=$IDLE CONNS=$CONNS DURATION=$DURATION RATE=$RATE AFTER=$AFTER ROUNDS=$ROUNDS"
  echo "# WORKERS_LIST=$WORKERS_LIST CONFIGS=$CONFIGS"
} >>"$OUT/commands.txt"
port=19800
all=()
for r in $(seq 1 "$ROUNDS"); do
  list=($CONFIGS)
  if [ $((r % 2)) = 0 ]; then
    rev=(); for ((i = ${#list[@]} - 1; i >= 0; i--)); do rev+=("${list[i]}"); done; list=("${rev[@]}")
  fi
  for w in $WORKERS_LIST; do
    group=(); for c in "${list[@]}"; do group+=("$r/$w/$c"); done
    if [ "$ONE_LOCK" = 1 ]; then all+=("${group[@]}"); continue; fi
    cmd=(flock "$LOCK" timeout 1800 "$ROOT/tests/perf/jemalloc.sh" --group "$OUT" "$port" "${group[@]}")
    echo "${cmd[*]}" >>"$OUT/commands.txt"
    "${cmd[@]}"
    port=$((port + ${#group[@]}))
  done
done
if [ "$ONE_LOCK" = 1 ]; then
  cmd=(flock "$LOCK" timeout 3600 "$ROOT/tests/perf/jemalloc.sh" --group "$OUT" "$port" "${all[@]}")
  echo "${cmd[*]}" >>"$OUT/commands.txt"
  "${cmd[@]}"
fi
}

python3 - "$OUT" <<'PY' | tee "$OUT/summary.txt"
import json, sys, statistics, collections
out = sys.argv[1]
res = {}
for l in open(f"{out}/results.jsonl"):
    if l.strip().startswith("{"):
        r = json.loads(l); name, w, rd, ph = r["label"].split(" ")
        res[(name, w[2:], rd[2:], ph)] = r
S = collections.defaultdict(list)
for l in open(f"{out}/samples.tsv"):
    f = l.rstrip("\n").split("\t")
    if len(f) < 7: continue
    d = {"rss": int(f[5]) * 1024}
    for kv in f[6].split():
        k, v = kv.split("="); d[k] = float(v)
    if "resident_bytes" in d and "active_bytes" in d:
        # jemalloc's own figure for what is resident besides live and dirty pages: its metadata
        # as it counts it (whole radix-tree leaves, 2 MiB each, though only touched entries are
        # resident; see anon_over below for what really is).
        d["meta_res"] = d["resident_bytes"] - d["active_bytes"] - d.get("dirty_bytes", 0) - d.get("muzzy_bytes", 0)
    if "anon_kb" in d and "allocated_bytes" in d:
        d["anon"] = d["anon_kb"] * 1024
        # Anonymous RSS (the heap, metadata pages touched, thread stacks, .bss) beyond what the
        # program holds: the real allocator overhead, with the stacks.
        d["anon_over"] = d["anon"] - d["allocated_bytes"]
    S[(f[0], f[1], f[2], f[3])].append(d)
def peak(key, k):
    v = [d.get(k) for d in S.get(key, []) if d.get(k) is not None]
    return max(v) if v else None
def last(key, k):
    v = [d.get(k) for d in S.get(key, []) if d.get(k) is not None]
    return v[-1] if v else None
runs = sorted({k[:3] for k in res})
rows = []
for (n, w, rd) in runs:
    g = lambda ph, k: (res.get((n, w, rd, ph)) or {}).get(k)
    rows.append(dict(name=n, w=w, r=rd,
        idle_b=g("idle", "rss_per_conn_bytes"),
        idle_rss=peak((n, w, rd, "idle"), "rss"), idle_meta=peak((n, w, rd, "idle"), "metadata_bytes"),
        idle_mres=peak((n, w, rd, "idle"), "meta_res"), max_mres=peak((n, w, rd, "max"), "meta_res"),
        idle_anon=peak((n, w, rd, "idle"), "anon"), max_anon=peak((n, w, rd, "max"), "anon"),
        idle_over=peak((n, w, rd, "idle"), "anon_over"), max_over=peak((n, w, rd, "max"), "anon_over"),
        after_anon=last((n, w, rd, "after"), "anon"),
        max_frag=None if peak((n, w, rd, "max"), "active_bytes") is None else
            peak((n, w, rd, "max"), "active_bytes") - peak((n, w, rd, "max"), "allocated_bytes"),
        idle_frag=None if peak((n, w, rd, "idle"), "active_bytes") is None else
            peak((n, w, rd, "idle"), "active_bytes") - peak((n, w, rd, "idle"), "allocated_bytes"),
        max_dps=g("max", "deliveries_per_s"), max_cpu=g("max", "server_cpu_pct"),
        max_rss=peak((n, w, rd, "max"), "rss"), max_alloc=peak((n, w, rd, "max"), "allocated_bytes"),
        max_dirty=peak((n, w, rd, "max"), "dirty_bytes"), max_meta=peak((n, w, rd, "max"), "metadata_bytes"),
        max_tc=peak((n, w, rd, "max"), "tcache_bytes"),
        st_cpu=g("steady", "server_cpu_pct"), st_p99=(g("steady", "latency_ms") or {}).get("p99"),
        st_rss=peak((n, w, rd, "steady"), "rss"),
        after_rss=last((n, w, rd, "after"), "rss"), after_res=last((n, w, rd, "after"), "resident_bytes"),
        after_dirty=last((n, w, rd, "after"), "dirty_bytes"), after_meta=last((n, w, rd, "after"), "metadata_bytes"),
        after_ret=last((n, w, rd, "after"), "retained_bytes"), arenas=peak((n, w, rd, "max"), "arenas"),
        lost=sum((res.get((n, w, rd, p)) or {}).get("lost", 0) for p in ("max", "steady"))))
M = 1 << 20
def f(v, d=1, scale=1):
    return "-" if v is None else f"{v / scale:,.{d}f}"
cols = [("config", "name", None), ("w", "w", None), ("rd", "r", None), ("arenas", "arenas", (0, 1)),
        ("idle B/conn", "idle_b", (0, 1)), ("idle RSS MiB", "idle_rss", (1, M)), ("idle anon MiB", "idle_anon", (1, M)), ("idle anon-alloc MiB", "idle_over", (2, M)),
        ("idle meta MiB", "idle_meta", (2, M)), ("idle jemalloc resident-active-dirty MiB", "idle_mres", (2, M)),
        ("idle active-alloc MiB", "idle_frag", (2, M)), ("max dl/s", "max_dps", (0, 1)), ("max CPU%", "max_cpu", (0, 1)),
        ("max RSS MiB", "max_rss", (1, M)), ("max anon MiB", "max_anon", (1, M)),
        ("max anon-alloc MiB", "max_over", (2, M)), ("max alloc MiB", "max_alloc", (1, M)), ("max dirty MiB", "max_dirty", (1, M)),
        ("max meta MiB", "max_meta", (2, M)), ("max jemalloc resident-active-dirty MiB", "max_mres", (2, M)),
        ("max active-alloc MiB", "max_frag", (2, M)), ("max tcache MiB", "max_tc", (2, M)), ("steady CPU%", "st_cpu", (1, 1)),
        ("steady p99 ms", "st_p99", (1, 1)), ("steady RSS MiB", "st_rss", (1, M)), ("after RSS MiB", "after_rss", (1, M)), ("after anon MiB", "after_anon", (1, M)),
        ("after resident MiB", "after_res", (1, M)), ("after dirty MiB", "after_dirty", (2, M)),
        ("after meta MiB", "after_meta", (2, M)), ("after retained MiB", "after_ret", (1, M)), ("lost", "lost", (0, 1))]
print("| " + " | ".join(c[0] for c in cols) + " |")
print("|" + "---|" * len(cols))
for row in rows:
    print("| " + " | ".join(str(row[k]) if fm is None else f(row[k], *fm) for _, k, fm in cols) + " |")
# Ratios to `default` of the same workers and round, medians over rounds.
print()
print("median ratio to default (same workers, same round; each round's ratio in brackets)")
by = {(r["name"], r["w"], r["r"]): r for r in rows}
for w in sorted({r["w"] for r in rows}):
    for n in dict.fromkeys(r["name"] for r in rows):
        if n == "default": continue
        rat = collections.defaultdict(list)
        for r in [r for r in rows if r["name"] == n and r["w"] == w]:
            d = by.get(("default", w, r["r"]))
            if not d: continue
            for k in ("max_rss", "max_anon", "max_dps", "idle_b", "st_cpu", "after_rss"):
                if r[k] and d[k]: rat[k].append(r[k] / d[k])
        if rat:
            print(f"  w={w} {n:14s} " + "  ".join(f"{k} {statistics.median(v):.3f} ({' '.join(f'{x:.2f}' for x in v)})" for k, v in rat.items()))
PY
echo "results: $OUT" >&2
