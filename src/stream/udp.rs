//! `listen ... udp`: datagrams balanced per client "session", as nginx's stream module does.
//!
//! One task per listening socket reads datagrams. The first datagram of a client address (or
//! the first after its session stopped taking more) starts a session: a peer is picked from the
//! group, a UDP socket of its own is connected to it, and the session's datagrams go there;
//! the peer's datagrams go back to the client from the listening socket. A session takes
//! `proxy_requests` datagrams (0: any number) and ends once it has had `proxy_responses` answers
//! per datagram, or after `proxy_timeout` without a datagram either way. A peer that answers
//! with an ICMP error (connection refused) counts a failure against it, as in nginx.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::session::Session;
use super::{Action, Server};
use crate::http1::Stop;
use crate::log;
use crate::reload::Live;
use crate::upstream::{Affinity, Tried};

/// The largest datagram (nginx reads up to 65535 bytes).
const MAX_DATAGRAM: usize = 65_535;

/// Datagrams waiting for a session's task.
const QUEUE: usize = 64;

/// Binds `addr` for datagrams (SO_REUSEADDR, IPV6_V6ONLY for IPv6, non-blocking).
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Reads datagrams on `socket` (bound for `key`) until `stop`, each to its client's session on
/// the server the configuration in force has for `key`.
pub async fn serve(
    live: Arc<Live>,
    key: SocketAddr,
    socket: std::net::UdpSocket,
    stop: Arc<Stop>,
    ids: Arc<std::sync::atomic::AtomicU64>,
) {
    let socket = match UdpSocket::from_std(socket) {
        Ok(s) => Arc::new(s),
        Err(e) => return log!(Alert, "cannot receive on {key} (udp): {e}"),
    };
    let local = socket.local_addr().unwrap_or(key);
    let mut sessions: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    loop {
        let (n, client) = tokio::select! {
            biased;
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // An ICMP error for an earlier send_to: nothing to do with the next datagram.
                Err(_) => continue,
            },
            () = &mut stopped => return,
        };
        let datagram = buf[..n].to_vec();
        if let Some(tx) = sessions.get(&client) {
            match tx.try_send(datagram) {
                Ok(()) => continue,
                Err(mpsc::error::TrySendError::Full(_)) => continue, // dropped, as a full queue would
                Err(mpsc::error::TrySendError::Closed(d)) => {
                    sessions.remove(&client);
                    start(&live, key, local, &socket, &ids, client, d, &mut sessions);
                }
            }
        } else {
            start(
                &live,
                key,
                local,
                &socket,
                &ids,
                client,
                datagram,
                &mut sessions,
            );
        }
        if sessions.len() > 1024 {
            sessions.retain(|_, tx| !tx.is_closed());
        }
    }
}

/// Starts a session for `client` with its first datagram.
#[allow(clippy::too_many_arguments)]
fn start(
    live: &Live,
    key: SocketAddr,
    local: SocketAddr,
    socket: &Arc<UdpSocket>,
    ids: &std::sync::atomic::AtomicU64,
    client: SocketAddr,
    first: Vec<u8>,
    sessions: &mut HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
) {
    let snapshot = live.snapshot();
    let Some(server) = snapshot.stream.udp_server(key).cloned() else {
        return;
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let _ = tx.try_send(first);
    sessions.insert(client, tx);
    let id = ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(session(server, socket.clone(), id, client, local, rx));
}

async fn session(
    server: Arc<Server>,
    socket: Arc<UdpSocket>,
    id: u64,
    client: SocketAddr,
    local: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let mut s = Session::new(&server, id, client, local);
    s.mark_udp();
    if !s.allowed() {
        s.status = 403;
        log!(
            Error,
            "*{id} access forbidden by rule while initializing session, client: {}, server: {local}",
            client.ip()
        );
        return s.log();
    }
    s.compute_sets();
    match &server.action {
        Action::Return(text) => {
            let text = text.render(&s);
            if socket.send_to(text.as_bytes(), client).await.is_ok() {
                s.sent = text.len() as u64;
            }
            return s.log();
        }
        Action::Proxy(group) => {
            let group = group.clone();
            relay_group(&mut s, &group, &socket, &mut rx).await;
        }
        Action::ProxyVars(target) => {
            let target = target.render(&s);
            match server.groups.get(&target).cloned() {
                Some(group) => relay_group(&mut s, &group, &socket, &mut rx).await,
                None => match target.parse::<SocketAddr>() {
                    Ok(addr) => {
                        let _ = relay(&mut s, addr, &socket, &mut rx).await;
                    }
                    Err(_) => {
                        s.status = 502;
                        log!(
                            Error,
                            "*{id} no upstream and no resolver for \"{target}\" (imbang resolves no names in stream), client: {}, server: {local}",
                            client.ip()
                        );
                    }
                },
            }
        }
    }
    s.log();
}

async fn relay_group(
    s: &mut Session<'_>,
    group: &crate::snapshot::Group,
    socket: &UdpSocket,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) {
    let members = group.balancer();
    let key = group.hash_key.as_ref().map(|k| k.render_bytes(&*s));
    let affinity = Affinity {
        client_ip: Some(s.remote.ip()),
        key: key.as_deref(),
    };
    let mut tried = Tried::new();
    let Ok(mut peer) = members.pick_with(&mut tried, Instant::now(), affinity) else {
        log!(
            Error,
            "*{} no live upstreams while connecting to upstream, client: {}, server: {}, upstream: \"{}\"",
            s.id,
            s.remote.ip(),
            s.local,
            members.name()
        );
        s.status = 502;
        return;
    };
    peer.success_at(Instant::now());
    let ok = relay(s, peer.addr(), socket, rx).await;
    peer.count_bytes(s.received, s.sent);
    if !ok {
        peer.failure(Instant::now());
    }
}

/// Datagrams between the client and `addr` until the session ends. False when the peer
/// refused them (an ICMP error): a failure.
async fn relay(
    s: &mut Session<'_>,
    addr: SocketAddr,
    socket: &UdpSocket,
    rx: &mut mpsc::Receiver<Vec<u8>>,
) -> bool {
    s.udp_try(addr);
    let spec = &s.server.spec;
    let (timeout, max_requests, responses) = (spec.timeout, spec.requests, spec.responses);
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let upstream = match UdpSocket::bind(bind).await {
        Ok(u) if u.connect(addr).await.is_ok() => u,
        _ => {
            s.status = 502;
            return false;
        }
    };
    let (mut requests, mut answers) = (0u64, 0u64);
    let mut first_byte = None;
    let mut taking = true;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ok = true;
    loop {
        let done = !taking && responses.is_some_and(|per| answers >= per.saturating_mul(requests));
        if done || (!taking && responses == Some(0)) {
            break;
        }
        let idle = tokio::time::sleep(timeout);
        tokio::select! {
            datagram = rx.recv(), if taking => {
                let Some(datagram) = datagram else {
                    taking = false;
                    continue;
                };
                requests += 1;
                s.received += datagram.len() as u64;
                if upstream.send(&datagram).await.is_err() {
                    ok = false;
                    break;
                }
                if max_requests > 0 && requests >= max_requests {
                    // The client's next datagram starts a new session.
                    taking = false;
                    rx.close();
                }
            }
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    answers += 1;
                    if socket.send_to(&buf[..n], s.remote).await.is_ok() {
                        s.sent += n as u64;
                    }
                }
                Err(e) => {
                    log!(
                        Error,
                        "*{} recv() failed ({}) while proxying connection, udp client: {}, server: {}, upstream: \"{addr}\"",
                        s.id,
                        crate::error_log::errno_text(&e),
                        s.remote.ip(),
                        s.local
                    );
                    ok = false;
                    break;
                }
            },
            () = idle => break,
        }
    }
    rx.close();
    s.udp_done(first_byte);
    ok
}
