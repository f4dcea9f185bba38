#!/usr/bin/env bash
# Reloads under load (issue 7), nginx and imbang side by side: `kill -HUP` every 0.3 s to the
# proxy while wrk keeps 50 keep-alive connections busy for 30 s; failed requests for both go to
# bench/out/reload/RESULTS.md. Scenario (g) of bench/run.sh, which also runs it in a full run.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bench/run.sh --only g --reps 1 --duration 30 --out bench/out/reload "$@"
