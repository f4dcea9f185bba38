#!/usr/bin/env bash
# Interleaved A/B of proxy CPU per request: scenario (a) of bench/run.sh (small keep-alive GETs,
# 50 connections), with --close scenario (b) (a new connection per request), with --h2 scenario
# (d) (h2c, h2load 50 connections x 10 streams), with --big scenario (c) (1 MiB responses, 10
# connections; CPU per MiB is CPU per request), for several imbang binaries and nginx on the
# same two origins, rounds alternating the order. Prints CPU µs per request (user and kernel) and
# req/s per round and the median per target. A quick check of one change; bench/run.sh stays the
# reference.
#
#   bench/ab.sh [--rounds N] [--secs S] [--close|--h2|--big] [--workers N] [--port-base P]
#               NAME=BINARY[,reuseport]... [nginx[,reuseport]]
# With --workers 2 the proxy runs on both CPUs (beside the load generator on CPU 0); `,reuseport`
# runs that target with `listen ... reuseport` (a listening socket per worker).
#
# Layout as in run.sh: the proxy pinned to CPU 1, wrk and the origins to CPU 0. Run it on a quiet
# machine; it only starts (and stops, by pid) its own processes.
set -euo pipefail

ROUNDS=4 SECS=6 CLOSE=0 H2=0 BIG=0 WORKERS=1 BASE=29000  # below the ephemeral port range (32768-60999)
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --secs) SECS=$2; shift 2 ;;
    --close) CLOSE=1; shift ;;
    --h2) H2=1; shift ;;
    --big) BIG=1; shift ;;
    --workers) WORKERS=$2; shift 2 ;;
    --port-base) BASE=$2; shift 2 ;;
    -h|--help) sed -n 2,15p "$0"; exit 0 ;;
    *) TARGETS+=("$1"); shift ;;
  esac
done
[ ${#TARGETS[@]} -gt 0 ] || { echo "usage: $0 NAME=BINARY... [nginx]" >&2; exit 2; }

W=$(mktemp -d /tmp/imbang-ab.XXXXXX)
PIDS=() pid=
cleanup() { for p in "${PIDS[@]}" $pid; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
mkdir -p "$W/logs" "$W/www"
head -c 1048576 /dev/urandom > "$W/www/big"
for i in 1 2; do
  cat > "$W/origin$i.conf" <<EOF
daemon off; master_process off; worker_processes 1;
pid $W/origin$i.pid; error_log $W/logs/origin$i.log error;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:$((BASE + i)); location / { return 200 "hello from origin $i\n"; }
           location = /big { root $W/www; } } }
EOF
  taskset -c 0 nginx -p "$W/" -c "$W/origin$i.conf" >/dev/null 2>&1 &
  PIDS+=($!)
done
cat > "$W/proxy.conf" <<EOF
daemon off; worker_processes $WORKERS; pid $W/proxy.pid;
error_log $W/logs/proxy.log error;
events { worker_connections 12000; }
http {
    access_log off; keepalive_timeout 75s; keepalive_requests 100000000;
    upstream origins { server 127.0.0.1:$((BASE + 1)); server 127.0.0.1:$((BASE + 2));
                       keepalive 64; keepalive_requests 100000000; }
    server { listen 127.0.0.1:$((BASE + 80));
             location / { proxy_pass http://origins; proxy_http_version 1.1;
                          proxy_set_header Connection ""; } }
    server { listen 127.0.0.1:$((BASE + 81)) http2;
             location / { proxy_pass http://origins; proxy_http_version 1.1;
                          proxy_set_header Connection ""; } }
}
EOF

# The same with a listening socket per worker, for targets named with `,reuseport`.
sed 's/listen 127.0.0.1:\([0-9]*\);/listen 127.0.0.1:\1 reuseport;/; s/ http2;/ reuseport http2;/' \
  "$W/proxy.conf" > "$W/proxy-reuseport.conf"

wait_port() {
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done
  echo "nothing listens on port $1 (logs in $W/logs)" >&2; cat "$W"/logs/*.out >&2; return 1
}
wait_port $((BASE + 1)); wait_port $((BASE + 2))

tree_ticks() { # "user system" clock ticks of PID (all its threads) and its children (nginx's worker)
  local u s
  read -r u s < <(awk '{print $14, $15}' "/proc/$1/stat")
  for c in $(cat "/proc/$1/task/$1/children" 2>/dev/null); do
    read -r cu cs < <(awk '{print $14, $15}' "/proc/$c/stat"); u=$((u + cu)); s=$((s + cs))
  done
  echo "$u $s"
}

HZ=$(getconf CLK_TCK)
extra=()
[ "$CLOSE" = 1 ] && extra=(-H "Connection: close")
declare -A RESULTS
for r in $(seq "$ROUNDS"); do
  # Rotate the order each round.
  n=${#TARGETS[@]}
  for k in $(seq 0 $((n - 1))); do
    t=${TARGETS[$(((k + r) % n))]}
    name=${t%%=*}; bin=${t#*=} conf=proxy.conf
    case "$bin" in *,reuseport) bin=${bin%,reuseport} conf=proxy-reuseport.conf ;; esac
    rm -f "$W/proxy.pid"
    cpus=1; [ "$WORKERS" -gt 1 ] && cpus=0,1
    if [ "$bin" = nginx ]; then
      taskset -c $cpus nginx -p "$W/" -c "$W/$conf" >"$W/logs/proxy.out" 2>&1 & pid=$!
    else
      taskset -c $cpus "$bin" -p "$W/" -c "$W/$conf" >"$W/logs/proxy.out" 2>&1 & pid=$!
    fi
    wait_port $((BASE + 80))
    if [ "$H2" = 1 ]; then
      url="http://127.0.0.1:$((BASE + 81))/"
      taskset -c 0 h2load -t1 -c50 -m10 -D 2 "$url" >/dev/null
      read -r u0 s0 < <(tree_ticks "$pid")
      out=$(taskset -c 0 h2load -t1 -c50 -m10 -D "$SECS" "$url")
      read -r u1 s1 < <(tree_ticks "$pid")
      reqs=$(echo "$out" | awk '/^requests:/ {print $8}')
      rps=$(echo "$out" | awk '/^finished in/ {print $4}')
    else
      url="http://127.0.0.1:$((BASE + 80))/" conns=50
      [ "$BIG" = 1 ] && url="http://127.0.0.1:$((BASE + 80))/big" conns=10
      taskset -c 0 wrk -t1 -c$conns -d2s "${extra[@]}" "$url" >/dev/null
      read -r u0 s0 < <(tree_ticks "$pid")
      out=$(taskset -c 0 wrk -t1 -c$conns -d"${SECS}s" "${extra[@]}" "$url")
      read -r u1 s1 < <(tree_ticks "$pid")
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
    us=$(awk -v d=$((u1 - u0 + s1 - s0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    user=$(awk -v d=$((u1 - u0)) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", d / hz * 1e6 / n }')
    printf 'round %d %-10s %8s µs/req (user %5s, kernel %5s) %10s req/s\n' "$r" "$name" "$us" "$user" \
      "$(awk -v a="$us" -v b="$user" 'BEGIN { printf "%.2f", a - b }')" "$rps"
    RESULTS[$name]+="$us "
  done
done
echo "median CPU µs per request:"
for name in "${!RESULTS[@]}"; do
  echo "${RESULTS[$name]}" | tr ' ' '\n' | grep . | sort -n | awk -v n="$name" '{a[NR]=$1} END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "  %-10s %.2f\n", n, m }'
done
