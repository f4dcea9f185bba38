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
pub mod stream;
pub mod tls;

use std::collections::VecDeque;
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
    /// Connected, but the TLS handshake failed (`proxy_pass https://`). Boxed: the error
    /// stays as small as it is without TLS (it is in every checkout's result).
    #[error("{0}")]
    Handshake(Box<tls::HandshakeError>),
}

/// What idle connections are found by: the peer's address, and for TLS the settings and name
/// they were opened with ([`tls::UpstreamTls::key`]; 0 for a plain connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerKey {
    pub addr: SocketAddr,
    pub tls: u64,
}

/// One word for an IPv4 peer (the derived hash, through `SocketAddr`'s, was an out-of-line
/// call of ~70 instructions, twice per request: bench/PROFILE.md).
impl std::hash::Hash for PeerKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        match self.addr {
            SocketAddr::V4(a) => {
                h.write_u64((u64::from(a.ip().to_bits()) << 16 | u64::from(a.port())) ^ self.tls)
            }
            SocketAddr::V6(a) => {
                h.write_u128(a.ip().to_bits() ^ u128::from(self.tls));
                h.write_u16(a.port());
            }
        }
    }
}

impl PeerKey {
    pub fn new(addr: SocketAddr, tls: Option<tls::Connector<'_>>) -> Self {
        Self {
            addr,
            tls: tls.map_or(0, |t| t.key),
        }
    }
}

struct Idle {
    io: h1::Conn,
    /// When it was put back.
    since: Instant,
    /// When it has been idle for its group's `keepalive_timeout` (as nginx, the timeout in
    /// force when it was put back).
    until: Instant,
    age: Age,
}

/// One peer's idle connections, oldest first.
#[derive(Default)]
struct Parked {
    conns: VecDeque<Idle>,
    /// The `keepalive` of the last connection put back: how many may stay idle for longer than
    /// [`OVER_LIMIT_GRACE`].
    limit: usize,
}

impl Parked {
    /// Closes the oldest while there are more than `limit` and the oldest has been idle for
    /// [`OVER_LIMIT_GRACE`] at `now`.
    fn trim(&mut self, now: Instant) {
        while self.conns.len() > self.limit
            && self
                .conns
                .front()
                .is_some_and(|c| c.since + OVER_LIMIT_GRACE <= now)
        {
            self.conns.pop_front();
        }
    }
}

/// Idle keep-alive connections by peer address: taking one (the newest) and putting one back
/// (closing the oldest when over the limit) cost the same with 1 or 64 of them.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<crate::FastMap<PeerKey, Parked>>,
    /// Whether the task that closes dead idle connections runs.
    sweeping: std::sync::atomic::AtomicBool,
}

/// How often idle connections are looked at, to close those the peer closed (their sockets
/// would wait in `CLOSE_WAIT` for the next request to that peer), that were idle too long, or
/// that are over their peer's limit ([`OVER_LIMIT_GRACE`]).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long connections over a peer's `keepalive` limit stay idle before the oldest are closed
/// (nginx closes them at once). Under a load that swings in bursts (many requests in flight,
/// then many answers at once) the connections a burst opened serve the next burst instead of
/// being closed and opened again, and there are never more than the burst had. Under the load
/// of `bench/run.sh`'s scenario (d) (its configuration and h2load command: 500 streams in
/// flight, `keepalive 64`), counted in /proc/net/snmp: 0.05 upstream connects per request when
/// closed at once, none with a second (10 ms: 0.02, 100 ms: < 0.01). Checked when a connection
/// is put back and by the sweep, so one may stay up to two seconds.
const OVER_LIMIT_GRACE: Duration = SWEEP_EVERY;

impl Pool {
    pub fn new() -> Self {
        Self::default()
    }

    /// Closes idle connections that the peer closed, or that are idle past the
    /// `keepalive_timeout` of their group when they were checked in.
    fn sweep(&self, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|_, list| {
            list.conns.retain(|c| now < c.until && c.io.is_reusable());
            list.trim(now);
            !list.conns.is_empty()
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

    /// Idle connections to `addr` now (plain and TLS).
    pub fn idle(&self, addr: SocketAddr) -> usize {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        (idle.iter())
            .filter(|(key, _)| key.addr == addr)
            .map(|(_, parked)| parked.conns.len())
            .sum()
    }

    /// An idle connection to `addr` that is still open and not idle past its
    /// `keepalive_timeout` at `now` (the caller's recent clock read), or a new one (with
    /// SO_KEEPALIVE when `socket_keepalive`: `proxy_socket_keepalive on`). With `tls`, one
    /// opened with the same TLS settings and name, or a new one after its handshake (bounded
    /// by `connect_timeout` too, as nginx bounds it).
    pub async fn checkout(
        &self,
        addr: SocketAddr,
        tls: Option<tls::Connector<'_>>,
        now: Instant,
        connect_timeout: Duration,
        send_timeout: Duration,
        socket_keepalive: bool,
    ) -> Result<Conn, ConnectError> {
        let me = std::thread::current().id();
        if let Some((io, age)) = self.take_idle(PeerKey::new(addr, tls), now, me) {
            if let Some(io) = io.adopt(me) {
                return Ok(Conn {
                    io,
                    reused: true,
                    age,
                });
            }
        }
        let stream = match tokio::time::timeout(connect_timeout, TcpStream::connect(addr)).await {
            Err(_) => return Err(ConnectError::Timeout),
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Ok(Ok(stream)) => stream,
        };
        let _ = stream.set_nodelay(true);
        if socket_keepalive {
            // The kernel's keepalive timings, as nginx's `proxy_socket_keepalive on`.
            let _ = socket2::SockRef::from(&stream).set_keepalive(true);
        }
        let stream = match tls {
            None => stream::Stream::Plain(stream),
            // Boxed: the handshake's state (rustls's) would otherwise make every checkout's
            // future, plain ones too, that much larger to build and move.
            Some(tls) => (Box::pin(tls.tls.handshake(stream, tls.name, connect_timeout)).await)
                .map_err(|e| ConnectError::Handshake(Box::new(e)))?,
        };
        Ok(Conn {
            io: h1::Conn::new(stream, send_timeout),
            reused: false,
            age: Age {
                requests: 0,
                opened: Instant::now(),
            },
        })
    }

    /// The newest usable idle connection to `addr`, thread `me`'s first (another thread's is
    /// then moved to `me`'s event loop: [`h1::Conn::adopt`]). Connections idle past their
    /// `keepalive_timeout` or closed by the peer are dropped on the way.
    fn take_idle(
        &self,
        addr: PeerKey,
        now: Instant,
        me: std::thread::ThreadId,
    ) -> Option<(h1::Conn, Age)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = &mut idle.get_mut(&addr)?.conns;
        // Put back oldest first, so the ones idle too long are at the front (after a reload
        // that shortened `keepalive_timeout` some may be further in: the one taken is checked
        // below, the sweep closes the rest).
        while list.front().is_some_and(|c| c.until <= now) {
            list.pop_front();
        }
        loop {
            let i = list
                .iter()
                .rposition(|c| c.io.home == me)
                .or(list.len().checked_sub(1))?;
            let conn = list.remove(i)?;
            if now < conn.until && conn.io.is_reusable() {
                return Some((conn.io, conn.age));
            }
        }
    }

    /// Returns a connection whose response was read to the end, unless it has carried
    /// `keepalive_requests` requests or is older than `keepalive_time` (at `now`). Over
    /// `max_idle` idle connections for `addr`, the oldest are closed once idle for
    /// [`OVER_LIMIT_GRACE`].
    pub fn checkin(
        self: &Arc<Self>,
        addr: PeerKey,
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
        list.conns.push_back(Idle {
            io,
            since: now,
            until: now + reuse.idle_timeout,
            age,
        });
        list.limit = max_idle;
        list.trim(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const REUSE: Reuse = Reuse {
        max_requests: 100,
        max_age: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(60),
    };

    /// `n` connections to one listener, its ends kept open (so they stay reusable), and the
    /// local port that tells each apart.
    async fn connections(n: usize) -> (PeerKey, Vec<TcpStream>, Vec<h1::Conn>, Vec<u16>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mut peers, mut conns, mut ports) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let stream = TcpStream::connect(addr).await.unwrap();
            ports.push(stream.local_addr().unwrap().port());
            peers.push(listener.accept().await.unwrap().0);
            conns.push(h1::Conn::new(stream::Stream::Plain(stream), Duration::ZERO));
        }
        (PeerKey::new(addr, None), peers, conns, ports)
    }

    fn port(conn: &h1::Conn) -> u16 {
        conn.stream.tcp().local_addr().unwrap().port()
    }

    fn idle_count(pool: &Pool, addr: PeerKey) -> usize {
        pool.idle
            .lock()
            .unwrap()
            .get(&addr)
            .map_or(0, |l| l.conns.len())
    }

    #[tokio::test]
    async fn the_newest_is_taken_and_the_oldest_over_the_limit_closed_after_the_grace() {
        let pool = Arc::new(Pool::new());
        let (addr, _peers, conns, ports) = connections(4).await;
        let t0 = Instant::now();
        let age = Age {
            requests: 0,
            opened: t0,
        };
        for conn in conns {
            pool.checkin(addr, conn, age, 3, REUSE, t0);
        }
        assert_eq!(idle_count(&pool, addr), 4, "one over the limit, for now");
        pool.sweep(t0 + OVER_LIMIT_GRACE / 2);
        assert_eq!(idle_count(&pool, addr), 4, "not idle long enough");
        pool.sweep(t0 + OVER_LIMIT_GRACE);
        let later = t0 + OVER_LIMIT_GRACE;
        let taken: Vec<u16> =
            std::iter::from_fn(|| pool.take_idle(addr, later, std::thread::current().id()))
                .map(|(conn, _)| port(&conn))
                .collect();
        assert_eq!(
            taken,
            [ports[3], ports[2], ports[1]],
            "three kept, the first closed"
        );
        // A lower limit (a reload) closes as many of the oldest as it takes, those idle long
        // enough, when a connection is put back.
        let (addr, _peers, conns, ports) = connections(5).await;
        let mut conns = conns.into_iter();
        for conn in conns.by_ref().take(3) {
            pool.checkin(addr, conn, age, 8, REUSE, t0);
        }
        pool.checkin(addr, conns.next().unwrap(), age, 8, REUSE, later);
        pool.checkin(addr, conns.next().unwrap(), age, 2, REUSE, later);
        let taken: Vec<u16> =
            std::iter::from_fn(|| pool.take_idle(addr, later, std::thread::current().id()))
                .map(|(conn, _)| port(&conn))
                .collect();
        assert_eq!(taken, [ports[4], ports[3]]);
    }

    #[test]
    fn a_connection_another_thread_opened_moves_to_the_thread_that_takes_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // An echo peer for one connection.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().unwrap();
            std::io::copy(&mut peer.try_clone().unwrap(), &mut peer).unwrap();
        });
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let pool = Arc::new(Pool::new());
        let timeout = Duration::from_secs(5);
        // Thread A opens it and parks it; then A's event loop is gone with its runtime.
        let (a, opened) = std::thread::scope(|s| {
            s.spawn(|| {
                runtime().block_on(async {
                    let conn = pool
                        .checkout(addr, None, Instant::now(), timeout, timeout, false)
                        .await;
                    let conn = conn.unwrap();
                    let opened = port(&conn.io);
                    pool.checkin(
                        PeerKey::new(addr, None),
                        conn.io,
                        conn.age,
                        8,
                        REUSE,
                        Instant::now(),
                    );
                    (std::thread::current().id(), opened)
                })
            })
            .join()
            .unwrap()
        });
        // Thread B takes it: now on B's event loop, it still carries bytes both ways.
        runtime().block_on(async {
            let conn = pool
                .checkout(addr, None, Instant::now(), timeout, timeout, false)
                .await;
            let mut conn = conn.unwrap();
            assert!(conn.reused && port(&conn.io) == opened, "the parked one");
            assert_ne!(conn.io.home, a);
            assert_eq!(conn.io.home, std::thread::current().id());
            let stream::Stream::Plain(stream) = &mut conn.io.stream else {
                unreachable!()
            };
            stream.write_all(b"ping").await.unwrap();
            let mut got = [0; 4];
            let read = tokio::time::timeout(timeout, stream.read_exact(&mut got)).await;
            read.expect("the echo in time")
                .expect("read from the moved connection");
            assert_eq!(&got, b"ping");
        });
        drop(pool);
        echo.join().unwrap();
    }

    #[tokio::test]
    async fn connections_idle_past_their_timeout_are_not_taken() {
        let pool = Pool::new();
        let (addr, _peers, conns, ports) = connections(4).await;
        let now = Instant::now();
        let age = Age {
            requests: 0,
            opened: now,
        };
        // Oldest first: timed out; still within its timeout; timed out although newer (a reload
        // shortened `keepalive_timeout`), twice.
        let until = [now, now + Duration::from_secs(60), now, now];
        {
            let mut idle = pool.idle.lock().unwrap();
            let list = idle.entry(addr).or_default();
            for (io, until) in conns.into_iter().zip(until) {
                list.conns.push_back(Idle {
                    io,
                    since: now,
                    until,
                    age,
                });
            }
        }
        let (conn, _) = pool
            .take_idle(addr, Instant::now(), std::thread::current().id())
            .expect("the one within its timeout");
        assert_eq!(port(&conn), ports[1]);
        assert!(
            pool.take_idle(addr, Instant::now(), std::thread::current().id())
                .is_none()
        );
        assert_eq!(idle_count(&pool, addr), 0, "the others were closed");
    }
}
