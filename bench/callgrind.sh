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
#   bench/callgrind.sh [--keep] [--imbang] [--close|--h2|--conc C] [N1 N2]
#     default 2000 12000 requests (--close: 1000 5000; --conc: 4000 24000); --keep keeps the
#     profiles; --imbang: imbang alone;
#     --close: a new connection for each request (scenario (b)) instead of keep-alive (a);
#     --conc C: keep-alive GETs with C connections in flight (h2load --h1), against the real
#     imbang binary, nginx and HAProxy: where a worker serves many requests at once (one at a
#     time, the default, puts the event loop's per-wait costs on every request);
#     --h2: h2c (scenario (d)): h2load, 10 connections x 10 streams, against the real imbang
#     binary (target/release/imbang, built here), nginx and HAProxy on the same origins
#   ALLOCATOR=mimalloc bench/callgrind.sh ...   imbang on mimalloc (glibc's malloc otherwise)
# Ports 29100-29101, below the ephemeral range. Starts and stops (by pid) only its own processes.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEP=0 ONLY=0 MODE=proxy-only CLOSE= H2=0 CONC=0 WHAT="keep-alive GET"
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1; shift ;;
    --imbang) ONLY=1; shift ;;
    --close) MODE=proxy-close CLOSE=close WHAT="GET on a new connection"; shift ;;
    --h2) H2=1 WHAT="h2c GET (h2load, 10 connections x 10 streams)"; shift ;;
    --conc) CONC=$2 WHAT="keep-alive GET, $2 connections in flight (h2load --h1)"; shift 2 ;;
    *) break ;;
  esac
done
if [ -n "$CLOSE" ]; then N1=${1:-1000} N2=${2:-5000}
elif [ "$CONC" != 0 ]; then N1=${1:-4000} N2=${2:-24000}
else N1=${1:-2000} N2=${2:-12000}; fi
# Both drive the real binary with h2load (the default and --close: the in-process harness).
REAL=0
{ [ $H2 = 1 ] || [ "$CONC" != 0 ]; } && REAL=1
TOOLS=(valgrind callgrind_annotate)
[ $REAL = 1 ] && TOOLS+=(h2load)
for tool in "${TOOLS[@]}"; do
  command -v $tool >/dev/null || { echo "callgrind.sh: $tool missing (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
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
if [ $REAL = 0 ]; then
  a=$(imbang "$N1") b=$(imbang "$N2")
  PER[imbang]=$(( (b - a) / (N2 - N1) ))
fi

"$BIN" origins > "$W/origins" &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$W/origins" ] && break; sleep 0.05; done
read -r O1 O2 < "$W/origins"

# --h2: nginx and imbang run the same configuration (imbang warns that `master_process` has no
# effect), HAProxy binds with `proto h2`.
H2_LISTEN= H2_BIND=
[ $H2 = 1 ] && H2_LISTEN=" http2" H2_BIND=" proto h2"
for target in nginx imbang; do
  port=29100
  [ $target = imbang ] && port=29102
  cat > "$W/$target.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $W/$target.pid;
error_log $W/$target.log error;
events { worker_connections 1024; }
http {
    access_log off; keepalive_requests 100000000;
    upstream origins { server $O1; server $O2; keepalive 64; }
    server { listen 127.0.0.1:$port$H2_LISTEN;
             location / { proxy_pass http://origins; proxy_http_version 1.1;
                          proxy_set_header Connection ""; } }
}
EOF
done
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
    bind 127.0.0.1:29101$H2_BIND
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
  if [ $REAL = 1 ]; then
    local load=(-c 10 -m 10)
    [ "$CONC" != 0 ] && load=(--h1 -c "$CONC")
    h2load -n 1000 "${load[@]}" "http://127.0.0.1:$port/small" >/dev/null
    h2load -n "$n" "${load[@]}" "http://127.0.0.1:$port/small" > "$W/$name-$n.h2load"
    grep -q "$n succeeded, 0 failed" "$W/$name-$n.h2load" \
      || { echo "callgrind.sh: $name: h2load saw failures" >&2; cat "$W/$name-$n.h2load" >&2; }
  else
    "$BIN" client "127.0.0.1:$port" 2000 $CLOSE
    "$BIN" client "127.0.0.1:$port" "$n" $CLOSE
  fi
  kill -TERM "$pid"
  wait "$pid" || true
  busiest "$W/$name-$n.out"
}
OTHERS=(nginx haproxy)
[ $ONLY = 1 ] && OTHERS=()
[ $REAL = 1 ] && OTHERS=(imbang "${OTHERS[@]}")
for target in "${OTHERS[@]}"; do
  [ $target = imbang ] || command -v $target >/dev/null || { echo "callgrind.sh: $target missing, left out" >&2; continue; }
  if [ $target = imbang ]; then
    cargo build --release -q
    run=(imbang 29102 -- target/release/imbang -p "$W/" -c "$W/imbang.conf")
  elif [ $target = nginx ]; then
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
