//! NGINX Plus's API (`api;`), read-only: real backends, imbang in-process, JSON as a client
//! reads it.
mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Lb, backend, free_port, imbang, request};

async fn get_json(lb: &Lb, path: &str) -> (u16, Value) {
    let (status, body) = lb.get(path).await;
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body:?}"));
    (status, value)
}

#[tokio::test]
async fn upstreams_show_each_peer_with_its_state_load_failures_and_health_checks() {
    let a = backend("a").await;
    let b = backend("b").await;
    let (dead, dead2) = (free_port(), free_port());
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ server {a} max_conns=5; server {b}; server 127.0.0.1:{dead} backup; }}
           upstream other {{ server 127.0.0.1:{dead2} fail_timeout=30s; server {a}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; health_check interval=50ms; }}
             location /other {{ proxy_pass http://other; }}
             location /api {{ api; }}
           }}
         }}",
        a = a.addr,
        b = b.addr,
    );
    let lb = imbang(&conf).await;
    // The backup refuses connections: its first check makes it unhealthy.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, app) = get_json(&lb, "/api/9/http/upstreams/app").await;
        if app["peers"][2]["state"] == "unhealthy"
            && app["peers"][0]["health_checks"]["checks"] != 0
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{app:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        assert_eq!(lb.get("/").await.0, 200);
    }
    // The dead first server of `other`: refused, retried on a; out for its fail_timeout.
    assert_eq!(lb.get("/other").await.0, 200);

    let (status, all) = get_json(&lb, "/api/9/http/upstreams").await;
    assert_eq!(status, 200);
    let names: Vec<&String> = all.as_object().unwrap().keys().collect();
    assert_eq!(names, ["app", "other"]);
    let app = &all["app"]["peers"];
    assert_eq!(app[0]["server"], a.addr.to_string());
    assert_eq!(app[0]["name"], a.addr.to_string());
    assert_eq!(
        (
            &app[0]["id"],
            &app[0]["backup"],
            &app[0]["weight"],
            &app[0]["max_conns"]
        ),
        (
            &Value::from(0),
            &Value::from(false),
            &Value::from(1),
            &Value::from(5)
        )
    );
    assert_eq!(
        (&app[0]["state"], &app[0]["requests"], &app[0]["active"]),
        (&Value::from("up"), &Value::from(2), &Value::from(0))
    );
    assert_eq!(app[1]["requests"], 2);
    let responses = &app[0]["responses"];
    assert_eq!(
        (&responses["2xx"], &responses["5xx"], &responses["total"]),
        (&Value::from(2), &Value::from(0), &Value::from(2))
    );
    assert!(app[1].get("max_conns").is_none(), "{app:#}");
    let checks = &app[0]["health_checks"];
    assert!(checks["checks"].as_u64().unwrap() >= 1, "{checks}");
    assert_eq!(
        (&checks["fails"], &checks["last_passed"]),
        (&Value::from(0), &Value::from(true))
    );
    let backup = &app[2];
    assert_eq!(
        (&backup["backup"], &backup["state"]),
        (&Value::from(true), &Value::from("unhealthy"))
    );
    assert_eq!(backup["health_checks"]["unhealthy"], 1);
    assert_eq!(backup["health_checks"]["last_passed"], false);
    assert_eq!(backup["requests"], 0);
    let other = &all["other"]["peers"];
    assert_eq!(
        (
            &other[0]["state"],
            &other[0]["requests"],
            &other[0]["fails"],
            &other[0]["unavail"]
        ),
        (
            &Value::from("unavail"),
            &Value::from(1),
            &Value::from(1),
            &Value::from(1)
        )
    );
    assert!(
        other[0].get("health_checks").is_none(),
        "not checked: {other:#}"
    );
    assert_eq!(
        (&other[1]["state"], &other[1]["requests"]),
        (&Value::from("up"), &Value::from(1))
    );
    assert_eq!(other[0]["responses"]["total"], 0, "refused: no response");
    assert!(
        other[0].get("header_time").is_none(),
        "never answered: {other:#}"
    );
    assert!(app[0]["header_time"].as_u64().is_some(), "{app:#}");
    assert!(
        app[0]["response_time"].as_u64().unwrap() < 10_000,
        "{app:#}"
    );
    assert_eq!(
        (&other[0]["sent"], &other[0]["received"]),
        (&Value::from(0), &Value::from(0))
    );
    // Two `GET /` heads out; two heads with `a` as their bodies back.
    let (sent, received) = (
        app[0]["sent"].as_u64().unwrap(),
        app[0]["received"].as_u64().unwrap(),
    );
    assert!(sent > 2 * "GET / HTTP/1.0\r\n".len() as u64, "{sent}");
    assert!(
        received > 2 * "HTTP/1.1 200 OK\r\n".len() as u64,
        "{received}"
    );
    assert_eq!(other[1]["responses"]["2xx"], 1);
    // Pooled keep-alive connections to the group's peers.
    assert!(all["app"]["keepalive"].as_u64().unwrap() >= 1, "{all:#}");

    let (_, servers) = get_json(&lb, "/api/9/http/upstreams/other/servers").await;
    assert_eq!(servers[0]["server"], format!("127.0.0.1:{dead2}"));
    assert_eq!(
        (
            &servers[0]["fail_timeout"],
            &servers[0]["max_fails"],
            &servers[0]["slow_start"]
        ),
        (&Value::from("30s"), &Value::from(1), &Value::from("0s"))
    );
    let (_, one) = get_json(&lb, "/api/9/http/upstreams/other/servers/1").await;
    assert_eq!(one["server"], a.addr.to_string());
}

#[tokio::test]
async fn versions_endpoints_nginx_and_errors_in_the_plus_apis_shapes() {
    let a = backend("a").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{ upstream app {{ server {a}; }}
           server {{ listen 127.0.0.1:0;
             location / {{ proxy_pass http://app; }}
             location /api/ {{ api write=off; }} }} }}",
        a = a.addr
    );
    let lb = imbang(&conf).await;
    assert_eq!(
        get_json(&lb, "/api/").await,
        (200, serde_json::json!([1, 2, 3, 4, 5, 6, 7, 8, 9]))
    );
    assert_eq!(
        get_json(&lb, "/api/9/").await,
        (
            200,
            serde_json::json!([
                "nginx",
                "processes",
                "connections",
                "slabs",
                "http",
                "ssl",
                "workers"
            ])
        )
    );
    assert_eq!(
        get_json(&lb, "/api/7/http").await,
        (
            200,
            serde_json::json!(["requests", "server_zones", "location_zones", "upstreams"])
        )
    );

    let (status, nginx) = get_json(&lb, "/api/9/nginx").await;
    assert_eq!(status, 200);
    assert_eq!(nginx["pid"], std::process::id());
    assert_eq!(
        (&nginx["build"], &nginx["generation"]),
        (&Value::from("imbang"), &Value::from(0))
    );
    assert_eq!(nginx["address"], "127.0.0.1");
    let loaded = nginx["load_timestamp"].as_str().unwrap().to_owned();
    assert!(loaded.ends_with('Z') && loaded.len() == 24, "{loaded}");
    lb.reload(&conf).await;
    let (_, nginx) = get_json(&lb, "/api/9/nginx").await;
    assert_eq!(nginx["generation"], 1);
    assert!(nginx["load_timestamp"].as_str().unwrap() >= loaded.as_str());

    let errors = [
        ("/api/10/nginx", 404, "UnknownVersion"),
        ("/api/x", 404, "UnknownVersion"),
        ("/api/9/stream", 404, "PathNotFound"),
        ("/api/9/http/upstreams/nope", 404, "UpstreamNotFound"),
        ("/api/9/http/upstreams/app/servers/3", 404, "ServerNotFound"),
        ("/api/9/http/upstreams/app/peers", 404, "PathNotFound"),
    ];
    for (path, want, code) in errors {
        let (status, body) = get_json(&lb, path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (want, &Value::from(code)),
            "{path}: {body}"
        );
        assert_eq!(body["error"]["status"], want);
    }
    // Read-only: writes are refused as Plus refuses them with `write=off`.
    let (status, body) = request(
        lb.addr,
        "DELETE",
        "/api/9/http/upstreams/app/servers/0",
        "x",
        None,
    )
    .await;
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (405, &Value::from("MethodDisabled"))
    );
    // The dashboard, beside the API it reads (relative paths: `9/nginx`, `9/http/upstreams`).
    let (status, page) = lb.get("/api/dashboard.html").await;
    assert_eq!(status, 200);
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains(r#"const base = "9/";"#) && page.contains(r#"get("http/upstreams")"#));
    // The JSON is sent as such.
    let (status, text) = lb.get("/api/9/nginx").await;
    assert_eq!(status, 200);
    assert!(text.ends_with("}\n"), "{text:?}");
}

/// `status_zone` on servers and locations: `/http/server_zones` and `/http/location_zones`
/// count each request in its server's zone and in the zone of the location it ends in (nested
/// locations inherit it; `status_zone off` leaves it).
#[tokio::test]
async fn status_zones_count_the_requests_of_their_servers_and_locations() {
    let ok = backend("ok").await;
    let five = support::backend_with(
        "five",
        support::Behaviour::Status(503),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{
           server {{ listen 127.0.0.1:0; status_zone front;
             location /a {{ status_zone zone_a; proxy_pass http://{ok};
               location /a/inner {{ proxy_pass http://{ok}; }}
               location /a/off {{ status_zone off; return 200; }}
             }}
             location /b {{ status_zone zone_b; proxy_pass http://{five}; }}
             location /c {{ return 444; }}
           }}
           server {{ listen 127.0.0.1:0; server_name api; location /api/ {{ api; }} }}
         }}",
        ok = ok.addr,
        five = five.addr,
    );
    let lb = imbang(&conf).await;
    for path in ["/a", "/a", "/a/inner", "/a/off", "/b"] {
        let want = if path == "/b" { 503 } else { 200 };
        assert_eq!(lb.get(path).await.0, want, "{path}");
    }
    let closed = support::try_request(lb.addr, "GET", "/c", "localhost", None).await;
    assert!(closed.is_err(), "444 closes without an answer: {closed:?}");
    let lb = &lb;
    let api = |path: &'static str| async move {
        let (status, body) = lb.get_host("api", path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str::<Value>(&body).unwrap()
    };
    let servers = api("/api/9/http/server_zones").await;
    assert_eq!(
        servers,
        serde_json::json!({ "front": {
            "processing": 0, "requests": 6, "discarded": 1,
            "responses": { "1xx": 0, "2xx": 4, "3xx": 0, "4xx": 0, "5xx": 1, "total": 5 },
        }})
    );
    let locations = api("/api/9/http/location_zones").await;
    let names: Vec<&String> = locations.as_object().unwrap().keys().collect();
    assert_eq!(names, ["zone_a", "zone_b"]);
    assert_eq!(locations["zone_a"]["requests"], 3, "/a twice and /a/inner");
    assert_eq!(locations["zone_a"]["responses"]["2xx"], 3);
    assert_eq!(locations["zone_b"]["responses"]["5xx"], 1);
    assert_eq!(
        api("/api/9/http/location_zones/zone_b").await["requests"],
        1
    );
    // `fields=`: of each zone (a collection), or of one object; empty leaves the names.
    assert_eq!(
        api("/api/9/http/server_zones?fields=requests,discarded").await,
        serde_json::json!({ "front": { "requests": 6, "discarded": 1 } })
    );
    assert_eq!(
        api("/api/9/http/location_zones?fields=").await,
        serde_json::json!({ "zone_a": {}, "zone_b": {} })
    );
    let nginx = api("/api/9/nginx?fields=pid,version").await;
    let keys: Vec<&String> = nginx.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["pid", "version"]);
    let (status, body) = lb.get_host("api", "/api/9/http/server_zones/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"ServerZoneNotFound\""), "{body}");
}
