#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: imbang next to
# nginx (and HAProxy), driven by the same client against the same origins (bench/alloc-count:
# blocking origins answering with nginx's five header fields and a 100-byte body, one keep-alive
# client sending GETs in turn).
#
# Instruction counts do not depend on what else the machine is doing, so this works where timed
# A/B runs cannot (a busy machine, a helper compiling beside it). It sees only user space: the
# kernel's share (about 80% of a proxied request on loopback, bench/PROFILE.md) is not here, and
# an instruction is not a cycle (a `rep stosb` counts once per byte). Each proxy runs twice, with
# N1 and N2 requests after a warm-up; the difference divided by N2 - N1 leaves out start-up.
#
#   bench/callgrind.sh [--keep] [--imbang] [--close] [N1 N2]
#     default 2000 12000 requests (--close: 1000 5000); --keep keeps the profiles; --imbang: imbang alone;
#     --close: a new connection for each request (scenario (b)) instead of keep-alive (a)
#   ALLOCATOR=mimalloc bench/callgrind.sh ...   imbang on mimalloc (glibc's malloc otherwise)
# Ports 29100-29101, below the ephemeral range. Starts and stops (by pid) only its own processes.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0 ONLY=0 MODE=proxy-only CLOSE= WHAT="keep-alive GET"
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --imbang) ONLY=1; shift ;;
    --close) MODE=proxy-close CLOSE=close WHAT="GET on a new connection"; shift ;;
    *) break ;;
  esac
done
if [ -n "$CLOSE" ]; then N1=${1:-1000} N2=${2:-5000}; else N1=${1:-2000} N2=${2:-12000}; fi
for tool in valgrind callgrind_annotate; do
  command -v $tool >/dev/null || { echo "callgrind.sh: $tool missing (apt-get install valgrind)" >&2; exit 1; }
done

# ALLOCATOR=mimalloc: imbang on mimalloc instead of glibc's malloc (the allocator comparison).
if [ -n "${ALLOCATOR:-}" ]; then
  (cd bench/alloc-count && cargo build --release -q --features "$ALLOCATOR" --target-dir "target/$ALLOCATOR")
  BIN=bench/alloc-count/target/$ALLOCATOR/release/imbang-alloc-count
else
  (cd bench/alloc-count && cargo build --release -q)
  BIN=bench/alloc-count/target/release/imbang-alloc-count
fi
W=$(mktemp -d /tmp/imbang-callgrind.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ $KEEP = 1 ] && echo "profiles kept in $W" || rm -rf "$W"
}
trap cleanup EXIT

# The most instructions any one thread of a profile ran (imbang: its one worker runtime).
busiest() { grep -h '^summary:' "$@" | awk '{ if ($2 > m) m = $2 } END { print m }'; }

wait_port() {
  for _ in $(seq 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "callgrind.sh: nothing listens on port $1" >&2
  return 1
}

declare -A PER
imbang() {
  local n=$1
  valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file="$W/imbang-$n.%p" \
    "$BIN" "$n" $MODE >/dev/null 2>"$W/imbang-$n.err"
  busiest "$W"/imbang-"$n".*-*
}
a=$(imbang "$N1") b=$(imbang "$N2")
PER[imbang]=$(( (b - a) / (N2 - N1) ))

"$BIN" origins > "$W/origins" &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$W/origins" ] && break; sleep 0.05; done
read -r O1 O2 < "$W/origins"

cat > "$W/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $W/nginx.pid;
error_log $W/nginx.log error;
events { worker_connections 1024; }
http {
    access_log off; keepalive_requests 100000000;
    upstream origins { server $O1; server $O2; keepalive 64; }
    server { listen 127.0.0.1:29100;
             location / { proxy_pass http://origins; proxy_http_version 1.1;
                          proxy_set_header Connection ""; } }
}
EOF
cat > "$W/haproxy.cfg" <<EOF
global
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    http-reuse always
frontend f
    bind 127.0.0.1:29101
    default_backend origins
backend origins
    balance roundrobin
    server o1 $O1
    server o2 $O2
EOF

# Runs a proxy under callgrind, sends the warm-up and n requests, stops it, prints its count.
other() {
  local name=$1 port=$2 n=$3; shift 3
  valgrind -q --tool=callgrind --callgrind-out-file="$W/$name-$n.out" "$@" 2>"$W/$name-$n.err" &
  local pid=$!
  PIDS+=($pid)
  wait_port "$port"
  "$BIN" client "127.0.0.1:$port" 2000 $CLOSE
  "$BIN" client "127.0.0.1:$port" "$n" $CLOSE
  kill -TERM "$pid"
  wait "$pid" || true
  busiest "$W/$name-$n.out"
}
OTHERS=(nginx haproxy)
[ $ONLY = 1 ] && OTHERS=()
for target in "${OTHERS[@]}"; do
  command -v $target >/dev/null || { echo "callgrind.sh: $target missing, left out" >&2; continue; }
  if [ $target = nginx ]; then
    run=(nginx 29100 -- nginx -p "$W/" -c "$W/nginx.conf")
  else
    run=(haproxy 29101 -- haproxy -f "$W/haproxy.cfg")
  fi
  a=$(other "${run[0]}" "${run[1]}" "$N1" "${run[@]:3}")
  b=$(other "${run[0]}" "${run[1]}" "$N2" "${run[@]:3}")
  PER[$target]=$(( (b - a) / (N2 - N1) ))
done

echo "user-space instructions per proxied $WHAT (callgrind, $N1 vs $N2 requests)"
for t in imbang nginx haproxy; do
  [ -n "${PER[$t]:-}" ] || continue
  ratio=""
  [ -n "${PER[nginx]:-}" ] && ratio=$(awk -v a="${PER[$t]}" -v b="${PER[nginx]}" 'BEGIN { printf "%.2fx nginx", a / b }')
  printf '  %-8s %8d  %s\n' "$t" "${PER[$t]}" "$ratio"
done
