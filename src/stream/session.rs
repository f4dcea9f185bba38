//! One stream session: access, `set`, `return` or the pick-connect-retry loop, the relay, the
//! log line. nginx's status codes: 200 (ended normally, timeouts and read errors included),
//! 403 (`deny`), 500, 502 (no peer could be connected).

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use super::relay::{self, Limits};
use super::{Action, Server};
use crate::log;
use crate::upstream::{Affinity, NoLivePeer, Tried};
use crate::vars::{Var, Vars, append_display};

/// One attempt on a peer, for `$upstream_*`.
struct Try {
    addr: SocketAddr,
    connect: Option<Duration>,
    first_byte: Option<Duration>,
    session: Option<Duration>,
    sent: u64,
    received: u64,
}

/// What a session's variables read.
pub(super) struct Session<'a> {
    pub(super) server: &'a Server,
    pub(super) id: u64,
    pub(super) remote: SocketAddr,
    pub(super) local: SocketAddr,
    start: Instant,
    pub(super) sets: Vec<(Arc<str>, String)>,
    pub(super) status: u16,
    /// To the client, from the client.
    pub(super) sent: u64,
    pub(super) received: u64,
    tries: Vec<Try>,
    /// A UDP session (`$protocol`).
    udp: bool,
    /// The PROXY protocol header the connection began with (`listen ... proxy_protocol`).
    proxy_header: Option<crate::proxy_protocol::Header>,
    /// What `ssl_preread` found, and the bytes it read (sent to the peer first).
    hello: Option<crate::tls::preread::ClientHello>,
    preread: Vec<u8>,
    /// The connection's own client address when `set_real_ip_from` replaced it
    /// (`$realip_remote_addr`).
    realip: Option<SocketAddr>,
}

impl<'a> Session<'a> {
    pub(super) fn new(server: &'a Server, id: u64, remote: SocketAddr, local: SocketAddr) -> Self {
        Session {
            server,
            id,
            remote,
            local,
            start: Instant::now(),
            sets: Vec::new(),
            status: 200,
            sent: 0,
            received: 0,
            tries: Vec::new(),
            udp: false,
            proxy_header: None,
            hello: None,
            preread: Vec::new(),
            realip: None,
        }
    }

    /// A UDP session (`$protocol`).
    pub(super) fn mark_udp(&mut self) {
        self.udp = true;
    }

    /// A UDP session's try on `addr`, its bytes counted by the caller.
    pub(super) fn udp_try(&mut self, addr: SocketAddr) {
        self.udp = true;
        self.tries.push(Try {
            addr,
            connect: Some(Duration::ZERO),
            first_byte: None,
            session: None,
            sent: 0,
            received: 0,
        });
    }

    /// Ends the last try: its bytes and length.
    pub(super) fn udp_done(&mut self, first_byte: Option<Instant>) {
        let start = self.start;
        let (sent, received) = (self.received, self.sent);
        if let Some(t) = self.tries.last_mut() {
            t.sent = sent;
            t.received = received;
            t.first_byte = first_byte.map(|at| at.saturating_duration_since(start));
            t.session = Some(start.elapsed());
        }
    }

    /// The `set` values, computed once the session is accepted.
    pub(super) fn compute_sets(&mut self) {
        for (name, value) in &self.server.sets {
            let value = value.render(&*self);
            self.sets.push((name.clone(), value));
        }
    }

    /// Writes the access log's line.
    pub(super) fn log(&self) {
        if !self.server.logs.is_empty() {
            self.server.logs.write(self);
        }
    }

    pub(super) fn allowed(&self) -> bool {
        let ip = self.remote.ip();
        self.server
            .access
            .iter()
            .find(|rule| rule.covers(ip))
            .is_none_or(|rule| rule.allow)
    }
}

/// Serves one accepted connection on `server`. `counted` is held until the session ends (a
/// graceful stop waits for it).
pub async fn serve<C: Send + 'static>(
    client: TcpStream,
    server: Arc<Server>,
    id: u64,
    (remote, local, key): (SocketAddr, SocketAddr, SocketAddr),
    counted: C,
) {
    let mut s = Session::new(&server, id, remote, local);
    s.run(client, key).await;
    s.log();
    drop(counted);
}

impl Session<'_> {
    async fn run(&mut self, mut client: TcpStream, key: SocketAddr) {
        let server = self.server;
        let spec = &server.spec;
        let proxy_protocol = (spec.listens.iter()).any(|l| l.addr == key && l.proxy_protocol);
        if proxy_protocol {
            match crate::proxy_protocol::read_header_tcp(&mut client, spec.proxy_protocol_timeout)
                .await
            {
                Ok(header) => {
                    // ngx_stream_realip_module: a trusted client's header gives the address.
                    let trusted = spec.realip_from.iter().any(|r| r.covers(self.remote.ip()));
                    if let Some(source) = header.addresses.as_ref().and_then(|a| a.source_addr())
                        && trusted
                    {
                        self.realip = Some(self.remote);
                        self.remote = source;
                    }
                    self.proxy_header = Some(header);
                }
                Err(e) => {
                    crate::error_log::log(
                        e.level(),
                        format_args!(
                            "*{} {e} while reading PROXY protocol, client: {}, server: {}",
                            self.id,
                            self.remote.ip(),
                            self.local
                        ),
                    );
                    self.status = 400;
                    return;
                }
            }
        }
        if !self.allowed() {
            self.status = 403;
            log!(
                Error,
                "*{} access forbidden by rule while initializing session, client: {}, server: {}",
                self.id,
                self.remote.ip(),
                self.local
            );
            return;
        }
        if spec.ssl_preread && !self.ssl_preread(&mut client).await {
            return;
        }
        self.compute_sets();
        if server.spec.tcp_nodelay {
            let _ = client.set_nodelay(true);
        }
        match &server.action {
            Action::Return(text) => {
                let text = text.render(&*self);
                match client.write_all(text.as_bytes()).await {
                    Ok(()) => self.sent = text.len() as u64,
                    Err(_) => self.status = 200,
                }
                let _ = client.shutdown().await;
            }
            Action::Proxy(group) => {
                let group = group.clone();
                self.proxy_group(client, &group).await;
            }
            Action::ProxyVars(target) => {
                let target = target.render(&*self);
                if let Some(group) = server.groups.get(&target).cloned() {
                    return self.proxy_group(client, &group).await;
                }
                match target.parse::<SocketAddr>() {
                    Ok(addr) => self.proxy_addr(client, addr).await,
                    Err(_) => {
                        self.status = 502;
                        log!(
                            Error,
                            "*{} no upstream and no resolver for \"{target}\" (imbang resolves no names in stream), client: {}, server: {}",
                            self.id,
                            self.remote.ip(),
                            self.local
                        );
                    }
                }
            }
        }
    }

    /// `ssl_preread on`: reads up to `preread_buffer_size` within `preread_timeout` until the
    /// ClientHello is whole (or the bytes are no TLS); the bytes go to the peer first. False
    /// when the session ends here (the client closed or timed out, as nginx's preread phase).
    async fn ssl_preread(&mut self, client: &mut TcpStream) -> bool {
        use crate::tls::preread::{Preread, parse};
        use tokio::io::AsyncReadExt;
        let spec = &self.server.spec;
        let deadline = Instant::now() + spec.preread_timeout;
        let mut buf = vec![0u8; spec.preread_buffer_size.max(1)];
        let mut len = 0;
        loop {
            match parse(&buf[..len]) {
                Preread::Incomplete if len < buf.len() => {}
                Preread::Parsed(hello) => {
                    self.hello = Some(hello);
                    break;
                }
                _ => break, // not TLS, malformed, or the buffer is full: variables stay empty
            }
            match tokio::time::timeout_at(deadline, client.read(&mut buf[len..])).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.received = len as u64;
                    return false;
                }
                Ok(Ok(n)) => len += n,
                Err(_) => {
                    log!(
                        Info,
                        "*{} preread timed out, client: {}, server: {}",
                        self.id,
                        self.remote.ip(),
                        self.local
                    );
                    self.received = len as u64;
                    return false;
                }
            }
        }
        buf.truncate(len);
        self.preread = buf;
        true
    }

    /// What goes to a peer before the relay: `proxy_protocol on`'s header, then the bytes
    /// `ssl_preread` read.
    async fn before_relay(&self, upstream: &mut TcpStream) -> std::io::Result<u64> {
        let mut sent = 0;
        if self.server.spec.send_proxy_protocol {
            let header = crate::proxy_protocol::encode_v1(Some((self.remote, self.local)));
            upstream.write_all(&header).await?;
            sent += header.len() as u64;
        }
        if !self.preread.is_empty() {
            upstream.write_all(&self.preread).await?;
            sent += self.preread.len() as u64;
        }
        Ok(sent)
    }

    /// The pick-connect loop over a group, then the relay.
    async fn proxy_group(&mut self, client: TcpStream, group: &crate::snapshot::Group) {
        let spec = &self.server.spec;
        let members = group.balancer();
        let mut tries = members.tries();
        if spec.next_upstream_tries > 0 {
            tries = tries.min(spec.next_upstream_tries as usize);
        }
        let deadline = spec.next_upstream_timeout.map(|t| self.start + t);
        let key = group.hash_key.as_ref().map(|k| k.render_bytes(&*self));
        let affinity = Affinity {
            client_ip: Some(self.remote.ip()),
            key: key.as_deref(),
        };
        let mut tried = Tried::new();
        let mut left = tries;
        loop {
            let mut peer = match members.pick_with(&mut tried, Instant::now(), affinity) {
                Ok(peer) => peer,
                Err(NoLivePeer) => {
                    log!(
                        Error,
                        "*{} no live upstreams while connecting to upstream, client: {}, server: {}, upstream: \"{}\"",
                        self.id,
                        self.remote.ip(),
                        self.local,
                        members.name()
                    );
                    self.status = 502;
                    return;
                }
            };
            left -= 1;
            let addr = peer.addr();
            match self.connect(addr).await {
                Ok(upstream) => {
                    peer.success_at(Instant::now());
                    let (up, down) = self.relay(client, upstream).await;
                    peer.count_bytes(up, down);
                    peer.body_done(Instant::now()); // `least_time last_byte`: the session's end
                    return;
                }
                Err(e) => {
                    let out = peer.failure(Instant::now());
                    drop(peer);
                    self.connect_failed(addr, &e);
                    if out {
                        log!(
                            Warn,
                            "*{} upstream server temporarily disabled while connecting to upstream, client: {}, server: {}, upstream: \"{addr}\"",
                            self.id,
                            self.remote.ip(),
                            self.local
                        );
                    }
                    let expired = deadline.is_some_and(|d| Instant::now() >= d);
                    if !spec.next_upstream || left == 0 || expired {
                        self.status = 502;
                        return;
                    }
                }
            }
        }
    }

    /// `proxy_pass $var` whose value is an address: one attempt, no peer state.
    async fn proxy_addr(&mut self, client: TcpStream, addr: SocketAddr) {
        match self.connect(addr).await {
            Ok(upstream) => {
                self.relay(client, upstream).await;
            }
            Err(e) => {
                self.connect_failed(addr, &e);
                self.status = 502;
            }
        }
    }

    fn connect_failed(&self, addr: SocketAddr, e: &std::io::Error) {
        let what = if e.kind() == std::io::ErrorKind::TimedOut {
            "upstream timed out (110: Connection timed out)".to_owned()
        } else {
            format!("connect() failed ({})", crate::error_log::errno_text(e))
        };
        log!(
            Error,
            "*{} {what} while connecting to upstream, client: {}, server: {}, upstream: \"{addr}\", bytes from/to client:0/0, bytes from/to upstream:0/0",
            self.id,
            self.remote.ip(),
            self.local
        );
    }

    /// Opens a connection to `addr` within `proxy_connect_timeout`, from `proxy_bind`'s
    /// address if any.
    async fn connect(&mut self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let spec = &self.server.spec;
        let started = Instant::now();
        self.tries.push(Try {
            addr,
            connect: None,
            first_byte: None,
            session: None,
            sent: 0,
            received: 0,
        });
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if spec.socket_keepalive {
            socket.set_keepalive(true)?;
        }
        if let Some(bind) = &self.server.bind {
            let text = bind.render(&*self);
            // An empty value binds nothing (nginx's `proxy_bind $var` with an empty value).
            if !text.is_empty() {
                let ip: IpAddr = text.parse().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!("invalid proxy_bind address \"{text}\""),
                    )
                })?;
                socket.bind(SocketAddr::new(ip, 0))?;
            }
        }
        let connected = tokio::time::timeout(spec.connect_timeout, socket.connect(addr)).await;
        // A failed try's session time is the time its connect took (nginx's `0.000`).
        if let Some(t) = self.tries.last_mut() {
            t.session = Some(started.elapsed());
        }
        let stream = match connected {
            Ok(r) => r?,
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        };
        if spec.tcp_nodelay {
            let _ = stream.set_nodelay(true);
        }
        if let Some(t) = self.tries.last_mut() {
            t.connect = Some(started.elapsed());
        }
        Ok(stream)
    }

    /// Relays until the session ends; returns the bytes sent to and received from the peer.
    async fn relay(&mut self, mut client: TcpStream, mut upstream: TcpStream) -> (u64, u64) {
        let spec = &self.server.spec;
        let limits = Limits {
            buffer_size: spec.buffer_size,
            timeout: spec.timeout,
            half_close: spec.half_close,
            upload_rate: spec.upload_rate,
            download_rate: spec.download_rate,
        };
        let connected = Instant::now();
        let early = match self.before_relay(&mut upstream).await {
            Ok(n) => n,
            Err(_) => return (0, 0),
        };
        let mut out = relay::relay(client.split(), upstream.split(), &limits).await;
        let prebytes = self.preread.len() as u64;
        out.up += early;
        self.received = out.up - early + prebytes;
        self.sent = out.down;
        if let Some(t) = self.tries.last_mut() {
            t.sent = out.up;
            t.received = out.down;
            t.first_byte = out
                .first_byte
                .map(|at| at.saturating_duration_since(connected) + t.connect.unwrap_or_default());
            t.session = Some(connected.elapsed() + t.connect.unwrap_or_default());
        }
        let why = match &out.error {
            _ if out.timed_out => Some("connection timed out (110: Connection timed out)".into()),
            Some(e) => Some(crate::error_log::errno_text(e)),
            None => None,
        };
        if let Some(why) = why {
            log!(
                Info,
                "*{} {why} while proxying connection, client: {}, server: {}, upstream: \"{}\", bytes from/to client:{}/{}, bytes from/to upstream:{}/{}",
                self.id,
                self.remote.ip(),
                self.local,
                self.tries.last().map_or(self.local, |t| t.addr),
                out.up,
                out.down,
                out.down,
                out.up
            );
        }
        (out.up, out.down)
    }
}

fn secs(out: &mut String, d: Duration) {
    let _ = write!(out, "{}.{:03}", d.as_secs(), d.subsec_millis());
}

impl Vars for Session<'_> {
    fn append(&self, var: &Var, out: &mut String) {
        let list = |out: &mut String, f: &dyn Fn(&mut String, &Try)| {
            for (i, t) in self.tries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                f(out, t);
            }
        };
        let time = |out: &mut String, d: Option<Duration>| match d {
            Some(d) => secs(out, d),
            None => out.push('-'),
        };
        match var {
            Var::RemoteAddr => append_display(out, self.remote.ip()),
            Var::RemotePort => append_display(out, self.remote.port()),
            Var::ServerAddr => append_display(out, self.local.ip()),
            Var::ServerPort => append_display(out, self.local.port()),
            Var::Protocol => out.push_str(if self.udp { "UDP" } else { "TCP" }),
            Var::Status => append_display(out, self.status),
            Var::BytesSent => append_display(out, self.sent),
            Var::BytesReceived => append_display(out, self.received),
            Var::SessionTime => secs(out, self.start.elapsed()),
            Var::Connection => append_display(out, self.id),
            Var::Pid => append_display(out, std::process::id()),
            Var::Hostname => out.push_str(crate::proxy::hostname()),
            Var::NginxVersion => out.push_str(env!("CARGO_PKG_VERSION")),
            Var::TimeLocal => crate::proxy::append_local_time(out, false),
            Var::TimeIso8601 => crate::proxy::append_local_time(out, true),
            Var::Msec => {
                let now = chrono::Utc::now();
                let _ = write!(
                    out,
                    "{}.{:03}",
                    now.timestamp(),
                    now.timestamp_subsec_millis()
                );
            }
            Var::UpstreamAddr => list(out, &|out, t| append_display(out, t.addr)),
            Var::UpstreamConnectTime => list(out, &|out, t| time(out, t.connect)),
            Var::UpstreamFirstByteTime => list(out, &|out, t| time(out, t.first_byte)),
            Var::UpstreamSessionTime => list(out, &|out, t| time(out, t.session)),
            Var::UpstreamBytesSent => list(out, &|out, t| append_display(out, t.sent)),
            Var::UpstreamBytesReceived => list(out, &|out, t| append_display(out, t.received)),
            Var::Set(name) | Var::Declared(name) => {
                if let Some((_, v)) = self.sets.iter().rev().find(|(n, _)| n == name) {
                    out.push_str(v);
                }
            }
            Var::Map(map) => map.0.append(self, out),
            Var::ProxyProtocol(var) => var.append(self.proxy_header.as_ref(), out),
            Var::RealipRemoteAddr => append_display(out, self.realip.unwrap_or(self.remote).ip()),
            Var::RealipRemotePort => append_display(out, self.realip.unwrap_or(self.remote).port()),
            Var::SslPrereadServerName => {
                out.extend(self.hello.as_ref().and_then(|h| h.server_name.as_deref()));
            }
            Var::SslPrereadAlpnProtocols => {
                if let Some(hello) = &self.hello {
                    out.push_str(&hello.alpn_protocols());
                }
            }
            Var::SslPrereadProtocol => out.extend(self.hello.as_ref().map(|h| h.protocol)),
            _ => {}
        }
    }

    fn append_bytes(&self, var: &Var, out: &mut Vec<u8>) {
        match (var, self.remote.ip()) {
            (Var::BinaryRemoteAddr, IpAddr::V4(ip)) => out.extend_from_slice(&ip.octets()),
            (Var::BinaryRemoteAddr, IpAddr::V6(ip)) => out.extend_from_slice(&ip.octets()),
            _ => {
                let mut text = String::new();
                self.append(var, &mut text);
                out.extend_from_slice(text.as_bytes());
            }
        }
    }
}
