#!/usr/bin/env bash
# imbang's benchmark suite (issue 6): nginx, HAProxy and imbang as the proxy under test, one at a
# time, with equivalent configurations, in front of two nginx origins. Writes bench/RESULTS.md and
# bench/results.json (a full run) or bench/out/quick/ (--quick).
#
#   bench/run.sh            full run: 3 repetitions, 10 s per measurement after a 2 s warm-up
#   bench/run.sh --quick    smoke run: 1 repetition, 5 s
#   options: --reps N  --duration S  --only a,b,c,d,e,f,g,h  --no-install  --no-build  --out DIR
#            --proxies nginx,haproxy,imbang  --methods GET,POST  --variants kill,stop (scenario f)
#            --port-base N (origins on N+1, N+2, the proxy on N+80 and h2c on N+81; default 19000)
#
# Layout: the proxy is pinned alone to CPU 1 (taskset -c 1); wrk, the origins and the idle-client
# are pinned to CPU 0. Every process this script starts is stopped by its pid when it exits.
# Traffic goes to 127.0.0.1 only; every load is bounded in time.
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
COMMAND="bench/run.sh${*:+ $*}"

REPS=3
DURATION=10
WARMUP=2
QUICK=0
ONLY="a,b,c,d,e,f,g,h"
INSTALL=1
BUILD=1
OUT=""
IDLE_CONNS=10000
PROXY_LIST="nginx,haproxy,imbang"
METHODS="GET,POST"
PORT_BASE=19000
VARIANTS="kill,stop"
HANG_TIMEOUT=2
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; REPS=1; DURATION=5 ;;
    --reps) REPS="$2"; shift ;;
    --duration) DURATION="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --no-install) INSTALL=0 ;;
    --no-build) BUILD=0 ;;
    --out) OUT="$2"; shift ;;
    --idle-conns) IDLE_CONNS="$2"; shift ;;
    --proxies) PROXY_LIST="$2"; shift ;;
    --methods) METHODS="$2"; shift ;;
    --port-base) PORT_BASE="$2"; shift ;;
    --variants) VARIANTS="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if [ "$QUICK" = 1 ]; then OUT="$BENCH_DIR/out/quick"; else OUT="$BENCH_DIR"; fi
fi
mkdir -p "$OUT"
W="$BENCH_DIR/out/work"          # configs, logs, origin files, raw measurements
rm -rf "$W"
mkdir -p "$W/www" "$W/logs"
RAW="$W/raw.jsonl"
: > "$RAW"
LOG="$W/run.log"

PORT_O1=$((PORT_BASE + 1))
PORT_O2=$((PORT_BASE + 2))
PORT_PROXY=$((PORT_BASE + 80))
PORT_PROXY_H2=$((PORT_BASE + 81))
IFS=, read -r -a PROXIES <<< "$PROXY_LIST"
IMBANG="${IMBANG_BIN:-$REPO/target/release/imbang}"
# bench/profile.sh sets PERF_DIR: scenario (a) then runs `perf record` on the proxy while wrk runs.
PERF_DIR="${PERF_DIR:-}"
CLK_TCK=$(getconf CLK_TCK)

say() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }
has() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
install_tools() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v h2load >/dev/null || missing+=(nghttp2-client)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v curl >/dev/null || missing+=(curl)
  command -v ss >/dev/null || missing+=(iproute2)
  command -v python3 >/dev/null || missing+=(python3)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$INSTALL" = 0 ] || [ "$(id -u)" != 0 ]; then
    echo "run.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ---------------------------------------------------------------------------------------------
# Processes: every one we start is remembered by pid and stopped at exit.
# ---------------------------------------------------------------------------------------------
PIDS=()
LASTPID=""
start_bg() { # start_bg LOGFILE CMD...  -> LASTPID
  local logf="$1"; shift
  "$@" >"$logf" 2>&1 &
  LASTPID=$!
  PIDS+=("$LASTPID")
}
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
ours() { # true when pid $1 is a child of this script (guards against pid reuse)
  [ -r "/proc/$1/stat" ] || return 1
  local ppid
  ppid=$(sed 's/.*) //' "/proc/$1/stat" | awk '{print $2}')
  [ "$ppid" = "$$" ]
}
children_of() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+$' || true; }
stop_pid() { # stop_pid PID [signal]: TERM (or the given signal), then KILL after 5 s
  local pid="$1" sig="${2:-TERM}" kids
  alive "$pid" && ours "$pid" || return 0
  kids=$(children_of "$pid")
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  wait "$pid" 2>/dev/null || true
  # nginx workers of a master we started (they exit with it; make sure).
  for k in $kids; do
    if alive "$k"; then sleep 0.5; alive "$k" && kill -KILL "$k" 2>/dev/null || true; fi
  done
}
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_http() { # wait_http PORT PATH: up to 10 s for a 200
  for _ in $(seq 100); do
    if curl -sf -o /dev/null "http://127.0.0.1:$1$2"; then return 0; fi
    sleep 0.1
  done
  echo "run.sh: nothing answers on port $1" >&2
  return 1
}

# /proc readings. CPU: utime+stime (clock ticks) of the process and of its direct children
# (nginx master + worker); every thread of a process is included in its /proc/PID/stat.
proc_set() { echo "$1"; children_of "$1"; }
cpu_ticks() {
  local total=0 t
  for p in $(proc_set "$1"); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
user_ticks() { # utime alone (user space), as cpu_ticks
  local total=0 t
  for p in $(proc_set "$1"); do
    t=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12}') || t=0
    total=$((total + ${t:-0}))
  done
  echo "$total"
}
rss_kib() {
  local total=0 r
  for p in $(proc_set "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || r=0
    total=$((total + ${r:-0}))
  done
  echo "$total"
}

# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------
write_configs() {
  local hard
  hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] && hard=1048576
  HAPROXY_MAXCONN=$(( (hard - 20) / 2 ))
  [ "$HAPROXY_MAXCONN" -gt 12000 ] && HAPROXY_MAXCONN=12000
  head -c 100 /dev/zero | tr '\0' 'a' > "$W/www/small"
  head -c 1048576 /dev/urandom > "$W/www/big"
  for i in 1 2; do
    local port=$((PORT_BASE + i))
    cat > "$W/origin$i.conf" <<EOF
# origin $i: a single nginx process (so SIGKILL on its pid takes the whole origin down)
daemon off;
master_process off;
worker_processes 1;
pid $W/origin$i.pid;
error_log $W/logs/origin$i.error.log error;
events { worker_connections 4096; }
http {
    access_log off;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=16 inactive=600s;
    open_file_cache_valid 600s;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $W/www;
        location / { }
        location = /post { return 200 "posted to origin $i\n"; }
    }
}
EOF
  done
  # The proxy configuration nginx and imbang both run, unchanged (that is imbang's point).
  for workers in 1 2; do
    cat > "$W/proxy-w$workers.conf" <<EOF
daemon off;
worker_processes $workers;
pid $W/proxy-w$workers.pid;
error_log $W/logs/proxy.error.log error;
events { worker_connections 12000; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 100000000;
    upstream origins {
        server 127.0.0.1:$PORT_O1;
        server 127.0.0.1:$PORT_O2;
        keepalive 64;
        keepalive_requests 100000000;
    }
    server {
        listen 127.0.0.1:$PORT_PROXY;
        location / {
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    # (d) HTTP/2 with prior knowledge: nginx 1.22 serves only HTTP/2 on such a plain listener;
    # imbang serves both on every listener and accepts the parameter.
    server {
        listen 127.0.0.1:$PORT_PROXY_H2 http2;
        location / {
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
  done
  # (f) stop variant: the same configurations with equal, short timeouts (see failover_scenario).
  sed "s|proxy_set_header Connection \"\";|proxy_set_header Connection \"\";\n            proxy_connect_timeout ${HANG_TIMEOUT}s;\n            proxy_send_timeout ${HANG_TIMEOUT}s;\n            proxy_read_timeout ${HANG_TIMEOUT}s;|" \
    "$W/proxy-w1.conf" > "$W/proxy-w1-hang.conf"
  # (c) reference only: nginx with larger in-memory proxy buffers (its defaults are 8 x 4k plus
  # temp files; imbang accepts these directives without effect: it always streams).
  sed 's|proxy_set_header Connection "";|proxy_set_header Connection "";\n            proxy_buffer_size 64k;\n            proxy_buffers 8 64k;|' \
    "$W/proxy-w1.conf" > "$W/proxy-nginx-buf64k.conf"
  cat > "$W/haproxy.cfg" <<EOF
global
    nbthread 1
    # HAProxy reserves two descriptors per connection: its maxconn is bounded by the fd limit.
    maxconn $HAPROXY_MAXCONN
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 60s
    timeout http-keep-alive 75s
    http-reuse always
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response
frontend fe
    bind 127.0.0.1:$PORT_PROXY
    default_backend origins
frontend fe_h2
    bind 127.0.0.1:$PORT_PROXY_H2 proto h2
    default_backend origins
backend origins
    balance roundrobin
    server o1 127.0.0.1:$PORT_O1
    server o2 127.0.0.1:$PORT_O2
EOF
  sed -e "s|timeout connect .*|timeout connect ${HANG_TIMEOUT}s|" -e "s|timeout server .*|timeout server ${HANG_TIMEOUT}s|" \
    "$W/haproxy.cfg" > "$W/haproxy-hang.cfg"
}

# ---------------------------------------------------------------------------------------------
# Origins and proxies
# ---------------------------------------------------------------------------------------------
ORIGIN_PID=("" "" "")
start_origin() { # start_origin I
  start_bg "$W/logs/origin$1.out" taskset -c 0 nginx -p "$W/" -c "$W/origin$1.conf"
  ORIGIN_PID[$1]=$LASTPID
  wait_http $((PORT_BASE + $1)) /small
}

PROXY_PID=""
CONF_TAG="" # "-hang": the configurations with short timeouts (scenario f, stop variant)
start_proxy() { # start_proxy NAME [WORKERS] [CPUS]
  local name="$1" workers="${2:-1}" cpus="${3:-1}"
  port_free "$PORT_PROXY"
  case "$name" in
    nginx) start_bg "$W/logs/proxy.out" taskset -c "$cpus" nginx -p "$W/" -c "$W/proxy-w$workers$CONF_TAG.conf" ;;
    nginx-buf64k) start_bg "$W/logs/proxy.out" taskset -c "$cpus" nginx -p "$W/" -c "$W/proxy-nginx-buf64k.conf" ;;
    imbang) start_bg "$W/logs/proxy.out" taskset -c "$cpus" "$IMBANG" -p "$W/" -c "$W/proxy-w$workers$CONF_TAG.conf" ;;
    haproxy) start_bg "$W/logs/proxy.out" taskset -c "$cpus" haproxy -db -f "$W/haproxy$CONF_TAG.cfg" ;;
  esac
  PROXY_PID=$LASTPID
  wait_http "$PORT_PROXY" /small
  # Something else may have answered (e.g. a proxy that has not finished exiting).
  alive "$PROXY_PID" || say "$name exited at start: $(tail -2 "$W/logs/proxy.out" | tr '\n' ' ')"
  if [ "${name%%-*}" = nginx ]; then # the worker must exist before CPU/RSS readings
    for _ in $(seq 50); do [ -n "$(children_of "$PROXY_PID")" ] && break; sleep 0.1; done
  fi
}
stop_proxy() {
  stop_pid "$PROXY_PID" TERM
  PROXY_PID=""
  sleep 0.3
  port_free "$PORT_PROXY"
}
port_free() { # port_free PORT: wait (up to 10 s) until nothing listens on PORT, else say who does
  for _ in $(seq 100); do
    [ -z "$(ss -Hltn "sport = :$1")" ] && return 0
    sleep 0.1
  done
  say "port $1 is still in use: $(ss -Hltnp "sport = :$1" | tr -s ' ')"
}

# wrk ARGS... -> prints the WRKJSON object (also logs wrk's own output)
# wrk runs under a small Python parent that reports wrk's own CPU time (clock ticks) in
# $W/wrk.cpu, so the CPU that other processes took during a measurement can be worked out.
run_wrk() {
  local out
  out=$(python3 -c '
import os, resource, subprocess, sys
r = subprocess.run(["taskset", "-c", sys.argv[1], "wrk", "-s", sys.argv[2]] + sys.argv[4:],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
sys.stdout.write(r.stdout)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[3], "w").write("%d\n" % round((ru.ru_utime + ru.ru_stime) * os.sysconf("SC_CLK_TCK")))
' "$WRK_CPUS" "$BENCH_DIR/wrk.lua" "$W/wrk.cpu" "$@" 2>&1) || true
  echo "--- wrk $*" >> "$LOG"
  echo "$out" >> "$LOG"
  echo "$out" | sed -n 's/^WRKJSON //p' | tail -1
}
# busy (all but idle and iowait) and all ticks of both CPUs, from /proc/stat
sys_ticks() { awk '/^cpu / {t = $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; print t - $5 - $6, t}' /proc/stat; }
# others_during SYS0_BUSY SYS0_TOTAL PROXY_TICKS ORIGIN0_TICKS: % of the machine that processes other
# than the proxy, the origins and wrk used since the first reading.
others_during() {
  local b1 t1 o1 w
  read -r b1 t1 < <(sys_ticks)
  o1=$(( $(cpu_ticks "${ORIGIN_PID[1]}") + $(cpu_ticks "${ORIGIN_PID[2]}") ))
  w=$(cat "$W/wrk.cpu" 2>/dev/null || echo 0)
  local others=$(( (b1 - $1) - $3 - (o1 - $4) - w ))
  echo "others_during: machine busy $((b1 - $1)) of $((t1 - $2)) ticks; proxy $3, origins $((o1 - $4)), wrk $w" >> "$LOG"
  [ "$others" -lt 0 ] && others=0
  echo $(( t1 > $2 ? 100 * others / (t1 - $2) : 0 ))
}
MAX_ATTEMPTS=3
OTHERS_LIMIT=5
WRK_CPUS=0

record() { echo "${1%\}},\"others_busy_pct_before\":$BUSY}" >> "$RAW"; }

# ---------------------------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------------------------
# (a) small GET keep-alive, (b) new connection per request, (c) 1 MiB responses: CPU per request.
# A measurement during which other processes used more than OTHERS_LIMIT % of the machine is
# recorded (with its figure) and taken again, up to MAX_ATTEMPTS times; the report uses the last.
load_scenario() { # load_scenario SCEN PROXY REP
  local attempt
  for attempt in $(seq "$MAX_ATTEMPTS"); do
    idle_gate "${FUNCNAME[0]%%_*} $*"
    load_once "$@" "$attempt"
    [ "$OTHERS" -le "$OTHERS_LIMIT" ] && return 0
    say "others used ${OTHERS}% of the machine during that measurement"
  done
  CONTENTION+=("$*: others used ${OTHERS}% of the machine during the last of $MAX_ATTEMPTS attempts")
}
OTHERS=0
load_once() { # load_once SCEN PROXY REP ATTEMPT
  local scen="$1" proxy="$2" rep="$3" attempt="$4" path=/small conns=50 extra=()
  case "$scen" in
    b) extra=(-H "Connection: close") ;;
    c) path=/big; conns=10 ;;
  esac
  start_proxy "$proxy"
  run_wrk -t1 -c"$conns" -d"${WARMUP}s" "${extra[@]}" "http://127.0.0.1:$PORT_PROXY$path" >/dev/null
  local c0 c1 json
  local perf_pid=""
  if [ -n "$PERF_DIR" ] && [ "$scen" = a ]; then
    local pids
    pids=$(proc_set "$PROXY_PID" | paste -sd,)
    perf record -e cpu-clock -F 1999 ${PERF_CALLGRAPH:+--call-graph "$PERF_CALLGRAPH"} -p "$pids" \
      -o "$PERF_DIR/perf-$proxy.data" -- sleep "$DURATION" >>"$LOG" 2>&1 &
    perf_pid=$!
  fi
  local sb st so
  read -r sb st < <(sys_ticks)
  so=$(( $(cpu_ticks "${ORIGIN_PID[1]}") + $(cpu_ticks "${ORIGIN_PID[2]}") ))
  c0=$(cpu_ticks "$PROXY_PID") u0=$(user_ticks "$PROXY_PID")
  json=$(run_wrk -t1 -c"$conns" -d"${DURATION}s" --latency "${extra[@]}" "http://127.0.0.1:$PORT_PROXY$path")
  c1=$(cpu_ticks "$PROXY_PID") u1=$(user_ticks "$PROXY_PID")
  OTHERS=$(others_during "$sb" "$st" $((c1 - c0)) "$so")
  [ -z "$perf_pid" ] || wait "$perf_pid" || true
  stop_proxy
  [ -n "$json" ] || { say "($scen) $proxy: wrk gave no result"; OTHERS=0; return 0; }
  record "{\"scenario\":\"$scen\",\"proxy\":\"$proxy\",\"rep\":$rep,\"attempt\":$attempt,\"others_during_pct\":$OTHERS,\"conns\":$conns,\"cpu_ticks\":$((c1 - c0)),\"user_ticks\":$((u1 - u0)),\"clk_tck\":$CLK_TCK,\"wrk\":$json}"
  say "($scen) $proxy rep $rep: $(python3 "$BENCH_DIR/report.py" --one "$(tail -1 "$RAW")")"
}

# (d) h2c downstream: h2load (one thread on CPU 0) with 50 connections x 10 streams, small GETs.
h2_scenario() { # h2_scenario PROXY REP
  idle_gate "${FUNCNAME[0]%%_*} $*"
  local proxy="$1" rep="$2" out c0 c1 url="http://127.0.0.1:$PORT_PROXY_H2/small"
  start_proxy "$proxy"
  taskset -c 0 h2load -t1 -c50 -m10 -D "$WARMUP" "$url" >>"$LOG" 2>&1 || true
  c0=$(cpu_ticks "$PROXY_PID")
  out=$(taskset -c 0 h2load -t1 -c50 -m10 -D "$DURATION" "$url" 2>&1) || true
  c1=$(cpu_ticks "$PROXY_PID")
  stop_proxy
  { echo "--- h2load $proxy"; echo "$out"; } >> "$LOG"
  local json
  json=$(echo "$out" | python3 -c '
import json, re, sys
t = sys.stdin.read()
rps = re.search(r"finished in ([0-9.]+)s, ([0-9.]+) req/s", t)
req = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", t)
codes = re.search(r"status codes: (\d+) 2xx", t)
if rps and req:
    print(json.dumps({"secs": float(rps.group(1)), "rps": float(rps.group(2)), "done": int(req.group(3)),
                      "succeeded": int(req.group(4)), "failed": int(req.group(5)), "errored": int(req.group(6)),
                      "ok_2xx": int(codes.group(1)) if codes else 0}))')
  [ -n "$json" ] || { say "(d) $proxy: h2load gave no result"; return 0; }
  record "{\"scenario\":\"d\",\"proxy\":\"$proxy\",\"rep\":$rep,\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"h2load\":$json}"
  say "(d) $proxy rep $rep: $(python3 "$BENCH_DIR/report.py" --one "$(tail -1 "$RAW")")"
}

# (e) RSS with N idle keep-alive client connections.
idle_scenario() { # idle_scenario PROXY REP
  idle_gate "${FUNCNAME[0]%%_*} $*"
  local proxy="$1" rep="$2"
  start_proxy "$proxy"
  run_wrk -t1 -c50 -d1s "http://127.0.0.1:$PORT_PROXY/small" >/dev/null
  sleep 1
  local base idle after ready="$W/idle.ready" pypid
  base=$(rss_kib "$PROXY_PID")
  rm -f "$ready"
  start_bg "$W/logs/idle.out" taskset -c 0 python3 "$BENCH_DIR/idle_conns.py" \
    --port "$PORT_PROXY" -n "$IDLE_CONNS" --ready-file "$ready" --hold 60
  pypid=$LASTPID
  for _ in $(seq 600); do grep -q READY "$ready" 2>/dev/null && break; alive "$pypid" || break; sleep 0.1; done
  sleep 2
  idle=$(rss_kib "$PROXY_PID")
  local okc
  okc=$(sed -n 's/^READY ok=\([0-9]*\).*/\1/p' "$ready" 2>/dev/null | head -1)
  stop_pid "$pypid" TERM
  sleep 2
  after=$(rss_kib "$PROXY_PID")
  stop_proxy
  record "{\"scenario\":\"e\",\"proxy\":\"$proxy\",\"rep\":$rep,\"conns_requested\":$IDLE_CONNS,\"conns_ok\":${okc:-0},\"rss_base_kib\":$base,\"rss_idle_kib\":$idle,\"rss_after_kib\":$after}"
  say "(e) $proxy rep $rep: ${okc:-0}/$IDLE_CONNS idle conns, RSS base ${base} KiB, with conns ${idle} KiB, after close ${after} KiB"
}

# (f) one of the two origins fails under keep-alive load; count failed requests. Variant "kill":
# SIGKILL (connections are reset or closed, new ones refused). Variant "stop": SIGSTOP, the origin
# hangs (the kernel still accepts connections and requests, nothing answers); the proxies run
# their configuration with connect/send/read timeouts all HANG_TIMEOUT s (proxy-w1-hang.conf,
# haproxy-hang.cfg) and wrk waits up to 10 s for a response, so what the client sees is each
# proxy's own answer. Either way the origin is killed and started again afterwards.
failover_scenario() { # failover_scenario PROXY REP METHOD VARIANT
  idle_gate "${FUNCNAME[0]%%_*} $*"
  local proxy="$1" rep="$2" method="$3" variant="${4:-kill}" path=/small signal=KILL wrk_extra=()
  [ "$method" = POST ] && path=/post
  if [ "$variant" = stop ]; then
    signal=STOP
    CONF_TAG=-hang
    wrk_extra=(--timeout 10s)
  fi
  start_proxy "$proxy"
  CONF_TAG=""
  if ! alive "$PROXY_PID"; then
    say "(f) $proxy $variant $method rep $rep: not measured (the proxy did not start)"
    return 0
  fi
  run_wrk -t1 -c20 -d1s "http://127.0.0.1:$PORT_PROXY$path" >/dev/null
  local kill_at json victim
  kill_at=$(python3 -c "print(max(1.0, $DURATION * 0.3))")
  victim=${ORIGIN_PID[2]}
  ( sleep "$kill_at"; kill -s "$signal" "$victim" 2>/dev/null ) &
  local killer=$!
  json=$(WRK_METHOD=$method run_wrk -t1 -c20 -d"${DURATION}s" "${wrk_extra[@]}" "http://127.0.0.1:$PORT_PROXY$path")
  wait "$killer" 2>/dev/null || true
  kill -KILL "$victim" 2>/dev/null || true # a stopped process dies of SIGKILL too
  wait "$victim" 2>/dev/null || true
  stop_proxy
  start_origin 2
  [ -n "$json" ] || { say "(f) $proxy: wrk gave no result"; return 0; }
  record "{\"scenario\":\"f\",\"variant\":\"$variant\",\"proxy\":\"$proxy\",\"rep\":$rep,\"method\":\"$method\",\"kill_at_s\":$kill_at,\"wrk\":$json}"
  say "(f) $proxy $variant $method rep $rep: $(python3 "$BENCH_DIR/report.py" --one "$(tail -1 "$RAW")")"
}

# (g) HUP every 0.3 s under keep-alive load; count failed requests.
reload_scenario() { # reload_scenario PROXY REP
  idle_gate "${FUNCNAME[0]%%_*} $*"
  local proxy="$1" rep="$2"
  start_proxy "$proxy"
  run_wrk -t1 -c50 -d1s "http://127.0.0.1:$PORT_PROXY/small" >/dev/null
  local pid=$PROXY_PID json reloads
  (
    n=0; end=$(( $(date +%s%N) + DURATION * 1000000000 - 300000000 ))
    while [ "$(date +%s%N)" -lt "$end" ]; do sleep 0.3; kill -HUP "$pid" 2>/dev/null && n=$((n + 1)); done
    echo "$n" > "$W/reloads"
  ) &
  local hupper=$!
  json=$(run_wrk -t1 -c50 -d"${DURATION}s" "http://127.0.0.1:$PORT_PROXY/small")
  wait "$hupper" 2>/dev/null || true
  reloads=$(cat "$W/reloads" 2>/dev/null || echo 0)
  sleep 0.5
  stop_proxy
  [ -n "$json" ] || { say "(g) $proxy: wrk gave no result"; return 0; }
  record "{\"scenario\":\"g\",\"proxy\":\"$proxy\",\"rep\":$rep,\"reloads\":$reloads,\"wrk\":$json}"
  say "(g) $proxy rep $rep: $reloads reloads; $(python3 "$BENCH_DIR/report.py" --one "$(tail -1 "$RAW")")"
}

# (h) 2 workers on both cores vs 1 worker on CPU 1 (wrk and origins stay on CPU 0, so with 2
# workers the proxy shares CPU 0 with the load generator).
scaling_scenario() { # scaling_scenario PROXY REP WORKERS
  local attempt
  for attempt in $(seq "$MAX_ATTEMPTS"); do
    idle_gate "${FUNCNAME[0]%%_*} $*"
    scaling_once "$@" "$attempt"
    [ "$OTHERS" -le "$OTHERS_LIMIT" ] && return 0
    say "others used ${OTHERS}% of the machine during that measurement"
  done
  CONTENTION+=("$*: others used ${OTHERS}% of the machine during the last of $MAX_ATTEMPTS attempts")
}
scaling_once() { # scaling_once PROXY REP WORKERS ATTEMPT
  local proxy="$1" rep="$2" workers="$3" attempt="$4" cpus=1
  [ "$workers" = 2 ] && cpus=0,1
  start_proxy "$proxy" "$workers" "$cpus"
  run_wrk -t1 -c50 -d"${WARMUP}s" "http://127.0.0.1:$PORT_PROXY/small" >/dev/null
  local c0 c1 json
  local sb st so
  read -r sb st < <(sys_ticks)
  so=$(( $(cpu_ticks "${ORIGIN_PID[1]}") + $(cpu_ticks "${ORIGIN_PID[2]}") ))
  c0=$(cpu_ticks "$PROXY_PID")
  json=$(run_wrk -t1 -c50 -d"${DURATION}s" --latency "http://127.0.0.1:$PORT_PROXY/small")
  c1=$(cpu_ticks "$PROXY_PID")
  OTHERS=$(others_during "$sb" "$st" $((c1 - c0)) "$so")
  stop_proxy
  [ -n "$json" ] || { say "(h) $proxy: wrk gave no result"; OTHERS=0; return 0; }
  record "{\"scenario\":\"h\",\"proxy\":\"$proxy\",\"rep\":$rep,\"attempt\":$attempt,\"others_during_pct\":$OTHERS,\"workers\":$workers,\"cpus\":\"$cpus\",\"cpu_ticks\":$((c1 - c0)),\"clk_tck\":$CLK_TCK,\"wrk\":$json}"
  say "(h) $proxy w$workers rep $rep: $(python3 "$BENCH_DIR/report.py" --one "$(tail -1 "$RAW")")"
}

# ---------------------------------------------------------------------------------------------
# Is the machine otherwise idle? Other engineers' cargo/rustc/test runs distort every figure.
# ---------------------------------------------------------------------------------------------
foreign_load() { # prints a description of busy foreign processes, empty when idle
  local mine=" $$ ${PIDS[*]} " busy=""
  while read -r pid ppid pcpu comm; do
    case " $mine " in *" $pid "*|*" $ppid "*) continue ;; esac
    case "$comm" in
      cargo|rustc|cc|cc1|ld|ld.lld|rust-lld|clippy-driver|rustfmt|node|make|cmake|imbang*)
        busy+="$comm($pid) " ;;
    esac
  done < <(ps -eo pid=,ppid=,pcpu=,comm=)
  # And the CPU actually used by anything over one second (we run nothing at this point).
  local a b
  a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local total=0 idle
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$(( (b[4] - a[4]) + (b[5] - a[5]) ))
  local busy_pct=$(( total > 0 ? 100 * (total - idle) / total : 0 ))
  if [ "$busy_pct" -gt 15 ]; then busy+="cpu-busy=${busy_pct}% "; fi
  echo "$busy"
}
# Before each measurement (nothing of ours is busy then): CPU used by others over 0.5 s, in %.
others_busy_pct() {
  local a b total=0 idle i
  a=($(head -1 /proc/stat)); sleep 0.5; b=($(head -1 /proc/stat))
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  idle=$(( (b[4] - a[4]) + (b[5] - a[5]) ))
  echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}
BUSY=0
idle_gate() { # idle_gate LABEL: wait (up to 2 min) until others use < 10% CPU; sets BUSY
  local deadline=$(( $(date +%s) + 120 )) said=0
  while :; do
    BUSY=$(others_busy_pct)
    [ "$BUSY" -lt 10 ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      CONTENTION+=("$1: others used ${BUSY}% CPU just before it")
      say "measuring $1 under contention (others ${BUSY}%)"
      return 0
    fi
    [ "$said" = 1 ] || say "others use ${BUSY}% CPU; waiting before $1"
    said=1
    sleep 5
  done
}
CONTENTION=()
wait_idle() { # wait_idle LABEL: up to 20 min, polling every 30 s
  local what deadline=$(( $(date +%s) + 1200 ))
  while :; do
    what=$(foreign_load)
    [ -z "$what" ] && return 0
    if [ "$(date +%s)" -ge "$deadline" ]; then
      say "machine still busy after 20 min ($what); measuring under contention"
      CONTENTION+=("$1: $what")
      return 0
    fi
    say "machine busy ($what); waiting 30 s"
    sleep 30
  done
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
START=$(date +%s)
install_tools
ulimit -n "$(ulimit -Hn)"
if [ "$BUILD" = 1 ]; then
  say "building imbang --release"
  (cd "$REPO" && cargo build --release --quiet)
fi
[ -x "$IMBANG" ] || { echo "run.sh: $IMBANG missing (build with cargo build --release)" >&2; exit 1; }
# The source the binary was built from, noted now: edits made while the run goes on do not
# change what is measured.
IMBANG_COMMIT=$(git -C "$REPO" rev-parse --short HEAD)
IMBANG_DIRTY=$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock | wc -l)
write_configs
"$IMBANG" -t -q -p "$W/" -c "$W/proxy-w1.conf" 2>>"$LOG" || { echo "run.sh: imbang rejects the proxy config" >&2; exit 1; }
nginx -t -q -p "$W/" -c "$W/proxy-w1.conf" 2>>"$LOG"
haproxy -c -q -f "$W/haproxy.cfg" >>"$LOG" 2>&1

wait_idle "start"
# Another run on this machine (another worktree) would answer our health checks: refuse.
for port in "$PORT_O1" "$PORT_O2" "$PORT_PROXY" "$PORT_PROXY_H2"; do
  if [ -n "$(ss -Hltn "sport = :$port")" ]; then
    echo "run.sh: port $port is in use (another benchmark run?); try --port-base" >&2
    exit 1
  fi
done
start_origin 1
start_origin 2

rotate() { # rotate REP: proxies in an order that changes per repetition
  local n=${#PROXIES[@]} i
  for ((i = 0; i < n; i++)); do echo "${PROXIES[$(( (i + $1) % n ))]}"; done
}
for rep in $(seq "$REPS"); do
  say "=== repetition $rep of $REPS"
  other=$(foreign_load)
  [ -z "$other" ] || { CONTENTION+=("rep $rep: $other"); say "other load on the machine: $other"; }
  for scen in a b c; do
    has "$scen" || continue
    for p in $(rotate "$rep"); do load_scenario "$scen" "$p" "$rep"; done
    if [ "$scen" = c ]; then load_scenario c nginx-buf64k "$rep"; fi
  done
  if has d; then for p in $(rotate "$rep"); do h2_scenario "$p" "$rep"; done; fi
  if has e; then for p in $(rotate "$rep"); do idle_scenario "$p" "$rep"; done; fi
  if has f; then
    for v in ${VARIANTS//,/ }; do for m in ${METHODS//,/ }; do
      for p in $(rotate "$rep"); do failover_scenario "$p" "$rep" "$m" "$v"; done
    done; done
  fi
  if has g; then for p in nginx imbang; do reload_scenario "$p" "$rep"; done; fi
  if has h; then
    for p in imbang nginx; do for wk in 1 2; do scaling_scenario "$p" "$rep" "$wk"; done; done
  fi
done
END=$(date +%s)

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
META="$W/meta.json"
python3 - "$META" <<EOF
import json, subprocess, sys, platform
def out(cmd):
    try:
        r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception:
        return "?"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip(); break
meta = {
  "date": out("date -u +%Y-%m-%dT%H:%M:%SZ"),
  "command": """$COMMAND""",
  "runtime_s": $END - $START,
  "reps": $REPS, "duration_s": $DURATION, "warmup_s": $WARMUP, "idle_conns": $IDLE_CONNS,
  "quick": bool($QUICK),
  "machine": {"nproc": int(out("nproc")), "cpu_model": cpu, "kernel": platform.release(),
              "mem": out("free -h | awk '/Mem:/ {print \$2}'")},
  "versions": {"nginx": out("nginx -v"), "haproxy": out("haproxy -v"), "wrk": out("wrk -v"),
               "imbang": out("$IMBANG -v"), "imbang_commit": "$IMBANG_COMMIT",
               "imbang_dirty": $IMBANG_DIRTY != 0,
               "rustc": out("rustc -V"), "python": out("python3 -V")},
  "contention": $(printf '%s\n' "${CONTENTION[@]:-}" | python3 -c 'import json,sys; print(json.dumps([l.strip() for l in sys.stdin if l.strip()]))'),
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
EOF
python3 "$BENCH_DIR/report.py" --raw "$RAW" --meta "$META" --out "$OUT"
say "done in $((END - START)) s: $OUT/RESULTS.md, $OUT/results.json"
