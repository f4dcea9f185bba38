//! Files from disk (`root`, `alias`, `index`, `try_files`, `types`, conditional requests,
//! ranges, `autoindex`, `gzip_static`, `disable_symlinks`, `error_page` to a file): real files
//! in a temporary directory, imbang in-process, raw HTTP/1.1 on the wire. Where nginx is
//! installed, the tricky cases are asked of both and compared.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::{TempDir, imbang, serve_hyper, start_nginx};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Field names lowercased, in order.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `head` (the request line and fields, without the blank line; `Host` and
/// `Connection: close` are added) and reads the answer to the close.
async fn send(addr: SocketAddr, head: &str) -> Answer {
    send_body(addr, head, "").await
}

/// [`send`] with a body after the head.
async fn send_body(addr: SocketAddr, head: &str, body: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n{body}");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer in time")
        .unwrap();
    parse(&raw)
}

fn parse(raw: &[u8]) -> Answer {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let fields = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    Answer {
        status,
        fields,
        body: raw[end + 4..].to_vec(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    send(addr, &format!("GET {path} HTTP/1.1")).await
}

/// A site: `www/` with a few files, and a secret beside it (outside the root).
fn site() -> TempDir {
    let dir = TempDir::new("static");
    dir.write("www/index.html", "<h1>home</h1>\n");
    dir.write("www/a.txt", "0123456789abcdefghij");
    dir.write("www/style.CSS", "body{}");
    dir.write("www/sub/index.html", "sub index\n");
    dir.write("www/noindex/x.txt", "x");
    dir.write("www/a b.txt", "space");
    dir.write("secret.txt", "TOP SECRET");
    dir.write(
        "mime.types",
        "types {\n    text/html html htm;\n    text/plain txt;\n    text/css css;\n    image/gif gif;\n    application/javascript js;\n}\n",
    );
    dir
}

fn conf(dir: &TempDir, location: &str) -> String {
    format!(
        "events {{}} http {{ include {d}/mime.types; default_type application/octet-stream;
         access_log off;
         server {{ listen 127.0.0.1:0; root {d}/www; {location} }} }}",
        d = dir.path().display()
    )
}

#[tokio::test]
async fn a_file_is_served_with_its_type_length_and_validators() {
    let dir = site();
    let lb = imbang(&conf(&dir, "")).await;
    let a = get(lb.addr, "/a.txt").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text(), "0123456789abcdefghij");
    assert_eq!(a.field("content-type"), Some("text/plain"));
    assert_eq!(a.field("content-length"), Some("20"));
    assert_eq!(a.field("accept-ranges"), Some("bytes"));
    let meta = std::fs::metadata(dir.path().join("www/a.txt")).unwrap();
    let mtime = meta.modified().unwrap();
    assert_eq!(
        a.field("last-modified"),
        Some(httpdate::fmt_http_date(mtime).as_str())
    );
    let secs = mtime
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(a.field("etag"), Some(format!("\"{secs:x}-14\"").as_str()));
    // An extension in capitals finds its type; one `types` does not know gets default_type.
    assert_eq!(
        get(lb.addr, "/style.CSS").await.field("content-type"),
        Some("text/css")
    );
    dir.write("www/blob.bin", "b");
    assert_eq!(
        get(lb.addr, "/blob.bin").await.field("content-type"),
        Some("application/octet-stream")
    );
    // An encoded name.
    assert_eq!(get(lb.addr, "/a%20b.txt").await.text(), "space");
}

#[tokio::test]
async fn expires_applies_to_files() {
    let dir = site();
    let lb = imbang(&conf(&dir, "location / { expires 1h; }")).await;
    let a = get(lb.addr, "/a.txt").await;
    assert_eq!(a.field("cache-control"), Some("max-age=3600"));
    assert!(a.field("expires").is_some());
}

#[tokio::test]
async fn head_says_the_length_without_a_body() {
    let dir = site();
    let lb = imbang(&conf(&dir, "")).await;
    let a = send(lb.addr, "HEAD /a.txt HTTP/1.1").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.field("content-length"), Some("20"));
    assert!(a.body.is_empty());
    // Other methods than GET, HEAD: 405 (POST to a file as well, as nginx).
    assert_eq!(send(lb.addr, "DELETE /a.txt HTTP/1.1").await.status, 405);
    assert_eq!(
        send(lb.addr, "POST /a.txt HTTP/1.1\r\nContent-Length: 0")
            .await
            .status,
        405
    );
}

#[tokio::test]
async fn directories_redirect_index_or_refuse() {
    let dir = site();
    let lb = imbang(&conf(&dir, "")).await;
    let port = lb.addr.port();
    let a = get(lb.addr, "/sub?x=1").await;
    assert_eq!(a.status, 301);
    assert_eq!(
        a.field("location"),
        Some(format!("http://localhost:{port}/sub/?x=1").as_str())
    );
    assert_eq!(get(lb.addr, "/sub/").await.text(), "sub index\n");
    assert_eq!(get(lb.addr, "/").await.text(), "<h1>home</h1>\n");
    assert_eq!(get(lb.addr, "/noindex/").await.status, 403);
    assert_eq!(get(lb.addr, "/missing/").await.status, 404);
    assert_eq!(get(lb.addr, "/missing.txt").await.status, 404);
    // A file where a directory is expected.
    assert_eq!(get(lb.addr, "/a.txt/x").await.status, 404);
}

#[tokio::test]
async fn index_lists_and_absolute_fallbacks() {
    let dir = site();
    dir.write("www/d/main.htm", "main");
    dir.write("www/fallback.html", "fallback");
    let lb = imbang(&conf(&dir, "index nothing.html main.htm /fallback.html;")).await;
    assert_eq!(get(lb.addr, "/d/").await.text(), "main");
    let a = get(lb.addr, "/sub/").await;
    assert_eq!(a.text(), "fallback");
    assert_eq!(a.field("content-type"), Some("text/html"));
}

#[tokio::test]
async fn unreadable_files_are_403() {
    if nix::unistd::geteuid().is_root() {
        eprintln!("skipped: root reads every file");
        return;
    }
    let dir = site();
    let p = dir.write("www/locked.txt", "no");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
    let lb = imbang(&conf(&dir, "")).await;
    assert_eq!(get(lb.addr, "/locked.txt").await.status, 403);
}

#[tokio::test]
async fn conditional_requests() {
    let dir = site();
    let lb = imbang(&conf(&dir, "location /before/ { if_modified_since before; alias {d}/www/; } location /off/ { if_modified_since off; alias {d}/www/; }")
        .replace("{d}", &dir.path().display().to_string())).await;
    let a = get(lb.addr, "/a.txt").await;
    let lm = a.field("last-modified").unwrap().to_owned();
    let etag = a.field("etag").unwrap().to_owned();
    let later =
        httpdate::fmt_http_date(httpdate::parse_http_date(&lm).unwrap() + Duration::from_secs(60));
    let addr = lb.addr;
    let cond = |path: &str, field: &str, value: &str| {
        let head = format!("GET {path} HTTP/1.1\r\n{field}: {value}");
        async move { send(addr, &head).await }
    };
    let nm = cond("/a.txt", "If-Modified-Since", &lm).await;
    assert_eq!(nm.status, 304);
    assert!(nm.body.is_empty());
    assert_eq!(nm.field("etag"), Some(etag.as_str()));
    assert_eq!(nm.field("last-modified"), Some(lm.as_str()));
    assert_eq!(nm.field("content-type"), None);
    // exact: a later date is not the file's.
    assert_eq!(
        cond("/a.txt", "If-Modified-Since", &later).await.status,
        200
    );
    assert_eq!(
        cond("/before/a.txt", "If-Modified-Since", &later)
            .await
            .status,
        304
    );
    assert_eq!(
        cond("/off/a.txt", "If-Modified-Since", &lm).await.status,
        200
    );
    assert_eq!(cond("/a.txt", "If-None-Match", &etag).await.status, 304);
    assert_eq!(
        cond("/a.txt", "If-None-Match", &format!("\"x\", W/{etag}"))
            .await
            .status,
        304
    );
    assert_eq!(
        cond("/a.txt", "If-None-Match", "\"other\"").await.status,
        200
    );
    assert_eq!(cond("/a.txt", "If-None-Match", "*").await.status, 304);
    assert_eq!(cond("/a.txt", "If-Match", "\"other\"").await.status, 412);
    assert_eq!(cond("/a.txt", "If-Match", &etag).await.status, 200);
    assert_eq!(
        cond(
            "/a.txt",
            "If-Unmodified-Since",
            "Thu, 01 Jan 1970 00:00:01 GMT"
        )
        .await
        .status,
        412
    );
    assert_eq!(cond("/a.txt", "If-Unmodified-Since", &lm).await.status, 200);
}

#[tokio::test]
async fn ranges() {
    let dir = site();
    let lb = imbang(&conf(&dir, "location /one/ { max_ranges 1; alias {d}/www/; } location /none/ { max_ranges 0; alias {d}/www/; }")
        .replace("{d}", &dir.path().display().to_string())).await;
    let addr = lb.addr;
    let range = |path: &str, value: &str| {
        let head = format!("GET {path} HTTP/1.1\r\nRange: {value}");
        async move { send(addr, &head).await }
    };
    let a = range("/a.txt", "bytes=2-4").await;
    assert_eq!(a.status, 206);
    assert_eq!(a.text(), "234");
    assert_eq!(a.field("content-range"), Some("bytes 2-4/20"));
    assert_eq!(a.field("content-length"), Some("3"));
    let a = range("/a.txt", "bytes=-3").await;
    assert_eq!((a.status, a.text().as_str()), (206, "hij"));
    let a = range("/a.txt", "bytes=18-100").await;
    assert_eq!((a.status, a.text().as_str()), (206, "ij"));
    let a = range("/a.txt", "bytes=20-").await;
    assert_eq!(a.status, 416);
    assert_eq!(a.field("content-range"), Some("bytes */20"));
    let a = range("/a.txt", "bytes=0-1,5-6").await;
    assert_eq!(a.status, 206);
    let ct = a.field("content-type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart")
        .to_owned();
    assert_eq!(
        a.text(),
        format!(
            "\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-1/20\r\n\r\n01\r\n--{boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 5-6/20\r\n\r\n56\r\n--{boundary}--\r\n"
        )
    );
    assert_eq!(
        a.field("content-length"),
        Some(a.body.len().to_string().as_str())
    );
    // Not bytes, or more ranges than max_ranges: the whole file.
    assert_eq!(range("/a.txt", "items=0-1").await.status, 200);
    assert_eq!(range("/one/a.txt", "bytes=0-1,5-6").await.status, 200);
    assert_eq!(range("/one/a.txt", "bytes=0-1").await.status, 206);
    let none = range("/none/a.txt", "bytes=0-1").await;
    assert_eq!(none.status, 200);
    assert_eq!(none.field("accept-ranges"), None);
    // If-Range: the ETag or the date must be the file's.
    let etag = get(lb.addr, "/a.txt")
        .await
        .field("etag")
        .unwrap()
        .to_owned();
    let head = format!("GET /a.txt HTTP/1.1\r\nRange: bytes=0-1\r\nIf-Range: {etag}");
    assert_eq!(send(lb.addr, &head).await.status, 206);
    let head = "GET /a.txt HTTP/1.1\r\nRange: bytes=0-1\r\nIf-Range: \"old\"";
    assert_eq!(send(lb.addr, head).await.status, 200);
}

#[tokio::test]
async fn large_files_stream_whole_and_in_ranges() {
    let dir = site();
    let big: Vec<u8> = (0..(1 << 20) + 17).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("www/big.bin"), &big).unwrap();
    let lb = imbang(
        &conf(&dir, "location /sf/ { sendfile on; alias {d}/www/; }")
            .replace("{d}", &dir.path().display().to_string()),
    )
    .await;
    for path in ["/big.bin", "/sf/big.bin"] {
        let a = get(lb.addr, path).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.body.len(), big.len(), "{path}");
        assert!(a.body == big, "{path}: same bytes");
        let a = send(
            lb.addr,
            &format!("GET {path} HTTP/1.1\r\nRange: bytes=100000-900000"),
        )
        .await;
        assert_eq!(a.status, 206);
        assert!(a.body == big[100000..=900000], "{path}: the range");
        let a = send(
            lb.addr,
            &format!("GET {path} HTTP/1.1\r\nRange: bytes=0-99999,-70000"),
        )
        .await;
        assert_eq!(a.status, 206);
        let boundary = a
            .field("content-type")
            .unwrap()
            .rsplit('=')
            .next()
            .unwrap()
            .to_owned();
        let mut want = Vec::new();
        for (start, end) in [(0, 99999), (big.len() - 70000, big.len() - 1)] {
            want.extend_from_slice(
                format!(
                    "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {start}-{end}/{}\r\n\r\n",
                    big.len()
                )
                .as_bytes(),
            );
            want.extend_from_slice(&big[start..=end]);
        }
        want.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        assert!(a.body == want, "{path}: multipart ranges");
    }
}

#[tokio::test]
async fn no_path_leads_out_of_the_root() {
    let dir = site();
    let lb = imbang(&conf(&dir, "")).await;
    for path in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/..%2f..%2fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/%252e%252e/secret.txt",
        "/..%5csecret.txt",
        "/sub\\..\\..\\secret.txt",
        "/secret.txt%00.txt",
        "/.%2e/secret.txt",
        "//../secret.txt",
    ] {
        let a = get(lb.addr, path).await;
        assert!(matches!(a.status, 400 | 404), "{path}: status {}", a.status);
        assert!(!a.text().contains("SECRET"), "{path}");
    }
}

#[tokio::test]
async fn symbolic_links_follow_disable_symlinks() {
    let dir = site();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("www/link.txt"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("www/sub"), dir.path().join("www/linkdir")).unwrap();
    let d = dir.path().display().to_string();
    let lb = imbang(
        &conf(
            &dir,
            "location /on/ { disable_symlinks on; alias {d}/www/; }
             location /owner/ { disable_symlinks if_not_owner; alias {d}/www/; }",
        )
        .replace("{d}", &d),
    )
    .await;
    assert_eq!(get(lb.addr, "/link.txt").await.text(), "TOP SECRET");
    assert_eq!(get(lb.addr, "/on/link.txt").await.status, 403);
    assert_eq!(get(lb.addr, "/on/linkdir/index.html").await.status, 403);
    assert_eq!(get(lb.addr, "/on/a.txt").await.status, 200);
    // The same owner (this test's user) for the link and its target.
    assert_eq!(get(lb.addr, "/owner/link.txt").await.status, 200);
}

#[tokio::test]
async fn alias_in_prefix_and_regex_locations() {
    let dir = site();
    dir.write("img/top.gif", "GIF");
    let d = dir.path().display().to_string();
    let lb = imbang(
        &conf(
            &dir,
            "location /i/ { alias {d}/img/; }
             location ~ ^/users/(.+\\.(?:gif|jpe?g))$ { alias {d}/img/$1; }",
        )
        .replace("{d}", &d),
    )
    .await;
    let a = get(lb.addr, "/i/top.gif").await;
    assert_eq!((a.status, a.text().as_str()), (200, "GIF"));
    assert_eq!(a.field("content-type"), Some("image/gif"));
    assert_eq!(get(lb.addr, "/users/top.gif").await.text(), "GIF");
    assert_eq!(get(lb.addr, "/users/none.gif").await.status, 404);
}

/// Debian's default site's maintenance page: every peer down, the page from disk with 502.
#[tokio::test]
async fn error_page_shows_a_file_when_every_backend_is_down() {
    let dir = site();
    dir.write("html/50x.html", "<h1>Down for maintenance</h1>\n");
    let dead1 = support::free_port();
    let dead2 = support::free_port();
    let lb = imbang(&format!(
        "events {{}} http {{ access_log off;
         upstream app {{ server 127.0.0.1:{dead1}; server 127.0.0.1:{dead2}; }}
         server {{ listen 127.0.0.1:0;
           location / {{ proxy_pass http://app; }}
           error_page 502 503 504 /50x.html;
           location = /50x.html {{ root {d}/html; }} }} }}",
        d = dir.path().display()
    ))
    .await;
    let a = get(lb.addr, "/anything").await;
    assert_eq!(a.status, 502);
    assert_eq!(a.text(), "<h1>Down for maintenance</h1>\n");
    assert_eq!(a.field("content-type"), Some("text/html"));
    let a = send(lb.addr, "HEAD /x HTTP/1.1").await;
    assert_eq!(a.status, 502);
    assert!(a.body.is_empty());
}

/// A single-page app: files where they exist, its index for every other path, the API proxied.
#[tokio::test]
async fn try_files_serves_a_single_page_app_beside_its_api() {
    let dir = site();
    dir.write("app/index.html", "SPA");
    dir.write("app/main.js", "js();");
    let api = serve_hyper(|req: hyper::Request<hyper::body::Incoming>| async move {
        let body = format!("api {} {}", req.method(), req.uri());
        Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
            bytes::Bytes::from(body),
        )))
    })
    .await;
    let d = dir.path().display().to_string();
    let lb = imbang(&format!(
        "events {{}} http {{ include {d}/mime.types; access_log off;
         server {{ listen 127.0.0.1:0; root {d}/app;
           location / {{ try_files $uri /index.html; }}
           location /api/ {{ proxy_pass http://{api}; }}
           location /dirs/ {{ root {d}/www; rewrite ^/dirs(/.*)$ $1 break; try_files $uri $uri/ =418; }}
           location /app/ {{ try_files $uri @backend; }}
           location @backend {{ proxy_pass http://{api}; }} }} }}"
    ))
    .await;
    let a = get(lb.addr, "/main.js").await;
    assert_eq!(a.text(), "js();");
    assert_eq!(a.field("content-type"), Some("application/javascript"));
    let a = get(lb.addr, "/settings/profile?tab=2").await;
    assert_eq!((a.status, a.text().as_str()), (200, "SPA"));
    assert_eq!(a.field("content-type"), Some("text/html"));
    assert_eq!(get(lb.addr, "/").await.text(), "SPA");
    assert_eq!(
        get(lb.addr, "/api/users?id=1").await.text(),
        "api GET /api/users?id=1"
    );
    let post = send_body(
        lb.addr,
        "POST /app/save HTTP/1.1\r\nContent-Length: 2",
        "hi",
    )
    .await;
    assert_eq!(post.text(), "api POST /app/save");
    assert_eq!(get(lb.addr, "/dirs/nothing").await.status, 418);
}

#[tokio::test]
async fn try_files_checks_directories_and_codes() {
    let dir = site();
    let lb = imbang(&conf(&dir, "location / { try_files $uri $uri/ =404; }")).await;
    assert_eq!(get(lb.addr, "/a.txt").await.text(), "0123456789abcdefghij");
    assert_eq!(get(lb.addr, "/sub").await.text(), "sub index\n");
    assert_eq!(get(lb.addr, "/nothing").await.status, 404);
}

#[tokio::test]
async fn an_internal_redirect_loop_ends_in_500() {
    let dir = site();
    let lb = imbang(&conf(&dir, "location / { try_files /nope /loop; }")).await;
    assert_eq!(get(lb.addr, "/x").await.status, 500);
}

#[tokio::test]
async fn autoindex_lists_a_directory() {
    let dir = site();
    dir.write("www/list/b.txt", "bb");
    dir.write("www/list/a.txt", "a");
    dir.write("www/list/.hidden", "h");
    dir.write("www/list/zdir/x", "x");
    let d = dir.path().display().to_string();
    let lb = imbang(
        &conf(
            &dir,
            "location /list/ { autoindex on; }
             location /json/ { autoindex on; autoindex_format json; alias {d}/www/list/; }",
        )
        .replace("{d}", &d),
    )
    .await;
    let a = get(lb.addr, "/list/").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.field("content-type"), Some("text/html"));
    let text = a.text();
    assert!(text.starts_with("<html>\r\n<head><title>Index of /list/</title></head>"));
    let zdir = text
        .find("<a href=\"zdir/\">zdir/</a>")
        .expect("directory listed");
    let a_txt = text
        .find("<a href=\"a.txt\">a.txt</a>")
        .expect("file listed");
    assert!(zdir < a_txt, "directories first");
    assert!(!text.contains(".hidden"));
    let j = get(lb.addr, "/json/").await;
    assert_eq!(j.field("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&j.body).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["zdir", "a.txt", "b.txt"]);
    assert_eq!(v[2]["size"], 2);
    assert_eq!(v[0]["type"], "directory");
}

#[tokio::test]
async fn gzip_static_serves_the_gz_file_to_clients_that_take_gzip() {
    let dir = site();
    dir.write("www/app.js", "plain");
    dir.write("www/app.js.gz", "GZ");
    let lb = imbang(&conf(&dir, "gzip_static on;")).await;
    let a = send(lb.addr, "GET /app.js HTTP/1.1\r\nAccept-Encoding: br, gzip").await;
    assert_eq!(a.text(), "GZ");
    assert_eq!(a.field("content-encoding"), Some("gzip"));
    assert_eq!(a.field("content-type"), Some("application/javascript"));
    let a = send(lb.addr, "GET /app.js HTTP/1.1\r\nAccept-Encoding: gzip;q=0").await;
    assert_eq!(a.text(), "plain");
    assert_eq!(get(lb.addr, "/app.js").await.text(), "plain");
    // No .gz beside it: the file itself.
    let a = send(lb.addr, "GET /a.txt HTTP/1.1\r\nAccept-Encoding: gzip").await;
    assert_eq!(a.field("content-encoding"), None);
}

#[tokio::test]
async fn the_types_of_nginx_s_mime_types_file() {
    let Ok(_) = std::fs::metadata("/etc/nginx/mime.types") else {
        eprintln!("skipped: /etc/nginx/mime.types is not installed");
        return;
    };
    let dir = site();
    dir.write("www/x.svg", "<svg/>");
    dir.write("www/x.json", "{}");
    let lb = imbang(&format!(
        "events {{}} http {{ include /etc/nginx/mime.types; access_log off;
         server {{ listen 127.0.0.1:0; root {}/www; }} }}",
        dir.path().display()
    ))
    .await;
    assert_eq!(
        get(lb.addr, "/x.svg").await.field("content-type"),
        Some("image/svg+xml")
    );
    assert_eq!(
        get(lb.addr, "/x.json").await.field("content-type"),
        Some("application/json")
    );
}

/// The tricky cases asked of nginx and of imbang, on the same files: same statuses and the
/// same values of the fields that say what was served.
#[tokio::test]
async fn tricky_requests_answer_as_nginx_does() {
    let dir = site();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        dir.path().join("www/link.txt"),
    )
    .unwrap();
    let d = dir.path().display().to_string();
    let server = format!(
        "include {d}/mime.types; default_type application/octet-stream; access_log off;
         server {{ listen 127.0.0.1:{{listen}}; root {d}/www;
           location /on/ {{ disable_symlinks on; alias {d}/www/; }}
           location /spa/ {{ try_files $uri $uri/ /index.html; }} }}"
    );
    let Some((_nginx, nginx)) = start_nginx(&dir, &server).await else {
        return;
    };
    let lb = imbang(&format!(
        "events {{}} http {{ {} }}",
        server.replace("{listen}", "0")
    ))
    .await;
    let cases: &[(&str, &str)] = &[
        ("/a.txt", ""),
        ("/sub", ""),
        ("/sub?a=1", ""),
        ("/sub/", ""),
        ("/noindex/", ""),
        ("/missing", ""),
        ("/a.txt/", ""),
        ("/%2e%2e/secret.txt", ""),
        ("/sub/%2e%2e/a.txt", ""),
        ("/..%5csecret.txt", ""),
        ("/a%20b.txt", ""),
        ("/link.txt", ""),
        ("/on/link.txt", ""),
        ("/on/a.txt", ""),
        ("/spa/deep/route", ""),
        ("/spa/sub", ""),
        ("/a.txt", "Range: bytes=0-0"),
        ("/a.txt", "Range: bytes=-5"),
        ("/a.txt", "Range: bytes=5-2"),
        ("/a.txt", "Range: bytes=20-"),
        ("/a.txt", "Range: bytes=0-1,3-4"),
        ("/a.txt", "Range: bytes=0-19,0-19"),
        ("/a.txt", "Range: bytes=x"),
        ("/a.txt", "Range: Bytes=1-2"),
        ("/a.txt", "Range: bytes=1-2\r\nIf-Range: \"nope\""),
        ("/a.txt", "If-None-Match: *"),
        ("/a.txt", "If-Match: \"nope\""),
        ("/a.txt", "If-Unmodified-Since: garbage"),
        ("/a.txt", "If-Modified-Since: garbage"),
    ];
    for (path, extra) in cases {
        let head = match *extra {
            "" => format!("GET {path} HTTP/1.1"),
            extra => format!("GET {path} HTTP/1.1\r\n{extra}"),
        };
        let ours = send(lb.addr, &head).await;
        let theirs = send(nginx, &head).await;
        let what = format!("{path} {extra}");
        assert_eq!(ours.status, theirs.status, "{what}");
        for field in [
            "content-type",
            "content-length",
            "content-range",
            "etag",
            "last-modified",
            "accept-ranges",
        ] {
            let (a, b) = (ours.field(field), theirs.field(field));
            if field == "content-type" && a.is_some_and(|v| v.starts_with("multipart/")) {
                assert!(b.is_some_and(|v| v.starts_with("multipart/byteranges; boundary=")));
                continue;
            }
            // Error pages differ in their text (and so their length).
            if field == "content-length" && ours.status >= 300 {
                continue;
            }
            assert_eq!(a, b, "{what}: {field}");
        }
        if ours.status < 300
            && !ours
                .field("content-type")
                .is_some_and(|v| v.starts_with("multipart/"))
        {
            assert_eq!(ours.body, theirs.body, "{what}: body");
        }
        if let Some(location) = theirs.field("location") {
            let port = nginx.port().to_string();
            let ours_loc = ours.field("location").unwrap_or("");
            assert_eq!(
                ours_loc.replace(&lb.addr.port().to_string(), "PORT"),
                location.replace(&port, "PORT"),
                "{what}: location"
            );
        }
    }
}

/// Over HTTP/2 (h2c) a large file goes out in chunks within flow control (no `sendfile`
/// there), a range and HEAD as over HTTP/1.
#[tokio::test]
async fn files_over_http2() {
    use http_body_util::BodyExt as _;
    let dir = site();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(dir.path().join("www/big.bin"), &big).unwrap();
    let lb = imbang(&conf(&dir, "sendfile on;")).await;
    let stream = TcpStream::connect(lb.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = |method: &str, range: Option<&str>| {
        let mut r = hyper::Request::builder()
            .method(method)
            .uri(format!("http://localhost:{}/big.bin", lb.addr.port()));
        if let Some(range) = range {
            r = r.header("range", range);
        }
        r.body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let res = sender.send_request(request("GET", None)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-length"], "300000");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body[..] == big[..]);
    let res = sender
        .send_request(request("GET", Some("bytes=-10")))
        .await
        .unwrap();
    assert_eq!(res.status(), 206);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(body[..] == big[big.len() - 10..]);
    let res = sender.send_request(request("HEAD", None)).await.unwrap();
    assert_eq!(res.headers()["content-length"], "300000");
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
}
