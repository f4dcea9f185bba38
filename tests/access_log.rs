//! The access log: nginx's `combined` by default, `log_format` with variables and escaping,
//! `access_log off`, upstream variables across a failover; `buffer=`, `flush=`, `gzip` and
//! `if=`, and buffered lines written on reopen, reload and at exit (the real binary).
mod support;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use support::{
    ImbangGuard, TempDir, backend, imbang, imbang_bin, request, wait_child, wait_pid_file,
};

const WAIT: Duration = Duration::from_secs(5);

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn combined_by_default_custom_formats_and_off() {
    let dir = TempDir::new("access");
    let app = backend("app").await;
    let dead = backend("dead").await;
    dead.stop();
    let combined = dir.path().join("combined.log");
    let custom = dir.path().join("custom.log");
    let json = dir.path().join("json.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           log_format up '$request_method $uri $status $body_bytes_sent $upstream_addr $upstream_status $arg_q $http_x_odd';
           log_format js escape=json '{{\"uri\":\"$request_uri\",\"ua\":\"$http_user_agent\",\"sent\":\"$sent_http_content_type\"}}';
           access_log {combined};
           upstream app {{ server {dead}; server {app}; }}
           server {{
             listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; access_log {custom} up; access_log {json} js; }}
             location /quiet {{ access_log off; return 200 shh; }}
             location /r {{ return 200 hello; }}
           }}
         }}",
        combined = combined.display(),
        custom = custom.display(),
        json = json.display(),
        dead = dead.addr,
        app = app.addr,
    ))
    .await;

    // The first request fails over from the dead peer to app: two tries in $upstream_*.
    let (status, body) = request(lb.addr, "GET", "/p?q=1", "localhost", None).await;
    assert_eq!((status, body.as_str()), (200, "app GET /p?q=1"));
    assert_eq!(lb.get("/quiet").await.1, "shh");
    assert_eq!(lb.get("/r").await.1, "hello");
    // Lines are written as each response body is dropped, just after its last byte went out.
    let written =
        || lines(&custom).len() == 1 && lines(&json).len() == 1 && lines(&combined).len() == 1;
    support::eventually("the log lines", WAIT, written).await;
    drop(lb);
    let up = lines(&custom);
    assert_eq!(
        up,
        [format!(
            "GET /p 200 14 {}, {} 502, 200 1 -",
            dead.addr, app.addr
        )]
    );
    let js = lines(&json);
    assert_eq!(js, ["{\"uri\":\"/p?q=1\",\"ua\":\"\",\"sent\":\"\"}"]);
    let all = lines(&combined);
    assert_eq!(all.len(), 1, "only /r logs to the http-level log: {all:?}");
    let fields: Vec<&str> = all[0].split(' ').collect();
    assert_eq!(fields[0], "127.0.0.1");
    assert_eq!(&fields[1..3], ["-", "-"]);
    assert!(
        fields[3].starts_with('[') && fields[4].ends_with(']'),
        "{}",
        all[0]
    );
    assert_eq!(
        &fields[5..],
        ["\"GET", "/r", "HTTP/1.1\"", "200", "5", "\"-\"", "\"-\""]
    );
}

#[tokio::test]
async fn a_reload_moves_the_access_log_to_its_new_path() {
    let dir = TempDir::new("access-reload");
    let first = dir.path().join("first.log");
    let second = dir.path().join("second.log");
    let conf = |path: &std::path::Path| {
        format!(
            "daemon off; error_log stderr crit; events {{}}
             http {{ log_format short '$uri $status'; access_log {} short;
               server {{ listen 127.0.0.1:0; location / {{ return 200 ok; }} }} }}",
            path.display()
        )
    };
    let lb = imbang(&conf(&first)).await;
    assert_eq!(lb.get("/one").await.0, 200);
    support::eventually("the first line", WAIT, || lines(&first) == ["/one 200"]).await;
    lb.reload(&conf(&second)).await;
    assert_eq!(lb.get("/two").await.0, 200);
    support::eventually("the line in the new file", WAIT, || {
        lines(&second) == ["/two 200"]
    })
    .await;
    assert_eq!(lines(&first), ["/one 200"]);
}

#[tokio::test]
async fn variables_from_set_are_in_log_lines() {
    let dir = TempDir::new("access-set");
    let log = dir.path().join("set.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{
           log_format v '$uri $who';
           access_log {} v;
           server {{
             listen 127.0.0.1:0;
             set $who server;
             location /l {{ set $who location; return 200 ok; }}
             location /s {{ return 200 ok; }}
           }}
         }}",
        log.display()
    ))
    .await;
    assert_eq!(lb.get("/l").await.0, 200);
    assert_eq!(lb.get("/s").await.0, 200);
    support::eventually("two lines", WAIT, || lines(&log).len() == 2).await;
    assert_eq!(lines(&log), ["/l location", "/s server"]);
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Each location logs to `buffered` (its own parameters) and then, unbuffered, to `witness`.
/// Both lines are written by the same call, buffered one first: once the witness has a line, the
/// buffered log has taken its line too, wherever it went.
fn buffered_conf(dir: &Path, params: &str) -> String {
    format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{
           log_format u '$request_uri';
           server {{
             listen 127.0.0.1:0;
             location /a {{ access_log {b} u {params}; access_log {w} u; return 200 a; }}
             location /b {{ access_log {b} u; access_log {w} u; return 200 b; }}
           }}
         }}",
        b = dir.join("buffered.log").display(),
        w = dir.join("witness.log").display(),
    )
}

async fn get_logged(lb: &support::Lb, dir: &Path, path: &str, nth: usize) {
    assert_eq!(lb.get(path).await.0, 200);
    let witness = dir.join("witness.log");
    support::eventually("the witness line", WAIT, || lines(&witness).len() == nth).await;
}

#[tokio::test]
async fn a_buffer_is_written_when_the_next_line_does_not_fit_and_is_shared_by_the_file() {
    let dir = TempDir::new("access-buffer");
    let buffered = dir.path().join("buffered.log");
    // Lines of 5 bytes: two fit in 12.
    let lb = imbang(&buffered_conf(dir.path(), "buffer=12")).await;
    get_logged(&lb, dir.path(), "/a/1", 1).await;
    assert_eq!(text(&buffered), "", "the first line waits in the buffer");
    // /b's `access_log` has no parameters, but the file is buffered: its line waits too.
    get_logged(&lb, dir.path(), "/b/2", 2).await;
    assert_eq!(text(&buffered), "");
    get_logged(&lb, dir.path(), "/a/3", 3).await;
    assert_eq!(
        text(&buffered),
        "/a/1\n/b/2\n",
        "the third line did not fit"
    );
    // A line longer than the whole buffer goes out on its own, after what was waiting.
    get_logged(&lb, dir.path(), "/a/longer-than-12", 4).await;
    assert_eq!(text(&buffered), "/a/1\n/b/2\n/a/3\n/a/longer-than-12\n");
}

#[tokio::test]
async fn flush_writes_a_waiting_line_after_that_time() {
    let dir = TempDir::new("access-flush");
    let buffered = dir.path().join("buffered.log");
    let lb = imbang(&buffered_conf(dir.path(), "buffer=64k flush=100ms")).await;
    assert_eq!(lb.get("/a/1").await.0, 200);
    assert_eq!(lb.get("/b/2").await.0, 200);
    // Far from full, so only the timer writes them (one write: the second line joined the first).
    support::eventually("the timer's write", WAIT, || {
        text(&buffered) == "/a/1\n/b/2\n"
    })
    .await;
    // The next line arms the timer again.
    assert_eq!(lb.get("/a/3").await.0, 200);
    support::eventually("the second write", WAIT, || {
        text(&buffered) == "/a/1\n/b/2\n/a/3\n"
    })
    .await;
}

#[tokio::test]
async fn reopen_writes_the_buffer_into_the_old_file_first() {
    let dir = TempDir::new("access-buffer-reopen");
    let buffered = dir.path().join("buffered.log");
    let lb = imbang(&buffered_conf(dir.path(), "buffer=64k")).await;
    get_logged(&lb, dir.path(), "/a/1", 1).await;
    assert_eq!(text(&buffered), "");
    let rotated = dir.path().join("buffered.log.1");
    std::fs::rename(&buffered, &rotated).unwrap();
    lb.server.snapshot().reopen_logs().unwrap();
    assert_eq!(
        text(&rotated),
        "/a/1\n",
        "written before the file was reopened"
    );
    assert!(buffered.exists(), "reopened");
    get_logged(&lb, dir.path(), "/a/2", 2).await;
    assert_eq!(text(&buffered), "", "buffered again");
    lb.server.snapshot().reopen_logs().unwrap();
    assert_eq!(text(&buffered), "/a/2\n");
    assert_eq!(text(&rotated), "/a/1\n");
}

#[tokio::test]
async fn a_reload_writes_the_buffers_of_the_configuration_it_replaces() {
    let dir = TempDir::new("access-buffer-reload");
    let buffered = dir.path().join("buffered.log");
    let lb = imbang(&buffered_conf(dir.path(), "buffer=64k")).await;
    get_logged(&lb, dir.path(), "/a/1", 1).await;
    get_logged(&lb, dir.path(), "/b/2", 2).await;
    assert_eq!(text(&buffered), "");
    // The new configuration has the same file and buffer, but its own (empty) buffers: the old
    // ones are written once no request uses the old configuration.
    lb.reload(&buffered_conf(dir.path(), "buffer=64k")).await;
    support::eventually("the old buffer", WAIT, || text(&buffered) == "/a/1\n/b/2\n").await;
    get_logged(&lb, dir.path(), "/a/3", 3).await;
    assert_eq!(text(&buffered), "/a/1\n/b/2\n");
}

#[tokio::test]
async fn gzip_writes_each_buffer_as_one_gzip_member() {
    let dir = TempDir::new("access-gzip");
    let buffered = dir.path().join("buffered.log");
    let lb = imbang(&buffered_conf(dir.path(), "gzip=9 buffer=12")).await;
    for (i, path) in ["/a/1", "/a/2", "/a/3"].into_iter().enumerate() {
        get_logged(&lb, dir.path(), path, i + 1).await;
    }
    let first = std::fs::read(&buffered).unwrap();
    assert_eq!(first[..2], [0x1f, 0x8b], "a gzip member");
    let mut plain = String::new();
    flate2::read::GzDecoder::new(&first[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, "/a/1\n/a/2\n");
    lb.server.snapshot().reopen_logs().unwrap();
    // Two members now; `zcat` reads them as one text.
    let all = std::fs::read(&buffered).unwrap();
    assert!(all.len() > first.len());
    let mut plain = String::new();
    flate2::read::MultiGzDecoder::new(&all[..])
        .read_to_string(&mut plain)
        .unwrap();
    assert_eq!(plain, "/a/1\n/a/2\n/a/3\n");
}

#[tokio::test]
async fn if_skips_the_line_when_the_condition_is_empty_or_zero() {
    let dir = TempDir::new("access-if");
    let cond = dir.path().join("cond.log");
    let witness = dir.path().join("witness.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{
           log_format u '$request_uri';
           server {{
             listen 127.0.0.1:0;
             location /arg {{ access_log {c} u if=$arg_log; access_log {w} u; return 200 ok; }}
             location /set {{
               set $loggable 0;
               access_log {c} u if=$loggable; access_log {w} u; return 200 ok;
               location /set/yes {{ set $loggable yes; return 200 ok; }}
             }}
           }}
         }}",
        c = cond.display(),
        w = witness.display(),
    ))
    .await;
    let paths = [
        "/arg?log=1",
        "/arg?log=0",
        "/arg",
        "/arg?log=",
        "/set",
        "/set/yes",
        "/arg?log=00",
    ];
    for path in paths {
        assert_eq!(lb.get(path).await.0, 200, "{path}");
    }
    support::eventually("every witness line", WAIT, || {
        lines(&witness).len() == paths.len()
    })
    .await;
    assert_eq!(lines(&cond), ["/arg?log=1", "/set/yes", "/arg?log=00"]);
}

#[tokio::test]
async fn an_unknown_variable_in_if_is_a_config_error_at_its_place() {
    let config = imbang::config::parse_str(
        "/t/imbang.conf",
        "events {}\nhttp { access_log off;\n server { location / { access_log x.log combined if=$nope; } } }",
        &support::options(),
    )
    .expect("parses");
    let error = imbang::server::Server::new(config, None, None)
        .err()
        .expect("compile error")
        .to_string();
    assert_eq!(error, "unknown \"nope\" variable in /t/imbang.conf:3:50");
}

/// The real binary with two workers, a buffered log and a witness log, after three requests
/// whose lines wait in the buffers; `stop` ends the process (QUIT or TERM).
async fn buffered_lines_survive(tag: &str, stop: impl FnOnce(&Path, &str, i32)) {
    let dir = TempDir::new(tag);
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let port = support::free_port();
    dir.write(
        "imbang.conf",
        &format!(
            "daemon off; worker_processes 2; pid logs/imbang.pid; error_log logs/error.log notice;
             events {{}}
             http {{
               log_format u '$request_uri';
               access_log logs/buffered.log u buffer=64k flush=1h;
               access_log logs/witness.log u;
               server {{ listen 127.0.0.1:{port}; location / {{ return 200 ok; }} }}
             }}"
        ),
    );
    let prefix = format!("{}/", dir.path().display());
    let mut guard = ImbangGuard::start(&prefix);
    let pid = wait_pid_file(&guard.pid_file, Duration::from_secs(10)).await;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    for path in ["/1", "/2", "/3"] {
        assert_eq!(request(addr, "GET", path, "x", None).await.0, 200);
    }
    let log = |name: &str| dir.path().join("logs").join(name);
    support::eventually("the witness lines", WAIT, || {
        lines(&log("witness.log")).len() == 3
    })
    .await;
    assert_eq!(
        text(&log("buffered.log")),
        "",
        "the lines wait in the buffers"
    );
    stop(dir.path(), &prefix, pid);
    let status = wait_child(guard.child.as_mut().unwrap(), Duration::from_secs(10)).await;
    assert!(status.success(), "{status}");
    let mut got = lines(&log("buffered.log"));
    got.sort(); // Two workers: each writes its own buffer.
    assert_eq!(got, ["/1", "/2", "/3"], "{}", text(&log("error.log")));
}

#[tokio::test]
async fn a_graceful_stop_writes_buffered_lines() {
    buffered_lines_survive("access-quit", |dir, prefix, _| {
        let out = std::process::Command::new(imbang_bin())
            .current_dir(dir)
            .args(["-p", prefix, "-c", "imbang.conf", "-s", "quit"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
    })
    .await;
}

#[tokio::test]
async fn a_fast_stop_writes_buffered_lines() {
    buffered_lines_survive("access-term", |_, _, pid| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_request_the_client_abandons_is_logged_499() {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new("access-499");
    let held = support::backend_with(
        "held",
        support::Behaviour::Hold,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let log = dir.path().join("a.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ log_format s '$status $request $upstream_addr';
           upstream h {{ server {}; }}
           server {{ listen 127.0.0.1:0; access_log {} s;
             location / {{ proxy_pass http://h; }} }} }}",
        held.addr,
        log.display()
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
    client
        .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    support::eventually("the peer holds the request", WAIT, || held.hits() == 1).await;
    drop(client);
    support::eventually("the 499 line", WAIT, || {
        lines(&log) == [format!("499 GET /slow HTTP/1.1 {}", held.addr)]
    })
    .await;
    held.release();
}

#[tokio::test]
async fn a_refused_head_is_logged_when_its_request_line_is_readable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("access-reject");
    let log = dir.path().join("a.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ log_format s '$status $request $body_bytes_sent';
           server {{ listen 127.0.0.1:0; access_log {} s; location / {{ return 200 ok; }} }} }}",
        log.display()
    ))
    .await;
    let raw: [&[u8]; 4] = [
        b"GET /both HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /gz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /bad HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n",
        // Not a request line: answered 400, but nothing true could be logged for it.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ];
    let mut sizes = Vec::new();
    for bytes in raw {
        let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let body = answer.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len());
        sizes.push((support::status(&answer), body));
    }
    assert_eq!(
        sizes.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [400, 501, 400, 400]
    );
    let want = [
        format!("400 GET /both HTTP/1.1 {}", sizes[0].1),
        format!("501 POST /gz HTTP/1.1 {}", sizes[1].1),
        format!("400 GET /bad HTTP/1.1 {}", sizes[2].1),
    ];
    support::eventually("three lines", WAIT, || lines(&log).len() >= 3).await;
    // A request that is served afterwards comes after them: the refused one wrote no line.
    lb.get("/fine").await;
    support::eventually("the served request's line", WAIT, || lines(&log).len() == 4).await;
    let got = lines(&log);
    assert_eq!(got[..3], want);
    assert!(got[3].starts_with("200 GET /fine HTTP/1.1"), "{got:?}");
}

#[tokio::test]
async fn a_head_that_times_out_is_logged_408_when_its_request_line_came() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("access-408");
    let log = dir.path().join("a.log");
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{ log_format s '$status $request $bytes_sent'; client_header_timeout 200ms;
           server {{ listen 127.0.0.1:0; access_log {} s; location / {{ return 200 ok; }} }} }}",
        log.display()
    ))
    .await;
    for partial in [&b"GET /slow HTTP/1.1\r\nHost: a\r\n"[..], b"GE"] {
        let mut s = tokio::net::TcpStream::connect(lb.addr).await.unwrap();
        s.write_all(partial).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut answer)).await;
        assert!(answer.is_empty(), "closed without an answer, as nginx");
    }
    lb.get("/fine").await;
    support::eventually("two lines", WAIT, || lines(&log).len() == 2).await;
    let got = lines(&log);
    assert_eq!(got[0], "408 GET /slow HTTP/1.1 0");
    assert!(got[1].starts_with("200 GET /fine HTTP/1.1"), "{got:?}");
}
