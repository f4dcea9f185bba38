//! Client certificates (`ssl_verify_client on | optional | optional_no_ca`): nginx's 400 pages
//! for a missing or bad certificate, and the `$ssl_client_*` variables.
mod support;

use std::sync::Arc;

use support::tls::{Ca, Pem, client_config, client_with_cert, connect, get};
use support::{Lb, TempDir, imbang, run_imbang};

/// A server verifying clients (`mode`) against `client_ca`; it answers with the variables.
async fn verifying(server_ca: &Ca, client_ca: &Ca, dir: &TempDir, mode: &str) -> Lb {
    let pem = server_ca.leaf(&["v.test"], false);
    let crt = dir.write("v.crt", &pem.cert);
    let key = dir.write("v.key", &pem.key);
    let cas = dir.write("clients.pem", &client_ca.pem);
    let conf = format!(
        "events {{}} http {{ access_log off; server {{ listen 127.0.0.1:0 ssl; server_name v.test;
            ssl_certificate {}; ssl_certificate_key {}; ssl_verify_client {mode}; ssl_client_certificate {};
            return 200 \"$ssl_client_verify|$ssl_client_s_dn|$ssl_client_i_dn|$ssl_client_serial|$ssl_client_fingerprint\"; }} }}",
        crt.display(),
        key.display(),
        cas.display()
    );
    imbang(&conf).await
}

fn page(detail: &str) -> String {
    format!(
        "<html>\r\n<head><title>400 {detail}</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>{detail}</center>\r\n<hr><center>imbang</center>\r\n</body>\r\n</html>\r\n"
    )
}

fn fingerprint(pem: &Pem) -> String {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &pem.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn ask(lb: &Lb, config: rustls::ClientConfig) -> (u16, String) {
    let stream = connect(Arc::new(config), lb.addr, "v.test").await.unwrap();
    get(stream, "v.test", "/").await
}

#[tokio::test]
async fn verify_on_answers_400_without_a_certificate_or_with_a_bad_one_and_shows_a_good_one() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let strangers = Ca::new("Other CA");
    let dir = TempDir::new("tls-client-on");
    let lb = verifying(&ca, &clients, &dir, "on").await;

    let (status, body) = ask(&lb, client_config(&ca, &[])).await;
    assert_eq!(
        (status, body),
        (400, page("No required SSL certificate was sent"))
    );

    let bad = strangers.leaf(&["client.test"], false);
    let (status, body) = ask(&lb, client_with_cert(&ca, &bad)).await;
    assert_eq!((status, body), (400, page("The SSL certificate error")));

    let good = clients.leaf(&["client.test"], false);
    let (status, body) = ask(&lb, client_with_cert(&ca, &good)).await;
    assert_eq!(status, 200, "{body}");
    let fields: Vec<&str> = body.split('|').collect();
    assert_eq!(fields[0], "SUCCESS");
    assert_eq!(fields[1], "CN=client.test");
    assert_eq!(fields[2], "CN=Client CA");
    assert!(
        !fields[3].is_empty()
            && fields[3]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase()),
        "serial {}",
        fields[3]
    );
    assert_eq!(fields[4], fingerprint(&good));
}

#[tokio::test]
async fn verify_optional_lets_a_client_without_a_certificate_in_but_not_one_with_a_bad_one() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let strangers = Ca::new("Other CA");
    let dir = TempDir::new("tls-client-optional");
    let lb = verifying(&ca, &clients, &dir, "optional").await;
    assert_eq!(
        ask(&lb, client_config(&ca, &[])).await,
        (200, "NONE||||".into())
    );
    let bad = strangers.leaf(&["client.test"], false);
    assert_eq!(ask(&lb, client_with_cert(&ca, &bad)).await.0, 400);
    let good = clients.leaf(&["client.test"], false);
    let (status, body) = ask(&lb, client_with_cert(&ca, &good)).await;
    assert_eq!(
        (status, body.starts_with("SUCCESS|CN=client.test|")),
        (200, true),
        "{body}"
    );
}

#[tokio::test]
async fn verify_optional_no_ca_accepts_a_certificate_of_an_unknown_issuer_and_says_so() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let strangers = Ca::new("Other CA");
    let dir = TempDir::new("tls-client-no-ca");
    let lb = verifying(&ca, &clients, &dir, "optional_no_ca").await;
    let stranger = strangers.leaf(&["someone.test"], false);
    let (status, body) = ask(&lb, client_with_cert(&ca, &stranger)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with(
            "FAILED:unable to get local issuer certificate|CN=someone.test|CN=Other CA|"
        ),
        "{body}"
    );
}

#[tokio::test]
async fn verify_without_a_client_ca_fails_t() {
    let ca = Ca::new("Server CA");
    let dir = TempDir::new("tls-client-t");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let pem = ca.leaf(&["v.test"], false);
    let crt = dir.write("v.crt", &pem.cert);
    let key = dir.write("v.key", &pem.key);
    let conf = dir.write(
        "imbang.conf",
        &format!(
            "events {{}}\nhttp {{ access_log off;\nserver {{\nlisten 127.0.0.1:0 ssl;\nssl_certificate {}; ssl_certificate_key {};\nssl_verify_client on;\nreturn 200; }} }}\n",
            crt.display(),
            key.display()
        ),
    );
    let p = format!("{}/", dir.path().display());
    let c = conf.display().to_string();
    let out = run_imbang(dir.path(), &["-t", "-p", &p, "-c", &c]).await;
    assert_eq!(out.code, Some(1));
    assert_eq!(
        out.stderr.lines().next(),
        Some(
            format!("imbang: [emerg] no ssl_client_certificate for ssl_verify_client in {c}:4:1")
                .as_str()
        ),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn a_host_of_another_verifying_server_is_421_and_a_reload_keeps_connections_valid() {
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let dir = TempDir::new("tls-client-421");
    let v = ca.leaf(&["v.test"], false);
    let o = ca.leaf(&["open.test"], false);
    let (vc, vk) = (dir.write("v.crt", &v.cert), dir.write("v.key", &v.key));
    let (oc, ok) = (dir.write("o.crt", &o.cert), dir.write("o.key", &o.key));
    let cas = dir.write("clients.pem", &clients.pem);
    let conf = format!(
        "events {{}} http {{ access_log off;
           server {{ listen 127.0.0.1:0 ssl; server_name v.test; ssl_certificate {}; ssl_certificate_key {};
                     ssl_verify_client on; ssl_client_certificate {}; return 200 verified; }}
           server {{ listen 127.0.0.1:0 ssl; server_name open.test; ssl_certificate {}; ssl_certificate_key {}; return 200 open; }}
        }}",
        vc.display(),
        vk.display(),
        cas.display(),
        oc.display(),
        ok.display()
    );
    let lb = imbang(&conf).await;
    let good = clients.leaf(&["client.test"], false);

    // Handshake for open.test, request for v.test: nginx's 421.
    let stream = connect(Arc::new(client_with_cert(&ca, &good)), lb.addr, "open.test")
        .await
        .unwrap();
    assert_eq!(get(stream, "v.test", "/").await.0, 421);

    // A keep-alive connection to the verifying server, across a reload of the same file.
    let stream = connect(Arc::new(client_with_cert(&ca, &good)), lb.addr, "v.test")
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = || {
        http::Request::get("/")
            .header("host", "v.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(sender.send_request(ask()).await.unwrap().status(), 200);
    lb.reload(&conf).await;
    assert_eq!(sender.send_request(ask()).await.unwrap().status(), 200);
}
