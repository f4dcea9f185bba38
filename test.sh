#!/usr/bin/env bash
# The test command: installs what the tests need (node for the lesson's end-to-end test), then
# runs every test. A fresh Debian machine passes with this script alone.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: node is missing; installing nodejs with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
  else
    echo "test.sh: the lesson's end-to-end test needs node (Node.js)." >&2
    echo "         Install it, e.g. 'sudo apt-get install nodejs', then run ./test.sh again." >&2
    exit 1
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "test.sh: cargo is missing: install Rust from https://rustup.rs, then run ./test.sh again." >&2
  exit 1
fi

cargo test --all-targets "$@"
cargo test --doc "$@"
