#!/usr/bin/env bash
# User-space instructions per proxied keep-alive GET (scenario (a)'s request, 50 connections in
# flight through `h2load --h1`), counted by callgrind, for several imbang binaries and nginx in
# front of two nginx origins answering `return 200` (bench/ab.sh's layout, not pinned): the A/B
# of bench/ab.sh in instructions, which a busy machine does not disturb. Each target runs twice,
# N1 and N2 requests after 1,000 to warm up; (count(N2) - count(N1)) / (N2 - N1) leaves out
# start-up. The busiest thread's count is taken (imbang's one worker; nginx's worker).
#
#   bench/callgrind-ab.sh NAME=BINARY... [nginx]      (N1=4000 N2=24000 by default)
#   N1=1000 N2=21000 bench/callgrind-ab.sh before=/tmp/imbang-a after=target/release/imbang nginx
#
# Ports 29301, 29302, 29380; starts and stops (by pid) only its own processes.
set -euo pipefail
N1=${N1:-4000} N2=${N2:-24000} BASE=29300
W=$(mktemp -d /tmp/imbang-callgrind-ab.XXXXXX); PIDS=()
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
cat > $W/p.conf <<C
daemon off; master_process off; worker_processes 1; pid $W/p.pid; error_log $W/logs/p.log error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000;
  upstream origins { server 127.0.0.1:$((BASE+1)); server 127.0.0.1:$((BASE+2)); keepalive 64; }
  server { listen 127.0.0.1:$((BASE+80));
    location / { proxy_pass http://origins; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_port $((BASE+1)); wait_port $((BASE+2))
run() { local name=$1 bin=$2 n=$3
  valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file=$W/$name-$n.%p.out $bin -p $W/ -c $W/p.conf 2>$W/$name-$n.err & local pid=$!
  wait_port $((BASE+80))
  h2load -n 1000 --h1 -c 50 http://127.0.0.1:$((BASE+80))/ >/dev/null
  h2load -n $n --h1 -c 50 http://127.0.0.1:$((BASE+80))/ > $W/$name-$n.h2load
  grep -q "$n succeeded, 0 failed" $W/$name-$n.h2load || echo "$name: failures" >&2
  kill -TERM $pid; wait $pid || true
  grep -h '^summary:' $W/$name-$n.*out* | awk '{ if ($2 > m) m = $2 } END { print m }'
}
for t in "$@"; do
  name=${t%%=*}; bin=${t#*=}; [ "$t" = nginx ] && bin=nginx
  a=$(run $name $bin $N1); b=$(run $name $bin $N2)
  echo "$name $(( (b - a) / (N2 - N1) )) instructions per request"
done
