//! A validated [`Config`] compiled into the immutable tables the request path reads: virtual
//! hosts and location trees per listen address, upstream groups, header templates. Built once per
//! (re)load and shared by every request through an `Arc`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};

use crate::FastMap;
use crate::access_log::{self, AccessLogs, LogCache, LogFile};
use crate::config::model::{
    Action, BalanceMethod, Config, Location, LocationConf, Redirect, Return, Server, ServerName,
    Stmt, Upstream,
};
use crate::config::{ConfigError, ConfigErrors, ErrorKind};
use crate::pool::tls::{ConfiguredName, LocationTls, TargetName, TlsTarget};
use crate::proxy::target::{ProxyVars, Targets};
use crate::resolve::{Followed, Members};
use crate::rewrite::Script;
use crate::route::{LocationEntry, LocationTree, VirtualHost, VirtualHosts};
use crate::upstream::{PeerRegistry, UpstreamGroup};
use crate::vars::{Scope, Template};

/// The world one request sees, from routing to the peer.
pub struct Snapshot {
    pub config: Config,
    vhosts: FastMap<SocketAddr, VirtualHosts<Arc<ServerRoute>>>,
    groups: FastMap<String, Arc<Group>>,
    /// Addresses to bind: every configured one, except a specific address whose port a wildcard
    /// of the same family already covers (nginx binds only the wildcard then).
    pub bind: Vec<SocketAddr>,
    /// The addresses of `bind` whose `listen` says `reuseport`: a socket for each worker.
    pub reuseport: Vec<SocketAddr>,
    /// Configured listen addresses whose connections speak TLS (`listen ... ssl`).
    pub tls: Vec<SocketAddr>,
    /// Configured listen addresses whose connections begin with a PROXY protocol header
    /// (`listen ... proxy_protocol`).
    pub proxy_protocol: Vec<SocketAddr>,
    /// `[warn]` lines found while compiling (beside the config's own warnings).
    pub warnings: Vec<String>,
    /// Every access-log file this configuration writes (for USR1).
    log_files: Vec<Arc<LogFile>>,
    /// `stream { }` compiled: the servers of the stream addresses among `bind`.
    pub stream: crate::stream::Tables,
    /// `listen ... backlog=n` (stream): the listen queue of these bound addresses.
    pub backlog: Vec<(SocketAddr, i32)>,
}

/// One `server {}` as routing sees it.
pub struct ServerRoute {
    /// The first `server_name`: what `$server_name` and the error log show.
    pub name: String,
    pub locations: LocationTree<Arc<Route>>,
    /// For requests no location matches; its script is the server's rewrite phase.
    pub fallback: Arc<Route>,
    /// Its TLS, when it listens on a `listen ... ssl` address (or names certificates).
    pub tls: Option<Arc<crate::tls::ServerTls>>,
    /// `status_zone`: the server zone its requests are counted in.
    pub zone: Option<Arc<crate::stats::Zone>>,
}

/// One `location {}` compiled: what to do with a request that ends here.
pub struct Route {
    pub conf: Arc<LocationConf>,
    /// `status_zone`: the location zone its requests are counted in.
    pub zone: Option<Arc<crate::stats::Zone>>,
    pub action: RouteAction,
    /// `proxy_set_header` with variables found once; an empty value removes the header. Each
    /// with its name as the config spells it (what is sent, as nginx sends it).
    pub set_headers: Vec<(HeaderName, Template, Box<str>)>,
    /// Whether `Host` is among `set_headers` (otherwise `Host: $proxy_host` is sent).
    pub sets_host: bool,
    /// The location's prefix, for `proxy_pass` with a URI (the matched part is replaced).
    pub prefix: Option<String>,
    /// A regex location's regex: `$1`..`$9` are its captures (empty when it has no groups, as
    /// in nginx: its match replaces those of the `server_name` regex or a `rewrite`).
    pub regex: Option<crate::route::Regex>,
    /// The named groups of `regex` (group index, variable name): nginx sets each variable when
    /// the location matches.
    pub regex_names: Box<[(usize, Arc<str>)]>,
    pub access_log: AccessLogs,
    /// The rewrite module's statements of this level (`set`, `rewrite`, `if`, `return`,
    /// `break`), run by [`crate::rewrite::phases`].
    pub script: Script,
    /// `add_header`: name, value, `always`, the name as the config spells it.
    pub add_headers: Vec<(HeaderName, Template, bool, Box<str>)>,
    /// Peer response headers the client never sees (names in lowercase).
    pub hidden: Vec<Box<str>>,
    /// Bit `n` (at most 63) set when a name in `hidden` is `n` bytes long: most of a
    /// response's fields are then passed without a compare.
    pub hidden_lengths: u64,
    /// `proxy_redirect` rules in force: (from prefix, replacement).
    pub redirects: Vec<(String, String)>,
    /// The `Server` header (`server_tokens`).
    pub server_header: HeaderValue,
    /// `sub_filter` with its variables found once.
    pub sub_filter: Option<Box<crate::proxy::sub_filter::Rules>>,
    /// `limit_except`: the route requests with a method it does not list take instead.
    pub limit_except: Option<Box<LimitExceptRoute>>,
    /// `auth_request`, `auth_basic`, `satisfy` (see [`crate::auth`]); `None`: only `allow`/`deny`.
    pub auth: Option<Box<crate::auth::Auth>>,
    /// The `error_page` targets with variables, compiled (by index in `conf.error_pages`).
    pub error_page_targets: Box<[Option<Template>]>,
    /// `limit_req`, `limit_conn`, `limit_rate`; `None` (nothing to do) without any.
    pub limits: Option<Box<crate::limit::RouteLimits>>,
    /// How it serves files (a route whose action is [`RouteAction::NotFound`]).
    pub files: Option<Box<crate::files::Files>>,
}

/// A location's `limit_except` block compiled.
pub struct LimitExceptRoute {
    pub spec: Arc<crate::config::model::LimitExcept>,
    pub route: Arc<Route>,
}

pub enum RouteAction {
    /// No `proxy_pass` (or `api`...): files from disk ([`crate::files`]), as nginx's static
    /// module answers then.
    NotFound,
    Proxy(Proxy),
    /// `proxy_pass` with variables: resolved into a [`Proxy`] per request.
    ProxyVars(ProxyVars),
    /// NGINX Plus's `api`; `write`: `api write=on` (POST/PATCH/DELETE on upstream servers).
    /// See [`crate::api`].
    Api {
        write: bool,
    },
    /// `stub_status`: see [`crate::stub_status`].
    StubStatus,
    /// `prometheus all`: see [`crate::metrics`].
    Prometheus,
}

/// `return code [text|URL]` with its variables found once.
pub struct Answer {
    pub status: u16,
    pub text: Option<Template>,
}

impl Answer {
    pub fn compile(r: &Return, at: &str, scope: &Scope, errors: &mut ConfigErrors) -> Option<Self> {
        let text = match r.text.as_deref().map(|t| Template::compile_in(t, scope)) {
            None => None,
            Some(Ok(t)) => Some(t),
            Some(Err(message)) => {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(at.to_owned()),
                ));
                return None;
            }
        };
        Some(Self {
            status: r.status,
            text,
        })
    }
}

pub struct Proxy {
    pub group: Arc<Group>,
    pub proxy_host: String,
    pub uri: PassUri,
    /// `proxy_pass https://`: how its connections are opened.
    pub tls: Option<TlsTarget>,
}

/// The request target a `proxy_pass` sends.
pub enum PassUri {
    /// No URI part: the client's target, as it came.
    Unchanged,
    /// `proxy_pass http://app/base/`: the part of the path the location's prefix matched is
    /// replaced by this.
    ReplacePrefix(String),
    /// The URI part of a `proxy_pass` with variables: the whole target, as rendered.
    Whole(http::Uri),
}

/// An upstream group with the connection settings of its `upstream {}` block.
pub struct Group {
    /// Its peers: fixed, or following DNS (`server name resolve`).
    members: GroupMembers,
    /// The `hash` key, rendered for each request that this group balances.
    pub hash_key: Option<Template>,
    pub keepalive: usize,
    /// `keepalive_requests`, `keepalive_time` and `keepalive_timeout` of upstream connections.
    pub reuse: crate::pool::Reuse,
}

impl Group {
    /// The group of `up`, its peers' state taken from `registry`.
    pub fn new(up: &Upstream, registry: &PeerRegistry, hash_key: Option<Template>) -> Self {
        // A group whose peers change at run time (DNS, or the API on a `zone`) reads its
        // membership from an `ArcSwap` per request; the others hold theirs directly.
        let members = if up.resolve.is_none() && !up.zone {
            GroupMembers::Fixed(UpstreamGroup::new(up, registry))
        } else {
            GroupMembers::Followed(Arc::new(Followed::new(up, registry)))
        };
        Self {
            members,
            hash_key,
            keepalive: up.keepalive,
            reuse: crate::pool::Reuse {
                max_requests: up.keepalive_requests,
                max_age: up.keepalive_time,
                idle_timeout: up.keepalive_timeout,
            },
        }
    }
}

enum GroupMembers {
    Fixed(UpstreamGroup),
    Followed(Arc<Followed>),
}

impl Group {
    /// The peers and balancer a request uses (read once per request: a group that follows
    /// DNS may change meanwhile).
    pub fn balancer(&self) -> Members<'_> {
        match &self.members {
            GroupMembers::Fixed(group) => Members::Fixed(group),
            GroupMembers::Followed(f) => Members::Followed(f.current()),
        }
    }

    /// The DNS-following part, for a group with `server name resolve` lines.
    pub fn followed(&self) -> Option<&Arc<Followed>> {
        match &self.members {
            GroupMembers::Fixed(_) => None,
            GroupMembers::Followed(f) => Some(f),
        }
    }
}

impl Snapshot {
    /// Compiles `config`; peer state for peers that also existed before comes from `registry`.
    pub fn compile(config: Config, registry: &PeerRegistry) -> Result<Self, ConfigErrors> {
        let mut errors = ConfigErrors::default();
        let mut warnings = Vec::new();
        let mut groups = FastMap::default();
        let mut vhosts = FastMap::default();
        let (mut tls, mut h2, mut proxy_protocol) = (Vec::new(), Vec::new(), Vec::new());
        let buffers = config.http.as_ref().map(|h| h.log_buffers.clone());
        let workers = config.main.worker_processes.count();
        let mut logs = LogCache::new(buffers.unwrap_or_default(), workers);
        let scope = declared_variables(&config, &mut errors);
        if let Some(http) = &config.http {
            for up in &http.upstreams {
                let hash_key = match &up.method {
                    BalanceMethod::Hash { key, location, .. } => {
                        match Template::compile_in(key, &scope) {
                            Ok(key) => Some(key),
                            Err(message) => {
                                errors.push(ConfigError::new(
                                    ErrorKind::Invalid(message),
                                    Some(location.clone()),
                                ));
                                None
                            }
                        }
                    }
                    _ => None,
                };
                groups.insert(
                    up.name.clone(),
                    Arc::new(Group::new(up, registry, hash_key)),
                );
            }
            let targets = Arc::new(Targets::new(&http.upstreams, &groups));
            let limit_zones = crate::limit::Zones::compile(&http.limit_zones, &scope, &mut errors);
            let mut by_addr: HashMap<SocketAddr, Vec<VirtualHost<Arc<ServerRoute>>>> =
                HashMap::new();
            // The `server` directive of each entry, for an error the table finds in it.
            let mut places: HashMap<SocketAddr, Vec<&str>> = HashMap::new();
            let mut order = Vec::new();
            // An address is TLS (and offers HTTP/2) if any of its `listen`s says so, as nginx
            // merges the options of one address.
            for server in &http.servers {
                for l in &server.listens {
                    if l.ssl && !tls.contains(&l.addr) {
                        tls.push(l.addr);
                    }
                    if l.http2 && !h2.contains(&l.addr) {
                        h2.push(l.addr);
                    }
                    if l.proxy_protocol && !proxy_protocol.contains(&l.addr) {
                        proxy_protocol.push(l.addr);
                    }
                }
            }
            for server in &http.servers {
                let mut cx = Cx {
                    groups: &groups,
                    targets: &targets,
                    errors: &mut errors,
                    warnings: &mut warnings,
                    logs: &mut logs,
                    scope: &scope,
                    limit_zones: &limit_zones,
                };
                let Some(mut route) = compile_server(server, &mut cx) else {
                    continue;
                };
                route.tls = compile_tls(server, &tls, &h2, &mut errors);
                let route = Arc::new(route);
                for listen in &server.listens {
                    if !by_addr.contains_key(&listen.addr) {
                        order.push(listen.addr);
                    }
                    by_addr.entry(listen.addr).or_default().push(VirtualHost {
                        names: server.names.clone(),
                        default_server: listen.default_server,
                        value: route.clone(),
                    });
                    places
                        .entry(listen.addr)
                        .or_default()
                        .push(&server.location);
                }
            }
            for addr in order {
                let entries = by_addr.remove(&addr).unwrap_or_default();
                match VirtualHosts::build(entries) {
                    Ok(table) => {
                        let at = addr.to_string();
                        warnings.extend(table.warnings().iter().map(|w| w.message(&at)));
                        vhosts.insert(addr, table);
                    }
                    Err(mut e) => {
                        if e.location.is_none()
                            && let Some(entry) = e.entry
                        {
                            let at = places.get(&addr).and_then(|p| p.get(entry));
                            e.location = at.map(|at| at.to_string());
                        }
                        errors.push(route_error(e));
                    }
                }
            }
        }
        let stream = match &config.stream {
            Some(stream) => {
                let tables =
                    crate::stream::compile(stream, registry.stream(), workers, &mut errors);
                // One socket serves one protocol (nginx fails to bind the second one).
                for server in &stream.servers {
                    for l in server
                        .listens
                        .iter()
                        .filter(|l| !l.udp && vhosts.contains_key(&l.addr))
                    {
                        errors.push(ConfigError::new(
                            ErrorKind::Invalid(format!(
                                "{} is both an http and a stream listen address",
                                l.addr
                            )),
                            Some(l.location.clone()),
                        ));
                    }
                }
                tables
            }
            None => crate::stream::Tables::default(),
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let bind = bind_addresses(vhosts.keys().copied().chain(stream.addresses()));
        let reuseport = reuseport_addresses(&config, &bind, &mut warnings);
        let backlog = (config.stream.iter())
            .flat_map(|s| &s.servers)
            .flat_map(|s| &s.listens)
            .filter(|l| !l.udp)
            .filter_map(|l| Some((l.addr, l.backlog?)))
            .filter(|(addr, _)| bind.contains(addr))
            .collect();
        let mut log_files = logs.into_files();
        log_files.extend(stream.log_files.iter().cloned());
        Ok(Self {
            config,
            vhosts,
            groups,
            bind,
            reuseport,
            tls,
            proxy_protocol,
            warnings,
            log_files,
            stream,
            backlog,
        })
    }

    /// The virtual hosts for a connection accepted on the listener bound for `key`, whose local
    /// address is `local` (a wildcard listener serves the specific addresses it covers).
    pub fn vhosts(
        &self,
        key: SocketAddr,
        local: SocketAddr,
    ) -> Option<&VirtualHosts<Arc<ServerRoute>>> {
        if key.ip().is_unspecified() {
            let specific = SocketAddr::new(local.ip(), key.port());
            if let Some(v) = self.vhosts.get(&specific) {
                return Some(v);
            }
        }
        self.vhosts.get(&key)
    }

    /// Every upstream group, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }

    pub fn group(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.get(name)
    }

    /// Opens every access-log file again (USR1, after logrotate moved them). One that cannot
    /// be opened keeps its old descriptor; every failure is in the error, one per line.
    pub fn reopen_logs(&self) -> Result<(), String> {
        let failed: Vec<String> = self
            .log_files
            .iter()
            .filter_map(|f| f.reopen().err())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("\n"))
        }
    }

    /// The access-log files this configuration writes to.
    pub fn log_paths(&self) -> impl Iterator<Item = &std::path::Path> {
        self.log_files.iter().map(|f| f.path())
    }
}

fn bind_addresses(addrs: impl Iterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let all: Vec<SocketAddr> = addrs.collect();
    let mut bind: Vec<SocketAddr> = all
        .iter()
        .copied()
        .filter(|a| {
            a.ip().is_unspecified()
                || a.port() == 0
                || !all.iter().any(|w| {
                    w.ip().is_unspecified() && w.port() == a.port() && w.is_ipv4() == a.is_ipv4()
                })
        })
        .collect();
    bind.sort();
    bind
}

/// The bound addresses a `listen ... reuseport` asks a socket per worker for. A specific address
/// that a wildcard on its port covers is not bound apart (nginx would, `reuseport` implying
/// `bind`): its `reuseport` is warned about and has no effect.
fn reuseport_addresses(
    config: &Config,
    bind: &[SocketAddr],
    warnings: &mut Vec<String>,
) -> Vec<SocketAddr> {
    let listens = (config.http.iter())
        .flat_map(|h| &h.servers)
        .flat_map(|s| &s.listens)
        .map(|l| (l.addr, l.reuseport, &l.location));
    let stream_listens = (config.stream.iter())
        .flat_map(|h| &h.servers)
        .flat_map(|s| &s.listens)
        .filter(|l| !l.udp)
        .map(|l| (l.addr, l.reuseport, &l.location));
    let mut reuseport = Vec::new();
    for (addr, _, location) in listens.chain(stream_listens).filter(|l| l.1) {
        if bind.contains(&addr) {
            reuseport.push(addr);
        } else {
            warnings.push(format!(
                "the \"reuseport\" parameter of \"listen {}\" has no effect: the wildcard listen on port {} serves the address (imbang does not bind it apart) in {}",
                addr,
                addr.port(),
                location
            ));
        }
    }
    reuseport
}

fn route_error(e: crate::route::RouteError) -> ConfigError {
    ConfigError::new(ErrorKind::Invalid(e.kind.to_string()), e.location)
}

/// What compiling one server needs besides the server.
struct Cx<'a> {
    groups: &'a FastMap<String, Arc<Group>>,
    /// For `proxy_pass` with variables.
    targets: &'a Arc<Targets>,
    errors: &'a mut ConfigErrors,
    warnings: &'a mut Vec<String>,
    logs: &'a mut LogCache,
    scope: &'a Scope,
    /// `limit_req_zone`s and `limit_conn_zone`s, by name.
    limit_zones: &'a crate::limit::Zones,
}

/// Every `set` variable of the configuration; setting one of imbang's own variables is an error
/// (nginx: `the duplicate "host" variable`).
fn declared_variables(config: &Config, errors: &mut ConfigErrors) -> Scope {
    fn walk(loc: &Location, scope: &mut Scope, errors: &mut ConfigErrors) {
        // The named groups of a location regex (a bad one is reported by the location tree).
        if let crate::config::model::LocationMatch::Regex { case_insensitive } = loc.kind
            && let Ok(regex) = crate::route::Regex::new(&loc.pattern, case_insensitive)
        {
            for group in regex.capture_names().into_iter().flatten() {
                scope.declare_group(group);
            }
        }
        declare(&loc.conf.script, scope, errors);
        declare_auth(&loc.conf, scope);
        for l in &loc.locations {
            walk(l, scope, errors);
        }
    }
    /// `auth_request_set` variables: set after the subrequest, never warned about unset (nginx
    /// gives them a handler that finds nothing, not `set`'s warning).
    fn declare_auth(conf: &LocationConf, scope: &mut Scope) {
        let limited = conf.limit_except.as_ref().map(|le| &le.conf);
        for conf in std::iter::once(conf).chain(limited.map(|c| &**c)) {
            for (name, _) in conf.auth.iter().flat_map(|a| &a.request_set) {
                scope.declare_group(name);
            }
        }
    }
    fn declare(script: &[Stmt], scope: &mut Scope, errors: &mut ConfigErrors) {
        crate::rewrite::declare_names(script, scope);
        for set in crate::rewrite::sets(script) {
            // nginx lets `set $limit_rate` change the response's rate (docs/limits.md).
            if set.name == "limit_rate" {
                scope.declare(&set.name);
                continue;
            }
            if crate::vars::Var::parse(&set.name).is_some() {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(format!("the duplicate \"{}\" variable", set.name)),
                    Some(set.location.clone()),
                ));
            } else {
                scope.declare(&set.name);
            }
        }
    }
    let mut scope = Scope::default();
    for server in config.http.iter().flat_map(|h| &h.servers) {
        // The named groups of a `server_name` regex are variables too (set when that name
        // chooses the server); a bad pattern is reported where the names are indexed.
        for name in &server.names {
            if let ServerName::Regex(pattern) = name
                && let Ok(regex) = crate::route::Regex::new(pattern, false)
            {
                for group in regex.capture_names().into_iter().flatten() {
                    scope.declare_group(group);
                }
            }
        }
        declare(&server.conf.script, &mut scope, errors);
        declare_auth(&server.conf, &mut scope);
        for l in &server.locations {
            walk(l, &mut scope, errors);
        }
    }
    // The named groups of a `map` regex are variables everywhere (nginx declares them as it
    // reads the regex); a value that regex chose sees them (vars.rs).
    for map in config.http.iter().flat_map(|h| &h.maps) {
        for (key, _) in &map.entries {
            if let crate::config::model::MapKey::Regex(re) = key {
                for group in re.capture_names().flatten() {
                    scope.declare_group(group);
                }
            }
        }
    }
    // `map`s in file order: a map's source and values may use the maps written before it.
    for map in config.http.iter().flat_map(|h| &h.maps) {
        let error = |message: String| {
            ConfigError::new(ErrorKind::Invalid(message), Some(map.location.clone()))
        };
        if crate::vars::Var::parse(&map.name).is_some() || scope.has(&map.name) {
            errors.push(error(format!("the duplicate \"{}\" variable", map.name)));
            continue;
        }
        match crate::vars::MapTable::compile(map, &scope) {
            Ok(table) => scope.define_map(table),
            Err(message) => errors.push(error(message)),
        }
    }
    scope
}

/// A server's TLS, if one of its addresses is `listen ... ssl` (or it names certificates,
/// which nginx reads either way).
fn compile_tls(
    server: &Server,
    tls: &[SocketAddr],
    h2: &[SocketAddr],
    errors: &mut ConfigErrors,
) -> Option<Arc<crate::tls::ServerTls>> {
    let listen = server.listens.iter().find(|l| tls.contains(&l.addr));
    if listen.is_none() && server.ssl.certificates.is_empty() {
        return None;
    }
    let http2 = server.ssl.http2 || server.listens.iter().any(|l| h2.contains(&l.addr));
    let at = listen.map_or(server.location.as_str(), |l| l.location.as_str());
    match crate::tls::compile(&server.ssl, http2, at, &server.location) {
        Ok(t) => Some(Arc::new(t)),
        Err(e) => {
            // One error per place: servers inheriting a bad http-level certificate share it.
            let error = ConfigError::new(ErrorKind::Invalid(e.message), Some(e.location));
            if !errors.0.contains(&error) {
                errors.push(error);
            }
            None
        }
    }
}

fn compile_server(server: &Server, cx: &mut Cx<'_>) -> Option<ServerRoute> {
    let entries = server
        .locations
        .iter()
        .map(|l| location_entry(l, cx))
        .collect();
    let fallback = Arc::new(compile_route(
        &server.conf,
        None,
        None,
        &server.location,
        cx,
    ));
    let locations = match LocationTree::build(entries) {
        Ok(tree) => {
            cx.warnings.extend(
                tree.warnings()
                    .iter()
                    .map(|w| format!("{} in {}", w.message, w.location)),
            );
            tree
        }
        Err(e) => {
            cx.errors.push(route_error(e));
            return None;
        }
    };
    let name = match server.names.first() {
        Some(crate::config::model::ServerName::Exact(n)) => n.clone(),
        _ => String::new(),
    };
    let zone = (server.status_zone.as_deref())
        .map(|name| crate::stats::zone(crate::stats::ZoneKind::Server, name));
    Some(ServerRoute {
        name,
        locations,
        fallback,
        tls: None,
        zone,
    })
}

fn location_entry(loc: &Location, cx: &mut Cx<'_>) -> LocationEntry<Arc<Route>> {
    use crate::config::model::LocationMatch::*;
    let prefix = matches!(loc.kind, Prefix | PrefixNoRegex | Exact).then(|| loc.pattern.clone());
    // A regex that does not compile is reported by the location tree.
    let regex = match loc.kind {
        Regex { case_insensitive } => {
            crate::route::compile_regex(&loc.pattern, case_insensitive).ok()
        }
        _ => None,
    };
    LocationEntry {
        kind: loc.kind,
        pattern: loc.pattern.clone(),
        value: Arc::new(compile_route(&loc.conf, prefix, regex, &loc.location, cx)),
        children: loc
            .locations
            .iter()
            .map(|l| location_entry(l, cx))
            .collect(),
        location: loc.location.clone(),
    }
}

/// A location's `proxy_ssl_*` compiled (files read now), with its `proxy_ssl_name` when that
/// has variables; `at`: the `proxy_pass`. One error per place.
fn upstream_tls(
    conf: &LocationConf,
    at: &str,
    errors: &mut ConfigErrors,
    scope: &Scope,
) -> Option<LocationTls> {
    let spec = &conf.proxy.ssl;
    let tls = match crate::pool::tls::compile(spec, at) {
        Ok(tls) => tls,
        Err(e) => {
            let error = ConfigError::new(ErrorKind::Invalid(e.message), Some(e.location));
            if !errors.0.contains(&error) {
                errors.push(error);
            }
            return None;
        }
    };
    let name = match &spec.name {
        Some(name) if name.contains('$') => match Template::compile_in(name, scope) {
            Ok(t) => Some(ConfiguredName::Template(t)),
            Err(message) => {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(at.to_owned()),
                ));
                return None;
            }
        },
        Some(name) => Some(ConfiguredName::Fixed(name.clone())),
        None => None,
    };
    Some(LocationTls { tls, name })
}

/// A literal `proxy_pass https://`'s connector: `proxy_ssl_name` (rendered per request when
/// it has variables), else the `proxy_pass` host.
fn proxy_tls(LocationTls { tls, name }: LocationTls, host: &str) -> TlsTarget {
    match name {
        Some(ConfiguredName::Template(template)) => TlsTarget {
            tls,
            name: TargetName::Template(template),
        },
        Some(ConfiguredName::Fixed(fixed)) => TlsTarget::fixed(tls, &fixed),
        None => TlsTarget::fixed(tls, host),
    }
}

/// Whether a `proxy_pass` URL with variables may render to `https://` (its text before the
/// first variable could start one).
fn may_be_https(url: &str) -> bool {
    let literal = url[..url.find('$').unwrap_or(url.len())].to_ascii_lowercase();
    literal.starts_with("https://") || "https://".starts_with(&literal)
}

fn compile_route(
    conf: &Arc<LocationConf>,
    prefix: Option<String>,
    regex: Option<crate::route::Regex>,
    at: &str,
    cx: &mut Cx<'_>,
) -> Route {
    let errors = &mut *cx.errors;
    let groups = cx.groups;
    let mut set_headers = Vec::new();
    let mut sets_host = false;
    for (name, value) in &conf.proxy.set_headers {
        let header = match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) => h,
            Err(_) => {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(format!(
                        "invalid header name \"{name}\" in \"proxy_set_header\""
                    )),
                    Some(at.to_owned()),
                ));
                continue;
            }
        };
        match Template::compile_in(value, cx.scope) {
            Ok(t) => {
                sets_host |= header == http::header::HOST;
                set_headers.push((header, t, name.as_str().into()));
            }
            Err(message) => errors.push(ConfigError::new(
                ErrorKind::Invalid(message),
                Some(at.to_owned()),
            )),
        }
    }
    let action = match &conf.action {
        None => RouteAction::NotFound,
        Some(Action::Proxy(pass)) => match groups.get(&pass.upstream) {
            Some(group) => RouteAction::Proxy(Proxy {
                group: group.clone(),
                proxy_host: pass.proxy_host.clone(),
                uri: match &pass.uri {
                    Some(uri) => PassUri::ReplacePrefix(uri.clone()),
                    None => PassUri::Unchanged,
                },
                tls: match pass.tls {
                    true => upstream_tls(conf, &pass.location, errors, cx.scope)
                        .map(|tls| proxy_tls(tls, &pass.proxy_host)),
                    false => None,
                },
            }),
            None => {
                errors.push(ConfigError::new(
                    ErrorKind::HostNotFound(pass.upstream.clone()),
                    Some(pass.location.clone()),
                ));
                RouteAction::NotFound
            }
        },
        Some(Action::Api(api)) => RouteAction::Api { write: api.write },
        Some(Action::StubStatus) => RouteAction::StubStatus,
        Some(Action::Prometheus) => RouteAction::Prometheus,
        Some(Action::ProxyVars(pass)) => match Template::compile_in(&pass.url, cx.scope) {
            Ok(url) => RouteAction::ProxyVars(ProxyVars::new(
                url,
                cx.targets.clone(),
                conf.resolver.clone(),
                // Compiled when the URL may render to `https://`.
                match may_be_https(&pass.url) {
                    true => upstream_tls(conf, &pass.location, errors, cx.scope),
                    false => None,
                },
            )),
            Err(message) => {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(pass.location.clone()),
                ));
                RouteAction::NotFound
            }
        },
    };
    let mut add_headers = Vec::new();
    for h in &conf.add_headers {
        let name = HeaderName::from_bytes(h.name.as_bytes());
        match (name, Template::compile_in(&h.value, cx.scope)) {
            (Ok(name), Ok(t)) => add_headers.push((name, t, h.always, h.name.as_str().into())),
            (Err(_), _) => errors.push(ConfigError::new(
                ErrorKind::Invalid(format!(
                    "invalid header name \"{}\" in \"add_header\"",
                    h.name
                )),
                Some(at.to_owned()),
            )),
            (_, Err(message)) => errors.push(ConfigError::new(
                ErrorKind::Invalid(message),
                Some(at.to_owned()),
            )),
        }
    }
    let sub_filter = conf.sub_filter.as_ref().and_then(|sub| {
        crate::proxy::sub_filter::Rules::compile(sub, cx.scope)
            .map_err(|message| {
                errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(at.to_owned()),
                ));
            })
            .ok()
            .map(Box::new)
    });
    let redirects = match (&conf.proxy.redirect, &action) {
        (Redirect::Off, _) => Vec::new(),
        (Redirect::Rules(rules), _) => rules.clone(),
        // With variables nginx's `default` has nothing to go by (an explicit one is an error).
        (Redirect::Default, RouteAction::Proxy(p)) => match (&p.uri, &prefix) {
            (PassUri::ReplacePrefix(uri), Some(prefix)) => {
                let scheme = if p.tls.is_some() { "https" } else { "http" };
                vec![(format!("{scheme}://{}{uri}", p.proxy_host), prefix.clone())]
            }
            _ => Vec::new(),
        },
        (Redirect::Default, _) => Vec::new(),
    };
    let script = {
        let mut script_cx = ScriptCx {
            cx,
            prefix: &prefix,
            regex: &regex,
        };
        Script::compile(&conf.script, conf.rewrite_log, &mut script_cx)
    };
    let (access_log, log_errors) = access_log::compile(&conf.access_log, cx.logs, cx.scope);
    for (message, location) in log_errors {
        cx.errors
            .push(ConfigError::new(ErrorKind::Invalid(message), location));
    }
    let regex_names = regex.as_ref().map_or_else(Default::default, |regex| {
        regex
            .capture_names()
            .into_iter()
            .enumerate()
            .filter_map(|(i, name)| Some((i, Arc::from(name?))))
            .collect()
    });
    let limit_except = conf.limit_except.as_ref().map(|le| {
        Box::new(LimitExceptRoute {
            spec: le.clone(),
            route: Arc::new(compile_route(
                &le.conf,
                prefix.clone(),
                regex.clone(),
                at,
                cx,
            )),
        })
    });
    let auth = conf.auth.as_ref().and_then(|spec| {
        crate::auth::Auth::compile(spec, cx.scope)
            .map_err(|message| {
                cx.errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(at.to_owned()),
                ));
            })
            .ok()
            .map(Box::new)
    });
    let error_page_targets = conf
        .error_pages
        .iter()
        .map(|page| {
            if !page.target.contains('$') {
                return None;
            }
            Template::compile_in(&page.target, cx.scope)
                .map_err(|message| {
                    cx.errors.push(ConfigError::new(
                        ErrorKind::Invalid(message),
                        Some(at.to_owned()),
                    ));
                })
                .ok()
        })
        .collect();
    let limits = conf.limits.as_ref().and_then(|spec| {
        crate::limit::RouteLimits::compile(spec, cx.limit_zones, cx.scope, cx.errors, at)
            .map(Box::new)
    });
    let files = match &action {
        RouteAction::NotFound => match crate::files::Files::compile(conf, cx.scope) {
            Ok(files) => Some(Box::new(files)),
            Err(message) => {
                cx.errors.push(ConfigError::new(
                    ErrorKind::Invalid(message),
                    Some(at.to_owned()),
                ));
                None
            }
        },
        _ => None,
    };
    Route {
        files,
        conf: conf.clone(),
        zone: (conf.status_zone.as_deref())
            .map(|name| crate::stats::zone(crate::stats::ZoneKind::Location, name)),
        action,
        set_headers,
        sets_host,
        prefix,
        regex,
        regex_names,
        access_log,
        script,
        add_headers,
        hidden_lengths: hidden_headers(&conf.proxy)
            .iter()
            .fold(0, |m, h| m | 1 << h.len().min(63)),
        hidden: hidden_headers(&conf.proxy),
        redirects,
        server_header: HeaderValue::from_static(if conf.server_tokens {
            concat!("imbang/", env!("CARGO_PKG_VERSION"))
        } else {
            "imbang"
        }),
        sub_filter,
        limit_except,
        auth,
        error_page_targets,
        limits,
    }
}

/// What a level's script compiles with: the snapshot's scope and errors, and what the implicit
/// locations of its `if` blocks share with the location (the prefix and regex `proxy_pass`
/// and `$1`.. go by).
struct ScriptCx<'c, 'a> {
    cx: &'c mut Cx<'a>,
    prefix: &'c Option<String>,
    regex: &'c Option<crate::route::Regex>,
}

impl crate::rewrite::CompileCx for ScriptCx<'_, '_> {
    fn scope(&self) -> &Scope {
        self.cx.scope
    }

    fn parts(&mut self) -> (&Scope, &mut ConfigErrors) {
        (self.cx.scope, self.cx.errors)
    }

    fn if_route(&mut self, conf: &Arc<LocationConf>, at: &str) -> Route {
        compile_route(conf, self.prefix.clone(), self.regex.clone(), at, self.cx)
    }
}

/// nginx's `proxy_hide_header` defaults (`Date`, `Server`, `X-Pad`, `X-Accel-*`) less the
/// `proxy_pass_header` ones, plus the `proxy_hide_header` ones.
fn hidden_headers(proxy: &crate::config::model::ProxySettings) -> Vec<Box<str>> {
    const DEFAULT: [&str; 8] = [
        "date",
        "server",
        "x-pad",
        "x-accel-expires",
        "x-accel-redirect",
        "x-accel-limit-rate",
        "x-accel-buffering",
        "x-accel-charset",
    ];
    DEFAULT
        .iter()
        .filter(|h| !proxy.pass_headers.iter().any(|p| p == *h))
        .map(|h| h.to_string())
        .chain(proxy.hide_headers.iter().cloned())
        .map(|h| h.to_ascii_lowercase().into())
        .collect()
}
