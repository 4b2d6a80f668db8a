#!/usr/bin/env bash
# Stop one server started by a start-*.sh script here.
# Usage: stop.sh PID [GRACE_SECONDS]
# Sends SIGTERM to that PID only (nginx's master stops its own workers), waits up to
# GRACE_SECONDS (default 10) for it to exit, then sends SIGKILL. Exits 0 once it is gone.
set -uo pipefail
pid=${1:?usage: stop.sh PID [GRACE_SECONDS]}
grace=${2:-10}
[[ "$pid" =~ ^[0-9]+$ ]] && [ "$pid" -gt 1 ] || { echo "stop.sh: bad pid '$pid'" >&2; exit 2; }
# Gone: no such process, or a zombie waiting for its parent (it has exited already).
gone() {
  kill -0 "$pid" 2>/dev/null || return 0
  local stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat%% *}" = Z ]
}
gone && exit 0
kill -TERM "$pid" 2>/dev/null || exit 0
end=$((SECONDS + grace))
while [ "$SECONDS" -lt "$end" ]; do
  gone && exit 0
  sleep 0.1
done
echo "stop.sh: pid $pid still running after ${grace}s, sending SIGKILL" >&2
kill -KILL "$pid" 2>/dev/null
for _ in $(seq 1 50); do gone && exit 0; sleep 0.1; done
echo "stop.sh: pid $pid did not exit" >&2
exit 1
