//! `access_log syslog:...`: each line is one UDP datagram to a real receiver socket, with
//! nginx's RFC 3164 header, compared with what nginx 1.22 sends for the same configuration.
mod support;

use std::time::Duration;

use support::{TempDir, imbang, start_nginx};
use tokio::net::UdpSocket;

/// The http block's server (`{listen}`: its port; `{syslog}`: the receiver's port).
const SERVER: &str = "
    log_format short '$request_method $uri $status \"$http_x_note\"';
    server {
        listen 127.0.0.1:{listen};
        access_log syslog:server=127.0.0.1:{syslog},facility=local0,severity=notice,tag=web short;
        access_log syslog:server=127.0.0.1:{syslog},nohostname short;
        location / { return 204; }
    }
";

/// The two datagrams one request makes, in the order sent, with the time (`Mmm dd hh:mm:ss`)
/// checked and replaced by `TIME`.
async fn two_messages(receiver: &UdpSocket) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for _ in 0..2 {
        let n = tokio::time::timeout(Duration::from_secs(10), receiver.recv(&mut buf))
            .await
            .expect("a syslog message within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        let (pri, rest) = text.split_at(text.find('>').unwrap() + 1);
        let (time, rest) = rest.split_at(15);
        let t: Vec<&str> = time.split(' ').filter(|s| !s.is_empty()).collect();
        assert_eq!(t.len(), 3, "{text:?}");
        assert!(t[2].len() == 8 && t[2].as_bytes()[2] == b':', "{text:?}");
        got.push(format!("{pri}TIME{rest}"));
    }
    got
}

async fn send(addr: std::net::SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET /a\"b HTTP/1.1\r\nHost: x\r\nX-Note: hi there\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
        .await
        .unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 204"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test]
async fn access_log_lines_go_to_syslog_as_nginx_sends_them() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let server = SERVER.replace("{syslog}", &port.to_string());
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}} http {{ {} }}",
        server.replace("{listen}", "0")
    ))
    .await;
    send(lb.addr).await;
    let ours = two_messages(&receiver).await;
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    assert_eq!(
        ours,
        [
            format!("<133>TIME {host} web: GET /a\\x22b 204 \"hi there\""),
            "<190>TIME nginx: GET /a\\x22b 204 \"hi there\"".to_owned(),
        ]
    );

    let dir = TempDir::new("syslog-nginx");
    let Some((_nginx, addr)) = start_nginx(&dir, &server).await else {
        return;
    };
    send(addr).await;
    assert_eq!(
        two_messages(&receiver).await,
        ours,
        "nginx's messages against imbang's"
    );
}

#[test]
fn syslog_targets_are_checked_as_nginx_checks_them() {
    let err = |target: &str| {
        support::compile(&format!(
            "events {{}} http {{ server {{ access_log {target}; }} }}"
        ))
        .unwrap_err()
    };
    let cases = [
        ("syslog:facility=local0", "no syslog server specified"),
        (
            "syslog:server=127.0.0.1,facility=nope",
            "unknown syslog facility \"nope\"",
        ),
        (
            "syslog:server=127.0.0.1,severity=loud",
            "unknown syslog severity \"loud\"",
        ),
        (
            "syslog:server=127.0.0.1,tag=a-b",
            "syslog \"tag\" only allows alphanumeric characters and underscore",
        ),
        (
            "syslog:server=127.0.0.1,port=1",
            "unknown syslog parameter \"port=1\"",
        ),
        (
            "syslog:server=127.0.0.1 combined buffer=32k",
            "logs to syslog cannot be buffered",
        ),
        (
            "syslog:server=127.0.0.1,server=127.0.0.2",
            "duplicate syslog \"server\"",
        ),
    ];
    for (target, want) in cases {
        let got = err(target);
        assert!(got.contains(want), "{target}: {got}");
    }
    assert_eq!(
        support::compile("events {} http { server { access_log syslog:server=127.0.0.1:5140; } }"),
        Ok(())
    );
}

/// `error_log syslog:...`: each line at or above the log's level goes out as a datagram whose
/// severity is the line's own level (nginx's `ngx_syslog_writer`), the line whole after the
/// header.
#[tokio::test]
async fn error_log_lines_go_to_syslog_with_their_level_as_severity() {
    let receiver = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let syslog = receiver.local_addr().unwrap().port();
    let (port, dead) = (support::free_port(), support::free_port());
    let dir = TempDir::new("syslog-error-log");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; pid logs/imbang.pid;
             error_log syslog:server=127.0.0.1:{syslog},tag=err warn;
             events {{}}
             http {{ access_log off;
                 server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://127.0.0.1:{dead}; }} }}
             }}"
        ),
    );
    let _imbang = support::ImbangGuard::start(&format!("{}/", dir.path().display()));
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    support::wait_accepting(addr, Duration::from_secs(10)).await;
    assert_eq!(support::request(addr, "GET", "/", "x", None).await.0, 502);
    let mut buf = [0u8; 4096];
    let message = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), receiver.recv(&mut buf))
            .await
            .expect("the error within 10 s")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(!text.contains("[notice]"), "below the log's level: {text}");
        if text.contains("connect() failed") {
            break text;
        }
    };
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    // local7 (23) × 8 + error (3).
    assert!(message.starts_with("<187>"), "{message}");
    let body = message
        .split_once(&format!(" {host} err: "))
        .expect(&message)
        .1;
    assert!(
        body.contains(" [error] ")
            && body.contains(
                "connect() failed (111: Connection refused) while connecting to upstream"
            ),
        "{body}"
    );
    assert!(!body.ends_with('\n'), "{body:?}");
}
