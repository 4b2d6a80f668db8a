#!/usr/bin/env bash
# Compare the running system with tuning/99-herald.conf and the nofile recommendation; print
# what to change. Read-only: it never writes a setting.
# Usage: tuning/check.sh [HERALD_PID]
set -u
DIR=$(cd "$(dirname "$0")" && pwd)
bad=0
# want KEY OP VALUE...: OP ge = every field at least the recommended one; le = at most; eq.
check() {
  local key=$1 op=$2; shift 2
  local want=("$@") path
  path=/proc/sys/$(echo "$key" | tr . /)
  if [ ! -r "$path" ]; then printf '  ?   %-34s not readable here\n' "$key"; return; fi
  local have=($(cat "$path")) i ok=1
  for i in "${!want[@]}"; do
    local h=${have[$i]:-0} w=${want[$i]}
    case $op in
      ge) [ "$h" -ge "$w" ] || ok=0 ;;
      le) [ "$h" -le "$w" ] || ok=0 ;;
      eq) [ "$h" -eq "$w" ] || ok=0 ;;
    esac
  done
  if [ $ok = 1 ]; then
    printf '  ok  %-34s %s\n' "$key" "${have[*]}"
  else
    printf '  FIX %-34s is %s, recommended %s  ->  sysctl -w %s="%s"\n' "$key" "${have[*]}" "${want[*]}" "$key" "${want[*]}"
    bad=$((bad + 1))
  fi
}
echo "kernel (recommendations from $DIR/99-herald.conf):"
check net.core.somaxconn ge 65535
check net.ipv4.tcp_max_syn_backlog ge 65535
check net.core.netdev_max_backlog ge 16384
check fs.file-max ge 4194304
check fs.nr_open ge 2097152
check net.ipv4.tcp_mem ge 786432 1572864 3145728
# Buffers (net.ipv4.tcp_rmem, net.ipv4.tcp_wmem): the default (middle) size is checked: it bounds what an
# idle-then-busy socket grows to before autotuning, and so kernel memory per connection
# under bursts. The suggestion is 99-herald.conf's whole line, so the two never disagree.
conf_value() { sed -n "s/^$1[[:space:]]*=[[:space:]]*//p" "$DIR/99-herald.conf" | tr -s ' \t' ' '; }
for k in tcp_rmem tcp_wmem; do
  v=($(cat /proc/sys/net/ipv4/$k 2>/dev/null)) rec=$(conf_value "net.ipv4.$k")
  r=($rec)
  if [ "${v[1]:-0}" -le "${r[1]}" ]; then printf '  ok  %-34s %s\n' net.ipv4.$k "${v[*]}"
  else printf '  FIX %-34s is %s, recommended %s  ->  sysctl -w net.ipv4.%s="%s"\n' \
    net.ipv4.$k "${v[*]}" "$rec" $k "$rec"; bad=$((bad + 1)); fi
done
check net.ipv4.tcp_tw_reuse ge 1
check net.ipv4.tcp_fin_timeout le 15
check net.ipv4.tcp_keepalive_time le 600
# Port range: the span matters (outgoing connections per destination and source address).
if r=($(cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null)); then
  span=$(( r[1] - r[0] + 1 ))
  if [ "$span" -ge 60000 ]; then printf '  ok  %-34s %s (%d ports)\n' net.ipv4.ip_local_port_range "${r[*]}" "$span"
  else printf '  FIX %-34s %s (%d ports), recommended 1024 65535  ->  sysctl -w net.ipv4.ip_local_port_range="1024 65535"\n' \
    net.ipv4.ip_local_port_range "${r[*]}" "$span"; bad=$((bad + 1)); fi
fi
# Every key of 99-herald.conf must be checked above: a setting added there and not here
# would go unreported.
for k in $(sed -n 's/^\([a-z][a-z0-9_.]*\)[[:space:]]*=.*/\1/p' "$DIR/99-herald.conf"); do
  grep -q "$k" "$0" || { printf '  ??  %-34s in 99-herald.conf but not checked by this script\n' "$k"; bad=$((bad + 1)); }
done
echo "open files:"
soft=$(ulimit -Sn) hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 1048576 ]; then
  printf '  ok  %-34s soft %s hard %s (herald raises soft to hard)\n' "this shell's nofile" "$soft" "$hard"
else
  printf '  FIX %-34s soft %s hard %s: each connection is a descriptor; set LimitNOFILE=1048576 (herald.service) or limits.conf\n' \
    "this shell's nofile" "$soft" "$hard"; bad=$((bad + 1))
fi
if [ -n "${1:-}" ] && [ -r "/proc/$1/limits" ]; then
  l=$(grep 'Max open files' "/proc/$1/limits" | awk '{print $4, $5}')
  printf '  --  %-34s %s (soft hard)\n' "herald pid $1 nofile" "$l"
  n=$(ls "/proc/$1/fd" 2>/dev/null | wc -l); printf '  --  %-34s %s\n' "descriptors in use" "$n"
fi
echo "current TCP use (/proc/net/sockstat):"
grep -E '^(TCP|sockets):' /proc/net/sockstat | sed 's/^/      /'
echo "      (mem is in pages of $(getconf PAGESIZE) bytes; compare with tcp_mem above)"
if [ $bad -eq 0 ]; then echo "all recommendations met"; else echo "$bad setting(s) to change, counting nofile (see tuning/README.md for why)"; fi
exit 0
