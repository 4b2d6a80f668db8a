# Helpers shared by the benchmark scripts in tests/perf (sourced, not run).

# Percent of all CPUs busy over one second (from /proc/stat): other work on the machine
# skews every figure, so the scripts wait for a quiet machine and record this with each run.
busy_pct() {
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local idle=$(( (b[4]+b[5]) - (a[4]+a[5]) )) total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
