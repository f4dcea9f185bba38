//! server_name and location precedence, end to end through the proxy's request path.
mod support;

use support::{backend, imbang};

#[tokio::test]
async fn server_name_selection_follows_nginx() {
    let lb = imbang(
        "daemon off; error_log stderr crit;
         http {
           server { listen 127.0.0.1:0; server_name first; return 200 first; }
           server { listen 127.0.0.1:0; server_name example.com; return 200 exact; }
           server { listen 127.0.0.1:0; server_name *.example.com; return 200 leading; }
           server { listen 127.0.0.1:0; server_name *.a.example.com; return 200 longer-leading; }
           server { listen 127.0.0.1:0; server_name www.*; return 200 trailing; }
           server { listen 127.0.0.1:0; server_name ~^api\\d+\\.; return 200 regex; }
         }",
    )
    .await;
    let cases = [
        ("example.com", "exact"),
        ("EXAMPLE.com.", "exact"),
        ("example.com:8080", "exact"),
        ("x.example.com", "leading"),
        ("x.a.example.com", "longer-leading"),
        ("www.example.com", "leading"), // a leading wildcard beats a trailing one
        ("www.other.org", "trailing"),
        ("api7.other.org", "regex"),
        ("unknown.org", "first"), // no default_server: the first server of the address
    ];
    for (host, want) in cases {
        assert_eq!(
            lb.get_host(host, "/").await,
            (200, want.to_owned()),
            "host {host}"
        );
    }
    assert_eq!(lb.get_host("bad/host", "/").await.0, 400);
}

#[tokio::test]
async fn default_server_takes_unknown_hosts() {
    let lb = imbang(
        "daemon off; error_log stderr crit;
         http {
           server { listen 127.0.0.1:0; server_name a; return 200 a; }
           server { listen 127.0.0.1:0 default_server; server_name b; return 200 b; }
         }",
    )
    .await;
    assert_eq!(lb.get_host("zzz", "/").await.1, "b");
    assert_eq!(lb.get_host("a", "/").await.1, "a");
}

#[tokio::test]
async fn location_precedence_follows_nginx() {
    let lb = imbang(
        "daemon off; error_log stderr crit;
         http {
           server {
             listen 127.0.0.1:0;
             location = / { return 200 exact; }
             location / { return 200 prefix; }
             location ^~ /images/ { return 200 images; }
             location ~* \\.(gif|jpg)$ { return 200 regex; }
             location /docs/ {
               location ~ \\.pdf$ { return 200 nested-regex; }
               return 200 docs;
             }
           }
         }",
    )
    .await;
    let cases = [
        ("/", "exact"),
        ("/index.html", "prefix"),
        ("/images/a.gif", "images"),
        ("/x/a.JPG", "regex"),
        ("/docs/a.pdf", "nested-regex"),
        ("/docs/a.gif", "regex"),
        ("/docs/readme", "docs"),
        ("/a/../docs/readme", "docs"),
    ];
    for (path, want) in cases {
        assert_eq!(lb.get(path).await, (200, want.to_owned()), "path {path}");
    }
    assert_eq!(lb.get("/../etc").await.0, 400);
}

#[tokio::test]
async fn proxy_pass_uri_replaces_the_location_prefix() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit;
         http {{
           upstream app {{ server {}; }}
           server {{
             listen 127.0.0.1:0;
             location /api/ {{ proxy_pass http://app/; }}
             location /keep/ {{ proxy_pass http://app; }}
           }}
         }}",
        app.addr
    ))
    .await;
    assert_eq!(lb.get("/api/users?id=1").await.1, "app GET /users?id=1");
    assert_eq!(lb.get("/keep/a%20b?x").await.1, "app GET /keep/a%20b?x");
    assert_eq!(lb.get("/nothing").await.0, 404);
}

#[tokio::test]
async fn server_level_return_answers_before_locations() {
    let lb = imbang(
        "daemon off; error_log stderr crit;
         http {
           server {
             listen 127.0.0.1:0;
             return 301 http://$host$request_uri;
             location / { return 200 never; }
           }
         }",
    )
    .await;
    let (status, body) = lb.get_host("old.example", "/a?b").await;
    assert_eq!(status, 301);
    assert!(body.contains("301 Moved Permanently"), "{body}");
}

/// The patterns real configurations write that need PCRE's backtracking: hidden files but
/// `.well-known` (look-ahead), a repeated path segment (backreference) with its capture in `$1`.
#[tokio::test]
async fn look_around_and_backreferences_route_as_in_nginx() {
    let lb = imbang(
        r#"daemon off; error_log stderr crit;
         http {
           server {
             listen 127.0.0.1:0;
             location ~ /\.(?!well-known) { return 403; }
             location ~* ^/(\w+)/\1/ { return 200 "twice $1"; }
             location / { return 200 open; }
           }
         }"#,
    )
    .await;
    let cases = [
        ("/.git/config", 403, ""),
        ("/app/.env", 403, ""),
        ("/.well-known/acme-challenge/token", 200, "open"),
        ("/Shop/shop/item", 200, "twice Shop"),
        ("/shop/cart/item", 200, "open"),
    ];
    for (path, status, body) in cases {
        let (got, text) = lb.get(path).await;
        assert_eq!(got, status, "{path}");
        if status == 200 {
            assert_eq!(text, body, "{path}");
        }
    }
}
