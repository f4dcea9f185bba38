//! Captures of a `server_name` regex, as nginx gives them: its named groups are variables known
//! everywhere in the configuration (set when that name chooses the server), its groups are
//! `$1`..`$9` until a location or `rewrite`/`if` regex matches. Real requests to imbang, and the
//! same table asked of the machine's nginx (when it is installed).
mod support;

use std::net::SocketAddr;

use support::{TempDir, backend, free_port, imbang, start_nginx};

/// The `http {}` block both run. `{A}` is an address with several servers, `{B}` and `{C}` each
/// have one server, `{APP}` a backend that names itself and echoes the request line.
const SITE: &str = r#"
  access_log off;
  upstream api.backend { server {APP}; }
  server {
    listen 127.0.0.1:{A};
    server_name exact.test;
    return 200 "exact one=[$1] sub=[$sub] domain=[$domain] item=[$item]\n";
  }
  server {
    listen 127.0.0.1:{A};
    server_name ~^(?<sub>[a-z]+)\.example\.com$;
    location / { return 200 "sub=$sub one=$1\n"; }
    location ~ ^/re/(\w+) { return 200 "loc=$1 sub=$sub\n"; }
    location ~ \.txt$ { return 200 "txt=[$1] sub=$sub\n"; }
    location ~ ^/named/(?<item>[a-z]+)$ { return 200 "item=$item one=$1 sub=$sub\n"; }
    location ~ ^/over/(?<sub>[a-z]+)$ { return 200 "sub=$sub one=$1\n"; }
    location /err { error_page 418 = /target; return 418; }
    location ~ ^/rerr/(\w+) { error_page 418 = /target; return 418; }
    location /target { return 200 "target one=[$1] sub=[$sub]\n"; }
    location /proxy { proxy_pass http://$sub.backend; }
    location /if {
      if ($uri ~ ^/if/(.+)$) { return 200 "if=$1 sub=$sub\n"; }
      return 200 "no-if one=[$1]\n";
    }
  }
  server {
    listen 127.0.0.1:{A};
    server_name ~^(\d+)\.(\d+)\.num\.test$;
    return 200 "num=$1,$2 three=[$3]\n";
  }
  server {
    listen 127.0.0.1:{A};
    server_name ~^(?<sub>[0-9]+)x\.EXAMPLE\.com$;
    return 200 "caseless sub=$sub\n";
  }
  server {
    listen 127.0.0.1:{B};
    server_name ~^www\.(?<domain>.+)$;
    return 301 $scheme://$domain$request_uri;
  }
  server {
    listen 127.0.0.1:{C};
    server_name ~^(?<lone>[a-z]+)\.lone$ ~^nogroups\.lone$;
    return 200 "lone=[$lone] one=[$1]\n";
  }
"#;

/// (address, host, path, status, `Location`, body).
const EXPECTED: &[(char, &str, &str, u16, &str, &str)] = &[
    // An exact name: no captures, the named ones are empty.
    (
        'A',
        "exact.test",
        "/",
        200,
        "",
        "exact one=[] sub=[] domain=[] item=[]\n",
    ),
    // No name matches: the default server (the first), nothing captured.
    (
        'A',
        "nomatch.test",
        "/",
        200,
        "",
        "exact one=[] sub=[] domain=[] item=[]\n",
    ),
    // The regex name's groups, named and numbered, in a prefix location.
    ('A', "api.example.com", "/", 200, "", "sub=api one=api\n"),
    // A regex location's groups replace `$1`; `$sub` stays.
    (
        'A',
        "api.example.com",
        "/re/abc",
        200,
        "",
        "loc=abc sub=api\n",
    ),
    // A regex location without groups: `$1` is empty.
    (
        'A',
        "api.example.com",
        "/a.txt",
        200,
        "",
        "txt=[] sub=api\n",
    ),
    // A location regex's named groups are variables too; the last match sets a name.
    (
        'A',
        "api.example.com",
        "/named/abc",
        200,
        "",
        "item=abc one=abc sub=api\n",
    ),
    (
        'A',
        "api.example.com",
        "/over/xyz",
        200,
        "",
        "sub=xyz one=xyz\n",
    ),
    // An `error_page` redirect keeps the captures of the last regex that matched.
    (
        'A',
        "api.example.com",
        "/err",
        200,
        "",
        "target one=[api] sub=[api]\n",
    ),
    (
        'A',
        "api.example.com",
        "/rerr/abc",
        200,
        "",
        "target one=[abc] sub=[api]\n",
    ),
    // `proxy_pass` with the captured name.
    (
        'A',
        "api.example.com",
        "/proxy/x",
        200,
        "",
        "app GET /proxy/x",
    ),
    // An `if` regex replaces `$1`.
    (
        'A',
        "api.example.com",
        "/if/deep",
        200,
        "",
        "if=deep sub=api\n",
    ),
    // The host is lower-cased before matching.
    ('A', "API.Example.COM", "/", 200, "", "sub=api one=api\n"),
    // Numbered groups only; a group the regex does not have is empty.
    ('A', "12.34.num.test", "/", 200, "", "num=12,34 three=[]\n"),
    // An upper-case letter makes the regex caseless (the host is lower case).
    ('A', "7x.example.com", "/", 200, "", "caseless sub=7\n"),
    // The www redirect, on an address with one server.
    (
        'B',
        "www.foo.test",
        "/a/b?c=1",
        301,
        "http://foo.test/a/b?c=1",
        "",
    ),
    // nginx searches a lone server's names only if its last regex name has groups.
    ('C', "abc.lone", "/", 200, "", "lone=[] one=[]\n"),
];

/// [`SITE`] on `a` (a port, or `{listen}` for [`start_nginx`]) and the ports of `b` and `c`.
fn site(a: &str, [b, c]: [u16; 2], app: SocketAddr) -> String {
    SITE.replace("{A}", a)
        .replace("{B}", &b.to_string())
        .replace("{C}", &c.to_string())
        .replace("{APP}", &app.to_string())
}

/// Raw GET over a new connection: (status, `Location`, body).
async fn fetch(addr: SocketAddr, host: &str, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = support::status(head);
    let location = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("location")
                .then(|| value.trim().to_owned())
        })
        .unwrap_or_default();
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    // Only a 200's body is compared (the 301 page names the server).
    let body = if status == 200 { body } else { String::new() };
    (status, location, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Asks every request of [`EXPECTED`]; the differences, one per line.
async fn differences(ports: [u16; 3], who: &str) -> Vec<String> {
    let mut out = Vec::new();
    for &(at, host, path, status, location, body) in EXPECTED {
        let port = ports[usize::from(at as u8 - b'A')];
        let seen = fetch(SocketAddr::from(([127, 0, 0, 1], port)), host, path).await;
        let want = (status, location.to_owned(), body.to_owned());
        if seen != want {
            out.push(format!(
                "{at} {host} {path}:\n  {who}: {seen:?}\n  want:  {want:?}"
            ));
        }
    }
    out
}

#[tokio::test]
async fn server_name_captures_answer_as_nginx_does() {
    let app = backend("app").await;
    let ports = [free_port(), free_port(), free_port()];
    let _lb = imbang(&format!(
        "daemon off; error_log stderr crit; events {{}} http {{ {} }}",
        site(&ports[0].to_string(), [ports[1], ports[2]], app.addr)
    ))
    .await;
    let wrong = differences(ports, "imbang").await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The table the test above holds imbang to is what the machine's nginx answers.
#[tokio::test]
async fn nginx_answers_the_same_configuration_as_the_table_says() {
    let app = backend("app").await;
    let others = [free_port(), free_port()];
    let dir = TempDir::new("server-name-captures-nginx");
    let http = site("{listen}", others, app.addr);
    let Some((_nginx, addr)) = start_nginx(&dir, &http).await else {
        return;
    };
    let ports = [addr.port(), others[0], others[1]];
    let wrong = differences(ports, "nginx").await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Named groups of a `server_name` or location regex are variables anywhere in the
/// configuration, as in nginx; a name nothing declares is still an error.
#[test]
fn named_groups_are_declared_for_the_whole_configuration() {
    let conf = |name: &str| {
        format!(
            "events {{}} http {{
               server {{
                 listen 127.0.0.1:1; server_name ~^www\\.(?<domain>.+)$;
                 location ~ ^/(?<rest>.*)$ {{ }}
               }}
               server {{ listen 127.0.0.1:2; return 200 ${name}; }}
             }}"
        )
    };
    assert_eq!(support::compile(&conf("domain")), Ok(()));
    assert_eq!(support::compile(&conf("rest")), Ok(()));
    let error = support::compile(&conf("dommain")).unwrap_err();
    assert!(error.contains("unknown \"dommain\" variable"), "{error}");
}
