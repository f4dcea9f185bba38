//! `set $var value` at server and location level, used by return, proxy_set_header and logs.
mod support;

use support::{backend, imbang};

#[tokio::test]
async fn set_variables_flow_into_return_and_headers() {
    let app = backend("app").await;
    let lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; upstream app {{ server {}; }}
           server {{ listen 127.0.0.1:0;
             set $who world;
             location /a {{ set $greeting \"hello $who\"; set $greeting \"$greeting!\"; return 200 $greeting; }}
             location /b {{ return 200 \"[$greeting] [$who]\"; }}
             location /c {{ set $tag c-$arg_id; proxy_pass http://app; proxy_set_header X-Tag $tag; }}
           }}
         }}",
        app.addr
    ))
    .await;
    assert_eq!(lb.get("/a").await.1, "hello world!");
    // A variable set only in another location is empty here; the server level's is set.
    assert_eq!(lb.get("/b").await.1, "[] [world]");
    assert_eq!(lb.get("/c?id=7").await, (200, "app GET /c?id=7".to_owned()));
}

#[tokio::test]
async fn numbered_captures_come_from_the_regex_location() {
    let lb = imbang(
        "daemon off; error_log stderr crit; events {}
         http { access_log off;
           server { listen 127.0.0.1:0;
             set $server_level [$1];
             location ~ ^/n/(\\d+)(x)?$ { set $n $1; return 200 \"$server_level $n $2$10\"; }
             location ~* ^/CI/([a-z]+)$ { return 200 $1; }
             location /prefix/ { return 200 \"[$1]\"; }
           }
         }",
    )
    .await;
    let cases = [
        // `$10` is `$1` then `0`; a group that took no part is empty; the server level's `set`
        // ran before any location regex.
        ("/n/7", "[] 7 70"),
        ("/n/7x", "[] 7 x70"),
        ("/ci/AbC", "AbC"),
        ("/prefix/z", "[]"),
    ];
    for (path, want) in cases {
        assert_eq!(lb.get(path).await, (200, want.to_owned()), "{path}");
    }
}

#[test]
fn set_errors_are_nginx_s() {
    let parse = support::compile;
    assert_eq!(
        parse("http { server { set who x; } }").unwrap_err(),
        "invalid variable name \"who\" in /t/imbang.conf:1:21"
    );
    assert_eq!(
        parse("http { access_log off; server { set $host x; } }").unwrap_err(),
        "the duplicate \"host\" variable in /t/imbang.conf:1:37"
    );
    assert_eq!(
        parse("http { access_log off; server { set $a $nope; } }").unwrap_err(),
        "unknown \"nope\" variable in /t/imbang.conf:1:37"
    );
}
