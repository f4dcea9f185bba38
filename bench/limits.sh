#!/usr/bin/env bash
# Row (s) of issue 25: scenario (a)'s CPU per request (a proxied keep-alive GET, 50 connections
# in flight through `h2load --h1`, two nginx origins answering `return 200`) with a limit_req
# zone configured on the location, at a rate nothing reaches (no request is delayed or
# rejected), against the same configuration without it. Counted in user-space instructions
# per request under callgrind (bench/callgrind-ab.sh's method: a busy machine does not disturb
# it), for imbang and, in the same run, for nginx with the same two configurations.
#
#   bench/limits.sh [IMBANG_BINARY]      (target/release/imbang; N1=4000 N2=24000 by default)
#
# Ports 29401, 29402, 29480; starts and stops (by pid) only its own processes.
set -euo pipefail
BIN=${1:-target/release/imbang}
N1=${N1:-4000} N2=${N2:-24000} BASE=29400
W=$(mktemp -d /tmp/imbang-limits-bench.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p $W/logs
for i in 1 2; do
cat > $W/o$i.conf <<C
daemon off; master_process off; worker_processes 1; pid $W/o$i.pid; error_log $W/logs/o$i.log error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:$((BASE+i)); location / { return 200 "hello from origin $i\n"; } } }
C
nginx -p $W/ -c $W/o$i.conf >/dev/null 2>&1 & PIDS+=($!)
done
proxy() { # $1: file, $2: http-level text, $3: location-level text
cat > $W/$1 <<C
daemon off; master_process off; worker_processes 1; pid $W/p.pid; error_log $W/logs/p.log error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000; $2
  upstream origins { server 127.0.0.1:$((BASE+1)); server 127.0.0.1:$((BASE+2)); keepalive 64; }
  server { listen 127.0.0.1:$((BASE+80));
    location / { $3 proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
}
proxy plain.conf "" ""
proxy limit.conf "limit_req_zone \$binary_remote_addr zone=bench:10m rate=100000000r/s;" \
  "limit_req zone=bench burst=1000000 nodelay;"
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_port $((BASE+1)); wait_port $((BASE+2))
run() { local name=$1 bin=$2 conf=$3 n=$4
  valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file=$W/$name-$n.%p.out $bin -p $W/ -c $W/$conf 2>$W/$name-$n.err & local pid=$!
  wait_port $((BASE+80))
  h2load -n 1000 --h1 -c 50 http://127.0.0.1:$((BASE+80))/ >/dev/null
  h2load -n $n --h1 -c 50 http://127.0.0.1:$((BASE+80))/ > $W/$name-$n.h2load
  grep -q "$n succeeded, 0 failed" $W/$name-$n.h2load || echo "$name: failures" >&2
  grep -q "status codes: $n 2xx" $W/$name-$n.h2load || echo "$name: not every answer was 2xx" >&2
  kill -TERM $pid; wait $pid || true
  grep -h '^summary:' $W/$name-$n.*out* | awk '{ if ($2 > m) m = $2 } END { print m }'
}
for t in "imbang=$BIN" nginx=nginx; do
  name=${t%%=*}; bin=${t#*=}
  for conf in plain limit; do
    a=$(run $name-$conf $bin $conf.conf $N1); b=$(run $name-$conf $bin $conf.conf $N2)
    echo "$name $conf $(( (b - a) / (N2 - N1) )) instructions per request"
  done
done
