#!/usr/bin/env bash
# Row (r) of issue 25: gzip of a 100 KiB JSON proxied response at level 1. User-space
# instructions per response, counted by callgrind, for imbang (target/release/imbang) and nginx
# in front of the same nginx origin (a static 100 KiB JSON file, kept-alive upstream
# connections), with the same configuration: `gzip on; gzip_types application/json;
# gzip_comp_level 1;` (nginx also gets proxy buffers big enough to hold the response in memory:
# its default would write it to a temporary file). One client connection (`h2load --h1 -c 1`,
# `Accept-Encoding: gzip`) sends GETs in turn. Each proxy runs twice, with N1 and N2 responses
# after a warm-up of 50; (count(N2) - count(N1)) / (N2 - N1) leaves out start-up. The busiest
# thread's count is taken (imbang's one worker; nginx's worker). Then the same with `gzip off`
# (what the proxying alone costs), and the self cost of the compressor's functions per response
# (zlib-rs in imbang, the system's libz in nginx) from the N2 profiles.
#
#   bench/gzip.sh            (N1=100 N2=500 by default; needs valgrind, h2load, nginx)
#   N1=50 N2=250 LEVEL=2 bench/gzip.sh      (fewer responses; another gzip_comp_level)
#
# Ports 29401 (origin), 29480 (proxy); starts and stops (by pid) only its own processes.
set -euo pipefail
cd "$(dirname "$0")/.."
N1=${N1:-100} N2=${N2:-500} LEVEL=${LEVEL:-1} BASE=29400
for tool in valgrind callgrind_annotate h2load nginx python3; do
  command -v $tool >/dev/null || { echo "gzip.sh: $tool missing" >&2; exit 1; }
done
[ -x target/release/imbang ] || { echo "gzip.sh: build target/release/imbang first (cargo build --release)" >&2; exit 1; }
W=$(mktemp -d /tmp/imbang-gzip-bench.XXXXXX); PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$W/logs" "$W/www"
# The JSON of tests/gzip.rs: 100 KiB of small records.
python3 - "$W/www/data.json" <<'P'
import sys
out, i = ["["], 0
size = 1
while size < 100 * 1024:
    rec = ("," if i else "") + '{"id":%d,"name":"user%d","active":%s,"score":%d}' % (
        i, i * 7919 % 1000, "true" if i % 3 == 0 else "false", i * 31 % 977)
    out.append(rec); size += len(rec); i += 1
out.append("]")
open(sys.argv[1], "w").write("".join(out))
P
cat > "$W/o.conf" <<C
daemon off; master_process off; worker_processes 1; pid $W/o.pid; error_log $W/logs/o.log error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000; default_type application/json;
  server { listen 127.0.0.1:$((BASE+1)); root $W/www; } }
C
nginx -p "$W/" -c "$W/o.conf" >/dev/null 2>&1 & PIDS+=($!)
proxy_conf() { # $1: on|off
cat > "$W/p.conf" <<C
daemon off; master_process off; worker_processes 1; pid $W/p.pid; error_log $W/logs/p.log error;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 100000000;
  proxy_buffer_size 16k; proxy_buffers 16 16k;
  gzip $1; gzip_types application/json; gzip_comp_level $LEVEL;
  upstream origin { server 127.0.0.1:$((BASE+1)); keepalive 16; }
  server { listen 127.0.0.1:$((BASE+80));
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
C
}
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.05; done; return 1; }
wait_port $((BASE+1))
URL=http://127.0.0.1:$((BASE+80))/data.json
run() { local name=$1 n=$2; shift 2
  valgrind -q --tool=callgrind --separate-threads=yes --callgrind-out-file="$W/$name-$n.%p.out" "$@" -p "$W/" -c "$W/p.conf" 2>"$W/$name-$n.err" & local pid=$!
  PIDS+=($pid)
  wait_port $((BASE+80))
  h2load -n 50 --h1 -c 1 -H 'Accept-Encoding: gzip' "$URL" >/dev/null
  h2load -n "$n" --h1 -c 1 -H 'Accept-Encoding: gzip' "$URL" > "$W/$name-$n.h2load"
  grep -q "$n succeeded, 0 failed" "$W/$name-$n.h2load" || { echo "$name: failures" >&2; cat "$W/$name-$n.h2load" >&2; }
  kill -TERM "$pid"; wait "$pid" || true
  # The busiest thread's profile (imbang: its worker) for the breakdown; its count for the total.
  local best=0 file=
  for f in "$W/$name-$n".*out*; do
    local c; c=$(grep -h '^summary:' "$f" | awk '{print $2}')
    [ "${c:-0}" -gt "$best" ] && { best=$c; file=$f; }
  done
  cp "$file" "$W/$name-$n.best"
  echo "$best"
}
# Self cost of the compressor (zlib-rs symbols; libz's object), summed over functions.
compressor() {
  callgrind_annotate --threshold=100 "$1" 2>/dev/null \
    | awk '/zlib_rs|libz\.so|crc32fast|crc32|adler/ { gsub(",", "", $1); s += $1 } END { print s + 0 }'
}
declare -A PER ZLIB
for mode in on off; do
  proxy_conf $mode
  for t in imbang nginx; do
    if [ $t = imbang ]; then bin=(target/release/imbang); else bin=(nginx); fi
    a=$(run "$t-$mode" "$N1" "${bin[@]}"); b=$(run "$t-$mode" "$N2" "${bin[@]}")
    PER[$t-$mode]=$(( (b - a) / (N2 - N1) ))
    if [ $mode = on ]; then
      za=$(compressor "$W/$t-$mode-$N1.best"); zb=$(compressor "$W/$t-$mode-$N2.best")
      ZLIB[$t]=$(( (zb - za) / (N2 - N1) ))
    fi
  done
done
echo "user-space instructions per proxied 100 KiB JSON response, gzip_comp_level $LEVEL (callgrind, $N1 vs $N2 responses, h2load --h1 -c 1)"
for mode in on off; do
  r=$(awk -v a="${PER[imbang-$mode]}" -v b="${PER[nginx-$mode]}" 'BEGIN { printf "%.2fx", a / b }')
  printf '  gzip %-3s imbang %9d  nginx %9d  imbang/nginx %s\n' $mode "${PER[imbang-$mode]}" "${PER[nginx-$mode]}" "$r"
done
r=$(awk -v a="${ZLIB[imbang]}" -v b="${ZLIB[nginx]}" 'BEGIN { printf "%.2fx", a / b }')
printf '  compressor alone (self cost of its functions): imbang (zlib-rs) %d  nginx (libz) %d  %s\n' "${ZLIB[imbang]}" "${ZLIB[nginx]}" "$r"
# Body bytes per response as h2load counted them (chunk framing included).
data() { sed -n 's/.*headers.*), .*(\([0-9]*\)) data.*/\1/p' "$1" | awk -v n="$N2" '{ printf "%d", $1 / n }'; }
echo "  body bytes per response with gzip on: imbang $(data "$W/imbang-on-$N2.h2load")  nginx $(data "$W/nginx-on-$N2.h2load")"
