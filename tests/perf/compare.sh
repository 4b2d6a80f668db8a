#!/usr/bin/env bash
# Herald against its peers, side by side, with the same load generator (herald-load) and the
# same message size, in one run. Bounded in time (each load run has its own deadline and a
# `timeout` around it; the whole script takes about 30 minutes with the defaults, every peer
# included: 24 minutes measured with PEERS="centrifugo uws").
#
# Servers: Herald on its seed endpoints (/ws/, SSE, long-poll; default config), Herald's
# Centrifugo endpoint /connection/websocket ("herald-cf", on the same Centrifugo config
# file as the real Centrifugo peer), then the peers: the real Centrifugo v6.9.1, uWebSockets.js,
# Node ws, nginx+Nchan. Herald-cf and Centrifugo get the same generator in Centrifugo mode
# (`herald-load --target centrifugo`: JSON client protocol, a HS256 token per subscriber,
# POST /api/publish with X-API-Key), so that comparison is like for like.
#
# Usage: tests/perf/compare.sh [OUTDIR]
#        tests/perf/compare.sh --table RESULTS.jsonl   (the tables again from a results file;
#                    set the same CONNS_LIST/MAX_CONNS/MID_CONNS/CHANNELS as the run)
#   env CONNS_LIST   subscriber counts for the max-rate fan-out   (default "1000 5000 10000 19000")
#       MAX_CONNS    connections for the idle-memory figure         (default 19000; one process
#                    here holds at most 20000 descriptors)
#       MID_CONNS    subscribers of the 2/s latency and 1,000-channel runs (default 10000)
#       CHANNELS     channels of the many-channel runs; the publish-rate run has one
#                    subscriber per channel                          (default 1000)
#       DURATION     seconds of publishing per run                  (default 8)
#       PEERS        peers to include                (default "centrifugo uws node-ws nchan")
#       HERALD_CF    1 (default): also measure Herald's Centrifugo endpoint; 0: not
#       CF_CONFIG    the Centrifugo config both herald-cf and the Centrifugo peer run on
#                    (default tests/perf/peers/centrifugo/config.json; its token secret and
#                    API key are read from it for the generator)
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
# busy_pct
source "$ROOT/tests/perf/lib.sh"
TABLE_ONLY=
if [ "${1:-}" = --table ]; then TABLE_ONLY=${2:?usage: compare.sh --table RESULTS.jsonl}; fi
OUT=${1:-$ROOT/target/perf-$(date +%Y%m%d-%H%M%S)}
[ -n "$TABLE_ONLY" ] || mkdir -p "$OUT"
CONNS_LIST=${CONNS_LIST:-"1000 5000 10000 19000"}
MAX_CONNS=${MAX_CONNS:-19000}
DURATION=${DURATION:-8}
MID=${MID_CONNS:-10000}
CHANNELS=${CHANNELS:-1000}
PEERS=${PEERS:-"centrifugo uws node-ws nchan"}
HERALD_CF=${HERALD_CF:-1}
CF_CONFIG=${CF_CONFIG:-$ROOT/tests/perf/peers/centrifugo/config.json}
PEERS_DIR=${PEERS_DIR:-$ROOT/tests/perf/peers}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PORT_BASE=${PORT_BASE:-19400}
QUIET_PCT=${QUIET_PCT:-25}
QUIET_WAIT=${QUIET_WAIT:-90}
RESULTS=$OUT/results.jsonl

# The tables: one row per run, then one column per server with the issues' figures.
print_tables() {
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
  # Side by side: one column per server, the figures issues #6, #13 and #15 ask for.
  python3 - "$RESULTS" "$MAX_CONNS" "$CONNS_LIST" "$MID" "$CHANNELS" <<'PY'
import json, sys
rows = {}
for l in open(sys.argv[1]):
    if l.strip():
        r = json.loads(l)
        rows[r["label"]] = r
max_conns, conns_list, mid, chans = sys.argv[2], sys.argv[3].split(), sys.argv[4], sys.argv[5]
order = ["herald", "herald-cf", "centrifugo", "uws", "node-ws", "nchan"]
servers = [s for s in order if any(k.startswith(s + " ") for k in rows)]
servers += sorted({k.split(" ")[0] for k in rows} - set(servers))
names = {"herald": "Herald /ws/", "herald-cf": "Herald /connection/websocket", "centrifugo": "Centrifugo v6.9.1",
         "uws": "uWS.js", "node-ws": "Node ws", "nchan": "Nchan"}
def get(srv, scen):
    return rows.get(f"{srv} {scen}")
def n(v, d=0):
    return "-" if v is None else f"{v:,.{d}f}"
def cell(r, what):
    if r is None:
        return "-"
    # Not delivered within the drain (late or lost), duplicates, refused publishes: said so.
    note = ""
    if r.get("lost"):
        note += f"; {r['loss_pct']}% not delivered within the drain"
    if r.get("duplicates"):
        note += f"; {r['duplicates']} duplicates"
    if r.get("publish_errors"):
        note += f"; {r['publish_errors']} publishes refused"
    cpu = r.get("server_cpu_pct")
    if what == "rss":
        open_ = r.get("open_at_end")
        extra = "" if str(open_) == max_conns else f" ({open_} open)"
        return n(r.get("rss_per_conn_bytes")) + " B" + extra
    if what == "conn":
        return n(r.get("connects_per_s"))
    if what == "deliv":
        # Per second of server CPU as well: on a shared machine the server rarely has its
        # whole core, and this figure moves less with the others' load.
        per = n(r["deliveries_per_s"] / cpu * 100) if cpu else "-"
        return f"{n(r.get('deliveries_per_s'))} ({n(cpu)}% CPU, {per} per CPU-s{note})"
    if what == "lat":
        l = r["latency_ms"]
        return f"{n(l['p50'], 1)} / {n(l['p99'], 1)}" + (f" ({note[2:]})" if note else "")
lines = [("RSS per idle connection, " + max_conns + " open", f"idle ws x{max_conns}", "rss"),
         ("connects/s (" + max_conns + ")", f"idle ws x{max_conns}", "conn")]
for c in conns_list:
    lines.append((f"deliveries/s, 1 channel, {c} subscribers", f"fanout ws x{c} max-rate", "deliv"))
lines += [(f"deliveries/s, {chans} channels, {mid} subscribers", f"{chans}ch ws x{mid} max-rate", "deliv"),
          (f"p50 / p99 ms at 2 publishes/s, {mid} subscribers", f"fanout ws x{mid} 2/s", "lat")]
print()
print("| " + " | ".join(["100-byte messages"] + [names.get(s, s) for s in servers]) + " |")
print("|" + "---|" * (len(servers) + 1))
for title, scen, what in lines:
    print("| " + " | ".join([title] + [cell(get(s, scen), what) for s in servers]) + " |")
pubs = [(k, r) for k, r in rows.items() if " pubrate " in k]
if pubs:
    print()
    print(f"| publishes/s over HTTP, keep-alive, {chans} channels x 1 subscriber | publishes/s | server CPU | per CPU-s | errors |")
    print("|---|---|---|---|---|")
    for k, r in pubs:
        cpu = r.get("server_cpu_pct")
        per = n(r["publishes_per_s"] / cpu * 100) if cpu else "-"
        print(f"| {k} | {n(r.get('publishes_per_s'))} | {n(cpu)}% | {per} | {r.get('publish_errors')} |")
# Issue #15's targets: Herald against Centrifugo.
c = "centrifugo"
if c in servers:
    print()
    for h in [s for s in ("herald-cf", "herald") if s in servers]:
        def ratio(scen, key, inv=False):
            a, b = get(h, scen), get(c, scen)
            if not a or not b or not a.get(key) or not b.get(key):
                return None
            return b[key] / a[key] if inv else a[key] / b[key]
        mem = ratio(f"idle ws x{max_conns}", "rss_per_conn_bytes", inv=True)
        dl = ratio(f"fanout ws x{mid} max-rate", "deliveries_per_s")
        a, b = get(h, f"fanout ws x{mid} max-rate"), get(c, f"fanout ws x{mid} max-rate")
        dl_cpu = None
        if a and b and a.get("server_cpu_pct") and b.get("server_cpu_pct") and b["deliveries_per_s"]:
            dl_cpu = (a["deliveries_per_s"] / a["server_cpu_pct"]) / (b["deliveries_per_s"] / b["server_cpu_pct"])
        a, b = get(h, f"fanout ws x{mid} 2/s"), get(c, f"fanout ws x{mid} 2/s")
        p99 = (a["latency_ms"]["p99"], b["latency_ms"]["p99"]) if a and b else None
        v = lambda ok: "met" if ok else "NOT met"
        print(f"{names[h]} vs Centrifugo:")
        if mem:
            print(f"  memory per idle connection: Centrifugo's is {mem:.1f}x Herald's (target >= 20x): {v(mem >= 20)}")
        if dl:
            per = f"; per second of server CPU {dl_cpu:.2f}x" if dl_cpu else ""
            print(f"  deliveries/s at {mid} subscribers (1 channel): {dl:.2f}x Centrifugo's{per} (target >= 3x): {v(dl >= 3)}")
        if p99:
            print(f"  p99 at 2 publishes/s: {p99[0]:.1f} vs {p99[1]:.1f} ms (target: lower): {v(p99[0] < p99[1])}")
PY
else
  cat "$RESULTS"
fi
}

if [ -n "$TABLE_ONLY" ]; then
  RESULTS=$TABLE_ONLY
  print_tables
  exit 0
fi
: > "$RESULTS"

echo "building herald and herald-load (release)..." >&2
# herald-load lives in the workspace's tool crate (benches/load); both land in target/release.
cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-load >&2 || exit 1
TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
BIN=${TARGET_DIR:-$ROOT/target}/release

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

start_herald() { # PORT [HERALD ARGS...] -> PID
  local port=$1 log=$OUT/herald-$1.log; shift
  taskset -c "$SERVER_CPU" "$BIN/herald" --bind 127.0.0.1 --port "$port" --workers 1 --log-level warn "$@" >"$log" 2>&1 &
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

# The scenarios every server gets (WebSocket, 100-byte messages). TARGET_ARGS: the
# generator's --target and whatever that target needs (token secret, API key).
scenarios() { # NAME PID PORT TARGET_ARGS...
  local name=$1 pid=$2 port=$3; shift 3
  local a=("$@" --addr "127.0.0.1:$port" --size 100)
  run_load "$name idle ws x$MAX_CONNS" "$pid" "${a[@]}" --conns "$MAX_CONNS" --duration 0 --settle 3 --connect-timeout 60
  for n in $CONNS_LIST; do
    run_load "$name fanout ws x$n max-rate" "$pid" "${a[@]}" --conns "$n" --rate 0 --duration "$DURATION"
  done
  run_load "$name fanout ws x$MID 2/s" "$pid" "${a[@]}" --conns "$MID" --rate 2 --duration "$DURATION"
  run_load "$name ${CHANNELS}ch ws x$MID max-rate" "$pid" "${a[@]}" --conns "$MID" --channels "$CHANNELS" --rate 0 \
    --window 2000 --duration "$DURATION"
}

# Publishes per second from a backend over HTTP: 1,000 channels with one subscriber each,
# 16 keep-alive publisher connections with 4 requests pipelined on each, as fast as a window
# of 2,000 undelivered messages allows (the server's HTTP path, not the fan-out, is the work).
pubrate() { # LABEL PID PORT TARGET_ARGS...
  local label=$1 pid=$2 port=$3; shift 3
  run_load "$label" "$pid" "$@" --addr "127.0.0.1:$port" --size 100 --conns "$CHANNELS" --channels "$CHANNELS" \
    --rate 0 --window 2000 --pub-conns 16 --pub-pipeline 4 --duration "$DURATION"
}

# The generator's arguments for a Centrifugo server on CF_CONFIG (secret and key from it;
# sed, not a JSON parser, so python is not needed: keep `"hmac_secret_key": "..."` on one
# line and `"http_api": { "key": "..." }` on one line in that file).
cf_args() {
  local secret key
  secret=$(sed -n 's/.*"hmac_secret_key"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$CF_CONFIG" | head -1)
  key=$(sed -n 's/.*"http_api"[^}]*"key"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$CF_CONFIG" | head -1)
  [ -n "$secret" ] && [ -n "$key" ] && echo "--target centrifugo --token-secret $secret --api-key $key"
}

port=$PORT_BASE
# Herald, and its other transports.
pid=$(start_herald $port) || exit 1
scenarios herald "$pid" $port --target herald
pubrate "herald pubrate /publish/ ${CHANNELS}ch x$CHANNELS" "$pid" $port --target herald
for tr in sse longpoll; do
  run_load "herald fanout $tr x$MID max-rate" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns "$MID" --rate 0 --duration "$DURATION"
  run_load "herald fanout $tr x$MID 2/s" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns "$MID" --rate 2 --duration "$DURATION"
  run_load "herald ${CHANNELS}ch $tr x$MID max-rate" "$pid" --target herald --addr "127.0.0.1:$port" --transport $tr \
    --conns "$MID" --channels "$CHANNELS" --rate 0 --window 2000 --duration "$DURATION"
done
stop_pid herald "$pid"

CF=()
if [ "$HERALD_CF" = 1 ] || [[ " $PEERS " == *" centrifugo "* ]]; then
  read -ra CF <<<"$(cf_args)" || true
  [ ${#CF[@]} -gt 0 ] || { echo "cannot read the token secret and API key from $CF_CONFIG" >&2; exit 1; }
fi

# Herald's Centrifugo endpoint, on the Centrifugo peer's config file (Herald names the
# Centrifugo-only websocket keys it ignores in one start-up warning). Centrifugo's settings
# for many connections, in that file and in start-centrifugo.sh (why: tests/perf/peers/README.md):
#   - a HS256 token per subscriber, as production clients connect (anonymous connect off);
#   - websocket.use_write_buffer_pool: true: no write buffer held per idle connection, the
#     documented saving for connections that write little (42.8 vs 49.6 KB per idle
#     connection measured at 5,000); read/write_buffer_size 512 saved nothing more;
#   - client.channel_limit 128 (the default; one channel each here), no history, presence or
#     join/leave (defaults), log level warn (as Herald here);
#   - GOMAXPROCS=1 and the server pinned to one core, like Herald's --workers 1; the
#     open-files soft limit raised to the hard one; Go's GC left at its defaults.
if [ "$HERALD_CF" = 1 ]; then
  port=$((port + 1))
  pid=$(start_herald $port --config "$CF_CONFIG") || exit 1
  scenarios herald-cf "$pid" $port "${CF[@]}"
  pubrate "herald-cf pubrate /api/publish ${CHANNELS}ch x$CHANNELS" "$pid" $port "${CF[@]}"
  pubrate "herald-cf pubrate /publish/ ${CHANNELS}ch x$CHANNELS" "$pid" $port "${CF[@]}" \
    --pub-proto plain --pub-url "http://127.0.0.1:$port/publish/?cid={ch}"
  stop_pid herald "$pid"
fi

if [ -d "$PEERS_DIR" ]; then
  for peer in $PEERS; do
    port=$((port + 1))
    args=(--target "$peer")
    start=("$PEERS_DIR/start-$peer.sh" $port)
    if [ "$peer" = centrifugo ]; then args=("${CF[@]}"); start+=("$CF_CONFIG"); fi
    # Centrifugo's first start builds it with Go (minutes), hence the long timeout.
    pid=$(PEER_CPUS=$SERVER_CPU timeout 900 "${start[@]}" 2>>"$OUT/peers.log" | tail -1)
    if ! [[ "$pid" =~ ^[0-9]+$ ]]; then echo "note: $peer did not start (see $OUT/peers.log); skipped" >&2; continue; fi
    scenarios "$peer" "$pid" $port "${args[@]}"
    [ "$peer" = centrifugo ] && pubrate "centrifugo pubrate /api/publish ${CHANNELS}ch x$CHANNELS" "$pid" $port "${args[@]}"
    stop_pid "$peer" "$pid"
  done
else
  echo "note: $PEERS_DIR not found: peers skipped, Herald measured alone" >&2
fi

print_tables
echo "results: $RESULTS" >&2
