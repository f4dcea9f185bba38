#!/usr/bin/env bash
# imbang's soak test (issue 26): a bounded run of mixed load on loopback with a reload every
# 10 s, an origin killed and restarted every minute and abusive clients, reporting failed
# requests, RSS and file descriptors over time, and latency percentiles per minute.
#
#   bench/soak.sh [seconds]            default 1800 (30 minutes)
#   options: --bin PATH (default target/release/imbang, built when missing)  --out DIR
#
# Layout: two nginx origins (single processes, `master_process off`, so one pid each; origin A
# is the one killed), a WebSocket echo origin and the clients in bench/soak.py, and imbang
# (2 workers) in front of them on an HTTP/1.1 port and an h2c port. Everything listens on
# 127.0.0.1; every process this script starts is stopped by its pid when it exits.
# Needs: nginx (nginx-light), h2load (nghttp2-client), python3.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
DURATION=1800
BIN="$REPO/target/release/imbang"
OUT="$BENCH_DIR/out/soak"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) BIN="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) DURATION="$1" ;;
  esac
  shift
done
for tool in nginx h2load python3; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "soak.sh: $tool is missing" >&2; exit 2; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if [ ! -x "$BIN" ]; then
  (cd "$REPO" && nice -n 10 cargo build --release)
fi

rm -rf "$OUT"
mkdir -p "$OUT/logs" "$OUT/www"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PA=$(free_port); PB=$(free_port); PWS=$(free_port); P=$(free_port); PH2=$(free_port)
head -c $((10 * 1024 * 1024)) /dev/zero > "$OUT/www/big"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # Origin A as restarted by the driver: its pid file names it.
  [ -f "$OUT/origin-a.pid" ] && kill "$(cat "$OUT/origin-a.pid")" 2>/dev/null || true
}
trap cleanup EXIT

origin_conf() { # name port
  cat > "$OUT/origin-$1.conf" <<EOF
daemon off; master_process off; pid $OUT/origin-$1.pid;
error_log $OUT/logs/origin-$1.error.log error;
events { worker_connections 4096; }
http {
    access_log off; keepalive_requests 100000;
    server {
        listen 127.0.0.1:$2;
        location / { return 200 "origin $1\n"; }
        location /post { client_max_body_size 1m; client_body_buffer_size 64k; return 200 "posted to $1\n"; }
        location /big { alias $OUT/www/big; }
    }
}
EOF
}
origin_conf a "$PA"
origin_conf b "$PB"
START_A="$NGINX -p $OUT -c $OUT/origin-a.conf >/dev/null 2>&1 &"
"$NGINX" -p "$OUT" -c "$OUT/origin-a.conf" >/dev/null 2>&1 &
"$NGINX" -p "$OUT" -c "$OUT/origin-b.conf" >/dev/null 2>&1 & pids+=($!)

cat > "$OUT/imbang.conf" <<EOF
daemon off; worker_processes 2; pid $OUT/imbang.pid;
error_log $OUT/logs/imbang.error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_header_timeout 5s;
    client_body_timeout 5s;
    upstream origins {
        server 127.0.0.1:$PA max_fails=1 fail_timeout=5s;
        server 127.0.0.1:$PB max_fails=1 fail_timeout=5s;
        keepalive 32;
    }
    server {
        listen 127.0.0.1:$P;
        listen 127.0.0.1:$PH2 http2;
        location / { proxy_pass http://origins; proxy_next_upstream error timeout non_idempotent; }
        location /ws {
            proxy_pass http://127.0.0.1:$PWS;
            proxy_http_version 1.1;
            proxy_set_header Upgrade \$http_upgrade;
            proxy_set_header Connection "upgrade";
        }
    }
}
EOF
"$BIN" -p "$OUT/" -c "$OUT/imbang.conf" 2>"$OUT/logs/imbang.stderr" & IMBANG=$!; pids+=($IMBANG)
for _ in $(seq 100); do
  (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break
  sleep 0.1
done
echo "soak: imbang $($BIN -v 2>&1 | head -1) pid $IMBANG, $(cd "$REPO" && git rev-parse --short HEAD), ${DURATION}s" >&2

nice -n 5 python3 "$BENCH_DIR/soak.py" --duration "$DURATION" --port "$P" --h2-port "$PH2" \
  --ws-port "$PWS" --pid "$IMBANG" --origin-a-cmd "$START_A" \
  --origin-a-pidfile "$OUT/origin-a.pid" --json "$OUT/report.json" | tee "$OUT/report.txt"
echo "imbang's error log, by message (first 10):"
sed -E 's/^[0-9\/: ]+\[([a-z]+)\] [0-9#]+: (\*[0-9]+ )?/[\1] /; s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+:[0-9]+/ADDR/g' \
  "$OUT/logs/imbang.error.log" | cut -c1-110 | sort | uniq -c | sort -rn | head -10 | tee -a "$OUT/report.txt"
