//! What the fuzz targets (`fuzz/`, run by `fuzz/run.sh`) found, kept as regression tests on
//! stable Rust: each input runs through the same check its target runs (`imbang::fuzzing`),
//! and what was wrong is also asserted directly, the way a user sees it.
mod support;

/// config: a server name the virtual host table refuses (`a..b`, a NUL) was reported without
/// its place; it is now the `server` block's, as for the other errors of that table.
#[test]
fn a_server_name_the_table_refuses_is_reported_at_its_server() {
    for input in [
        &b"http { server { listen 8080 default_server; listen [::1]:81; server_name .example.]\0\0\0www.* ~^a; } server { } }"[..],
        b"http { server { listen 8080 default_server; listen [::2]:81; server_name .examproxy_passw.. ~^a; } server { } }",
    ] {
        imbang::fuzzing::config(input);
    }
    let error = support::compile(
        "events {} http { access_log off;\n  server { listen 127.0.0.1:8080;\n server_name a..b; } }",
    )
    .unwrap_err();
    assert_eq!(
        error,
        "invalid server name or wildcard \"a..b\" in /t/imbang.conf:2:3"
    );
}

/// config: a `server_name ~regex` that does not compile was reported without its place; it
/// now names its server block (nginx names the `server_name` line).
#[test]
fn a_server_name_regex_that_does_not_compile_is_reported_at_its_server() {
    imbang::fuzzing::config(
        b"events {}\nhttp {\n server { listen 127.0.0.1:8083; server_name ~^www\\.(?<domain~.+)$; return 301 $scheme://$domain; }\n}\n",
    );
    let error = support::compile(
        "events {} http { access_log off;\n  server { listen 127.0.0.1:8080;\n server_name ~^(?<a~.+)$; } }",
    )
    .unwrap_err();
    assert_eq!(
        error,
        "pcre2_compile() failed: invalid capture group character in \"^(?<a~.+)$\" in /t/imbang.conf:2:3"
    );
}

/// Every target's entry point runs its seeds without a panic (the seeds are the files
/// `fuzz/run.sh` starts from), so a change that breaks a target's check fails here first.
#[test]
fn every_target_runs_its_seeds() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    type Target = fn(&[u8]);
    let targets: [(&str, Target); 6] = [
        ("http1_request", imbang::fuzzing::request),
        ("http1_chunked", imbang::fuzzing::chunked),
        ("upstream_response", imbang::fuzzing::response),
        ("regex", imbang::fuzzing::regex),
        ("proxy_protocol", imbang::fuzzing::proxy_protocol),
        ("ssl_preread", imbang::fuzzing::ssl_preread),
    ];
    for (name, target) in targets {
        let mut n = 0;
        for entry in std::fs::read_dir(seeds.join(name)).unwrap() {
            target(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds for {name}");
    }
    let compat = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compat");
    for dir in std::fs::read_dir(compat).unwrap() {
        let conf = dir.unwrap().path().join("nginx.conf");
        if let Ok(text) = std::fs::read(&conf) {
            imbang::fuzzing::config(&text);
        }
    }
}

/// config: `proxy_pass` whose URL has a multibyte character across the scheme's length
/// (`http:/ѥ`) panicked while the configuration was read (`url[..7]` inside a character); it
/// is now nginx's "invalid URL prefix".
#[test]
fn a_proxy_pass_url_with_a_multibyte_character_at_the_scheme_is_an_error() {
    imbang::fuzzing::config(
        "events {} http { server { listen 127.0.0.1:8087; location / { proxy_pass http:/ѥpp; } } }"
            .as_bytes(),
    );
    let error = support::compile(
        "events {} http { access_log off;\n  server { listen 127.0.0.1:8080;\n location / { proxy_pass http:/ѥpp; } } }",
    )
    .unwrap_err();
    assert_eq!(
        error,
        "invalid URL prefix in \"http:/ѥpp\" in /t/imbang.conf:3:26"
    );
}

/// The same slicing at run time, where the URL of `proxy_pass` with variables comes from the
/// request: a header value with a byte that is not UTF-8 (`abcd\xff`) became `abcd\u{fffd}`,
/// and `[..5]` fell inside that character: the connection's task panicked and the client got
/// no answer. Now it is refused with the error nginx gives an unknown host: 502.
#[tokio::test]
async fn a_variable_proxy_pass_url_with_a_multibyte_character_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let lb = support::imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off;
           server { listen 127.0.0.1:0; location / { proxy_pass http://$http_x_up; } } }",
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Up: abcd\xff\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_end(&mut answer),
    )
    .await
    .expect("an answer within 10 s")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer:?}");
}

/// regex: `(^Y|.\g0e.\g0e|)5` took gigabytes to compile in fancy-regex, which reads `\g0` as a
/// call of the whole pattern and inlines every call (PCRE refuses `\g0`). A pattern with a
/// `\g` escape is now refused as the linear engine refuses it, at once.
#[test]
fn a_regex_with_group_calls_is_refused_at_once() {
    let started = tokio::time::Instant::now();
    imbang::fuzzing::regex(b"(~h|pw|Dp|^Y|#ht(?i:H).m:y@\\g0e.m:y@\\g0e|)5\0/");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let error = support::compile(
        "events {} http { access_log off;\n  server { listen 127.0.0.1:8080;\n location ~ (.\\g0.\\g0|)5 { } } }",
    )
    .unwrap_err();
    assert!(error.starts_with("pcre2_compile() failed: "), "{error}");
    assert!(error.ends_with(" in /t/imbang.conf:3:2"), "{error}");
}

/// ssl_preread: the first 4 bytes of an SSLv2-compatible hello were "not TLS" (only the record
/// header's first byte was looked at), though the fifth makes it a hello; as nginx, nothing is
/// now decided on fewer than 5 bytes.
#[test]
fn ssl_preread_decides_nothing_on_fewer_than_five_bytes() {
    use imbang::tls::preread::{Preread, parse};
    let v2 = [0x80, 0x2e, 0x01, 0x03, 0x01, 0, 0x15];
    imbang::fuzzing::ssl_preread(&v2);
    for n in 0..5 {
        assert_eq!(parse(&v2[..n]), Preread::Incomplete, "{n} bytes");
    }
    assert!(matches!(parse(&v2), Preread::Parsed(h) if h.protocol == "TLSv1"));
    imbang::fuzzing::ssl_preread(&[0x16]);
    assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Preread::NotTls);
}
