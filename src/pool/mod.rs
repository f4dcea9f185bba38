//! Upstream connections: keep-alive HTTP/1.1 connections per peer address, kept across reloads
//! (the pool lives beside the snapshots, not inside them), spoken to by imbang's own client
//! ([`h1`]) from the task serving the client.
//!
//! A connection is taken by one request and comes back when its response was read to the end.
//! An idle connection is checked before reuse without a system call: when its peer closed it,
//! the socket became readable and the check reads the FIN. Each worker thread prefers the
//! connections it opened (their readiness is reported to its own event loop).

pub mod body;
pub mod h1;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

pub use body::UpstreamBody;
pub use h1::{Answer, BodyKind, Broken, Failed, PeerBody};

/// A connection ready to carry one request.
pub struct Conn {
    pub io: h1::Conn,
    /// True when taken from the idle list (it may have been closed by the peer meanwhile).
    pub reused: bool,
    pub age: Age,
}

/// How much a connection has been used: requests carried and when it was opened.
#[derive(Clone, Copy, Debug)]
pub struct Age {
    pub requests: u64,
    pub opened: Instant,
}

/// nginx's `keepalive_requests` / `keepalive_time` / `keepalive_timeout` for upstream
/// connections.
#[derive(Clone, Copy, Debug)]
pub struct Reuse {
    pub max_requests: u64,
    pub max_age: Duration,
    /// How long a connection may stay idle.
    pub idle_timeout: Duration,
}

impl Reuse {
    /// Whether a connection that has just carried one more request may be kept, at `now`.
    fn allows(&self, age: Age, now: Instant) -> bool {
        age.requests < self.max_requests && now.duration_since(age.opened) < self.max_age
    }
}

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect() failed ({})", crate::error_log::errno_text(.0))]
    Io(#[source] io::Error),
    #[error("upstream timed out (110: Connection timed out)")]
    Timeout,
}

struct Idle {
    io: h1::Conn,
    /// When it has been idle for its group's `keepalive_timeout` (as nginx, the timeout in
    /// force when it was put back).
    until: Instant,
    age: Age,
}

/// Idle keep-alive connections by peer address.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<crate::FastMap<SocketAddr, Vec<Idle>>>,
    /// Whether the task that closes dead idle connections runs.
    sweeping: std::sync::atomic::AtomicBool,
}

/// How often idle connections are looked at, to close those the peer closed (their sockets
/// would wait in `CLOSE_WAIT` for the next request to that peer) or that were idle too long.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes idle connections that the peer closed, or that are idle past the
    /// `keepalive_timeout` of their group when they were checked in.
    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.retain(|c| now < c.until && c.io.is_reusable());
            !list.is_empty()
        });
    }

    /// Starts the sweeping task on the current runtime, once; it ends with the pool.
    fn start_sweeping(self: &Arc<Self>) {
        if self
            .sweeping
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SWEEP_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                pool.sweep(Instant::now());
            }
        });
    }

    /// An idle connection to `addr` that is still open and not idle past its
    /// `keepalive_timeout`, or a new one.
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<Conn, ConnectError> {
        if let Some((io, age)) = self.take_idle(addr) {
            return Ok(Conn {
                io,
                reused: true,
                age,
            });
        }
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            io: h1::Conn::new(stream, send_timeout),
            reused: false,
            age: Age {
                requests: 0,
                opened: Instant::now(),
            },
        })
    }

    /// The newest usable idle connection to `addr`, this thread's first. Connections idle past
    /// their `keepalive_timeout` or closed by the peer are dropped on the way.
    fn take_idle(&self, addr: SocketAddr) -> Option<(h1::Conn, Age)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        list.retain(|c| now < c.until);
        let me = std::thread::current().id();
        loop {
            let i = list
                .iter()
                .rposition(|c| c.io.home == me)
                .or(list.len().checked_sub(1))?;
            let conn = list.remove(i);
            if conn.io.is_reusable() {
                return Some((conn.io, conn.age));
            }
        }
    }

    /// Returns a connection whose response was read to the end, keeping at most `max_idle`
    /// idle connections for `addr` (the oldest is closed first), unless it has carried
    /// `keepalive_requests` requests or is older than `keepalive_time` (at `now`).
    pub fn checkin(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut io: h1::Conn,
        age: Age,
        max_idle: usize,
        reuse: Reuse,
        now: Instant,
    ) {
        let age = Age {
            requests: age.requests + 1,
            ..age
        };
        if max_idle == 0 || !reuse.allows(age, now) {
            return;
        }
        io.settle();
        self.start_sweeping();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() >= max_idle {
            list.remove(0);
        }
        list.push(Idle {
            io,
            until: now + reuse.idle_timeout,
            age,
        });
    }
}
