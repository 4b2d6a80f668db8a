#!/usr/bin/env bash
# Soak test of Herald: thousands of churning subscribers (WebSocket, SSE, long-poll) against
# a herald this starts itself, with a steady publisher; checks every subscriber got every id
# exactly once and that the server's RSS and descriptors come back after everyone leaves.
# NOT part of CI (it runs for minutes). See tests/soak/README.md.
#
#   tests/soak/run.sh [--minutes N] [--subscribers N] [--channels N] [herald-soak flags...]
#
# Defaults: 10 minutes, 5000 subscribers, 50 channels, 200 msg/s. Exit status: 0 PASS,
# 1 FAIL, 2 usage/start-up error, 3 watchdog. Every run is bounded in time and stops by
# itself; the only process it ends is the herald it started (by PID).
set -euo pipefail

cd "$(dirname "$0")/../.."
MINUTES=10
SUBSCRIBERS=5000
CHANNELS=50
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) MINUTES="$2"; shift 2 ;;
        --subscribers) SUBSCRIBERS="$2"; shift 2 ;;
        --channels) CHANNELS="$2"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) EXTRA+=("$1"); shift ;;
    esac
done

TARGET="${CARGO_TARGET_DIR:-target}"
# herald-soak lives in the workspace's tool crate (benches/load); both land in $TARGET/release.
cargo build --release -p herald -p herald-bench-tools --bin herald --bin herald-soak >&2

# Each subscriber is a descriptor in this process (and one in herald's).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

OUT="${SOAK_OUT:-$TARGET/soak}"
mkdir -p "$OUT"
STAMP="$(date +%Y%m%d-%H%M%S)"
echo "soak: ${MINUTES} min, ${SUBSCRIBERS} subscribers, ${CHANNELS} channels; progress below, summary in $OUT/soak-$STAMP.json" >&2
set +e
"$TARGET/release/herald-soak" --herald "$TARGET/release/herald" \
    --minutes "$MINUTES" --subscribers "$SUBSCRIBERS" --channels "$CHANNELS" \
    --herald-log "$OUT/herald-$STAMP.log" --json "${EXTRA[@]}" | tee "$OUT/soak-$STAMP.json"
rc=${PIPESTATUS[0]}
set -e
exit "$rc"
