//! One connection on a `listen ... ssl` address: the client's hello is read first, the server
//! is chosen by the name it asks for (SNI, with nginx's `server_name` rules; the address's
//! default server without one), the handshake runs with that server's certificates and
//! settings, and the decrypted stream goes to HTTP/2 (ALPN `h2`) or HTTP/1.1.

use std::sync::Arc;

use rustls::server::Acceptor;
use rustls::{HandshakeKind, ProtocolVersion, ServerConnection};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::LazyConfigAcceptor;

use crate::config::lower::ssl::{GROUPS, SUITES};
use crate::http1::{self, Listener, Upgraded};
use crate::log;
use crate::proxy::ConnInfo;
use crate::route::normalize_host;

use super::ServerTls;
use super::client_cert::{ClientCert, Verified};

/// What a connection's handshake agreed on: the `$ssl_*` variables.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `$ssl_protocol`: `TLSv1.2`, `TLSv1.3`.
    pub protocol: &'static str,
    /// `$ssl_cipher`, in OpenSSL's words (`TLS_AES_128_GCM_SHA256`, `ECDHE-RSA-AES128-GCM-SHA256`).
    pub cipher: &'static str,
    /// `$ssl_server_name`: the name the client asked for (SNI).
    pub server_name: Option<Box<str>>,
    /// `$ssl_session_reused`: `r` or `.`.
    pub session_reused: bool,
    /// `$ssl_alpn_protocol`.
    pub alpn: &'static str,
    /// `$ssl_curve`, in OpenSSL's words (`X25519`, `prime256v1`).
    pub curve: &'static str,
    /// The server whose certificate the handshake used.
    pub server: Option<Arc<ServerTls>>,
    /// `$ssl_client_verify`, and the client's certificate.
    pub verified: Verified,
    pub client: Option<Box<ClientCert>>,
}

impl TlsInfo {
    fn of(conn: &ServerConnection, server: Arc<ServerTls>) -> Self {
        let protocol = match conn.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| {
                let name = format!("{:?}", s.suite());
                SUITES.iter().find(|(_, r)| *r == name).map(|(o, _)| *o)
            })
            .unwrap_or("");
        let curve = conn
            .negotiated_key_exchange_group()
            .and_then(|g| {
                let name = format!("{:?}", g.name());
                GROUPS.iter().find(|(_, r)| *r == name).map(|(o, _)| *o)
            })
            .unwrap_or("");
        let alpn = match conn.alpn_protocol() {
            Some(b"h2") => "h2",
            Some(b"http/1.1") => "http/1.1",
            _ => "",
        };
        Self {
            protocol,
            cipher,
            server_name: conn.server_name().map(Box::from),
            session_reused: conn.handshake_kind() == Some(HandshakeKind::Resumed),
            alpn,
            curve,
            verified: match &server.client {
                Some(auth) => auth.verify(conn.peer_certificates()),
                None => Verified::None,
            },
            client: match &server.client {
                Some(_) => conn
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| Box::new(ClientCert::of(c))),
                None => None,
            },
            server: Some(server),
        }
    }
}

/// Serves a TLS connection: handshake (bounded by `client_header_timeout`, as nginx bounds
/// it), then HTTP/2 or HTTP/1.1 until it closes. `guard` is held until then.
pub async fn serve(
    stream: TcpStream,
    listener: Arc<Listener>,
    mut info: ConnInfo,
    guard: impl Send + 'static,
) {
    let _guard = guard;
    let deadline = Instant::now() + listener.settings.header_timeout;
    let remote = info.remote;
    let timed_out = |id: u64| {
        log!(
            Info,
            "*{id} client timed out (110: Connection timed out) while SSL handshaking, client: {}",
            remote.ip()
        )
    };
    // A plain HTTP request on a TLS port (the first byte of a handshake is 22): nginx answers
    // it with a 400 page of its own rather than a TLS alert the client cannot read.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        biased;
        () = listener.stop.stopped() => return,
        peeked = tokio::time::timeout_at(deadline, stream.peek(&mut first)) => peeked,
    };
    match peeked {
        Ok(Ok(1..)) if first[0] != 22 => {
            if first[0].is_ascii_uppercase() {
                log!(
                    Info,
                    "*{} client sent plain HTTP request to HTTPS port while reading client request headers, client: {}",
                    info.id,
                    remote.ip()
                );
                plain_http_answer(stream).await;
            }
            return;
        }
        Ok(Ok(1..)) => {}
        Ok(_) => return,
        Err(_) => return timed_out(info.id),
    }
    // Counted (Plus's `/ssl`): a failure unless it completes.
    let handshake = crate::stats::Handshake::start();
    let acceptor = LazyConfigAcceptor::new(Acceptor::default(), stream);
    let start = tokio::select! {
        biased;
        () = listener.stop.stopped() => return handshake.abandon(),
        hello = tokio::time::timeout_at(deadline, acceptor) => match hello {
            Ok(Ok(start)) => start,
            Ok(Err(e)) => {
                log!(Info, "*{} {e} while SSL handshaking, client: {}", info.id, remote.ip());
                return;
            }
            Err(_) => return timed_out(info.id),
        },
    };
    let hello = start.client_hello();
    if hello
        .alpn()
        .is_some_and(|mut p| p.any(|p| p == crate::acme::ACME_TLS_ALPN))
    {
        let challenge = hello.server_name().and_then(crate::acme::tls_alpn01);
        return super::acme_tls_alpn(start, challenge, deadline).await;
    }
    let (server_tls, config) = {
        let snapshot = listener.shared.live.snapshot();
        let Some(vhosts) = snapshot.vhosts(info.key, info.local) else {
            return;
        };
        let server = match hello.server_name().and_then(normalize_host) {
            Some(name) => vhosts.find(&name),
            None => vhosts.default_server(),
        };
        match server
            .tls
            .as_ref()
            .and_then(|t| Some((t.clone(), t.config.clone()?)))
        {
            Some(found) => found,
            None => {
                // `ssl_reject_handshake on` (or a server without TLS on this address).
                log!(
                    Info,
                    "*{} SSL handshake rejected for \"{}\" while SSL handshaking, client: {}",
                    info.id,
                    hello.server_name().unwrap_or_default(),
                    remote.ip()
                );
                return;
            }
        }
    };
    let tls = match tokio::time::timeout_at(deadline, start.into_stream(config)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            log!(
                Info,
                "*{} {e} while SSL handshaking, client: {}",
                info.id,
                remote.ip()
            );
            return;
        }
        Err(_) => return timed_out(info.id),
    };
    let (tcp, conn) = tls.get_ref();
    let _ = tcp.set_nodelay(true);
    let tls_info = TlsInfo::of(conn, server_tls);
    handshake.done(tls_info.session_reused);
    let h2 = tls_info.alpn == "h2";
    info.tls = Some(Box::new(tls_info));
    let info = Arc::new(info);
    if h2 {
        let settings = listener.settings;
        let timeouts = http1::h2::Timeouts {
            handshake: settings.header_timeout,
            idle: settings.keepalive_timeout,
            send: settings.send_timeout,
        };
        let io = Upgraded::other(bytes::Bytes::new(), tls);
        let shared = listener.shared.clone();
        let stop = listener.stop.clone();
        Box::pin(http1::h2::serve(io, shared, info, stop, timeouts)).await;
    } else {
        Box::pin(super::h1::serve(tls, listener, info)).await;
    }
}

/// nginx's page for a plain HTTP request on a TLS port (`ngx_http_error_497_page`), then a
/// lingering close: what the client still sends is read for a moment, so the close does not
/// reset the connection before the answer is read.
async fn plain_http_answer(mut stream: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let detail = "The plain HTTP request was sent to HTTPS port";
    let page = format!(
        "<html>\r\n<head><title>400 {detail}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{detail}</center>\r\n<hr><center>imbang</center>\r\n</body>\r\n</html>\r\n"
    );
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\nServer: imbang\r\nDate: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        httpdate::fmt_http_date(std::time::SystemTime::now()),
        page.len()
    );
    let answer = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(page.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), answer).await;
}
