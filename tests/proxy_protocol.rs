//! `listen ... proxy_protocol`: a PROXY protocol header (v1 text or v2 binary, whole or split
//! over writes) before HTTP/1, HTTP/2 and TLS; `$proxy_protocol_*` and
//! `real_ip_header proxy_protocol` as a backend sees them; a missing, broken or late header
//! closing the connection (logged as nginx logs it); and the machine's nginx answering the same
//! bytes side by side.
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use imbang::proxy_protocol::{encode_v1, encode_v2};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::tls::{Ca, client_config};
use support::{ImbangGuard, TempDir, free_port, imbang, serve_hyper, wait_accepting};

const WAIT: Duration = Duration::from_secs(10);

/// A backend answering with what imbang told it: `real=[X-Real-IP] xff=[X-Forwarded-For]
/// pp=[X-PP] tlv=[X-TLV]`.
async fn header_echo() -> SocketAddr {
    serve_hyper(|req: hyper::Request<hyper::body::Incoming>| async move {
        let get = |n: &str| {
            req.headers().get(n).map_or("none".to_owned(), |v| {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            })
        };
        let body = format!(
            "real=[{}] xff=[{}] pp=[{}] tlv=[{}]",
            get("x-real-ip"),
            get("x-forwarded-for"),
            get("x-pp"),
            get("x-tlv"),
        );
        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes::Bytes::from(body))))
    })
    .await
}

/// The http block's body both imbang and nginx run: a `proxy_protocol` listener whose trusted
/// peer (127.0.0.1) gives way to the header's client, every `$proxy_protocol_*` sent on.
fn http_block(listen: &str, echo: SocketAddr, trusted: &str, extra: &str) -> String {
    format!(
        "access_log off;
         server {{
           listen {listen} proxy_protocol;
           set_real_ip_from {trusted};
           real_ip_header proxy_protocol;
           {extra}
           location / {{
             proxy_pass http://{echo};
             proxy_set_header X-Real-IP $remote_addr;
             proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
             proxy_set_header X-PP \"$proxy_protocol_addr|$proxy_protocol_port|$proxy_protocol_server_addr|$proxy_protocol_server_port|$remote_port|$realip_remote_addr\";
           }}
         }}"
    )
}

/// Writes `chunks` one by one (each its own segment: `TCP_NODELAY`, a pause between them so
/// that the server reads them apart), then reads to the end: the raw answer.
async fn send(addr: SocketAddr, chunks: &[&[u8]]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    for (i, chunk) in chunks.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // A peer that closed early (a refused header) may reset the later writes.
        if stream.write_all(chunk).await.is_err() {
            break;
        }
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut out))
        .await
        .expect("an answer or a close in time");
    String::from_utf8_lossy(&out).into_owned()
}

const GET: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn v2_with_tlvs() -> Vec<u8> {
    let ssl = [&[0x01u8, 0, 0, 0, 0][..], &[0x21, 0, 7], b"TLSv1.3"].concat();
    encode_v2(
        Some((
            "[2001:db8::5]:4444".parse().unwrap(),
            "[2001:db8::1]:443".parse().unwrap(),
        )),
        &[
            (0x01, b"h2"),
            (0x05, b"req-42"),
            (0x20, &ssl),
            (0xe1, b"custom"),
        ],
    )
}

#[tokio::test]
async fn v1_and_v2_headers_give_the_client_address_and_the_variables() {
    let echo = header_echo().await;
    let extra = "add_header X-TLV \"$proxy_protocol_tlv_alpn,$proxy_protocol_tlv_unique_id,$proxy_protocol_tlv_ssl_version,$proxy_protocol_tlv_ssl_verify,$proxy_protocol_tlv_0xe1,$proxy_protocol_tlv_0xE1\" always;";
    let lb = imbang(&format!(
        "events {{}} http {{ {} }}",
        http_block("127.0.0.1:0", echo, "127.0.0.1", extra)
    ))
    .await;

    // v1 in one write with the request behind it.
    let v1 = encode_v1(Some((
        "192.0.2.7:5678".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    )));
    let answer = send(lb.addr, &[&[v1.as_slice(), GET].concat()]).await;
    assert_eq!(
        body(&answer),
        "real=[192.0.2.7] xff=[192.0.2.7] pp=[192.0.2.7|5678|198.51.100.1|80|5678|127.0.0.1] tlv=[none]",
        "{answer}"
    );

    // v2 over IPv6 with TLVs, cut into pieces of 7 bytes, the request in a write of its own.
    let v2 = v2_with_tlvs();
    let mut chunks: Vec<&[u8]> = v2.chunks(7).collect();
    chunks.push(GET);
    let answer = send(lb.addr, &chunks).await;
    assert_eq!(
        body(&answer),
        "real=[2001:db8::5] xff=[2001:db8::5] pp=[2001:db8::5|4444|2001:db8::1|443|4444|127.0.0.1] tlv=[none]"
    );
    assert!(
        answer.contains("X-TLV: h2,req-42,TLSv1.3,0,custom,custom\r\n"),
        "{answer}"
    );

    // v2 LOCAL (a balancer's own health check): the connection's addresses stand.
    let mut local = encode_v2(None, &[]);
    local[12] = 0x20;
    let answer = send(lb.addr, &[&local, GET]).await;
    assert!(
        body(&answer).starts_with("real=[127.0.0.1] xff=[127.0.0.1] pp=[||||"),
        "{answer}"
    );

    // v1 UNKNOWN: the same.
    let answer = send(lb.addr, &[b"PROXY UNKNOWN\r\n", GET]).await;
    assert!(body(&answer).starts_with("real=[127.0.0.1]"), "{answer}");
}

#[tokio::test]
async fn an_untrusted_peer_keeps_its_address_but_the_variables_say_what_came() {
    let echo = header_echo().await;
    let lb = imbang(&format!(
        "events {{}} http {{ {} }}",
        http_block("127.0.0.1:0", echo, "10.0.0.0/8", "")
    ))
    .await;
    let v1 = encode_v1(Some((
        "192.0.2.7:5678".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    )));
    let answer = send(lb.addr, &[&v1, GET]).await;
    let b = body(&answer);
    assert!(
        b.starts_with("real=[127.0.0.1] xff=[127.0.0.1] pp=[192.0.2.7|5678|198.51.100.1|80|"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_missing_broken_or_late_header_closes_the_connection() {
    let echo = header_echo().await;
    let lb = imbang(&format!(
        "events {{}} http {{ client_header_timeout 1s; {} }}",
        http_block("127.0.0.1:0", echo, "127.0.0.1", "")
    ))
    .await;
    // No header: the request is not answered.
    assert_eq!(send(lb.addr, &[GET]).await, "");
    // Broken ones.
    for bad in [
        &b"PROXY TCP4 192.0.2.7 198.51.100.1 99999 80\r\n"[..],
        b"PROXY TCP4 192.0.2.7 198.51.100.1 1 80\n",
        b"PROXY HTTP/1.1\r\n",
    ] {
        assert_eq!(send(lb.addr, &[bad, GET]).await, "", "{bad:?}");
    }
    let mut v3 = v2_with_tlvs();
    v3[12] = 0x31;
    assert_eq!(send(lb.addr, &[&v3, GET]).await, "");
    // A v2 header whose TLV runs past its end.
    let mut tlv = v2_with_tlvs();
    let n = tlv.len();
    tlv[n - 7] = 0xff;
    assert_eq!(send(lb.addr, &[&tlv, GET]).await, "");

    // Half a header, then nothing: closed after client_header_timeout (1 s), not before.
    let started = tokio::time::Instant::now();
    let mut stream = TcpStream::connect(lb.addr).await.unwrap();
    stream.write_all(b"PROXY TCP4 192.0.2.7 ").await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    support::eventually("no open connection", WAIT, || {
        lb.server.open_connections() == 0
    })
    .await;
}

fn write_pair(dir: &TempDir, pem: &support::tls::Pem) -> String {
    let c = dir.write("t.crt", &pem.cert);
    let k = dir.write("t.key", &pem.key);
    format!(
        "ssl_certificate {}; ssl_certificate_key {};",
        c.display(),
        k.display()
    )
}

#[tokio::test]
async fn the_header_comes_before_the_tls_hello_and_h2_works_behind_it() {
    let ca = Ca::new("pp CA");
    let dir = TempDir::new("pp-tls");
    let certs = write_pair(&dir, &ca.leaf(&["app.test"], false));
    let echo = header_echo().await;
    let tls = imbang(&format!(
        "events {{}} http {{ http2 on; {certs} {} }}",
        http_block("127.0.0.1:0 ssl", echo, "127.0.0.1", "")
    ))
    .await;

    for (alpn, header) in [
        (
            "http/1.1",
            encode_v1(Some((
                "192.0.2.8:1000".parse().unwrap(),
                "198.51.100.1:443".parse().unwrap(),
            ))),
        ),
        ("h2", v2_with_tlvs()),
    ] {
        let mut tcp = TcpStream::connect(tls.addr).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let config = Arc::new(client_config(&ca, &[alpn]));
        let name = rustls::pki_types::ServerName::try_from("app.test").unwrap();
        let stream = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .expect("handshake after the header");
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn.as_bytes()));
        let b = if alpn == "h2" {
            h2_get(stream).await
        } else {
            support::tls::get(stream, "app.test", "/x").await.1
        };
        let want = if alpn == "h2" {
            "real=[2001:db8::5] xff=[2001:db8::5] pp=[2001:db8::5|4444|2001:db8::1|443|4444|127.0.0.1]"
        } else {
            "real=[192.0.2.8] xff=[192.0.2.8] pp=[192.0.2.8|1000|198.51.100.1|443|1000|127.0.0.1]"
        };
        assert!(b.starts_with(want), "{alpn}: {b}");
    }

    // Without a header, the TLS hello itself is a broken header: no handshake.
    let config = Arc::new(client_config(&ca, &["http/1.1"]));
    let refused = support::tls::connect(config, tls.addr, "app.test").await;
    assert!(refused.is_err());

    // h2c (prior knowledge) behind a header on a plain listener.
    let plain = imbang(&format!(
        "events {{}} http {{ {} }}",
        http_block("127.0.0.1:0", echo, "127.0.0.1", "")
    ))
    .await;
    let mut tcp = TcpStream::connect(plain.addr).await.unwrap();
    tcp.write_all(&v2_with_tlvs()).await.unwrap();
    let b = h2_get(tcp).await;
    assert!(b.starts_with("real=[2001:db8::5]"), "{b}");
}

async fn h2_get<S>(stream: S) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = http::Request::get("http://app.test/x")
        .body(Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// The real binary and the machine's nginx 1.22, given the same bytes: the same values reach
/// the backend, and a broken header is refused by both with nginx's `[error] ... broken
/// header` line. (nginx 1.22 has no `$proxy_protocol_tlv_*`: those are compared in the test
/// above against nginx's documented names only.)
#[tokio::test]
async fn side_by_side_with_nginx() {
    let echo = header_echo().await;
    let dir = TempDir::new("pp-nginx");
    let Some((_nginx, nginx_addr)) = support::start_nginx(
        &dir,
        &http_block("127.0.0.1:{listen}", echo, "127.0.0.1", ""),
    )
    .await
    else {
        return;
    };
    let ours = TempDir::new("pp-imbang");
    std::fs::create_dir_all(ours.path().join("logs")).unwrap();
    let port = free_port();
    ours.write(
        "imbang.conf",
        &format!(
            "daemon off; error_log logs/error.log info; pid logs/imbang.pid; events {{}}
             http {{ {} }}",
            http_block(&format!("127.0.0.1:{port}"), echo, "127.0.0.1", "")
        ),
    );
    let _imbang = ImbangGuard::start(&format!("{}/", ours.path().display()));
    let imbang_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_accepting(imbang_addr, WAIT).await;

    let v1 = encode_v1(Some((
        "192.0.2.7:5678".parse().unwrap(),
        "198.51.100.1:80".parse().unwrap(),
    )));
    let v2 = v2_with_tlvs();
    let mut local = encode_v2(None, &[]);
    local[12] = 0x20;
    let cases: [(&str, Vec<u8>); 5] = [
        ("v1", [v1.as_slice(), GET].concat()),
        ("v2", [v2.as_slice(), GET].concat()),
        ("local", [local.as_slice(), GET].concat()),
        ("unknown", [&b"PROXY UNKNOWN\r\n"[..], GET].concat()),
        ("missing", GET.to_vec()),
    ];
    for (what, bytes) in &cases {
        let a = send(imbang_addr, &[bytes]).await;
        let n = send(nginx_addr, &[bytes]).await;
        // The X-PP field's `$remote_port` of a connection without addresses is the client's
        // own, different on each connection: compare up to it.
        let cut = |s: &str| s.split("|").take(4).collect::<Vec<_>>().join("|");
        assert_eq!(
            cut(body(&a)),
            cut(body(&n)),
            "{what}: imbang {a:?} nginx {n:?}"
        );
        assert_eq!(a.is_empty(), n.is_empty(), "{what}");
    }

    let logged = |path: std::path::PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    // nginx 1.22 quotes the whole first read, line ends and all (later nginx cuts it at the
    // first line end, as imbang does): the error line and its context may be lines apart.
    support::eventually("both logged the broken header", WAIT, || {
        [
            dir.path().join("error.log"),
            ours.path().join("logs/error.log"),
        ]
        .into_iter()
        .all(|p| {
            let log = logged(p);
            log.split("[error]").any(|entry| {
                entry.contains("broken header: \"GET /x HTTP/1.1")
                    && entry.contains("while reading PROXY protocol, client: 127.0.0.1")
            })
        })
    })
    .await;
}
