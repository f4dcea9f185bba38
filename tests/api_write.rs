//! NGINX Plus's API writes (`api write=on`): servers added, changed and removed in a group with a
//! `zone` while imbang runs, seen by the traffic at once; Plus's error objects; and `state FILE`
//! keeping the servers across a reload and a restart of the real binary.
mod support;

use std::time::Duration;

use serde_json::{Value, json};

use support::{ImbangGuard, TempDir, backend, free_port, imbang, request, wait_accepting};

const WAIT: Duration = Duration::from_secs(10);

/// One API request: `(status, JSON body)`.
async fn api(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (status, answer) = request(addr, method, path, "localhost", text.as_deref()).await;
    let value = serde_json::from_str(&answer).unwrap_or(Value::String(answer));
    (status, value)
}

/// The backends that answered `n` requests to `/`, by name, in order.
async fn names(addr: std::net::SocketAddr, n: usize) -> Vec<String> {
    let mut v = Vec::new();
    for _ in 0..n {
        let (status, body) = request(addr, "GET", "/", "localhost", None).await;
        assert_eq!(status, 200, "{body}");
        v.push(
            body.split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    v
}

fn conf(upstream: &str) -> String {
    format!(
        "events {{}} http {{ access_log off;
           {upstream}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; }}
             location /api/ {{ api write=on; }}
             location /ro/ {{ api; }}
           }}
         }}"
    )
}

#[tokio::test]
async fn servers_added_drained_and_removed_take_effect_at_once() {
    let a = backend("a").await;
    let b = backend("b").await;
    let lb = imbang(&conf(&format!(
        "upstream app {{ zone app 64k; server {}; }}",
        a.addr
    )))
    .await;
    assert_eq!(names(lb.addr, 2).await, ["a", "a"]);

    // POST: b joins; the answer is the server with its id.
    let (status, added) = api(
        lb.addr,
        "POST",
        "/api/9/http/upstreams/app/servers",
        Some(&json!({ "server": b.addr.to_string(), "weight": 1, "max_fails": 3 })),
    )
    .await;
    assert_eq!(status, 201, "{added}");
    assert_eq!(added["id"], 1);
    assert_eq!(added["server"], b.addr.to_string());
    assert_eq!(added["max_fails"], 3);
    let mut seen = names(lb.addr, 4).await;
    seen.sort();
    assert_eq!(seen, ["a", "a", "b", "b"]);
    let (_, listed) = api(lb.addr, "GET", "/api/9/http/upstreams/app/servers", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let (_, group) = api(lb.addr, "GET", "/api/9/http/upstreams/app", None).await;
    assert_eq!(group["peers"][1]["id"], 1, "{group}");

    // PATCH drain: b takes no new requests and shows as draining.
    let (status, patched) = api(
        lb.addr,
        "PATCH",
        "/api/9/http/upstreams/app/servers/1",
        Some(&json!({ "drain": true })),
    )
    .await;
    assert_eq!(
        (status, &patched["drain"]),
        (200, &json!(true)),
        "{patched}"
    );
    assert_eq!(names(lb.addr, 4).await, ["a", "a", "a", "a"]);
    let (_, group) = api(lb.addr, "GET", "/api/9/http/upstreams/app", None).await;
    assert_eq!(group["peers"][1]["state"], "draining", "{group}");

    // PATCH down on a, b back up: only b.
    api(
        lb.addr,
        "PATCH",
        "/api/9/http/upstreams/app/servers/1",
        Some(&json!({ "drain": false })),
    )
    .await;
    let (status, _) = api(
        lb.addr,
        "PATCH",
        "/api/9/http/upstreams/app/servers/0",
        Some(&json!({ "down": true })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(names(lb.addr, 3).await, ["b", "b", "b"]);

    // DELETE a: the answer is the servers left; ids stay as they were.
    let (status, left) = api(
        lb.addr,
        "DELETE",
        "/api/9/http/upstreams/app/servers/0",
        None,
    )
    .await;
    assert_eq!(status, 200, "{left}");
    assert_eq!(
        left.as_array()
            .map(|l| l.iter().map(|s| s["id"].clone()).collect::<Vec<_>>()),
        Some(vec![json!(1)])
    );
    assert_eq!(names(lb.addr, 2).await, ["b", "b"]);
    let (status, gone) = api(lb.addr, "GET", "/api/9/http/upstreams/app/servers/0", None).await;
    assert_eq!(
        (status, &gone["error"]["code"]),
        (404, &json!("ServerNotFound"))
    );
    // A server added now gets a new id, never 0 again.
    let (_, again) = api(
        lb.addr,
        "POST",
        "/api/9/http/upstreams/app/servers",
        Some(&json!({ "server": a.addr.to_string() })),
    )
    .await;
    assert_eq!(again["id"], 2, "{again}");
}

#[tokio::test]
async fn bad_writes_get_plus_s_errors_and_change_nothing() {
    let a = backend("a").await;
    let lb = imbang(&conf(&format!(
        "upstream app {{ zone app 64k; server {}; }}
         upstream fixed {{ server {}; }}",
        a.addr, a.addr
    )))
    .await;
    let post = |body: &'static str| {
        let addr = lb.addr;
        async move {
            let (status, text) = request(
                addr,
                "POST",
                "/api/9/http/upstreams/app/servers",
                "localhost",
                Some(body),
            )
            .await;
            let v: Value = serde_json::from_str(&text).unwrap();
            (
                status,
                v["error"]["code"].as_str().unwrap_or_default().to_owned(),
                v,
            )
        }
    };
    for (body, status, code) in [
        ("{\"server\": ", 415, "JsonError"),
        ("[1,2]", 415, "JsonError"),
        ("{\"weight\": 2}", 400, "UpstreamConfFormatError"),
        (
            "{\"server\": \"127.0.0.1:9\", \"colour\": \"red\"}",
            400,
            "UpstreamConfFormatError",
        ),
        (
            "{\"server\": \"127.0.0.1:9\", \"weight\": 0}",
            400,
            "UpstreamBadWeight",
        ),
        (
            "{\"server\": \"127.0.0.1:9\", \"weight\": \"x\"}",
            400,
            "UpstreamConfFormatError",
        ),
        (
            "{\"server\": \"127.0.0.1:9\", \"fail_timeout\": \"soon\"}",
            400,
            "UpstreamBadFailTimeout",
        ),
        (
            "{\"server\": \"127.0.0.1:9\", \"down\": {\"a\": 1}}",
            400,
            "UpstreamConfFormatError",
        ),
        (
            "{\"server\": \"not an address\"}",
            400,
            "UpstreamBadAddress",
        ),
    ] {
        let (got, got_code, v) = post(body).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{body}: {v}");
        assert_eq!(v["error"]["status"], status);
        assert!(
            v["error"]["text"].is_string() && v["href"].is_string(),
            "{v}"
        );
    }
    // The same address twice: 409.
    let (status, code, _) = {
        let body = format!("{{\"server\": \"{}\"}}", a.addr);
        let (s, t) = request(
            lb.addr,
            "POST",
            "/api/9/http/upstreams/app/servers",
            "localhost",
            Some(&body),
        )
        .await;
        let v: Value = serde_json::from_str(&t).unwrap();
        (s, v["error"]["code"].clone(), v)
    };
    assert_eq!((status, code), (409, json!("EntryExists")));
    // Nothing above changed the group.
    let (_, listed) = api(lb.addr, "GET", "/api/9/http/upstreams/app/servers", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // A group without `zone` is static; an unknown group, server or id.
    let cases = [
        (
            "POST",
            "/api/9/http/upstreams/fixed/servers",
            Some(json!({"server": "127.0.0.1:9"})),
            400,
            "UpstreamStatic",
        ),
        (
            "POST",
            "/api/9/http/upstreams/nope/servers",
            Some(json!({"server": "127.0.0.1:9"})),
            404,
            "UpstreamNotFound",
        ),
        (
            "PATCH",
            "/api/9/http/upstreams/app/servers/7",
            Some(json!({"down": true})),
            404,
            "ServerNotFound",
        ),
        (
            "PATCH",
            "/api/9/http/upstreams/app/servers/x",
            Some(json!({"down": true})),
            400,
            "UpstreamBadServerId",
        ),
        (
            "PATCH",
            "/api/9/http/upstreams/app/servers/0",
            Some(json!({"server": "127.0.0.1:9"})),
            400,
            "UpstreamServerImmutable",
        ),
        (
            "DELETE",
            "/api/9/http/upstreams/app/servers/7",
            None,
            404,
            "ServerNotFound",
        ),
        ("DELETE", "/api/9/nginx", None, 405, "MethodDisabled"),
        (
            "POST",
            "/api/9/http/upstreams/app/servers/0",
            Some(json!({})),
            405,
            "MethodDisabled",
        ),
        // The read-only API (`api;`) refuses every write, as Plus with `write=off`.
        (
            "POST",
            "/ro/9/http/upstreams/app/servers",
            Some(json!({"server": "127.0.0.1:9"})),
            405,
            "MethodDisabled",
        ),
        (
            "DELETE",
            "/ro/9/http/upstreams/app/servers/0",
            None,
            405,
            "MethodDisabled",
        ),
    ];
    for (method, path, body, status, code) in cases {
        let (got, v) = api(lb.addr, method, path, body.as_ref()).await;
        assert_eq!(
            (got, &v["error"]["code"]),
            (status, &json!(code)),
            "{method} {path}: {v}"
        );
    }
    let (_, listed) = api(lb.addr, "GET", "/api/9/http/upstreams/app/servers", None).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["down"], false);
}

#[tokio::test]
async fn the_state_file_keeps_the_servers_across_reload_and_restart() {
    let a = backend("a").await;
    let b = backend("b").await;
    let dir = TempDir::new("api-state");
    std::fs::create_dir_all(dir.path().join("logs")).unwrap();
    let state = dir.path().join("app.state");
    std::fs::write(&state, format!("server {};\n", a.addr)).unwrap();
    let port = free_port();
    let text = format!(
        "daemon off; error_log logs/error.log notice; pid logs/imbang.pid; events {{}}
         http {{ access_log off;
           upstream app {{ zone app 64k; state {}; }}
           server {{ listen 127.0.0.1:{port};
             location / {{ proxy_pass http://app; }}
             location /api/ {{ api write=on; }}
           }}
         }}",
        state.display()
    );
    dir.write("imbang.conf", &text);
    let prefix = format!("{}/", dir.path().display());
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    {
        let _imbang = ImbangGuard::start(&prefix);
        wait_accepting(addr, WAIT).await;
        assert_eq!(names(addr, 2).await, ["a", "a"]);
        let (status, _) = api(
            addr,
            "POST",
            "/api/9/http/upstreams/app/servers",
            Some(&json!({ "server": b.addr.to_string(), "weight": 3 })),
        )
        .await;
        assert_eq!(status, 201);
        let (status, _) = api(
            addr,
            "PATCH",
            "/api/9/http/upstreams/app/servers/0",
            Some(&json!({"down": true})),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            format!("server {} down;\nserver {} weight=3;\n", a.addr, b.addr)
        );
        // A reload (SIGHUP) reads the file again: the same servers.
        let pid = support::wait_pid_file(&dir.path().join("logs/imbang.pid"), WAIT).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        support::eventually("reloaded", WAIT, || {
            std::fs::read_to_string(dir.path().join("logs/error.log"))
                .is_ok_and(|l| l.contains("reconfiguring done"))
        })
        .await;
        let (_, listed) = api(addr, "GET", "/api/9/http/upstreams/app/servers", None).await;
        assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
        assert_eq!(names(addr, 3).await, ["b", "b", "b"]);
    }
    // A restart: the file's servers again.
    let _imbang = ImbangGuard::start(&prefix);
    wait_accepting(addr, WAIT).await;
    let (_, listed) = api(addr, "GET", "/api/9/http/upstreams/app/servers", None).await;
    let servers: Vec<(Value, Value)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["server"].clone(), s["down"].clone()))
        .collect();
    assert_eq!(
        servers,
        [
            (json!(a.addr.to_string()), json!(true)),
            (json!(b.addr.to_string()), json!(false))
        ]
    );
    assert_eq!(names(addr, 2).await, ["b", "b"]);

    // `server` lines beside `state`, or `state` without `zone`: configuration errors.
    for bad in [
        format!(
            "upstream app {{ zone app 64k; state {}; server {}; }}",
            state.display(),
            a.addr
        ),
        format!("upstream app {{ state {}; }}", state.display()),
    ] {
        let err = support::compile(&format!("events {{}} http {{ {bad} server {{ listen 127.0.0.1:0; location / {{ proxy_pass http://app; }} }} }}")).unwrap_err();
        assert!(err.contains("state"), "{err}");
    }
}

/// Health checks probe a server the API added, as they probe the configured ones.
#[tokio::test]
async fn health_checks_probe_servers_the_api_added() {
    let a = backend("a").await;
    let dead = support::free_port();
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off;
           upstream app {{ zone app 64k; server {}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; health_check interval=1s fails=1; }}
             location /api/ {{ api write=on; }}
           }}
         }}",
        a.addr
    ))
    .await;
    let (status, _) = api(
        lb.addr,
        "POST",
        "/api/9/http/upstreams/app/servers",
        Some(&json!({ "server": format!("127.0.0.1:{dead}") })),
    )
    .await;
    assert_eq!(status, 201);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, group) = api(lb.addr, "GET", "/api/9/http/upstreams/app", None).await;
        if group["peers"][1]["state"] == "unhealthy" {
            assert!(
                group["peers"][1]["health_checks"]["fails"].as_u64() >= Some(1),
                "{group}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never checked: {group}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And traffic avoids it.
    assert_eq!(names(lb.addr, 3).await, ["a", "a", "a"]);
}

/// `DELETE /api/N/http/upstreams/NAME`: Plus's reset of the group's counters (204), on any
/// group, only with `write=on`.
#[tokio::test]
async fn delete_on_a_group_resets_its_counters() {
    let a = backend("a").await;
    let lb = imbang(&conf(&format!("upstream app {{ server {}; }}", a.addr))).await;
    names(lb.addr, 3).await;
    let (_, group) = api(lb.addr, "GET", "/api/9/http/upstreams/app", None).await;
    assert_eq!(group["peers"][0]["requests"], 3, "{group}");
    let (status, _) = api(lb.addr, "DELETE", "/ro/9/http/upstreams/app", None).await;
    assert_eq!(status, 405);
    let (status, body) = request(lb.addr, "DELETE", "/api/9/http/upstreams/app", "x", None).await;
    assert_eq!((status, body.as_str()), (204, ""));
    let (_, group) = api(lb.addr, "GET", "/api/9/http/upstreams/app", None).await;
    let peer = &group["peers"][0];
    assert_eq!(
        (
            &peer["requests"],
            &peer["responses"]["total"],
            &peer["received"]
        ),
        (&json!(0), &json!(0), &json!(0)),
        "{group}"
    );
}
