#!/usr/bin/env bash
# Installs imbang as a systemd service: the binary, /etc/imbang with a sites/ directory, the
# unit and the logrotate file. Run from the repository as root after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
install -m 755 target/release/imbang /usr/local/sbin/imbang
install -d /etc/imbang/sites /var/log/imbang
[ -e /etc/imbang/imbang.conf ] || install -m 644 packaging/imbang.conf /etc/imbang/imbang.conf
[ -e /etc/imbang/sites/example.conf ] || install -m 644 packaging/sites/example.conf /etc/imbang/sites/example.conf
install -m 644 packaging/imbang.service /etc/systemd/system/imbang.service
install -m 644 packaging/imbang.logrotate /etc/logrotate.d/imbang
systemctl daemon-reload
echo "installed: edit /etc/imbang/sites/*.conf, then: systemctl enable --now imbang"
