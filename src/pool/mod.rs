//! Upstream connections: keep-alive HTTP/1.1 connections per peer address, shared by all threads
//! and kept across reloads (the pool lives beside the snapshots, not inside them).
//!
//! Purpose-built on `hyper::client::conn::http1` rather than hyper-util's legacy client, for two
//! reasons the request path depends on:
//! - a connect failure is seen *before* the request is handed over, so the request (and its body)
//!   is still ours to send to the next peer;
//! - `try_send_request` gives the request back when a pooled connection turned out to be closed
//!   before anything was written, so that case is retried on a fresh connection and never
//!   becomes a 502.

pub mod body;
pub mod seen;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use tokio::net::TcpStream;
use tokio::time::Instant;

pub use body::UpstreamBody;
pub use seen::Seen;
use seen::Watched;

/// A connection ready to carry one request.
pub struct Conn {
    pub sender: http1::SendRequest<UpstreamBody>,
    /// True when taken from the idle list (it may have been closed by the peer meanwhile).
    pub reused: bool,
    pub age: Age,
    /// What its socket saw (bytes received, a reset, a write timeout).
    pub seen: Arc<Seen>,
}

/// How much a connection has been used: requests carried and when it was opened.
#[derive(Clone, Copy, Debug)]
pub struct Age {
    pub requests: u64,
    pub opened: Instant,
}

/// nginx's `keepalive_requests` / `keepalive_time` for upstream connections.
#[derive(Clone, Copy, Debug)]
pub struct Reuse {
    pub max_requests: u64,
    pub max_age: Duration,
}

impl Reuse {
    /// Whether a connection that has just carried one more request may be kept.
    fn allows(&self, age: Age) -> bool {
        age.requests < self.max_requests && age.opened.elapsed() < self.max_age
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect() failed ({})", crate::error_log::errno_text(.0))]
    Io(#[source] io::Error),
    #[error("upstream timed out (110: Connection timed out)")]
    Timeout,
    #[error("upstream handshake failed")]
    Handshake(#[source] hyper::Error),
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
    age: Age,
    seen: Arc<Seen>,
}

/// Idle keep-alive connections by peer address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>>>,
}

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// An idle connection to `addr` that is still open and younger than `idle_timeout`, or a new one.
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        idle_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        while let Some((mut sender, age, seen)) = self.take_idle(addr, idle_timeout) {
            // Ready resolves at once for a live idle connection; it fails if the peer closed it.
            // Bounded all the same: a connection that does not become ready is replaced, never
            // waited on (the request's own timeouts start only once it is sent).
            let ready = tokio::time::timeout(connect_timeout, sender.ready()).await;
            if matches!(ready, Ok(Ok(()))) {
                return Ok(Conn {
                    sender,
                    reused: true,
                    age,
                    seen,
                });
            }
        }
        connect(addr, connect_timeout, send_timeout)
            .await
            .map(|(sender, seen)| Conn {
                sender,
                reused: false,
                seen,
                age: Age {
                    requests: 0,
                    opened: Instant::now(),
                },
            })
    }

    fn take_idle(
        &self,
        addr: SocketAddr,
        idle_timeout: Duration,
    ) -> Option<(http1::SendRequest<UpstreamBody>, Age, Arc<Seen>)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(conn) = list.pop() {
            if !conn.sender.is_closed() && now.duration_since(conn.since) < idle_timeout {
                return Some((conn.sender, conn.age, conn.seen));
            }
        }
        None
    }

    /// Returns a connection whose response was read to the end, keeping at most `max_idle`
    /// idle connections for `addr` (the oldest is closed first), unless it has carried
    /// `keepalive_requests` requests or is older than `keepalive_time`.
    pub fn checkin(
        &self,
        addr: SocketAddr,
        sender: http1::SendRequest<UpstreamBody>,
        age: Age,
        seen: Arc<Seen>,
        max_idle: usize,
        reuse: Reuse,
    ) {
        let age = Age {
            requests: age.requests + 1,
            ..age
        };
        if sender.is_closed() || max_idle == 0 || !reuse.allows(age) {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle {
            sender,
            since: Instant::now(),
            age,
            seen,
        });
    }
}

/// TCP connect with a timeout, TCP_NODELAY, then the HTTP/1 handshake; the connection is driven
/// by its own task until either side closes it.
async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    send_timeout: Duration,
) -> Result<(http1::SendRequest<UpstreamBody>, Arc<Seen>), ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    let _ = stream.set_nodelay(true);
    let io = Watched::new(stream, send_timeout);
    let seen = io.seen();
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        // Errors here surface to the request that owns the connection.
        let _ = conn.with_upgrades().await;
    });
    Ok((sender, seen))
}
