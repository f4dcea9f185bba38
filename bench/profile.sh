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
# perf's text, without comments, blank lines and trailing padding (whole report first: no SIGPIPE).
report() { perf report "$@" --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/ *$//' || true; }
for p in imbang nginx haproxy; do
  [ -f "$OUT/perf-$p.data" ] || continue
  report -i "$OUT/perf-$p.data" --no-children --sort dso,symbol -F overhead,dso,sym > "$OUT/perf-$p.full.txt"
  head -70 "$OUT/perf-$p.full.txt" > "$OUT/perf-$p.txt"
  report -i "$OUT/perf-$p.data" --no-children --sort dso -F overhead,dso > "$OUT/perf-$p-dso.txt"
done
mv "$OUT/perf-imbang.data" "$OUT/perf-imbang-flat.data"
PERF_DIR="$OUT" PERF_CALLGRAPH=dwarf,16384 IMBANG_BIN="$REPO/target/profiling/release/imbang" \
  "$BENCH_DIR/run.sh" --no-build --only a --reps 1 --duration 3 --out "$OUT/run-callgraph"
report -i "$OUT/perf-imbang.data" --children --sort symbol -g none --percent-limit 1.5 > "$OUT/callers-imbang.full.txt"
head -120 "$OUT/callers-imbang.full.txt" > "$OUT/callers-imbang.txt"

(cd "$BENCH_DIR/alloc-count" && cargo build --release --quiet && ./target/release/imbang-alloc-count 20000) \
  2>/dev/null | tee "$OUT/alloc-count.txt"
# Where those allocations come from: valgrind's DHAT on the same binary (debug line tables), keep-alive only.
if command -v valgrind >/dev/null || { apt-get install -y -qq valgrind >/dev/null 2>&1; }; then
  (cd "$BENCH_DIR/alloc-count" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet \
    --target-dir target/profiling)
  rm -f "$OUT"/dhat.out.*
  (cd "$OUT" && valgrind --tool=dhat --dhat-out-file="$OUT/dhat.out" \
    "$BENCH_DIR/alloc-count/target/profiling/release/imbang-alloc-count" 10000 proxy-only) >"$OUT/dhat.log" 2>&1 || true
  # 10,000 measured + 2,000 warm-up requests
  python3 "$BENCH_DIR/dhat_top.py" "$OUT/dhat.out" --requests 12000 --top 30 --depth 3 > "$OUT/alloc-sites.txt" || true
fi
echo "profile.sh: results in $OUT" >&2
