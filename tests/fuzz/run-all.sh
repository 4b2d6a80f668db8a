#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the other, and
# prints a summary line per target. Bounded: total time is about SECONDS x targets, plus
# one build.
#
#   tests/fuzz/run-all.sh [SECONDS] [TARGET...]      (default 600 s = 10 minutes each)
#   JOBS=2 tests/fuzz/run-all.sh 120                  (two targets at a time)
#
# New corpus entries go to tests/fuzz/corpus/<target>/ (git-ignored); the seeds in
# tests/fuzz/seeds/<target>/ are read, never written. Crashes land in
# tests/fuzz/artifacts/<target>/ (git-ignored): copy the input into
# tests/fuzz/crashes/<target>/ so tests/fuzz_regressions.rs keeps replaying it.
# Logs: tests/fuzz/logs/<target>.log (git-ignored). Exit status: non-zero if any target
# found a crash or failed to run.
set -uo pipefail

SECONDS_EACH=${1:-600}
shift || true
FUZZ_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$FUZZ_DIR/../.." && pwd)
cd "$ROOT"
ALL=(http_head chunked ws_decoder ws_deflate utf8 query channel sse since cf_command cf_token cf_config)
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=("${ALL[@]}")
JOBS=${JOBS:-1}

# cargo-fuzz needs nightly features (-Zsanitizer, sanitizer-coverage). Use a nightly
# toolchain when rustup has one, else the stable one with RUSTC_BOOTSTRAP=1.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    CARGO=(cargo +nightly)
else
    export RUSTC_BOOTSTRAP=1
    CARGO=(cargo)
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2; exit 2; }

"${CARGO[@]}" fuzz build --fuzz-dir "$FUZZ_DIR" || exit 2
mkdir -p "$FUZZ_DIR/logs"

run_one() {
    local t=$1
    mkdir -p "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/artifacts/$t"
    # -rss_limit_mb / -timeout: a target that allocates wildly or hangs is a finding too.
    timeout $((SECONDS_EACH + 300)) "${CARGO[@]}" fuzz run --fuzz-dir "$FUZZ_DIR" "$t" \
        "$FUZZ_DIR/corpus/$t" "$FUZZ_DIR/seeds/$t" -- \
        -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        >"$FUZZ_DIR/logs/$t.log" 2>&1
    local rc=$?
    local runs cov
    runs=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$FUZZ_DIR/logs/$t.log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$FUZZ_DIR/logs/$t.log" | tail -1)
    if [ $rc -eq 0 ]; then
        echo "$t: ok, ${runs:-?}s, ${cov:-?}"
    else
        echo "$t: FAILED (exit $rc), ${runs:-no final stats}, ${cov:-?}; see tests/fuzz/logs/$t.log and tests/fuzz/artifacts/$t/"
    fi
    return $rc
}

status=0
if [ "$JOBS" -le 1 ]; then
    for t in "${TARGETS[@]}"; do
        run_one "$t" || status=1
    done
else
    # Simple batches of JOBS targets.
    for ((i = 0; i < ${#TARGETS[@]}; i += JOBS)); do
        pids=()
        for t in "${TARGETS[@]:i:JOBS}"; do
            run_one "$t" &
            pids+=($!)
        done
        for p in "${pids[@]}"; do
            wait "$p" || status=1
        done
    done
fi
exit $status
