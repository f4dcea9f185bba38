//! `imbang demo`: built-in backends plus the balancer in one process, narrating round-robin and
//! failover so a newcomer sees both in one command.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::cli::DemoArgs;
use crate::config::{self, LoadOptions};
use crate::server::Server;

/// A tiny HTTP server that answers `Hello from backend N (port P)`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Backend {
    /// Starts on `addr` (port 0 picks a free port).
    pub async fn start(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let body = Bytes::from(format!("Hello from {name} (port {})\n", addr.port()));
        tokio::spawn(async move {
            let mut stop_accepting = stopped.clone();
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stop_accepting.wait_for(|s| *s) => return,
                };
                let body = body.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let body = body.clone();
                        async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                    });
                    let conn =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Stopping a backend closes its open connections too, as a killed process would.
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                });
            }
        });
        Ok(Self {
            name: name.to_owned(),
            addr,
            stop,
        })
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// One GET through a new connection: `(status, body)`.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status().as_u16();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).trim_end().to_owned()))
}

/// The demo's configuration: plain nginx syntax, printed for the reader.
pub fn config_text(listen: SocketAddr, backends: &[Backend]) -> String {
    let servers: String = backends
        .iter()
        .map(|b| format!("        server {} max_fails=1 fail_timeout=3s;\n", b.addr))
        .collect();
    format!(
        "daemon off;\nerror_log stderr warn;\n\nevents {{}}\n\nhttp {{\n    access_log off;\n\n    upstream demo {{\n{servers}    }}\n\n    server {{\n        listen {listen};\n        location / {{\n            proxy_pass http://demo;\n        }}\n        location /api/ {{\n            api;\n        }}\n    }}\n}}\n"
    )
}

pub fn main(args: DemoArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("imbang: [emerg] cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(demo(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imbang demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let mut backends = Vec::new();
    for i in 1..=args.backends {
        let b = Backend::start(
            &format!("backend {i}"),
            "127.0.0.1:0".parse().unwrap_or(args.listen),
        )
        .await
        .map_err(|e| format!("cannot start backend {i}: {e}"))?;
        backends.push(b);
    }
    let text = config_text(args.listen, &backends);
    let options = LoadOptions {
        prefix: std::env::temp_dir(),
        default_listen_port: 8000,
    };
    let config = config::parse_str("demo.conf", &text, &options).map_err(|e| e.to_string())?;
    // The balancer's own error log (nginx's format) goes to stderr beside the narration.
    crate::error_log::install(crate::server::open_error_log(&config, None)?);
    let server = Server::new(config, None, None).map_err(|e| e.to_string())?;
    let bound = server
        .bind()
        .map_err(|e| format!("{e} (choose another address with --listen)"))?;
    server.serve(bound).await.map_err(|e| e.to_string())?;
    let lb = server
        .bound()
        .await
        .first()
        .map(|(_, local)| *local)
        .ok_or("no listener")?;

    println!(
        "imbang demo: {} built-in backends behind one balancer.\n",
        backends.len()
    );
    println!("The configuration (nginx syntax, the same imbang reads from a file):\n");
    for line in text.lines() {
        println!("    {line}");
    }
    println!("\nThe site: http://{lb}/");
    println!("Its dashboard (NGINX Plus's API, free in imbang): http://{lb}/api/dashboard.html\n");

    let n = backends.len();
    println!("1. Round-robin: each request goes to the next backend.");
    for _ in 0..2 * n {
        expect_ok(lb, None).await?;
    }

    let last = &backends[n - 1];
    println!("\n2. {} stops (as if its process was killed).", last.name);
    last.stop();
    for _ in 0..2 * n {
        expect_ok(lb, Some(&last.name)).await?;
    }
    println!(
        "   Every request still got 200: the failed connection was retried on another backend,"
    );
    println!("   and {} is skipped for fail_timeout=3s.", last.name);

    println!("\n3. {} comes back on the same port.", last.name);
    let back = Backend::start(&last.name, last.addr)
        .await
        .map_err(|e| format!("cannot restart {}: {e}", last.name))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = expect_ok(lb, None).await?;
        if body.starts_with(&format!("Hello from {} ", back.name)) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("{} did not get traffic back", back.name));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!("   After fail_timeout, {} gets its share again.", back.name);

    if args.once {
        server.shutdown(false, None).await;
        return Ok(());
    }
    println!("\nServing http://{lb}/ until Ctrl+C: open it in a browser and reload.");
    let _ = tokio::signal::ctrl_c().await;
    server.shutdown(true, Some(Duration::from_secs(5))).await;
    drop(backends);
    Ok(())
}

/// One request through the balancer; prints it and fails the demo on anything but 200 or on an
/// answer from `not_from`.
async fn expect_ok(lb: SocketAddr, not_from: Option<&str>) -> Result<(u16, String), String> {
    let (status, body) = get(lb, "/")
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    println!("   GET / -> {status} {body}");
    if status != 200 {
        return Err(format!("expected 200, got {status}"));
    }
    if let Some(name) = not_from {
        if body.starts_with(&format!("Hello from {name} ")) {
            return Err(format!("{name} answered after it stopped"));
        }
    }
    Ok((status, body))
}
