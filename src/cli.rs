//! The command line, with nginx's flags and meanings (`-c -p -e -g -t -T -q -s -v -V`), plus
//! `imbang demo`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

/// nginx's compiled-in defaults, as a source build of nginx has them (`/usr/local/nginx/`).
pub const DEFAULT_PREFIX: &str = "/usr/local/imbang/";
pub const DEFAULT_CONF: &str = "conf/imbang.conf";
pub const DEFAULT_ERROR_LOG: &str = "logs/error.log";

#[derive(Debug, Parser)]
#[command(
    name = "imbang",
    about = "A load balancer and reverse proxy that runs nginx configuration files",
    disable_version_flag = true,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Set configuration file (default: conf/imbang.conf under the prefix)
    #[arg(short = 'c', value_name = "file")]
    pub conf: Option<PathBuf>,
    /// Set prefix path (default: /usr/local/imbang/)
    #[arg(short = 'p', value_name = "prefix")]
    pub prefix: Option<PathBuf>,
    /// Set error log file ("stderr" for standard error) instead of the default one
    #[arg(short = 'e', value_name = "file")]
    pub error_log: Option<String>,
    /// Set global directives out of configuration file
    #[arg(short = 'g', value_name = "directives")]
    pub globals: Option<String>,
    /// Test configuration and exit
    #[arg(short = 't')]
    pub test: bool,
    /// Test configuration, dump it and exit
    #[arg(short = 'T')]
    pub dump: bool,
    /// Suppress non-error messages during configuration testing
    #[arg(short = 'q')]
    pub quiet: bool,
    /// Send signal to the running process: stop, quit, reopen, reload
    #[arg(short = 's', value_name = "signal", value_parser = ["stop", "quit", "reopen", "reload"])]
    pub signal: Option<String>,
    /// Show version and exit
    #[arg(short = 'v')]
    pub version: bool,
    /// Show version and configure options then exit
    #[arg(short = 'V')]
    pub version_configure: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start built-in backends and the balancer, and show balancing and failover
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How many built-in backends to start
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(2..=16))]
    pub backends: u16,
    /// Where the balancer listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Run the narration once and exit (instead of serving until Ctrl+C)
    #[arg(long)]
    pub once: bool,
}

impl Cli {
    /// The prefix, with a trailing `/` as nginx keeps it.
    pub fn prefix(&self) -> PathBuf {
        let p = self
            .prefix
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PREFIX));
        let p = absolute(&p);
        let mut s = p.into_os_string();
        if !s.to_string_lossy().ends_with('/') {
            s.push("/");
        }
        PathBuf::from(s)
    }

    /// The main configuration file: `-c`, relative to the prefix as nginx resolves it.
    pub fn conf_file(&self) -> PathBuf {
        let conf = self
            .conf
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONF));
        if conf.is_absolute() {
            conf
        } else {
            self.prefix().join(conf)
        }
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// `imbang version: imbang/0.1.0`
pub fn version_line() -> String {
    format!("imbang version: imbang/{}", env!("CARGO_PKG_VERSION"))
}

/// `-V`: the version, the build, and a `configure arguments:` line in nginx's spelling, so tools
/// that read `nginx -V` learn what this binary supports. Keep it true as features land.
pub fn configure_lines() -> String {
    let with: &[&str] = &[
        "--with-http_upstream_keepalive_module",
        "--with-http_upstream_zone_module",
    ];
    let without: &[&str] = &[
        "--without-http_gzip_module",
        "--without-http_ssi_module",
        "--without-http_charset_module",
        "--without-http_userid_module",
        "--without-http_access_module",
        "--without-http_auth_basic_module",
        "--without-http_mirror_module",
        "--without-http_autoindex_module",
        "--without-http_geo_module",
        "--without-http_map_module",
        "--without-http_split_clients_module",
        "--without-http_referer_module",
        "--without-http_fastcgi_module",
        "--without-http_uwsgi_module",
        "--without-http_scgi_module",
        "--without-http_grpc_module",
        "--without-http_memcached_module",
        "--without-http_limit_conn_module",
        "--without-http_limit_req_module",
        "--without-http_empty_gif_module",
        "--without-http_browser_module",
    ];
    format!(
        "{}\nbuilt by {} for {}\nconfigure arguments: --prefix={DEFAULT_PREFIX} --conf-path={DEFAULT_CONF} --error-log-path={DEFAULT_ERROR_LOG} --pid-path=logs/imbang.pid {} {}",
        version_line(),
        env!("IMBANG_RUSTC"),
        env!("IMBANG_TARGET"),
        with.join(" "),
        without.join(" ")
    )
}
