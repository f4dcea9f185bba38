//! `syslog:` targets of `access_log` (nginx's ngx_syslog.c): `server=address[:port]` (UDP, port
//! 514 by default), `facility=`, `severity=`, `tag=`, `nohostname`, comma-separated, with
//! nginx's checks and messages.

use super::{Lower, Span};
use crate::config::model::SyslogSpec;
use crate::config::values;

/// nginx's facility names, in number order.
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "intern", "lpr", "news", "uucp", "clock", "authpriv",
    "ftp", "ntp", "audit", "alert", "cron", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// nginx's severity names, in number order.
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "error", "warn", "notice", "info", "debug",
];

impl Lower<'_> {
    /// The parameters after `syslog:`.
    pub(super) fn syslog(&mut self, text: &str, span: Span) -> Option<SyslogSpec> {
        let (mut server, mut facility, mut severity, mut tag) = (None, None, None, None);
        let mut hostname = true;
        for p in text.split(',') {
            let duplicate = |what: &str| format!("duplicate syslog \"{what}\"");
            let failed = if let Some(addr) = p.strip_prefix("server=") {
                if server.is_some() {
                    Some(duplicate("server"))
                } else if addr.starts_with("unix:") {
                    Some(format!(
                        "syslog server \"{addr}\": unix sockets are not supported by imbang yet"
                    ))
                } else {
                    match values::socket_addrs(addr, 514, false) {
                        Ok(addrs) if !addrs.is_empty() => {
                            server = Some(addrs[0]);
                            None
                        }
                        _ => Some(format!("host not found in syslog server \"{addr}\"")),
                    }
                }
            } else if let Some(name) = p.strip_prefix("facility=") {
                match FACILITIES.iter().position(|f| *f == name) {
                    _ if facility.is_some() => Some(duplicate("facility")),
                    Some(i) => {
                        facility = Some(i as u8);
                        None
                    }
                    None => Some(format!("unknown syslog facility \"{name}\"")),
                }
            } else if let Some(name) = p.strip_prefix("severity=") {
                match SEVERITIES.iter().position(|s| *s == name) {
                    _ if severity.is_some() => Some(duplicate("severity")),
                    Some(i) => {
                        severity = Some(i as u8);
                        None
                    }
                    None => Some(format!("unknown syslog severity \"{name}\"")),
                }
            } else if let Some(t) = p.strip_prefix("tag=") {
                if tag.is_some() {
                    Some(duplicate("tag"))
                } else if t.len() > 32 {
                    Some("syslog tag length exceeds 32".to_owned())
                } else if !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    Some(
                        "syslog \"tag\" only allows alphanumeric characters and underscore"
                            .to_owned(),
                    )
                } else {
                    tag = Some(t.to_owned());
                    None
                }
            } else if p == "nohostname" {
                hostname = false;
                None
            } else {
                Some(format!("unknown syslog parameter \"{p}\""))
            };
            if let Some(message) = failed {
                self.invalid(message, span);
                return None;
            }
        }
        let Some(server) = server else {
            self.invalid("no syslog server specified".to_owned(), span);
            return None;
        };
        Some(SyslogSpec {
            server,
            facility: facility.unwrap_or(23),
            severity: severity.unwrap_or(6),
            tag: tag.unwrap_or_else(|| "nginx".to_owned()),
            hostname,
        })
    }
}
