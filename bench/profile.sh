#!/usr/bin/env bash
# Where imbang's CPU per request goes (scenario (a)), and how many allocations a request costs.
#
#   bench/profile.sh            -> bench/out/profile/{perf-imbang.txt, perf-nginx.txt, callers-imbang.txt, alloc-count.txt}
#
# Builds imbang --release with line tables (target/profiling, same LTO settings), runs scenario (a)
# once for nginx and imbang with `perf record -e cpu-clock` attached to the proxy (hardware counters
# are often unavailable in VMs; cpu-clock sampling works everywhere perf does), then the counting-
# allocator binary in bench/alloc-count. Installs linux-perf with apt-get if perf is missing.
set -euo pipefail
BENCH_DIR="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$BENCH_DIR/.." && pwd)"
OUT="$BENCH_DIR/out/profile"
mkdir -p "$OUT"
DURATION="${DURATION:-10}"

if ! command -v perf >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
(cd "$REPO" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet --target-dir target/profiling)

# Flat profile (self time per symbol) over a whole run, then a shorter one with DWARF call graphs.
PERF_DIR="$OUT" IMBANG_BIN="$REPO/target/profiling/release/imbang" \
  "$BENCH_DIR/run.sh" --no-build --only a --reps 1 --duration "$DURATION" --out "$OUT/run-flat"
for p in imbang nginx; do
  perf report -i "$OUT/perf-$p.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -60 > "$OUT/perf-$p.txt"
  perf report -i "$OUT/perf-$p.data" --no-children --sort dso --stdio 2>/dev/null \
    | grep -v '^#' | grep -v '^$' | head -15 > "$OUT/perf-$p-dso.txt"
done
mv "$OUT/perf-imbang.data" "$OUT/perf-imbang-flat.data"
PERF_DIR="$OUT" PERF_CALLGRAPH=dwarf,16384 IMBANG_BIN="$REPO/target/profiling/release/imbang" \
  "$BENCH_DIR/run.sh" --no-build --only a --reps 1 --duration 3 --out "$OUT/run-callgraph"
perf report -i "$OUT/perf-imbang.data" --children --sort symbol --stdio -g none --percent-limit 2 2>/dev/null \
  | grep -v '^#' | grep -v '^$' | head -80 > "$OUT/callers-imbang.txt"

(cd "$BENCH_DIR/alloc-count" && cargo build --release --quiet && ./target/release/imbang-alloc-count 20000) \
  2>/dev/null | tee "$OUT/alloc-count.txt"
echo "profile.sh: results in $OUT" >&2
