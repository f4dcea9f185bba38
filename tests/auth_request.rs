//! `auth_request` and `auth_request_set` (ngx_http_auth_request_module) with `error_page`, as
//! single sign-on puts a login in front of an app: Authelia's and oauth2-proxy's documented
//! nginx configurations, run as they are written, against a small auth service written here
//! (200 or 202 with the user's headers for a good session cookie, 401 otherwise) and an app
//! that records what reaches it. Asserted on the wire: an allowed request reaches the app with
//! the user's headers, any other gets the documented redirect and never reaches the app; the
//! subrequest carries the client's headers but no body, as a GET, to an `internal` location
//! a client cannot reach; over HTTP/1.1, HTTP/2 and TLS.
mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use support::{TempDir, imbang, serve_hyper};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a test server received: method, target, header fields (lower-case names), body.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    headers: http::HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn record(req: Request<Incoming>, log: &Log) -> Seen {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        headers: parts.headers,
        body,
    };
    log.lock().unwrap().push(seen.clone());
    seen
}

fn has_cookie(h: &http::HeaderMap, cookie: &str) -> bool {
    h.get_all("cookie")
        .iter()
        .any(|v| v.to_str().unwrap_or("").split("; ").any(|c| c == cookie))
}

/// The auth service: Authelia's `/api/authz/auth-request` (200 with `Remote-*` for the
/// session cookie `authelia_session=good`, else 401 with the portal's URL in `Location`) and
/// oauth2-proxy's `/oauth2/auth` (202 with `X-Auth-Request-*` for `_oauth2_proxy=good`, else
/// 401), its sign-in page, and `/status/N` answering N.
async fn auth_service() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let kept = log.clone();
    let addr = serve_hyper(move |req: Request<Incoming>| {
        let log = kept.clone();
        async move {
            let seen = record(req, &log).await;
            let h = &seen.headers;
            let path = seen.target.split('?').next().unwrap_or("").to_owned();
            let mut res = Response::builder();
            let body = match path.as_str() {
                "/api/authz/auth-request" if has_cookie(h, "authelia_session=good") => {
                    res = res
                        .status(200)
                        .header("Remote-User", "alice")
                        .header("Remote-Groups", "admins,dev")
                        .header("Remote-Name", "Alice A")
                        .header("Remote-Email", "alice@example.com");
                    ""
                }
                "/api/authz/auth-request" => {
                    let url = h
                        .get("x-original-url")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    res = res.status(401).header(
                        "Location",
                        format!("https://auth.example.com/?rd={}", url.replace('?', "%3F")),
                    );
                    "401 Unauthorized"
                }
                "/oauth2/auth" if has_cookie(h, "_oauth2_proxy=good") => {
                    res = res
                        .status(202)
                        .header("X-Auth-Request-User", "bob")
                        .header("X-Auth-Request-Email", "bob@example.com")
                        .header("X-Auth-Request-Access-Token", "tok123");
                    ""
                }
                "/oauth2/auth" => {
                    res = res
                        .status(401)
                        .header("WWW-Authenticate", "Bearer realm=\"oauth2\"");
                    "Unauthorized"
                }
                "/oauth2/sign_in" => {
                    res = res.status(200);
                    "sign in page"
                }
                p if p.starts_with("/status/") => {
                    res = res.status(p[8..].parse::<u16>().unwrap_or(500));
                    "status"
                }
                _ => {
                    res = res.status(404);
                    "no such endpoint"
                }
            };
            Ok::<_, std::convert::Infallible>(
                res.body(Full::new(Bytes::from_static(body.as_bytes())))
                    .unwrap(),
            )
        }
    })
    .await;
    (addr, log)
}

/// The app behind the login: answers 200 `app <target>` and records each request.
async fn app() -> (SocketAddr, Log) {
    let log: Log = Arc::default();
    let kept = log.clone();
    let addr = serve_hyper(move |req: Request<Incoming>| {
        let log = kept.clone();
        async move {
            let seen = record(req, &log).await;
            let body = format!(
                "app {} {} body={}",
                seen.method,
                seen.target,
                seen.body.len()
            );
            Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
        }
    })
    .await;
    (addr, log)
}

/// One HTTP/1.1 request on a new connection (`Connection: close`): status, head, body.
async fn raw(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (support::status(head), head.to_owned(), body.to_owned())
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

/// The value of the field `name` in a raw head (first one), if any.
fn field<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Authelia's nginx integration as its documentation gives it: the `authelia-location.conf`
/// snippet (the virtual endpoint), the `proxy.conf` lines that matter here, and the
/// `authelia-authrequest.conf` snippet (modern method) in the protected location.
fn authelia_conf(app: SocketAddr, authelia: SocketAddr) -> String {
    format!(
        r#"events {{}}
http {{
  access_log off;
  error_log stderr crit;
  server {{
    listen 127.0.0.1:0;
    server_name app.example.com;

    set $upstream http://{app};

    location / {{
      ## proxy.conf
      proxy_set_header Host $host;
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-URI $request_uri;
      proxy_set_header X-Forwarded-Ssl on;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Real-IP $remote_addr;
      client_body_buffer_size 128k;
      proxy_next_upstream error timeout invalid_header http_500 http_502 http_503;
      proxy_redirect  http://  $scheme://;
      proxy_http_version 1.1;
      proxy_cache_bypass $cookie_session;
      proxy_no_cache $cookie_session;
      proxy_buffers 64 256k;
      send_timeout 5m;
      proxy_read_timeout 360;
      proxy_send_timeout 360;
      proxy_connect_timeout 360;

      ## authelia-authrequest.conf
      ## Send a subrequest to Authelia to verify if the user is authenticated and has permission to access the resource.
      auth_request /internal/authelia/authz;

      ## Save the upstream metadata response headers from Authelia to variables.
      auth_request_set $user $upstream_http_remote_user;
      auth_request_set $groups $upstream_http_remote_groups;
      auth_request_set $name $upstream_http_remote_name;
      auth_request_set $email $upstream_http_remote_email;

      ## Inject the metadata response headers from the variables into the request made to the backend.
      proxy_set_header Remote-User $user;
      proxy_set_header Remote-Groups $groups;
      proxy_set_header Remote-Email $email;
      proxy_set_header Remote-Name $name;

      ## Modern Method: Set the $redirection_url to the Location header of the response to the Authz endpoint.
      auth_request_set $redirection_url $upstream_http_location;

      ## Modern Method: When there is a 401 response code from the authz endpoint redirect to the $redirection_url.
      error_page 401 =302 $redirection_url;

      proxy_pass $upstream;
    }}

    ## authelia-location.conf
    set $upstream_authelia http://{authelia}/api/authz/auth-request;

    ## Virtual endpoint created by nginx to forward auth requests.
    location /internal/authelia/authz {{
      ## Essential Proxy Configuration
      internal;
      proxy_pass $upstream_authelia;

      ## Headers
      ## The headers starting with X-* are required.
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";

      ## Basic Proxy Configuration
      proxy_pass_request_body off;
      proxy_next_upstream error timeout invalid_header http_500 http_502 http_503; # Timeout if the real server is dead
      proxy_redirect http:// $scheme://;
      proxy_http_version 1.1;
      proxy_cache_bypass $cookie_session;
      proxy_no_cache $cookie_session;
      proxy_buffers 4 32k;
      client_body_buffer_size 128k;

      ## Advanced Proxy Configuration
      send_timeout 5m;
      proxy_read_timeout 240;
      proxy_send_timeout 240;
      proxy_connect_timeout 240;
    }}
  }}
}}"#
    )
}

#[tokio::test]
async fn authelia_s_documented_config_lets_a_session_in_and_redirects_the_rest_to_the_portal() {
    let (app, app_log) = app().await;
    let (authelia, auth_log) = auth_service().await;
    let lb = imbang(&authelia_conf(app, authelia)).await;

    // No session: 302 to the portal, with the URL asked for; the app sees nothing.
    let (status, head, _) = raw(lb.addr, &get("/private/page?x=1", "app.example.com", "")).await;
    assert_eq!(status, 302, "{head}");
    assert_eq!(
        field(&head, "location"),
        Some("https://auth.example.com/?rd=http://app.example.com/private/page%3Fx=1"),
        "{head}"
    );
    assert!(app_log.lock().unwrap().is_empty());
    {
        let asked = auth_log.lock().unwrap();
        assert_eq!(asked.len(), 1);
        let sub = &asked[0];
        assert_eq!(sub.method, "GET");
        assert_eq!(sub.target, "/api/authz/auth-request");
        assert_eq!(sub.headers["x-original-method"], "GET");
        assert_eq!(
            sub.headers["x-original-url"],
            "http://app.example.com/private/page?x=1"
        );
        assert_eq!(sub.headers["x-forwarded-for"], "127.0.0.1");
    }

    // A session: the app gets the request, with the user's headers from Authelia's answer.
    let (status, head, body) = raw(
        lb.addr,
        &get(
            "/private/page?x=1",
            "app.example.com",
            "Cookie: theme=dark; authelia_session=good\r\n",
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, "app GET /private/page?x=1 body=0");
    {
        let got = app_log.lock().unwrap();
        assert_eq!(got.len(), 1);
        let h = &got[0].headers;
        assert_eq!(h["remote-user"], "alice");
        assert_eq!(h["remote-groups"], "admins,dev");
        assert_eq!(h["remote-name"], "Alice A");
        assert_eq!(h["remote-email"], "alice@example.com");
        assert_eq!(h["x-forwarded-uri"], "/private/page?x=1");
    }

    // A POST with a body: the subrequest has the client's headers, but is a GET without the
    // body (and without its length); the app gets the body. Its method is still the POST's.
    let post = "POST /form HTTP/1.1\r\nHost: app.example.com\r\nCookie: authelia_session=good\r\n\
                Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, _, body) = raw(lb.addr, post).await;
    assert_eq!(status, 200);
    assert_eq!(body, "app POST /form body=5");
    {
        let asked = auth_log.lock().unwrap();
        let sub = asked.last().unwrap();
        assert_eq!(sub.method, "GET");
        assert_eq!(sub.headers["x-original-method"], "POST");
        assert_eq!(sub.headers["content-type"], "text/plain");
        assert!(
            sub.headers.get("content-length").is_none(),
            "{:?}",
            sub.headers
        );
        assert!(sub.body.is_empty());
    }
    // A POST without a session never reaches the app (its body is not sent anywhere).
    let post = "POST /form HTTP/1.1\r\nHost: app.example.com\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let (status, _, _) = raw(lb.addr, post).await;
    assert_eq!(status, 302);
    assert_eq!(app_log.lock().unwrap().len(), 2);

    // The virtual endpoint is `internal`: a client asking for it gets 404, and neither it nor
    // a subrequest reaches the auth service.
    let before = auth_log.lock().unwrap().len();
    let (status, _, _) = raw(
        lb.addr,
        &get("/internal/authelia/authz", "app.example.com", ""),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(auth_log.lock().unwrap().len(), before);
}

/// oauth2-proxy's documented nginx configuration (its "Configuring for use with the Nginx
/// `auth_request` directive" section), with `sign_in` as `@oauth2_signin` (current) or
/// `error_page 401 = /oauth2/sign_in` (older releases).
fn oauth2_proxy_conf(app: SocketAddr, proxy: SocketAddr, sign_in: &str) -> String {
    let named = if sign_in.starts_with('@') {
        "# Named location for handling OAuth2 sign-in redirects
    # This ensures the browser receives a proper 302 redirect that it will follow
    location @oauth2_signin {
      return 302 /oauth2/sign_in?rd=$scheme://$host$request_uri;
    }"
    } else {
        ""
    };
    format!(
        r#"events {{}}
http {{
  access_log off;
  error_log stderr crit;
  upstream backend {{ server {app}; }}
  server {{
    listen 127.0.0.1:0;
    server_name app.example.com;

    location /oauth2/ {{
      proxy_pass http://{proxy};
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Auth-Request-Redirect $request_uri;
      # or, if you are handling multiple domains:
      # proxy_set_header X-Auth-Request-Redirect $scheme://$host$request_uri;
    }}
    location = /oauth2/auth {{
      proxy_pass http://{proxy};
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-Uri $request_uri;
      # nginx auth_request includes headers but not body
      proxy_set_header Content-Length "";
      proxy_pass_request_body off;
    }}

    {named}

    location / {{
      auth_request /oauth2/auth;
      error_page 401 = {sign_in};

      # pass information via X-User and X-Email headers to backend,
      # requires running with --set-xauthrequest flag
      auth_request_set $user   $upstream_http_x_auth_request_user;
      auth_request_set $email  $upstream_http_x_auth_request_email;
      proxy_set_header X-User  $user;
      proxy_set_header X-Email $email;

      # if you enabled --pass-access-token, this will pass the token to the backend
      auth_request_set $token  $upstream_http_x_auth_request_access_token;
      proxy_set_header X-Access-Token $token;

      # if you enabled --cookie-refresh, this is needed for it to work with auth_request
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;

      proxy_pass http://backend/;
      # or "root /path/to/site;" or "fastcgi_pass ..." etc
    }}
  }}
}}"#
    )
}

#[tokio::test]
async fn oauth2_proxy_s_documented_config_with_a_named_sign_in_location() {
    let (app, app_log) = app().await;
    let (proxy, proxy_log) = auth_service().await;
    let lb = imbang(&oauth2_proxy_conf(app, proxy, "@oauth2_signin")).await;

    let (status, head, _) = raw(lb.addr, &get("/dash?tab=2", "app.example.com", "")).await;
    assert_eq!(status, 302, "{head}");
    let location = field(&head, "location").unwrap();
    assert!(
        location.ends_with("/oauth2/sign_in?rd=http://app.example.com/dash?tab=2"),
        "{location}"
    );
    assert!(app_log.lock().unwrap().is_empty());
    // The sign-in page itself is reachable (not behind auth_request).
    let (status, _, body) = raw(lb.addr, &get("/oauth2/sign_in?rd=x", "app.example.com", "")).await;
    assert_eq!((status, body.as_str()), (200, "sign in page"));
    {
        let asked = proxy_log.lock().unwrap();
        assert_eq!(asked[0].target, "/oauth2/auth");
        assert_eq!(asked[0].headers["x-forwarded-uri"], "/dash?tab=2");
        assert_eq!(asked[0].headers["host"], "app.example.com");
    }

    let (status, head, body) = raw(
        lb.addr,
        &get(
            "/dash?tab=2",
            "app.example.com",
            "Cookie: _oauth2_proxy=good\r\n",
        ),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(body, "app GET /dash?tab=2 body=0");
    // An empty `$auth_cookie` adds no Set-Cookie (nginx's add_header skips empty values).
    assert_eq!(field(&head, "set-cookie"), None, "{head}");
    let got = app_log.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers["x-user"], "bob");
    assert_eq!(got[0].headers["x-email"], "bob@example.com");
    assert_eq!(got[0].headers["x-access-token"], "tok123");
}

#[tokio::test]
async fn oauth2_proxy_s_older_config_shows_the_sign_in_page_in_place() {
    let (app, app_log) = app().await;
    let (proxy, _) = auth_service().await;
    let lb = imbang(&oauth2_proxy_conf(app, proxy, "/oauth2/sign_in")).await;
    let (status, head, body) = raw(lb.addr, &get("/dash", "app.example.com", "")).await;
    // `=`: the sign-in page's own status.
    assert_eq!((status, body.as_str()), (200, "sign in page"), "{head}");
    assert!(app_log.lock().unwrap().is_empty());
}

/// The subrequest's status: 2xx allows, 401 and 403 pass through (a 401 with the auth
/// service's `WWW-Authenticate`), anything else is a 500; `auth_request off` below turns it off.
#[tokio::test]
async fn statuses_of_the_subrequest_as_nginx_reads_them() {
    let (app, app_log) = app().await;
    let (auth, _) = auth_service().await;
    let dead = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let conf = format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0;
             location /s/ {{ internal; proxy_pass http://{auth}/status/; }}
             location /oauth2/auth {{ internal; proxy_pass http://{auth}; }}
             location /ok {{ auth_request /s/204; proxy_pass http://{app}; }}
             location /forbidden {{ auth_request /s/403; proxy_pass http://{app}; }}
             location /teapot {{ auth_request /s/418; proxy_pass http://{app}; }}
             location /redirect {{ auth_request /s/302; proxy_pass http://{app}; }}
             location /bearer {{ auth_request /oauth2/auth; proxy_pass http://{app};
               location /bearer/open {{ auth_request off; proxy_pass http://{app}; }} }}
             location /missing {{ auth_request /nowhere; proxy_pass http://{app}; }}
             location /down {{ auth_request /dead; proxy_pass http://{app}; }}
             location = /dead {{ internal; proxy_pass http://{dead}; }}
           }} }}"
    );
    // (path, status): a 404 from the subrequest (no location for it) and a 502 (the auth
    // service down) are 500s for the request, as any status but 2xx, 401 and 403.
    let want = [
        ("/ok", 200),
        ("/forbidden", 403),
        ("/teapot", 500),
        ("/redirect", 500),
        ("/bearer", 401),
        ("/bearer/open", 200),
        ("/missing", 500),
        ("/down", 500),
    ];
    let ask = |addr: SocketAddr| async move {
        let mut got = Vec::new();
        for (path, _) in want {
            let (status, head, _) = raw(addr, &get(path, "t", "")).await;
            got.push((
                path,
                status,
                field(&head, "www-authenticate").map(str::to_owned),
            ));
        }
        got
    };
    let lb = imbang(&conf).await;
    let mine = ask(lb.addr).await;
    for ((path, status, challenge), (_, want)) in mine.iter().zip(want) {
        assert_eq!(*status, want, "{path}");
        let bearer = (*path == "/bearer").then(|| "Bearer realm=\"oauth2\"".to_owned());
        assert_eq!(*challenge, bearer, "{path}");
    }
    let reached: Vec<String> = app_log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(reached, ["/ok", "/bearer/open"]);

    let dir = TempDir::new("auth-request-statuses");
    let Some((_nginx, addr)) = support::start_nginx(&dir, &nginx_http(&conf)).await else {
        return;
    };
    assert_eq!(mine, ask(addr).await, "imbang, nginx");
}

/// The same Authelia setup over TLS with HTTP/2 and HTTP/1.1: the subrequest sees the
/// connection's variables (`$scheme` https) and the stream's headers.
#[tokio::test]
async fn over_tls_and_http2_the_subrequest_sees_the_connection_s_variables() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use support::tls::{Ca, client_config, connect};

    let (app, app_log) = app().await;
    let (authelia, auth_log) = auth_service().await;
    let ca = Ca::new("auth CA");
    let dir = TempDir::new("auth-request-tls");
    let pem = ca.leaf(&["app.example.com"], false);
    let cert = dir.write("app.crt", &pem.cert);
    let key = dir.write("app.key", &pem.key);
    let conf = authelia_conf(app, authelia).replace(
        "listen 127.0.0.1:0;",
        &format!(
            "listen 127.0.0.1:0 ssl; http2 on; ssl_certificate {}; ssl_certificate_key {};",
            cert.display(),
            key.display()
        ),
    );
    let lb = imbang(&conf).await;

    // HTTP/2 over TLS.
    let config = Arc::new(client_config(&ca, &["h2"]));
    let stream = connect(config, lb.addr, "app.example.com").await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = |cookie: Option<&str>| {
        let mut r = Request::get("https://app.example.com/h2?y=2");
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.body(Full::new(Bytes::new())).unwrap()
    };
    let res = sender.send_request(ask(None)).await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "https://auth.example.com/?rd=https://app.example.com/h2%3Fy=2"
    );
    let res = sender
        .send_request(ask(Some("authelia_session=good")))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"app GET /h2?y=2 body=0");
    assert_eq!(app_log.lock().unwrap()[0].headers["remote-user"], "alice");
    assert_eq!(
        auth_log.lock().unwrap()[1].headers["x-original-url"],
        "https://app.example.com/h2?y=2"
    );

    // HTTP/1.1 over TLS.
    let config = Arc::new(client_config(&ca, &["http/1.1"]));
    let stream = connect(config, lb.addr, "app.example.com").await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/h1")
        .header("host", "app.example.com")
        .header("cookie", "authelia_session=good")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(app_log.lock().unwrap().len(), 2);
}

/// The subrequest writes no access-log line (nginx's `log_subrequest off`); the main request
/// writes one, with the user `auth_request_set` gave.
#[tokio::test]
async fn only_the_main_request_is_logged_with_the_user_auth_request_set_gave() {
    let (app, _) = app().await;
    let (authelia, _) = auth_service().await;
    let dir = TempDir::new("auth-request-log");
    let log = dir.path().join("access.log");
    let conf = authelia_conf(app, authelia).replace(
        "access_log off;",
        &format!(
            "log_format who '$request_uri $status user=$user'; access_log {} who;",
            log.display()
        ),
    );
    let lb = imbang(&conf).await;
    raw(
        lb.addr,
        &get("/a", "app.example.com", "Cookie: authelia_session=good\r\n"),
    )
    .await;
    raw(lb.addr, &get("/b", "app.example.com", "")).await;
    let want = "/a 200 user=alice\n/b 302 user=-\n";
    support::eventually("two log lines", std::time::Duration::from_secs(5), || {
        std::fs::read_to_string(&log).unwrap_or_default() == want
    })
    .await;
}

/// The `http` block's inside of an imbang test config, for the machine's nginx (its port in
/// `{listen}`).
fn nginx_http(conf: &str) -> String {
    let inner = conf
        .trim()
        .strip_prefix("events {}")
        .unwrap()
        .trim()
        .strip_prefix("http {")
        .unwrap()
        .strip_suffix('}')
        .unwrap();
    inner.replace("listen 127.0.0.1:0;", "listen 127.0.0.1:{listen};")
}

/// Status, `Location`, `WWW-Authenticate`, and the body of a 200.
type Answer = (u16, Option<String>, Option<String>, Option<String>);

/// What a client and the two servers behind saw, with the serving port taken out of
/// absolute redirects (imbang's and nginx's differ).
#[derive(Debug, PartialEq)]
struct Observed {
    answers: Vec<Answer>,
    app: Vec<Vec<String>>,
    auth: Vec<Vec<String>>,
}

async fn observe(addr: SocketAddr, requests: &[String], app: &Log, auth: &Log) -> Observed {
    app.lock().unwrap().clear();
    auth.lock().unwrap().clear();
    let port = format!(":{}", addr.port());
    let mut answers = Vec::new();
    for r in requests {
        let (status, head, body) = raw(addr, r).await;
        let f = |name| field(&head, name).map(|v| v.replace(&port, ""));
        let body = (status == 200).then_some(body);
        answers.push((status, f("location"), f("www-authenticate"), body));
        // Set-Cookie must not be there for an empty `$auth_cookie`, in both.
        assert_eq!(field(&head, "set-cookie"), None);
    }
    let summary = |log: &Log, names: &[&str]| -> Vec<Vec<String>> {
        log.lock()
            .unwrap()
            .iter()
            .map(|s| {
                let mut v = vec![s.method.clone(), s.target.clone(), s.body.len().to_string()];
                for n in names {
                    let got: Vec<&str> = s
                        .headers
                        .get_all(*n)
                        .iter()
                        .map(|v| v.to_str().unwrap())
                        .collect();
                    v.push(format!("{n}: {}", got.join(" | ")));
                }
                v
            })
            .collect()
    };
    Observed {
        answers,
        app: summary(
            app,
            &[
                "remote-user",
                "remote-groups",
                "remote-email",
                "remote-name",
                "x-user",
                "x-email",
                "x-access-token",
                "content-length",
            ],
        ),
        auth: summary(
            auth,
            &[
                "host",
                "x-original-method",
                "x-original-url",
                "x-forwarded-for",
                "x-forwarded-uri",
                "x-real-ip",
                "content-length",
                "content-type",
                "cookie",
            ],
        ),
    }
}

/// Authelia's and oauth2-proxy's documented configs, the same requests sent to imbang and to
/// the machine's nginx 1.22: what the client gets (status, `Location`, `WWW-Authenticate`,
/// the app's answer) and what the app and the auth service receive are the same.
#[tokio::test]
async fn the_documented_configs_answer_as_nginx_s_do() {
    let (app, app_log) = app().await;
    let (auth, auth_log) = auth_service().await;
    let requests = [
        get("/p?x=1", "app.example.com", ""),
        get("/p?x=1", "app.example.com", "Cookie: authelia_session=good\r\n"),
        get("/p", "app.example.com", "Cookie: _oauth2_proxy=good\r\n"),
        "POST /f HTTP/1.1\r\nHost: app.example.com\r\nCookie: authelia_session=good; _oauth2_proxy=good\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            .to_owned(),
        // (Without a body: an `error_page` to a URI passes none in imbang; nginx passes the
        // refused request's body on to it.)
        "DELETE /f HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n".to_owned(),
        get("/internal/authelia/authz", "app.example.com", ""),
        get("/oauth2/sign_in?rd=/p", "app.example.com", ""),
    ];
    for conf in [
        authelia_conf(app, auth),
        oauth2_proxy_conf(app, auth, "@oauth2_signin"),
        oauth2_proxy_conf(app, auth, "/oauth2/sign_in"),
    ] {
        let lb = imbang(&conf).await;
        let mine = observe(lb.addr, &requests, &app_log, &auth_log).await;
        let dir = TempDir::new("auth-request-nginx");
        let Some((_nginx, addr)) = support::start_nginx(&dir, &nginx_http(&conf)).await else {
            return;
        };
        let nginx = observe(addr, &requests, &app_log, &auth_log).await;
        assert_eq!(
            mine.answers, nginx.answers,
            "answers (imbang, nginx) with\n{conf}"
        );
        assert_eq!(mine.app, nginx.app, "the app's requests (imbang, nginx)");
        assert_eq!(
            mine.auth, nginx.auth,
            "the auth service's requests (imbang, nginx)"
        );
    }
}

/// Authelia's legacy method: the portal's URL written in the config, with the URL asked for in
/// `rd` (`set` instead of the third-party `set_escape_uri`, as Authelia's docs say).
#[tokio::test]
async fn authelia_s_legacy_method_redirects_to_the_written_portal() {
    let (app, app_log) = app().await;
    let (authelia, _) = auth_service().await;
    let conf = authelia_conf(app, authelia).replace(
        "error_page 401 =302 $redirection_url;",
        "set $target_url $scheme://$http_host$request_uri;
         error_page 401 =302 https://auth.example.com/?rd=$target_url;",
    );
    let lb = imbang(&conf).await;
    let (status, head, _) = raw(lb.addr, &get("/x?a=b", "app.example.com", "")).await;
    assert_eq!(status, 302);
    assert_eq!(
        field(&head, "location"),
        Some("https://auth.example.com/?rd=http://app.example.com/x?a=b")
    );
    assert!(app_log.lock().unwrap().is_empty());
}

/// `auth_delay`: a 401 waits that long (a 2xx does not).
#[tokio::test]
async fn auth_delay_holds_back_a_401() {
    let (app, _) = app().await;
    let (auth, _) = auth_service().await;
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0; auth_delay 300ms;
             location = /oauth2/auth {{ internal; proxy_pass http://{auth}; }}
             location / {{ auth_request /oauth2/auth; proxy_pass http://{app}; }} }} }}"
    ))
    .await;
    let start = tokio::time::Instant::now();
    let (status, _, _) = raw(lb.addr, &get("/", "t", "")).await;
    assert_eq!(status, 401);
    assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    let (status, _, _) = raw(lb.addr, &get("/", "t", "Cookie: _oauth2_proxy=good\r\n")).await;
    assert_eq!(status, 200);
}

/// The auth service's connections are kept alive across subrequests (`keepalive` in its
/// `upstream`), as nginx keeps them when the answer has no body to read.
#[tokio::test]
async fn subrequests_reuse_kept_alive_connections_to_the_auth_service() {
    let (app, _) = app().await;
    let count = support::Connections::default();
    let auth = support::serve_hyper_counted(
        |_req: Request<Incoming>| async {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .status(204)
                    .header("Remote-User", "alice")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        },
        count.clone(),
    )
    .await;
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           upstream authz {{ server {auth}; keepalive 4; }}
           server {{ listen 127.0.0.1:0;
             location = /authz {{ internal; proxy_pass http://authz; proxy_http_version 1.1;
               proxy_set_header Connection \"\"; }}
             location / {{ auth_request /authz; auth_request_set $user $upstream_http_remote_user;
               add_header X-User $user; proxy_pass http://{app}; }} }} }}"
    ))
    .await;
    for _ in 0..5 {
        let (status, head, _) = raw(lb.addr, &get("/", "t", "")).await;
        assert_eq!(status, 200);
        assert_eq!(field(&head, "x-user"), Some("alice"));
    }
    assert_eq!(count.accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// The auth location may answer itself (`if` and `return`), a common token check; its
/// variables are the main request's (`$http_x_token`), except `$args` and `$arg_*`, which are
/// the subrequest's (none here), as in nginx.
#[tokio::test]
async fn an_auth_location_that_answers_with_return() {
    let (app, app_log) = app().await;
    let conf = format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0;
             location = /token {{ internal;
               if ($http_x_token = \"s3\") {{ return 204; }}
               if ($arg_key = \"k\") {{ return 200; }}
               return 401; }}
             location / {{ auth_request /token; proxy_pass http://{app}; }} }} }}"
    );
    let asks = [
        ("/a", "", 401),
        ("/b", "X-Token: s3\r\n", 200),
        ("/c?key=k", "", 401),
        ("/d?key=x", "X-Token: no\r\n", 401),
    ];
    let run = |addr: SocketAddr| async move {
        let mut got = Vec::new();
        for (path, extra, _) in asks {
            got.push(raw(addr, &get(path, "t", extra)).await.0);
        }
        got
    };
    let lb = imbang(&conf).await;
    let mine = run(lb.addr).await;
    assert_eq!(mine, asks.map(|a| a.2));
    let reached: Vec<String> = app_log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(reached, ["/b"]);
    let dir = TempDir::new("auth-request-return");
    let Some((_nginx, addr)) = support::start_nginx(&dir, &nginx_http(&conf)).await else {
        return;
    };
    assert_eq!(mine, run(addr).await, "imbang, nginx");
}

/// `satisfy any` with `allow`/`deny`, `auth_basic` and `auth_request`: the first that allows
/// lets the request in without asking the later ones (no subrequest for an allowed address or
/// a good password); if none does, 401 with every challenge. Beside nginx.
#[tokio::test]
async fn satisfy_any_asks_the_checks_in_nginx_s_order() {
    let (app, _) = app().await;
    let (auth, auth_log) = auth_service().await;
    let dir = TempDir::new("auth-request-any");
    let file = dir.write("htpasswd", "carol:{PLAIN}pw\n");
    let conf = format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0;
             location = /oauth2/auth {{ internal; proxy_pass http://{auth}; }}
             location / {{ satisfy any; allow 127.0.0.2; deny all;
               auth_basic \"Staff\"; auth_basic_user_file {};
               auth_request /oauth2/auth; proxy_pass http://{app}; }} }} }}",
        file.display()
    );
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let good = format!("Authorization: Basic {}\r\n", b64("carol:pw"));
    let bad = format!("Authorization: Basic {}\r\n", b64("carol:no"));
    let asks: Vec<(&str, String)> = vec![
        ("127.0.0.2", String::new()),
        ("127.0.0.1", good.clone()),
        ("127.0.0.1", "Cookie: _oauth2_proxy=good\r\n".to_owned()),
        ("127.0.0.1", bad.clone()),
        ("127.0.0.1", String::new()),
    ];
    let run = |addr: SocketAddr| {
        let asks = asks.clone();
        let auth_log = auth_log.clone();
        async move {
            let mut got = Vec::new();
            for (source, extra) in &asks {
                auth_log.lock().unwrap().clear();
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(SocketAddr::new(source.parse().unwrap(), 0))
                    .unwrap();
                let mut s = socket.connect(addr).await.unwrap();
                s.write_all(get("/x", "t", extra).as_bytes()).await.unwrap();
                let mut raw = Vec::new();
                s.read_to_end(&mut raw).await.unwrap();
                let text = String::from_utf8_lossy(&raw).into_owned();
                let head = text.split("\r\n\r\n").next().unwrap().to_owned();
                let challenges: Vec<String> = head
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
                    .map(|(_, v)| v.trim().to_owned())
                    .collect();
                let asked = auth_log.lock().unwrap().len();
                got.push((support::status(&head), challenges, asked));
            }
            got
        }
    };
    let lb = imbang(&conf).await;
    let mine = run(lb.addr).await;
    let challenges = vec![
        "Basic realm=\"Staff\"".to_owned(),
        "Bearer realm=\"oauth2\"".to_owned(),
    ];
    assert_eq!(
        mine,
        [
            (200, vec![], 0),
            (200, vec![], 0),
            (200, vec![], 1),
            (401, challenges.clone(), 1),
            (401, challenges, 1),
        ]
    );
    let Some((_nginx, addr)) = support::start_nginx(&dir, &nginx_http(&conf)).await else {
        return;
    };
    assert_eq!(mine, run(addr).await, "imbang, nginx");
}
