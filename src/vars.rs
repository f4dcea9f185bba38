//! nginx variables in directive values (`proxy_set_header X-Real-IP $remote_addr`): compiled once
//! per snapshot into a [`Template`], evaluated per request against a [`Vars`] source.

use std::fmt::Write;
use std::sync::Arc;

/// A variable imbang knows how to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    Host,
    HttpHost,
    RemoteAddr,
    /// The client address as 4 (IPv4) or 16 (IPv6) raw bytes. Raw only where bytes are
    /// rendered ([`Template::render_bytes`], the `hash` key); text like `$remote_addr` elsewhere.
    BinaryRemoteAddr,
    RemotePort,
    ServerAddr,
    ServerPort,
    ServerName,
    Scheme,
    /// `$https`: `on` on a TLS connection, else empty.
    Https,
    /// `$ssl_*`: what the connection's TLS handshake agreed on (empty without TLS).
    Ssl(SslVar),
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    /// `?` when the request has arguments, else empty.
    IsArgs,
    ProxyHost,
    ProxyAddXForwardedFor,
    /// `$http_x_name`: a request header, with `_` standing for `-`, lower-cased.
    Header(String),
    Pid,
    Connection,
    ConnectionRequests,
    /// `$connections_active`, `_reading`, `_writing`, `_waiting` (ngx_http_stub_status_module).
    Connections(crate::stats::ConnectionsVar),
    Hostname,
    RemoteUser,
    /// `$arg_name`: a query argument.
    Arg(String),
    /// `$cookie_name`.
    Cookie(String),
    // Known once the response is (being) sent: empty before, in the access log after.
    Status,
    BodyBytesSent,
    BytesSent,
    /// `$gzip_ratio`: known once a compressed body was sent.
    GzipRatio,
    RequestLength,
    RequestTime,
    TimeLocal,
    TimeIso8601,
    Msec,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    /// `$sent_http_name`: a response header sent to the client.
    SentHttp(String),
    /// `$upstream_http_name`: a response header from the peer.
    UpstreamHttp(String),
    /// A variable of the configuration's own, given a value by `set` or a regex's named group.
    Set(Arc<str>),
    /// A variable only `set` declares: read where no `set` gave it a value, nginx logs
    /// `using uninitialized "name" variable` (`uninitialized_variable_warn`).
    Declared(Arc<str>),
    /// A variable a `map` block defines.
    Map(MapRef),
    /// `$1`..`$9`: a numbered group of the regex location that matched (empty when none did
    /// or the group took no part in the match).
    Capture(u8),
    // --- More of nginx's variables (docs/variables.md).
    /// The port of `proxy_pass`'s address (`80` when it names none).
    ProxyPort,
    /// `HTTP/1.1`, `HTTP/2.0`.
    ServerProtocol,
    /// 32 hex digits, random, the same for every use within one request.
    RequestId,
    /// The request body when it was kept in memory (`client_body_buffer_size`).
    RequestBody,
    /// Always empty: imbang never writes request bodies to files.
    RequestBodyFile,
    /// The response's `limit_rate` in bytes a second (`set $limit_rate` changes it; 0: none).
    LimitRate,
    /// `$limit_req_status`: what `limit_req` decided (empty where none applied).
    LimitReqStatus,
    /// `$limit_conn_status`: what `limit_conn` decided (empty where none applied).
    LimitConnStatus,
    /// `p` for a pipelined request, `.` otherwise (imbang: always `.`).
    Pipe,
    /// The connection's age in seconds with milliseconds.
    ConnectionTime,
    /// imbang's version.
    NginxVersion,
    /// The client address and port before the realip module changed them.
    RealipRemoteAddr,
    RealipRemotePort,
    /// `$proxy_protocol_addr` and friends: from the connection's PROXY protocol header (empty
    /// without one).
    ProxyProtocol(ProxyProtocolVar),
    /// Known once the response is sent.
    RequestCompletion,
    UpstreamResponseLength,
    UpstreamBytesReceived,
    UpstreamBytesSent,
    /// Always empty: imbang has no cache.
    UpstreamCacheStatus,
    /// `$upstream_trailer_name` and `$sent_trailer_name`: trailer fields (empty: not kept).
    UpstreamTrailer(String),
    SentTrailer(String),
    /// `$upstream_cookie_name`: a cookie the peer's `Set-Cookie` fields set.
    UpstreamCookie(String),
    /// `h2c` for HTTP/2 over plain TCP (`h2` over TLS), empty otherwise (ngx_http_v2_module).
    Http2,
    /// The location's `root`; its real path (symbolic links resolved); `root` + `$uri`.
    DocumentRoot,
    RealpathRoot,
    RequestFilename,
    // --- stream's own (ngx_stream_core_module, ngx_stream_upstream_module): known only in a
    // `stream { }` block's templates (see [`Scope::for_stream`]).
    /// Bytes read from the client.
    BytesReceived,
    /// The session's length in seconds with milliseconds.
    SessionTime,
    /// `TCP` or `UDP`.
    Protocol,
    UpstreamFirstByteTime,
    UpstreamSessionTime,
    /// `$ssl_preread_server_name`, `_alpn_protocols`, `_protocol` (ngx_stream_ssl_preread_module).
    SslPrereadServerName,
    SslPrereadAlpnProtocols,
    SslPrereadProtocol,
}

/// The variables a configuration declares with `set` (nginx's variables are global: a name set
/// anywhere may be used everywhere; where it was not set for a request it is empty), and those
/// its `map` blocks define.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    names: std::collections::HashMap<String, Arc<str>>,
    /// The names the named groups of regexes declare (nginx does not warn when they are read
    /// unset, even where a `set` declares them too).
    groups: std::collections::HashSet<String>,
    maps: std::collections::HashMap<String, MapRef>,
    /// A `stream { }` block's scope: stream's variables, not http's.
    stream: bool,
}

/// A compiled `map` block: the source text, its keys, and the values (all with variables).
#[derive(Debug)]
pub struct MapTable {
    pub name: String,
    source: Template,
    /// Exact keys (lower case) to the index of their value.
    exact: std::collections::HashMap<String, usize>,
    /// Wildcard and regex keys in the order nginx tries them (leading wildcards longest first,
    /// then trailing ones longest first, then regexes in file order), with their value's index.
    patterns: Vec<(MapPattern, usize)>,
    values: Vec<Template>,
    default: Template,
}

/// What a map's lookup found: a value, or one chosen by a regex whose groups it uses.
enum Found<'t> {
    Plain(&'t Template),
    Regex(&'t Template, &'t regex::Regex),
}

/// The variables a map value chosen by a regex sees: the regex's groups as `$1`..`$9` and as
/// the variables its named groups name, everything else the request's.
struct MapGroups<'a> {
    inner: &'a dyn Vars,
    re: &'a regex::Regex,
    groups: regex::Captures<'a>,
}

impl MapGroups<'_> {
    /// The group `var` stands for here, if any: `Some("")` for one that took no part.
    fn group(&self, var: &Var) -> Option<&str> {
        let m = match var {
            Var::Capture(n) => self.groups.get(usize::from(*n)),
            Var::Set(name) if self.re.capture_names().flatten().any(|g| g == &**name) => {
                self.groups.name(name)
            }
            _ => return None,
        };
        Some(m.map_or("", |m| m.as_str()))
    }
}

impl Vars for MapGroups<'_> {
    fn append(&self, var: &Var, out: &mut String) {
        match self.group(var) {
            Some(value) => out.push_str(value),
            None => self.inner.append(var, out),
        }
    }

    fn append_bytes(&self, var: &Var, out: &mut Vec<u8>) {
        match self.group(var) {
            Some(value) => out.extend_from_slice(value.as_bytes()),
            None => self.inner.append_bytes(var, out),
        }
    }
}

#[derive(Debug)]
enum MapPattern {
    Suffix { suffix: String, dot_too: bool },
    Prefix(String),
    Regex(regex::Regex),
}

/// A `map` variable: compared by identity.
#[derive(Clone, Debug)]
pub struct MapRef(pub Arc<MapTable>);

impl PartialEq for MapRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for MapRef {}

impl MapTable {
    /// Compiles `spec` with the variables of `scope` (which holds the maps written before it).
    pub fn compile(spec: &crate::config::model::MapSpec, scope: &Scope) -> Result<Self, String> {
        use crate::config::model::MapKey;
        let mut exact = std::collections::HashMap::new();
        let (mut suffixes, mut prefixes, mut regexes) = (Vec::new(), Vec::new(), Vec::new());
        let mut values = Vec::new();
        for (key, value) in &spec.entries {
            let i = values.len();
            values.push(Template::compile_in(value, scope)?);
            match key {
                MapKey::Exact(k) => {
                    exact.insert(k.clone(), i);
                }
                MapKey::Suffix { suffix, dot_too } => suffixes.push((
                    MapPattern::Suffix {
                        suffix: suffix.clone(),
                        dot_too: *dot_too,
                    },
                    i,
                )),
                MapKey::Prefix(p) => prefixes.push((MapPattern::Prefix(p.clone()), i)),
                MapKey::Regex(re) => regexes.push((MapPattern::Regex(re.clone()), i)),
            }
        }
        let len = |p: &MapPattern| match p {
            MapPattern::Suffix { suffix, .. } => suffix.len(),
            MapPattern::Prefix(prefix) => prefix.len(),
            MapPattern::Regex(_) => 0,
        };
        suffixes.sort_by_key(|(p, _)| std::cmp::Reverse(len(p)));
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(len(p)));
        let mut patterns = suffixes;
        patterns.extend(prefixes);
        patterns.extend(regexes);
        Ok(Self {
            name: spec.name.clone(),
            source: Template::compile_in(&spec.source, scope)?,
            exact,
            patterns,
            values,
            default: Template::compile_in(&spec.default, scope)?,
        })
    }

    /// Appends this request's value: the source rendered and looked up. A value chosen by a
    /// regex sees that regex's groups as `$1`..`$9` and its named groups as their variables.
    pub fn append(&self, vars: &dyn Vars, out: &mut String) {
        let source = self.source.render(vars);
        match self.lookup(&source) {
            Found::Plain(value) => value.render_into(vars, out),
            Found::Regex(value, re) => match re.captures(&source) {
                Some(groups) => value.render_into(
                    &MapGroups {
                        inner: vars,
                        re,
                        groups,
                    },
                    out,
                ),
                None => value.render_into(vars, out),
            },
        }
    }

    /// The value template for `source`: an exact key (without regard to case), then
    /// wildcards, then regexes, then `default`.
    fn lookup<'t>(&'t self, source: &str) -> Found<'t> {
        let lower = source.to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&lower) {
            return Found::Plain(&self.values[i]);
        }
        let found = self.patterns.iter().find(|(p, _)| match p {
            MapPattern::Suffix { suffix, dot_too } => {
                lower.ends_with(suffix.as_str()) || (*dot_too && lower == suffix[1..])
            }
            MapPattern::Prefix(prefix) => lower.starts_with(prefix.as_str()),
            MapPattern::Regex(re) => re.is_match(source),
        });
        match found {
            None => Found::Plain(&self.default),
            // Groups are looked for only when the value uses some.
            Some((MapPattern::Regex(re), i)) if self.values[*i].uses_groups(re) => {
                Found::Regex(&self.values[*i], re)
            }
            Some((_, i)) => Found::Plain(&self.values[*i]),
        }
    }

    /// Whether the source, a value or the default uses a variable satisfying `pred`.
    fn uses(&self, pred: &dyn Fn(&Var) -> bool) -> bool {
        std::iter::once(&self.source)
            .chain(&self.values)
            .chain(std::iter::once(&self.default))
            .any(|t| t.uses(pred))
    }
}

impl Scope {
    /// An empty scope for the templates of `stream { }`.
    pub fn for_stream() -> Self {
        Self {
            stream: true,
            ..Self::default()
        }
    }

    /// Adds the variable of a compiled `map`.
    pub fn define_map(&mut self, table: MapTable) {
        self.maps
            .insert(table.name.clone(), MapRef(Arc::new(table)));
    }

    /// Whether `name` is a variable of the configuration's own (`set` or `map`).
    pub fn has(&self, name: &str) -> bool {
        self.names.contains_key(name) || self.maps.contains_key(name)
    }

    pub fn declare(&mut self, name: &str) -> Arc<str> {
        self.names
            .entry(name.to_owned())
            .or_insert_with(|| Arc::from(name))
            .clone()
    }

    /// Declares the variable of a regex's named group.
    pub fn declare_group(&mut self, name: &str) -> Arc<str> {
        self.groups.insert(name.to_owned());
        self.declare(name)
    }

    /// The variable `name` as a template reads it: `None` if nothing declares it.
    fn var(&self, name: &str) -> Option<Var> {
        let arc = self.get(name)?;
        Some(if self.groups.contains(name) {
            Var::Set(arc)
        } else {
            Var::Declared(arc)
        })
    }

    /// The declared variable `name`, if `set` declares it somewhere.
    pub fn get(&self, name: &str) -> Option<Arc<str>> {
        self.names.get(name).cloned()
    }
}

impl Var {
    /// Whether nginx's value is "found" even when empty, so that a log line shows it empty
    /// rather than as `-` (`$https` over plain HTTP, `$is_args` without arguments, an
    /// incomplete `$request_completion`, `$remote_port` of an address realip gave no port).
    pub fn found_when_empty(&self) -> bool {
        matches!(
            self,
            Self::Https
                | Self::Http2
                | Self::IsArgs
                | Self::RequestCompletion
                | Self::RemotePort
                | Self::RealipRemotePort
        )
    }

    /// A variable of nginx's stream modules named `name`, or `None` if stream has no such one.
    pub fn parse_stream(name: &str) -> Option<Self> {
        Some(match name {
            "bytes_received" => Self::BytesReceived,
            "session_time" => Self::SessionTime,
            "protocol" => Self::Protocol,
            "upstream_first_byte_time" => Self::UpstreamFirstByteTime,
            "upstream_session_time" => Self::UpstreamSessionTime,
            "ssl_preread_server_name" => Self::SslPrereadServerName,
            "ssl_preread_alpn_protocols" => Self::SslPrereadAlpnProtocols,
            "ssl_preread_protocol" => Self::SslPrereadProtocol,
            "realip_remote_addr" | "realip_remote_port" => Self::parse(name)?,
            _ if name.starts_with("proxy_protocol_tlv_") => Self::parse(name)?,
            "binary_remote_addr"
            | "bytes_sent"
            | "connection"
            | "hostname"
            | "msec"
            | "nginx_version"
            | "pid"
            | "remote_addr"
            | "remote_port"
            | "server_addr"
            | "server_port"
            | "status"
            | "time_iso8601"
            | "time_local"
            | "upstream_addr"
            | "upstream_bytes_received"
            | "upstream_bytes_sent"
            | "upstream_connect_time"
            | "proxy_protocol_addr"
            | "proxy_protocol_port"
            | "proxy_protocol_server_addr"
            | "proxy_protocol_server_port" => Self::parse(name)?,
            _ => return None,
        })
    }

    /// The variable named `name` (without `$`), or `None` if imbang does not know it.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "host" => Self::Host,
            "http_host" => Self::HttpHost,
            "remote_addr" => Self::RemoteAddr,
            "binary_remote_addr" => Self::BinaryRemoteAddr,
            "remote_port" => Self::RemotePort,
            "server_addr" => Self::ServerAddr,
            "server_port" => Self::ServerPort,
            "server_name" => Self::ServerName,
            "scheme" => Self::Scheme,
            "https" => Self::Https,
            "ssl_protocol" => Self::Ssl(SslVar::Protocol),
            "ssl_cipher" => Self::Ssl(SslVar::Cipher),
            "ssl_server_name" => Self::Ssl(SslVar::ServerName),
            "ssl_session_reused" => Self::Ssl(SslVar::SessionReused),
            "ssl_alpn_protocol" => Self::Ssl(SslVar::AlpnProtocol),
            "ssl_curve" => Self::Ssl(SslVar::Curve),
            "ssl_client_verify" => Self::Ssl(SslVar::ClientVerify),
            "ssl_client_s_dn" => Self::Ssl(SslVar::ClientSDn),
            "ssl_client_i_dn" => Self::Ssl(SslVar::ClientIDn),
            "ssl_client_serial" => Self::Ssl(SslVar::ClientSerial),
            "ssl_client_fingerprint" => Self::Ssl(SslVar::ClientFingerprint),
            "ssl_client_cert" => Self::Ssl(SslVar::ClientCert),
            "ssl_client_raw_cert" => Self::Ssl(SslVar::ClientRawCert),
            "ssl_client_escaped_cert" => Self::Ssl(SslVar::ClientEscapedCert),
            "request" => Self::Request,
            "request_method" => Self::RequestMethod,
            "request_uri" => Self::RequestUri,
            "uri" | "document_uri" => Self::Uri,
            "args" | "query_string" => Self::Args,
            "is_args" => Self::IsArgs,
            "proxy_host" => Self::ProxyHost,
            "proxy_add_x_forwarded_for" => Self::ProxyAddXForwardedFor,
            "pid" => Self::Pid,
            "connection" => Self::Connection,
            "connection_requests" => Self::ConnectionRequests,
            "connections_active" => Self::Connections(crate::stats::ConnectionsVar::Active),
            "connections_reading" => Self::Connections(crate::stats::ConnectionsVar::Reading),
            "connections_writing" => Self::Connections(crate::stats::ConnectionsVar::Writing),
            "connections_waiting" => Self::Connections(crate::stats::ConnectionsVar::Waiting),
            "hostname" => Self::Hostname,
            "remote_user" => Self::RemoteUser,
            "status" => Self::Status,
            "body_bytes_sent" => Self::BodyBytesSent,
            "bytes_sent" => Self::BytesSent,
            "gzip_ratio" => Self::GzipRatio,
            "request_length" => Self::RequestLength,
            "request_time" => Self::RequestTime,
            "time_local" => Self::TimeLocal,
            "time_iso8601" => Self::TimeIso8601,
            "msec" => Self::Msec,
            "upstream_addr" => Self::UpstreamAddr,
            "upstream_status" => Self::UpstreamStatus,
            "upstream_response_time" => Self::UpstreamResponseTime,
            "upstream_connect_time" => Self::UpstreamConnectTime,
            "upstream_header_time" => Self::UpstreamHeaderTime,
            "proxy_port" => Self::ProxyPort,
            "server_protocol" => Self::ServerProtocol,
            "request_id" => Self::RequestId,
            "request_body" => Self::RequestBody,
            "request_body_file" => Self::RequestBodyFile,
            "limit_rate" => Self::LimitRate,
            "limit_req_status" => Self::LimitReqStatus,
            "limit_conn_status" => Self::LimitConnStatus,
            "pipe" => Self::Pipe,
            "connection_time" => Self::ConnectionTime,
            "nginx_version" => Self::NginxVersion,
            "realip_remote_addr" => Self::RealipRemoteAddr,
            "realip_remote_port" => Self::RealipRemotePort,
            "proxy_protocol_addr" => Self::ProxyProtocol(ProxyProtocolVar::Addr),
            "proxy_protocol_port" => Self::ProxyProtocol(ProxyProtocolVar::Port),
            "proxy_protocol_server_addr" => Self::ProxyProtocol(ProxyProtocolVar::ServerAddr),
            "proxy_protocol_server_port" => Self::ProxyProtocol(ProxyProtocolVar::ServerPort),
            "request_completion" => Self::RequestCompletion,
            "upstream_response_length" => Self::UpstreamResponseLength,
            "upstream_bytes_received" => Self::UpstreamBytesReceived,
            "upstream_bytes_sent" => Self::UpstreamBytesSent,
            "upstream_cache_status" => Self::UpstreamCacheStatus,
            "http2" => Self::Http2,
            "document_root" => Self::DocumentRoot,
            "realpath_root" => Self::RealpathRoot,
            "request_filename" => Self::RequestFilename,
            // nginx reads these two from the request's headers.
            "content_type" => Self::Header("content-type".to_owned()),
            "content_length" => Self::Header("content-length".to_owned()),
            _ => {
                let header = |s: &str| {
                    Some(s)
                        .filter(|s| !s.is_empty())
                        .map(|s| s.replace('_', "-").to_ascii_lowercase())
                };
                if let Some(t) = name.strip_prefix("proxy_protocol_tlv_") {
                    // A name nginx does not know is empty (nginx logs it when read).
                    Self::ProxyProtocol(ProxyProtocolVar::Tlv(
                        crate::proxy_protocol::TlvName::parse(t),
                    ))
                } else if let Some(h) = name.strip_prefix("http_") {
                    Self::Header(header(h)?)
                } else if let Some(h) = name.strip_prefix("sent_http_") {
                    Self::SentHttp(header(h)?)
                } else if let Some(h) = name.strip_prefix("upstream_http_") {
                    Self::UpstreamHttp(header(h)?)
                } else if let Some(h) = name.strip_prefix("upstream_trailer_") {
                    Self::UpstreamTrailer(header(h)?)
                } else if let Some(h) = name.strip_prefix("sent_trailer_") {
                    Self::SentTrailer(header(h)?)
                } else if let Some(c) = name.strip_prefix("upstream_cookie_") {
                    Some(c)
                        .filter(|c| !c.is_empty())
                        .map(|c| Self::UpstreamCookie(c.to_owned()))?
                } else if let Some(a) = name.strip_prefix("arg_") {
                    Some(a)
                        .filter(|a| !a.is_empty())
                        .map(|a| Self::Arg(a.to_owned()))?
                } else if let Some(c) = name.strip_prefix("cookie_") {
                    Some(c)
                        .filter(|c| !c.is_empty())
                        .map(|c| Self::Cookie(c.to_owned()))?
                } else {
                    return None;
                }
            }
        })
    }
}

/// The `$proxy_protocol_*` variables (nginx's core http variables over `c->proxy_protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyProtocolVar {
    Addr,
    Port,
    ServerAddr,
    ServerPort,
    /// `$proxy_protocol_tlv_NAME`; `None` for a name nginx does not know.
    Tlv(Option<crate::proxy_protocol::TlvName>),
}

impl ProxyProtocolVar {
    /// Appends the value for a connection that began with `header` (nothing without one).
    pub fn append(self, header: Option<&crate::proxy_protocol::Header>, out: &mut String) {
        let Some(header) = header else {
            return;
        };
        let addresses = header.addresses.as_ref();
        match self {
            Self::Addr => out.extend(addresses.map(|a| &*a.source)),
            Self::ServerAddr => out.extend(addresses.map(|a| &*a.destination)),
            // Port 0 is empty, as nginx's.
            Self::Port | Self::ServerPort => {
                let port = addresses.map_or(0, |a| match self {
                    Self::Port => a.source_port,
                    _ => a.destination_port,
                });
                if port != 0 {
                    let _ = write!(out, "{port}");
                }
            }
            Self::Tlv(Some(name)) => {
                if let Some(value) = header.tlv(name) {
                    out.push_str(&String::from_utf8_lossy(&value));
                }
            }
            Self::Tlv(None) => {}
        }
    }
}

/// The `$ssl_*` variables (nginx's `ngx_http_ssl_module`), read by [`crate::tls::append_var`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslVar {
    Protocol,
    Cipher,
    ServerName,
    SessionReused,
    AlpnProtocol,
    Curve,
    ClientVerify,
    ClientSDn,
    ClientIDn,
    ClientSerial,
    ClientFingerprint,
    ClientCert,
    ClientRawCert,
    ClientEscapedCert,
}

/// What a template reads variables from (one request).
pub trait Vars {
    /// Appends the value of `var` to `out`; an unset variable appends nothing.
    fn append(&self, var: &Var, out: &mut String);

    /// Appends the value of `var` as bytes: the same as [`append`](Self::append) except for
    /// variables whose value is not text (`$binary_remote_addr`).
    fn append_bytes(&self, var: &Var, out: &mut Vec<u8>) {
        let mut text = String::new();
        self.append(var, &mut text);
        out.extend_from_slice(text.as_bytes());
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Var(Var),
}

/// A directive value with its variables found once: `"$scheme://$host"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Splits `text` into literal text and `$name` / `${name}` variables.
    /// Errors with nginx's wording for an unknown variable: `unknown "foo" variable`.
    pub fn compile(text: &str) -> Result<Self, String> {
        Self::compile_in(text, &Scope::default())
    }

    /// Like [`Template::compile`], also knowing the variables `set` declares in the configuration.
    pub fn compile_in(text: &str, scope: &Scope) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(i) = rest.find('$') {
            lit.push_str(&rest[..i]);
            rest = &rest[i + 1..];
            // nginx: `$` and one digit 1..9 is a capture (`$10` is `$1` then `0`); `${1}` is not.
            if let Some(digit @ b'1'..=b'9') = rest.bytes().next() {
                if !lit.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut lit)));
                }
                parts.push(Part::Var(Var::Capture(digit - b'0')));
                rest = &rest[1..];
                continue;
            }
            let (name, after) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}').ok_or_else(|| {
                    format!("the closing bracket in \"{inner}\" variable is missing")
                })?;
                (&inner[..end], &inner[end + 1..])
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                (&rest[..end], &rest[end..])
            };
            if name.is_empty() {
                return Err("invalid variable name \"\"".to_owned());
            }
            let known = match scope.stream {
                false => Var::parse(name),
                true => Var::parse_stream(name),
            };
            let var = match known {
                Some(var) => var,
                None => match scope.maps.get(name) {
                    Some(map) => Var::Map(map.clone()),
                    None => scope
                        .var(name)
                        .ok_or_else(|| format!("unknown \"{name}\" variable"))?,
                },
            };
            if !lit.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Self { parts })
    }

    /// True when some variable of the template satisfies `pred`.
    pub fn uses(&self, pred: impl Fn(&Var) -> bool) -> bool {
        self.uses_dyn(&pred)
    }

    /// [`uses`](Self::uses), looking into the templates of the maps it uses too.
    fn uses_dyn(&self, pred: &dyn Fn(&Var) -> bool) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Var(Var::Map(map)) => pred(&Var::Map(map.clone())) || map.0.uses(pred),
            Part::Var(v) => pred(v),
            Part::Text(_) => false,
        })
    }

    /// Whether the template uses a group of `re`: `$1`..`$9` or a variable a named group names.
    fn uses_groups(&self, re: &regex::Regex) -> bool {
        self.parts.iter().any(|p| match p {
            Part::Var(Var::Capture(_)) => true,
            Part::Var(Var::Set(name)) => re.capture_names().flatten().any(|g| g == &**name),
            _ => false,
        })
    }

    /// True when the template has no variables (its value is the same for every request).
    pub fn is_constant(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    pub fn render(&self, vars: &dyn Vars) -> String {
        let mut out = String::new();
        self.render_into(vars, &mut out);
        out
    }

    pub fn render_into(&self, vars: &dyn Vars, out: &mut String) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Var(var) => vars.append(var, out),
            }
        }
    }

    /// Renders for a log line: each variable's value escaped, an empty one written as `-`
    /// (except in JSON), as nginx's `log_format` does.
    pub fn render_escaped(&self, vars: &dyn Vars, escape: Escape, out: &mut String) {
        let mut value = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                // Raw address bytes, escaped byte by byte (nginx: `\x7F\x00\x00\x01`).
                Part::Var(var @ Var::BinaryRemoteAddr) => {
                    let mut bytes = Vec::new();
                    vars.append_bytes(var, &mut bytes);
                    escape.append_bytes(&bytes, out);
                }
                Part::Var(var) => {
                    value.clear();
                    vars.append(var, &mut value);
                    if !(value.is_empty() && var.found_when_empty()) {
                        escape.append(&value, out);
                    }
                }
            }
        }
    }

    /// The value as bytes, as nginx computes a `hash` key: `$binary_remote_addr` gives raw
    /// address bytes here.
    pub fn render_bytes(&self, vars: &dyn Vars) -> Vec<u8> {
        let mut out = Vec::new();
        self.render_bytes_into(vars, &mut out);
        out
    }

    /// [`Template::render_bytes`] appended to `out`.
    pub fn render_bytes_into(&self, vars: &dyn Vars, out: &mut Vec<u8>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.extend_from_slice(text.as_bytes()),
                Part::Var(var) => vars.append_bytes(var, out),
            }
        }
    }
}

/// How `log_format` escapes variable values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\\`, and bytes outside 0x20..=0x7e as `\xHH`; empty → `-`.
    Default,
    /// JSON string escapes; empty stays empty.
    Json,
    /// As is; empty → `-`.
    None,
}

impl Escape {
    /// Appends a value that is not text: bytes outside printable ASCII as `\xHH` (`\u00HH` in
    /// JSON, where nginx writes bytes over 0x7f as they are, which a text line cannot hold).
    pub fn append_bytes(self, value: &[u8], out: &mut String) {
        if value.is_empty() {
            if self != Self::Json {
                out.push('-');
            }
            return;
        }
        for &b in value {
            match self {
                Self::Json if b == b'"' || b == b'\\' => {
                    out.push('\\');
                    out.push(b as char);
                }
                Self::Json if !(0x20..=0x7e).contains(&b) => {
                    let _ = write!(out, "\\u{b:04x}");
                }
                Self::Default if b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b) => {
                    let _ = write!(out, "\\x{b:02X}");
                }
                _ => out.push(b as char),
            }
        }
    }

    pub fn append(self, value: &str, out: &mut String) {
        if value.is_empty() {
            if self != Self::Json {
                out.push('-');
            }
            return;
        }
        match self {
            Self::None => out.push_str(value),
            Self::Default => {
                for b in value.bytes() {
                    if b == b'"' || b == b'\\' || !(0x20..=0x7e).contains(&b) {
                        let _ = write!(out, "\\x{b:02X}");
                    } else {
                        out.push(b as char);
                    }
                }
            }
            Self::Json => {
                for c in value.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        '\n' => out.push_str("\\n"),
                        '\r' => out.push_str("\\r"),
                        '\t' => out.push_str("\\t"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
            }
        }
    }
}

/// Appends a displayable value (helper for [`Vars`] implementations).
pub fn append_display(out: &mut String, value: impl std::fmt::Display) {
    let _ = write!(out, "{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Vars for Fixed {
        fn append(&self, var: &Var, out: &mut String) {
            match var {
                Var::BinaryRemoteAddr => out.push_str("10.0.0.1"),
                Var::Scheme => out.push_str("http"),
                Var::Host => out.push_str("example.com"),
                Var::Header(h) if h == "x-id" => out.push('7'),
                _ => {}
            }
        }
    }

    #[test]
    fn renders_text_and_variables() {
        let t = Template::compile("$scheme://${host}/a-$http_x_id-$http_missing.").unwrap();
        assert_eq!(t.render(&Fixed), "http://example.com/a-7-.");
        assert!(!t.is_constant());
        assert!(Template::compile("plain").unwrap().is_constant());
    }

    #[test]
    fn log_escaping_follows_nginx() {
        let mut out = String::new();
        Escape::Default.append("a\"b\\c\u{1}é", &mut out);
        assert_eq!(out, "a\\x22b\\x5Cc\\x01\\xC3\\xA9");
        out.clear();
        Escape::Json.append("a\"b\n", &mut out);
        assert_eq!(out, "a\\\"b\\n");
        out.clear();
        Escape::Default.append("", &mut out);
        Escape::Json.append("", &mut out);
        Escape::None.append("", &mut out);
        assert_eq!(out, "--");
    }

    #[test]
    fn bytes_default_to_the_text_value() {
        let t = Template::compile("$scheme:$binary_remote_addr").unwrap();
        assert_eq!(t.render_bytes(&Fixed), b"http:10.0.0.1");
        assert_eq!(t.render(&Fixed), "http:10.0.0.1");
    }

    #[test]
    fn a_dollar_and_one_digit_is_a_capture_as_in_nginx() {
        let t = Template::compile("/$1/$23x/${host}").unwrap();
        let parts = [
            Part::Text("/".into()),
            Part::Var(Var::Capture(1)),
            Part::Text("/".into()),
            Part::Var(Var::Capture(2)),
            Part::Text("3x/".into()),
            Part::Var(Var::Host),
        ];
        assert_eq!(t.parts, parts);
        assert_eq!(
            Template::compile("${1}").unwrap_err(),
            "unknown \"1\" variable"
        );
        assert_eq!(
            Template::compile("$0").unwrap_err(),
            "unknown \"0\" variable"
        );
    }

    #[test]
    fn unknown_variables_are_errors_in_nginx_words() {
        assert_eq!(
            Template::compile("$nope").unwrap_err(),
            "unknown \"nope\" variable"
        );
        assert_eq!(
            Template::compile("${host").unwrap_err(),
            "the closing bracket in \"host\" variable is missing"
        );
    }
}
