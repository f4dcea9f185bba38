//! A running imbang: accept loops per listening address, one task per client connection, the
//! configuration in force, reload and stop. Used by the binary and, in-process, by tests.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Notify};

use crate::checks::HealthChecks;
use crate::config::{self, Config, ConfigErrors};
use crate::http1;
use crate::log;
use crate::pool::Pool;
use crate::proxy::{ConnInfo, Shared};
use crate::reload::Live;
use crate::resolve::Following;
use crate::snapshot::Snapshot;
use crate::upstream::PeerRegistry;
use crate::{error_log, listen};

/// Why a reload did not happen. The running configuration is untouched in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigErrors),
    #[error("{0}")]
    Bind(String),
    #[error("{0}")]
    Log(String),
    #[error("no configuration file to reload from")]
    NoSource,
}

pub struct Server {
    shared: Arc<Shared>,
    registry: Arc<PeerRegistry>,
    source: Option<config::Source>,
    /// Accepting listeners by configured address, with their stop switches and bound addresses.
    listeners: Mutex<HashMap<SocketAddr, Listening>>,
    connections: Arc<ConnCount>,
    next_conn_id: AtomicU64,
    /// `-e` given on the command line replaces the default error log.
    default_log: Option<config::model::ErrorLogSpec>,
    /// The worker runtimes accept loops run on (empty: the caller's runtime).
    workers: std::sync::Mutex<Vec<tokio::runtime::Handle>>,
    /// The `health_check`s of the configuration in force, running from `serve` on.
    checks: HealthChecks,
    /// Upstream groups that follow DNS (`server name resolve`), from `serve` on.
    following: Arc<Following>,
    /// stream's `listen ... udp` sockets by configured address, with their stop switches and
    /// bound addresses.
    udp: Mutex<HashMap<SocketAddr, (Arc<http1::Stop>, SocketAddr)>>,
    /// `$connection` of UDP sessions (numbered apart from TCP connections, from 2^62).
    udp_ids: Arc<AtomicU64>,
}

struct Listening {
    local: SocketAddr,
    stop: Arc<http1::Stop>,
    /// The same socket, kept to hand to a new binary (USR2).
    socket: std::net::TcpListener,
}

impl Server {
    /// A server for `config` (not yet listening). `source` is what `reload()` reads again.
    pub fn new(
        config: Config,
        source: Option<config::Source>,
        default_log: Option<config::model::ErrorLogSpec>,
    ) -> Result<Arc<Self>, ConfigErrors> {
        let registry = Arc::new(PeerRegistry::new());
        let snapshot = Snapshot::compile(config, &registry)?;
        Ok(Arc::new(Self {
            shared: Arc::new(Shared {
                live: Arc::new(Live::new(snapshot)),
                pool: Arc::new(Pool::new()),
            }),
            registry: registry.clone(),
            source,
            listeners: Mutex::new(HashMap::new()),
            connections: Arc::default(),
            next_conn_id: AtomicU64::new(1),
            default_log,
            workers: std::sync::Mutex::new(Vec::new()),
            checks: HealthChecks::new(),
            following: Following::new(registry),
            udp: Mutex::new(HashMap::new()),
            udp_ids: Arc::new(AtomicU64::new(1 << 62)),
        }))
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.live.snapshot()
    }

    /// Binds every address the configuration listens on (all or none).
    pub fn bind(&self) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, String> {
        self.bind_with(Vec::new())
    }

    /// Like [`Server::bind`], taking sockets handed down by a previous process (binary upgrade)
    /// for the addresses they were bound for; the ones no longer configured are closed.
    pub fn bind_with(
        &self,
        mut inherited: Vec<(SocketAddr, std::net::TcpListener)>,
    ) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, String> {
        let snapshot = self.snapshot();
        let mut bound = Vec::new();
        let mut missing = Vec::new();
        for &addr in &snapshot.bind {
            match inherited.iter().position(|(key, _)| *key == addr) {
                Some(i) => bound.push(inherited.swap_remove(i)),
                None => missing.push(addr),
            }
        }
        bound.extend(listen::bind_all(
            &missing,
            &snapshot.reuseport,
            &snapshot.backlog,
        )?);
        Ok(bound)
    }

    /// Duplicates of the listening sockets with their configured addresses (for a new binary).
    pub async fn listening_sockets(
        &self,
    ) -> std::io::Result<Vec<(SocketAddr, std::net::TcpListener)>> {
        let listeners = self.listeners.lock().await;
        let mut v = Vec::with_capacity(listeners.len());
        for (key, l) in listeners.iter() {
            v.push((*key, l.socket.try_clone()?));
        }
        Ok(v)
    }

    /// Starts accepting on sockets bound by [`Server::bind`]. Must run inside a tokio runtime.
    pub async fn serve(
        self: &Arc<Self>,
        bound: Vec<(SocketAddr, std::net::TcpListener)>,
    ) -> std::io::Result<()> {
        let snapshot = self.snapshot();
        // Names of `server ... resolve` lines are looked up before the first request.
        let weak = Arc::downgrade(self);
        let reconcile: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            if let Some(server) = weak.upgrade() {
                server.checks.reconcile(&server.snapshot());
            }
        });
        self.following.on_change(reconcile.clone());
        // The API's writes change a group's servers the same way.
        self.shared.live.on_members_changed(reconcile);
        self.following.prepare(&snapshot).await;
        self.following.start(&snapshot);
        let mut listeners = self.listeners.lock().await;
        for (key, socket) in bound {
            let listening = self.accept_on(key, socket, snapshot.reuseport.contains(&key))?;
            listeners.insert(key, listening);
        }
        drop(listeners);
        let udp = self
            .bind_udp(&snapshot)
            .await
            .map_err(std::io::Error::other)?;
        self.serve_udp(udp).await;
        self.checks.reconcile(&snapshot);
        crate::acme::reconcile(&snapshot.config);
        Ok(())
    }

    /// Binds the `listen ... udp` addresses of `snapshot` not bound yet (all or none).
    async fn bind_udp(
        &self,
        snapshot: &Snapshot,
    ) -> Result<Vec<(SocketAddr, std::net::UdpSocket)>, String> {
        let udp = self.udp.lock().await;
        snapshot
            .stream
            .udp_addresses()
            .filter(|a| !udp.contains_key(a))
            .map(|addr| {
                crate::stream::udp::bind(addr)
                    .map(|s| (addr, s))
                    .map_err(|e| format!("{} (udp)", listen::bind_error(addr, &e)))
            })
            .collect()
    }

    /// Starts reading datagrams on `bound`; stops the UDP sockets the configuration in force
    /// no longer has.
    async fn serve_udp(&self, bound: Vec<(SocketAddr, std::net::UdpSocket)>) {
        let snapshot = self.snapshot();
        let mut udp = self.udp.lock().await;
        for (key, socket) in bound {
            let stop = Arc::new(http1::Stop::default());
            let local = socket.local_addr().unwrap_or(key);
            tokio::spawn(crate::stream::udp::serve(
                self.shared.live.clone(),
                key,
                socket,
                stop.clone(),
                self.udp_ids.clone(),
            ));
            log!(Notice, "listening on {key} udp (bound to {local})");
            udp.insert(key, (stop, local));
        }
        let configured: Vec<SocketAddr> = snapshot.stream.udp_addresses().collect();
        udp.retain(|key, (stop, _)| {
            let keep = configured.contains(key);
            if !keep {
                stop.stop();
            }
            keep
        });
    }

    /// `(configured address, bound address)` of every `listen ... udp` socket.
    pub async fn bound_udp(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut v: Vec<_> = (self.udp.lock().await.iter())
            .map(|(k, (_, local))| (*k, *local))
            .collect();
        v.sort();
        v
    }

    /// `(configured address, bound address)` of every listener: they differ for port 0.
    pub async fn bound(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let mut v: Vec<_> = self
            .listeners
            .lock()
            .await
            .iter()
            .map(|(k, l)| (*k, l.local))
            .collect();
        v.sort();
        v
    }

    /// Starts accepting on `socket` in every worker runtime (each runs its own accept loop on
    /// the same listening socket, and serves the connections it accepts, as nginx's workers do).
    /// `reuseport`: every worker but the first binds a socket of its own to the same address
    /// (`SO_REUSEPORT`), and the kernel spreads new connections over them; a worker that cannot
    /// (the socket came from a process or from systemd without `SO_REUSEPORT`) accepts on the
    /// shared one.
    fn accept_on(
        self: &Arc<Self>,
        key: SocketAddr,
        socket: std::net::TcpListener,
        reuseport: bool,
    ) -> std::io::Result<Listening> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?;
        let stop = Arc::new(http1::Stop::default());
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if workers.is_empty() {
            tokio::spawn(
                self.clone()
                    .accept_loop(key, socket.try_clone()?, stop.clone()),
            );
        } else {
            for (i, worker) in workers.iter().enumerate() {
                let own = if reuseport && i > 0 {
                    listen::bind(local, true)
                        .inspect_err(|e| {
                            log!(
                                Warn,
                                "worker {i} accepts on the shared socket of {key}: bind() to {local} with SO_REUSEPORT failed ({})",
                                error_log::errno_text(e)
                            )
                        })
                        .ok()
                } else {
                    None
                };
                let socket = match own {
                    Some(own) => own,
                    None => socket.try_clone()?,
                };
                worker.spawn(self.clone().accept_loop(key, socket, stop.clone()));
            }
        }
        log!(Notice, "listening on {key} (bound to {local})");
        Ok(Listening {
            local,
            stop,
            socket,
        })
    }

    /// Runs the worker runtimes' accept loops and connections on `workers` (one current-thread
    /// runtime per worker); by default everything runs on the runtime that calls `serve`.
    pub fn set_workers(&self, workers: Vec<tokio::runtime::Handle>) {
        *self.workers.lock().unwrap_or_else(|p| p.into_inner()) = workers;
    }

    async fn accept_loop(
        self: Arc<Self>,
        key: SocketAddr,
        socket: std::net::TcpListener,
        stop: Arc<http1::Stop>,
    ) {
        let listener = match TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                log!(Alert, "cannot accept on {key}: {e}");
                return;
            }
        };
        let Ok(bound) = listener.local_addr() else {
            return;
        };
        let mut listening = ListenerCache::default();
        // One wait for the stop for the listener's life, not one per accepted connection.
        let stopped = stop.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                // Accepting first: the stop is looked at whenever no connection is waiting.
                biased;
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => {
                        crate::stats::accepted();
                        self.connection(stream, remote, (key, bound), &stop, &mut listening);
                    }
                    Err(e) => {
                        log!(Alert, "accept() failed ({})", error_log::errno_text(&e));
                        // Out of descriptors or similar: give the process a moment.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                () = &mut stopped => break,
            }
        }
    }

    /// Starts serving an accepted connection in a task of its own. Everything it needs is
    /// prepared here, so the task's future holds each piece once.
    fn connection(
        &self,
        stream: TcpStream,
        remote: SocketAddr,
        (key, bound): (SocketAddr, SocketAddr),
        stop: &Arc<http1::Stop>,
        listening: &mut ListenerCache,
    ) {
        // The local address is the listener's unless it listens on a wildcard (nginx calls
        // getsockname() only then, too); TCP_NODELAY is set by the connection before its second
        // write (`http1::write::Nagle`).
        let local = if key.ip().is_unspecified() {
            match stream.local_addr() {
                Ok(local) => local,
                Err(_) => return,
            }
        } else {
            bound
        };
        let snapshot = self.snapshot();
        let (listener, max) = listening.get(&snapshot, &self.shared, stop, key);
        // `worker_connections`, as nginx: a connection beyond it is closed as soon as it is
        // accepted, with nginx's alert; the ones open are not touched.
        if self.connections.n.load(Ordering::Relaxed) >= max {
            log!(
                Alert,
                "{} worker_connections are not enough",
                max / listening.workers()
            );
            return;
        }
        // Counted before the task starts, so a stop that begins now waits for it.
        let counted = self.connections.enter();
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        if let Some(server) = snapshot.stream.server(key, local) {
            let server = server.clone();
            drop(snapshot);
            tokio::spawn(crate::stream::session::serve(
                stream,
                server,
                id,
                (remote, local, key),
                counted,
            ));
            return;
        }
        drop(snapshot);
        let info = ConnInfo {
            id,
            requests: AtomicU64::new(0),
            remote,
            local,
            key,
            accepted: tokio::time::Instant::now(),
            tls: None,
            proxy_protocol: None,
        };
        if listener.proxy_protocol {
            // The header first, then TLS or HTTP as on any other address (a branch taken
            // only on such addresses: the others pay one test per connection).
            tokio::spawn(proxy_protocol_first(stream, listener, info, counted));
            return;
        }
        if listener.tls {
            // The handshake first; the connection info is complete once it is done.
            tokio::spawn(crate::tls::accept::serve(stream, listener, info, counted));
            return;
        }
        let serving = http1::serve(stream, listener, Arc::new(info), counted);
        tokio::spawn(serving);
    }

    /// Reads the configuration files again and puts them in force (SIGHUP, `-s reload`).
    pub async fn reload(self: &Arc<Self>) -> Result<(), ReloadError> {
        let source = self.source.as_ref().ok_or(ReloadError::NoSource)?;
        let applied = match config::load(source) {
            Ok(config) => self.apply(config).await,
            Err(e) => Err(e.into()),
        };
        crate::stats::reloaded(applied.is_ok());
        applied
    }

    /// Puts `config` in force: compile, open logs, bind new addresses; only when all of that
    /// worked, swap the snapshot and stop listeners that are gone. Nothing changes on error.
    pub async fn apply(self: &Arc<Self>, config: Config) -> Result<(), ReloadError> {
        let snapshot = Snapshot::compile(config, &self.registry)?;
        // New `resolve` names are looked up before the snapshot goes in force.
        self.following.prepare(&snapshot).await;
        let log = open_error_log(&snapshot.config, self.default_log.as_ref())
            .map_err(ReloadError::Log)?;
        let mut listeners = self.listeners.lock().await;
        let new: Vec<SocketAddr> = snapshot
            .bind
            .iter()
            .copied()
            .filter(|a| !listeners.contains_key(a))
            .collect();
        let bound = listen::bind_all(&new, &snapshot.reuseport, &snapshot.backlog)
            .map_err(ReloadError::Bind)?;
        let udp = self.bind_udp(&snapshot).await.map_err(ReloadError::Bind)?;
        let gone: Vec<SocketAddr> = listeners
            .keys()
            .copied()
            .filter(|a| !snapshot.bind.contains(a))
            .collect();
        error_log::install(log);
        let reuseport = snapshot.reuseport.clone();
        self.shared.live.swap(snapshot);
        self.following.start(&self.snapshot());
        self.checks.reconcile(&self.snapshot());
        crate::acme::reconcile(&self.snapshot().config);
        for (key, socket) in bound {
            match self.accept_on(key, socket, reuseport.contains(&key)) {
                Ok(l) => {
                    listeners.insert(key, l);
                }
                Err(e) => log!(Alert, "cannot listen on {key}: {e}"),
            }
        }
        for key in gone {
            if let Some(l) = listeners.remove(&key) {
                l.stop.stop();
            }
        }
        drop(listeners);
        self.serve_udp(udp).await;
        Ok(())
    }

    /// Stops accepting. Graceful: open connections finish their current request (idle ones close
    /// at once), bounded by `timeout`. Returns when no connection is left or the time is up.
    pub async fn shutdown(&self, graceful: bool, timeout: Option<Duration>) {
        for (_, l) in self.listeners.lock().await.drain() {
            l.stop.stop();
        }
        for (_, (stop, _)) in self.udp.lock().await.drain() {
            stop.stop();
        }
        self.checks.stop();
        self.following.stop();
        if !graceful {
            return;
        }
        let wait = self.connections.zero();
        match timeout {
            Some(t) => {
                let _ = tokio::time::timeout(t, wait).await;
            }
            None => wait.await,
        }
    }

    /// `(checks, probes)` running: `health_check`s in force, and peers they probe.
    pub fn health_checks(&self) -> (usize, usize) {
        self.checks.count()
    }

    /// `server ... resolve` lines followed now.
    pub fn resolving(&self) -> usize {
        self.following.count()
    }

    /// Client connections open now.
    pub fn open_connections(&self) -> usize {
        self.connections.n.load(Ordering::SeqCst)
    }
}

/// A connection on a `listen ... proxy_protocol` address: its PROXY protocol header, read
/// within `client_header_timeout` (nginx's bound in http: the wait for the request, which the
/// header is the start of), then TLS or HTTP. A missing, broken or late header closes the
/// connection, logged at nginx's level (`error` for a broken header, `info` otherwise).
async fn proxy_protocol_first(
    mut stream: TcpStream,
    listener: Arc<http1::Listener>,
    mut info: ConnInfo,
    counted: Counted,
) {
    let timeout = listener.settings.header_timeout;
    let read = tokio::select! {
        biased;
        () = listener.stop.stopped() => return,
        read = crate::proxy_protocol::read_header_tcp(&mut stream, timeout) => read,
    };
    match read {
        Ok(header) => info.proxy_protocol = Some(Box::new(header)),
        Err(e) => {
            crate::error_log::log(
                e.level(),
                format_args!(
                    "*{} {e} while reading PROXY protocol, client: {}, server: {}",
                    info.id,
                    info.remote.ip(),
                    info.local
                ),
            );
            return;
        }
    }
    if listener.tls {
        crate::tls::accept::serve(stream, listener, info, counted).await;
    } else {
        http1::serve(stream, listener, Arc::new(info), counted).await;
    }
}

/// The error log a configuration asks for: the main-level `error_log` (or the `-e` / default
/// one), plus every http-level one.
pub fn open_error_log(
    config: &Config,
    default: Option<&config::model::ErrorLogSpec>,
) -> Result<error_log::ErrorLog, String> {
    let mut specs = config.main.error_log.clone();
    if specs.is_empty() {
        specs.extend(default.cloned());
    }
    let stream_logs = config.stream.iter().flat_map(|s| &s.error_log);
    for s in stream_logs {
        if !specs.contains(s) {
            specs.push(s.clone());
        }
    }
    if let Some(http) = &config.http {
        for s in &http.error_log {
            if !specs.contains(s) {
                specs.push(s.clone());
            }
        }
    }
    error_log::ErrorLog::open(&specs)
}

/// A listener's [`http1::Listener`] for the configuration in force, made once per snapshot
/// rather than per connection, with the most client connections the process keeps open under
/// it. Each accept loop keeps its own.
#[derive(Default)]
struct ListenerCache(Option<(Weak<Snapshot>, Arc<http1::Listener>, Limit)>);

/// `worker_connections` × `worker_processes`: nginx's limit is per worker process; imbang's
/// workers share one process and one count of client connections, so the limit is the sum.
/// Unlike nginx's, it counts client connections only (not the listening sockets, nor the
/// connections to peers, which each client connection needs at most one of at a time).
#[derive(Clone, Copy)]
struct Limit {
    max: usize,
    workers: usize,
}

impl ListenerCache {
    fn get(
        &mut self,
        snapshot: &Arc<Snapshot>,
        shared: &Arc<Shared>,
        stop: &Arc<http1::Stop>,
        key: SocketAddr,
    ) -> (Arc<http1::Listener>, usize) {
        if let Some((of, listener, limit)) = &self.0 {
            // The `Weak` keeps the address from being reused by a later snapshot.
            if std::ptr::eq(of.as_ptr(), Arc::as_ptr(snapshot)) {
                return (listener.clone(), limit.max);
            }
        }
        let listener = Arc::new(http1::Listener {
            shared: shared.clone(),
            settings: client_settings(&snapshot.config),
            stop: stop.clone(),
            tls: snapshot.tls.contains(&key),
            proxy_protocol: snapshot.proxy_protocol.contains(&key),
        });
        let main = &snapshot.config.main;
        let workers = main.worker_processes.count().max(1);
        let limit = Limit {
            max: main.worker_connections.saturating_mul(workers),
            workers,
        };
        self.0 = Some((Arc::downgrade(snapshot), listener.clone(), limit));
        (listener, limit.max)
    }

    /// The worker count the limit was made for.
    fn workers(&self) -> usize {
        self.0.as_ref().map_or(1, |(_, _, limit)| limit.workers)
    }
}

/// The http level's client-side settings (nginx's defaults without an `http` block).
fn client_settings(config: &Config) -> http1::Settings {
    match config.http.as_ref() {
        Some(h) => http1::Settings {
            limits: http1::HeadLimits {
                line: h.header_buffer_size,
                head: h.header_buffer_size * h.header_buffers,
            },
            first_read: h.client_header_buffer_size,
            header_timeout: h.client_header_timeout,
            keepalive_timeout: h.keepalive_timeout,
            send_timeout: h.send_timeout,
        },
        None => http1::Settings {
            limits: http1::HeadLimits::default(),
            first_read: 1024,
            header_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            send_timeout: Duration::from_secs(60),
        },
    }
}

#[derive(Default)]
struct ConnCount {
    n: AtomicUsize,
    zero: Notify,
}

/// An open connection: in the server's count (for a graceful stop) and in the process's
/// figures (stub_status's `handled` and `Active connections`).
struct Counted(Arc<ConnCount>, #[allow(dead_code)] crate::stats::Active);

impl ConnCount {
    fn enter(self: &Arc<Self>) -> Counted {
        self.n.fetch_add(1, Ordering::SeqCst);
        Counted(self.clone(), crate::stats::handled())
    }

    async fn zero(&self) {
        loop {
            let notified = self.zero.notified();
            if self.n.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.0.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}
