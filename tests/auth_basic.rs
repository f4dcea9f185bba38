//! `auth_basic` and `auth_basic_user_file` (ngx_http_auth_basic_module), `satisfy` with
//! `allow`/`deny`, `auth_basic` inside `limit_except`, and `$remote_user`: password files made
//! by the tools people use (`openssl passwd` for `$apr1$`, `$1$`, `$5$`, `$6$`; `htpasswd -B`
//! for bcrypt; `{PLAIN}`, `{SHA}`, `{SSHA}` by hand), the same requests sent to imbang and to
//! the machine's nginx 1.22, statuses and `WWW-Authenticate` compared.
mod support;

use std::net::{IpAddr, SocketAddr};

use base64::Engine as _;
use support::{TempDir, backend, imbang, start_nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "s3cret pass";

/// `user:hash` lines, one user per scheme the machine's tools can make (a scheme whose tool
/// is missing is skipped with a message).
fn htpasswd_lines() -> Vec<(String, String)> {
    let mut users = Vec::new();
    for (user, flag) in [
        ("apr1", "-apr1"),
        ("md5", "-1"),
        ("sha256", "-5"),
        ("sha512", "-6"),
    ] {
        match std::process::Command::new("openssl")
            .args(["passwd", flag, PASSWORD])
            .output()
        {
            Ok(out) if out.status.success() => {
                let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
                users.push((user.to_owned(), hash));
            }
            _ => eprintln!("skipped {user}: `openssl passwd {flag}` is not available"),
        }
    }
    match std::process::Command::new("htpasswd")
        .args(["-nbB", "bcrypt", PASSWORD])
        .output()
    {
        Ok(out) if out.status.success() => {
            let line = String::from_utf8(out.stdout).unwrap();
            let (user, hash) = line.trim().split_once(':').unwrap();
            users.push((user.to_owned(), hash.to_owned()));
        }
        _ => eprintln!("skipped bcrypt: htpasswd (apache2-utils) is not installed"),
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    users.push(("plain".to_owned(), format!("{{PLAIN}}{PASSWORD}")));
    let sha1 = |data: &[u8]| {
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
            .as_ref()
            .to_vec()
    };
    users.push((
        "sha".to_owned(),
        format!("{{SHA}}{}", b64.encode(sha1(PASSWORD.as_bytes()))),
    ));
    let salt = b"pepper!!";
    let mut salted = PASSWORD.as_bytes().to_vec();
    salted.extend_from_slice(salt);
    let mut ssha = sha1(&salted);
    ssha.extend_from_slice(salt);
    users.push(("ssha".to_owned(), format!("{{SSHA}}{}", b64.encode(ssha))));
    users
}

/// The locations both servers run (`{listen}`, `{app}`, `{file}` filled in).
const SITE: &str = r#"
  server {
    listen 127.0.0.1:{listen};
    server_name t;
    auth_basic "Closed site $host";
    auth_basic_user_file {file};
    proxy_set_header X-User $remote_user;
    location / { proxy_pass http://{app}; }
    location /open { auth_basic off; proxy_pass http://{app}; }
    location /any { satisfy any; allow 127.0.0.2; deny all; proxy_pass http://{app}; }
    location /all { deny 127.0.0.3; proxy_pass http://{app}; }
    location /missing { auth_basic_user_file /nonexistent/htpasswd; proxy_pass http://{app}; }
    location /write {
      auth_basic off;
      limit_except GET { auth_basic "Writers"; auth_basic_user_file {file}; }
      proxy_pass http://{app};
    }
  }
"#;

/// One request from `source`: status and the `WWW-Authenticate` fields.
async fn ask(
    addr: SocketAddr,
    source: IpAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
) -> (u16, Vec<String>) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let mut s = socket.connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.unwrap();
    let text = String::from_utf8_lossy(&got);
    let head = text.split("\r\n\r\n").next().unwrap();
    let challenges = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    (support::status(head), challenges)
}

fn basic(user: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{user}:{password}")))
}

type Case = (
    &'static str,
    &'static str,
    &'static str,
    Option<String>,
    u16,
);

/// Every request of the comparison: (source, method, path, Authorization, imbang's status).
fn cases(users: &[(String, String)]) -> Vec<Case> {
    let local = "127.0.0.1";
    let mut v: Vec<Case> = Vec::new();
    for (user, _) in users {
        let user: &'static str = Box::leak(user.clone().into_boxed_str());
        v.push((local, "GET", "/", Some(basic(user, PASSWORD)), 200));
        v.push((local, "GET", "/", Some(basic(user, "wrong")), 401));
    }
    v.extend([
        (local, "GET", "/", None, 401),
        (local, "GET", "/", Some(basic("nobody", PASSWORD)), 401),
        (
            local,
            "GET",
            "/",
            Some("Basic !!!notbase64".to_owned()),
            401,
        ),
        (local, "GET", "/", Some("Bearer abc".to_owned()), 401),
        (local, "GET", "/open", None, 200),
        // satisfy any: the allowed address needs no password; others need one.
        ("127.0.0.2", "GET", "/any", None, 200),
        (local, "GET", "/any", None, 401),
        (local, "GET", "/any", Some(basic("plain", PASSWORD)), 200),
        (local, "GET", "/any", Some(basic("plain", "wrong")), 401),
        // satisfy all: a denied address is refused whatever the password.
        (
            "127.0.0.3",
            "GET",
            "/all",
            Some(basic("plain", PASSWORD)),
            403,
        ),
        (local, "GET", "/all", Some(basic("plain", PASSWORD)), 200),
        // A password file that is not there: 403 (after a 401 for no credentials).
        (local, "GET", "/missing", None, 401),
        (
            local,
            "GET",
            "/missing",
            Some(basic("plain", PASSWORD)),
            403,
        ),
        // limit_except GET: reading is open, writing needs a password.
        (local, "GET", "/write", None, 200),
        (local, "HEAD", "/write", None, 200),
        (local, "POST", "/write", None, 401),
        (local, "POST", "/write", Some(basic("plain", PASSWORD)), 200),
    ]);
    v
}

#[tokio::test]
async fn every_scheme_satisfy_and_limit_except_answer_as_nginx_does() {
    let app = backend("app").await;
    let dir = TempDir::new("auth-basic");
    let users = htpasswd_lines();
    let mut text = String::from("# made by tests/auth_basic.rs\n");
    for (user, hash) in &users {
        text.push_str(&format!("{user}:{hash}\n"));
    }
    let file = dir.write("htpasswd", &text);
    let site = SITE
        .replace("{app}", &app.addr.to_string())
        .replace("{file}", &file.display().to_string());
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off; error_log stderr crit; {} }}",
        site.replace("{listen}", "0")
    ))
    .await;
    let cases = cases(&users);
    let mut got = Vec::new();
    for (source, method, path, auth, want) in &cases {
        let answer = ask(
            lb.addr,
            source.parse().unwrap(),
            method,
            path,
            auth.as_deref(),
        )
        .await;
        assert_eq!(
            answer.0, *want,
            "{method} {path} from {source} with {auth:?}: {answer:?}"
        );
        if answer.0 == 401 {
            let realm = if path.starts_with("/write") {
                "Writers"
            } else {
                "Closed site t"
            };
            assert_eq!(answer.1, [format!("Basic realm=\"{realm}\"")]);
        } else {
            assert!(answer.1.is_empty(), "{answer:?}");
        }
        got.push(answer);
    }

    // The same requests to nginx 1.22.
    let Some((_nginx, addr)) = start_nginx(&dir, &site).await else {
        return;
    };
    for ((source, method, path, auth, _), imbang) in cases.iter().zip(&got) {
        let nginx = ask(addr, source.parse().unwrap(), method, path, auth.as_deref()).await;
        assert_eq!(
            &nginx, imbang,
            "{method} {path} from {source} with {auth:?}: nginx, imbang"
        );
    }
}

/// The user reaches the upstream as `$remote_user` (after the check; it is the name the
/// client gave, as nginx's variable).
#[tokio::test]
async fn remote_user_is_the_name_the_client_gave() {
    let (origin, log) = echo_header_origin("x-user").await;
    let dir = TempDir::new("auth-basic-user");
    let file = dir.write("htpasswd", "alice:{PLAIN}pw\n");
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0;
             location / {{ auth_basic \"x\"; auth_basic_user_file {};
               proxy_set_header X-User $remote_user; proxy_pass http://{origin}; }}
             location /free {{ proxy_set_header X-User $remote_user; proxy_pass http://{origin}; }} }} }}",
        file.display()
    ))
    .await;
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        ask(lb.addr, local, "GET", "/", Some(&basic("alice", "pw")))
            .await
            .0,
        200
    );
    assert_eq!(
        ask(lb.addr, local, "GET", "/free", Some(&basic("mallory", "x")))
            .await
            .0,
        200
    );
    assert_eq!(*log.lock().unwrap(), ["alice", "mallory"]);
}

/// An origin recording the value of header `name` of each request.
async fn echo_header_origin(
    name: &'static str,
) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let kept = log.clone();
    let addr = support::serve_hyper(move |req: hyper::Request<hyper::body::Incoming>| {
        let log = kept.clone();
        async move {
            let v = req
                .headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned());
            log.lock().unwrap().push(v.unwrap_or_default());
            Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"ok"),
            )))
        }
    })
    .await;
    (addr, log)
}

/// imbang reads the password file when the configuration is loaded: an edit applies at the
/// next reload (nginx reads it per request: there, at once).
#[tokio::test]
async fn the_password_file_is_read_again_on_reload() {
    let app = backend("app").await;
    let dir = TempDir::new("auth-basic-reload");
    let file = dir.write("htpasswd", "alice:{PLAIN}old\n");
    let conf = format!(
        "events {{}} http {{ access_log off; error_log stderr crit;
           server {{ listen 127.0.0.1:0; auth_basic on; auth_basic_user_file {};
             location / {{ proxy_pass http://{}; }} }} }}",
        file.display(),
        app.addr
    );
    let lb = imbang(&conf).await;
    let local: IpAddr = "127.0.0.1".parse().unwrap();
    assert_eq!(
        ask(lb.addr, local, "GET", "/", Some(&basic("alice", "old")))
            .await
            .0,
        200
    );
    dir.write("htpasswd", "alice:{PLAIN}new\n");
    assert_eq!(
        ask(lb.addr, local, "GET", "/", Some(&basic("alice", "new")))
            .await
            .0,
        401
    );
    lb.reload(&conf).await;
    let (status, realm) = ask(lb.addr, local, "GET", "/", Some(&basic("alice", "old"))).await;
    assert_eq!(
        (status, realm),
        (401, vec!["Basic realm=\"on\"".to_owned()])
    );
    assert_eq!(
        ask(lb.addr, local, "GET", "/", Some(&basic("alice", "new")))
            .await
            .0,
        200
    );
}
