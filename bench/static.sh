#!/usr/bin/env bash
# Static files, imbang next to nginx in the same run (issue 25's rows (p) and (q)):
#   (p) a 4 KiB file, keep-alive GETs (h2load --h1, 10 connections): CPU per request;
#   (q) a 1 MiB file, keep-alive GETs (h2load --h1, 4 connections): CPU per MiB.
# Two measures, each as a difference between a run of N1 and a run of N2 requests after a
# warm-up (start-up left out):
#   - user-space instructions, counted by valgrind's callgrind (the busiest thread: imbang's
#     worker, nginx's worker): independent of the machine's load, blind to the kernel;
#   - CPU time (user + system, from /proc/PID/stat) of the server process without valgrind:
#     includes the kernel's share (sendfile's and read's copies), but noisy on a busy machine.
# Both servers: one worker, access_log off, sendfile as given (SENDFILE=on|off, default on:
# Debian's nginx.conf says `sendfile on;`).
#
#   bench/static.sh [IMBANG_BINARY]        (default target/release/imbang)
#   SENDFILE=off N1=2000 N2=12000 M1=100 M2=600 bench/static.sh
#
# Port 29480. Starts and stops (by pid) only its own processes.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/release/imbang}
SENDFILE=${SENDFILE:-on}
N1=${N1:-2000} N2=${N2:-12000}   # 4 KiB requests
M1=${M1:-100} M2=${M2:-600}      # 1 MiB requests
PORT=29480
W=$(mktemp -d /tmp/imbang-static-bench.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p $W/logs $W/www; chmod 755 $W $W/www
head -c 4096 /dev/urandom > $W/www/4k.bin
head -c 1048576 /dev/urandom > $W/www/1m.bin
cat > $W/s.conf <<C
daemon off; master_process off; worker_processes 1; pid $W/s.pid; error_log $W/logs/s.log error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000; sendfile $SENDFILE;
  default_type application/octet-stream;
  server { listen 127.0.0.1:$PORT; root $W/www; } }
C
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# load FILE N CONNS: N keep-alive GETs of FILE.
load() { h2load -n $2 --h1 -c $3 http://127.0.0.1:$PORT/$1 > $W/h2load.out
  grep -q "$2 succeeded, 0 failed" $W/h2load.out || { echo "failures:" >&2; cat $W/h2load.out >&2; } }
# instructions BIN FILE N CONNS: the busiest thread's user-space instructions for N requests.
instructions() { local bin=$1 file=$2 n=$3 c=$4
  rm -f $W/cg.*
  valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file=$W/cg.%p.out $bin -p $W/ -c $W/s.conf 2>$W/cg.err & local pid=$!
  wait_port $PORT
  load $file 200 $c; load $file $n $c
  kill -TERM $pid; wait $pid || true
  grep -h '^summary:' $W/cg.*out* | awk '{ if ($2 > m) m = $2 } END { print m }'
}
# cputicks BIN FILE N CONNS: the server's user+system clock ticks for N requests.
cputicks() { local bin=$1 file=$2 n=$3 c=$4
  $bin -p $W/ -c $W/s.conf 2>$W/run.err & local pid=$!
  wait_port $PORT
  load $file 500 $c
  local a; a=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  load $file $n $c
  local b; b=$(awk '{ print $14 + $15 }' /proc/$pid/stat)
  kill -TERM $pid; wait $pid || true
  echo $((b - a))
}
hz=$(getconf CLK_TCK)
row() { local name=$1 bin=$2
  local a b ia im ta tm
  a=$(instructions $bin 4k.bin $N1 10); b=$(instructions $bin 4k.bin $N2 10)
  ia=$(( (b - a) / (N2 - N1) ))
  a=$(instructions $bin 1m.bin $M1 4); b=$(instructions $bin 1m.bin $M2 4)
  im=$(( (b - a) / (M2 - M1) ))
  ta=$(cputicks $bin 4k.bin $((N2 * 5)) 10)
  tm=$(cputicks $bin 1m.bin $((M2 * 5)) 4)
  echo "| $name | $ia | $(awk -v t=$ta -v n=$((N2 * 5)) -v hz=$hz 'BEGIN { printf "%.1f", t / hz / n * 1e6 }') | $im | $(awk -v t=$tm -v n=$((M2 * 5)) -v hz=$hz 'BEGIN { printf "%.0f", t / hz / n * 1e6 }') |"
}
echo "sendfile $SENDFILE; 4 KiB: N=$N1/$N2 (CPU: $((N2 * 5)) requests); 1 MiB: N=$M1/$M2 (CPU: $((M2 * 5)) requests)"
echo "| server | (p) 4 KiB: instructions/request | (p) CPU µs/request | (q) 1 MiB: instructions/MiB | (q) CPU µs/MiB |"
echo "|---|---:|---:|---:|---:|"
row imbang $BIN
row nginx /usr/sbin/nginx
