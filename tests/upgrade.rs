//! Upgrade / WebSocket passes through, with or without nginx's usual proxy_set_header lines.
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{echo_backend, imbang};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends an upgrade request over a raw socket; returns the response head and the socket.
async fn upgrade(addr: SocketAddr, path: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            n,
            1,
            "connection closed in the response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    (String::from_utf8(head).unwrap().to_ascii_lowercase(), s)
}

async fn echo_roundtrip(s: &mut TcpStream, text: &[u8]) {
    s.write_all(text).await.unwrap();
    let mut got = vec![0u8; text.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, text);
}

#[tokio::test]
async fn upgrade_passes_through_by_default_and_with_nginx_s_headers() {
    let backend = echo_backend().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream ws {{ server {backend}; }}
           server {{ listen 127.0.0.1:0;
             location /ws {{ proxy_pass http://ws; }}
             location /nginx-style/ {{
               proxy_pass http://ws/ws;
               proxy_set_header Upgrade $http_upgrade;
               proxy_set_header Connection \"upgrade\";
             }}
           }}
         }}"
    ))
    .await;
    let (head, mut nginx_style) = upgrade(lb.addr, "/nginx-style/").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_roundtrip(&mut nginx_style, b"with proxy_set_header").await;
    let (head, mut s) = upgrade(lb.addr, "/ws").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    echo_roundtrip(&mut s, b"hello through imbang").await;
    echo_roundtrip(&mut s, b"and again").await;
    // Closing the client side closes the tunnel: the peer's echo ends, imbang closes to us.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn nginx_s_websocket_map_works_unchanged() {
    // The configuration nginx's WebSocket proxying page gives.
    let backend = echo_backend().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
           upstream ws {{ server {backend}; }}
           server {{ listen 127.0.0.1:0;
             location / {{
               proxy_pass http://ws;
               proxy_http_version 1.1;
               proxy_set_header Upgrade $http_upgrade;
               proxy_set_header Connection $connection_upgrade;
             }}
             location /value {{ return 200 \"[$connection_upgrade]\"; }}
           }}
         }}"
    ))
    .await;
    let (head, mut s) = upgrade(lb.addr, "/").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_roundtrip(&mut s, b"through the map").await;
    // Without an Upgrade header the map gives `close`.
    assert_eq!(lb.get("/value").await, (200, "[close]".to_owned()));
}

#[tokio::test]
async fn an_idle_tunnel_closes_after_proxy_read_timeout() {
    let backend = echo_backend().await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ upstream ws {{ server {backend}; }}
           server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://ws; proxy_read_timeout 300ms; }} }} }}"
    ))
    .await;
    let (head, mut s) = upgrade(lb.addr, "/").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_roundtrip(&mut s, b"ping").await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle tunnel was not closed");
}

#[tokio::test]
async fn a_websocket_opened_before_ten_reloads_still_echoes_after_them() {
    let backend = echo_backend().await;
    let conf = |tag: &str| {
        format!(
            "daemon off; error_log stderr crit; events {{}}
             http {{ access_log off; upstream ws {{ server {backend}; }}
               server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://ws; }}
                 location = /tag {{ return 200 {tag}; }} }} }}"
        )
    };
    let lb = imbang(&conf("v0")).await;
    let (head, mut s) = upgrade(lb.addr, "/").await;
    assert!(head.starts_with("http/1.1 101"), "{head}");
    echo_roundtrip(&mut s, b"before").await;
    for i in 1..=10 {
        lb.reload(&conf(&format!("v{i}"))).await;
        assert_eq!(lb.get("/tag").await.1, format!("v{i}"));
        echo_roundtrip(&mut s, format!("after reload {i}").as_bytes()).await;
    }
}
