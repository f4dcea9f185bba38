//! TLS to upstreams (`proxy_pass https://`, `proxy_ssl_*`): real TLS backends (hyper over
//! tokio-rustls, certificates made by a test CA with rcgen) on 127.0.0.1, imbang in-process or
//! as `imbang -t`, and what a client and the backends see.
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use support::tls::{Ca, Pem, provider};
use support::{TempDir, backend, eventually, imbang, request, run_imbang};
use tokio::net::TcpListener;

/// One TLS connection a backend accepted: the SNI, and whether a client certificate came.
type Hello = (Option<String>, bool);

/// Whether each accepted connection resumed a session.
type Resumed = Arc<Mutex<Vec<bool>>>;

/// What a TLS backend saw.
#[derive(Clone, Default)]
struct Seen {
    connections: Arc<Mutex<Vec<Hello>>>,
    resumed: Resumed,
    requests: Arc<AtomicUsize>,
    /// Requests whose `User-Agent` says they are health checks.
    checks: Arc<AtomicUsize>,
}

impl Seen {
    fn connections(&self) -> Vec<Hello> {
        self.connections.lock().unwrap().clone()
    }
}

/// A TLS backend presenting `pem`; with `client_ca`, it requires a client certificate that
/// CA signed. Answers `<name> sni=<sni> cert=<yes|no> <body>` (the request's body echoed).
async fn tls_backend(name: &'static str, pem: &Pem, client_ca: Option<&Ca>) -> (SocketAddr, Seen) {
    let chain = vec![pem.der.clone()];
    let key = PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der.clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(builder.with_single_cert(chain, key).unwrap());
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), record.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let conn = tls.get_ref().1;
                let sni = conn.server_name().map(str::to_owned);
                let cert = conn.peer_certificates().is_some_and(|c| !c.is_empty());
                seen.connections.lock().unwrap().push((sni.clone(), cert));
                let resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                seen.resumed.lock().unwrap().push(resumed);
                let handler = move |req: Request<Incoming>| {
                    let (sni, seen) = (sni.clone(), seen.clone());
                    async move {
                        seen.requests.fetch_add(1, Ordering::SeqCst);
                        let agent = req.headers().get("user-agent");
                        if agent.is_some_and(|a| a.to_str().unwrap_or("").contains("health check"))
                        {
                            seen.checks.fetch_add(1, Ordering::SeqCst);
                        }
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let text = format!(
                            "{name} sni={} cert={} {}",
                            sni.as_deref().unwrap_or("-"),
                            if cert { "yes" } else { "no" },
                            String::from_utf8_lossy(&body)
                        );
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            text,
                        ))))
                    }
                };
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service_fn(handler))
                    .await;
            });
        }
    });
    (addr, seen)
}

/// Writes a PEM text in `dir`: its path.
fn write(dir: &TempDir, name: &str, text: &str) -> String {
    dir.write(name, text).display().to_string()
}

fn http(body: &str) -> String {
    format!("events {{}}\nhttp {{ access_log off;\n{body}\n}}\n")
}

#[tokio::test]
async fn https_upstreams_are_proxied_with_verification_off_and_the_name_sent_in_sni() {
    let ca = Ca::new("upstream CA");
    let (addr, seen) = tls_backend("a", &ca.leaf(&["backend.test"], false), None).await;
    let lb = imbang(&http(&format!(
        "upstream backend.test {{ server {addr}; }}
         server {{ listen 127.0.0.1:0;
           location /group/ {{ proxy_pass https://backend.test/; }}
           location /named/ {{ proxy_ssl_name other.test; proxy_pass https://backend.test/; }}
           location /nosni/ {{ proxy_ssl_server_name off; proxy_pass https://backend.test/; }}
           location /ip/ {{ proxy_pass https://{addr}/; }}
         }}"
    )))
    .await;
    // Verification is off (nginx's default): the CA is not known to imbang.
    assert_eq!(
        lb.get("/group/x").await,
        (200, "a sni=backend.test cert=no ".into())
    );
    assert_eq!(
        lb.get("/named/x").await,
        (200, "a sni=other.test cert=no ".into())
    );
    assert_eq!(lb.get("/nosni/x").await, (200, "a sni=- cert=no ".into()));
    // An address is never sent as SNI (RFC 6066).
    assert_eq!(lb.get("/ip/x").await, (200, "a sni=- cert=no ".into()));
    // A request body goes over TLS too.
    let answer = request(lb.addr, "POST", "/group/x", "localhost", Some("hello")).await;
    assert_eq!(answer, (200, "a sni=backend.test cert=no hello".into()));
    // `proxy_ssl_name` with variables is rendered per request.
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location / {{ proxy_ssl_name $http_x_name; proxy_pass https://{addr}; }}
         }}"
    )))
    .await;
    let raw = raw_get(
        lb.addr,
        "GET / HTTP/1.1\r\nHost: x\r\nX-Name: v.test:8443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.ends_with("a sni=v.test cert=no "), "{raw}");
    assert!(seen.connections().len() >= 5);
}

/// One raw request on a new connection: the whole answer.
async fn raw_get(addr: SocketAddr, text: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(text.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn verification_takes_the_trusted_ca_and_the_right_name_and_refuses_the_rest() {
    let ca = Ca::new("upstream CA");
    let stranger = Ca::new("another CA");
    let dir = TempDir::new("uptls-verify");
    let trusted = write(&dir, "ca.pem", &ca.pem);
    let (good, _) = tls_backend("good", &ca.leaf(&["good.test"], false), None).await;
    let (untrusted, _) =
        tls_backend("untrusted", &stranger.leaf(&["good.test"], false), None).await;
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           proxy_ssl_verify on; proxy_ssl_trusted_certificate {trusted};
           location /good/ {{ proxy_ssl_name good.test; proxy_pass https://{good}/; }}
           location /wrong-name/ {{ proxy_ssl_name bad.test; proxy_pass https://{good}/; }}
           location /untrusted/ {{ proxy_ssl_name good.test; proxy_pass https://{untrusted}/; }}
           location /depth/ {{ proxy_ssl_verify_depth 0; proxy_ssl_name good.test; proxy_pass https://{good}/; }}
         }}"
    )))
    .await;
    assert_eq!(
        lb.get("/good/").await,
        (200, "good sni=good.test cert=no ".into())
    );
    assert_eq!(lb.get("/wrong-name/").await.0, 502);
    assert_eq!(lb.get("/untrusted/").await.0, 502);
    // A depth of 0 is read as 1: the leaf signed by the trusted CA itself passes.
    assert_eq!(lb.get("/depth/").await.0, 200);
}

#[tokio::test]
async fn a_revoked_certificate_fails_verification_with_proxy_ssl_crl() {
    let ca = Ca::new("upstream CA");
    let dir = TempDir::new("uptls-crl");
    let trusted = write(&dir, "ca.pem", &ca.pem);
    let good = ca.leaf(&["c.test"], false);
    let revoked = ca.leaf(&["c.test"], false);
    let crl = write(&dir, "ca.crl", &ca.crl(&[&revoked]));
    let (good, _) = tls_backend("good", &good, None).await;
    let (revoked, _) = tls_backend("revoked", &revoked, None).await;
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0; proxy_ssl_name c.test;
           proxy_ssl_verify on; proxy_ssl_trusted_certificate {trusted}; proxy_ssl_crl {crl};
           location /good/ {{ proxy_pass https://{good}/; }}
           location /revoked/ {{ proxy_pass https://{revoked}/; }}
           location /unchecked/ {{ proxy_ssl_verify off; proxy_pass https://{revoked}/; }}
         }}"
    )))
    .await;
    assert_eq!(lb.get("/good/").await.0, 200);
    assert_eq!(lb.get("/revoked/").await.0, 502);
    assert_eq!(lb.get("/unchecked/").await.0, 200);
}

#[tokio::test]
async fn a_failed_handshake_is_an_upstream_error_and_the_next_peer_is_tried() {
    let ca = Ca::new("upstream CA");
    let stranger = Ca::new("another CA");
    let dir = TempDir::new("uptls-next");
    let trusted = write(&dir, "ca.pem", &ca.pem);
    let (good, good_seen) = tls_backend("good", &ca.leaf(&["app.test"], false), None).await;
    let (bad, _) = tls_backend("bad", &stranger.leaf(&["app.test"], false), None).await;
    // A plain HTTP peer in a TLS group: its answer to a ClientHello is no TLS.
    let plain = backend("plain").await;
    let lb = imbang(&http(&format!(
        "upstream app.test {{ server {bad}; server {}; server {good}; }}
         server {{ listen 127.0.0.1:0;
           location / {{ proxy_ssl_verify on; proxy_ssl_trusted_certificate {trusted};
                         proxy_pass https://app.test; }}
         }}",
        plain.addr
    )))
    .await;
    for _ in 0..6 {
        assert_eq!(
            lb.get("/").await,
            (200, "good sni=app.test cert=no ".into())
        );
    }
    assert!(good_seen.requests.load(Ordering::SeqCst) >= 6);
    // With `proxy_next_upstream off` the handshake's failure is the answer: 502.
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location / {{ proxy_ssl_verify on; proxy_ssl_trusted_certificate {trusted};
                         proxy_ssl_name app.test; proxy_pass https://{bad}; }}
         }}"
    )))
    .await;
    assert_eq!(lb.get("/").await.0, 502);
}

#[tokio::test]
async fn a_handshake_that_never_finishes_times_out_with_proxy_connect_timeout() {
    // A peer that accepts and then says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location / {{ proxy_connect_timeout 200ms; proxy_pass https://{addr}; }}
         }}"
    )))
    .await;
    let started = tokio::time::Instant::now();
    assert_eq!(lb.get("/").await.0, 504);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_client_certificate_is_presented_when_configured() {
    let ca = Ca::new("upstream CA");
    let clients = Ca::new("client CA");
    let dir = TempDir::new("uptls-client-cert");
    let me = clients.leaf(&["imbang.test"], false);
    let cert = write(&dir, "me.crt", &me.cert);
    let key = write(&dir, "me.key", &me.key);
    let (addr, seen) = tls_backend("mtls", &ca.leaf(&["m.test"], false), Some(&clients)).await;
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location /with/ {{ proxy_ssl_certificate {cert}; proxy_ssl_certificate_key {key};
                              proxy_pass https://{addr}/; }}
           location /without/ {{ proxy_pass https://{addr}/; }}
         }}"
    )))
    .await;
    assert_eq!(lb.get("/with/").await, (200, "mtls sni=- cert=yes ".into()));
    assert_eq!(lb.get("/without/").await.0, 502);
    assert_eq!(seen.connections(), [(None, true)]);
}

#[tokio::test]
async fn pooled_tls_connections_carry_many_requests() {
    let ca = Ca::new("upstream CA");
    let (addr, seen) = tls_backend("k", &ca.leaf(&["k.test"], false), None).await;
    let conf = http(&format!(
        "upstream k.test {{ server {addr}; keepalive 4; }}
         server {{ listen 127.0.0.1:0;
           location / {{ proxy_pass https://k.test; }}
           location /other-name/ {{ proxy_ssl_name o.test; proxy_pass https://k.test/; }}
         }}"
    ));
    let lb = imbang(&conf).await;
    for _ in 0..10 {
        assert_eq!(lb.get("/").await, (200, "k sni=k.test cert=no ".into()));
    }
    assert_eq!(seen.requests.load(Ordering::SeqCst), 10);
    assert_eq!(seen.connections().len(), 1, "one TLS connection for all");
    // A connection opened for another name is not taken for this one.
    assert_eq!(
        lb.get("/other-name/").await,
        (200, "k sni=o.test cert=no ".into())
    );
    assert_eq!(lb.get("/other-name/").await.0, 200);
    assert_eq!(
        seen.connections(),
        [
            (Some("k.test".into()), false),
            (Some("o.test".into()), false)
        ]
    );
    // A reload that keeps the settings keeps the connections.
    lb.reload(&conf).await;
    assert_eq!(lb.get("/").await.0, 200);
    assert_eq!(lb.get("/other-name/").await.0, 200);
    assert_eq!(seen.connections().len(), 2, "{:?}", seen.connections());
}

#[tokio::test]
async fn health_checks_speak_tls_to_tls_groups() {
    let ca = Ca::new("upstream CA");
    let (addr, seen) = tls_backend("h", &ca.leaf(&["h.test"], false), None).await;
    // A plain HTTP peer fails every check (no TLS), so it gets no requests.
    let plain = backend("plain").await;
    let lb = imbang(&http(&format!(
        "upstream h.test {{ zone h 64k; server {addr}; server {}; }}
         server {{ listen 127.0.0.1:0;
           location / {{ proxy_pass https://h.test; health_check interval=50ms mandatory; }}
         }}",
        plain.addr
    )))
    .await;
    eventually("TLS health checks", Duration::from_secs(5), || {
        seen.checks.load(Ordering::SeqCst) >= 2
    })
    .await;
    for _ in 0..4 {
        assert_eq!(lb.get("/").await, (200, "h sni=h.test cert=no ".into()));
    }
    assert_eq!(plain.hits(), 0);
}

async fn test_config(dir: &TempDir, conf: &str) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let c = dir.write("imbang.conf", conf);
    let p = format!("{}/", dir.path().display());
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c.to_str().unwrap()]).await;
    (out.code, out.stderr)
}

#[tokio::test]
async fn t_warns_about_the_defaults_and_refuses_bad_files_with_their_place() {
    let ca = Ca::new("upstream CA");
    let dir = TempDir::new("uptls-t");
    let d = dir.path().display().to_string();
    let c = format!("{d}/imbang.conf");
    let me = ca.leaf(&["me.test"], false);
    let cert = write(&dir, "me.crt", &me.cert);
    write(&dir, "me.key", &me.key);
    write(&dir, "other.key", &ca.leaf(&["x.test"], false).key);
    write(&dir, "ca.pem", &ca.pem);
    write(&dir, "empty.pem", "nothing here\n");
    let conf = |location: &str| {
        format!(
            "events {{}}\nhttp {{ access_log off;\nserver {{ listen 127.0.0.1:0;\nlocation / {{ {location} proxy_pass https://127.0.0.1:9; }}\n}} }}\n"
        )
    };
    // The defaults: a warning for each, at the `proxy_pass`.
    let (code, stderr) = test_config(&dir, &conf("")).await;
    assert_eq!(code, Some(0), "{stderr}");
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("[warn]")).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "imbang: [warn] the upstream's certificate is not verified (\"proxy_ssl_verify\" is off, as nginx's default; set \"proxy_ssl_verify on\" and \"proxy_ssl_trusted_certificate\") in {c}:4:15"
            ),
            format!(
                "imbang: [warn] the upstream's name is sent in SNI: imbang's \"proxy_ssl_server_name\" is on unless set (nginx's default is off) in {c}:4:15"
            ),
        ]
    );
    let (code, stderr) = test_config(
        &dir,
        &conf(&format!("proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/ca.pem; proxy_ssl_server_name on;")),
    )
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("[warn]"), "{stderr}");
    // Every bad file, in nginx's words, at its directive; exit 1.
    let cases = [
        (
            "proxy_ssl_verify on;".to_owned(),
            format!("no proxy_ssl_trusted_certificate for proxy_ssl_verify in {c}:4:14"),
        ),
        (
            format!("proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/none.pem;"),
            format!(
                "cannot load certificates \"{d}/none.pem\": open() failed (2: No such file or directory) in {c}:4:35"
            ),
        ),
        (
            format!("proxy_ssl_verify on; proxy_ssl_trusted_certificate {d}/empty.pem;"),
            format!(
                "cannot load certificates \"{d}/empty.pem\": no \"CERTIFICATE\" found in the file in {c}:4:35"
            ),
        ),
        (
            format!("proxy_ssl_certificate {cert};"),
            format!(
                "no \"proxy_ssl_certificate_key\" is defined for certificate \"{cert}\" in {c}:4:14"
            ),
        ),
        (
            format!("proxy_ssl_certificate {cert}; proxy_ssl_certificate_key {d}/none.key;"),
            format!(
                "cannot load certificate key \"{d}/none.key\": open() failed (2: No such file or directory) in {c}:4:{}",
                14 + format!("proxy_ssl_certificate {cert}; ").len()
            ),
        ),
        (
            format!("proxy_ssl_certificate {d}/empty.pem; proxy_ssl_certificate_key {d}/me.key;"),
            format!(
                "cannot load certificate \"{d}/empty.pem\": no \"CERTIFICATE\" found in the file in {c}:4:14"
            ),
        ),
        (
            format!("proxy_ssl_certificate {cert}; proxy_ssl_certificate_key {d}/other.key;"),
            format!(
                "cannot load certificate key \"{d}/other.key\": the key does not match the certificate \"{cert}\" in {c}:4:{}",
                14 + format!("proxy_ssl_certificate {cert}; ").len()
            ),
        ),
        (
            "proxy_ssl_protocols TLSv1;".to_owned(),
            format!(
                "no protocol imbang speaks is left in \"proxy_ssl_protocols\" (TLSv1.2 or TLSv1.3 is needed) in {c}:4:14"
            ),
        ),
    ];
    for (location, want) in cases {
        let (code, stderr) = test_config(&dir, &conf(&location)).await;
        assert_eq!(code, Some(1), "{location}: {stderr}");
        assert!(
            stderr.contains(&format!("imbang: [emerg] {want}")),
            "{location}:\n{stderr}\nwanted: {want}"
        );
    }
}

#[tokio::test]
async fn protocols_and_ciphers_narrow_what_is_offered() {
    let ca = Ca::new("upstream CA");
    let (addr, _) = tls_backend("p", &ca.leaf(&["p.test"], false), None).await;
    // rustls's server speaks both; each location's limits still leave a common one.
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location /12/ {{ proxy_ssl_protocols TLSv1.2; proxy_ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256; proxy_pass https://{addr}/; }}
           location /13/ {{ proxy_ssl_protocols TLSv1.3; proxy_ssl_session_reuse off; proxy_pass https://{addr}/; }}
         }}"
    )))
    .await;
    assert_eq!(lb.get("/12/").await.0, 200);
    assert_eq!(lb.get("/13/").await.0, 200);
    // A TLS 1.2 suite for RSA keys only cannot be agreed with an ECDSA certificate.
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0;
           location / {{ proxy_ssl_protocols TLSv1.2; proxy_ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256; proxy_pass https://{addr}/; }}
         }}"
    )))
    .await;
    assert_eq!(lb.get("/").await.0, 502);
}

#[tokio::test]
async fn sessions_are_resumed_unless_session_reuse_is_off() {
    let ca = Ca::new("upstream CA");
    let (addr, seen) = tls_backend("r", &ca.leaf(&["r.test"], false), None).await;
    // HTTP/1.0 upstream: a new connection (and handshake) per request.
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0; proxy_http_version 1.0;
           location /reuse/ {{ proxy_pass https://{addr}/; }}
           location /fresh/ {{ proxy_ssl_session_reuse off; proxy_pass https://{addr}/; }}
         }}"
    )))
    .await;
    for _ in 0..3 {
        assert_eq!(lb.get("/reuse/").await.0, 200);
    }
    assert_eq!(*seen.resumed.lock().unwrap(), [false, true, true]);
    seen.resumed.lock().unwrap().clear();
    for _ in 0..3 {
        assert_eq!(lb.get("/fresh/").await.0, 200);
    }
    assert_eq!(*seen.resumed.lock().unwrap(), [false, false, false]);
}

#[tokio::test]
async fn upgraded_connections_tunnel_over_tls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = Ca::new("upstream CA");
    let pem = ca.leaf(&["ws.test"], false);
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![pem.der.clone()],
            PrivateKeyDer::from_pem_slice(pem.key.as_bytes()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A peer that switches to an echo protocol and upper-cases what it is sent.
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0; 1];
            tls.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        tls.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: shout\r\nConnection: upgrade\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = [0; 64];
        loop {
            let n = tls.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            tls.write_all(&buf[..n].to_ascii_uppercase()).await.unwrap();
        }
    });
    let lb = imbang(&http(&format!(
        "server {{ listen 127.0.0.1:0; location / {{ proxy_pass https://{addr}; }} }}"
    )))
    .await;
    let mut client = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: shout\r\nConnection: upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0; 1];
        client.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for word in ["hello", "over tls"] {
        client.write_all(word.as_bytes()).await.unwrap();
        let mut got = vec![0; word.len()];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(got, word.to_ascii_uppercase().as_bytes());
    }
}
