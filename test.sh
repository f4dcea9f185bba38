#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test. A fresh Debian machine
# passes with this script alone.
#   node       the lesson's end-to-end test (tests/seed.rs)
#   nginx      side-by-side comparisons with nginx 1.22 (Debian's nginx-light; those tests
#              skip with a message when it is absent)
#   openssl    the compatibility corpus's TLS certificate (tests/compat.rs)
#   curl       one HTTP/2-over-TLS check with a real client (tests/tls.rs)
#   pebble     Let's Encrypt's test ACME server, the CA of the ACME tests (tests/acme.rs; they
#              skip with a message when it is absent)
#   systemd-analyze, setpriv   the systemd unit's score and credentials (tests/packaging.rs)
#   promtool   Prometheus's linter on the metrics page (tests/metrics.rs; Debian's prometheus)
#   htpasswd   bcrypt password files for auth_basic (tests/auth_basic.rs skips bcrypt without it)
#   chromium   the dashboard rendered by a real browser, driven over the DevTools protocol
#              (tests/dashboard_browser.rs; it skips with a message when it is absent)
#   redis      a real Redis client and server through stream { } (tests/stream.rs; skips with
#              a message when absent)
set -euo pipefail
cd "$(dirname "$0")"

# command  Debian package
needs=(
  "node /usr/bin/node nodejs"
  "nginx /usr/sbin/nginx nginx-light"
  "openssl /usr/bin/openssl openssl"
  "curl /usr/bin/curl curl"
  "pebble /usr/bin/pebble pebble"
  "systemd-analyze /usr/bin/systemd-analyze systemd"
  "setpriv /usr/bin/setpriv util-linux"
  "promtool /usr/bin/promtool prometheus"
  "htpasswd /usr/bin/htpasswd apache2-utils"
  "chromium /usr/bin/chromium chromium"
  "redis-server /usr/bin/redis-server redis-server"
)
missing=()
for entry in "${needs[@]}"; do
  read -r name path package <<<"$entry"
  if ! command -v "$name" >/dev/null 2>&1 && [ ! -x "$path" ]; then
    missing+=("$package")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "test.sh: the tests need these Debian packages: ${missing[*]}." >&2
    echo "         Install them, e.g. 'sudo apt-get install ${missing[*]}', then run ./test.sh again." >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is missing: install Rust from https://rustup.rs, then run ./test.sh again." >&2
  exit 1
fi

cargo test --all-targets "$@"
cargo test --doc "$@"
