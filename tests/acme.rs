//! Automatic certificates (nginx's ACME module): bad configurations fail `-t` with nginx's words
//! and their place; an unreachable CA is logged and the server refuses handshakes until a
//! certificate exists; and against a real ACME server (Debian's `pebble`, Let's Encrypt's test
//! CA, on loopback with a DNS server of the test's resolving every name to 127.0.0.1): first
//! issuance over HTTP-01 (behind a `return 301`) and TLS-ALPN-01, the served certificate chains
//! to pebble's root and names the server's names, the state kept across a restart (the same
//! certificate served at once, no new order), a reload adding a name, a renewal under load, and
//! a CA gone away while a certificate is in force.
mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use support::tls::{Ca, client_config, connect, get};
use support::{ImbangGuard, TempDir, free_port, run_imbang, wait_accepting};

/// `imbang -t` on `conf` in `dir`: (exit code, stderr).
async fn test_config(dir: &TempDir, conf: &str) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let c = dir.write("imbang.conf", conf);
    let p = format!("{}/", dir.path().display());
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", c.to_str().unwrap()]).await;
    (out.code, out.stderr)
}

const ISSUER: &str =
    "acme_issuer le {\n    uri https://127.0.0.1:1/dir;\n    accept_terms_of_service;\n}\n";
const CERT_LINES: &str =
    "ssl_certificate $acme_certificate; ssl_certificate_key $acme_certificate_key;";

#[tokio::test]
async fn bad_acme_configurations_fail_t_with_nginx_s_words_and_their_place() {
    let dir = TempDir::new("acme-bad");
    let c = format!("{}/imbang.conf", dir.path().display());
    let server = |body: &str| {
        format!("http {{\n{ISSUER}server {{\n    listen 127.0.0.1:0 ssl;\n{body}\n}}\n}}\n")
    };
    let cases: Vec<(String, String)> = vec![
        (
            server(&format!(
                "server_name a.test;\nacme_certificate nope;\n{CERT_LINES}"
            )),
            format!("issuer \"nope\" is missing in {c}:9:18"),
        ),
        (
            server(&format!(
                "server_name *.a.test;\nacme_certificate le;\n{CERT_LINES}"
            )),
            format!(
                "\"acme_certificate\": invalid server name: \"*.a.test\": a wildcard name needs the dns-01 challenge, which imbang does not have in {c}:9:1"
            ),
        ),
        (
            server(&format!(
                "server_name www.a.*;\nacme_certificate le;\n{CERT_LINES}"
            )),
            format!(
                "\"acme_certificate\": invalid server name: unexpected character '*' at position 6 in {c}:9:1"
            ),
        ),
        (
            server(&format!("acme_certificate le;\n{CERT_LINES}")),
            format!("\"acme_certificate\": no identifiers found in \"server_name\" in {c}:8:1"),
        ),
        (
            server(&format!(
                "server_name ~^a\\d+$;\nacme_certificate le;\n{CERT_LINES}"
            )),
            format!("\"acme_certificate\": no identifiers found in \"server_name\" in {c}:9:1"),
        ),
        (
            server(&format!(
                "server_name a.test;\nacme_certificate le x..test;\n{CERT_LINES}"
            )),
            format!(
                "acme_certificate: invalid server name: unexpected character '.' at position 2 in {c}:9:21"
            ),
        ),
        (
            server(&format!(
                "server_name a.test;\nacme_certificate le key=dsa:1024;\n{CERT_LINES}"
            )),
            format!("invalid \"key\" value in {c}:9:21"),
        ),
        (
            server(&format!("server_name a.test;\n{CERT_LINES}")),
            format!(
                "\"$acme_certificate\" has no value: no \"acme_certificate\" is defined for the server in {c}:9:1"
            ),
        ),
        (
            "http {\nacme_issuer x { accept_terms_of_service; }\n}\n".to_owned(),
            format!("acme_issuer: \"uri\" is missing in {c}:2:1"),
        ),
        (
            "http {\nacme_issuer x { uri https://a.test/; challenge dns-01; }\n}\n".to_owned(),
            format!("unsupported challenge: dns-01 in {c}:2:48"),
        ),
        (
            "http {\nacme_issuer x { uri https://a.test/; account_key rsa:2048; }\n}\n".to_owned(),
            "\"account_key rsa:2048\" is not supported by imbang yet".to_owned(),
        ),
        (
            "http {\nacme_issuer x { uri https://a.test/; account_key a.key;\nexternal_account_key kid data:aGVsbG8; }\n}\n".to_owned(),
            format!("\"account_key\" with a file and \"external_account_key\" together are not supported by imbang yet in {c}:2:38"),
        ),
        (
            "http {\nacme_shared_zone ngx_acme_shared:1M;\n}\n".to_owned(),
            format!("\"acme_shared_zone\" must have \"zone\" parameter in {c}:2:18"),
        ),
        (
            "http {\nuri https://a.test/;\n}\n".to_owned(),
            format!("\"uri\" directive is not allowed here in {c}:2:1"),
        ),
        (
            "http {\nserver { acme_issuer x { uri https://a.test/; } }\n}\n".to_owned(),
            format!("\"acme_issuer\" directive is not allowed here in {c}:2:10"),
        ),
    ];
    for (conf, want) in cases {
        let (code, stderr) = test_config(&dir, &conf).await;
        assert_eq!(code, Some(1), "{conf}\n{stderr}");
        assert!(
            stderr.contains(&want),
            "{conf}\nwant: {want}\ngot: {stderr}"
        );
    }
}

#[tokio::test]
async fn a_good_acme_configuration_passes_t_and_names_what_has_no_effect() {
    let dir = TempDir::new("acme-good");
    let conf = format!(
        "http {{\n{ISSUER}acme_shared_zone zone=ngx_acme_shared:1M;\n\
         acme_issuer other {{ uri https://a.test/dir; contact admin@a.test; contact mailto:b@a.test;\n\
         state_path off; challenge tls-alpn; ssl_verify off; preferred_chain \"ISRG Root X1\"; profile shortlived; }}\n\
         server {{\n    listen 127.0.0.1:0 ssl;\n    server_name .a.test b.test ~^c\\d$;\n    acme_certificate le key=rsa:2048;\n    {CERT_LINES}\n}}\n\
         server {{\n    listen 127.0.0.1:0 ssl;\n    acme_certificate other d.test 127.0.0.1;\n    {CERT_LINES}\n}}\n}}\n"
    );
    let (code, stderr) = test_config(&dir, &conf).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("the \"acme_shared_zone\" directive has no effect in imbang"));
    assert!(stderr.contains("the \"preferred_chain\" directive has no effect in imbang"));
    assert!(
        stderr.contains(
            "\"acme_certificate\": unsupported regular expression in server_name: ~^c\\d$"
        )
    ); // The lines at the http level, inherited by a plain server too (where nginx never
    // evaluates the variable).
    let conf = format!(
        "http {{\n{CERT_LINES}\n{ISSUER}server {{ listen 127.0.0.1:0 ssl; server_name e.test; acme_certificate le; }}\n\
         server {{ listen 127.0.0.1:0; server_name f.test; }}\n}}\n"
    );
    let (code, stderr) = test_config(&dir, &conf).await;
    assert_eq!(code, Some(0), "{stderr}");
}

/// Writes `http` (the http block's inside) into a configuration logging at `info` to
/// `logs/error.log`, and starts imbang on it.
fn start(dir: &TempDir, http: &str) -> ImbangGuard {
    start_with(dir, "", http)
}

/// [`start`] with `main` at the top of the file.
fn start_with(dir: &TempDir, main: &str, http: &str) -> ImbangGuard {
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    dir.write(
        "imbang.conf",
        &format!(
            "{main}\nerror_log logs/error.log info;\npid logs/imbang.pid;\nhttp {{\naccess_log off;\n{http}\n}}\n"
        ),
    );
    ImbangGuard::start(&format!("{}/", dir.path().display()))
}

fn error_log(dir: &TempDir) -> String {
    std::fs::read_to_string(dir.path().join("logs/error.log")).unwrap_or_default()
}

/// Waits (bounded) until the error log has `what`; the log.
async fn wait_log(dir: &TempDir, what: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let log = error_log(dir);
        if log.contains(what) {
            return log;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("no {what:?} in the error log after {timeout:?}:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_unreachable_ca_is_logged_and_the_handshake_refused_until_a_certificate_exists() {
    let dir = TempDir::new("acme-unreachable");
    let (plain, tls) = (free_port(), free_port());
    let _imbang = start(
        &dir,
        &format!(
            "{ISSUER}server {{ listen 127.0.0.1:{tls} ssl; server_name site.test; acme_certificate le; {CERT_LINES} return 200 ok; }}\n\
             server {{ listen 127.0.0.1:{plain}; location / {{ return 301 https://$host$request_uri; }} location /api/ {{ api; }} location = /metrics {{ prometheus all; }} }}"
        ),
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    wait_accepting(addr, Duration::from_secs(10)).await;
    let log = wait_log(&dir, "while updating certificate", Duration::from_secs(20)).await;
    // The API shows the certificate waiting, and why.
    let plain_addr: SocketAddr = format!("127.0.0.1:{plain}").parse().unwrap();
    let (status, body) = support::request(plain_addr, "GET", "/api/9/", "x", None).await;
    assert_eq!(
        (status, body.trim_end()),
        (
            200,
            r#"["nginx","processes","connections","slabs","http","ssl","workers","acme"]"#
        )
    );
    let (status, body) = support::request(plain_addr, "GET", "/api/9/acme", "x", None).await;
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    let (name, cert) = api.as_object().unwrap().iter().next().unwrap();
    assert!(name.starts_with("le/site.test-"), "{api}");
    assert_eq!(cert["state"], "pending", "{api}");
    assert_eq!(cert["identifiers"], serde_json::json!(["site.test"]));
    assert_eq!(cert["not_after"], serde_json::Value::Null);
    assert!(cert["failures"].as_u64().unwrap() >= 1, "{api}");
    // The metrics: the failures in a row, and no expiry while no certificate exists.
    let (status, metrics) = support::request(plain_addr, "GET", "/metrics", "x", None).await;
    assert_eq!(status, 200, "{metrics}");
    let failures = metrics
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "imbang_acme_certificate_failures{{certificate=\"{name}\",issuer=\"le\"}} "
            ))
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let n: u64 = failures.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 1, "{metrics}");
    assert!(
        !metrics.contains("imbang_acme_certificate_expiry_seconds{"),
        "{metrics}"
    );
    assert!(
        cert["last_error"]
            .as_str()
            .unwrap()
            .contains("account request failed"),
        "{api}"
    );
    assert!(
        log.contains("[error] ")
            && log.contains(": account request failed (")
            && log
                .contains(") while updating certificate, acme issuer: \"le\", order: \"site.test-")
            && log.contains("\", next attempt in 10s"),
        "{log}"
    );
    // No certificate yet: the handshake is refused, whatever the client trusts.
    let (config, _) = support::tls::any_cert_client(&[], &[]);
    let refused = connect(Arc::new(config), addr, "site.test").await;
    assert!(refused.is_err(), "a handshake without a certificate");
    // The plain server still works.
    let (status, _) = support::request(
        format!("127.0.0.1:{plain}").parse().unwrap(),
        "GET",
        "/x",
        "site.test",
        None,
    )
    .await;
    assert_eq!(status, 301);
}

// === against pebble ===

const PEBBLE: &str = "/usr/bin/pebble";

/// A DNS server on loopback answering every A question with 127.0.0.1 (and every other
/// question with no answer): how pebble finds the test's names.
async fn dns_server() -> SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                return;
            };
            if let Some(answer) = dns_answer(&buf[..n]) {
                let _ = socket.send_to(&answer, from).await;
            }
        }
    });
    addr
}

/// The answer to one DNS query (RFC 1035 §4.1): its question repeated, and `A 127.0.0.1`
/// when it asks for A.
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question's name: labels up to a zero byte, then type and class.
    let mut i = 12;
    while *query.get(i)? != 0 {
        i += 1 + usize::from(query[i]);
    }
    let end = i + 5;
    let qtype = u16::from_be_bytes([*query.get(i + 1)?, *query.get(i + 2)?]);
    let a = qtype == 1;
    let mut out = Vec::with_capacity(end + 16);
    out.extend_from_slice(&query[..2]); // id
    out.extend_from_slice(&[0x84 | (query[2] & 1), 0x80]); // QR, AA, RD as asked; RA
    out.extend_from_slice(&[0, 1, 0, u8::from(a), 0, 0, 0, 0]);
    out.extend_from_slice(query.get(12..end)?);
    if a {
        out.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]);
    }
    Some(out)
}

/// pebble running on loopback: its directory URL, the CA file that checks its HTTPS, and its
/// root (from the management port) that the certificates it issues chain to.
struct Pebble {
    _child: support::ChildGuard,
    directory: String,
    ca_file: String,
    root: CertificateDer<'static>,
}

/// Starts pebble validating HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`, or `None`
/// (the test then skips) when pebble is not installed.
async fn pebble(dir: &TempDir, http_port: u16, tls_port: u16) -> Option<Pebble> {
    pebble_with(dir, http_port, tls_port, serde_json::json!({})).await
}

/// [`pebble`] with more settings in its configuration (`certificateValidityPeriod`: seconds,
/// five years by default; `externalAccountBindingRequired`, ...).
async fn pebble_with(
    dir: &TempDir,
    http_port: u16,
    tls_port: u16,
    extra: serde_json::Value,
) -> Option<Pebble> {
    if !Path::new(PEBBLE).exists() {
        eprintln!(
            "SKIPPED: {PEBBLE} is missing (Debian's package `pebble`, which ./test.sh installs): the ACME tests against a real CA did not run"
        );
        return None;
    }
    let ca = Ca::new("pebble's HTTPS test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"], false);
    let cert = dir.write("pebble/cert.pem", &leaf.cert);
    let key = dir.write("pebble/key.pem", &leaf.key);
    let ca_file = dir.write("pebble/ca.pem", &ca.pem);
    let (api, management) = (free_port(), free_port());
    let mut json = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{api}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": cert,
                "privateKey": key,
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
    });
    for (key, value) in extra.as_object().unwrap() {
        json["pebble"][key] = value.clone();
    }
    let config = dir.write("pebble/config.json", &json.to_string());
    let dns = dns_server().await;
    let child = std::process::Command::new(PEBBLE)
        .args(["-config", config.to_str().unwrap(), "-dnsserver"])
        .arg(dns.to_string())
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0")
        .stdout(std::fs::File::create(dir.path().join("pebble/out.log")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("pebble/err.log")).unwrap())
        .spawn()
        .expect("spawn pebble");
    let child = support::ChildGuard(child);
    let api_addr: SocketAddr = format!("127.0.0.1:{api}").parse().unwrap();
    let management_addr: SocketAddr = format!("127.0.0.1:{management}").parse().unwrap();
    wait_accepting(api_addr, Duration::from_secs(20)).await;
    wait_accepting(management_addr, Duration::from_secs(20)).await;
    let https = Arc::new(client_config(&ca, &[]));
    let stream = connect(https, management_addr, "127.0.0.1").await.unwrap();
    let (status, pem) = get(stream, "127.0.0.1", "/roots/0").await;
    assert_eq!(status, 200, "pebble's root: {pem}");
    let root = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(pem.as_bytes()).expect("pebble's root PEM")
    };
    Some(Pebble {
        _child: child,
        directory: format!("https://127.0.0.1:{api}/dir"),
        ca_file: ca_file.display().to_string(),
        root,
    })
}

/// A client that trusts only pebble's root.
fn trusting(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(support::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// The leaf certificate `addr` serves for `name`, once it verifies against `root` for that
/// name (waiting, bounded, for the issuance); and what `GET /` answers.
async fn served(
    root: &CertificateDer<'static>,
    addr: SocketAddr,
    name: &str,
    timeout: Duration,
) -> (CertificateDer<'static>, u16, String) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match connect(trusting(root), addr, name).await {
            Ok(stream) => {
                let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (status, body) = get(stream, name, "/").await;
                return (leaf, status, body);
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!(
                    "no certificate for {name} that chains to pebble's root after {timeout:?}: {e}"
                )
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[tokio::test]
async fn certificates_from_pebble_over_http_01_and_tls_alpn_01_are_served_kept_across_a_restart_and_ordered_after_a_reload()
 {
    let dir = TempDir::new("acme-pebble");
    let (plain, tls) = (free_port(), free_port());
    let Some(pebble) = pebble(&dir, plain, tls).await else {
        return;
    };
    let http = format!(
        "acme_issuer pebble {{\n    uri {};\n    contact admin@site.test;\n    state_path state;\n    accept_terms_of_service;\n    ssl_trusted_certificate {};\n}}\n\
         acme_issuer pebble-alpn {{\n    uri {};\n    state_path state-alpn;\n    challenge tls-alpn-01;\n    account_key account.key;\n    contact ops@alpn.test;\n    accept_terms_of_service;\n    ssl_trusted_certificate {};\n}}\n\
         server {{\n    listen 127.0.0.1:{tls} ssl;\n    server_name site.test www.site.test;\n    acme_certificate pebble;\n    {CERT_LINES}\n    return 200 \"site $ssl_server_name\\n\";\n}}\n\
         server {{\n    listen 127.0.0.1:{tls} ssl;\n    server_name alpn.test;\n    acme_certificate pebble-alpn key=ecdsa:384;\n    {CERT_LINES}\n    return 200 \"alpn $ssl_server_name\\n\";\n}}\n\
         server {{\n    listen 127.0.0.1:{plain};\n    location / {{ return 301 https://$host$request_uri; }}\n    location /api/ {{ api; }}\n    location = /metrics {{ prometheus all; }}\n}}",
        pebble.directory, pebble.ca_file, pebble.directory, pebble.ca_file
    );
    // The TLS-ALPN-01 issuer's account key is the test's (PKCS#8 P-256, relative to the prefix).
    let account_key = rcgen::KeyPair::generate().unwrap();
    dir.write("account.key", &account_key.serialize_pem());
    let addr: SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    let imbang = start(&dir, &http);
    wait_accepting(addr, Duration::from_secs(10)).await;

    // HTTP-01, answered on the plain server whose every location redirects.
    let (site, status, body) =
        served(&pebble.root, addr, "site.test", Duration::from_secs(60)).await;
    assert_eq!((status, body.as_str()), (200, "site site.test\n"));
    // The certificate names both names of the server.
    let (www, _, body) = served(&pebble.root, addr, "www.site.test", Duration::from_secs(1)).await;
    assert_eq!(www, site);
    assert_eq!(body, "site www.site.test\n");
    // TLS-ALPN-01, answered on the TLS listener.
    let (alpn, status, body) =
        served(&pebble.root, addr, "alpn.test", Duration::from_secs(60)).await;
    assert_eq!((status, body.as_str()), (200, "alpn alpn.test\n"));
    assert_ne!(alpn, site);
    // The API: both certificates valid, expiring in pebble's five years.
    let plain_addr: SocketAddr = format!("127.0.0.1:{plain}").parse().unwrap();
    let (status, body) = support::request(plain_addr, "GET", "/api/9/acme", "x", None).await;
    assert_eq!(status, 200, "{body}");
    let api: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(api.as_object().unwrap().len(), 2, "{api}");
    for (name, cert) in api.as_object().unwrap() {
        assert_eq!(cert["state"], "valid", "{name}: {api}");
        assert!(cert["expires_in"].as_i64().unwrap() > 86_400 * 365, "{api}");
        assert!(cert["renew_in"].as_i64().unwrap() > 0, "{api}");
        assert_eq!(cert["last_error"], serde_json::Value::Null);
    }
    // The metrics: each certificate's time to expiry, as the API's, and no failure.
    let (status, metrics) = support::request(plain_addr, "GET", "/metrics", "x", None).await;
    assert_eq!(status, 200, "{metrics}");
    for (name, cert) in api.as_object().unwrap() {
        let issuer = cert["issuer"].as_str().unwrap();
        let labels = format!("{{certificate=\"{name}\",issuer=\"{issuer}\"}} ");
        let expiry = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("imbang_acme_certificate_expiry_seconds{labels}"))
            })
            .unwrap_or_else(|| panic!("{name}: {metrics}"));
        let expiry: i64 = expiry.parse().unwrap();
        let api_expiry = cert["expires_in"].as_i64().unwrap();
        assert!(
            (api_expiry - 5..=api_expiry).contains(&expiry),
            "{expiry} vs {api_expiry}"
        );
        assert!(
            metrics.contains(&format!("imbang_acme_certificate_failures{labels}0\n")),
            "{metrics}"
        );
    }
    let alpn_api = api
        .as_object()
        .unwrap()
        .iter()
        .find(|(n, _)| n.starts_with("pebble-alpn/alpn.test-"))
        .unwrap()
        .1;
    assert_eq!(alpn_api["key"], "ecdsa:384");
    let log = error_log(&dir);
    assert_eq!(log.matches(": account \"").count(), 2, "{log}");
    assert!(
        log.contains("created, acme issuer: \"pebble-alpn\""),
        "{log}"
    );
    assert!(
        log.contains("acme issuer: \"pebble\", order: \"site.test-"),
        "{log}"
    );
    assert!(log.contains("issued for site.test www.site.test"), "{log}");
    assert!(log.contains("issued for alpn.test"), "{log}");
    // The state: the account, the chain and its key, readable by imbang's user alone.
    for state in ["state", "state-alpn"] {
        let state = dir.path().join(state);
        let mut names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(names[0], "account.json");
        for name in &names {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(state.join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    // A restart: the kept certificates are served at once, and nothing is ordered.
    drop(imbang);
    std::fs::remove_file(dir.path().join("logs/error.log")).unwrap();
    let _imbang = start(&dir, &http);
    wait_accepting(addr, Duration::from_secs(10)).await;
    let (again, _, _) = served(&pebble.root, addr, "site.test", Duration::from_secs(1)).await;
    assert_eq!(again, site);
    let (again, _, _) = served(&pebble.root, addr, "alpn.test", Duration::from_secs(1)).await;
    assert_eq!(again, alpn);
    let log = wait_log(
        &dir,
        "acme issuer: \"pebble-alpn\"",
        Duration::from_secs(10),
    )
    .await;
    let log = if log.contains("acme issuer: \"pebble\"") {
        log
    } else {
        wait_log(&dir, "acme issuer: \"pebble\"", Duration::from_secs(10)).await
    };
    assert!(!log.contains("issued"), "{log}");
    assert!(!log.contains(": account \""), "{log}");
    assert!(
        log.contains("certificate is valid, renewal scheduled at "),
        "{log}"
    );

    // A reload that adds a server: its certificate is ordered at once, the others are kept.
    let more = format!(
        "{http}\nserver {{\n    listen 127.0.0.1:{tls} ssl;\n    server_name new.test;\n    acme_certificate pebble;\n    {CERT_LINES}\n    return 200 \"new\\n\";\n}}"
    );
    dir.write(
        "imbang.conf",
        &format!(
            "\nerror_log logs/error.log info;\npid logs/imbang.pid;\nhttp {{\naccess_log off;\n{more}\n}}\n"
        ),
    );
    let pid = support::read_pid_file(&dir.path().join("logs/imbang.pid")).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let (new, status, body) = served(&pebble.root, addr, "new.test", Duration::from_secs(60)).await;
    assert_eq!((status, body.as_str()), (200, "new\n"));
    assert_ne!(new, site);
    let (again, _, _) = served(&pebble.root, addr, "site.test", Duration::from_secs(1)).await;
    assert_eq!(again, site);
    let log = error_log(&dir);
    assert_eq!(log.matches("issued for").count(), 1, "{log}");
}

/// One request on an open connection (HTTP/1.1 keep-alive): the status, or `None` when the
/// connection failed.
async fn keepalive_get(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    host: &str,
) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= length {
                return head.split(' ').nth(1)?.parse().ok();
            }
        }
    }
}

#[tokio::test]
async fn a_renewed_certificate_is_swapped_in_under_load_and_an_unreachable_ca_keeps_the_old_one() {
    let dir = TempDir::new("acme-renew");
    let (plain, tls) = (free_port(), free_port());
    // Certificates of 20 s: renewed 13 s after they are issued.
    let validity = serde_json::json!({ "certificateValidityPeriod": 20 });
    let Some(pebble) = pebble_with(&dir, plain, tls, validity).await else {
        return;
    };
    let root = pebble.root.clone();
    let http = format!(
        "acme_issuer pebble {{ uri {}; state_path state; accept_terms_of_service; ssl_trusted_certificate {}; }}\n\
         server {{ listen 127.0.0.1:{tls} ssl; server_name site.test; acme_certificate pebble; {CERT_LINES}\n\
             keepalive_timeout 120s; return 200 \"ok\\n\"; }}\n\
         server {{ listen 127.0.0.1:{plain}; return 301 https://$host$request_uri; }}",
        pebble.directory, pebble.ca_file
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    let _imbang = start(&dir, &http);
    wait_accepting(addr, Duration::from_secs(10)).await;
    let (first, status, _) = served(&root, addr, "site.test", Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    // A connection made with the first certificate, used again after the renewal.
    let mut kept = connect(trusting(&root), addr, "site.test").await.unwrap();
    assert_eq!(keepalive_get(&mut kept, "site.test").await, Some(200));

    // Load until a handshake shows the renewed certificate: new connections all the time.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let renewed = Arc::new(std::sync::Mutex::new(None));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, requests, renewed) = (
            stop.clone(),
            failures.clone(),
            requests.clone(),
            renewed.clone(),
        );
        let (root, first) = (root.clone(), first.clone());
        clients.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering;
            while !stop.load(Ordering::SeqCst) {
                requests.fetch_add(1, Ordering::SeqCst);
                let Ok(stream) = connect(trusting(&root), addr, "site.test").await else {
                    failures.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                let leaf = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
                let (status, _) = get(stream, "site.test", "/").await;
                if status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                if leaf != first {
                    *renewed.lock().unwrap() = Some(leaf);
                }
            }
        }));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while renewed.lock().unwrap().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no renewal in 40 s:\n{}",
            error_log(&dir)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more of load on the renewed certificate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let (failures, requests) = (
        failures.load(std::sync::atomic::Ordering::SeqCst),
        requests.load(std::sync::atomic::Ordering::SeqCst),
    );
    assert_eq!(failures, 0, "{failures} of {requests} requests failed");
    assert!(requests > 20, "{requests}");
    assert_eq!(keepalive_get(&mut kept, "site.test").await, Some(200));
    let log = error_log(&dir);
    assert_eq!(log.matches("issued for site.test").count(), 2, "{log}");
    let renewed = renewed.lock().unwrap().clone().unwrap();

    // The CA goes away: the next renewal fails, is logged, and the renewed certificate is
    // still served.
    drop(pebble);
    let log = wait_log(&dir, "while updating certificate", Duration::from_secs(30)).await;
    assert!(
        log.contains("[error]") && log.contains("next attempt in 10s"),
        "{log}"
    );
    let (still, status, _) = served(&root, addr, "site.test", Duration::from_secs(1)).await;
    assert_eq!((still, status), (renewed, 200));
}

#[tokio::test]
async fn started_as_root_with_user_the_state_belongs_to_that_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: dropping privileges needs the test to run as root (CI does)");
        return;
    }
    let dir = TempDir::new("acme-user");
    let (plain, tls) = (free_port(), free_port());
    let Some(pebble) = pebble(&dir, plain, tls).await else {
        return;
    };
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .unwrap()
        .uid
        .as_raw();
    let http = format!(
        "acme_issuer pebble {{ uri {}; state_path state; accept_terms_of_service; ssl_trusted_certificate {}; }}\n\
         server {{ listen 127.0.0.1:{tls} ssl; server_name site.test; acme_certificate pebble; {CERT_LINES} return 200 ok; }}\n\
         server {{ listen 127.0.0.1:{plain}; return 301 https://$host$request_uri; }}",
        pebble.directory, pebble.ca_file
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    let _imbang = start_with(&dir, "user nobody nogroup;", &http);
    wait_accepting(addr, Duration::from_secs(10)).await;
    let (_, status, _) = served(&pebble.root, addr, "site.test", Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let state = dir.path().join("state");
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(
        (meta.uid(), meta.permissions().mode() & 0o777),
        (nobody, 0o700)
    );
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    for file in files {
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (meta.uid(), meta.permissions().mode() & 0o777),
            (nobody, 0o600),
            "{}",
            file.display()
        );
    }
}

#[tokio::test]
async fn external_account_binding_and_profiles_are_what_the_ca_asks_for_and_offers() {
    let dir = TempDir::new("acme-eab");
    let (plain, tls) = (free_port(), free_port());
    let mac = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let mac2 = "b10lLJs8l1GPIzsLP0s6pMt8O0XVGnfTaCeROxQM0BIt2XrJMDHJZBM5NuQmQJQH";
    let eab = serde_json::json!({
        "externalAccountBindingRequired": true,
        "externalAccountMACKeys": { "kid-1": mac, "kid-2": mac2 },
    });
    let Some(pebble) = pebble_with(&dir, plain, tls, eab).await else {
        return;
    };
    // The MAC key in a file.
    dir.write("eab.key", &format!("{mac}\n"));
    let http = format!(
        "acme_issuer bound {{ uri {dir}; state_path bound; accept_terms_of_service; ssl_trusted_certificate {ca};\n\
             external_account_key kid-1 eab.key; contact ops@site.test; profile shortlived; }}\n\
         acme_issuer required {{ uri {dir}; state_path required; accept_terms_of_service; ssl_trusted_certificate {ca};\n\
             external_account_key kid-2 data:{mac2}; profile shortlived require; }}\n\
         acme_issuer unbound {{ uri {dir}; state_path unbound; accept_terms_of_service; ssl_trusted_certificate {ca}; }}\n\
         server {{ listen 127.0.0.1:{tls} ssl; server_name site.test; acme_certificate bound key=rsa:2048; {CERT_LINES} return 200 ok; }}\n\
         server {{ listen 127.0.0.1:{tls} ssl; server_name other.test; acme_certificate unbound; {CERT_LINES} return 200 ok; }}\n\
         server {{ listen 127.0.0.1:{tls} ssl; server_name short.test; acme_certificate required; {CERT_LINES} return 200 ok; }}\n\
         server {{ listen 127.0.0.1:{plain}; return 301 https://$host$request_uri; }}",
        dir = pebble.directory,
        ca = pebble.ca_file
    );
    let addr: SocketAddr = format!("127.0.0.1:{tls}").parse().unwrap();
    let _imbang = start(&dir, &http);
    wait_accepting(addr, Duration::from_secs(10)).await;
    let (leaf, status, _) = served(&pebble.root, addr, "site.test", Duration::from_secs(60)).await;
    assert_eq!(status, 200);
    // `key=rsa:2048`: the certificate's key is RSA, 2048 bits.
    let (_, x509) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    let key = x509.public_key();
    assert_eq!(
        key.algorithm.algorithm.to_id_string(),
        "1.2.840.113549.1.1.1"
    );
    match key.parsed().unwrap() {
        x509_parser::public_key::PublicKey::RSA(rsa) => assert_eq!(rsa.key_size(), 2048),
        other => panic!("{other:?}"),
    }
    // Without the binding, pebble refuses the account.
    let log = wait_log(&dir, "acme issuer: \"unbound\"", Duration::from_secs(20)).await;
    assert!(
        log.contains("externalAccountRequired") || log.contains("external account"),
        "{log}"
    );
    let refused = connect(trusting(&pebble.root), addr, "other.test").await;
    assert!(refused.is_err());
    // pebble 2.4 offers no profiles: without `require` the default is used (and said so),
    // with it the order fails.
    let log = wait_log(&dir, "acme issuer: \"required\"", Duration::from_secs(20)).await;
    assert!(
        log.contains("[warn]")
            && log.contains(
                "profile \"shortlived\" is not offered by the ACME server, the default is used, acme issuer: \"bound\""
            ),
        "{log}"
    );
    assert!(
        log.contains("[error]")
            && log.contains(
                "profile \"shortlived\" is not offered by the ACME server while updating certificate, acme issuer: \"required\""
            ),
        "{log}"
    );
    let refused = connect(trusting(&pebble.root), addr, "short.test").await;
    assert!(refused.is_err());
}
