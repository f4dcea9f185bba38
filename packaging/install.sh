#!/usr/bin/env bash
# Installs imbang as a systemd service: the binary, the imbang system user it runs as,
# /etc/imbang with a sites/ directory, the unit and the logrotate file. Run from the repository as
# root after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
install -m 755 target/release/imbang /usr/local/sbin/imbang
# The user the unit runs imbang as (and `user imbang;` drops to when started by hand as root):
# no login, no home, a group of its own.
getent passwd imbang >/dev/null ||
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin imbang
install -d /etc/imbang/sites
# The unit makes /var/log/imbang the user's at each start (LogsDirectory=); logs of an earlier
# install, made by root, become the user's here.
install -d -o imbang -g imbang -m 755 /var/log/imbang
find /var/log/imbang -maxdepth 1 -type f -exec chown imbang:imbang {} +
[ -e /etc/imbang/imbang.conf ] || install -m 644 packaging/imbang.conf /etc/imbang/imbang.conf
[ -e /etc/imbang/sites/example.conf ] || install -m 644 packaging/sites/example.conf /etc/imbang/sites/example.conf
install -m 644 packaging/imbang.service /etc/systemd/system/imbang.service
install -m 644 packaging/imbang.logrotate /etc/logrotate.d/imbang
systemctl daemon-reload
echo "installed: edit /etc/imbang/sites/*.conf, then: systemctl enable --now imbang"
