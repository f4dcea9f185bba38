//! Listening sockets: bound with nginx's options before the process daemonizes, then handed to
//! accept loops; reconciled on reload so an unchanged address keeps its socket.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// nginx's default `listen ... backlog=511`.
const BACKLOG: i32 = 511;

/// Binds `addr` as nginx does: SO_REUSEADDR, IPV6_V6ONLY for IPv6 (so `[::]:80` and `0.0.0.0:80`
/// can both be bound), non-blocking. Then, as HAProxy's `tcp-smart-accept` (its default for
/// HTTP): `TCP_QUICKACK` off on the listening socket, which accepted sockets inherit, so a
/// request is acknowledged by its response rather than by an ACK of its own (one segment fewer
/// per connection; set after `listen`, which resets it). `reuseport`: `SO_REUSEPORT` too, so
/// that each worker can bind a socket of its own to the same address (`listen ... reuseport`).
pub fn bind(addr: SocketAddr, reuseport: bool) -> io::Result<std::net::TcpListener> {
    bind_with_backlog(addr, reuseport, BACKLOG)
}

/// [`bind`] with a listen queue of `backlog` (`listen ... backlog=n`).
pub fn bind_with_backlog(
    addr: SocketAddr,
    reuseport: bool,
    backlog: i32,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuseport {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = socket.set_quickack(false);
    Ok(socket.into())
}

/// nginx's wording: `bind() to 0.0.0.0:80 failed (98: Address already in use)`.
pub fn bind_error(addr: SocketAddr, e: &io::Error) -> String {
    format!(
        "bind() to {addr} failed ({})",
        crate::error_log::errno_text(e)
    )
}

/// Binds every address, or none: on the first failure the ones already bound are closed.
/// `reuseport`: the addresses bound with `SO_REUSEPORT`; `backlog`: those with a listen queue
/// other than nginx's default.
pub fn bind_all(
    addrs: &[SocketAddr],
    reuseport: &[SocketAddr],
    backlog: &[(SocketAddr, i32)],
) -> Result<Vec<(SocketAddr, std::net::TcpListener)>, String> {
    addrs
        .iter()
        .map(|&addr| {
            let queue = (backlog.iter())
                .find(|(a, _)| *a == addr)
                .map_or(BACKLOG, |(_, n)| *n);
            bind_with_backlog(addr, reuseport.contains(&addr), queue)
                .map(|l| (addr, l))
                .map_err(|e| bind_error(addr, &e))
        })
        .collect()
}
