//! The access log: nginx's `combined` by default, `log_format` with variables and escaping,
//! `access_log off`, upstream variables across a failover.
mod support;

use support::{TempDir, backend, imbang, request};

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
    support::eventually("the log lines", std::time::Duration::from_secs(5), written).await;
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
    support::eventually("the first line", std::time::Duration::from_secs(5), || {
        lines(&first) == ["/one 200"]
    })
    .await;
    lb.reload(&conf(&second)).await;
    assert_eq!(lb.get("/two").await.0, 200);
    support::eventually(
        "the line in the new file",
        std::time::Duration::from_secs(5),
        || lines(&second) == ["/two 200"],
    )
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
    support::eventually("two lines", std::time::Duration::from_secs(5), || {
        lines(&log).len() == 2
    })
    .await;
    assert_eq!(lines(&log), ["/l location", "/s server"]);
}
