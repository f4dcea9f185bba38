//! `stream { server { listen ... udp; } }`: datagrams balanced per client session, through
//! imbang in-process, with real UDP backends and a real DNS client and server on 127.0.0.1.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use std::sync::Arc;
use support::{TempDir, eventually, free_port, imbang};
use tokio::net::UdpSocket;

const T: Duration = Duration::from_secs(10);

/// A UDP backend that answers each datagram with `name:` and the datagram.
async fn udp_backend(name: &str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let mut answer = format!("{name}:").into_bytes();
            answer.extend_from_slice(&buf[..n]);
            let _ = socket.send_to(&answer, from).await;
        }
    });
    addr
}

/// A UDP port free on 127.0.0.1 a moment ago.
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn ask(client: &UdpSocket, to: SocketAddr, what: &str) -> String {
    client.send_to(what.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, from) = tokio::time::timeout(T, client.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(from, to, "the answer comes from the address asked");
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// imbang in-process on `conf`, whose listeners may all be UDP.
async fn imbang_udp(conf: &str) -> Arc<imbang::server::Server> {
    let config = imbang::config::parse_str("/test/imbang.conf", conf, &support::options())
        .unwrap_or_else(|e| panic!("config errors:\n{e}"));
    let server = imbang::server::Server::new(config, None, None)
        .unwrap_or_else(|e| panic!("compile errors:\n{e}"));
    let bound = server.bind().expect("bind");
    server.serve(bound).await.expect("serve");
    assert!(!server.bound_udp().await.is_empty());
    server
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn datagrams_are_balanced_per_client_session() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let port = free_udp_port();
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let dir = TempDir::new("stream-udp-log");
    let log = dir.path().join("udp.log");
    let _lb = imbang_udp(&format!(
        "events {{}}
         stream {{
           log_format u '$protocol $status $bytes_received $bytes_sent $upstream_addr';
           upstream app {{ server {a}; server {b}; }}
           server {{ listen 127.0.0.1:{port} udp; proxy_timeout 300ms; access_log {} u; proxy_pass app; }}
         }}",
        log.display()
    ))
    .await;
    // One client: its datagrams stay with one peer (its session).
    let one = client().await;
    let first = ask(&one, lb_addr, "x").await;
    let peer = &first[..2];
    assert!(first == "a:x" || first == "b:x", "{first}");
    assert_eq!(ask(&one, lb_addr, "yy").await, format!("{peer}yy"));
    // Another client: a session of its own, on the other peer (round robin).
    let two = client().await;
    let other = if peer == "a:" { "b:" } else { "a:" };
    assert_eq!(ask(&two, lb_addr, "z").await, format!("{other}z"));
    // The first session ends after proxy_timeout without a datagram: its log line.
    eventually("the UDP log lines", T, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() == 2)
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let peer_addr = if peer == "a:" { a } else { b };
    assert!(
        text.lines()
            .any(|l| l == format!("UDP 200 3 7 {peer_addr}")),
        "{text}"
    );
}

#[tokio::test]
async fn proxy_requests_and_responses_end_sessions() {
    let (a, b) = (udp_backend("a").await, udp_backend("b").await);
    let port = free_udp_port();
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _lb = imbang_udp(&format!(
        "events {{}}
         stream {{
           upstream app {{ server {a}; server {b}; }}
           server {{ listen 127.0.0.1:{port} udp; proxy_requests 1; proxy_responses 1; proxy_pass app; }}
         }}"
    ))
    .await;
    // Each datagram is a session of its own: one client's datagrams alternate between peers.
    let one = client().await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(ask(&one, lb_addr, "q").await);
    }
    assert_eq!(seen, ["a:q", "b:q", "a:q", "b:q"]);
}

/// A DNS server behind imbang answers a real DNS client, over UDP and over TCP on one port.
#[tokio::test]
async fn dns_round_trip_through_imbang() {
    let dns = support::dns::DnsServer::start(60).await;
    dns.set("app.test", &["10.1.2.3"]);
    // The same port for UDP and TCP, as DNS uses it.
    let port = loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break port;
        }
    };
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _lb = imbang(&format!(
        "events {{}}
         stream {{
           upstream dns {{ server {}; }}
           server {{ listen 127.0.0.1:{port} udp; listen 127.0.0.1:{port}; proxy_responses 1; proxy_pass dns; }}
         }}",
        dns.addr
    ))
    .await;
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(lb_addr, protocol));
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.cache_size = 0;
        opts.timeout = Duration::from_secs(5);
        opts.attempts = 1;
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        let found = resolver.ipv4_lookup("app.test.").await.unwrap();
        let addrs: Vec<String> = found.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["10.1.2.3"], "{protocol:?}");
    }
    let (udp, tcp) = dns.queries();
    assert!(udp >= 1 && tcp >= 1, "udp {udp}, tcp {tcp}");
}

#[tokio::test]
async fn return_over_udp() {
    let port = free_udp_port();
    let lb_addr = SocketAddr::from(([127, 0, 0, 1], port));
    let _lb = imbang_udp(&format!(
        "events {{}}
         stream {{ server {{ listen 127.0.0.1:{port} udp; return \"$protocol $remote_addr\"; }} }}"
    ))
    .await;
    assert_eq!(ask(&client().await, lb_addr, "?").await, "UDP 127.0.0.1");
}
