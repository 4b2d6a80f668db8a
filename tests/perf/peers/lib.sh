# Helpers shared by the peer start scripts in tests/perf/peers/ (sourced, not run).
#
# Contract of every start-<peer>.sh PORT:
#   - install what the peer needs, idempotently, into $PEERS_CACHE (outside the repo);
#   - start the server on 127.0.0.1:PORT in the background (pinned with `taskset -c
#     $PEER_CPUS` when PEER_CPUS is set), with the open-files soft limit raised to the hard one;
#   - wait until the port accepts connections, then print the server's PID as the last line
#     of stdout (everything else goes to stderr). Stop it with `stop.sh PID`.
#
# Env:
#   PEER_CPUS         CPU list for taskset (e.g. 0); unset = not pinned
#   PEERS_CACHE       install/log root (default ${XDG_CACHE_HOME:-$HOME/.cache}/herald-perf-peers)
#   PEER_START_WAIT   seconds to wait for the port (default 30)
set -euo pipefail

PEERS_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS_CACHE="${PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/herald-perf-peers}"
PEERS_LOGS="$PEERS_CACHE/logs"
mkdir -p "$PEERS_LOGS"

say() { echo "[peers] $*" >&2; }
die() { say "error: $*"; exit 1; }

# check_port PORT: a valid port that nothing on 127.0.0.1 is listening on yet (so the process
# that answers later is ours, not a leftover).
check_port() {
  local port=$1
  [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || die "bad port '$port'"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port already accepts connections (another server?)"
  fi
}

# raise_nofile: raise this shell's open-files soft limit to the hard limit (each subscriber is
# a descriptor; the server inherits the limit). Sets PEER_NOFILE to the resulting soft limit.
raise_nofile() {
  local hard
  hard=$(ulimit -Hn)
  ulimit -Sn "$hard" 2>/dev/null || say "could not raise the open-files soft limit to $hard"
  PEER_NOFILE=$(ulimit -Sn)
}

# pinned CMD...: run CMD (exec'd, so the PID stays the same) under taskset when PEER_CPUS is set.
pinned() {
  if [ -n "${PEER_CPUS:-}" ]; then
    command -v taskset >/dev/null || die "PEER_CPUS is set but taskset is missing (util-linux)"
    exec taskset -c "$PEER_CPUS" "$@"
  fi
  exec "$@"
}

# wait_ready PID PORT LOG: wait until 127.0.0.1:PORT accepts while PID is still alive.
wait_ready() {
  local pid=$1 port=$2 log=$3 deadline=$((SECONDS + ${PEER_START_WAIT:-30}))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      say "server (pid $pid) exited before opening port $port; last lines of $log:"
      tail -n 20 "$log" >&2 || true
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  say "port $port not open after ${PEER_START_WAIT:-30} s; stopping pid $pid (log: $log)"
  "$PEERS_SRC/stop.sh" "$pid" >&2 || true
  return 1
}

# launch NAME PORT CMD...: start CMD in the background (pinned, with the raised limit),
# output appended to $PEERS_LOGS/NAME-PORT.log; waits for the port and prints the PID.
launch() {
  local name=$1 port=$2; shift 2
  local log="$PEERS_LOGS/$name-$port.log"
  raise_nofile
  echo "=== $(date '+%F %T') $name on 127.0.0.1:$port (nofile $PEER_NOFILE, cpus ${PEER_CPUS:-any}): $*" >>"$log"
  # The subshell execs the server (through taskset, which execs too), so $! is its PID.
  (pinned "$@") </dev/null >>"$log" 2>&1 &
  local pid=$!
  wait_ready "$pid" "$port" "$log" || exit 1
  say "$name listening on 127.0.0.1:$port, pid $pid, log $log"
  echo "$pid"
}

# node_deps NAME: install tests/perf/peers/NAME/package-lock.json into $PEERS_CACHE/NAME
# with `npm ci` (exact versions from the lock file; install scripts skipped: neither peer
# needs a build step). Skipped when that lock file is already installed. Prints the
# node_modules directory.
node_deps() {
  local name=$1 src="$PEERS_SRC/$1" dir="$PEERS_CACHE/$1"
  command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for $name"
  local want have=""
  want=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -d' ' -f1)
  [ -f "$dir/.installed" ] && have=$(cat "$dir/.installed")
  if [ "$want" != "$have" ] || [ ! -d "$dir/node_modules" ]; then
    say "installing $name dependencies into $dir (npm ci)"
    mkdir -p "$dir"
    rm -f "$dir/.installed"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >&2 \
      || die "npm ci failed for $name"
    echo "$want" >"$dir/.installed"
  fi
  echo "$dir/node_modules"
}
