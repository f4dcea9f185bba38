#!/usr/bin/env bash
# Failover under load (issue 5): one of two origins gets SIGKILL while wrk keeps keep-alive
# connections busy; client-visible errors for GET and POST, for nginx, HAProxy and imbang, go to
# bench/out/failover/RESULTS.md. Scenario (f) of bench/run.sh, which also runs it in a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/run.sh --only f --reps 3 --out bench/out/failover "$@"
