//! Sending log lines to a syslog server as nginx does (ngx_syslog.c): one UDP datagram per
//! line, `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG: line` (RFC 3164, local time), for `access_log
//! syslog:...` and `error_log syslog:...`.

use std::io::Write;
use std::net::SocketAddr;

use crate::config::model::SyslogSpec;

/// A syslog server's socket and the header of its messages.
#[derive(Debug)]
pub struct Syslog {
    socket: std::net::UdpSocket,
    facility: u8,
    severity: u8,
    /// ` HOSTNAME TAG: ` or ` TAG: ` (after the time).
    after_time: String,
}

impl Syslog {
    pub fn open(spec: &SyslogSpec) -> Result<Self, String> {
        let bind: SocketAddr = match spec.server {
            SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let failed = |e: std::io::Error| {
            format!(
                "connect() to syslog server {} failed ({})",
                spec.server,
                crate::error_log::errno_text(&e)
            )
        };
        let socket = std::net::UdpSocket::bind(bind).map_err(failed)?;
        socket.connect(spec.server).map_err(failed)?;
        // A full socket buffer drops the line rather than stall the worker (nginx's too).
        socket.set_nonblocking(true).map_err(failed)?;
        let after_time = match spec.hostname {
            true => format!(" {} {}: ", crate::proxy::hostname(), spec.tag),
            false => format!(" {}: ", spec.tag),
        };
        Ok(Self {
            socket,
            facility: spec.facility,
            severity: spec.severity,
            after_time,
        })
    }

    /// Sends `line` (its line end left out) as one message, with `severity` instead of the
    /// configured one when given (the error log's: each line's own level, as nginx).
    pub fn send(&self, line: &[u8], severity: Option<u8>) -> std::io::Result<()> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let pri = u16::from(self.facility) * 8 + u16::from(severity.unwrap_or(self.severity));
        let time = chrono::Local::now().format("%b %e %H:%M:%S");
        let mut message = Vec::with_capacity(24 + self.after_time.len() + line.len());
        let _ = write!(message, "<{pri}>{time}{}", self.after_time);
        message.extend_from_slice(line);
        self.socket.send(&message).map(|_| ())
    }
}
