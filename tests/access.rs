//! `allow` / `deny` (nginx's access module): clients from different loopback addresses, real
//! backends, imbang in-process.
mod support;

use std::net::IpAddr;

use support::{backend, get_from, imbang};

#[tokio::test]
async fn the_first_rule_that_covers_the_client_decides_and_return_comes_before_it() {
    let a = backend("a").await;
    let conf = format!(
        "daemon off; error_log stderr crit;
         http {{ upstream app {{ server {a}; }}
           server {{ listen 127.0.0.1:0;
             allow 127.0.0.2; deny 127.0.0.0/8;
             location / {{ proxy_pass http://app; }}
             location /open {{ allow all; proxy_pass http://app; }}
             location /ret {{ return 200 r; }}
             location /api {{ api; }}
           }} }}",
        a = a.addr
    );
    let lb = imbang(&conf).await;
    let (one, two): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let cases = [
        (one, "/", 403),
        (two, "/", 200),
        (one, "/open", 200),
        (one, "/ret", 200),
        (one, "/api/", 403),
        (two, "/api/", 200),
    ];
    for (ip, path, want) in cases {
        let (status, body) = get_from(ip, lb.addr, path).await;
        assert_eq!(status, want, "{ip} {path}: {body}");
        if want == 403 {
            assert!(body.contains("403 Forbidden"), "{body}");
        }
    }
    assert_eq!(a.hits(), 2, "denied requests never reach the backend");
}
