#!/usr/bin/env bash
# Runs every fuzz target for a bounded time and prints executions and crashes per target.
#
#   fuzz/run.sh [seconds-per-target] [target...]     (default: 60 s, every target)
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and cargo-fuzz
# (`cargo install cargo-fuzz`). The main build and test suite do not need either.
#
# Seeds: fuzz/seeds/<target>/ (committed), plus for `config` every .conf under tests/compat and
# src/config/testdata and the inline configurations of the config tests. The corpus grows in
# fuzz/corpus/<target>/ and a failing input lands in fuzz/artifacts/<target>/ (both ignored by
# git); reproduce one by running the target on it:
# `target/fuzz/x86_64-unknown-linux-gnu/release/<target> fuzz/artifacts/<target>/crash-...`,
# then make it a test in tests/fuzz_regressions.rs.
#
# The targets run niced, in a scratch directory, and without network where `unshare` allows it
# (the config target's lowering resolves host names: offline, a name fails at once).
set -euo pipefail

secs=${1:-60}
shift || true
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
all=(config http1_request http1_chunked upstream_response regex proxy_protocol ssl_preread)
targets=("${@:-${all[@]}}")
target_dir=$root/target/fuzz
bin_dir=$target_dir/x86_64-unknown-linux-gnu/release

cd "$here"
# No sanitizer: imbang forbids unsafe code, so ASan finds little and halves the executions.
# Debug assertions on: an arithmetic overflow is a crash.
nice -n 10 cargo +nightly fuzz build -s none --debug-assertions --target-dir "$target_dir" >&2

# Configuration seeds from the tests' files and inline strings.
mkdir -p corpus/config
i=0
while IFS= read -r -d '' f; do
    cp "$f" "corpus/config/file-$i.conf"
    i=$((i + 1))
done < <(find "$root/tests/compat" "$root/src/config/testdata" -type f \( -name '*.conf' -o -path '*sites-enabled*' -o -path '*conf.d*' \) -print0)
python3 - "$root" corpus/config <<'PY'
import pathlib, re, sys
root, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
files = list((root / "src/config").glob("tests*.rs")) + list((root / "tests").glob("*.rs"))
n = 0
for f in files:
    text = f.read_text()
    lits = re.findall(r'r#"(.*?)"#', text, re.S)
    lits += [bytes(s, "utf-8").decode("unicode_escape") for s in re.findall(r'"((?:[^"\\\n]|\\.)*)"', text)]
    for s in lits:
        if len(s) > 12 and (";" in s or "{" in s):
            (out / f"inline-{n}.conf").write_text(s)
            n += 1
PY

# Dictionaries: the directive names imbang knows and the words of HTTP/1.1, so that mutations
# make tokens the parsers act on.
mkdir -p dicts
{
    grep -o 'd("[a-z0-9_]*"' "$root/src/config/directives.rs" | sed 's/^d(//'
    for w in '{' '}' ';' '"' "'" '$' '~' '~*' '^~' '=' ' on' ' off' 'server' 'location' 'upstream' \
        'http://' '127.0.0.1:' '[::1]:' 'default_server' '$1' '${host}' '(?<n>' ')' '\'; do
        printf '"%s"\n' "$(printf '%s' "$w" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    done
} | sort -u > dicts/config.dict
for w in 'HTTP/1.1' 'HTTP/1.0' '\x0D\x0A' '\x0D\x0A\x0D\x0A' 'Host: ' 'Content-Length: ' 'Transfer-Encoding: ' \
    'chunked' 'Connection: ' 'close' 'keep-alive' 'upgrade' 'Upgrade: ' 'Expect: ' '100-continue' \
    'Trailer: ' 'TE: trailers' 'GET ' 'POST ' 'HEAD ' 'CONNECT ' 'OPTIONS ' ' 101 ' ' 200 OK' ' 204 ' ' 304 ' \
    '0\x0D\x0A\x0D\x0A' ';ext=' 'http://'; do
    printf '"%s"\n' "$w"
done > dicts/http.dict
declare -A dict=([config]=config [http1_request]=http [http1_chunked]=http [upstream_response]=http)

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/logs"  # the default access and error logs
offline=()
if unshare --net true 2>/dev/null; then
    offline=(unshare --net)
elif unshare -rn true 2>/dev/null; then
    offline=(unshare -rn)
else
    echo "run.sh: no network namespace; the config target may look names up in DNS" >&2
fi

printf '%-18s %12s %8s %s\n' target executions crashes artifacts
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | sort)
    log=$scratch/$t.log
    seeds=()
    [ -d "seeds/$t" ] && seeds=("$here/seeds/$t")
    # -timeout: one input over 10 s is a hang; -rss_limit_mb: a target over 2 GB is a finding.
    (cd "$scratch" && nice -n 10 "${offline[@]}" "$bin_dir/$t" \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 -artifact_prefix="$here/artifacts/$t/" \
        ${dict[$t]:+-dict="$here/dicts/${dict[$t]}.dict"} \
        "$here/corpus/$t" "${seeds[@]}") >"$log" 2>&1 || status=1
    execs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
    found=$(comm -13 <(echo "$before") <(find "artifacts/$t" -type f | sort) | grep . || true)
    new=$(printf '%s' "$found" | grep -c . || true)
    printf '%-18s %12s %8s %s\n' "$t" "${execs:-?}" "$new" "$(echo "$found" | head -3 | tr '\n' ' ')"
    if [ -z "$execs" ]; then
        echo "$t did not run:" >&2
        tail -3 "$log" >&2
        status=1
    fi
    if [ "$new" -gt 0 ]; then
        grep -a -m1 -A12 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" >&2 || tail -20 "$log" >&2
    fi
    cp "$log" "artifacts/$t.last.log"
done
exit $status
