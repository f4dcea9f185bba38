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
    /// Inside `acme_issuer name { }` (nginx's ACME module).
    pub const ACME_ISSUER: Self = Self(1 << 7);
    /// The `stream { }` block's own level (nginx's `NGX_STREAM_MAIN_CONF`).
    pub const STREAM: Self = Self(1 << 8);
    /// `server { }` inside `stream` (`NGX_STREAM_SRV_CONF`). A stream `upstream { }` is read in
    /// [`Contexts::UPSTREAM`], as http's is (stream lowering refuses what only http's allows).
    pub const STREAM_SERVER: Self = Self(1 << 9);
    /// Inside a stream `match name { }` (NGINX Plus's `send`/`expect` for stream checks).
    pub const STREAM_MATCH: Self = Self(1 << 10);

    pub const fn or(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// The set with these bits (one bit per context above).
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    /// The bits of the set.
    pub const fn bits(self) -> u16 {
        self.0
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 != 0
    }
}

const HSL: Contexts = Contexts::HTTP.or(Contexts::SERVER).or(Contexts::LOCATION);
const HS: Contexts = Contexts::HTTP.or(Contexts::SERVER);
const MAIN_HSL: Contexts = Contexts::MAIN.or(HSL);
/// `stream` and its `server` blocks.
const SS: Contexts = Contexts::STREAM.or(Contexts::STREAM_SERVER);

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
    /// Parsed and checked, then refused: imbang cannot keep nginx's meaning yet. The error says
    /// "not implemented yet" with this reason.
    NotYet(&'static str),
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

const fn not_yet(
    name: &'static str,
    contexts: Contexts,
    arity: Arity,
    block: bool,
    why: &'static str,
) -> Spec {
    Spec {
        name,
        contexts,
        arity,
        block,
        effect: Effect::NotYet(why),
    }
}

use Arity::{AtLeast, Flag, Range};
use Contexts as C;

const ONE: Arity = Range(1, 1);
const NONE: Arity = Range(0, 0);

const GZIP_TUNING: &str = "imbang sets zlib's window and memory itself (the window smaller for a small known length, as nginx)";
const GZIP_BUFFERS: &str =
    "imbang hands compressed bytes on as zlib makes them, in buffers it sizes itself";
const OPEN_FILES: &str = "imbang opens a file per request (measured: see docs/static.md)";
const FILE_IO: &str = "imbang reads files with plain reads (or sendfile), without AIO or O_DIRECT";
const KERNEL: &str = "imbang chooses its own socket options";
const SCHEDULING: &str = "imbang leaves scheduling to the kernel";
const EPOLL: &str = "imbang uses epoll through tokio";
const TABLES: &str = "imbang sizes its tables itself";
const MEMORY: &str = "imbang allocates per connection and request itself";
const RELATIVE_LOCATION: &str =
    "imbang sends a Location it makes as written (relative, as with absolute_redirect off)";
const BODY_FILE: &str =
    "a buffered request body goes to a file only beyond client_body_buffer_size, and unnamed";
const STREAMED: &str = "responses are streamed, never written to temporary files";
const LINGERING: &str = "imbang closes a connection once the response is sent";
const NO_CACHE: &str =
    "caching is not implemented yet (without proxy_cache, nginx ignores this as well)";

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
    d("error_log", MAIN_HSL, AtLeast(1)),
    d("worker_shutdown_timeout", C::MAIN, ONE),
    // --- privileges (user)
    d("user", C::MAIN, Range(1, 2)),
    d("worker_rlimit_nofile", C::MAIN, ONE),
    no_effect("worker_cpu_affinity", C::MAIN, AtLeast(1), SCHEDULING),
    no_effect("worker_priority", C::MAIN, ONE, SCHEDULING),
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
    d("default_type", HSL, ONE),
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
    // --- gzip (gzip): the gzip filter, read in lower/gzip.rs (src/proxy/gzip.rs)
    d("gzip", HSL, Flag),
    d("gzip_vary", HSL, Flag),
    d("gzip_proxied", HSL, AtLeast(1)),
    d("gzip_comp_level", HSL, ONE),
    no_effect("gzip_buffers", HSL, Range(2, 2), GZIP_BUFFERS),
    d("gzip_http_version", HSL, ONE),
    d("gzip_min_length", HSL, ONE),
    d("gzip_types", HSL, AtLeast(1)),
    d("gzip_disable", HSL, AtLeast(1)),
    no_effect("gzip_window", HSL, ONE, GZIP_TUNING),
    no_effect("gzip_hash", HSL, ONE, GZIP_TUNING),
    no_effect("gzip_no_buffer", HSL, Flag, GZIP_BUFFERS),
    no_effect("postpone_gzipping", HSL, ONE, GZIP_BUFFERS),
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
    d("charset", HSL, ONE),
    // --- files (static): nginx's static, index, try_files, autoindex and gzip_static modules
    // and the core's file directives; read in lower/files.rs (root: lower/root.rs), acted on
    // by crate::files.
    d("root", HSL, ONE),
    d("alias", C::LOCATION, ONE),
    d("index", HSL, AtLeast(1)),
    d("try_files", C::SERVER.or(C::LOCATION), AtLeast(2)),
    block("types", HSL, NONE),
    d("etag", HSL, Flag),
    d("if_modified_since", HSL, ONE),
    d("max_ranges", HSL, ONE),
    d("disable_symlinks", HSL, Range(1, 2)),
    d("log_not_found", HSL, Flag),
    d("autoindex", HSL, Flag),
    d("autoindex_format", HSL, ONE),
    d("autoindex_exact_size", HSL, Flag),
    d("autoindex_localtime", HSL, Flag),
    d("gzip_static", HSL, ONE),
    d("sendfile", HSL, Flag),
    no_effect("sendfile_max_chunk", HSL, ONE, FILE_IO),
    no_effect("aio", HSL, ONE, FILE_IO),
    no_effect("aio_write", HSL, Flag, FILE_IO),
    no_effect("directio", HSL, ONE, FILE_IO),
    no_effect("directio_alignment", HSL, ONE, FILE_IO),
    no_effect("read_ahead", HSL, ONE, FILE_IO),
    no_effect("output_buffers", HSL, Range(2, 2), FILE_IO),
    no_effect("open_file_cache", HSL, Range(1, 2), OPEN_FILES),
    no_effect("open_file_cache_errors", HSL, Flag, OPEN_FILES),
    no_effect("open_file_cache_events", HSL, Flag, OPEN_FILES),
    no_effect("open_file_cache_min_uses", HSL, ONE, OPEN_FILES),
    no_effect("open_file_cache_valid", HSL, ONE, OPEN_FILES),
    // --- ssl: nginx's ngx_http_ssl_module and `http2`; read in lower/ssl.rs
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
    d("proxy_request_buffering", HSL, Flag),
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
    // nginx: 1 or 2; imbang's `bounded=factor` may follow `consistent`.
    d("hash", C::UPSTREAM, Range(1, 3)),
    d("random", C::UPSTREAM, Range(0, 2)),
    d("keepalive", C::UPSTREAM, Range(1, 2)),
    d("queue", C::UPSTREAM, Range(1, 2)),
    d("keepalive_requests", C::UPSTREAM, ONE),
    d("keepalive_time", C::UPSTREAM, ONE),
    // --- access by client address (ngx_http_access_module)
    d("allow", HSL, ONE),
    d("deny", HSL, ONE),
    // --- realip: the client address from a trusted proxy's field (ngx_http_realip_module)
    d("set_real_ip_from", HSL, ONE),
    d("real_ip_header", HSL, ONE),
    d("real_ip_recursive", HSL, Flag),
    // --- variables from other variables (ngx_http_map_module); the block's lines are pairs
    block("map", C::HTTP, Range(2, 2)),
    // --- NGINX Plus's API
    d("api", C::LOCATION, Range(0, 1)),
    // --- observability (obs): stub_status (ngx_http_stub_status_module), Angie's prometheus
    // nginx ignores stub_status's argument (the `stub_status on` of nginx before 1.7.5).
    d("stub_status", C::SERVER.or(C::LOCATION), Range(0, 1)),
    d("prometheus", C::LOCATION, ONE),
    // NGINX Plus: the server or location zone a request is counted in (API, metrics).
    d("status_zone", C::SERVER.or(C::LOCATION), ONE),
    not_yet(
        "prometheus_template",
        C::HTTP,
        ONE,
        true,
        "custom Prometheus templates: use the built-in \"prometheus all\"",
    ),
    // --- active health checks (NGINX Plus)
    d("health_check", C::LOCATION, AtLeast(0)),
    block("match", C::HTTP, ONE),
    d("status", C::MATCH, AtLeast(1)),
    d("header", C::MATCH, Range(1, 3)),
    d("body", C::MATCH, Range(2, 2)),
    d("require", C::MATCH, AtLeast(1)),
    // --- resolver: DNS for `proxy_pass` with variables and `server ... resolve` (resolver)
    d("resolver", HSL.or(C::UPSTREAM), AtLeast(1)),
    d("resolver_timeout", HSL.or(C::UPSTREAM), ONE),
    // `zone`: imbang's peer state is always shared by all threads; the zone makes the group's
    // servers changeable through the API (as in NGINX Plus).
    d("zone", C::UPSTREAM, Range(1, 2)),
    // --- api writes (pp): NGINX Plus's dynamic upstreams
    d("state", C::UPSTREAM, ONE),
    // --- acme (acme): nginx's ngx_http_acme_module; read in lower/acme.rs, acted on by
    // crate::acme
    block("acme_issuer", C::HTTP, ONE),
    no_effect(
        "acme_shared_zone",
        C::HTTP,
        ONE,
        "imbang keeps certificates and challenges in its own memory, which has no fixed size",
    ),
    d("acme_certificate", C::SERVER, AtLeast(1)),
    d("uri", C::ACME_ISSUER, ONE),
    d("account_key", C::ACME_ISSUER, ONE),
    d("challenge", C::ACME_ISSUER, ONE),
    d("common_name_in_csr", C::ACME_ISSUER, Flag),
    d("contact", C::ACME_ISSUER, ONE),
    d("external_account_key", C::ACME_ISSUER, Range(2, 2)),
    no_effect(
        "preferred_chain",
        C::ACME_ISSUER,
        ONE,
        "imbang serves the chain the ACME server offers first (its ACME client fetches no alternates)",
    ),
    d("profile", C::ACME_ISSUER, Range(1, 2)),
    d("ssl_trusted_certificate", C::ACME_ISSUER, ONE),
    d("ssl_verify", C::ACME_ISSUER, Flag),
    d("state_path", C::ACME_ISSUER, ONE),
    d("accept_terms_of_service", C::ACME_ISSUER, NONE),
    // --- stream (stream): nginx's ngx_stream_* modules; read in config/lower/stream.rs, run by
    // crate::stream. Names shared with http get entries of their own for the stream contexts.
    block("stream", C::MAIN, NONE),
    block("server", C::STREAM, NONE),
    block("upstream", C::STREAM, ONE),
    block("map", C::STREAM, Range(2, 2)),
    d("log_format", C::STREAM, AtLeast(2)),
    d("listen", C::STREAM_SERVER, AtLeast(1)),
    d("proxy_pass", C::STREAM_SERVER, ONE),
    d("return", C::STREAM_SERVER, ONE),
    d("set", C::STREAM_SERVER, Range(2, 2)),
    d("error_log", SS, AtLeast(1)),
    d("access_log", SS, AtLeast(1)),
    d("allow", SS, ONE),
    d("deny", SS, ONE),
    d("proxy_connect_timeout", SS, ONE),
    d("proxy_timeout", SS, ONE),
    d("proxy_next_upstream", SS, Flag),
    d("proxy_next_upstream_tries", SS, ONE),
    d("proxy_next_upstream_timeout", SS, ONE),
    d("proxy_buffer_size", SS, ONE),
    d("proxy_half_close", SS, Flag),
    d("proxy_upload_rate", SS, ONE),
    d("proxy_download_rate", SS, ONE),
    d("proxy_bind", SS, Range(1, 2)),
    d("proxy_socket_keepalive", SS, Flag),
    d("tcp_nodelay", SS, Flag),
    d("preread_buffer_size", SS, ONE),
    d("preread_timeout", SS, ONE),
    d("ssl_preread", SS, Flag),
    d("proxy_protocol", SS, Flag),
    d("proxy_protocol_timeout", SS, ONE),
    d("set_real_ip_from", SS, ONE),
    d("health_check", C::STREAM_SERVER, AtLeast(0)),
    d("health_check_timeout", SS, ONE),
    block("match", C::STREAM, ONE),
    d("send", C::STREAM_MATCH, ONE),
    d("expect", C::STREAM_MATCH, Range(1, 2)),
    d("proxy_requests", SS, ONE),
    d("proxy_responses", SS, ONE),
    no_effect(
        "variables_hash_max_size",
        C::STREAM,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "variables_hash_bucket_size",
        C::STREAM,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "map_hash_max_size",
        C::STREAM,
        ONE,
        "imbang sizes its tables itself",
    ),
    no_effect(
        "map_hash_bucket_size",
        C::STREAM,
        ONE,
        "imbang sizes its tables itself",
    ),
    // --- the rest of nginx's core, events, http core, proxy, upstream, log, headers, map,
    // index, charset and sub modules (directives): every directive of theirs is in this table
    // (tests/directive_coverage.rs checks it against nginx's own, src/config/nginx-directives.tsv).
    no_effect("debug_points", C::MAIN, ONE, "imbang has no debug points"),
    no_effect(
        "load_module",
        C::MAIN,
        ONE,
        "imbang loads no dynamic modules; a directive of a module it lacks is still an error",
    ),
    no_effect("lock_file", C::MAIN, ONE, "imbang needs no lock file"),
    no_effect(
        "worker_rlimit_core",
        C::MAIN,
        ONE,
        "set the limit with ulimit -c or LimitCORE=",
    ),
    no_effect(
        "working_directory",
        C::MAIN,
        ONE,
        "imbang keeps the directory it was started in",
    ),
    no_effect("epoll_events", C::EVENTS, ONE, EPOLL),
    no_effect("worker_aio_requests", C::EVENTS, ONE, EPOLL),
    no_effect(
        "debug_connection",
        C::EVENTS,
        ONE,
        "imbang has no debug log per client address",
    ),
    no_effect("absolute_redirect", HSL, Flag, RELATIVE_LOCATION),
    no_effect("port_in_redirect", HSL, Flag, RELATIVE_LOCATION),
    no_effect("server_name_in_redirect", HSL, Flag, RELATIVE_LOCATION),
    d("chunked_transfer_encoding", HSL, Flag),
    no_effect("client_body_in_file_only", HSL, ONE, BODY_FILE),
    no_effect("client_body_in_single_buffer", HSL, Flag, BODY_FILE),
    d("client_body_temp_path", HSL, Range(1, 4)),
    no_effect("connection_pool_size", HS, ONE, MEMORY),
    no_effect("request_pool_size", HS, ONE, MEMORY),
    no_effect(
        "early_hints",
        HSL,
        AtLeast(1),
        "imbang sends no 103 Early Hints",
    ),
    no_effect(
        "ignore_invalid_headers",
        HS,
        Flag,
        "imbang refuses a request with an invalid header line (400)",
    ),
    no_effect(
        "underscores_in_headers",
        HS,
        Flag,
        "imbang passes header names with underscores (as underscores_in_headers on)",
    ),
    d("merge_slashes", HS, Flag),
    no_effect(
        "keepalive_disable",
        HSL,
        Range(1, 2),
        "imbang keeps connections alive for every browser",
    ),
    no_effect(
        "keepalive_min_timeout",
        HSL,
        ONE,
        "a client connection is closed by keepalive_timeout and keepalive_requests only",
    ),
    d("keepalive_time", HSL, ONE),
    // --- auth (auth helper): ngx_http_auth_request_module, ngx_http_auth_basic_module, and
    // core's `satisfy` and `auth_delay` (src/config/lower/auth.rs, src/auth/).
    d("auth_request", HSL, ONE),
    d("auth_request_set", HSL, Range(2, 2)),
    d("auth_basic", HSL, ONE),
    d("auth_basic_user_file", HSL, ONE),
    d("satisfy", HSL, ONE),
    d("auth_delay", HSL, ONE),
    // limit_except: its block's allow/deny (and access_log) for the methods not listed.
    block("limit_except", C::LOCATION, AtLeast(1)),
    no_effect("lingering_close", HSL, ONE, LINGERING),
    no_effect("lingering_time", HSL, ONE, LINGERING),
    no_effect("lingering_timeout", HSL, ONE, LINGERING),
    no_effect(
        "log_subrequest",
        HSL,
        Flag,
        "imbang writes no access-log line for auth_request's subrequests",
    ),
    no_effect(
        "subrequest_output_buffer_size",
        HSL,
        ONE,
        "imbang keeps no subrequest's body (auth_request reads only the status and headers)",
    ),
    no_effect(
        "max_headers",
        HS,
        ONE,
        "the header lines of a request are bounded by large_client_header_buffers",
    ),
    no_effect(
        "msie_padding",
        HSL,
        Flag,
        "imbang does not pad error pages for old MSIE",
    ),
    no_effect(
        "msie_refresh",
        HSL,
        Flag,
        "imbang does not answer old MSIE with a refresh",
    ),
    not_yet(
        "post_action",
        HSL,
        ONE,
        false,
        "imbang makes no subrequest after a response",
    ),
    no_effect("postpone_output", HSL, ONE, "responses are streamed"),
    d("recursive_error_pages", HSL, Flag),
    no_effect("send_lowat", HSL, ONE, KERNEL),
    // headers
    not_yet(
        "add_header_inherit",
        HSL,
        ONE,
        false,
        "add_header is inherited as in nginx 1.22",
    ),
    not_yet(
        "add_trailer",
        HSL,
        Range(2, 3),
        false,
        "imbang adds no trailers",
    ),
    not_yet(
        "add_trailer_inherit",
        HSL,
        ONE,
        false,
        "imbang adds no trailers",
    ),
    d("expires", HSL, Range(1, 2)),
    // log
    no_effect(
        "open_log_file_cache",
        HSL,
        Range(1, 4),
        "imbang keeps its log files open",
    ),
    // map
    no_effect("map_hash_bucket_size", C::HTTP, ONE, TABLES),
    no_effect("map_hash_max_size", C::HTTP, ONE, TABLES),
    // proxy
    not_yet(
        "proxy_bind",
        HSL,
        Range(1, 2),
        false,
        "connections to upstreams use the address the kernel picks",
    ),
    not_yet(
        "proxy_cache",
        HSL,
        ONE,
        false,
        "caching is not implemented yet",
    ),
    no_effect("proxy_cache_background_update", HSL, Flag, NO_CACHE),
    no_effect("proxy_cache_bypass", HSL, AtLeast(1), NO_CACHE),
    no_effect("proxy_cache_convert_head", HSL, Flag, NO_CACHE),
    no_effect("proxy_cache_key", HSL, ONE, NO_CACHE),
    no_effect("proxy_cache_lock", HSL, Flag, NO_CACHE),
    no_effect("proxy_cache_lock_age", HSL, ONE, NO_CACHE),
    no_effect("proxy_cache_lock_timeout", HSL, ONE, NO_CACHE),
    no_effect("proxy_cache_max_range_offset", HSL, ONE, NO_CACHE),
    no_effect("proxy_cache_methods", HSL, AtLeast(1), NO_CACHE),
    no_effect("proxy_cache_min_uses", HSL, ONE, NO_CACHE),
    no_effect(
        "proxy_cache_path",
        C::HTTP,
        AtLeast(2),
        "a cache zone that no proxy_cache uses changes nothing (caching is not implemented yet)",
    ),
    no_effect("proxy_cache_revalidate", HSL, Flag, NO_CACHE),
    no_effect("proxy_cache_use_stale", HSL, AtLeast(1), NO_CACHE),
    no_effect("proxy_cache_valid", HSL, AtLeast(1), NO_CACHE),
    no_effect("proxy_no_cache", HSL, AtLeast(1), NO_CACHE),
    d("proxy_cookie_domain", HSL, Range(1, 2)),
    d("proxy_cookie_flags", HSL, Range(1, 4)),
    d("proxy_cookie_path", HSL, Range(1, 2)),
    not_yet(
        "proxy_force_ranges",
        HSL,
        Flag,
        false,
        "imbang serves no byte ranges itself",
    ),
    no_effect("proxy_headers_hash_bucket_size", HSL, ONE, TABLES),
    no_effect("proxy_headers_hash_max_size", HSL, ONE, TABLES),
    no_effect(
        "proxy_ignore_headers",
        HSL,
        AtLeast(1),
        "imbang acts on no X-Accel-* or caching header from the upstream",
    ),
    not_yet(
        "proxy_limit_rate",
        HSL,
        ONE,
        false,
        "reading from upstreams is not rate-limited",
    ),
    no_effect("proxy_max_temp_file_size", HSL, ONE, STREAMED),
    not_yet(
        "proxy_method",
        HSL,
        ONE,
        false,
        "the client's method is always passed",
    ),
    not_yet(
        "proxy_pass_trailers",
        HSL,
        Flag,
        false,
        "trailers are not passed",
    ),
    no_effect("proxy_send_lowat", HSL, ONE, KERNEL),
    not_yet(
        "proxy_set_body",
        HSL,
        ONE,
        false,
        "the client's body is always passed",
    ),
    d("proxy_socket_keepalive", HSL, Flag),
    no_effect("proxy_socket_rcvbuf", HSL, ONE, KERNEL),
    no_effect("proxy_socket_sndbuf", HSL, ONE, KERNEL),
    // --- proxy_ssl (upstream TLS): read by config/lower/proxy_ssl.rs
    d("proxy_ssl_certificate", HSL, ONE),
    no_effect(
        "proxy_ssl_certificate_cache",
        HSL,
        Range(1, 3),
        "client certificates are read once, when the configuration is loaded",
    ),
    d("proxy_ssl_certificate_key", HSL, ONE),
    d("proxy_ssl_ciphers", HSL, ONE),
    no_effect(
        "proxy_ssl_conf_command",
        HSL,
        Range(2, 2),
        "rustls has no OpenSSL configuration commands",
    ),
    d("proxy_ssl_crl", HSL, ONE),
    d("proxy_ssl_name", HSL, ONE),
    no_effect(
        "proxy_ssl_password_file",
        HSL,
        ONE,
        "imbang reads unencrypted keys only",
    ),
    d("proxy_ssl_protocols", HSL, AtLeast(1)),
    d("proxy_ssl_server_name", HSL, Flag),
    d("proxy_ssl_session_reuse", HSL, Flag),
    d("proxy_ssl_trusted_certificate", HSL, ONE),
    d("proxy_ssl_verify", HSL, Flag),
    d("proxy_ssl_verify_depth", HSL, ONE),
    // --- end proxy_ssl
    not_yet(
        "proxy_store",
        HSL,
        ONE,
        false,
        "imbang writes no responses to files",
    ),
    not_yet(
        "proxy_store_access",
        HSL,
        Range(1, 3),
        false,
        "imbang writes no responses to files",
    ),
    no_effect("proxy_temp_file_write_size", HSL, ONE, STREAMED),
    no_effect("proxy_temp_path", HSL, Range(1, 4), STREAMED),
    // The temp paths of modules imbang lacks, in the stock nginx.conf of nginx's packages.
    no_effect(
        "fastcgi_temp_path",
        HSL,
        Range(1, 4),
        "imbang has no FastCGI (ngx_http_fastcgi_module)",
    ),
    no_effect(
        "uwsgi_temp_path",
        HSL,
        Range(1, 4),
        "imbang has no uwsgi (ngx_http_uwsgi_module)",
    ),
    no_effect(
        "scgi_temp_path",
        HSL,
        Range(1, 4),
        "imbang has no SCGI (ngx_http_scgi_module)",
    ),
    // charset: `charset`, `charset_types`, `source_charset` act; recoding between charsets is
    // refused (charset_map, override_charset on)
    d("charset_types", HSL, AtLeast(1)),
    d("override_charset", HSL, Flag),
    d("source_charset", HSL, ONE),
    not_yet(
        "charset_map",
        C::HTTP,
        Range(2, 2),
        true,
        "imbang does not recode between charsets",
    ),
    // --- sub (ngx_http_sub_filter_module): strings replaced in response bodies
    d("sub_filter", HSL, Range(2, 2)),
    d("sub_filter_last_modified", HSL, Flag),
    d("sub_filter_once", HSL, Flag),
    d("sub_filter_types", HSL, AtLeast(1)),
    // --- rewrite (ngx_http_rewrite_module; `return` and `set` are above). What may stand
    // inside an `if` block is in IF_DIRECTIVES.
    d("rewrite", C::SERVER.or(C::LOCATION), Range(2, 3)),
    d("break", C::SERVER.or(C::LOCATION), NONE),
    block("if", C::SERVER.or(C::LOCATION), AtLeast(1)),
    d("rewrite_log", HSL, Flag),
    d("uninitialized_variable_warn", HSL, Flag),
    // --- limits (limits helper): ngx_http_limit_req_module, ngx_http_limit_conn_module and
    // the core module's limit_rate (src/config/lower/limits.rs, src/limit/).
    d("limit_req_zone", C::HTTP, Range(3, 4)),
    d("limit_req", HSL, Range(1, 3)),
    d("limit_req_status", HSL, ONE),
    d("limit_req_log_level", HSL, ONE),
    d("limit_req_dry_run", HSL, Flag),
    d("limit_conn_zone", C::HTTP, Range(2, 2)),
    d("limit_conn", HSL, Range(2, 2)),
    d("limit_conn_status", HSL, ONE),
    d("limit_conn_log_level", HSL, ONE),
    d("limit_conn_dry_run", HSL, Flag),
    d("limit_rate", HSL, ONE),
    d("limit_rate_after", HSL, ONE),
];

/// The directives nginx allows inside `if`: (name, also in a server's `if`). nginx marks them
/// `NGX_HTTP_SIF_CONF` (server `if`) and `NGX_HTTP_LIF_CONF` (location `if`); only those imbang
/// knows are listed, any other directive there is "not allowed here". `if` itself is not:
/// nginx does not nest them.
pub static IF_DIRECTIVES: &[(&str, bool)] = &[
    ("rewrite", true),
    ("return", true),
    ("break", true),
    ("set", true),
    ("rewrite_log", true),
    ("uninitialized_variable_warn", true),
    ("proxy_pass", false),
    ("add_header", false),
    ("add_header_inherit", false),
    ("add_trailer", false),
    ("add_trailer_inherit", false),
    ("expires", false),
    ("access_log", false),
    ("error_page", false),
    ("limit_rate", false),
    ("limit_rate_after", false),
    ("post_action", false),
    ("root", false),
    ("sendfile", false),
    ("gzip", false),
    ("charset", false),
    ("source_charset", false),
    ("override_charset", false),
    ("ssi", false),
];

/// The entry for `name` inside an `if` block of a server (`in_server`) or a location, when
/// nginx allows it there.
pub fn lookup_in_if(name: &str, in_server: bool) -> Option<&'static Spec> {
    let allowed = IF_DIRECTIVES
        .iter()
        .any(|&(n, server_too)| n == name && (server_too || !in_server));
    let ctx = if in_server {
        Contexts::SERVER
    } else {
        Contexts::LOCATION
    };
    allowed.then(|| lookup(name, ctx)).flatten()
}

/// The `keepalive_timeout` of an `upstream` block (idle upstream connections), which differs
/// from the http-level one (idle client connections) in arity and meaning.
pub static UPSTREAM_KEEPALIVE_TIMEOUT: Spec = d("keepalive_timeout", C::UPSTREAM, ONE);
/// `server` inside `upstream` is a peer, not a virtual server.
pub static UPSTREAM_SERVER: Spec = d("server", C::UPSTREAM, AtLeast(1));

/// Directive names of nginx that imbang does not implement yet: a clearer error than "unknown".
pub static NOT_YET: &[&str] = &["geo", "split_clients"];

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
