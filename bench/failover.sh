#!/usr/bin/env bash
# Failover under load (issue 5): one of two origins fails while wrk keeps 20 keep-alive
# connections busy, for GET and POST, behind nginx, HAProxy and imbang in turn. Two variants:
# "kill" (SIGKILL: connections reset or closed, new ones refused) and "stop" (SIGSTOP: the origin
# hangs; the proxies run with equal 2 s connect/send/read timeouts). Client-visible errors go to
# bench/out/failover/RESULTS.md. Scenario (f) of bench/run.sh, which also runs it in a full run.
# Bounded: each measurement lasts --duration (10 s) plus a 1 s warm-up and the origin's restart.
#   bench/failover.sh --reps 1 --variants stop --methods POST --proxies imbang   (options of run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/run.sh --only f --reps 3 --out bench/out/failover "$@"
