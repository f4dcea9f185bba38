//! What a short exchange puts on the wire, counted by the kernel: the TCP segments received on
//! this machine (`InSegs` of /proc/net/snmp, Linux), so this file holds one test (the tests of
//! one file run at once; cargo runs the files one after another). Noise from anything else on
//! the machine only adds segments, so the fewest of several exchanges is the one counted.
mod support;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TCP segments this machine's network namespace has received.
fn segments_in() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").expect("/proc/net/snmp");
    let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next().unwrap(), tcp.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == "InSegs")
        .expect("InSegs");
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The fewest segments one exchange of `request` took, from the client's connect to its read of
/// the end of the answer (not its own close), over fifty exchanges (a few milliseconds: other
/// traffic on the machine would have to land in every one); and the last answer.
async fn fewest_segments(addr: std::net::SocketAddr, request: &str) -> (u64, String) {
    let mut fewest = u64::MAX;
    let mut answer = String::new();
    for _ in 0..50 {
        let before = segments_in();
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(request.as_bytes()).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        fewest = fewest.min(segments_in() - before);
        answer = String::from_utf8(got).unwrap();
    }
    (fewest, answer)
}

/// An answer on a connection that closes after it: the request is acknowledged by the answer
/// (the listener's `TCP_QUICKACK` off, HAProxy's `tcp-smart-accept`), and the answer's last
/// bytes and the FIN share one segment (`MSG_MORE`, then `shutdown`). The client sees five
/// segments: SYN, SYN-ACK, ACK, request, answer + FIN. Without either it sees six or seven.
#[tokio::test]
async fn a_closing_answer_acknowledges_the_request_and_carries_the_fin() {
    let lb = support::imbang(
        r#"
        daemon off;
        events {}
        http {
            access_log off;
            server {
                listen 127.0.0.1:0;
                location / { return 200 "hello\n"; }
                location = /none { return 204; }
            }
        }
        "#,
    )
    .await;
    for (request, ends) in [
        // A body: its last bytes take the FIN.
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "\r\n\r\nhello\n",
        ),
        // No body: the head takes it.
        (
            "GET /none HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            "\r\n\r\n",
        ),
        // HTTP/1.0 closes by default.
        ("HEAD / HTTP/1.0\r\n\r\n", "\r\n\r\n"),
    ] {
        let (segments, answer) = fewest_segments(lb.addr, request).await;
        assert!(
            answer.starts_with("HTTP/1.1 20") && answer.ends_with(ends),
            "{request:?}: {answer:?}"
        );
        assert_eq!(segments, 5, "{request:?}: segments received per exchange");
    }
}
