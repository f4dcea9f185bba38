//! The validated configuration: typed values, defaults applied, inheritance resolved,
//! cross-references checked. Runtime code reads only these types, never directive text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::source::SourceMap;

mod limits;
pub use limits::{LimitConn, LimitReq, LimitZone, LimitZoneKind, Limits};

/// A whole configuration, as `-t` checks it and the runtime compiles it.
#[derive(Clone, Debug)]
pub struct Config {
    pub main: Main,
    pub http: Option<Http>,
    /// `stream { }`: TCP load balancing (see [`crate::stream`]).
    pub stream: Option<Stream>,
    /// `[warn]` lines for `-t` and the error log: directives accepted without effect,
    /// and places where imbang deliberately differs from nginx.
    pub warnings: Vec<Warning>,
    /// Every file read, in order, with its text (for `-T`).
    pub sources: Arc<SourceMap>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub message: String,
    /// `path:line:col`
    pub location: String,
}

/// The main (top-level) context.
#[derive(Clone, Debug)]
pub struct Main {
    /// `daemon on|off`, default on.
    pub daemon: bool,
    /// `worker_processes N|auto`: the number of worker threads.
    pub worker_processes: Workers,
    /// `pid path`, resolved against the prefix; `None` for `pid off` (not nginx; never produced yet).
    pub pid: PathBuf,
    /// `error_log` targets of the main context; empty means the default one.
    pub error_log: Vec<ErrorLogSpec>,
    /// `worker_shutdown_timeout`, `None` = wait for in-flight requests without a bound.
    pub shutdown_timeout: Option<Duration>,
    /// `events { worker_connections N; }`: a cap on open client connections per worker.
    pub worker_connections: usize,
    /// `user USER [GROUP]`: whom a process started as root runs as once it has bound.
    pub user: Option<UserSpec>,
    /// `worker_rlimit_nofile N`: the open-file limit (RLIMIT_NOFILE) to set.
    pub rlimit_nofile: Option<u64>,
}

/// `user USER [GROUP]`, as written: the names are looked up by the process (`getpwnam`), not
/// here, so the configuration stays pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserSpec {
    pub user: String,
    /// The group; nginx's default is the group named like the user (not the user's primary
    /// group): `user www-data;` means group `www-data`.
    pub group: String,
    /// `path:line:col` of the directive, for the errors and warnings of the lookup.
    pub location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workers {
    Auto,
    Count(usize),
}

impl Workers {
    /// The number of worker threads: `auto` is the number of CPUs.
    pub fn count(self) -> usize {
        match self {
            Self::Auto => std::thread::available_parallelism().map_or(1, |n| n.get()),
            Self::Count(n) => n,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorLogSpec {
    pub target: LogTarget,
    pub level: LogLevel,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    File(PathBuf),
    /// `syslog:server=...`: each line to a syslog server, with its level as severity.
    Syslog(Arc<SyslogSpec>),
}

/// nginx's error-log severities, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Emerg,
    Alert,
    Crit,
    Error,
    Warn,
    Notice,
    Info,
    Debug,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "emerg" => Self::Emerg,
            "alert" => Self::Alert,
            "crit" => Self::Crit,
            "error" => Self::Error,
            "warn" => Self::Warn,
            "notice" => Self::Notice,
            "info" => Self::Info,
            "debug" => Self::Debug,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Emerg => "emerg",
            Self::Alert => "alert",
            Self::Crit => "crit",
            Self::Error => "error",
            Self::Warn => "warn",
            Self::Notice => "notice",
            Self::Info => "info",
            Self::Debug => "debug",
        }
    }
}

/// The `http {}` block.
#[derive(Clone, Debug)]
pub struct Http {
    pub servers: Vec<Server>,
    pub upstreams: Vec<Upstream>,
    /// http-level `error_log` targets (request errors are logged to them too).
    pub error_log: Vec<ErrorLogSpec>,
    /// http-level `keepalive_timeout`: how long an idle client connection (or one sending its
    /// request head) is kept; zero disables keep-alive. nginx's default: 75s.
    pub keepalive_timeout: Duration,
    /// http-level `send_timeout`: the longest a write to a client may stay blocked (60s).
    pub send_timeout: Duration,
    /// http-level `client_header_timeout`: the longest a request head may take to arrive (60s).
    pub client_header_timeout: Duration,
    /// http-level `large_client_header_buffers number size` (4 8k): the longest request or
    /// header line is `size`, a whole head at most `number × size`.
    pub header_buffers: usize,
    pub header_buffer_size: usize,
    /// http-level `client_header_buffer_size` (1k): what a request head is first read into.
    pub client_header_buffer_size: usize,
    /// Access-log files written through a buffer (`buffer=`, `gzip`), by path. As in nginx the
    /// buffer belongs to the file: every `access_log` to that path uses it, with or without
    /// the parameters.
    pub log_buffers: HashMap<PathBuf, LogBuffer>,
    /// Every `health_check` of every location, in file order.
    pub health_checks: Vec<HealthCheck>,
    /// `map` blocks, in file order.
    pub maps: Vec<MapSpec>,
    /// `limit_req_zone` and `limit_conn_zone`, in file order.
    pub limit_zones: Vec<LimitZone>,
}

/// `map source $name { key value; ... }`: `$name` is `source` (text with variables) looked up
/// among the keys.
#[derive(Clone, Debug)]
pub struct MapSpec {
    pub source: String,
    /// The variable's name, without `$`.
    pub name: String,
    /// `default value` (empty when absent, as nginx).
    pub default: String,
    /// Keys and values in file order.
    pub entries: Vec<(MapKey, String)>,
    /// `path:line:col` of the `map` line.
    pub location: String,
}

/// A `map` key.
#[derive(Clone, Debug)]
pub enum MapKey {
    /// A string, compared without regard to case (nginx lower-cases both sides).
    Exact(String),
    /// `~regex` / `~*regex` (the latter compiled case-insensitive).
    Regex(regex::Regex),
    /// With `hostnames`: `.example.com` (the name and its subdomains) or `*.example.com` (its
    /// subdomains): the part from the dot, lower case; `dot_too` for the `.example.com` form.
    Suffix { suffix: String, dot_too: bool },
    /// With `hostnames`: `www.example.*`: the part before the `*`, lower case.
    Prefix(String),
}

/// One `server {}` block.
#[derive(Clone, Debug)]
pub struct Server {
    pub listens: Vec<ListenSpec>,
    /// `server_name` entries in file order; `""` (the default) matches requests without a Host.
    pub names: Vec<ServerName>,
    pub locations: Vec<Location>,
    /// Settings of the server level itself, used when no location matches.
    pub conf: Arc<LocationConf>,
    /// `path:line:col` of the `server` directive, for messages.
    pub location: String,
    /// The `ssl_*` settings in force for this server (its own, else the http level's).
    pub ssl: Arc<SslSpec>,
    /// `status_zone` of the server: the server zone all its requests are counted in.
    pub status_zone: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenSpec {
    /// The address to bind; `0.0.0.0:port` / `[::]:port` for a wildcard.
    pub addr: SocketAddr,
    pub default_server: bool,
    /// `reuseport`: a listening socket of its own for each worker (`SO_REUSEPORT`), the kernel
    /// spreading new connections over them, instead of one socket all workers accept on.
    pub reuseport: bool,
    /// `listen ... ssl`: connections to this address speak TLS (one `ssl` makes the whole
    /// address TLS, as in nginx).
    pub ssl: bool,
    /// `listen ... http2` (nginx before 1.25.1): HTTP/2 offered by ALPN on this address.
    pub http2: bool,
    /// `listen ... proxy_protocol`: connections begin with a PROXY protocol header
    /// ([`crate::proxy_protocol`]); one such `listen` makes the whole address expect it.
    pub proxy_protocol: bool,
    /// `path:line:col` of the `listen` directive (for bind errors).
    pub location: String,
}

/// One `server_name` entry, normalised to lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerName {
    /// `example.com`, or `""` for requests without a Host header.
    Exact(String),
    /// `*.example.com` or `.example.com` (stored as the suffix `.example.com`).
    /// `.example.com` also matches `example.com` itself.
    LeadingWildcard { suffix: String, also_bare: bool },
    /// `www.*` (stored as the prefix `www.`).
    TrailingWildcard(String),
    /// `~^www\d+\.example\.net$`, without the `~`.
    Regex(String),
}

/// How a `location` matches (nginx's modifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocationMatch {
    /// `location = /path`
    Exact,
    /// `location /path`
    Prefix,
    /// `location ^~ /path`: a prefix that, when it is the longest, stops the regex search.
    PrefixNoRegex,
    /// `location ~ re` / `location ~* re`
    Regex { case_insensitive: bool },
    /// `location @name`: only reachable by internal redirects.
    Named,
}

/// One `location` block with its settings resolved (inherited values already applied).
#[derive(Clone, Debug)]
pub struct Location {
    pub kind: LocationMatch,
    pub pattern: String,
    pub conf: Arc<LocationConf>,
    pub locations: Vec<Location>,
    /// `path:line:col` of the `location` directive.
    pub location: String,
}

/// What a request that ends up in a location gets, with inheritance applied.
#[derive(Clone, Debug)]
pub struct LocationConf {
    pub action: Option<Action>,
    /// `status_zone` of the location (inherited by nested ones; `off` clears it): the
    /// location zone its requests are counted in.
    pub status_zone: Option<String>,
    /// `charset` (with `charset_types`, `source_charset`); `None` with `charset off`.
    pub charset: Option<Arc<Charset>>,
    /// `expires`; `None` with `expires off`.
    pub expires: Option<Expires>,
    /// `sub_filter` (with `sub_filter_once`, `_types`, `_last_modified`); `None` without one.
    pub sub_filter: Option<Arc<SubFilter>>,
    /// `gzip` and its companions (src/proxy/gzip.rs).
    pub gzip: Arc<Gzip>,
    /// `chunked_transfer_encoding` (on); off: a response of unknown length to an HTTP/1.1
    /// client is delimited by closing the connection.
    pub chunked_transfer_encoding: bool,
    /// `uninitialized_variable_warn` (on).
    pub uninitialized_variable_warn: bool,
    /// `limit_except`: what requests with other methods get instead of this.
    pub limit_except: Option<Arc<LimitExcept>>,
    pub proxy: ProxySettings,
    /// `default_type`: the Content-Type of responses imbang makes itself (`return 200 text`).
    pub default_type: String,
    /// `access_log` targets in force here; empty for `access_log off`.
    pub access_log: Arc<[AccessLogSpec]>,
    /// `add_header` lines in force here (inherited only if this level has none, as nginx).
    pub add_headers: Vec<AddHeader>,
    /// `server_tokens on|off`: the version in the `Server` header and error pages.
    pub server_tokens: bool,
    /// `client_max_body_size` in bytes; 0 = no limit. nginx's default: 1m.
    pub client_max_body_size: u64,
    /// `error_page` lines in force here (inherited only if this level has none, as nginx).
    pub error_pages: Vec<ErrorPage>,
    /// `proxy_intercept_errors`: peer responses with status >= 300 go through `error_page` too.
    pub intercept_errors: bool,
    /// `internal`: only internal redirects (`error_page`) may reach this location.
    pub internal: bool,
    /// The rewrite module's statements of this level only (`set`, `rewrite`, `if`, `return`,
    /// `break`), in order: not inherited, as nginx runs a level's script only for requests
    /// that end up at that level.
    pub script: Vec<Stmt>,
    /// `rewrite_log on|off` (inherited).
    pub rewrite_log: bool,
    /// `keepalive_requests`: after this many requests a client connection is closed (1000).
    pub keepalive_requests: u64,
    /// `keepalive_time`: a client connection older than this is closed after the request
    /// being answered (1h).
    pub keepalive_time: Duration,
    /// `client_body_timeout`: the longest pause between two reads of a request body (60s).
    pub client_body_timeout: Duration,
    /// `keepalive_timeout` of the level that answered: how long the client connection may
    /// then stay idle (75s; zero: close after the response).
    pub keepalive_timeout: Duration,
    /// `send_timeout` of the level that answered: the longest a write of its response may
    /// stay blocked (60s).
    pub client_send_timeout: Duration,
    /// `client_body_buffer_size` in bytes: a body of known length up to this is read into
    /// memory before the first attempt, so it can be sent again to the next peer.
    pub client_body_buffer_size: u64,
    /// `client_body_temp_path`: where a buffered body larger than `client_body_buffer_size`
    /// is kept, in an unnamed file (the system's temporary directory unless set).
    pub client_body_temp_path: Arc<PathBuf>,
    /// `allow` / `deny` rules in force here, in order (inherited only if this level has none,
    /// as nginx).
    pub access: Vec<AccessRule>,
    /// The realip module's settings; `None` where no `set_real_ip_from` applies (it does nothing).
    pub realip: Option<Arc<RealIp>>,
    /// `root`, under the prefix when relative (`<prefix>/html` by default): imbang serves no
    /// files, but `$document_root`, `$realpath_root` and `$request_filename` say what nginx's do.
    pub root: String,
    /// `resolver` and `resolver_timeout` in force here: names in a `proxy_pass` with variables.
    pub resolver: Option<Resolver>,
    /// `auth_request`, `auth_basic`, `satisfy`: `None` where neither check is in force.
    pub auth: Option<Arc<AuthSpec>>,
    /// `limit_req`, `limit_conn`, `limit_rate` and their companions; `None` without any.
    pub limits: Option<std::sync::Arc<Limits>>,
    /// How a location without a handler of its own serves files (`alias`, `index`,
    /// `try_files`, `types`, `etag`, ...): see [`crate::files`].
    pub files: Arc<FilesConf>,
}

/// `allow address|CIDR|all` or `deny ...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRule {
    pub allow: bool,
    /// The network (address, prefix length); `None`: `all`.
    pub net: Option<(std::net::IpAddr, u8)>,
}

impl AccessRule {
    /// Whether the rule is about `ip` (an IPv4 address mapped into IPv6 is tested as IPv4).
    pub fn covers(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let Some((net, prefix)) = self.net else {
            return true;
        };
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == net.is_ipv4() && network(ip, prefix) == net
    }
}

/// `ip` with all but its first `prefix` bits cleared.
pub fn network(ip: std::net::IpAddr, prefix: u8) -> std::net::IpAddr {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    }
}

/// nginx's access check: the first rule that covers the client decides; none: allowed.
pub fn access_allowed(rules: &[AccessRule], ip: std::net::IpAddr) -> bool {
    rules.iter().find(|r| r.covers(ip)).is_none_or(|r| r.allow)
}

/// `error_page code ... [=[response]] uri|@name|URL;`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPage {
    pub codes: Vec<u16>,
    pub status: ErrorPageStatus,
    /// A URI (internal redirect), `@name` (named location) or `http(s)://...` (302 redirect).
    pub target: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorPageStatus {
    /// No `=`: the original status.
    Original,
    /// `=`: whatever the target answers.
    Target,
    /// `=NNN`.
    Fixed(u16),
}

/// nginx's default `client_body_buffer_size`: two memory pages, 8k on x86-64.
pub const DEFAULT_CLIENT_BODY_BUFFER_SIZE: u64 = 8 * 1024;

/// `set $name value;`
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetVar {
    /// Without the `$`.
    pub name: String,
    pub value: String,
    /// `path:line:col` of the directive.
    pub location: String,
}

/// One `access_log path [format [buffer=size] [gzip[=level]] [flush=time] [if=condition]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessLogSpec {
    /// The file; for syslog, the target as written (`syslog:server=...`), which only names it.
    pub path: PathBuf,
    /// `syslog:...`: lines go to a syslog server instead of a file.
    pub syslog: Option<Arc<SyslogSpec>>,
    pub format: Arc<LogFormat>,
    /// `if=condition`: the line is not written when the value is empty or `0`.
    pub condition: Option<LogCondition>,
}

/// `syslog:server=address[:port][,facility=f][,severity=s][,tag=t][,nohostname]` (nginx's
/// ngx_syslog): RFC 3164 messages over UDP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyslogSpec {
    pub server: std::net::SocketAddr,
    /// 0 (`kern`) … 23 (`local7`, the default).
    pub facility: u8,
    /// 0 (`emerg`) … 7 (`debug`); `info` by default.
    pub severity: u8,
    /// `nginx` by default (what rsyslog rules for nginx expect).
    pub tag: String,
    /// Without `nohostname`, the host's name follows the time.
    pub hostname: bool,
}

/// The text of an `if=` parameter and its `path:line:col` (for variable errors).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogCondition {
    pub text: String,
    pub location: String,
}

/// How lines to one access-log file are buffered (`buffer=`, `flush=`, `gzip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogBuffer {
    /// Bytes collected in memory before a write (per worker, as nginx's per-process buffer).
    pub size: usize,
    /// `flush=`: the longest a line waits in the buffer; `None`: until the buffer fills.
    pub flush: Option<Duration>,
    /// `gzip[=level]`: each write is one gzip member compressed at this level (1..=9).
    pub gzip: Option<u32>,
}

/// `log_format name [escape=default|json|none] 'text' ...;` (the strings joined).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    pub name: String,
    pub escape: LogEscape,
    pub text: String,
    /// `path:line:col` of the `log_format` (for variable errors); empty for `combined`.
    pub location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEscape {
    /// `"`, `\` and bytes outside 0x20..0x7e as `\xHH`; an empty value is `-`.
    Default,
    /// JSON string escapes; an empty value stays empty.
    Json,
    None,
}

/// nginx's predefined format.
pub const COMBINED: &str = "$remote_addr - $remote_user [$time_local] \"$request\" $status $body_bytes_sent \"$http_referer\" \"$http_user_agent\"";

#[derive(Clone, Debug)]
pub enum Action {
    Proxy(ProxyPass),
    /// `proxy_pass` whose URL has variables: where it goes is decided per request.
    ProxyVars(ProxyPassVars),
    /// `api [write=on|off]` (NGINX Plus's live API): JSON about the running imbang.
    Api(Api),
    /// `stub_status` (ngx_http_stub_status_module): the connection and request figures.
    StubStatus,
    /// `prometheus all` (Angie's syntax): metrics in Prometheus's text format.
    Prometheus,
}

/// `api [write=on|off]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Api {
    /// `write=on`: POST, PATCH and DELETE on upstream servers (NGINX Plus); else they get 405.
    pub write: bool,
}

/// `return code [text|URL]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Return {
    pub status: u16,
    /// A body for non-redirect codes, a `Location` for 301/302/303/307/308.
    pub text: Option<String>,
    /// `path:line:col` of the directive.
    pub location: String,
}

/// `proxy_pass http://target[/uri]`.
#[derive(Clone, Debug)]
pub struct ProxyPass {
    /// The name of an `upstream` block; an implicit one is created for `host:port` targets.
    pub upstream: String,
    /// The text after `http://` up to the URI: what `$proxy_host` is (the Host sent upstream).
    pub proxy_host: String,
    /// `proxy_pass https://`: TLS to the peers (with the location's `proxy_ssl_*`).
    pub tls: bool,
    /// The URI part, if `proxy_pass` has one (`http://app/` has `/`).
    pub uri: Option<String>,
    /// `path:line:col` of the `proxy_pass` directive.
    pub location: String,
}

/// `proxy_pass http://$target...`: the URL is rendered for each request. Its authority names
/// an `upstream` block (or the group of a literal `proxy_pass http://host:port`), or is an IP
/// address with an optional port; a rendered URI part is the whole request target, as is.
#[derive(Clone, Debug)]
pub struct ProxyPassVars {
    /// The URL as written, variables not yet compiled (that needs the `set` names).
    pub url: String,
    /// `path:line:col` of the URL argument.
    pub location: String,
}

/// Upstream-facing settings of a location (with nginx's defaults).
#[derive(Clone, Debug)]
pub struct ProxySettings {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub send_timeout: Duration,
    pub next_upstream: NextUpstream,
    /// `proxy_next_upstream_tries`, 0 = no limit.
    pub next_upstream_tries: u32,
    /// `proxy_next_upstream_timeout`, `None` = no limit.
    pub next_upstream_timeout: Option<Duration>,
    /// `proxy_set_header` pairs in force here (nginx's inheritance: only if this level has none).
    pub set_headers: Vec<(String, String)>,
    pub http_version_1_0: bool,
    /// `proxy_hide_header` names (lower case), beside nginx's default hidden ones.
    pub hide_headers: Vec<String>,
    /// `proxy_pass_header` names (lower case): default-hidden headers let through.
    pub pass_headers: Vec<String>,
    /// `proxy_pass_request_headers` (default on).
    pub pass_request_headers: bool,
    /// `proxy_pass_request_body` (default on).
    pub pass_request_body: bool,
    /// `proxy_request_buffering` (default on): the body is read whole before the first
    /// attempt (memory, then a temporary file), so any attempt can send it again.
    pub request_buffering: bool,
    /// `proxy_redirect`.
    pub redirect: Redirect,
    /// `proxy_cookie_domain`, `proxy_cookie_path`, `proxy_cookie_flags`; `None` when all are off.
    pub cookies: Option<Arc<CookieRewrite>>,
    /// `proxy_socket_keepalive`: SO_KEEPALIVE on new connections to peers.
    pub socket_keepalive: bool,
    /// `proxy_ssl_*`: TLS to peers, for `proxy_pass https://`.
    pub ssl: Arc<UpstreamSslSpec>,
}

// --- proxy_ssl (upstream TLS)

/// A location's `proxy_ssl_*` settings (nginx's defaults, but `proxy_ssl_server_name`). Files
/// are named with the `path:line:col` of their directive; they are read when the
/// configuration is compiled ([`crate::pool::tls::compile`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamSslSpec {
    /// `proxy_ssl_server_name` (imbang: on; nginx: off).
    pub server_name: bool,
    /// Whether `proxy_ssl_server_name` was written (the `-t` warning is for the default).
    pub server_name_set: bool,
    /// `proxy_ssl_name` (may have variables); the `proxy_pass` host without a port otherwise.
    pub name: Option<String>,
    pub verify: bool,
    /// Where `proxy_ssl_verify on` is written.
    pub verify_at: Option<String>,
    pub verify_depth: u32,
    pub trusted_certificate: Option<(PathBuf, String)>,
    pub crl: Option<(PathBuf, String)>,
    pub certificate: Option<(PathBuf, String)>,
    pub certificate_key: Option<(PathBuf, String)>,
    pub tls12: bool,
    pub tls13: bool,
    /// `proxy_ssl_ciphers` mapped to rustls's names; `None`: its defaults.
    pub ciphers: Option<Vec<String>>,
    pub session_reuse: bool,
}

impl Default for UpstreamSslSpec {
    fn default() -> Self {
        Self {
            server_name: true,
            server_name_set: false,
            name: None,
            verify: false,
            verify_at: None,
            verify_depth: 1,
            trusted_certificate: None,
            crl: None,
            certificate: None,
            certificate_key: None,
            tls12: true,
            tls13: true,
            ciphers: None,
            session_reuse: true,
        }
    }
}

// --- expires (directives)

/// nginx's `expires`: the `Expires` and `Cache-Control` headers of successful and redirect
/// responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expires {
    /// `epoch`: `Expires` in 1970, `Cache-Control: no-cache`.
    Epoch,
    /// `max`: `Expires` in 2037, `Cache-Control: max-age=315360000`.
    Max,
    /// `time`: seconds from the response's time (negative: in the past, `no-cache`).
    Access(i64),
}

// --- charset (directives)

/// nginx's `charset name`: responses of `types` whose `Content-Type` has no parameters get
/// `; charset=name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Charset {
    pub name: String,
    /// `charset_types`, lower case (`*`: any type).
    pub types: Vec<String>,
    /// `source_charset`: the charset responses without one are in. Another than `name` would
    /// need recoding: nginx logs "no charset_map" and leaves the response alone, as imbang.
    pub source: Option<String>,
}

/// nginx's default `charset_types`.
pub const DEFAULT_CHARSET_TYPES: &[&str] = &[
    "text/html",
    "text/xml",
    "text/plain",
    "text/vnd.wap.wml",
    "application/javascript",
    "application/rss+xml",
];

// --- proxy_cookie_* (directives)

/// How `Set-Cookie` headers from the peer are rewritten (nginx's `proxy_cookie_*`), each list
/// tried in order, the first match winning.
#[derive(Clone, Debug, Default)]
pub struct CookieRewrite {
    /// `proxy_cookie_domain`: on the `Domain` attribute.
    pub domains: Vec<CookieRule>,
    /// `proxy_cookie_path`: on the `Path` attribute.
    pub paths: Vec<CookieRule>,
    /// `proxy_cookie_flags`: by cookie name.
    pub flags: Vec<CookieFlags>,
}

/// One `proxy_cookie_domain`/`proxy_cookie_path` rule.
#[derive(Clone, Debug)]
pub struct CookieRule {
    pub pattern: CookieMatch,
    /// With `$1`..`$9` for a regex's captures.
    pub replacement: String,
}

/// What a cookie rule matches.
#[derive(Clone, Debug)]
pub enum CookieMatch {
    /// Domains: the whole domain, without regard to case (a leading `.` aside). Paths: a prefix.
    /// Cookie names (`proxy_cookie_flags`): the whole name, without regard to case.
    Text(String),
    /// `~` (`~*` without regard to case): anywhere in the value, which is then replaced whole.
    Regex(regex::Regex),
}

/// One `proxy_cookie_flags cookie flag...` rule.
#[derive(Clone, Debug)]
pub struct CookieFlags {
    pub cookie: CookieMatch,
    pub flags: Vec<CookieFlag>,
}

/// A flag of `proxy_cookie_flags`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CookieFlag {
    Secure,
    NoSecure,
    HttpOnly,
    NoHttpOnly,
    SameSiteStrict,
    SameSiteLax,
    SameSiteNone,
    NoSameSite,
}

impl CookieFlag {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "secure" => Self::Secure,
            "nosecure" => Self::NoSecure,
            "httponly" => Self::HttpOnly,
            "nohttponly" => Self::NoHttpOnly,
            "samesite=strict" => Self::SameSiteStrict,
            "samesite=lax" => Self::SameSiteLax,
            "samesite=none" => Self::SameSiteNone,
            "nosamesite" => Self::NoSameSite,
            _ => return None,
        })
    }
}

/// `proxy_redirect`: how `Location` and `Refresh` headers from the peer are rewritten.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// nginx's `default`: `http://<proxy_pass host><proxy_pass URI>` → the location prefix
    /// (only when `proxy_pass` has a URI part).
    Default,
    Off,
    /// `proxy_redirect from to;` pairs, tried in order; the first matching prefix is replaced.
    Rules(Vec<(String, String)>),
}

/// `add_header name value [always]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddHeader {
    pub name: String,
    pub value: String,
    /// Also on error responses (otherwise only 200, 201, 204, 206, 301, 302, 303, 304, 307, 308).
    pub always: bool,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(60),
            next_upstream: NextUpstream::default(),
            next_upstream_tries: 0,
            next_upstream_timeout: None,
            set_headers: Vec::new(),
            http_version_1_0: false,
            hide_headers: Vec::new(),
            pass_headers: Vec::new(),
            pass_request_headers: true,
            pass_request_body: true,
            request_buffering: true,
            redirect: Redirect::Default,
            cookies: None,
            socket_keepalive: false,
            ssl: Arc::default(),
        }
    }
}

/// `proxy_next_upstream`: when a failed attempt may move on to the next peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextUpstream {
    pub error: bool,
    pub timeout: bool,
    pub invalid_header: bool,
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    pub http_403: bool,
    pub http_404: bool,
    pub http_429: bool,
    pub non_idempotent: bool,
}

impl Default for NextUpstream {
    /// nginx's default: `error timeout`.
    fn default() -> Self {
        Self {
            error: true,
            timeout: true,
            invalid_header: false,
            http_500: false,
            http_502: false,
            http_503: false,
            http_504: false,
            http_403: false,
            http_404: false,
            http_429: false,
            non_idempotent: false,
        }
    }
}

/// One `upstream {}` block (or the implicit group of a `proxy_pass http://host:port`).
#[derive(Clone, Debug)]
pub struct Upstream {
    pub name: String,
    pub peers: Vec<PeerSpec>,
    /// `least_conn`, `ip_hash`, `hash`, `random`; round robin when none is given.
    pub method: BalanceMethod,
    /// `keepalive N`: idle connections kept per peer address, in the one pool the workers
    /// share (nginx: per worker, for the whole group). imbang keeps connections alive by
    /// default (nginx does not without this directive).
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    /// `keepalive_requests`: requests one upstream connection carries before it is closed (1000).
    pub keepalive_requests: u64,
    /// `keepalive_time`: the longest an upstream connection is kept in use (1h).
    pub keepalive_time: Duration,
    /// `queue N [timeout=time]` (NGINX Plus): requests that find every eligible peer at
    /// `max_conns` wait for a free slot instead of failing.
    pub queue: Option<QueueSpec>,
    /// True when made from a `proxy_pass http://host:port` with no `upstream` block.
    pub implicit: bool,
    pub location: String,
    /// `server name resolve` lines: peers that follow DNS (beside the fixed `peers`).
    pub resolve: Option<UpstreamResolve>,
    /// `zone`: the group's servers may change at run time (NGINX Plus's API writes).
    pub zone: bool,
    /// `state FILE` (NGINX Plus): the servers come from the file (its `server` lines, read at
    /// load) and every API change is written back to it.
    pub state: Option<std::path::PathBuf>,
}

impl Upstream {
    /// The group nginx makes for a `proxy_pass` target with no `upstream` block: the addresses
    /// `name` stands for, each with nginx's default `server` parameters.
    pub fn implicit(name: &str, addrs: Vec<SocketAddr>, location: String) -> Self {
        let peers = addrs
            .into_iter()
            .map(|addr| PeerSpec::new(addr, name))
            .collect();
        Self {
            name: name.to_owned(),
            peers,
            method: BalanceMethod::RoundRobin,
            keepalive: DEFAULT_KEEPALIVE,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 1000,
            keepalive_time: Duration::from_secs(3600),
            queue: None,
            implicit: true,
            location,
            resolve: None,
            zone: false,
            state: None,
        }
    }
}

/// `health_check` in a location (NGINX Plus): every peer of the location's upstream is sent a
/// request every `interval`, and one that fails `fails` checks in a row gets no requests until
/// it passes `passes` in a row.
#[derive(Clone, Debug)]
pub struct HealthCheck {
    /// The upstream group of the location's `proxy_pass`.
    pub upstream: String,
    /// `uri=` (default `/`).
    pub uri: String,
    /// `port=`: checks go to this port of each peer's address instead of the peer's own.
    pub port: Option<u16>,
    /// `interval=` (5s).
    pub interval: Duration,
    /// `jitter=` (0): each check is delayed by up to this much more, at random.
    pub jitter: Duration,
    /// `fails=` (1): failed checks in a row that make a peer unhealthy.
    pub fails: u32,
    /// `passes=` (1): passed checks in a row that make an unhealthy peer healthy again.
    pub passes: u32,
    /// `mandatory`: a peer new to the check gets no requests until its first check passes.
    pub mandatory: bool,
    /// `persistent` (with `mandatory`): a peer healthy under the checks in force before a reload
    /// is not held back by a check the reload added.
    pub persistent: bool,
    /// `match=`: what a response must show to pass; `None`: a 2xx or 3xx status.
    pub matcher: Option<Arc<Match>>,
    /// The `Host` field of the check requests: the location's `proxy_set_header Host` when it
    /// is a literal, the `proxy_pass` host (nginx's `$proxy_host`) otherwise.
    pub host: String,
    /// The location's `proxy_http_version 1.0`.
    pub http10: bool,
    /// `proxy_pass https://`: the location's `proxy_ssl_*`, and the name checks connect with
    /// (`proxy_ssl_name` when it has no variables, the `proxy_pass` host otherwise).
    pub tls: Option<(Arc<UpstreamSslSpec>, String)>,
    /// The location's `proxy_connect_timeout`, `proxy_send_timeout`, `proxy_read_timeout`.
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    /// `path:line:col` of the `health_check` line.
    pub location: String,
    /// A stream `health_check` (TCP): connect, then the stream `match`'s `send`/`expect`.
    pub stream: Option<StreamCheck>,
}

/// What a stream health check sends and expects (a stream `match` block; none: the connect
/// alone passes).
#[derive(Clone, Debug, Default)]
pub struct StreamCheck {
    /// `send "text"`: written once connected (nginx's escapes `\x..`, `\r`, `\n` decoded).
    pub send: Vec<u8>,
    /// `expect "text"` (the answer starts with it) or `expect ~ "regex"`.
    pub expect: Option<StreamExpect>,
}

#[derive(Clone, Debug)]
pub enum StreamExpect {
    Prefix(Vec<u8>),
    Regex(regex::bytes::Regex),
}

impl HealthCheck {
    /// What makes two checks the same check across a reload: everything but where it is
    /// written. A reload that keeps a check keeps its verdicts on every peer.
    pub fn identity(&self) -> String {
        let matcher = self.matcher.as_ref().map(|m| m.identity());
        format!(
            "{:?}",
            (
                &self.upstream,
                &self.uri,
                self.port,
                self.interval,
                self.jitter,
                (self.fails, self.passes, self.mandatory, self.persistent),
                matcher,
                &self.host,
                self.http10,
                &self.tls,
                (self.connect_timeout, self.send_timeout, self.read_timeout),
                self.stream
                    .as_ref()
                    .map(|s| (&s.send, format!("{:?}", s.expect))),
            )
        )
    }
}

/// A `match name { ... }` block: the tests a health check's response must pass, all of them.
#[derive(Clone, Debug)]
pub struct Match {
    pub name: String,
    /// `status ...;` (at most one).
    pub status: Option<StatusTest>,
    /// `header ...;` lines.
    pub headers: Vec<HeaderTest>,
    /// `body ~ re;` / `body !~ re;` (at most one): the first 256 KiB of the body are tested.
    pub body: Option<BodyTest>,
}

impl Match {
    fn identity(&self) -> String {
        let headers: Vec<String> = self.headers.iter().map(HeaderTest::identity).collect();
        let body = (self.body.as_ref()).map(|b| (b.negate, b.regex.as_str().to_owned()));
        format!("{:?}", (&self.name, &self.status, headers, body))
    }
}

/// `status [!] code|low-high ...`: the status is one of the codes or in one of the ranges
/// (`!`: is none of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusTest {
    pub negate: bool,
    /// Inclusive ranges; a single code is a range of one.
    pub ranges: Vec<(u16, u16)>,
}

impl StatusTest {
    pub fn passes(&self, status: u16) -> bool {
        let listed = (self.ranges.iter()).any(|&(low, high)| (low..=high).contains(&status));
        listed != self.negate
    }
}

/// One `header` line of a `match` block. Names are lower case; a test of a value holds when
/// some field of that name passes it.
#[derive(Clone, Debug)]
pub enum HeaderTest {
    /// `header Name;`
    Present(String),
    /// `header ! Name;`
    Absent(String),
    /// `header Name = value;`
    Equals(String, String),
    /// `header Name != value;` (the field must be there, with another value)
    NotEquals(String, String),
    /// `header Name ~ regex;`
    Matches(String, regex::Regex),
    /// `header Name !~ regex;` (the field must be there, with a value that does not match)
    NotMatches(String, regex::Regex),
}

impl HeaderTest {
    fn identity(&self) -> String {
        match self {
            Self::Matches(name, re) => format!("{name} ~ {}", re.as_str()),
            Self::NotMatches(name, re) => format!("{name} !~ {}", re.as_str()),
            other => format!("{other:?}"),
        }
    }
}

/// `body ~ regex;` (`negate`: `body !~ regex;`).
#[derive(Clone, Debug)]
pub struct BodyTest {
    pub negate: bool,
    pub regex: regex::bytes::Regex,
}

/// Idle keep-alive connections kept per upstream when the config does not say `keepalive`:
/// imbang keeps upstream connections alive by default (nginx closes them).
pub const DEFAULT_KEEPALIVE: usize = 32;

/// `queue N [timeout=time]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueSpec {
    /// Requests that may wait at the same time; one more gets 502.
    pub size: usize,
    /// How long one may wait (default 60s); then 502.
    pub timeout: Duration,
}

/// How an `upstream` block chooses among its peers (the last method directive of the block;
/// nginx warns "load balancing method redefined" and keeps the last too).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum BalanceMethod {
    /// No method directive: smooth weighted round robin.
    #[default]
    RoundRobin,
    /// `least_conn`: fewest attempts in flight per unit of weight.
    LeastConn,
    /// `ip_hash`: the client's address (IPv4: its first three octets).
    IpHash,
    /// `hash key [consistent [bounded=factor]]`: `key` is the directive's text, variables not
    /// yet evaluated.
    Hash {
        key: String,
        consistent: bool,
        /// `bounded=factor` (imbang's): no peer takes more than `factor` × the average load;
        /// stored in thousandths (`bounded=1.25` is 1250).
        bounded: Option<u32>,
        /// `path:line:col` of the `hash` directive (for errors in `key`).
        location: String,
    },
    /// `least_time header|last_byte [inflight]` (NGINX Plus): the lowest latency × load.
    LeastTime { mode: TimeMode, inflight: bool },
    /// `random [two [least_conn|least_time=header|last_byte]]`: `two` picks two peers and
    /// keeps the one with fewer attempts in flight per unit of weight, or with `least_time`
    /// (NGINX Plus) the one with the lower latency × load.
    Random {
        two: bool,
        least_time: Option<TimeMode>,
    },
}

/// What `least_time` measures to: the response head or its last byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeMode {
    Header,
    LastByte,
}

impl BalanceMethod {
    /// Whether the method picks by measured latency (NGINX Plus's `least_time`, and `random two
    /// least_time=`), so attempts must be timed.
    pub fn ranks_by_latency(&self) -> bool {
        matches!(
            self,
            Self::LeastTime { .. }
                | Self::Random {
                    least_time: Some(_),
                    ..
                }
        )
    }
}

impl TimeMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "header" => Some(Self::Header),
            "last_byte" => Some(Self::LastByte),
            _ => None,
        }
    }
}

impl BalanceMethod {
    /// The directive that sets this method, as written in a config.
    pub fn directive(&self) -> &'static str {
        match self {
            Self::RoundRobin => "(round robin)",
            Self::LeastConn => "least_conn",
            Self::IpHash => "ip_hash",
            Self::Hash { .. } => "hash",
            Self::LeastTime { .. } => "least_time",
            Self::Random { .. } => "random",
        }
    }
}

/// One `server` line of an `upstream` block, after its name is resolved
/// (a name that resolves to several addresses gives several peers, as in nginx).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerSpec {
    pub addr: SocketAddr,
    /// The text as written (`app1.internal:3000`), for `$upstream_addr` and logs use `addr`.
    pub name: String,
    pub weight: u32,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub backup: bool,
    pub down: bool,
    /// 0 = no limit.
    pub max_conns: u32,
    /// `slow_start=time` (NGINX Plus): after the peer recovers, or is added by a reload, its
    /// weight climbs from about 0 to `weight` over this time. Zero = off.
    pub slow_start: Duration,
    /// `drain` (NGINX Plus, set through the API): no new requests; shown as `draining`.
    pub drain: bool,
    /// The API's id of the server, in a group whose servers the API may change (`zone`);
    /// `None` elsewhere (the id is then the peer's position).
    pub id: Option<u32>,
}

impl PeerSpec {
    /// A `server` line with nginx's defaults: `weight=1 max_fails=1 fail_timeout=10s`.
    pub fn new(addr: SocketAddr, name: impl Into<String>) -> Self {
        Self {
            addr,
            name: name.into(),
            weight: 1,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            backup: false,
            down: false,
            max_conns: 0,
            slow_start: Duration::ZERO,
            drain: false,
            id: None,
        }
    }
}

// --- realip (ngx_http_realip_module; docs/realip.md)

/// `set_real_ip_from`, `real_ip_header` and `real_ip_recursive` of one level, merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealIp {
    /// The trusted addresses: networks (address, prefix length). A `unix:` entry trusts
    /// clients on Unix sockets, which imbang does not listen on, so it is kept as nothing.
    pub from: Vec<(std::net::IpAddr, u8)>,
    pub header: RealIpHeader,
    pub recursive: bool,
}

/// Where `real_ip_header` takes the client address from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RealIpHeader {
    /// `X-Real-IP` (the default).
    XRealIp,
    /// `X-Forwarded-For`: every such field, the last address first.
    XForwardedFor,
    /// `proxy_protocol`: the source address of the connection's PROXY protocol header
    /// (`listen ... proxy_protocol`), with its port.
    ProxyProtocol,
    /// Any other field, by its lower-case name.
    Other(String),
}

impl RealIp {
    /// Whether `ip` is one of the trusted addresses (an IPv4 address mapped into IPv6 is
    /// tested as IPv4, as `allow`/`deny` do).
    pub fn trusts(&self, ip: std::net::IpAddr) -> bool {
        self.from.iter().any(|&(net, prefix)| {
            AccessRule {
                allow: true,
                net: Some((net, prefix)),
            }
            .covers(ip)
        })
    }
}

// --- rewrite module (ngx_http_rewrite_module)

/// One statement of a level's rewrite script, as nginx compiles `set`, `rewrite`, `if`,
/// `return` and `break` into one code array per level.
#[derive(Clone, Debug)]
pub enum Stmt {
    Set(SetVar),
    Rewrite(RewriteSpec),
    Return(Return),
    Break,
    If(Box<IfSpec>),
}

/// `rewrite regex replacement [flag];`
#[derive(Clone, Debug)]
pub struct RewriteSpec {
    pub regex: crate::route::Regex,
    /// The regex as written (rewrite_log lines name it).
    pub pattern: String,
    /// Without a trailing `?` (which `drop_args` records).
    pub replacement: String,
    /// A trailing `?`: the request's arguments are not appended.
    pub drop_args: bool,
    pub flag: RewriteFlag,
    /// `path:line:col` of the directive.
    pub location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewriteFlag {
    /// No flag: the script goes on with the new URI (a location's changed URI is searched
    /// again once its script ends).
    None,
    Last,
    Break,
    /// 302 (also a replacement starting with `http://`, `https://` or `$scheme`).
    Redirect,
    /// 301.
    Permanent,
}

/// `if (condition) { ... }`.
#[derive(Clone, Debug)]
pub struct IfSpec {
    pub condition: Condition,
    pub body: Vec<Stmt>,
    /// In a location: the implicit location nginx makes of the block (the location's settings
    /// with the block's own on top), which becomes the request's when the condition is true.
    /// `None` in a server.
    pub conf: Option<Arc<LocationConf>>,
    pub location: String,
}

#[derive(Clone, Debug)]
pub enum Condition {
    /// `($var)`: false when empty or `0`.
    Var(String),
    /// `($var = value)` / `!=`: the value may have variables.
    Equals {
        var: String,
        value: String,
        negate: bool,
    },
    /// `($var ~ regex)`, `~*`, `!~`, `!~*`.
    Matches {
        var: String,
        regex: crate::route::Regex,
        pattern: String,
        negate: bool,
    },
    /// `(-f path)` and its kin; the path may have variables.
    File {
        path: String,
        test: FileTest,
        negate: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileTest {
    /// `-f`: a regular file.
    File,
    /// `-d`: a directory.
    Dir,
    /// `-e`: anything.
    Exists,
    /// `-x`: executable.
    Exec,
}

// --- ssl (ngx_http_ssl_module; docs/tls.md)

/// A server's TLS settings (nginx's `ngx_http_ssl_module`), inherited http → server. File
/// paths are absolute (relative ones are taken from the main file's directory, as nginx's).
/// Certificates are read when the configuration is compiled ([`crate::tls`]).
#[derive(Clone, Debug, Default)]
pub struct SslSpec {
    /// `ssl_certificate` / `ssl_certificate_key` pairs, in order (nginx pairs them by position).
    pub certificates: Vec<CertSpec>,
    /// An `ssl_certificate` without an `ssl_certificate_key` at its position (an error once a
    /// `listen ... ssl` uses this server): its file and `path:line:col`.
    pub unpaired: Option<(PathBuf, String)>,
    /// `ssl on` (deprecated form of `listen ... ssl`): every address of the server is TLS.
    pub enable: bool,
    /// `ssl_reject_handshake on`: handshakes for this server are refused.
    pub reject_handshake: bool,
    /// `http2 on`: HTTP/2 offered by ALPN.
    pub http2: bool,
    /// `ssl_protocols`: TLS 1.2 and TLS 1.3 offered (older versions are never offered).
    pub tls12: bool,
    pub tls13: bool,
    /// `ssl_ciphers`, mapped to rustls's suites (names); `None`: rustls's defaults.
    pub ciphers: Option<Vec<String>>,
    /// `ssl_ecdh_curve`, mapped to rustls's groups; `None`: rustls's defaults (`auto`).
    pub curves: Option<Vec<String>>,
    /// `ssl_prefer_server_ciphers on`: the server's order of suites wins.
    pub prefer_server_ciphers: bool,
    /// `ssl_session_cache`: how many sessions the server-side cache keeps (0: none).
    pub session_cache: usize,
    /// `ssl_session_timeout` (5m).
    pub session_timeout: std::time::Duration,
    /// `ssl_session_tickets` (on).
    pub session_tickets: bool,
    /// `ssl_verify_client`.
    pub verify_client: VerifyClient,
    /// `ssl_client_certificate`: CA certificates client certificates are checked against.
    pub client_certificate: Option<(PathBuf, String)>,
    /// `ssl_trusted_certificate`: more CA certificates, not sent in the request for one.
    pub trusted_certificate: Option<(PathBuf, String)>,
    /// `ssl_verify_depth` (1).
    pub verify_depth: u32,
    /// `ssl_crl`.
    pub crl: Option<(PathBuf, String)>,
    /// `ssl_stapling_file`: an OCSP response sent with the certificate.
    pub stapling_file: Option<(PathBuf, String)>,
    /// `acme_certificate`: the certificate [`crate::acme`] obtains for this server, which
    /// `ssl_certificate $acme_certificate` serves.
    pub acme: Option<Arc<AcmeCert>>,
}

/// One `ssl_certificate` with the `ssl_certificate_key` at the same position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `path:line:col` of the `ssl_certificate` and `ssl_certificate_key` directives.
    pub cert_at: String,
    pub key_at: String,
}

/// `ssl_verify_client`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerifyClient {
    #[default]
    Off,
    On,
    Optional,
    OptionalNoCa,
}

// --- resolver (ngx_http_core_module's `resolver`, ngx_http_upstream_module's `server ...
// resolve`; docs/dns.md)

/// `resolver address ... [valid=time] [ipv4=on|off] [ipv6=on|off] [status_zone=zone]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolverSpec {
    /// The name servers, in the order written (port 53 unless given).
    pub servers: Vec<SocketAddr>,
    /// `valid=`: how long an answer is used, instead of the TTLs it came with.
    pub valid: Option<Duration>,
    /// Look up A records (`ipv4=`, on by default).
    pub ipv4: bool,
    /// Look up AAAA records (`ipv6=`, on by default).
    pub ipv6: bool,
}

/// The resolver in force at one level: the `resolver` line and the `resolver_timeout` (30s).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Resolver {
    pub spec: Arc<ResolverSpec>,
    pub timeout: Duration,
}

/// An upstream's `server name resolve` lines and the resolver that follows them.
#[derive(Clone, Debug)]
pub struct UpstreamResolve {
    pub resolver: Resolver,
    pub names: Vec<ResolveSpec>,
}

/// One `server name[:port] resolve [service=name] ...` line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ResolveSpec {
    /// The name as written, lower-cased (`app.internal`).
    pub host: String,
    /// `service=` as written (`http`, `_http._tcp`): SRV records are followed (targets,
    /// ports, weights, priorities).
    pub service: Option<String>,
    /// The port of the peers (from the line, 80 by default; unused with `service=`).
    pub port: u16,
    /// The line's parameters, copied to every peer the name yields (its `addr` unused).
    pub template: PeerSpec,
}

impl ResolveSpec {
    /// The name asked for: `host`, or with `service=` the SRV name as nginx builds it
    /// (`service=http` → `_http._tcp.host`; a service with a dot is used as written:
    /// `service=_x._udp` → `_x._udp.host`).
    pub fn query_name(&self) -> String {
        match &self.service {
            None => self.host.clone(),
            Some(s) if s.contains('.') => format!("{s}.{}", self.host),
            Some(s) => format!("_{s}._tcp.{}", self.host),
        }
    }
}
// === ACME (ngx_http_acme_module; lowered in lower/acme.rs, acted on by crate::acme) ===

/// `acme_issuer NAME { ... }`: an ACME server and the account imbang keeps with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeIssuer {
    pub name: String,
    /// `uri`: the server's directory URL.
    pub uri: String,
    /// `contact`: URLs (`mailto:` added when no scheme is given).
    pub contacts: Vec<String>,
    /// `state_path` (`acme_NAME` under the prefix by default); `None`: `state_path off`.
    pub state_path: Option<PathBuf>,
    /// `accept_terms_of_service`.
    pub accept_tos: bool,
    /// `account_key`: generated (`ecdsa:256`, the default) or read from a file.
    pub account_key: Option<PathBuf>,
    /// `challenge`.
    pub challenge: AcmeChallenge,
    /// `common_name_in_csr`: the first identifier as the request's subject common name.
    pub common_name_in_csr: bool,
    /// `ssl_trusted_certificate`: CA certificates the ACME server's is checked against instead
    /// of the system's.
    pub trusted_certificate: Option<PathBuf>,
    /// `ssl_verify` (on).
    pub verify: bool,
    /// `preferred_chain`: the issuer name of the chain to prefer.
    pub preferred_chain: Option<String>,
    /// `profile NAME [require]`.
    pub profile: Option<(String, bool)>,
    /// `external_account_key KID FILE|data:KEY`: the key id and the MAC key (decoded).
    pub external_account: Option<(String, Vec<u8>)>,
    /// `path:line:col` of the `acme_issuer` directive.
    pub location: String,
}

/// `challenge http-01 | tls-alpn-01`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AcmeChallenge {
    #[default]
    Http01,
    TlsAlpn01,
}

/// The key of a certificate `acme_certificate` asks for (`key=ecdsa:256` by default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AcmeKeyAlg {
    Ecdsa(u16),
    Rsa(u16),
}

impl std::fmt::Display for AcmeKeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ecdsa(bits) => write!(f, "ecdsa:{bits}"),
            Self::Rsa(bits) => write!(f, "rsa:{bits}"),
        }
    }
}

/// `acme_certificate ISSUER [identifier...] [key=alg:size]` of one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcmeCert {
    pub issuer: Arc<AcmeIssuer>,
    /// DNS names (lowercase) or IP addresses, in order.
    pub identifiers: Vec<String>,
    pub key: AcmeKeyAlg,
    /// `path:line:col` of the `acme_certificate` directive.
    pub location: String,
}
// --- sub (ngx_http_sub_filter_module)

/// The `sub_filter` lines in force at a level, with their companions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubFilter {
    /// (search string, replacement) as written, in order; both may hold variables.
    pub pairs: Vec<(String, String)>,
    /// `sub_filter_once` (on).
    pub once: bool,
    /// `sub_filter_types`, lower case, `text/html` among them; `*`: any type.
    pub types: Vec<String>,
    /// `sub_filter_last_modified` (off).
    pub last_modified: bool,
}

// --- gzip (ngx_http_gzip_filter_module, and ngx_http_core_module's gzip_* directives)

/// `gzip_proxied` values (a bit set; nginx's `NGX_HTTP_GZIP_PROXIED_*`).
pub mod gzip_proxied {
    pub const OFF: u16 = 1 << 0;
    pub const EXPIRED: u16 = 1 << 1;
    pub const NO_CACHE: u16 = 1 << 2;
    pub const NO_STORE: u16 = 1 << 3;
    pub const PRIVATE: u16 = 1 << 4;
    pub const NO_LAST_MODIFIED: u16 = 1 << 5;
    pub const NO_ETAG: u16 = 1 << 6;
    pub const AUTH: u16 = 1 << 7;
    pub const ANY: u16 = 1 << 8;
    /// The names as nginx spells them, with their bits.
    pub const NAMES: &[(&str, u16)] = &[
        ("off", OFF),
        ("expired", EXPIRED),
        ("no-cache", NO_CACHE),
        ("no-store", NO_STORE),
        ("private", PRIVATE),
        ("no_last_modified", NO_LAST_MODIFIED),
        ("no_etag", NO_ETAG),
        ("auth", AUTH),
        ("any", ANY),
    ];
}

/// The gzip settings in force in a location, with nginx's defaults for what no level set.
/// The filter's (`gzip`, `gzip_types`, `gzip_comp_level`, `gzip_min_length`) and the core
/// module's (`gzip_vary`, `gzip_proxied`, `gzip_disable`, `gzip_http_version`), which nginx's
/// `gzip_static` reads as well.
#[derive(Clone, Debug)]
pub struct Gzip {
    /// `gzip` (off).
    pub enable: bool,
    /// `gzip_types`, lower case, `text/html` first; empty with `*` (any type, even none).
    pub types: Vec<String>,
    /// `gzip_comp_level` (1).
    pub comp_level: u32,
    /// `gzip_min_length` in bytes (20), compared with a known `Content-Length`.
    pub min_length: u64,
    /// `gzip_vary` (off).
    pub vary: bool,
    /// `gzip_proxied` ([`gzip_proxied`] bits; off).
    pub proxied: u16,
    /// `gzip_disable` regular expressions (matched without regard to case).
    pub disable: Vec<regex::Regex>,
    /// `gzip_disable msie6`.
    pub disable_msie6: bool,
    /// `gzip_http_version` 1.0 (true) or 1.1 (false, the default).
    pub http_1_0: bool,
}

impl Default for Gzip {
    fn default() -> Self {
        Self {
            enable: false,
            types: vec!["text/html".to_owned()],
            comp_level: 1,
            min_length: 20,
            vary: false,
            proxied: gzip_proxied::OFF,
            disable: Vec::new(),
            disable_msie6: false,
            http_1_0: false,
        }
    }
}

// --- limit_except (ngx_http_core_module)

/// `limit_except METHOD ... { ... }`: requests with a method not listed (HEAD comes with GET)
/// get `conf`, the location's settings with the block's `allow`/`deny` (and `access_log`) and,
/// as in nginx, without the location's rewrite statements.
#[derive(Clone, Debug)]
pub struct LimitExcept {
    /// The methods the block does not apply to, upper case as requests spell them.
    pub methods: Vec<String>,
    pub conf: Arc<LocationConf>,
}

impl LimitExcept {
    /// Whether a request with `method` gets the block's settings.
    pub fn limits(&self, method: &str) -> bool {
        !self.methods.iter().any(|m| m == method)
    }
}

/// The methods `limit_except` may name (nginx's list).
pub const LIMIT_EXCEPT_METHODS: &[&str] = &[
    "GET",
    "HEAD",
    "POST",
    "PUT",
    "DELETE",
    "MKCOL",
    "COPY",
    "MOVE",
    "OPTIONS",
    "PROPFIND",
    "PROPPATCH",
    "LOCK",
    "UNLOCK",
    "PATCH",
];

// --- auth (ngx_http_auth_request_module, ngx_http_auth_basic_module, core's `satisfy`)

/// The access checks of a location besides `allow`/`deny`: `auth_request` (+
/// `auth_request_set`), `auth_basic` (+ `auth_basic_user_file`), `satisfy` and `auth_delay`.
/// Present only where `auth_request` or `auth_basic` is in force (neither `off`).
#[derive(Clone, Debug, PartialEq)]
pub struct AuthSpec {
    /// `satisfy any` (default `all`).
    pub satisfy_any: bool,
    /// `auth_request uri`: the subrequest's URI (`None`: `off` or unset).
    pub request: Option<String>,
    /// `auth_request_set $name value` lines in force, in order (value with variables).
    pub request_set: Vec<(String, String)>,
    /// `auth_basic realm` with `auth_basic_user_file`.
    pub basic: Option<BasicSpec>,
    /// `auth_delay`: how long a 401 waits before it goes out (0).
    pub delay: Duration,
}

/// `auth_basic realm` (with variables; a realm that renders to `off` turns it off, as nginx)
/// and `auth_basic_user_file` (with variables; relative to the configuration's directory).
#[derive(Clone, Debug, PartialEq)]
pub struct BasicSpec {
    pub realm: String,
    pub user_file: String,
    /// Where `auth_basic_user_file` was written (`file:line:col`), for errors about the file.
    pub at: String,
}

// --- stream (stream): nginx's `stream { }`, read by config/lower/stream.rs

/// `stream { }`: servers that proxy TCP connections, and their upstream groups.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    pub servers: Vec<StreamServer>,
    /// `upstream` blocks of stream, and the implicit groups of `proxy_pass host:port`. Their
    /// names are stream's own (an http `upstream` of the same name is another group).
    pub upstreams: Vec<Upstream>,
    /// `map` blocks of stream, in file order.
    pub maps: Vec<MapSpec>,
    /// stream-level and server-level `error_log` targets.
    pub error_log: Vec<ErrorLogSpec>,
    /// Access-log files written through a buffer, by path (as [`Http::log_buffers`]).
    pub log_buffers: HashMap<PathBuf, LogBuffer>,
    /// Every stream `health_check`, in file order.
    pub health_checks: Vec<HealthCheck>,
}

/// One `listen` of a stream `server`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamListen {
    pub addr: SocketAddr,
    pub reuseport: bool,
    /// `backlog=`: the listen queue (nginx's default 511).
    pub backlog: Option<i32>,
    /// `udp`: datagrams, balanced per client session.
    pub udp: bool,
    /// `proxy_protocol`: connections begin with a PROXY protocol header (v1 or v2).
    pub proxy_protocol: bool,
    /// `path:line:col` of the `listen`.
    pub location: String,
}

/// Where a stream `server` sends its connections.
#[derive(Clone, Debug)]
pub enum StreamAction {
    /// `proxy_pass name;` naming a group (an `upstream` block or an implicit one).
    Proxy(String),
    /// `proxy_pass $var;`: the value names a group or is an `address:port`.
    ProxyVars(String),
    /// `return value;`: the value (with variables) is sent and the connection closed.
    Return(String),
}

/// One stream `server { }`, with the settings it inherited from `stream`.
#[derive(Clone, Debug)]
pub struct StreamServer {
    pub listens: Vec<StreamListen>,
    /// `None`: no `proxy_pass` or `return` (nginx refuses such a server: "no handler").
    pub action: Option<StreamAction>,
    pub sets: Vec<SetVar>,
    pub access: Vec<AccessRule>,
    pub access_log: Vec<AccessLogSpec>,
    pub connect_timeout: Duration,
    /// `proxy_timeout`: the longest either direction may go without a byte (10m).
    pub timeout: Duration,
    /// `proxy_next_upstream on|off` (on): a failed connect moves to the next peer.
    pub next_upstream: bool,
    /// 0: no limit besides the group's peers.
    pub next_upstream_tries: u32,
    pub next_upstream_timeout: Option<Duration>,
    pub buffer_size: usize,
    pub half_close: bool,
    /// Bytes per second; 0: no limit.
    pub upload_rate: u64,
    pub download_rate: u64,
    pub tcp_nodelay: bool,
    /// `proxy_bind address [transparent]` (`off`: none); the address may hold variables.
    pub bind: Option<String>,
    pub socket_keepalive: bool,
    pub preread_buffer_size: usize,
    pub preread_timeout: Duration,
    /// `proxy_protocol on`: a PROXY protocol v1 header is sent to the peer first.
    pub send_proxy_protocol: bool,
    /// `proxy_protocol_timeout` (30s): the longest a listen `proxy_protocol` header may take.
    pub proxy_protocol_timeout: Duration,
    /// `ssl_preread on`: the ClientHello is read before the peer is chosen.
    pub ssl_preread: bool,
    /// `set_real_ip_from` (ngx_stream_realip_module): clients whose PROXY protocol header's
    /// source address replaces theirs.
    pub realip_from: Vec<AccessRule>,
    /// `proxy_requests` (UDP): client datagrams after which a session takes no more (0: no
    /// limit).
    pub requests: u64,
    /// `proxy_responses` (UDP): datagrams from the peer each client datagram expects
    /// (`None`: no limit; the session ends by `proxy_timeout`).
    pub responses: Option<u64>,
    /// `path:line:col` of the `server`.
    pub location: String,
}

/// The static, index, try_files, autoindex and gzip_static modules' settings of one level
/// (read in `lower/files.rs`, acted on by [`crate::files`]). `root` is [`LocationConf::root`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesConf {
    /// `alias path` of this location (or the one it is nested in): replaces the location's
    /// prefix in `$uri`; in a regex location, the whole file name.
    pub alias: Option<String>,
    /// `index` files, in order (`index.html`).
    pub index: Vec<String>,
    /// `try_files file ... uri|=code` of this level (not inherited, as nginx); empty: none.
    pub try_files: Vec<String>,
    /// `types`: lowercase extension → MIME type (nginx's three defaults without any `types`).
    pub types: Arc<HashMap<String, String>>,
    /// `etag on|off` (on).
    pub etag: bool,
    pub if_modified_since: IfModifiedSince,
    pub disable_symlinks: DisableSymlinks,
    /// `autoindex on` with its settings; `None`: off.
    pub autoindex: Option<AutoIndex>,
    pub gzip_static: GzipStatic,
    /// `max_ranges n`; `None`: no limit.
    pub max_ranges: Option<u32>,
    /// `log_not_found on|off` (on).
    pub log_not_found: bool,
    /// `sendfile on|off` (off, as nginx): zero-copy file bodies on plain HTTP/1 connections.
    pub sendfile: bool,
}

impl Default for FilesConf {
    fn default() -> Self {
        Self {
            alias: None,
            index: vec!["index.html".to_owned()],
            try_files: Vec::new(),
            types: Arc::new(default_types()),
            etag: true,
            if_modified_since: IfModifiedSince::Exact,
            disable_symlinks: DisableSymlinks::Off,
            autoindex: None,
            gzip_static: GzipStatic::Off,
            max_ranges: None,
            log_not_found: true,
            sendfile: false,
        }
    }
}

/// nginx's types without a `types` block: `text/html html; image/gif gif; image/jpeg jpg;`.
pub fn default_types() -> HashMap<String, String> {
    [
        ("html", "text/html"),
        ("gif", "image/gif"),
        ("jpg", "image/jpeg"),
    ]
    .into_iter()
    .map(|(e, t)| (e.to_owned(), t.to_owned()))
    .collect()
}

/// `if_modified_since off|exact|before` (exact).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfModifiedSince {
    Off,
    Exact,
    Before,
}

/// `disable_symlinks off|on|if_not_owner [from=part]` (off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisableSymlinks {
    Off,
    /// `on` (`owner: false`) or `if_not_owner` (`owner: true`); `from`: the leading part of
    /// the file name whose components are not checked (`from=$document_root`: the root).
    On {
        owner: bool,
        from_root: bool,
    },
}

/// `autoindex on` with `autoindex_format`, `autoindex_exact_size`, `autoindex_localtime`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AutoIndex {
    pub json: bool,
    pub exact_size: bool,
    pub localtime: bool,
}

/// `gzip_static off|on|always` (off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GzipStatic {
    Off,
    On,
    Always,
}
