//! The one table of directives imbang knows: where each may appear, how many arguments it takes,
//! and whether imbang acts on it. `lower.rs` checks every directive against this table before it
//! reads any value, so context and arity errors come out the same for every directive.

/// Where a directive may appear (a bit set, like nginx's `NGX_*_CONF` flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contexts(u16);

impl Contexts {
    pub const MAIN: Self = Self(1);
    pub const EVENTS: Self = Self(1 << 1);
    pub const HTTP: Self = Self(1 << 2);
    pub const SERVER: Self = Self(1 << 3);
    pub const LOCATION: Self = Self(1 << 4);
    pub const UPSTREAM: Self = Self(1 << 5);
    /// Inside `match name { }` (NGINX Plus's tests for health-check responses).
    pub const MATCH: Self = Self(1 << 6);

    const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

const HSL: Contexts = Contexts::HTTP.or(Contexts::SERVER).or(Contexts::LOCATION);
const HS: Contexts = Contexts::HTTP.or(Contexts::SERVER);
const MAIN_HSL: Contexts = Contexts::MAIN.or(HSL);

/// How many arguments a directive takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Between `min` and `max` arguments (inclusive).
    Range(u8, u8),
    /// At least this many.
    AtLeast(u8),
    /// Exactly one of `on` / `off`.
    Flag,
}

impl Arity {
    pub fn accepts(self, n: usize) -> bool {
        match self {
            Self::Range(min, max) => (min as usize..=max as usize).contains(&n),
            Self::AtLeast(min) => n >= min as usize,
            Self::Flag => n == 1,
        }
    }
}

/// What imbang does with a directive it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Implemented; its value is used.
    Acts,
    /// Parsed and checked, but it changes nothing in imbang; `-t` warns with this reason.
    NoEffect(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub name: &'static str,
    pub contexts: Contexts,
    pub arity: Arity,
    /// A block directive (`http { }`); a block where none is expected, or none where one is, is an error.
    pub block: bool,
    pub effect: Effect,
}

const fn d(name: &'static str, contexts: Contexts, arity: Arity) -> Spec {
    Spec {
        name,
        contexts,
        arity,
        block: false,
        effect: Effect::Acts,
    }
}

const fn block(name: &'static str, contexts: Contexts, arity: Arity) -> Spec {
    Spec {
        name,
        contexts,
        arity,
        block: true,
        effect: Effect::Acts,
    }
}

const fn no_effect(
    name: &'static str,
    contexts: Contexts,
    arity: Arity,
    why: &'static str,
) -> Spec {
    Spec {
        name,
        contexts,
        arity,
        block: false,
        effect: Effect::NoEffect(why),
    }
}

use Arity::{AtLeast, Flag, Range};
use Contexts as C;

const ONE: Arity = Range(1, 1);
const NONE: Arity = Range(0, 0);

const STATIC_FILES: &str =
    "imbang does not serve files; a location without proxy_pass or return answers 404";
const NO_GZIP: &str = "imbang does not compress responses (upstream compression passes through)";
const KERNEL: &str = "imbang chooses its own socket options";

/// Every directive imbang accepts. `include` is not here: the parser expands it.
pub static DIRECTIVES: &[Spec] = &[
    // --- main context
    d("daemon", C::MAIN, Flag),
    no_effect(
        "master_process",
        C::MAIN,
        Flag,
        "imbang is always one process",
    ),
    d("worker_processes", C::MAIN, ONE),
    d("pid", C::MAIN, ONE),
    d("error_log", MAIN_HSL, Range(1, 2)),
    no_effect(
        "user",
        C::MAIN,
        Range(1, 2),
        "imbang keeps the user it was started as",
    ),
    d("worker_shutdown_timeout", C::MAIN, ONE),
    no_effect(
        "worker_rlimit_nofile",
        C::MAIN,
        ONE,
        "set the limit with ulimit or LimitNOFILE=",
    ),
    no_effect("worker_cpu_affinity", C::MAIN, AtLeast(1), KERNEL),
    no_effect("worker_priority", C::MAIN, ONE, KERNEL),
    no_effect("pcre_jit", C::MAIN, Flag, "regexes are always compiled"),
    no_effect(
        "timer_resolution",
        C::MAIN,
        ONE,
        "imbang reads the clock as needed",
    ),
    no_effect("env", C::MAIN, ONE, "imbang runs no scripts"),
    no_effect(
        "thread_pool",
        C::MAIN,
        Range(2, 3),
        "imbang has one runtime",
    ),
    block("events", C::MAIN, NONE),
    block("http", C::MAIN, NONE),
    // --- events
    d("worker_connections", C::EVENTS, ONE),
    no_effect(
        "multi_accept",
        C::EVENTS,
        Flag,
        "imbang's accept loop decides",
    ),
    no_effect("use", C::EVENTS, ONE, "imbang uses epoll through tokio"),
    no_effect(
        "accept_mutex",
        C::EVENTS,
        Flag,
        "imbang has one listener per address",
    ),
    no_effect(
        "accept_mutex_delay",
        C::EVENTS,
        ONE,
        "imbang has one listener per address",
    ),
    // --- http
    block("server", C::HTTP, NONE),
    block("upstream", C::HTTP, ONE),
    Spec {
        name: "types",
        contexts: HSL,
        arity: NONE,
        block: true,
        effect: Effect::NoEffect(STATIC_FILES),
    },
    d("default_type", HSL, ONE),
    no_effect("sendfile", HSL, Flag, STATIC_FILES),
    no_effect("tcp_nopush", HSL, Flag, KERNEL),
    no_effect("tcp_nodelay", HSL, Flag, "imbang always sets TCP_NODELAY"),
    no_effect(
        "types_hash_max_size",
        HSL,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "types_hash_bucket_size",
        HSL,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "server_names_hash_bucket_size",
        C::HTTP,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "server_names_hash_max_size",
        C::HTTP,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "variables_hash_max_size",
        C::HTTP,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "variables_hash_bucket_size",
        C::HTTP,
        ONE,
        "imbang sizes its tables itself",
    ),
    d("access_log", HSL, AtLeast(1)),
    d("log_format", C::HTTP, AtLeast(2)),
    no_effect("gzip", HSL, Flag, NO_GZIP),
    no_effect("gzip_vary", HSL, Flag, NO_GZIP),
    no_effect("gzip_proxied", HSL, AtLeast(1), NO_GZIP),
    no_effect("gzip_comp_level", HSL, ONE, NO_GZIP),
    no_effect("gzip_buffers", HSL, Range(2, 2), NO_GZIP),
    no_effect("gzip_http_version", HSL, ONE, NO_GZIP),
    no_effect("gzip_min_length", HSL, ONE, NO_GZIP),
    no_effect("gzip_types", HSL, AtLeast(1), NO_GZIP),
    no_effect("gzip_disable", HSL, AtLeast(1), NO_GZIP),
    d("keepalive_timeout", HSL, Range(1, 2)),
    d("keepalive_requests", HSL, ONE),
    d("client_body_buffer_size", HSL, ONE),
    d("client_header_buffer_size", HS, ONE),
    d("large_client_header_buffers", HS, Range(2, 2)),
    d("client_body_timeout", HSL, ONE),
    d("client_header_timeout", HS, ONE),
    d("send_timeout", HSL, ONE),
    no_effect(
        "reset_timedout_connection",
        HSL,
        Flag,
        "not implemented yet",
    ),
    no_effect("root", HSL, ONE, STATIC_FILES),
    no_effect("index", HSL, AtLeast(1), STATIC_FILES),
    no_effect("autoindex", HSL, Flag, STATIC_FILES),
    no_effect("charset", HSL, ONE, "imbang does not rewrite charsets"),
    // --- ssl (tls helper): nginx's ngx_http_ssl_module and `http2`; read in lower/ssl.rs
    d("http2", HS, Flag),
    d("ssl", HS, Flag),
    d("ssl_certificate", HS, ONE),
    d("ssl_certificate_key", HS, ONE),
    d("ssl_reject_handshake", HS, Flag),
    d("ssl_protocols", HS, AtLeast(1)),
    d("ssl_ciphers", HS, ONE),
    d("ssl_ecdh_curve", HS, ONE),
    d("ssl_prefer_server_ciphers", HS, Flag),
    no_effect(
        "ssl_dhparam",
        HS,
        ONE,
        "rustls offers no DHE cipher suites (ECDHE only)",
    ),
    d("ssl_session_cache", HS, AtLeast(1)),
    d("ssl_session_timeout", HS, ONE),
    d("ssl_session_tickets", HS, Flag),
    no_effect(
        "ssl_session_ticket_key",
        HS,
        ONE,
        "ticket keys are random per process and rotated by imbang",
    ),
    no_effect(
        "ssl_buffer_size",
        HS,
        ONE,
        "rustls sizes its TLS records itself",
    ),
    d("ssl_stapling", HS, Flag),
    d("ssl_stapling_file", HS, ONE),
    no_effect(
        "ssl_stapling_verify",
        HS,
        Flag,
        "a stapled response comes from ssl_stapling_file and is sent as it is",
    ),
    no_effect(
        "ssl_stapling_responder",
        HS,
        ONE,
        "imbang does not query OCSP responders; use ssl_stapling_file",
    ),
    d("ssl_verify_client", HS, ONE),
    d("ssl_client_certificate", HS, ONE),
    d("ssl_trusted_certificate", HS, ONE),
    d("ssl_verify_depth", HS, ONE),
    d("ssl_crl", HS, ONE),
    // --- server
    d("listen", C::SERVER, AtLeast(1)),
    d("server_name", C::SERVER, AtLeast(1)),
    block("location", C::SERVER.or(C::LOCATION), Range(1, 2)),
    // --- server / location
    d("return", C::SERVER.or(C::LOCATION), Range(1, 2)),
    d("proxy_pass", C::LOCATION, ONE),
    d("proxy_set_header", HSL, Range(2, 2)),
    d("proxy_http_version", HSL, ONE),
    d("proxy_hide_header", HSL, ONE),
    d("proxy_pass_header", HSL, ONE),
    d("proxy_pass_request_headers", HSL, Flag),
    d("proxy_pass_request_body", HSL, Flag),
    d("proxy_redirect", HSL, Range(1, 2)),
    d("add_header", HSL, Range(2, 3)),
    d("server_tokens", HSL, ONE),
    d("client_max_body_size", HSL, ONE),
    d("error_page", HSL, AtLeast(2)),
    d("proxy_intercept_errors", HSL, Flag),
    d("internal", C::LOCATION, NONE),
    d("set", C::SERVER.or(C::LOCATION), Range(2, 2)),
    d("proxy_connect_timeout", HSL, ONE),
    d("proxy_read_timeout", HSL, ONE),
    d("proxy_send_timeout", HSL, ONE),
    d("proxy_next_upstream", HSL, AtLeast(1)),
    d("proxy_next_upstream_tries", HSL, ONE),
    d("proxy_next_upstream_timeout", HSL, ONE),
    no_effect(
        "proxy_buffering",
        HSL,
        Flag,
        "responses are always streamed (proxy_buffering off)",
    ),
    no_effect("proxy_buffers", HSL, Range(2, 2), "responses are streamed"),
    no_effect(
        "proxy_request_buffering",
        HSL,
        Flag,
        "request bodies are always streamed to the peer (proxy_request_buffering off)",
    ),
    no_effect(
        "proxy_ignore_client_abort",
        HSL,
        Flag,
        "a request whose client went away is always abandoned (proxy_ignore_client_abort off)",
    ),
    no_effect("proxy_buffer_size", HSL, ONE, "responses are streamed"),
    no_effect(
        "proxy_busy_buffers_size",
        HSL,
        ONE,
        "responses are streamed",
    ),
    // --- upstream
    d("least_conn", C::UPSTREAM, NONE),
    d("least_time", C::UPSTREAM, Range(1, 2)),
    d("ip_hash", C::UPSTREAM, NONE),
    d("hash", C::UPSTREAM, Range(1, 3)),
    d("random", C::UPSTREAM, Range(0, 2)),
    d("keepalive", C::UPSTREAM, ONE),
    d("queue", C::UPSTREAM, Range(1, 2)),
    d("keepalive_requests", C::UPSTREAM, ONE),
    d("keepalive_time", C::UPSTREAM, ONE),
    // --- access by client address (ngx_http_access_module)
    d("allow", HSL, ONE),
    d("deny", HSL, ONE),
    // --- variables from other variables (ngx_http_map_module); the block's lines are pairs
    block("map", C::HTTP, Range(2, 2)),
    // --- NGINX Plus's API
    d("api", C::LOCATION, Range(0, 1)),
    // --- active health checks (NGINX Plus)
    d("health_check", C::LOCATION, AtLeast(0)),
    block("match", C::HTTP, ONE),
    d("status", C::MATCH, AtLeast(1)),
    d("header", C::MATCH, Range(1, 3)),
    d("body", C::MATCH, Range(2, 2)),
    d("require", C::MATCH, AtLeast(1)),
    no_effect(
        "zone",
        C::UPSTREAM,
        Range(1, 2),
        "imbang's peer state is always shared by all threads",
    ),
];

/// The `keepalive_timeout` of an `upstream` block (idle upstream connections), which differs
/// from the http-level one (idle client connections) in arity and meaning.
pub static UPSTREAM_KEEPALIVE_TIMEOUT: Spec = d("keepalive_timeout", C::UPSTREAM, ONE);
/// `server` inside `upstream` is a peer, not a virtual server.
pub static UPSTREAM_SERVER: Spec = d("server", C::UPSTREAM, AtLeast(1));

/// Directive names of nginx that imbang does not implement yet: a clearer error than "unknown".
pub static NOT_YET: &[&str] = &[
    "rewrite",
    "if",
    "try_files",
    "alias",
    "stream",
    "limit_req",
    "limit_conn",
    "auth_basic",
    "geo",
    "split_clients",
    "fastcgi_pass",
    "uwsgi_pass",
    "grpc_pass",
    "proxy_ssl_server_name",
    "proxy_ssl_name",
    "proxy_ssl_verify",
    "proxy_ssl_trusted_certificate",
    "proxy_ssl_verify_depth",
    "proxy_ssl_certificate",
    "proxy_ssl_certificate_key",
    "proxy_ssl_protocols",
    "proxy_ssl_ciphers",
    "proxy_ssl_session_reuse",
    "load_module",
    "resolver",
    "resolver_timeout",
];

/// The entry for `name` used in context `ctx` (a few names mean different things by context).
pub fn lookup(name: &str, ctx: Contexts) -> Option<&'static Spec> {
    if ctx == Contexts::UPSTREAM {
        match name {
            "server" => return Some(&UPSTREAM_SERVER),
            "keepalive_timeout" => return Some(&UPSTREAM_KEEPALIVE_TIMEOUT),
            _ => {}
        }
    }
    let mut fallback = None;
    for spec in DIRECTIVES.iter().filter(|s| s.name == name) {
        if spec.contexts.contains(ctx) {
            return Some(spec);
        }
        fallback = Some(spec);
    }
    fallback
}
