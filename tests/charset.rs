//! `charset`, `charset_types`, `source_charset` (nginx's charset filter): the Content-Type
//! clients receive from proxied, returned and imbang's own responses. Each expectation was
//! checked against nginx 1.22 with the same configuration and upstream.
mod support;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

/// Answers with the Content-Type named by the last path segment.
async fn app() -> std::net::SocketAddr {
    support::serve_hyper(|req: Request<Incoming>| async move {
        let ct = match req.uri().path().rsplit('/').next().unwrap_or("") {
            "html" => Some("text/html"),
            "withcs" => Some("text/html; charset=ISO-8859-1"),
            "json" => Some("application/json"),
            "param" => Some("text/plain; format=flowed"),
            "upper" => Some("Text/HTML"),
            _ => None,
        };
        let mut res = Response::new(Full::new(Bytes::from_static(b"ok")));
        if let Some(ct) = ct {
            res.headers_mut()
                .insert("content-type", ct.parse().unwrap());
        }
        Ok::<_, std::convert::Infallible>(res)
    })
    .await
}

/// The Content-Type the client gets for `GET path` ("" when none).
async fn content_type(addr: std::net::SocketAddr, path: &str) -> String {
    support::response_head(addr, path)
        .await
        .lines()
        .filter_map(|l| l.split_once(": "))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn charset_is_added_where_nginx_adds_it() {
    let app = app().await;
    let lb = support::imbang(&format!(
        "daemon off; error_log stderr crit; events {{}}
         http {{ access_log off; default_type text/plain;
           server {{ listen 127.0.0.1:0; charset utf-8;
             location /p/ {{ proxy_pass http://{app}/; }}
             location /star/ {{ proxy_pass http://{app}/; charset_types *; }}
             location /js/ {{ proxy_pass http://{app}/; charset_types application/json; }}
             location /same/ {{ proxy_pass http://{app}/; source_charset UTF-8; }}
             location = /ret {{ return 200 \"hi\"; }}
             location = /r302 {{ return 302 /x; }}
             location = /r307 {{ return 307 /x; }}
             location = /off {{ charset off; return 200 \"hi\"; }}
           }}
         }}"
    ))
    .await;
    for (path, want) in [
        ("/p/html", "text/html; charset=utf-8"),
        // The upstream's own charset stays (override_charset off).
        ("/p/withcs", "text/html; charset=ISO-8859-1"),
        ("/p/json", "application/json"),
        // Other parameters: nginx appends nothing.
        ("/p/param", "text/plain; format=flowed"),
        ("/p/upper", "Text/HTML; charset=utf-8"),
        ("/p/none", ""),
        ("/star/json", "application/json; charset=utf-8"),
        // text/html stays among the types listed.
        ("/js/json", "application/json; charset=utf-8"),
        ("/js/html", "text/html; charset=utf-8"),
        ("/same/html", "text/html; charset=utf-8"),
        ("/ret", "text/plain; charset=utf-8"),
        // Not on 301 and 302 (nginx leaves redirects alone), on the others.
        ("/r302", "text/html"),
        ("/r307", "text/html; charset=utf-8"),
        ("/off", "text/plain"),
        // imbang's own 404 page.
        ("/nothing", "text/html; charset=utf-8"),
    ] {
        assert_eq!(content_type(lb.addr, path).await, want, "{path}");
    }
}

#[test]
fn recoding_is_refused_as_nginx_refuses_it_without_a_charset_map() {
    let err = support::compile(
        "events {} http { charset utf-8; server { location / { source_charset koi8-r; return 200; } \
         location /b { source_charset koi8-r; return 200; } } }",
    )
    .unwrap_err();
    assert!(
        err.contains("no \"charset_map\" between the charsets \"koi8-r\" and \"utf-8\" in /t/imbang.conf:1:55"),
        "{err}"
    );
    for (conf, want) in [
        (
            "events {} http { charset_map koi8-r utf-8 { C0 D18E; } }",
            "\"charset_map\" directive is not supported by imbang yet (imbang does not recode between charsets)",
        ),
        (
            "events {} http { override_charset on; }",
            "\"override_charset on\" is not supported by imbang yet",
        ),
        (
            "events {} http { charset $c; }",
            "variables in \"charset\" are not supported by imbang yet",
        ),
    ] {
        let err = support::compile(conf).unwrap_err();
        assert!(err.contains(want), "{conf}: {err}");
    }
}
