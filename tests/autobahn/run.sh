#!/usr/bin/env bash
# Herald's Autobahn|Testsuite runner (WebSocket protocol conformance, RFC 6455).
#
# Usage:
#   tests/autobahn/run.sh [--cases "1.*,2.*"] [--exclude "12.*,13.*"]
#                         [--server-bin PATH | --url ws://127.0.0.1:PORT/echo]
#                         [--server-config FILE] [--timeout SECONDS] [--no-build]
#                         [--tls] [--install-only]
#
#   --cases LIST      comma-separated Autobahn case ids or patterns (default "*")
#   --exclude LIST    comma-separated patterns to skip (default none: every group, the
#                     permessage-deflate groups 12 and 13 included; herald.json enables
#                     ws_compression for them).
#   --server-bin PATH herald binary to start instead of building target/release/herald
#   --server-config F pass `--config F` (herald's JSON config) to the started server,
#                     e.g. to raise ws_max_message/ws_max_frame for the 9.* cases
#   --no-build        do not run `cargo build --release` before starting the server
#   --url URL         test an already running echo endpoint instead of starting one
#                     (ws:// or wss://, loopback addresses only: 127.0.0.0/8, localhost, [::1])
#   --tls             over TLS: make a self-signed certificate (openssl CLI) in the report
#                     directory, start herald with http_server.tls on (added to the server
#                     config) and run the cases against wss://127.0.0.1:PORT/echo. wstest's
#                     client (Twisted + pyOpenSSL, installed with the suite) does not verify
#                     the certificate.
#   --timeout SECS    limit for the wstest run (default 1800, env HERALD_AUTOBAHN_TIMEOUT)
#   --install-only    only install (or check) the cached suite, then exit
#
# Without --url the script picks a free loopback port, starts
#   herald --bind 127.0.0.1 --port PORT --workers 1
# waits until GET /health answers 200, runs `wstest -m fuzzingclient` against
# ws://127.0.0.1:PORT/echo and stops that one server process (by its PID) on exit.
#
# Reports: target/autobahn/<UTC time>/ (index.html, index.json, one file per case,
# wstest.log, herald.log), with target/autobahn/latest pointing at the newest run.
# Exit status: 0 = no case FAILED, 1 = some case FAILED, 2 = setup/run error.
#
# Installation (once, cached in ${XDG_CACHE_HOME:-$HOME/.cache}/herald-autobahn):
# autobahntestsuite 25.10.1 is Python 2.7 code; Debian 12 has no Python 2. So PyPy 2.7
# and the two libraries it needs that Debian 12 dropped (OpenSSL 1.1, libffi 7) are
# downloaded as Debian 11 (bullseye) packages with a private apt state (the system apt
# configuration is left alone), unpacked with dpkg-deb -x, and the suite is pip-installed
# into that PyPy with pins that still support Python 2.7. See tests/autobahn/README.md.
set -euo pipefail

SELF_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$SELF_DIR/../.." && pwd)"
SUITE_VERSION="25.10.1"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/herald-autobahn"
PREFIX="$CACHE/pypy2-$SUITE_VERSION"
SYSROOT="$PREFIX/root"
PYPY="$SYSROOT/usr/lib/pypy/bin/pypy-c"
READY_MARK="$PREFIX/.ready"
WSTEST="$PREFIX/bin/wstest"

say()  { printf '[autobahn] %s\n' "$*" >&2; }
die()  { say "error: $*"; exit 2; }
usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}" >&2; }

# ---------------------------------------------------------------- arguments
CASES="*"
EXCLUDE=""
SERVER_BIN=""
SERVER_CONFIG=""
URL=""
BUILD=1
TLS=0
INSTALL_ONLY=0
RUN_TIMEOUT="${HERALD_AUTOBAHN_TIMEOUT:-1800}"
while [ $# -gt 0 ]; do
  case "$1" in
    --cases)        CASES="${2?--cases needs a value}"; shift 2 ;;
    --cases=*)      CASES="${1#*=}"; shift ;;
    --exclude)      EXCLUDE="${2?--exclude needs a value}"; shift 2 ;;
    --exclude=*)    EXCLUDE="${1#*=}"; shift ;;
    --server-bin)   SERVER_BIN="${2?--server-bin needs a value}"; shift 2 ;;
    --server-bin=*) SERVER_BIN="${1#*=}"; shift ;;
    --server-config)   SERVER_CONFIG="${2?--server-config needs a value}"; shift 2 ;;
    --server-config=*) SERVER_CONFIG="${1#*=}"; shift ;;
    --url)          URL="${2?--url needs a value}"; shift 2 ;;
    --url=*)        URL="${1#*=}"; shift ;;
    --timeout)      RUN_TIMEOUT="${2?--timeout needs a value}"; shift 2 ;;
    --timeout=*)    RUN_TIMEOUT="${1#*=}"; shift ;;
    --no-build)     BUILD=0; shift ;;
    --tls)          TLS=1; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    -h|--help)      usage; exit 0 ;;
    *)              usage; die "unknown argument: $1" ;;
  esac
done
[ "$EXCLUDE" = "none" ] && EXCLUDE=""
[[ "$RUN_TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[ -n "$URL" ] && [ -n "$SERVER_BIN$SERVER_CONFIG" ] && die "--url excludes --server-bin and --server-config"
[ -n "$URL" ] && [ "$TLS" = 1 ] && die "--url excludes --tls (pass a wss:// URL instead)"
# Default: the conformance config beside this script (Autobahn group 9 sends 16 MiB
# messages, above herald's 1 MiB default limit).
if [ -z "$URL" ] && [ -z "$SERVER_CONFIG" ]; then
  SERVER_CONFIG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/herald.json"
fi
if [ -n "$SERVER_CONFIG" ]; then
  [ -f "$SERVER_CONFIG" ] || die "--server-config: no such file: $SERVER_CONFIG"
  SERVER_CONFIG="$(cd "$(dirname "$SERVER_CONFIG")" && pwd)/$(basename "$SERVER_CONFIG")"
fi

is_loopback_url() {
  python3 - "$1" <<'EOF'
import ipaddress, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
ok = False
if u.scheme in ("ws", "wss") and u.hostname:
    if u.hostname == "localhost":
        ok = True
    else:
        try:
            ok = ipaddress.ip_address(u.hostname).is_loopback
        except ValueError:
            ok = False
sys.exit(0 if ok else 1)
EOF
}
if [ -n "$URL" ]; then
  is_loopback_url "$URL" || die "--url must be a ws:// or wss:// URL on a loopback address, got: $URL"
fi

# ---------------------------------------------------------------- install
bullseye_mirror() {
  # Reuse the Debian mirror that this machine's apt already uses (first non-security URI).
  local f uri=""
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk '$1=="URIs:" { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [ -f "$f" ] || continue
      uri=$(awk '$1=="deb" && !/security/ { for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' "$f")
      [ -n "$uri" ] && break
    done
  fi
  [ -n "$uri" ] || die "no Debian mirror configured in /etc/apt"
  printf '%s\n' "$uri"
}

do_install() {
  for tool in apt-get dpkg-deb cc python3 timeout; do
    command -v "$tool" >/dev/null || die "installing the suite needs '$tool'"
  done
  say "installing Autobahn|Testsuite $SUITE_VERSION (PyPy 2.7) into $PREFIX; one time, a few minutes"
  rm -rf "$PREFIX"
  local apt="$PREFIX/apt"
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$PREFIX/debs" "$PREFIX/wheels" "$SYSROOT" "$PREFIX/bin"
  : > "$apt/status"
  printf 'deb %s bullseye main\n' "$(bullseye_mirror)" > "$apt/sources.list"
  local -a aptcfg=(
    -q -o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
    -o "Dir::Cache=$apt" -o "Dir::Cache::archives=$apt/archives" -o "APT::Sandbox::User=root"
  )
  timeout 600 apt-get "${aptcfg[@]}" update >&2
  (cd "$PREFIX/debs" && timeout 600 apt-get "${aptcfg[@]}" download \
      pypy pypy-lib pypy-dev libffi7 libssl1.1 libssl-dev >&2)
  local deb
  for deb in "$PREFIX"/debs/*.deb; do dpkg-deb -x "$deb" "$SYSROOT"; done
  rm -rf "$apt" "$PREFIX/debs"

  local libs="$SYSROOT/usr/lib:$SYSROOT/usr/lib/x86_64-linux-gnu"
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  "$PYPY" -c 'import sys, ssl; assert sys.version_info[:2] == (2, 7)' || die "PyPy 2.7 does not start"

  # Last pip/setuptools/wheel releases that run on Python 2.7, fetched by the system pip.
  timeout 600 python3 -m pip download -q --no-deps --only-binary=:all: --python-version 2.7 \
    --implementation py --abi none --platform any -d "$PREFIX/wheels" \
    pip==20.3.4 setuptools==44.0.0 wheel==0.37.1 >&2
  # Debian's PyPy keeps byte code in __pycache__/, which pip 20 on Python 2 trips over:
  # disable byte-compiling (pip reads PIP_NO_COMPILE=0 as --no-compile).
  export PIP_NO_COMPILE=0 PIP_DISABLE_PIP_VERSION_CHECK=1
  unset PIP_FIND_LINKS
  "$PYPY" "$PREFIX/wheels/pip-20.3.4-py2.py3-none-any.whl/pip" install -q --no-index \
    --no-warn-script-location --find-links "$PREFIX/wheels" pip setuptools wheel >&2
  # Twisted's setup_requires would otherwise pull a Python-3-only 'incremental'.
  timeout 900 "$PYPY" -m pip install -q --no-warn-script-location \
    incremental==16.10.1 six==1.16.0 typing==3.10.0.0 >&2
  # Pins: the suite's own requirements, restricted to releases that still support 2.7.
  CFLAGS="-I$SYSROOT/usr/include -I$SYSROOT/usr/include/x86_64-linux-gnu" \
  LDFLAGS="-L$SYSROOT/usr/lib/x86_64-linux-gnu -L$SYSROOT/usr/lib" \
  timeout 1200 "$PYPY" -m pip install -q --no-warn-script-location \
    txaio==2.1.0 pyOpenSSL==19.1.0 cryptography==3.3.2 Twisted==19.10.0 \
    zope.interface==4.6.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 \
    service_identity==18.1.0 unittest2==1.1.0 "autobahn[twisted]==0.10.9" \
    "autobahntestsuite==$SUITE_VERSION" >&2

  # A small launcher so `wstest` can be run by hand too.
  cat > "$WSTEST" <<EOF
#!/bin/sh
# wstest from Autobahn|Testsuite $SUITE_VERSION on a private PyPy 2.7 (installed by herald's tests/autobahn/run.sh)
LD_LIBRARY_PATH="$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
exec "$PYPY" -c 'import sys; from autobahntestsuite.wstest import run; sys.argv[0] = "wstest"; sys.exit(run())' "\$@"
EOF
  chmod +x "$WSTEST"
  "$PYPY" -c 'import autobahntestsuite as t, autobahn as a; print("installed autobahntestsuite %s, autobahn %s" % (t.__version__, a.__version__))' >&2
  touch "$READY_MARK"
}

ensure_suite() {
  mkdir -p "$CACHE"
  # One installer at a time; a second caller waits, then sees the ready mark.
  exec 9>"$CACHE/.install.lock"
  flock -w 1800 9 || die "timed out waiting for another install to finish"
  if [ -f "$READY_MARK" ] && [ -x "$PYPY" ] && [ -x "$WSTEST" ]; then
    :
  else
    local t0=$SECONDS
    do_install
    say "install took $((SECONDS - t0)) s"
  fi
  flock -u 9
  "$WSTEST" --help >/dev/null 2>&1 || die "installed wstest does not start ($WSTEST --help); delete $PREFIX to reinstall"
}

ensure_suite
if [ "$INSTALL_ONLY" = 1 ]; then
  say "suite ready: $WSTEST"
  exit 0
fi

# ---------------------------------------------------------------- server

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
RUN_ID="$(date -u +%Y%m%d-%H%M%S)"
REPORT_DIR="$ROOT/target/autobahn/$RUN_ID"
mkdir -p "$REPORT_DIR"
ln -sfn "$RUN_ID" "$ROOT/target/autobahn/latest"

SERVER_PID=""
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      say "herald (pid $SERVER_PID) ignored SIGTERM; sending SIGKILL"
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
  fi
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "$URL" ]; then
  python3 - "$URL" <<'EOF2' || die "nothing accepts connections at $URL"
import socket, sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
try:
    socket.create_connection((u.hostname, u.port or (443 if u.scheme == "wss" else 80)), timeout=3).close()
except OSError as e:
    sys.exit(str(e))
EOF2
else
  if [ -z "$SERVER_BIN" ]; then
    SERVER_BIN="$TARGET_DIR/release/herald"
    if [ "$BUILD" = 1 ]; then
      say "cargo build --release"
      (cd "$ROOT" && cargo build --release) >&2 || die "cargo build --release failed"
    fi
  fi
  [ -x "$SERVER_BIN" ] || die "server binary not found or not executable: $SERVER_BIN"
  PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  SERVER_ARGS=(--bind 127.0.0.1 --port "$PORT" --workers 1)
  SCHEME=http
  if [ "$TLS" = 1 ]; then
    command -v openssl >/dev/null || die "--tls needs the openssl CLI"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
      -keyout "$REPORT_DIR/tls-key.pem" -out "$REPORT_DIR/tls-cert.pem" -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1 2>/dev/null || die "openssl could not make a certificate"
    python3 - "$SERVER_CONFIG" "$REPORT_DIR" > "$REPORT_DIR/herald-tls.json" <<'EOF3'
import json, sys
cfg = json.load(open(sys.argv[1])) if sys.argv[1] else {}
d = sys.argv[2]
cfg.setdefault("http_server", {})["tls"] = {
    "enabled": True, "cert_pem_file": d + "/tls-cert.pem", "key_pem_file": d + "/tls-key.pem"}
json.dump(cfg, sys.stdout, indent=2)
EOF3
    SERVER_CONFIG="$REPORT_DIR/herald-tls.json"
    SCHEME=https
  fi
  [ -n "$SERVER_CONFIG" ] && SERVER_ARGS+=(--config "$SERVER_CONFIG")
  say "starting $SERVER_BIN ${SERVER_ARGS[*]} (log: $REPORT_DIR/herald.log)"
  "$SERVER_BIN" "${SERVER_ARGS[@]}" > "$REPORT_DIR/herald.log" 2>&1 &
  SERVER_PID=$!
  ready=0
  for _ in $(seq 1 150); do          # up to ~30 s
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      wait "$SERVER_PID" 2>/dev/null && rc=0 || rc=$?
      SERVER_PID=""
      tail -n 20 "$REPORT_DIR/herald.log" >&2 || true
      die "herald exited (status $rc) before answering /health"
    fi
    code="$(curl -s -k -o /dev/null -m 2 -w '%{http_code}' "$SCHEME://127.0.0.1:$PORT/health" || true)"
    if [ "$code" = 200 ]; then ready=1; break; fi
    sleep 0.2
  done
  [ "$ready" = 1 ] || die "herald did not answer GET /health with 200 within 30 s (last: ${code:-none})"
  URL="ws://127.0.0.1:$PORT/echo"
  [ "$TLS" = 1 ] && URL="wss://127.0.0.1:$PORT/echo"
fi

# ---------------------------------------------------------------- run
AGENT="herald"
python3 "$SELF_DIR/spec.py" "$URL" "$AGENT" "$REPORT_DIR" "$CASES" "$EXCLUDE" > "$REPORT_DIR/fuzzingclient.json"
say "fuzzingclient -> $URL  cases=[$CASES] exclude=[${EXCLUDE:-none}] timeout=${RUN_TIMEOUT}s"
say "report dir: $REPORT_DIR"
t0=$SECONDS
set +e
(cd "$REPORT_DIR" && timeout --kill-after=10 "$RUN_TIMEOUT" "$WSTEST" -m fuzzingclient -s fuzzingclient.json) \
  > "$REPORT_DIR/wstest.log" 2>&1
WSTEST_RC=$?
set -e
ELAPSED=$((SECONDS - t0))
[ "$WSTEST_RC" = 124 ] && say "wstest hit the ${RUN_TIMEOUT}s time limit"
say "wstest exited $WSTEST_RC after ${ELAPSED}s (log: $REPORT_DIR/wstest.log)"
if [ -n "$SERVER_PID" ] && ! kill -0 "$SERVER_PID" 2>/dev/null; then
  say "warning: herald (pid $SERVER_PID) is no longer running; see $REPORT_DIR/herald.log"
fi
stop_server

set +e
python3 "$SELF_DIR/summarize.py" "$REPORT_DIR" "$AGENT" "$ELAPSED" "$WSTEST_RC"
RC=$?
set -e
exit "$RC"
