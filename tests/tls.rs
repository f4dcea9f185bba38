//! TLS termination on `listen ... ssl`: certificates chosen by SNI with nginx's `server_name`
//! rules, ECDSA or RSA by what the client verifies, ALPN h2 / http/1.1 proxied to HTTP/1.1
//! backends, session resumption, `ssl_reject_handshake`, the handshake timeout, reload with a
//! renewed certificate, and every bad certificate configuration in nginx's words.
mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::SignatureScheme;
use support::tls::{Ca, Pem, any_cert_client, client_config, connect, get};
use support::{Lb, TempDir, TestBackend, backend, imbang, run_imbang};
use tokio::io::AsyncReadExt;

/// Writes `pem` as `name.crt` / `name.key` in `dir`; the two paths.
fn write_pair(dir: &TempDir, name: &str, pem: &Pem) -> (String, String) {
    let c = dir.write(&format!("{name}.crt"), &pem.cert);
    let k = dir.write(&format!("{name}.key"), &pem.key);
    (c.display().to_string(), k.display().to_string())
}

/// `ssl_certificate` + `ssl_certificate_key` lines for a pair.
fn cert_lines((c, k): &(String, String)) -> String {
    format!("ssl_certificate {c}; ssl_certificate_key {k};")
}

/// Three servers on one TLS address: `a.test` (default), `b.test`, `*.c.test`; each answers
/// with its name and what TLS said.
async fn three_servers(ca: &Ca, dir: &TempDir) -> (Lb, [Pem; 3]) {
    let a = ca.leaf(&["a.test"], false);
    let b = ca.leaf(&["b.test"], false);
    let c = ca.leaf(&["*.c.test"], false);
    let (pa, pb, pc) = (
        write_pair(dir, "a", &a),
        write_pair(dir, "b", &b),
        write_pair(dir, "c", &c),
    );
    let answer = r#"return 200 "$server_name $scheme $https $ssl_server_name $ssl_alpn_protocol $ssl_protocol";"#;
    let conf = format!(
        "events {{}} http {{ access_log off;
           server {{ listen 127.0.0.1:0 ssl default_server; server_name a.test; {} {answer} }}
           server {{ listen 127.0.0.1:0 ssl; server_name b.test; {} {answer} }}
           server {{ listen 127.0.0.1:0 ssl; server_name *.c.test; {} {answer} }}
        }}",
        cert_lines(&pa),
        cert_lines(&pb),
        cert_lines(&pc)
    );
    (imbang(&conf).await, [a, b, c])
}

#[tokio::test]
async fn sni_picks_the_server_s_certificate_and_an_unknown_or_missing_name_gets_the_default() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-sni");
    let (lb, [a, b, c]) = three_servers(&ca, &dir).await;
    let cases: [(&str, &Pem, &str); 4] = [
        ("b.test", &b, "b.test https on b.test http/1.1 TLSv1.3"),
        ("x.c.test", &c, " https on x.c.test http/1.1 TLSv1.3"),
        (
            "other.test",
            &a,
            "a.test https on other.test http/1.1 TLSv1.3",
        ),
        // An IP address sends no SNI: the default server's certificate.
        ("127.0.0.1", &a, "a.test https on  http/1.1 TLSv1.3"),
    ];
    for (sni, want, body) in cases {
        let (config, seen) = any_cert_client(&[], &["http/1.1"]);
        let stream = connect(Arc::new(config), lb.addr, sni).await.unwrap();
        assert_eq!(
            seen.get().as_ref(),
            Some(&want.der),
            "certificate for {sni}"
        );
        // The Host decides the server of the request, as in nginx.
        let host = if sni == "127.0.0.1" { "a.test" } else { sni };
        let (status, got) = get(stream, host, "/").await;
        assert_eq!((status, got.as_str()), (200, body), "answer for {sni}");
    }
    // And a client that checks the certificate against the CA accepts it for the name.
    let config = Arc::new(client_config(&ca, &[]));
    let stream = connect(config, lb.addr, "b.test").await.unwrap();
    assert_eq!(get(stream, "b.test", "/").await.0, 200);
}

#[tokio::test]
async fn ecdsa_or_rsa_is_chosen_by_what_the_client_can_verify() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-ecdsa-rsa");
    let ec = ca.leaf(&["both.test"], false);
    let rsa = ca.leaf(&["both.test"], true);
    let (pe, pr) = (write_pair(&dir, "ec", &ec), write_pair(&dir, "rsa", &rsa));
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; server_name both.test; {} {} return 200 ok; }} }}",
        cert_lines(&pe),
        cert_lines(&pr)
    );
    let lb = imbang(&conf).await;
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_only = [SignatureScheme::ECDSA_NISTP256_SHA256];
    for (schemes, want, what) in [
        (&rsa_only[..], &rsa, "RSA-only client"),
        (&ecdsa_only[..], &ec, "ECDSA-only client"),
        // Both: the first listed that the client can verify.
        (&[][..], &ec, "client verifying both"),
    ] {
        let (config, seen) = any_cert_client(schemes, &[]);
        let stream = connect(Arc::new(config), lb.addr, "both.test")
            .await
            .unwrap();
        assert_eq!(seen.get().as_ref(), Some(&want.der), "{what}");
        assert_eq!(get(stream, "both.test", "/").await, (200, "ok".into()));
    }
}

/// A TLS server proxying to an HTTP/1.1 backend, HTTP/2 offered (`http2 on`) or not.
async fn proxy_over_tls(ca: &Ca, dir: &TempDir, http2: bool) -> (Lb, TestBackend) {
    let app = backend("app").await;
    let pem = ca.leaf(&["app.test"], false);
    let pair = write_pair(dir, "app", &pem);
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; http2 {}; server_name app.test; {}
            location / {{ proxy_pass http://{}; proxy_set_header X-Proto $scheme; add_header X-Alpn $ssl_alpn_protocol; }} }} }}",
        if http2 { "on" } else { "off" },
        cert_lines(&pair),
        app.addr
    );
    (imbang(&conf).await, app)
}

#[tokio::test]
async fn alpn_h2_and_http1_are_both_proxied_to_an_http1_backend() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-alpn");
    let (lb, _app) = proxy_over_tls(&ca, &dir, true).await;
    let addr = lb.addr;

    // HTTP/2 over TLS (hyper's client), with a request body.
    let config = Arc::new(client_config(&ca, &["h2", "http/1.1"]));
    let stream = connect(config, addr, "app.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = http::Request::post("https://app.test/up")
            .body(Full::new(bytes::Bytes::from_static(b"hello")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-alpn"], "h2");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"app POST /up body=5");
    }

    // HTTP/1.1 over TLS (hyper's client), keep-alive.
    let config = Arc::new(client_config(&ca, &["http/1.1"]));
    let stream = connect(config, addr, "app.test").await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for _ in 0..3 {
        let request = http::Request::post("/up")
            .header("host", "app.test")
            .body(Full::new(bytes::Bytes::from_static(b"hey")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-alpn"], "http/1.1");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"app POST /up body=3");
    }
}

#[tokio::test]
async fn without_http2_on_only_http1_is_offered() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-no-h2");
    let (lb, _app) = proxy_over_tls(&ca, &dir, false).await;
    let addr = lb.addr;
    let config = Arc::new(client_config(&ca, &["h2", "http/1.1"]));
    let stream = connect(config, addr, "app.test").await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(
        get(stream, "app.test", "/").await,
        (200, "app GET /".into())
    );
}

#[tokio::test]
async fn curl_speaks_http2_over_tls() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    let Ok(version) = curl else {
        eprintln!("skipped: no curl");
        return;
    };
    if !String::from_utf8_lossy(&version.stdout).contains("HTTP2") {
        eprintln!("skipped: this curl has no HTTP/2");
        return;
    }
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-curl");
    let (lb, _app) = proxy_over_tls(&ca, &dir, true).await;
    let addr = lb.addr;
    let ca_file = dir.write("ca.pem", &ca.pem);
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--http2", "--cacert"])
        .arg(&ca_file)
        .arg("--resolve")
        .arg(format!("app.test:{}:127.0.0.1", addr.port()))
        .args(["-w", " %{http_version}"])
        .arg(format!("https://app.test:{}/", addr.port()))
        .output()
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "app GET / 2");
}

#[tokio::test]
async fn a_second_connection_resumes_the_session_with_tls13_and_tls12() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-resume");
    let pair = write_pair(&dir, "r", &ca.leaf(&["r.test"], false));
    for (protocols, cache) in [
        ("TLSv1.3", ""),
        ("TLSv1.2", ""),
        (
            "TLSv1.2",
            "ssl_session_tickets off; ssl_session_cache shared:SSL:1m;",
        ),
        (
            "TLSv1.3",
            "ssl_session_tickets off; ssl_session_cache shared:SSL:1m;",
        ),
    ] {
        let conf = format!(
            "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; ssl_protocols {protocols}; {cache} {}
               return 200 \"$ssl_session_reused $ssl_protocol\"; }} }}",
            cert_lines(&pair)
        );
        let lb = imbang(&conf).await;
        // One client config: its session store carries the session to the second connection.
        let config = Arc::new(client_config(&ca, &[]));
        let first = connect(config.clone(), lb.addr, "r.test").await.unwrap();
        assert_eq!(
            get(first, "r.test", "/").await,
            (200, format!(". {protocols}")),
            "{protocols} {cache}"
        );
        let second = connect(config, lb.addr, "r.test").await.unwrap();
        assert_eq!(
            second.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed),
            "{protocols} {cache}"
        );
        assert_eq!(
            get(second, "r.test", "/").await,
            (200, format!("r {protocols}"))
        );
    }
}

#[tokio::test]
async fn with_neither_tickets_nor_a_cache_nothing_resumes() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-no-resume");
    let pair = write_pair(&dir, "r", &ca.leaf(&["r.test"], false));
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; ssl_session_tickets off; {} return 200 $ssl_session_reused; }} }}",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let config = Arc::new(client_config(&ca, &[]));
    let first = connect(config.clone(), lb.addr, "r.test").await.unwrap();
    assert_eq!(get(first, "r.test", "/").await, (200, ".".into()));
    let second = connect(config, lb.addr, "r.test").await.unwrap();
    assert_eq!(
        second.get_ref().1.handshake_kind(),
        Some(rustls::HandshakeKind::Full)
    );
}

#[tokio::test]
async fn ssl_reject_handshake_refuses_unknown_names_and_port_80_redirects_beside() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-reject");
    let pair = write_pair(&dir, "k", &ca.leaf(&["known.test"], false));
    let conf = format!(
        "events {{}} http {{ access_log off;
           server {{ listen 127.0.0.1:0 ssl default_server; ssl_reject_handshake on; }}
           server {{ listen 127.0.0.1:0 ssl; server_name known.test; {} return 200 known; }}
           server {{ listen 127.0.0.2:0; return 301 https://$host$request_uri; }}
        }}",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let config = Arc::new(client_config(&ca, &[]));
    assert!(
        connect(config.clone(), lb.addr, "unknown.test")
            .await
            .is_err()
    );
    let stream = connect(config, lb.addr, "known.test").await.unwrap();
    assert_eq!(get(stream, "known.test", "/").await, (200, "known".into()));

    let plain = lb.server.bound().await[1].1;
    let stream = tokio::net::TcpStream::connect(plain).await.unwrap();
    let mut stream = stream;
    use tokio::io::AsyncWriteExt;
    stream
        .write_all(b"GET /a?b=1 HTTP/1.1\r\nHost: known.test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 301"), "{raw}");
    assert!(
        raw.to_ascii_lowercase()
            .contains("location: https://known.test/a?b=1\r\n"),
        "{raw}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_dropped_after_client_header_timeout() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-timeout");
    let pair = write_pair(&dir, "t", &ca.leaf(&["t.test"], false));
    let conf = format!(
        "events {{}} http {{ access_log off; client_header_timeout 1s; server {{ listen 127.0.0.1:0 ssl; {} return 200; }} }}",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let mut silent = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the silent client is closed on: {closed:?}"
    );
    // The connection's count goes a moment after its socket.
    support::eventually("no open connection", Duration::from_secs(5), || {
        lb.server.open_connections() == 0
    })
    .await;
}

#[tokio::test]
async fn a_reload_serves_the_renewed_certificate_and_a_bad_one_keeps_the_old() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-renew");
    let old = ca.leaf(&["r.test"], false);
    let pair = write_pair(&dir, "site", &old);
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; {} return 200 ok; }} }}",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let shown = |lb: &Lb| {
        let addr = lb.addr;
        async move {
            let (config, seen) = any_cert_client(&[], &[]);
            let stream = connect(Arc::new(config), addr, "r.test").await.unwrap();
            assert_eq!(get(stream, "r.test", "/").await.0, 200);
            seen.get().unwrap()
        }
    };
    assert_eq!(shown(&lb).await, old.der);

    let new = ca.leaf(&["r.test"], false);
    write_pair(&dir, "site", &new);
    lb.reload(&conf).await;
    assert_eq!(shown(&lb).await, new.der);

    // A key that does not match: the reload fails and the renewed certificate stays.
    dir.write("site.key", &ca.leaf(&["r.test"], false).key);
    let config =
        imbang::config::parse_str("/test/imbang.conf", &conf, &support::options()).unwrap();
    let err = lb.server.apply(config).await.unwrap_err().to_string();
    assert!(err.contains("does not match the certificate"), "{err}");
    assert_eq!(shown(&lb).await, new.der);
}

/// `imbang -t` on `conf` in `dir`: (exit code, stderr).
async fn test_config(dir: &TempDir, conf: &str) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let c = dir.write("imbang.conf", conf);
    let p = format!("{}/", dir.path().display());
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c.to_str().unwrap()]).await;
    (out.code, out.stderr)
}

#[tokio::test]
async fn every_bad_certificate_configuration_fails_t_with_nginx_s_words_and_its_place() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-bad");
    let good = write_pair(&dir, "good", &ca.leaf(&["g.test"], false));
    let other = ca.leaf(&["g.test"], false);
    dir.write("other.key", &other.key);
    dir.write(
        "garbage.crt",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    dir.write("empty.pem", "nothing here\n");
    let d = dir.path().display().to_string();
    let c = format!("{d}/imbang.conf");
    let (gc, gk) = &good;
    let cases: Vec<(String, String)> = vec![
        (
            "listen 127.0.0.1:0 ssl;".into(),
            format!(
                "no \"ssl_certificate\" is defined for the \"listen ... ssl\" directive in {c}:3:1"
            ),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {d}/missing.crt; ssl_certificate_key {gk};"
            ),
            format!(
                "cannot load certificate \"{d}/missing.crt\": open() failed (2: No such file or directory) in {c}:4:1"
            ),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {gc}; ssl_certificate_key missing.key;"
            ),
            format!(
                "cannot load certificate key \"{d}/missing.key\": open() failed (2: No such file or directory) in {c}:4:{}",
                19 + gc.len()
            ),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {gc};\nssl_certificate_key {d}/other.key;"
            ),
            format!(
                "cannot load certificate key \"{d}/other.key\": the key does not match the certificate \"{gc}\" in {c}:5:1"
            ),
        ),
        (
            format!("listen 127.0.0.1:0 ssl;\nssl_certificate {gc};"),
            format!("no \"ssl_certificate_key\" is defined for certificate \"{gc}\" in {c}:4:1"),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {d}/empty.pem;\nssl_certificate_key {gk};"
            ),
            format!(
                "cannot load certificate \"{d}/empty.pem\": no \"CERTIFICATE\" found in the file in {c}:4:1"
            ),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {gc};\nssl_certificate_key {d}/empty.pem;"
            ),
            format!(
                "cannot load certificate key \"{d}/empty.pem\": no \"PRIVATE KEY\" found in the file in {c}:5:1"
            ),
        ),
        (
            format!(
                "listen 127.0.0.1:0 ssl;\nssl_certificate {d}/garbage.crt;\nssl_certificate_key {gk};"
            ),
            format!("cannot load certificate \"{d}/garbage.crt\": "),
        ),
    ];
    for (server, want) in cases {
        let conf = format!(
            "events {{}}\nhttp {{ access_log off; server {{\n{server}\nreturn 200; }} }}\n"
        );
        let (code, stderr) = test_config(&dir, &conf).await;
        assert_eq!(code, Some(1), "{server}: {stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(&format!("imbang: [emerg] {want}")),
            "{server}\n got: {first}\nwant: imbang: [emerg] {want}"
        );
        assert_eq!(
            stderr.lines().last(),
            Some(format!("imbang: configuration file {c} test failed").as_str())
        );
    }
}

#[tokio::test]
async fn t_warns_for_what_rustls_cannot_do_and_accepts_the_rest() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-warn");
    let (gc, gk) = write_pair(&dir, "good", &ca.leaf(&["g.test"], false));
    let conf = format!(
        "events {{}}
http {{
access_log off;
ssl_protocols TLSv1 TLSv1.2 TLSv1.3;
ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-SHA:HIGH:!aNULL;
ssl_ecdh_curve X25519:secp521r1;
ssl_dhparam dh.pem;
ssl_session_cache shared:SSL:10m;
ssl_session_timeout 1h;
ssl_prefer_server_ciphers on;
server {{
listen 127.0.0.1:0 ssl http2;
ssl_certificate {gc}; ssl_certificate_key {gk};
ssl_stapling on;
return 200; }} }}
"
    );
    let (code, stderr) = test_config(&dir, &conf).await;
    assert_eq!(code, Some(0), "{stderr}");
    let c = format!("{}/imbang.conf", dir.path().display());
    for want in [
        format!(
            "imbang: [warn] \"TLSv1\" in \"ssl_protocols\" is never offered: imbang speaks TLSv1.2 and TLSv1.3 only in {c}:4:15"
        ),
        format!(
            "imbang: [warn] ciphers \"DHE-RSA-AES128-SHA\" in \"ssl_ciphers\" are not offered: rustls has no such suites (it offers ECDHE with AES-GCM or ChaCha20-Poly1305 only) in {c}:5:13"
        ),
        format!(
            "imbang: [warn] curve \"secp521r1\" in \"ssl_ecdh_curve\" is not offered: rustls has X25519MLKEM768, X25519, prime256v1 and secp384r1 in {c}:6:16"
        ),
        format!(
            "imbang: [warn] the \"ssl_dhparam\" directive has no effect in imbang: rustls offers no DHE cipher suites (ECDHE only) in {c}:7:1"
        ),
        format!(
            "imbang: [warn] the \"listen ... http2\" directive is deprecated, use the \"http2\" directive instead in {c}:12:24"
        ),
        format!(
            "imbang: [warn] imbang does not query OCSP responders: \"ssl_stapling on\" staples only the response of \"ssl_stapling_file\" in {c}:14:1"
        ),
    ] {
        assert!(
            stderr.lines().any(|l| l == want),
            "missing: {want}\nin:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn a_plain_http_request_on_the_tls_port_gets_nginx_s_400_page() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-plain");
    let pair = write_pair(&dir, "p", &ca.leaf(&["p.test"], false));
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; {} return 200; }} }}",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let (status, body) = support::request(lb.addr, "GET", "/", "p.test", None).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        "<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n<hr><center>imbang</center>\r\n</body>\r\n</html>\r\n"
    );
}

#[tokio::test]
async fn ssl_stapling_file_staples_the_response_and_a_missing_one_fails_t() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-stapling");
    let pair = write_pair(&dir, "s", &ca.leaf(&["s.test"], false));
    // The server sends the file as it is; the client here does not check it.
    let staple = dir.write("ocsp.der", "not really DER, but sent as it is");
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; {} ssl_stapling on; ssl_stapling_file {}; return 200; }} }}",
        cert_lines(&pair),
        staple.display()
    );
    let lb = imbang(&conf).await;
    let (config, seen) = any_cert_client(&[], &[]);
    let stream = connect(Arc::new(config), lb.addr, "s.test").await.unwrap();
    assert_eq!(get(stream, "s.test", "/").await.0, 200);
    assert_eq!(
        seen.ocsp().as_deref(),
        Some(&b"not really DER, but sent as it is"[..])
    );

    std::fs::remove_file(&staple).unwrap();
    let (code, stderr) = test_config(&dir, &conf).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(&format!(
            "[emerg] cannot load OCSP response \"{}\": open() failed (2: No such file or directory)",
            staple.display()
        )),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_old_ssl_on_form_serves_tls_with_nginx_s_deprecation_warning() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-ssl-on");
    let pair = write_pair(&dir, "o", &ca.leaf(&["o.test"], false));
    let conf = format!(
        "events {{}}\nhttp {{ access_log off;\nserver {{ listen 127.0.0.1:0;\nssl on; {} return 200 $https; }} }}\n",
        cert_lines(&pair)
    );
    let lb = imbang(&conf).await;
    let stream = connect(Arc::new(client_config(&ca, &[])), lb.addr, "o.test")
        .await
        .unwrap();
    assert_eq!(get(stream, "o.test", "/").await, (200, "on".into()));
    let (code, stderr) = test_config(&dir, &conf).await;
    let c = format!("{}/imbang.conf", dir.path().display());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stderr.lines().next(),
        Some(format!("imbang: [warn] the \"ssl\" directive is deprecated, use the \"listen ... ssl\" directive instead in {c}:4:1").as_str())
    );
}

#[tokio::test]
async fn a_reload_with_a_renewed_certificate_under_load_fails_no_request() {
    let ca = Ca::new("test CA");
    let dir = TempDir::new("tls-renew-load");
    let pair = write_pair(&dir, "site", &ca.leaf(&["l.test"], false));
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; http2 on; {} return 200 ok; }} }}",
        cert_lines(&pair)
    );
    let lb = Arc::new(imbang(&conf).await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (lb, stop, ca_config) = (lb.clone(), stop.clone(), client_config(&ca, &[]));
        clients.push(tokio::spawn(async move {
            let config = Arc::new(ca_config);
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || ok < 5 {
                match connect(config.clone(), lb.addr, "l.test").await {
                    Ok(stream) => match get(stream, "l.test", "/").await {
                        (200, body) if body == "ok" => ok += 1,
                        other => failed.push(format!("client {i}: {other:?}")),
                    },
                    Err(e) => failed.push(format!("client {i}: {e}")),
                }
            }
            (ok, failed)
        }));
    }
    for _ in 0..5 {
        write_pair(&dir, "site", &ca.leaf(&["l.test"], false));
        lb.reload(&conf).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        let (ok, failed) = client.await.unwrap();
        assert!(ok >= 5);
        assert_eq!(failed, Vec::<String>::new());
    }
}
