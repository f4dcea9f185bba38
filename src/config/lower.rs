//! AST → [`Config`]: every directive checked against the table in [`super::directives`], values
//! parsed once, nginx's inheritance applied, cross-references resolved. Collects every error
//! (not just the first), each at its directive's `path:line:col`.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::ast::{Arg, Directive};
use super::directives::{self, Arity, Contexts, Effect, Spec};
use super::error::{ConfigError, ConfigErrors, ErrorKind};
use super::model::*;
use super::source::{SourceMap, Span};
use super::values::{self, AddrError};

mod acme;
mod auth;
mod charset;
mod compat;
mod expires;
mod files;
mod gzip;
mod limit_except;
mod limits;
mod observe;
mod proxy_cookie;
mod proxy_ssl;
mod realip;
mod resolver;
mod stream;
mod sub_filter;
mod syslog;
mod upstream_state;
pub use compat::only_value;
mod rewrite;
mod root;
pub mod ssl;
mod user;

/// What lowering needs to know beyond the text.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// nginx's prefix (`-p`): relative `pid`/log paths resolve against it.
    pub prefix: PathBuf,
    /// The port a `server` without `listen` gets: 80 for root, 8000 otherwise (as nginx).
    pub default_listen_port: u16,
}

/// Turns parsed directives into a validated [`Config`], or every error found.
pub fn lower(
    directives: &[Directive],
    sources: Arc<SourceMap>,
    opts: &LoadOptions,
) -> Result<Config, ConfigErrors> {
    let mut lower = Lower {
        src: &sources,
        opts,
        errors: ConfigErrors::default(),
        warnings: Vec::new(),
        log_formats: HashMap::new(),
        log_buffers: HashMap::new(),
        inner_error_logs: Vec::new(),
        matches: HashMap::new(),
        health_checks: Vec::new(),
        maps: Vec::new(),
        ssl_http: ssl::SslFrame::default(),
        resolve_pending: Vec::new(),
        acme_issuers: HashMap::new(),
        limit_zones: Vec::new(),
        stream: None,
    };
    let (main, http) = lower.main(directives);
    if !lower.errors.is_empty() {
        return Err(lower.errors);
    }
    let warnings = lower.warnings;
    Ok(Config {
        main,
        http,
        stream: lower.stream,
        warnings,
        sources,
    })
}

struct Lower<'a> {
    src: &'a SourceMap,
    opts: &'a LoadOptions,
    errors: ConfigErrors,
    warnings: Vec<Warning>,
    /// `log_format`s by name, `combined` included.
    log_formats: HashMap<String, Arc<LogFormat>>,
    /// Buffered access-log files so far: one buffer per file, whichever `access_log` set it.
    log_buffers: HashMap<PathBuf, LogBuffer>,
    /// `error_log` of server and location levels: imbang adds them to the process's log.
    inner_error_logs: Vec<ErrorLogSpec>,
    /// `match` blocks by name (read before the servers: a `health_check` may name one defined
    /// further down).
    matches: HashMap<String, Arc<Match>>,
    /// `health_check`s so far.
    health_checks: Vec<HealthCheck>,
    /// `map` blocks so far.
    maps: Vec<MapSpec>,
    /// The http level's `ssl_*` settings, which servers inherit.
    ssl_http: ssl::SslFrame,
    /// Upstreams with `resolve` lines, until the http level's `resolver` is known.
    resolve_pending: Vec<resolver::Pending>,
    /// `acme_issuer` blocks by name (read before the servers, which name them).
    acme_issuers: HashMap<String, Arc<AcmeIssuer>>,
    /// `limit_req_zone` and `limit_conn_zone` so far.
    limit_zones: Vec<LimitZone>,
    /// `stream { }`, once read.
    stream: Option<Stream>,
}

/// Settings that nested levels inherit (http → server → location → nested location).
/// `None` means "not set at this level".
#[derive(Clone, Debug, Default)]
struct Frame {
    /// `status_zone` of a location (`Some(None)`: `off`).
    status_zone: Option<Option<String>>,
    connect_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    next_upstream: Option<NextUpstream>,
    next_upstream_tries: Option<u32>,
    next_upstream_timeout: Option<Option<Duration>>,
    set_headers: Option<Vec<(String, String)>>,
    http_version_1_0: Option<bool>,
    default_type: Option<String>,
    access_log: Option<Vec<AccessLogSpec>>,
    add_headers: Option<Vec<AddHeader>>,
    hide_headers: Option<Vec<String>>,
    pass_headers: Option<Vec<String>>,
    pass_request_headers: Option<bool>,
    pass_request_body: Option<bool>,
    redirect: Option<Redirect>,
    server_tokens: Option<bool>,
    client_max_body_size: Option<u64>,
    error_pages: Option<Vec<ErrorPage>>,
    intercept_errors: Option<bool>,
    keepalive_requests: Option<u64>,
    keepalive_time: Option<Duration>,
    client_body_timeout: Option<Duration>,
    client_body_buffer_size: Option<u64>,
    request_buffering: Option<bool>,
    client_body_temp_path: Option<PathBuf>,
    /// `keepalive_timeout` and `send_timeout` (towards the client).
    client_keepalive_timeout: Option<Duration>,
    client_send_timeout: Option<Duration>,
    access: Option<Vec<AccessRule>>,
    realip_from: Option<Vec<(std::net::IpAddr, u8)>>,
    realip_header: Option<RealIpHeader>,
    realip_recursive: Option<bool>,
    cookie_domains: Option<Vec<CookieRule>>,
    cookie_paths: Option<Vec<CookieRule>>,
    cookie_flags: Option<Vec<CookieFlags>>,
    socket_keepalive: Option<bool>,
    root: Option<String>,
    /// `charset`: `Some(None)` is `off`.
    charset: Option<Option<String>>,
    charset_types: Option<Vec<String>>,
    /// `expires`: `Some(None)` is `off`.
    expires: Option<Option<Expires>>,
    /// `source_charset`, with where it was set: `Some(None)` is `off`.
    source_charset: Option<Option<(String, Span)>>,
    rewrite_log: Option<bool>,
    resolver: Option<Arc<ResolverSpec>>,
    resolver_timeout: Option<Duration>,
    /// `sub_filter` lines of one level (inherited as a whole, as nginx) and the companions.
    sub_filters: Option<Vec<(String, String)>>,
    sub_filter_once: Option<bool>,
    sub_filter_types: Option<Vec<String>>,
    sub_filter_last_modified: Option<bool>,
    chunked_transfer_encoding: Option<bool>,
    uninitialized_variable_warn: Option<bool>,
    /// `proxy_ssl_*`, each inherited on its own.
    proxy_ssl: proxy_ssl::ProxySslFrame,
    /// `auth_request`, `auth_basic`, `satisfy`, each inherited on its own.
    auth: auth::AuthFrame,
    /// `gzip` and its companions, each inherited on its own.
    gzip: gzip::GzipFrame,
    /// `limit_req`, `limit_conn`, `limit_rate` and their companions.
    limits: limits::LimitsFrame,
    /// `alias`, `index`, `try_files`, `types`, ... (see lower/files.rs).
    files: files::FilesFrame,
}

impl Frame {
    /// This level's values where set, the parent's otherwise. `proxy_set_header` follows
    /// nginx's rule: a level with any `proxy_set_header` inherits none from above.
    fn inherit(&self, parent: &Frame) -> Frame {
        /// Every field: this level's value where set, the parent's otherwise.
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                Frame {
                    $($field: self.$field.clone().or_else(|| parent.$field.clone()),)*
                    proxy_ssl: self.proxy_ssl.inherit(&parent.proxy_ssl),
                    auth: self.auth.inherit(&parent.auth),
                    gzip: self.gzip.inherit(&parent.gzip),
                    limits: self.limits.inherit(&parent.limits),
                    files: self.files.inherit(&parent.files, self.root.is_some()),
                }
            };
        }
        inherit!(
            status_zone,
            connect_timeout,
            read_timeout,
            send_timeout,
            next_upstream,
            next_upstream_tries,
            next_upstream_timeout,
            set_headers,
            http_version_1_0,
            default_type,
            access_log,
            add_headers,
            hide_headers,
            pass_headers,
            pass_request_headers,
            pass_request_body,
            redirect,
            server_tokens,
            client_max_body_size,
            error_pages,
            intercept_errors,
            keepalive_requests,
            keepalive_time,
            client_body_timeout,
            client_body_buffer_size,
            request_buffering,
            client_body_temp_path,
            client_keepalive_timeout,
            client_send_timeout,
            access,
            realip_from,
            realip_header,
            realip_recursive,
            cookie_domains,
            cookie_paths,
            cookie_flags,
            socket_keepalive,
            root,
            charset,
            charset_types,
            source_charset,
            expires,
            rewrite_log,
            resolver,
            resolver_timeout,
            sub_filters,
            sub_filter_once,
            sub_filter_types,
            sub_filter_last_modified,
            chunked_transfer_encoding,
            uninitialized_variable_warn,
        )
    }

    fn conf(&self, action: Option<Action>) -> Arc<LocationConf> {
        let d = ProxySettings::default();
        Arc::new(LocationConf {
            action,
            status_zone: self.status_zone.clone().flatten(),
            charset: self.charset(),
            expires: self.expires.flatten(),
            sub_filter: self.sub_filter(),
            gzip: self.gzip.conf(),
            chunked_transfer_encoding: self.chunked_transfer_encoding.unwrap_or(true),
            limit_except: None,
            uninitialized_variable_warn: self.uninitialized_variable_warn.unwrap_or(true),
            proxy: ProxySettings {
                connect_timeout: self.connect_timeout.unwrap_or(d.connect_timeout),
                read_timeout: self.read_timeout.unwrap_or(d.read_timeout),
                send_timeout: self.send_timeout.unwrap_or(d.send_timeout),
                next_upstream: self.next_upstream.unwrap_or(d.next_upstream),
                next_upstream_tries: self.next_upstream_tries.unwrap_or(d.next_upstream_tries),
                next_upstream_timeout: self.next_upstream_timeout.unwrap_or(None),
                set_headers: self.set_headers.clone().unwrap_or_default(),
                http_version_1_0: self.http_version_1_0.unwrap_or(false),
                hide_headers: self.hide_headers.clone().unwrap_or_default(),
                pass_headers: self.pass_headers.clone().unwrap_or_default(),
                pass_request_headers: self.pass_request_headers.unwrap_or(true),
                pass_request_body: self.pass_request_body.unwrap_or(true),
                request_buffering: self.request_buffering.unwrap_or(true),
                redirect: self.redirect.clone().unwrap_or(Redirect::Default),
                cookies: self.cookies(),
                socket_keepalive: self.socket_keepalive.unwrap_or(false),
                ssl: Arc::new(self.proxy_ssl.spec()),
            },
            default_type: self
                .default_type
                .clone()
                .unwrap_or_else(|| "text/plain".to_owned()),
            access_log: self.access_log.clone().unwrap_or_default().into(),
            add_headers: self.add_headers.clone().unwrap_or_default(),
            server_tokens: self.server_tokens.unwrap_or(true),
            client_max_body_size: self.client_max_body_size.unwrap_or(1024 * 1024),
            error_pages: self.error_pages.clone().unwrap_or_default(),
            intercept_errors: self.intercept_errors.unwrap_or(false),
            internal: false,
            script: Vec::new(),
            rewrite_log: self.rewrite_log.unwrap_or(false),
            keepalive_requests: self.keepalive_requests.unwrap_or(1000),
            keepalive_time: self.keepalive_time.unwrap_or(Duration::from_secs(3600)),
            client_body_timeout: self.client_body_timeout.unwrap_or(Duration::from_secs(60)),
            client_body_buffer_size: (self.client_body_buffer_size)
                .unwrap_or(DEFAULT_CLIENT_BODY_BUFFER_SIZE),
            client_body_temp_path: Arc::new(
                (self.client_body_temp_path.clone()).unwrap_or_else(std::env::temp_dir),
            ),
            keepalive_timeout: self
                .client_keepalive_timeout
                .unwrap_or(Duration::from_secs(75)),
            client_send_timeout: self.client_send_timeout.unwrap_or(Duration::from_secs(60)),
            access: self.access.clone().unwrap_or_default(),
            realip: self.realip(),
            root: self.root.clone().unwrap_or_default(),
            resolver: self.resolver(),
            auth: self.auth.spec(),
            limits: self.limits.spec(),
            files: self.files.conf(),
        })
    }
}

/// Upstream groups by name: the `upstream` blocks, plus implicit ones made for
/// `proxy_pass http://host:port`.
#[derive(Default)]
struct Upstreams {
    groups: Vec<Upstream>,
    by_name: HashMap<String, usize>,
}

/// What the method directives of one `upstream` block have said so far.
#[derive(Default)]
struct MethodState {
    /// A method directive was seen (a second one warns).
    set: bool,
    /// A `random two` was seen.
    random_two: bool,
    /// The last method was `hash`, `ip_hash` or `random`: later `server` lines may not say
    /// `backup` or `slow_start`.
    hash_or_random: bool,
}

impl MethodState {
    fn allows_backup(&self) -> bool {
        !self.hash_or_random
    }

    /// NGINX Plus: "cannot be used along with the hash, ip_hash, and random load balancing
    /// methods" (the same methods that refuse `backup`).
    fn allows_slow_start(&self) -> bool {
        !self.hash_or_random
    }
}

/// Tracks single-valued directives already seen at one level (`"x" directive is duplicate`).
#[derive(Default)]
struct Seen(HashSet<&'static str>);

impl<'a> Lower<'a> {
    // === reporting ===

    fn at(&self, span: Span) -> String {
        self.src.location(span)
    }

    fn error(&mut self, kind: ErrorKind, span: Span) {
        let location = Some(self.at(span));
        self.errors.push(ConfigError::new(kind, location));
    }

    fn invalid(&mut self, message: String, span: Span) {
        self.error(ErrorKind::Invalid(message), span);
    }

    fn invalid_value(&mut self, d: &Directive, arg: &Arg) {
        self.invalid(
            format!(
                "invalid value \"{}\" in \"{}\" directive",
                arg.value, d.name
            ),
            arg.span,
        );
    }

    fn warn(&mut self, message: String, span: Span) {
        let location = self.at(span);
        self.warnings.push(Warning { message, location });
    }

    /// Checks name, context, block and arity against the directive table. Returns the entry
    /// when the directive may be read further; reports and returns `None` otherwise.
    fn check(&mut self, d: &Directive, ctx: Contexts) -> Option<&'static Spec> {
        let Some(spec) = directives::lookup(&d.name, ctx) else {
            if directives::NOT_YET.contains(&d.name.as_str()) {
                self.invalid(
                    format!("\"{}\" directive is not supported by imbang yet", d.name),
                    d.span,
                );
            } else if let Some(module) = super::nginx::module_of(&d.name, ctx) {
                self.error(ErrorKind::NotInImbang(d.name.clone(), module), d.span);
            } else {
                self.error(ErrorKind::UnknownDirective(d.name.clone()), d.span);
            }
            return None;
        };
        if !spec.contexts.contains(ctx) {
            self.error(ErrorKind::NotAllowedHere(d.name.clone()), d.span);
            return None;
        }
        if spec.block && d.block.is_none() {
            self.error(ErrorKind::NoOpeningBrace(d.name.clone()), d.span);
            return None;
        }
        if !spec.block && d.block.is_some() {
            self.error(ErrorKind::NotTerminated(d.name.clone()), d.span);
            return None;
        }
        if !spec.arity.accepts(d.args.len()) {
            self.error(ErrorKind::Arity(d.name.clone()), d.span);
            return None;
        }
        if spec.arity == Arity::Flag && values::flag(&d.args[0].value).is_none() {
            self.invalid(
                format!(
                    "invalid value \"{}\" in \"{}\" directive, it must be \"on\" or \"off\"",
                    d.args[0].value, d.name
                ),
                d.args[0].span,
            );
            return None;
        }
        if let Effect::NotYet(why) = spec.effect {
            self.invalid(
                format!(
                    "\"{}\" directive is not supported by imbang yet ({why})",
                    d.name
                ),
                d.span,
            );
            return None;
        }
        if let Some(message) = compat::unsupported_value(d) {
            self.invalid(message, d.span);
            return None;
        }
        if let Effect::NoEffect(why) = spec.effect {
            self.warn(
                format!(
                    "the \"{}\" directive has no effect in imbang: {why}",
                    d.name
                ),
                d.span,
            );
        }
        Some(spec)
    }

    /// False (and an error) when a single-valued directive appears twice at one level.
    fn once(&mut self, seen: &mut Seen, spec: &'static Spec, d: &Directive) -> bool {
        if seen.0.insert(spec.name) {
            true
        } else {
            self.error(ErrorKind::Duplicate(d.name.clone()), d.span);
            false
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let p = Path::new(text);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.opts.prefix.join(p)
        }
    }

    fn duration_arg(&mut self, d: &Directive, arg: &Arg) -> Option<Duration> {
        let v = values::duration(&arg.value);
        if v.is_none() {
            self.invalid(format!("\"{}\" directive invalid value", d.name), arg.span);
        }
        v
    }

    fn number_arg(&mut self, d: &Directive, arg: &Arg) -> Option<u64> {
        let v = values::number(&arg.value);
        if v.is_none() {
            self.invalid(format!("\"{}\" directive invalid value", d.name), arg.span);
        }
        v
    }

    // === main ===

    fn main(&mut self, ds: &[Directive]) -> (Main, Option<Http>) {
        let mut main = Main {
            daemon: true,
            worker_processes: Workers::Count(1),
            pid: self.opts.prefix.join("logs/imbang.pid"),
            error_log: Vec::new(),
            shutdown_timeout: None,
            worker_connections: 512,
            user: None,
            rlimit_nofile: None,
        };
        let mut http = None;
        let mut seen = Seen::default();
        if !ds.iter().any(|d| d.name == "events") {
            if let Some(first) = ds.first() {
                // nginx refuses such a file; imbang needs nothing from the section.
                self.warn(
                    "no \"events\" section in configuration (nginx requires one; imbang does not)"
                        .to_owned(),
                    first.span,
                );
            }
        }
        for d in ds {
            let Some(spec) = self.check(d, Contexts::MAIN) else {
                continue;
            };
            let args = &d.args;
            match d.name.as_str() {
                "error_log" => {
                    if let Some(log) = self.error_log(d) {
                        main.error_log.push(log);
                    }
                }
                // nginx takes these once per module, an environment variable, or a pool.
                "load_module" | "env" | "thread_pool" => {}
                _ if !self.once(&mut seen, spec, d) => {}
                "daemon" => main.daemon = values::flag(&args[0].value).unwrap_or(true),
                "worker_processes" => match args[0].value.as_str() {
                    "auto" => main.worker_processes = Workers::Auto,
                    v => match values::number(v) {
                        Some(n) if n > 0 => main.worker_processes = Workers::Count(n as usize),
                        _ => self.invalid_value(d, &args[0]),
                    },
                },
                "pid" => main.pid = self.path(&args[0].value),
                "user" => main.user = Some(self.user(d)),
                "worker_rlimit_nofile" => main.rlimit_nofile = self.rlimit_nofile(d),
                "worker_shutdown_timeout" => {
                    main.shutdown_timeout = self.duration_arg(d, &args[0]);
                }
                "events" => {
                    let mut seen = Seen::default();
                    for e in d.block.as_deref().unwrap_or_default() {
                        let Some(spec) = self.check(e, Contexts::EVENTS) else {
                            continue;
                        };
                        if self.once(&mut seen, spec, e) && e.name == "worker_connections" {
                            if let Some(n) = self.number_arg(e, &e.args[0]) {
                                main.worker_connections = n as usize;
                            }
                        }
                    }
                }
                "http" => http = Some(self.http(d.block.as_deref().unwrap_or_default())),
                "stream" => {
                    let stream = self.stream(d.block.as_deref().unwrap_or_default());
                    self.stream = Some(stream);
                }
                _ => {}
            }
        }
        (main, http)
    }

    fn error_log(&mut self, d: &Directive) -> Option<ErrorLogSpec> {
        let target = &d.args[0];
        let target = match target.value.as_str() {
            "stderr" => LogTarget::Stderr,
            v if v.starts_with("syslog:") => {
                LogTarget::Syslog(Arc::new(self.syslog(&v["syslog:".len()..], target.span)?))
            }
            v if v.starts_with("memory:") => {
                self.invalid(
                    format!(
                        "error_log \"{v}\" is not supported by imbang yet (use a file or stderr)"
                    ),
                    target.span,
                );
                return None;
            }
            v => LogTarget::File(self.path(v)),
        };
        // nginx: one level, or debug masks (`debug_http debug_event`), which mean `debug`.
        let mut level = None;
        for arg in &d.args[1..] {
            let this = match arg.value.as_str() {
                v if DEBUG_MASKS.contains(&v) => LogLevel::Debug,
                v => match LogLevel::parse(v) {
                    Some(l) if level.is_none() => l,
                    Some(_) => {
                        self.invalid(format!("duplicate log level \"{v}\""), arg.span);
                        return None;
                    }
                    None => {
                        self.invalid(format!("invalid log level \"{v}\""), arg.span);
                        return None;
                    }
                },
            };
            level = Some(level.map_or(this, |l: LogLevel| l.max(this)));
        }
        let level = level.unwrap_or(LogLevel::Error);
        Some(ErrorLogSpec { target, level })
    }

    // === http ===

    fn http(&mut self, ds: &[Directive]) -> Http {
        let mut frame = Frame::default();
        let mut seen = Seen::default();
        let mut upstreams = Upstreams::default();
        let mut error_log = Vec::new();
        let mut servers = Vec::new();
        let mut keepalive_timeout = Duration::from_secs(75);
        let mut send_timeout = Duration::from_secs(60);
        let mut client_header_timeout = Duration::from_secs(60);
        let (mut header_buffers, mut header_buffer_size) = (4, 8 * 1024);
        let mut client_header_buffer_size = 1024;
        let combined = Arc::new(LogFormat {
            name: "combined".to_owned(),
            escape: LogEscape::Default,
            text: COMBINED.to_owned(),
            location: String::new(),
        });
        self.log_formats
            .insert("combined".to_owned(), combined.clone());
        for d in ds.iter().filter(|d| d.name == "log_format") {
            if self.check(d, Contexts::HTTP).is_some() {
                self.log_format(d);
            }
        }
        // nginx's default `root html`, under the prefix.
        frame.root = Some(self.opts.prefix.join("html").to_string_lossy().into_owned());
        // nginx's default: `access_log logs/access.log combined;` under the prefix.
        frame.access_log = Some(vec![AccessLogSpec {
            path: self.opts.prefix.join("logs/access.log"),
            syslog: None,
            format: combined,
            condition: None,
        }]);
        let mut frame_own = Frame::default();
        // Upstreams first: a `proxy_pass` may name one defined further down.
        for d in ds.iter().filter(|d| d.name == "upstream") {
            if self.check(d, Contexts::HTTP).is_some() {
                self.upstream(d, &mut upstreams);
            }
        }
        for d in ds.iter().filter(|d| d.name == "match") {
            if self.check(d, Contexts::HTTP).is_some() {
                self.match_block(d);
            }
        }
        for d in ds.iter().filter(|d| d.name == "acme_issuer") {
            if self.check(d, Contexts::HTTP).is_some() {
                self.acme_issuer(d);
            }
        }
        for d in ds.iter().filter(|d| {
            !matches!(
                d.name.as_str(),
                "upstream" | "log_format" | "match" | "acme_issuer"
            )
        }) {
            let Some(spec) = self.check(d, Contexts::HTTP) else {
                continue;
            };
            match d.name.as_str() {
                "server" => servers.push(d),
                "map" => self.map_block(d),
                "acme_shared_zone" => {
                    if self.once(&mut seen, spec, d) {
                        self.acme_shared_zone(d);
                    }
                }
                name if ssl::is_ssl(name) => {
                    let mut f = std::mem::take(&mut self.ssl_http);
                    self.ssl_directive(d, spec, &mut f, &mut seen);
                    self.ssl_http = f;
                }
                "error_log" => error_log.extend(self.error_log(d)),
                "limit_req_zone" | "limit_conn_zone" => self.limit_zone(d),
                "send_timeout" => {
                    if self.once(&mut seen, spec, d) {
                        send_timeout = self.duration_arg(d, &d.args[0]).unwrap_or(send_timeout);
                        frame_own.client_send_timeout = Some(send_timeout);
                    }
                }
                "client_header_timeout" => {
                    if self.once(&mut seen, spec, d) {
                        client_header_timeout = self
                            .duration_arg(d, &d.args[0])
                            .unwrap_or(client_header_timeout);
                    }
                }
                "client_header_buffer_size" => {
                    if self.once(&mut seen, spec, d) {
                        match values::size(&d.args[0].value).filter(|&n| n > 0 && n <= 1 << 20) {
                            Some(n) => client_header_buffer_size = n as usize,
                            None => self.invalid_value(d, &d.args[0]),
                        }
                    }
                }
                "large_client_header_buffers" => {
                    if self.once(&mut seen, spec, d) {
                        let number = values::number(&d.args[0].value).filter(|&n| n > 0);
                        let size = values::size(&d.args[1].value).filter(|&n| n > 0);
                        match (number, size) {
                            // A line of nginx's largest (the request line) needs some room.
                            (Some(n), Some(size)) if size >= 64 && n * size <= 1 << 30 => {
                                header_buffers = n as usize;
                                header_buffer_size = size as usize;
                            }
                            _ => self.invalid(
                                "invalid value in \"large_client_header_buffers\" directive"
                                    .to_owned(),
                                d.span,
                            ),
                        }
                    }
                }
                "keepalive_timeout" => {
                    if self.once(&mut seen, spec, d) {
                        keepalive_timeout = self
                            .duration_arg(d, &d.args[0])
                            .unwrap_or(keepalive_timeout);
                        frame_own.client_keepalive_timeout = Some(keepalive_timeout);
                        if d.args.len() > 1 {
                            self.warn(
                                "the \"header_timeout\" parameter of \"keepalive_timeout\" has no effect in imbang".to_owned(),
                                d.args[1].span,
                            );
                        }
                    }
                }
                _ => {
                    self.setting(d, spec, &mut frame_own, &mut seen);
                }
            }
        }
        let frame = frame_own.inherit(&frame);
        let pending = std::mem::take(&mut self.resolve_pending);
        self.finish_upstream_resolvers(&mut upstreams.groups, &frame, pending);
        let servers: Vec<Server> = servers
            .into_iter()
            .filter_map(|d| self.server(d, &frame, &mut upstreams))
            .collect();
        self.check_listens(&servers);
        error_log.append(&mut self.inner_error_logs);
        Http {
            servers,
            upstreams: upstreams.groups,
            error_log,
            keepalive_timeout,
            send_timeout,
            client_header_timeout,
            header_buffers,
            header_buffer_size,
            client_header_buffer_size,
            log_buffers: std::mem::take(&mut self.log_buffers),
            health_checks: std::mem::take(&mut self.health_checks),
            maps: std::mem::take(&mut self.maps),
            limit_zones: std::mem::take(&mut self.limit_zones),
        }
    }

    /// Directives that only set a value inherited by inner levels. Returns false if `d` is not one.
    fn setting(
        &mut self,
        d: &Directive,
        spec: &'static Spec,
        f: &mut Frame,
        seen: &mut Seen,
    ) -> bool {
        let args = &d.args;
        match d.name.as_str() {
            "proxy_set_header" => {
                f.set_headers
                    .get_or_insert_with(Vec::new)
                    .push((args[0].value.clone(), args[1].value.clone()));
            }
            "set_real_ip_from" => {
                let from = self.real_ip_from(d);
                f.realip_from.get_or_insert_with(Vec::new).extend(from);
            }
            "allow" | "deny" => {
                if let Some(rule) = self.access_rule(d) {
                    f.access.get_or_insert_with(Vec::new).push(rule);
                }
            }
            "add_header" => {
                let always = match args.get(2).map(|a| a.value.as_str()) {
                    None => false,
                    Some("always") => true,
                    Some(_) => {
                        self.invalid_value(d, &args[2]);
                        return true;
                    }
                };
                f.add_headers.get_or_insert_with(Vec::new).push(AddHeader {
                    name: args[0].value.clone(),
                    value: args[1].value.clone(),
                    always,
                });
            }
            "error_page" => {
                if let Some(page) = self.error_page(d) {
                    f.error_pages.get_or_insert_with(Vec::new).push(page);
                }
            }
            "charset" | "charset_types" | "source_charset" => self.charset(d, f),
            "sub_filter" | "sub_filter_types" => self.sub_filter(d, f),
            "expires" => self.expires(d, f),
            "proxy_cookie_domain" | "proxy_cookie_path" | "proxy_cookie_flags" => {
                self.proxy_cookie(d, f);
            }
            "proxy_hide_header" => f
                .hide_headers
                .get_or_insert_with(Vec::new)
                .push(args[0].value.to_ascii_lowercase()),
            "proxy_pass_header" => f
                .pass_headers
                .get_or_insert_with(Vec::new)
                .push(args[0].value.to_ascii_lowercase()),
            "proxy_redirect" => {
                let rules = match (args[0].value.as_str(), args.len()) {
                    ("default", 1) => Redirect::Default,
                    ("off", 1) => Redirect::Off,
                    (_, 2) => {
                        let rule = (args[0].value.clone(), args[1].value.clone());
                        match f.redirect.take() {
                            Some(Redirect::Rules(mut rules)) => {
                                rules.push(rule);
                                Redirect::Rules(rules)
                            }
                            _ => Redirect::Rules(vec![rule]),
                        }
                    }
                    _ => {
                        self.invalid_value(d, &args[0]);
                        return true;
                    }
                };
                f.redirect = Some(rules);
            }
            "access_log" => {
                let logs = f.access_log.get_or_insert_with(Vec::new);
                if args[0].value == "off" {
                    if args.len() > 1 {
                        self.error(ErrorKind::Arity(d.name.clone()), d.span);
                    }
                    logs.clear();
                } else if let Some(spec) = self.access_log(d) {
                    logs.push(spec);
                }
            }
            "root" => {
                if f.files.has_alias() {
                    self.invalid(
                        "\"root\" directive is duplicate, \"alias\" directive was specified earlier"
                            .to_owned(),
                        d.span,
                    );
                } else if self.once(seen, spec, d) {
                    f.root = self.root(d);
                }
            }
            name if auth::is_auth(name) => self.auth_setting(d, spec, &mut f.auth, seen),
            name if limits::is_limit(name) => self.limit(d, spec, &mut f.limits, seen),
            name if files::is_files(name) => {
                if matches!(name, "types" | "index") || self.once(seen, spec, d) {
                    self.files_directive(d, f);
                }
            }
            name if proxy_ssl::is_proxy_ssl(name) => {
                if self.once(seen, spec, d) {
                    self.proxy_ssl(d, &mut f.proxy_ssl);
                }
            }
            name if gzip::is_gzip(name) => self.gzip(d, spec, &mut f.gzip, seen),
            _ if spec.effect != Effect::Acts => {}
            _ if !self.once(seen, spec, d) => {}
            "resolver" | "resolver_timeout" => self.resolver_setting(d, f),
            "proxy_connect_timeout" => f.connect_timeout = self.duration_arg(d, &args[0]),
            "proxy_read_timeout" => f.read_timeout = self.duration_arg(d, &args[0]),
            "proxy_send_timeout" => f.send_timeout = self.duration_arg(d, &args[0]),
            "proxy_next_upstream_timeout" => {
                f.next_upstream_timeout = self
                    .duration_arg(d, &args[0])
                    .map(|t| (!t.is_zero()).then_some(t));
            }
            "proxy_next_upstream_tries" => {
                f.next_upstream_tries = self.number_arg(d, &args[0]).map(|n| n as u32);
            }
            "proxy_next_upstream" => f.next_upstream = self.next_upstream(d),
            "proxy_http_version" => match args[0].value.as_str() {
                "1.0" => f.http_version_1_0 = Some(true),
                "1.1" => f.http_version_1_0 = Some(false),
                _ => self.invalid_value(d, &args[0]),
            },
            "default_type" => f.default_type = Some(args[0].value.clone()),
            "real_ip_header" => f.realip_header = Some(self.real_ip_header(d)),
            "real_ip_recursive" => f.realip_recursive = values::flag(&args[0].value),
            "proxy_pass_request_headers" => f.pass_request_headers = values::flag(&args[0].value),
            "proxy_socket_keepalive" => f.socket_keepalive = values::flag(&args[0].value),
            "proxy_intercept_errors" => f.intercept_errors = values::flag(&args[0].value),
            "rewrite_log" => f.rewrite_log = values::flag(&args[0].value),
            "sub_filter_once" => f.sub_filter_once = values::flag(&args[0].value),
            "uninitialized_variable_warn" => {
                f.uninitialized_variable_warn = values::flag(&args[0].value);
            }
            "chunked_transfer_encoding" => {
                f.chunked_transfer_encoding = values::flag(&args[0].value);
            }
            "sub_filter_last_modified" => {
                f.sub_filter_last_modified = values::flag(&args[0].value);
            }
            "keepalive_requests" => f.keepalive_requests = self.number_arg(d, &args[0]),
            "keepalive_time" => f.keepalive_time = self.duration_arg(d, &args[0]),
            "client_body_timeout" => f.client_body_timeout = self.duration_arg(d, &args[0]),
            "keepalive_timeout" => {
                f.client_keepalive_timeout = self.duration_arg(d, &args[0]);
                if args.len() > 1 {
                    self.warn(
                        "the \"header_timeout\" parameter of \"keepalive_timeout\" has no effect in imbang".to_owned(),
                        args[1].span,
                    );
                }
            }
            "send_timeout" => f.client_send_timeout = self.duration_arg(d, &args[0]),
            "client_header_timeout"
            | "client_header_buffer_size"
            | "large_client_header_buffers" => {
                // Only the http level's value is used (see Http::keepalive_timeout).
                self.warn(
                    format!("\"{}\" is used from the http level only in imbang", d.name),
                    d.span,
                );
            }
            "proxy_pass_request_body" => f.pass_request_body = values::flag(&args[0].value),
            "proxy_request_buffering" => f.request_buffering = values::flag(&args[0].value),
            "client_body_temp_path" => {
                // The level arguments name nginx's subdirectories; imbang's files have no name.
                f.client_body_temp_path = Some(self.path(&args[0].value));
            }
            "server_tokens" => match values::flag(&args[0].value) {
                Some(on) => f.server_tokens = Some(on),
                None => self.invalid(
                    format!(
                        "invalid value \"{}\" in \"server_tokens\" directive, it must be \"on\" or \"off\"",
                        args[0].value
                    ),
                    args[0].span,
                ),
            },
            "client_max_body_size" => match values::size(&args[0].value) {
                Some(n) => f.client_max_body_size = Some(n),
                None => self.invalid(format!("\"{}\" directive invalid value", d.name), args[0].span),
            },
            "client_body_buffer_size" => match values::size(&args[0].value) {
                Some(n) => f.client_body_buffer_size = Some(n),
                None => self.invalid(format!("\"{}\" directive invalid value", d.name), args[0].span),
            },
            _ => return false,
        }
        true
    }

    fn next_upstream(&mut self, d: &Directive) -> Option<NextUpstream> {
        let mut nu = NextUpstream {
            error: false,
            timeout: false,
            ..NextUpstream::default()
        };
        for arg in &d.args {
            let slot = match arg.value.as_str() {
                "off" if d.args.len() == 1 => return Some(nu),
                "error" => &mut nu.error,
                "timeout" => &mut nu.timeout,
                "invalid_header" => &mut nu.invalid_header,
                "http_500" => &mut nu.http_500,
                "http_502" => &mut nu.http_502,
                "http_503" => &mut nu.http_503,
                "http_504" => &mut nu.http_504,
                "http_403" => &mut nu.http_403,
                "http_404" => &mut nu.http_404,
                "http_429" => &mut nu.http_429,
                "non_idempotent" => &mut nu.non_idempotent,
                _ => {
                    self.invalid_value(d, arg);
                    return None;
                }
            };
            *slot = true;
        }
        Some(nu)
    }

    /// `set $name value;`: the value's variables are compiled with the snapshot.
    fn set(&mut self, d: &Directive) -> Option<SetVar> {
        let name_arg = &d.args[0];
        let Some(name) = name_arg
            .value
            .strip_prefix('$')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        else {
            self.invalid(
                format!("invalid variable name \"{}\"", name_arg.value),
                name_arg.span,
            );
            return None;
        };
        Some(SetVar {
            name: name.to_owned(),
            value: d.args[1].value.clone(),
            location: self.at(name_arg.span),
        })
    }

    /// `error_page code ... [=[response]] uri;`
    fn error_page(&mut self, d: &Directive) -> Option<ErrorPage> {
        let (target, rest) = d.args.split_last()?;
        let mut status = ErrorPageStatus::Original;
        let mut codes = Vec::new();
        for (i, arg) in rest.iter().enumerate() {
            if let Some(code) = arg.value.strip_prefix('=') {
                if i + 1 != rest.len() {
                    self.invalid(format!("invalid value \"{}\"", arg.value), arg.span);
                    return None;
                }
                status = match code {
                    "" => ErrorPageStatus::Target,
                    c => match values::number(c) {
                        Some(n) if n <= 999 => ErrorPageStatus::Fixed(n as u16),
                        _ => {
                            self.invalid(format!("invalid value \"{}\"", arg.value), arg.span);
                            return None;
                        }
                    },
                };
                continue;
            }
            match values::number(&arg.value) {
                Some(n) if (300..=599).contains(&n) && n != 499 => codes.push(n as u16),
                Some(_) => {
                    self.invalid(
                        format!("value \"{}\" must be between 300 and 599", arg.value),
                        arg.span,
                    );
                    return None;
                }
                None => {
                    self.invalid(format!("invalid value \"{}\"", arg.value), arg.span);
                    return None;
                }
            }
        }
        if codes.is_empty() {
            self.error(ErrorKind::Arity(d.name.clone()), d.span);
            return None;
        }
        Some(ErrorPage {
            codes,
            status,
            target: target.value.clone(),
        })
    }

    // === logs ===

    fn log_format(&mut self, d: &Directive) {
        let name = d.args[0].value.clone();
        if self.log_formats.contains_key(&name) {
            self.invalid(format!("duplicate \"log_format\" name \"{name}\""), d.span);
            return;
        }
        let mut rest = &d.args[1..];
        let mut escape = LogEscape::Default;
        if let Some(value) = rest.first().and_then(|a| a.value.strip_prefix("escape=")) {
            escape = match value {
                "default" => LogEscape::Default,
                "json" => LogEscape::Json,
                "none" => LogEscape::None,
                _ => {
                    self.invalid(
                        format!("unknown log format escaping \"{value}\""),
                        rest[0].span,
                    );
                    return;
                }
            };
            rest = &rest[1..];
        }
        if rest.is_empty() {
            self.error(ErrorKind::Arity(d.name.clone()), d.span);
            return;
        }
        let text: String = rest.iter().map(|a| a.value.as_str()).collect();
        let location = self.at(d.span);
        self.log_formats.insert(
            name.clone(),
            Arc::new(LogFormat {
                name,
                escape,
                text,
                location,
            }),
        );
    }

    fn access_log(&mut self, d: &Directive) -> Option<AccessLogSpec> {
        let target = &d.args[0];
        let syslog = match target.value.strip_prefix("syslog:") {
            Some(text) => Some(Arc::new(self.syslog(text, target.span)?)),
            None => None,
        };
        if target.value.contains('$') {
            // nginx opens such a path per request; taking it literally would write elsewhere.
            self.invalid(
                "variables in the path of \"access_log\" are not supported by imbang yet"
                    .to_owned(),
                target.span,
            );
            return None;
        }
        let format = match d.args.get(1) {
            None => self.log_formats.get("combined").cloned(),
            Some(name) => match self.log_formats.get(&name.value) {
                Some(f) => Some(f.clone()),
                None => {
                    self.invalid(format!("unknown log format \"{}\"", name.value), name.span);
                    return None;
                }
            },
        }?;
        let mut size = None;
        let mut flush = None;
        let mut gzip = None;
        let mut condition = None;
        for p in d.args.iter().skip(2) {
            let v = p.value.as_str();
            if let Some(text) = v.strip_prefix("buffer=") {
                let Some(n) = values::size(text).filter(|&n| n > 0) else {
                    self.invalid(format!("invalid buffer size \"{text}\""), p.span);
                    return None;
                };
                size = Some(n as usize);
            } else if let Some(text) = v.strip_prefix("flush=") {
                let Some(t) = values::duration(text).filter(|t| !t.is_zero()) else {
                    self.invalid(format!("invalid flush time \"{text}\""), p.span);
                    return None;
                };
                flush = Some((t, p.span));
            } else if v == "gzip" {
                gzip = Some(1); // zlib's Z_BEST_SPEED, as nginx
            } else if let Some(text) = v.strip_prefix("gzip=") {
                let Some(level) = values::number(text).filter(|l| (1..=9).contains(l)) else {
                    self.invalid(format!("invalid compression level \"{text}\""), p.span);
                    return None;
                };
                gzip = Some(level as u32);
            } else if let Some(text) = v.strip_prefix("if=") {
                condition = Some(LogCondition {
                    text: text.to_owned(),
                    location: self.at(p.span),
                });
            } else {
                self.invalid(format!("invalid parameter \"{v}\""), p.span);
                return None;
            }
        }
        // nginx: `gzip` alone buffers 64k.
        let size = size.or(gzip.map(|_| 64 * 1024));
        if syslog.is_some() {
            if size.is_some() || flush.is_some() {
                self.invalid("logs to syslog cannot be buffered".to_owned(), d.span);
                return None;
            }
            return Some(AccessLogSpec {
                path: PathBuf::from(&target.value),
                syslog,
                format,
                condition,
            });
        }
        let path = self.path(&target.value);
        match (size, flush) {
            (None, Some((_, span))) => {
                self.invalid(
                    format!("no buffer is defined for access_log \"{}\"", target.value),
                    span,
                );
                return None;
            }
            (None, None) => {}
            (Some(size), flush) => {
                let buffer = LogBuffer {
                    size,
                    flush: flush.map(|(t, _)| t),
                    gzip,
                };
                match self.log_buffers.get(&path) {
                    Some(known) if *known != buffer => {
                        self.invalid(
                            format!(
                                "access_log \"{}\" already defined with conflicting parameters",
                                target.value
                            ),
                            target.span,
                        );
                        return None;
                    }
                    Some(_) => {}
                    None => {
                        self.log_buffers.insert(path.clone(), buffer);
                    }
                }
            }
        }
        Some(AccessLogSpec {
            path,
            syslog: None,
            format,
            condition,
        })
    }

    // === server ===

    fn server(&mut self, d: &Directive, http: &Frame, ups: &mut Upstreams) -> Option<Server> {
        let mut own = Frame::default();
        let mut seen = Seen::default();
        let mut listens: Vec<ListenSpec> = Vec::new();
        let mut names: Vec<ServerName> = Vec::new();
        let mut script = Vec::new();
        let mut locations = Vec::new();
        let mut own_ssl = ssl::SslFrame::default();
        let mut acme = None;
        // `stub_status` at server level: for the requests no location matches (nginx's).
        let mut server_handler = None;
        let mut server_zone = None;
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::SERVER) else {
                continue;
            };
            if self.script_directive(c, &mut script) {
                continue;
            }
            match c.name.as_str() {
                "listen" => self.listen(c, &mut listens),
                name if ssl::is_ssl(name) => self.ssl_directive(c, spec, &mut own_ssl, &mut seen),
                "server_name" => self.server_names(c, &mut names),
                "acme_certificate" => {
                    if self.once(&mut seen, spec, c) {
                        acme = Some(c);
                    }
                }
                "location" => locations.push(c),
                "if" => script.extend(self.if_block(c, None, ups)),
                "stub_status" => {
                    if self.once(&mut seen, spec, c) {
                        self.handler(c, &mut server_handler);
                    }
                }
                "status_zone" => {
                    if self.once(&mut seen, spec, c) {
                        server_zone = Some(c.args[0].value.clone());
                    }
                }
                "error_log" => {
                    if let Some(log) = self.error_log(c) {
                        self.inner_error_logs.push(log);
                    }
                }
                _ => {
                    self.setting(c, spec, &mut own, &mut seen);
                }
            }
        }
        if listens.is_empty() {
            listens.push(ListenSpec {
                addr: SocketAddr::from(([0, 0, 0, 0], self.opts.default_listen_port)),
                default_server: false,
                reuseport: false,
                ssl: false,
                http2: false,
                proxy_protocol: false,
                location: self.at(d.span),
            });
        }
        if names.is_empty() {
            names.push(ServerName::Exact(String::new()));
        }
        let frame = own.inherit(http);
        let locations = locations
            .into_iter()
            .filter_map(|l| self.location(l, &frame, None, ups))
            .collect();
        self.check_charset(&frame);
        let mut conf = frame.conf(None);
        Arc::make_mut(&mut conf).script = script;
        Arc::make_mut(&mut conf).action = server_handler.map(|(a, _)| a);
        let mut ssl = self.ssl_spec(&own_ssl, &self.ssl_http);
        ssl.acme = acme.and_then(|a| self.acme_certificate(a, &names));
        let ssl = Arc::new(ssl);
        if ssl.enable {
            // `ssl on`: the server's addresses are TLS, as if each `listen` said `ssl`.
            for l in &mut listens {
                l.ssl = true;
            }
        }
        self.check_acme_variables(&ssl, &listens);
        Some(Server {
            listens,
            names,
            locations,
            conf,
            location: self.at(d.span),
            ssl,
            status_zone: server_zone,
        })
    }

    /// nginx's words for a `listen` address that cannot be used (http's and stream's).
    pub(super) fn listen_addr_error(&mut self, e: AddrError, addr_arg: &Arg) {
        let what = match e {
            AddrError::InvalidPort => "invalid port in",
            AddrError::HostNotFound => "host not found in",
            AddrError::Unix => "unix domain sockets are not supported by imbang yet:",
        };
        self.invalid(
            format!("{what} \"{}\" of the \"listen\" directive", addr_arg.value),
            addr_arg.span,
        );
    }

    fn listen(&mut self, d: &Directive, listens: &mut Vec<ListenSpec>) {
        let addr_arg = &d.args[0];
        let addrs = match values::socket_addrs(&addr_arg.value, 80, true) {
            Ok(addrs) => addrs,
            Err(e) => {
                self.listen_addr_error(e, addr_arg);
                return;
            }
        };
        let mut default_server = false;
        let mut reuseport = false;
        let (mut ssl, mut http2, mut proxy_protocol) = (false, false, false);
        for p in &d.args[1..] {
            let name = p.value.split('=').next().unwrap_or_default();
            match name {
                "default_server" | "default" => default_server = true,
                "reuseport" => reuseport = true,
                "ssl" => ssl = true,
                "proxy_protocol" => proxy_protocol = true,
                "quic" => self.invalid(
                    format!(
                        "the \"{}\" parameter of \"listen\" is not supported by imbang yet",
                        p.value
                    ),
                    p.span,
                ),
                // h2c with prior knowledge is served on every listener (the preface is
                // recognised); over TLS the parameter offers HTTP/2 by ALPN. nginx 1.25.1 made
                // it the `http2` directive and warns.
                "http2" => {
                    http2 = true;
                    self.warn(
                        "the \"listen ... http2\" directive is deprecated, use the \"http2\" directive instead".to_owned(),
                        p.span,
                    );
                }
                "backlog" | "rcvbuf" | "sndbuf" | "deferred" | "bind" | "ipv6only"
                | "so_keepalive" | "fastopen" | "accept_filter" | "setfib" => self.warn(
                    format!("the \"{name}\" parameter of \"listen\" has no effect in imbang"),
                    p.span,
                ),
                _ => self.invalid(format!("invalid parameter \"{}\"", p.value), p.span),
            }
        }
        for addr in addrs {
            if listens.iter().any(|l| l.addr == addr) {
                self.invalid(format!("duplicate listen {addr}"), d.span);
                continue;
            }
            listens.push(ListenSpec {
                addr,
                default_server,
                reuseport,
                ssl,
                http2,
                proxy_protocol,
                location: self.at(d.span),
            });
        }
    }

    fn server_names(&mut self, d: &Directive, names: &mut Vec<ServerName>) {
        for arg in &d.args {
            let v = arg.value.as_str();
            let name = if let Some(re) = v.strip_prefix('~') {
                ServerName::Regex(re.to_owned())
            } else {
                let v = v.to_ascii_lowercase();
                let stars = v.matches('*').count();
                if let Some(suffix) = v.strip_prefix("*.").filter(|_| stars == 1) {
                    ServerName::LeadingWildcard {
                        suffix: format!(".{suffix}"),
                        also_bare: false,
                    }
                } else if let Some(prefix) = v.strip_suffix(".*").filter(|_| stars == 1) {
                    ServerName::TrailingWildcard(format!("{prefix}."))
                } else if stars > 0 {
                    self.invalid(format!("invalid server name or wildcard \"{v}\""), arg.span);
                    continue;
                } else if let Some(suffix) = v.strip_prefix('.') {
                    ServerName::LeadingWildcard {
                        suffix: format!(".{suffix}"),
                        also_bare: true,
                    }
                } else {
                    ServerName::Exact(v)
                }
            };
            names.push(name);
        }
    }

    /// One `default_server` per address, and (nginx's rule for socket options) one `listen`
    /// per address that says `reuseport`.
    fn check_listens(&mut self, servers: &[Server]) {
        let mut defaults = HashSet::new();
        let mut options = HashSet::new();
        for listen in servers.iter().flat_map(|s| &s.listens) {
            let message = if listen.default_server && !defaults.insert(listen.addr) {
                format!("a duplicate default server for {}", listen.addr)
            } else if listen.reuseport && !options.insert(listen.addr) {
                format!("duplicate listen options for {}", listen.addr)
            } else {
                continue;
            };
            self.errors.push(ConfigError::new(
                ErrorKind::Invalid(message),
                Some(listen.location.clone()),
            ));
        }
    }

    fn ret(&mut self, d: &Directive) -> Option<Return> {
        let first = &d.args[0];
        if d.args.len() == 1
            && (first.value.starts_with("http://")
                || first.value.starts_with("https://")
                || first.value.starts_with("$scheme"))
        {
            return Some(Return {
                status: 302,
                text: Some(first.value.clone()),
                location: self.at(d.span),
            });
        }
        match values::number(&first.value) {
            // 444 is nginx's "close the connection without an answer".
            Some(code) if code <= 999 => Some(Return {
                status: code as u16,
                text: d.args.get(1).map(|a| a.value.clone()),
                location: self.at(d.span),
            }),
            _ => {
                self.invalid(
                    format!("invalid return code \"{}\"", first.value),
                    first.span,
                );
                None
            }
        }
    }

    // === location ===

    fn location(
        &mut self,
        d: &Directive,
        parent_frame: &Frame,
        parent: Option<(LocationMatch, &str)>,
        ups: &mut Upstreams,
    ) -> Option<Location> {
        let (kind, pattern) = self.location_pattern(d)?;
        if let Some((parent_kind, parent_pattern)) = parent {
            let msg = match (parent_kind, kind) {
                (LocationMatch::Exact, _) => Some(format!(
                    "location \"{pattern}\" cannot be inside the exact location \"{parent_pattern}\""
                )),
                (LocationMatch::Named, _) => Some(format!(
                    "location \"{pattern}\" cannot be inside the named location \"{parent_pattern}\""
                )),
                (_, LocationMatch::Named) => Some(format!(
                    "named location \"{pattern}\" can be on the server level only"
                )),
                (LocationMatch::Prefix | LocationMatch::PrefixNoRegex, LocationMatch::Prefix)
                | (
                    LocationMatch::Prefix | LocationMatch::PrefixNoRegex,
                    LocationMatch::PrefixNoRegex,
                )
                | (LocationMatch::Prefix | LocationMatch::PrefixNoRegex, LocationMatch::Exact)
                    if !pattern.starts_with(parent_pattern) =>
                {
                    Some(format!(
                        "location \"{pattern}\" is outside location \"{parent_pattern}\""
                    ))
                }
                _ => None,
            };
            if let Some(msg) = msg {
                self.invalid(msg, d.span);
                return None;
            }
        }
        let mut own = Frame::default();
        let mut seen = Seen::default();
        let mut proxy = None;
        // Whether this location's `proxy_pass` (so far) has variables; `None`: none yet.
        let mut pass_has_vars = None;
        // A `proxy_pass https://`: where, for `-t`'s warnings about its TLS.
        let mut https_pass = None;
        let mut internal = false;
        let mut script = Vec::new();
        // `if` blocks and where they stand in `script`: lowered once the location's own
        // settings (which their implicit locations inherit) are all known.
        let mut ifs = Vec::new();
        let mut children = Vec::new();
        let mut checks = Vec::new();
        // The location's own handler (`api`, `stub_status`, `prometheus`) and its directive.
        let mut api: Option<(Action, &str)> = None;
        let mut limit_except = None;
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::LOCATION) else {
                continue;
            };
            if self.script_directive(c, &mut script) {
                continue;
            }
            match c.name.as_str() {
                "location" => children.push(c),
                "if" => ifs.push((script.len(), c)),
                "health_check" => checks.push(c),
                "limit_except" => {
                    if self.once(&mut seen, spec, c) {
                        limit_except = Some(c);
                    }
                }
                "api" | "stub_status" | "prometheus" => {
                    if self.once(&mut seen, spec, c) {
                        self.handler(c, &mut api);
                    }
                }
                "status_zone" => {
                    if self.once(&mut seen, spec, c) {
                        let name = &c.args[0].value;
                        own.status_zone = Some((name != "off").then(|| name.clone()));
                    }
                }
                "internal" => internal = true,
                "proxy_pass" => {
                    if self.once(&mut seen, spec, c) {
                        pass_has_vars = Some(c.args[0].value.contains('$'));
                        proxy = self.proxy_pass(c, kind, ups);
                        let url = c.args[0].value.as_bytes();
                        https_pass = (url.len() >= 8 && url[..8].eq_ignore_ascii_case(b"https://"))
                            .then_some(c.span);
                    }
                }
                "proxy_redirect"
                    if pass_has_vars != Some(false)
                        && c.args.len() == 1
                        && c.args[0].value == "default" =>
                {
                    // nginx's order-dependent checks: `default` needs the literal URL before it.
                    let message = if pass_has_vars == Some(true) {
                        "\"proxy_redirect default\" cannot be used with \"proxy_pass\" directive with variables"
                    } else {
                        "\"proxy_redirect default\" should be placed after the \"proxy_pass\" directive"
                    };
                    self.invalid(message.to_owned(), c.span);
                }
                "error_log" => {
                    if let Some(log) = self.error_log(c) {
                        self.inner_error_logs.push(log);
                    }
                }
                _ => {
                    self.setting(c, spec, &mut own, &mut seen);
                }
            }
        }
        let frame = own.inherit(parent_frame);
        if let (Some(span), Some(_)) = (https_pass, &proxy) {
            self.proxy_ssl_warnings(&frame.proxy_ssl.spec(), span);
        }
        for c in checks {
            self.health_check(c, proxy.as_ref(), &frame);
        }
        let locations: Vec<Location> = children
            .into_iter()
            .filter_map(|c| self.location(c, &frame, Some((kind, &pattern)), ups))
            .collect();
        if let (Some((_, name)), Some(_)) = (&api, &proxy) {
            self.invalid(
                format!("\"{name}\" cannot be used with \"proxy_pass\" in the same location"),
                d.span,
            );
        }
        let action = api.map(|(a, _)| a).or(proxy);
        let mut inserted = 0;
        for (at, c) in ifs {
            if let Some(stmt) = self.if_block(c, Some((&frame, action.as_ref())), ups) {
                script.insert(at + inserted, stmt);
                inserted += 1;
            }
        }
        self.check_charset(&frame);
        let limited =
            limit_except.and_then(|c| self.limit_except(c, &frame, &action, internal, ups));
        let mut conf = frame.conf(action);
        if internal || !script.is_empty() || limited.is_some() {
            let conf = Arc::make_mut(&mut conf);
            conf.internal = internal;
            conf.script = script;
            conf.limit_except = limited;
        }
        Some(Location {
            kind,
            pattern,
            conf,
            locations,
            location: self.at(d.span),
        })
    }

    fn location_pattern(&mut self, d: &Directive) -> Option<(LocationMatch, String)> {
        let modifier = |m: &str| match m {
            "=" => Some(LocationMatch::Exact),
            "^~" => Some(LocationMatch::PrefixNoRegex),
            "~" => Some(LocationMatch::Regex {
                case_insensitive: false,
            }),
            "~*" => Some(LocationMatch::Regex {
                case_insensitive: true,
            }),
            _ => None,
        };
        if d.args.len() == 2 {
            let Some(kind) = modifier(&d.args[0].value) else {
                self.invalid(
                    format!("invalid location modifier \"{}\"", d.args[0].value),
                    d.args[0].span,
                );
                return None;
            };
            return Some((kind, d.args[1].value.clone()));
        }
        let v = d.args[0].value.as_str();
        Some(if let Some(rest) = v.strip_prefix("~*") {
            (modifier("~*")?, rest.to_owned())
        } else if let Some(rest) = v.strip_prefix("^~") {
            (LocationMatch::PrefixNoRegex, rest.to_owned())
        } else if let Some(rest) = v.strip_prefix('~') {
            (modifier("~")?, rest.to_owned())
        } else if let Some(rest) = v.strip_prefix('=') {
            (LocationMatch::Exact, rest.to_owned())
        } else if v.starts_with('@') {
            (LocationMatch::Named, v.to_owned())
        } else {
            (LocationMatch::Prefix, v.to_owned())
        })
    }

    fn proxy_pass(
        &mut self,
        d: &Directive,
        kind: LocationMatch,
        ups: &mut Upstreams,
    ) -> Option<Action> {
        let arg = &d.args[0];
        let url = arg.value.as_str();
        if url.contains('$') {
            return self.proxy_pass_vars(arg).map(Action::ProxyVars);
        }
        // `get`, not `[..7]`: a multibyte character may straddle the scheme's length.
        let (rest, tls) = if url
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
        {
            (&url[7..], false)
        } else if url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            (&url[8..], true)
        } else {
            self.invalid(format!("invalid URL prefix in \"{url}\""), arg.span);
            return None;
        };
        let (authority, uri) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_owned())),
            None => (rest, None),
        };
        if uri.is_some() && matches!(kind, LocationMatch::Regex { .. } | LocationMatch::Named) {
            self.invalid(
                "\"proxy_pass\" cannot have URI part in location given by regular expression, or inside named location, or inside \"if\" statement, or inside \"limit_except\" block".to_owned(),
                d.span,
            );
            return None;
        }
        if authority.is_empty() {
            self.invalid(
                format!("no host in \"{url}\" of the \"proxy_pass\" directive"),
                arg.span,
            );
            return None;
        }
        let upstream = if ups.by_name.contains_key(authority) {
            authority.to_owned()
        } else {
            self.implicit_upstream(authority, tls, d, ups)?
        };
        Some(Action::Proxy(ProxyPass {
            upstream,
            proxy_host: authority.to_owned(),
            tls,
            uri,
            location: self.at(d.span),
        }))
    }

    /// `proxy_pass` with variables. nginx checks the scheme only per request (and answers 500);
    /// a scheme written out that can never be `http://` is refused here already.
    fn proxy_pass_vars(&mut self, arg: &Arg) -> Option<ProxyPassVars> {
        let url = arg.value.as_str();
        let literal = url[..url.find('$').unwrap_or(url.len())].to_ascii_lowercase();
        let http = literal.starts_with("http://")
            || "http://".starts_with(&literal)
            || "https://".starts_with(&literal);
        if !http {
            self.invalid(format!("invalid URL prefix in \"{url}\""), arg.span);
            return None;
        }
        Some(ProxyPassVars {
            url: url.to_owned(),
            location: self.at(arg.span),
        })
    }

    /// `proxy_pass http://host:port` with no `upstream host` block: a group of the addresses
    /// the host resolves to, with nginx's default peer parameters. `https://host` without a
    /// port is port 443's group, `host:443` (as nginx keys its implicit groups by host and
    /// port).
    fn implicit_upstream(
        &mut self,
        authority: &str,
        tls: bool,
        d: &Directive,
        ups: &mut Upstreams,
    ) -> Option<String> {
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6
                .split_once(']')
                .is_some_and(|(_, after)| after.starts_with(':')),
            None => authority.contains(':'),
        };
        let name = match (tls, has_port) {
            (true, false) => format!("{authority}:443"),
            _ => authority.to_owned(),
        };
        if ups.by_name.contains_key(&name) {
            return Some(name);
        }
        let default_port = if tls { 443 } else { 80 };
        let addrs = match values::socket_addrs(authority, default_port, false) {
            Ok(addrs) => addrs,
            Err(AddrError::InvalidPort) => {
                self.invalid(
                    format!("invalid port in upstream \"{authority}\""),
                    d.args[0].span,
                );
                return None;
            }
            Err(_) => {
                let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
                self.error(ErrorKind::HostNotFound(host.to_owned()), d.span);
                return None;
            }
        };
        ups.by_name.insert(name.clone(), ups.groups.len());
        ups.groups
            .push(Upstream::implicit(&name, addrs, self.at(d.span)));
        Some(name)
    }

    /// `map source $name { [hostnames;] [volatile;] [default value;] key value; ... }`.
    fn map_block(&mut self, d: &Directive) {
        let Some(name) = d.args[1]
            .value
            .strip_prefix('$')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        else {
            return self.invalid(
                format!("invalid variable name \"{}\"", d.args[1].value),
                d.args[1].span,
            );
        };
        let mut map = MapSpec {
            source: d.args[0].value.clone(),
            name: name.to_owned(),
            default: String::new(),
            entries: Vec::new(),
            location: self.at(d.span),
        };
        let mut hostnames = false;
        let mut default_seen = false;
        let mut keys = HashSet::new();
        for c in d.block.as_deref().unwrap_or_default() {
            if c.block.is_some() {
                self.invalid(
                    format!("unexpected \"{{\" after map key \"{}\"", c.name),
                    c.span,
                );
                continue;
            }
            match (c.name.as_str(), c.args.len()) {
                ("hostnames", 0) => {
                    hostnames = true;
                    continue;
                }
                ("volatile", 0) => continue, // imbang caches no map value
                ("default", 1) => {
                    if std::mem::replace(&mut default_seen, true) {
                        self.invalid("duplicate default map parameter".to_owned(), c.span);
                    }
                    map.default = c.args[0].value.clone();
                    continue;
                }
                (_, 1) => {}
                _ => {
                    self.invalid("invalid number of the map parameters".to_owned(), c.span);
                    continue;
                }
            }
            let (text, value) = (c.name.as_str(), c.args[0].value.clone());
            let key = if let Some(re) = text.strip_prefix("~*") {
                self.map_regex(&format!("(?i){re}"), c)
            } else if let Some(re) = text.strip_prefix('~') {
                self.map_regex(re, c)
            } else {
                let text = text.strip_prefix('\\').unwrap_or(text).to_ascii_lowercase();
                if !keys.insert(text.clone()) {
                    self.invalid(format!("conflicting parameter \"{}\"", c.name), c.span);
                    continue;
                }
                Some(if !hostnames {
                    MapKey::Exact(text)
                } else if let Some(rest) = text.strip_prefix("*.") {
                    MapKey::Suffix {
                        suffix: format!(".{rest}"),
                        dot_too: false,
                    }
                } else if text.starts_with('.') {
                    MapKey::Suffix {
                        suffix: text,
                        dot_too: true,
                    }
                } else if let Some(rest) = text.strip_suffix(".*") {
                    MapKey::Prefix(format!("{rest}."))
                } else {
                    MapKey::Exact(text)
                })
            };
            if let Some(key) = key {
                map.entries.push((key, value));
            }
        }
        self.maps.push(map);
    }

    fn map_regex(&mut self, pattern: &str, c: &Directive) -> Option<MapKey> {
        self.regex(pattern, &c.name, c.span, regex::Regex::new)
            .map(MapKey::Regex)
    }

    /// `allow|deny address|CIDR|unix:|all`, as nginx reads it.
    fn access_rule(&mut self, d: &Directive) -> Option<AccessRule> {
        use std::net::IpAddr;
        let allow = d.name == "allow";
        let arg = &d.args[0];
        let text = arg.value.as_str();
        if text == "all" {
            return Some(AccessRule { allow, net: None });
        }
        if text == "unix:" {
            // imbang listens on no Unix sockets: a rule about their clients covers nobody.
            return None;
        }
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, bits)) => (addr, Some(bits)),
            None => (text, None),
        };
        let ip: Option<IpAddr> = addr.parse().ok();
        let max = match ip {
            Some(IpAddr::V4(_)) => 32,
            Some(IpAddr::V6(_)) => 128,
            None => 0,
        };
        let prefix = match prefix {
            None => Some(max),
            Some(bits) => (bits.bytes().all(|b| b.is_ascii_digit()) && !bits.is_empty())
                .then(|| bits.parse::<u8>().ok())
                .flatten()
                .filter(|&n| n <= max),
        };
        let (Some(ip), Some(prefix)) = (ip, prefix) else {
            self.invalid(format!("invalid parameter \"{text}\""), arg.span);
            return None;
        };
        let net = network(ip, prefix);
        if net != ip {
            self.warn(
                format!("low address bits of {text} are meaningless"),
                arg.span,
            );
        }
        Some(AccessRule {
            allow,
            net: Some((net, prefix)),
        })
    }

    /// `api [write=on|off]`.
    fn api(&mut self, d: &Directive) -> Option<Action> {
        let write = match d.args.first().map(|a| a.value.as_str()) {
            None | Some("write=off") => false,
            Some("write=on") => true,
            Some(other) => {
                self.invalid(format!("invalid parameter \"{other}\""), d.args[0].span);
                return None;
            }
        };
        Some(Action::Api(Api { write }))
    }

    // === active health checks ===

    /// `health_check [interval=] [jitter=] [fails=] [passes=] [uri=] [match=] [port=]
    /// [mandatory [persistent]]` in a location whose `proxy_pass` names a group.
    fn health_check(&mut self, d: &Directive, action: Option<&Action>, frame: &Frame) {
        let pass = match action {
            Some(Action::Proxy(pass)) => pass,
            Some(Action::ProxyVars(_)) => {
                return self.invalid(
                    "\"health_check\" cannot be used with \"proxy_pass\" with variables: it checks the group a literal \"proxy_pass\" names".to_owned(),
                    d.span,
                );
            }
            _ => {
                return self.invalid(
                    "\"health_check\" requires \"proxy_pass\" to an upstream group in the same location".to_owned(),
                    d.span,
                );
            }
        };
        let conf = frame.conf(None);
        let host = (conf.proxy.set_headers.iter())
            .rfind(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map(|(_, value)| value)
            .filter(|value| !value.is_empty() && !value.contains('$'))
            .unwrap_or(&pass.proxy_host);
        let mut check = HealthCheck {
            upstream: pass.upstream.clone(),
            uri: "/".to_owned(),
            port: None,
            interval: Duration::from_secs(5),
            jitter: Duration::ZERO,
            fails: 1,
            passes: 1,
            mandatory: false,
            persistent: false,
            matcher: None,
            host: host.clone(),
            http10: conf.proxy.http_version_1_0,
            tls: pass.tls.then(|| {
                let name = (conf.proxy.ssl.name.clone())
                    .filter(|name| !name.contains('$'))
                    .unwrap_or_else(|| pass.proxy_host.clone());
                (conf.proxy.ssl.clone(), name)
            }),
            connect_timeout: conf.proxy.connect_timeout,
            send_timeout: conf.proxy.send_timeout,
            read_timeout: conf.proxy.read_timeout,
            location: self.at(d.span),
            stream: None,
        };
        let mut ok = true;
        for p in &d.args {
            let (key, value) = p.value.split_once('=').unwrap_or((p.value.as_str(), ""));
            let has_value = p.value.contains('=');
            let good = match check_parameter(&mut check, key, has_value, value) {
                Some(good) => good,
                None => match (key, has_value) {
                    ("uri", true) => {
                        let good =
                            value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic());
                        if good {
                            check.uri = value.to_owned();
                        }
                        good
                    }
                    ("match", true) => match self.matches.get(value) {
                        Some(m) => {
                            check.matcher = Some(m.clone());
                            true
                        }
                        None => {
                            self.invalid(format!("match \"{value}\" is not defined"), p.span);
                            ok = false;
                            continue;
                        }
                    },
                    ("type", true) => {
                        self.invalid(
                            format!(
                                "\"{}\": only HTTP health checks are supported by imbang yet",
                                p.value
                            ),
                            p.span,
                        );
                        ok = false;
                        continue;
                    }
                    ("keepalive_time", true) if values::duration(value).is_some() => {
                        self.warn(
                        "the \"keepalive_time\" parameter of \"health_check\" has no effect in imbang: each check opens a connection of its own".to_owned(),
                        p.span,
                    );
                        true
                    }
                    _ => false,
                },
            };
            if !good {
                self.invalid(format!("invalid parameter \"{}\"", p.value), p.span);
                ok = false;
            }
        }
        if ok && self.persistent_has_mandatory(&check, d) {
            self.health_checks.push(check);
        }
    }

    /// nginx Plus's rule: `persistent` only with `mandatory`.
    pub(super) fn persistent_has_mandatory(&mut self, check: &HealthCheck, d: &Directive) -> bool {
        if check.persistent && !check.mandatory {
            self.invalid(
                "\"persistent\" requires \"mandatory\" in \"health_check\"".to_owned(),
                d.span,
            );
            return false;
        }
        true
    }

    /// `match name { status ...; header ...; body ...; }`.
    fn match_block(&mut self, d: &Directive) {
        let name = d.args[0].value.clone();
        if self.matches.contains_key(&name) {
            return self.invalid(format!("duplicate match \"{name}\""), d.span);
        }
        let mut m = Match {
            name: name.clone(),
            status: None,
            headers: Vec::new(),
            body: None,
        };
        let mut seen = Seen::default();
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::MATCH) else {
                continue;
            };
            match c.name.as_str() {
                "status" if self.once(&mut seen, spec, c) => m.status = self.status_test(c),
                "header" => m.headers.extend(self.header_test(c)),
                "body" if self.once(&mut seen, spec, c) => {
                    let negate = match c.args[0].value.as_str() {
                        "~" => false,
                        "!~" => true,
                        _ => {
                            self.invalid(
                                format!("invalid operator \"{}\": \"body\" takes \"~\" or \"!~\"", c.args[0].value),
                                c.args[0].span,
                            );
                            continue;
                        }
                    };
                    if let Some(regex) = self.regex_arg(&c.args[1], regex::bytes::Regex::new) {
                        m.body = Some(BodyTest { negate, regex });
                    }
                }
                "require" => self.invalid(
                    "\"require\" is not supported by imbang yet (the variables of a check response)".to_owned(),
                    c.span,
                ),
                _ => {}
            }
        }
        self.matches.insert(name, Arc::new(m));
    }

    /// `status [!] 200 204 300-399 ...`
    fn status_test(&mut self, d: &Directive) -> Option<StatusTest> {
        let negate = d.args[0].value == "!";
        let codes = &d.args[usize::from(negate)..];
        if codes.is_empty() {
            self.error(ErrorKind::Arity(d.name.clone()), d.span);
            return None;
        }
        let code = |t: &str| {
            (t.len() == 3)
                .then(|| t.parse::<u16>().ok())
                .flatten()
                .filter(|c| (100..=599).contains(c))
        };
        let mut ranges = Vec::new();
        for arg in codes {
            let range = match arg.value.split_once('-') {
                Some((low, high)) => code(low).zip(code(high)).filter(|(l, h)| l <= h),
                None => code(&arg.value).map(|c| (c, c)),
            };
            match range {
                Some(range) => ranges.push(range),
                None => {
                    self.invalid(format!("invalid status \"{}\"", arg.value), arg.span);
                    return None;
                }
            }
        }
        Some(StatusTest { negate, ranges })
    }

    /// `header Name;`, `header ! Name;`, `header Name =|!=|~|!~ value;`
    fn header_test(&mut self, d: &Directive) -> Option<HeaderTest> {
        let args = &d.args;
        let name = |arg: &Arg| arg.value.to_ascii_lowercase();
        let valid_name = |arg: &Arg| http::HeaderName::from_bytes(arg.value.as_bytes()).is_ok();
        let (subject, test) = match args.len() {
            1 => (&args[0], HeaderTest::Present(name(&args[0]))),
            2 if args[0].value == "!" => (&args[1], HeaderTest::Absent(name(&args[1]))),
            3 => {
                let (n, value) = (name(&args[0]), &args[2]);
                let test = match args[1].value.as_str() {
                    "=" => HeaderTest::Equals(n, value.value.clone()),
                    "!=" => HeaderTest::NotEquals(n, value.value.clone()),
                    "~" => HeaderTest::Matches(n, self.regex_arg(value, regex::Regex::new)?),
                    "!~" => HeaderTest::NotMatches(n, self.regex_arg(value, regex::Regex::new)?),
                    op => {
                        self.invalid(
                            format!("invalid operator \"{op}\": \"header\" takes \"=\", \"!=\", \"~\" or \"!~\""),
                            args[1].span,
                        );
                        return None;
                    }
                };
                (&args[0], test)
            }
            _ => {
                self.invalid(
                    "invalid \"header\": expected \"header Name\", \"header ! Name\" or \"header Name <op> value\"".to_owned(),
                    d.span,
                );
                return None;
            }
        };
        if !valid_name(subject) {
            self.invalid(
                format!("invalid header name \"{}\"", subject.value),
                subject.span,
            );
            return None;
        }
        Some(test)
    }

    fn regex_arg<R, E: std::fmt::Display>(
        &mut self,
        arg: &Arg,
        compile: impl FnOnce(&str) -> Result<R, E>,
    ) -> Option<R> {
        self.regex(&arg.value, &arg.value, arg.span, compile)
    }

    /// `pattern` compiled by `compile`, or an error that names it as `shown` (the text as
    /// written) at `span`, with the regex crate's reason.
    fn regex<R, E: std::fmt::Display>(
        &mut self,
        pattern: &str,
        shown: &str,
        span: Span,
        compile: impl FnOnce(&str) -> Result<R, E>,
    ) -> Option<R> {
        match compile(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                let why = e.to_string();
                let why = why.lines().last().unwrap_or_default().trim().to_owned();
                self.invalid(
                    format!("invalid regular expression \"{shown}\": {why}"),
                    span,
                );
                None
            }
        }
    }

    // === upstream ===

    fn upstream(&mut self, d: &Directive, ups: &mut Upstreams) {
        let name = d.args[0].value.clone();
        if ups.by_name.contains_key(&name) {
            self.invalid(format!("duplicate upstream \"{name}\""), d.span);
            return;
        }
        let mut up = Upstream {
            name: name.clone(),
            peers: Vec::new(),
            method: BalanceMethod::RoundRobin,
            keepalive: DEFAULT_KEEPALIVE,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 1000,
            keepalive_time: Duration::from_secs(3600),
            queue: None,
            implicit: false,
            location: self.at(d.span),
            resolve: None,
            zone: false,
            state: None,
        };
        let mut pending = resolver::Pending::new(ups.groups.len(), d.span);
        let mut seen = Seen::default();
        let mut method = MethodState::default();
        // Where `queue` was, until a method directive follows it (NGINX Plus wants it after).
        let mut queue_at = None;
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::UPSTREAM) else {
                continue;
            };
            match c.name.as_str() {
                "server" => self.peer(c, &mut up.peers, &method, &mut pending),
                "least_conn" | "least_time" | "ip_hash" | "hash" | "random" => {
                    if let Some(queue) = queue_at.take() {
                        self.warn(
                            "\"queue\" before the balancing method has no effect in NGINX Plus; imbang applies it".to_owned(),
                            queue,
                        );
                    }
                    self.balance_method(c, &mut up.method, &mut method);
                }
                _ if !self.once(&mut seen, spec, c) => {}
                "keepalive" if c.args.get(1).is_some_and(|a| a.value != "local") => {
                    self.invalid_value(c, &c.args[1]);
                }
                "keepalive" => {
                    match values::number(&c.args[0].value) {
                        Some(n) if n > 0 => up.keepalive = n as usize,
                        _ => self.invalid_value(c, &c.args[0]),
                    }
                    if let Some(local) = c.args.get(1) {
                        // nginx (1.29+): cached connections are not shared with other
                        // upstream blocks; imbang's idle connections are kept per peer address.
                        self.warn(
                            "the \"local\" parameter of \"keepalive\" has no effect in imbang"
                                .to_owned(),
                            local.span,
                        );
                    }
                }
                "keepalive_timeout" => {
                    if let Some(t) = self.duration_arg(c, &c.args[0]) {
                        up.keepalive_timeout = t;
                    }
                }
                "keepalive_requests" => {
                    if let Some(n) = self.number_arg(c, &c.args[0]) {
                        up.keepalive_requests = n;
                    }
                }
                "keepalive_time" => {
                    if let Some(t) = self.duration_arg(c, &c.args[0]) {
                        up.keepalive_time = t;
                    }
                }
                "queue" => {
                    up.queue = self.queue(c);
                    queue_at = Some(c.span);
                }
                "resolver" | "resolver_timeout" | "zone" => {
                    up.zone |= c.name == "zone";
                    self.upstream_resolver_setting(c, &mut pending);
                }
                "state" => self.upstream_state(c, &mut up),
                _ => {}
            }
        }
        let has_server = d
            .block
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.name == "server");
        if !has_server && up.state.is_none() {
            self.invalid("no servers are inside upstream".to_owned(), d.span);
        }
        self.check_upstream_state(d, &up);
        ups.by_name.insert(name, ups.groups.len());
        ups.groups.push(up);
        self.resolve_pending.push(pending);
    }

    /// `queue number [timeout=time]` (NGINX Plus; timeout 60s by default).
    fn queue(&mut self, d: &Directive) -> Option<QueueSpec> {
        let size = match values::number(&d.args[0].value) {
            Some(n) => n as usize,
            None => {
                self.invalid_value(d, &d.args[0]);
                return None;
            }
        };
        let mut timeout = Duration::from_secs(60);
        if let Some(arg) = d.args.get(1) {
            match arg
                .value
                .strip_prefix("timeout=")
                .and_then(values::duration)
            {
                Some(t) => timeout = t,
                None => {
                    self.invalid(format!("invalid parameter \"{}\"", arg.value), arg.span);
                    return None;
                }
            }
        }
        Some(QueueSpec { size, timeout })
    }

    /// `least_conn`, `least_time`, `ip_hash`, `hash key [consistent]`, `random [two [...]]`, as nginx
    /// reads them: a second method in a block warns "load balancing method redefined" and the
    /// last one wins; `server` lines after a method that cannot use backups may not say `backup`.
    fn balance_method(
        &mut self,
        d: &Directive,
        method: &mut BalanceMethod,
        state: &mut MethodState,
    ) {
        if state.set {
            self.warn("load balancing method redefined".to_owned(), d.span);
        }
        state.set = true;
        let args = &d.args;
        let invalid = |lower: &mut Self, arg: &Arg| {
            lower.invalid(format!("invalid parameter \"{}\"", arg.value), arg.span);
        };
        let chosen = match d.name.as_str() {
            "least_conn" => BalanceMethod::LeastConn,
            "least_time" => {
                let Some(mode) = TimeMode::parse(&args[0].value) else {
                    return invalid(self, &args[0]);
                };
                match args.get(1) {
                    Some(arg) if arg.value != "inflight" => return invalid(self, arg),
                    inflight => BalanceMethod::LeastTime {
                        mode,
                        inflight: inflight.is_some(),
                    },
                }
            }
            "ip_hash" => BalanceMethod::IpHash,
            "hash" => {
                let consistent = match args.get(1) {
                    None => false,
                    Some(arg) if arg.value == "consistent" => true,
                    Some(arg) => return invalid(self, arg),
                };
                // imbang's `bounded=factor`, only after `consistent`.
                let bounded = match args.get(2) {
                    None => None,
                    Some(arg) => match arg.value.strip_prefix("bounded=").and_then(load_factor) {
                        Some(factor) => Some(factor),
                        None => return invalid(self, arg),
                    },
                };
                BalanceMethod::Hash {
                    key: args[0].value.clone(),
                    consistent,
                    bounded,
                    location: self.at(d.span),
                }
            }
            _ => {
                // nginx keeps `two` from an earlier `random two` of the block when a later
                // `random` has no arguments (its setting is only ever switched on).
                match args.first() {
                    Some(arg) if arg.value != "two" => return invalid(self, arg),
                    Some(_) => state.random_two = true,
                    None => {}
                }
                let least_time = match args.get(1).map(|arg| (arg, arg.value.as_str())) {
                    None | Some((_, "least_conn")) => None,
                    Some((arg, value)) => {
                        let mode = value.strip_prefix("least_time=").and_then(TimeMode::parse);
                        match mode {
                            Some(mode) => Some(mode),
                            None => return invalid(self, arg),
                        }
                    }
                };
                BalanceMethod::Random {
                    two: state.random_two,
                    least_time,
                }
            }
        };
        state.hash_or_random = !matches!(
            chosen,
            BalanceMethod::LeastConn | BalanceMethod::LeastTime { .. }
        );
        *method = chosen;
    }

    /// One `server` line of an `upstream` block. After a method directive that has no use for
    /// `backup` or `slow_start` (hash, ip_hash, random), those parameters are errors: nginx
    /// checks each `server` line against the method seen so far.
    fn peer(
        &mut self,
        d: &Directive,
        peers: &mut Vec<PeerSpec>,
        method: &MethodState,
        pending: &mut resolver::Pending,
    ) {
        let addr_arg = &d.args[0];
        let mut spec = PeerSpec::new(SocketAddr::from(([0, 0, 0, 0], 0)), &addr_arg.value);
        let mut ok = true;
        let (mut resolve, mut service) = (false, None);
        for p in &d.args[1..] {
            let (key, value) = p.value.split_once('=').unwrap_or((p.value.as_str(), ""));
            let good = match key {
                "resolve" if value.is_empty() && !p.value.contains('=') => {
                    resolve = true;
                    true
                }
                "service" => {
                    service = Some(p);
                    true
                }
                "weight" => values::number(value)
                    .filter(|&n| n > 0)
                    .map(|n| spec.weight = n as u32)
                    .is_some(),
                "max_fails" => values::number(value)
                    .map(|n| spec.max_fails = n as u32)
                    .is_some(),
                "max_conns" => values::number(value)
                    .map(|n| spec.max_conns = n as u32)
                    .is_some(),
                "fail_timeout" => values::duration(value)
                    .map(|t| spec.fail_timeout = t)
                    .is_some(),
                "slow_start" if !method.allows_slow_start() => {
                    self.invalid(
                        format!(
                            "balancing method does not support parameter \"{}\"",
                            p.value
                        ),
                        p.span,
                    );
                    ok = false;
                    continue;
                }
                "slow_start" => values::duration(value)
                    .map(|t| spec.slow_start = t)
                    .is_some(),
                "backup" if value.is_empty() && !method.allows_backup() => {
                    self.invalid(
                        format!(
                            "balancing method does not support parameter \"{}\"",
                            p.value
                        ),
                        p.span,
                    );
                    ok = false;
                    continue;
                }
                "backup" if value.is_empty() => {
                    spec.backup = true;
                    true
                }
                "down" if value.is_empty() => {
                    spec.down = true;
                    true
                }
                _ => false,
            };
            if !good {
                self.invalid(format!("invalid parameter \"{}\"", p.value), p.span);
                ok = false;
            }
        }
        match self.resolve_peer(d, &spec, resolve, service) {
            Ok(Some(name)) if ok => return pending.push(name),
            Ok(_) if ok => {}
            _ => return,
        }
        match values::socket_addrs(&addr_arg.value, 80, false) {
            Ok(addrs) if ok => {
                for addr in addrs {
                    peers.push(PeerSpec {
                        addr,
                        ..spec.clone()
                    });
                }
            }
            Ok(_) => {}
            Err(AddrError::Unix) => self.invalid(
                "unix domain sockets are not supported by imbang yet".to_owned(),
                addr_arg.span,
            ),
            Err(AddrError::InvalidPort) => self.invalid(
                format!("invalid port in upstream \"{}\"", addr_arg.value),
                addr_arg.span,
            ),
            Err(AddrError::HostNotFound) => {
                self.error(ErrorKind::HostNotFound(addr_arg.value.clone()), d.span)
            }
        }
    }
}

/// nginx's debug masks of `error_log` (a build with `--with-debug` logs by them).
const DEBUG_MASKS: &[&str] = &[
    "debug_core",
    "debug_alloc",
    "debug_mutex",
    "debug_event",
    "debug_http",
    "debug_mail",
    "debug_stream",
];

/// `bounded=`'s factor in thousandths: a decimal of at least 1 with up to 3 decimals
/// (`1.25` → 1250), at most 100.
fn load_factor(text: &str) -> Option<u32> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !(fraction.is_empty() || digits(fraction) && fraction.len() <= 3) {
        return None;
    }
    let whole: u32 = whole.parse().ok()?;
    let fraction: u32 = format!("{fraction:0<3}").parse().ok()?;
    let factor = whole.checked_mul(1000)? + fraction;
    (1000..=100_000).contains(&factor).then_some(factor)
}

/// The `health_check` parameters http and stream share (`interval=`, `jitter=`, `fails=`,
/// `passes=`, `port=`, `mandatory`, `persistent`), set on `check`: whether `value` was good,
/// or `None` for a parameter of neither's common set.
pub(super) fn check_parameter(
    check: &mut HealthCheck,
    key: &str,
    has_value: bool,
    value: &str,
) -> Option<bool> {
    let count =
        |v: &str| (values::number(v).filter(|&n| n > 0)).map(|n| n.min(u64::from(u32::MAX)) as u32);
    Some(match (key, has_value) {
        ("interval", true) => (values::duration(value).filter(|t| !t.is_zero()))
            .map(|t| check.interval = t)
            .is_some(),
        ("jitter", true) => values::duration(value).map(|t| check.jitter = t).is_some(),
        ("fails", true) => count(value).map(|n| check.fails = n).is_some(),
        ("passes", true) => count(value).map(|n| check.passes = n).is_some(),
        ("port", true) => (values::number(value).filter(|&n| (1..=65535).contains(&n)))
            .map(|n| check.port = Some(n as u16))
            .is_some(),
        ("mandatory", false) => {
            check.mandatory = true;
            true
        }
        ("persistent", false) => {
            check.persistent = true;
            true
        }
        _ => return None,
    })
}
