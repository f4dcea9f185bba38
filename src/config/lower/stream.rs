//! `stream { }`: nginx's TCP load balancing (ngx_stream_core, proxy, upstream, map, log,
//! access, return and set modules), lowered into [`Stream`]. Upstream blocks are read by the
//! same code as http's ([`Lower::upstream`]): the balancing methods and `server` parameters
//! are the same; what only http's allows is refused here.

use std::collections::HashMap;
use std::time::Duration;

use super::super::ast::Directive;
use super::super::directives::Contexts;
use super::super::error::ErrorKind;
use super::super::model::*;
use super::super::values::{self, AddrError};
use super::{Lower, Seen, Upstreams};

/// Settings a stream `server` inherits from `stream` (`None`: not set at this level).
#[derive(Clone, Default)]
struct StreamFrame {
    access: Option<Vec<AccessRule>>,
    access_log: Option<Vec<AccessLogSpec>>,
    connect_timeout: Option<Duration>,
    timeout: Option<Duration>,
    next_upstream: Option<bool>,
    next_upstream_tries: Option<u32>,
    next_upstream_timeout: Option<Option<Duration>>,
    buffer_size: Option<usize>,
    half_close: Option<bool>,
    upload_rate: Option<u64>,
    download_rate: Option<u64>,
    tcp_nodelay: Option<bool>,
    bind: Option<Option<String>>,
    socket_keepalive: Option<bool>,
    preread_buffer_size: Option<usize>,
    preread_timeout: Option<Duration>,
    requests: Option<u64>,
    responses: Option<u64>,
    health_check_timeout: Option<Duration>,
    send_proxy_protocol: Option<bool>,
    proxy_protocol_timeout: Option<Duration>,
    ssl_preread: Option<bool>,
    realip_from: Option<Vec<AccessRule>>,
}

impl StreamFrame {
    fn inherit(self, parent: &StreamFrame) -> StreamFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                StreamFrame { $($field: self.$field.or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(
            access,
            access_log,
            connect_timeout,
            timeout,
            next_upstream,
            next_upstream_tries,
            next_upstream_timeout,
            buffer_size,
            half_close,
            upload_rate,
            download_rate,
            tcp_nodelay,
            bind,
            socket_keepalive,
            preread_buffer_size,
            preread_timeout,
            requests,
            responses,
            health_check_timeout,
            send_proxy_protocol,
            proxy_protocol_timeout,
            ssl_preread,
            realip_from,
        )
    }
}

/// Directives of http's `upstream` that stream's has not.
const HTTP_ONLY_IN_UPSTREAM: &[&str] = &[
    "ip_hash",
    "keepalive",
    "keepalive_timeout",
    "keepalive_requests",
    "keepalive_time",
    "queue",
    "resolver",
    "resolver_timeout",
];

impl Lower<'_> {
    /// `stream { ... }`.
    pub(super) fn stream(&mut self, ds: &[Directive]) -> Stream {
        // stream has names of its own: log formats, maps and upstream groups are not http's.
        let http_formats = std::mem::take(&mut self.log_formats);
        let http_maps = std::mem::take(&mut self.maps);
        let http_buffers = std::mem::take(&mut self.log_buffers);
        let http_pending = std::mem::take(&mut self.resolve_pending);
        let mut stream = Stream::default();
        let mut ups = Upstreams::default();
        let mut frame = StreamFrame::default();
        let mut seen = Seen::default();
        for d in ds.iter().filter(|d| d.name == "log_format") {
            if self.check(d, Contexts::STREAM).is_some() {
                self.log_format(d);
            }
        }
        for d in ds.iter().filter(|d| d.name == "upstream") {
            if self.check(d, Contexts::STREAM).is_some() {
                self.stream_upstream(d, &mut ups);
            }
        }
        let mut matches = HashMap::new();
        for d in ds.iter().filter(|d| d.name == "match") {
            if self.check(d, Contexts::STREAM).is_some() {
                self.stream_match(d, &mut matches);
            }
        }
        let mut servers = Vec::new();
        for d in ds
            .iter()
            .filter(|d| !matches!(d.name.as_str(), "log_format" | "upstream" | "match"))
        {
            let Some(spec) = self.check(d, Contexts::STREAM) else {
                continue;
            };
            match d.name.as_str() {
                "server" => servers.push(d),
                "map" => self.map_block(d),
                "error_log" => stream.error_log.extend(self.error_log(d)),
                _ => {
                    if spec.effect == super::Effect::Acts {
                        self.stream_setting(d, spec, &mut frame, &mut seen);
                    }
                }
            }
        }
        for d in servers {
            let cx = (&frame, &matches);
            if let Some(server) = self.stream_server(d, cx, &mut ups, &mut stream) {
                stream.servers.push(server);
            }
        }
        self.check_stream_listens(&stream.servers);
        // Stream upstreams with `resolve` were refused above: nothing is pending.
        self.resolve_pending = http_pending;
        stream.upstreams = ups.groups;
        stream.maps = std::mem::replace(&mut self.maps, http_maps);
        stream.log_buffers = std::mem::replace(&mut self.log_buffers, http_buffers);
        self.log_formats = http_formats;
        stream
    }

    fn stream_upstream(&mut self, d: &Directive, ups: &mut Upstreams) {
        let mut ok = true;
        for c in d.block.as_deref().unwrap_or_default() {
            if HTTP_ONLY_IN_UPSTREAM.contains(&c.name.as_str()) {
                self.error(ErrorKind::NotAllowedHere(c.name.clone()), c.span);
                ok = false;
            }
            if c.name == "server" {
                if let Some(addr) = c.args.first() {
                    if c.args[1..].iter().any(|a| a.value == "resolve") {
                        self.invalid(
                            "\"resolve\" in a stream upstream is not supported by imbang yet"
                                .to_owned(),
                            c.span,
                        );
                        ok = false;
                    } else if !addr.value.starts_with("unix:") && !has_port(&addr.value) {
                        // nginx's stream wants the port: there is no default protocol port.
                        self.invalid(format!("no port in upstream \"{}\"", addr.value), addr.span);
                        ok = false;
                    }
                }
            }
        }
        if ok {
            // stream's `least_time connect|first_byte|last_byte`: imbang's "header" timing is a
            // stream peer's time to connect, which also stands for `first_byte` (docs/stream.md).
            let mut d = d.clone();
            for c in d.block.iter_mut().flatten() {
                if c.name != "least_time" {
                    continue;
                }
                if let Some(mode) = c.args.first_mut() {
                    match mode.value.as_str() {
                        "connect" | "first_byte" => mode.value = "header".to_owned(),
                        "last_byte" => {}
                        _ => {
                            self.invalid(
                                format!("invalid parameter \"{}\"", mode.value),
                                mode.span,
                            );
                            return;
                        }
                    }
                }
            }
            let d = &d;
            self.upstream(d, ups);
            // Nothing of stream's is resolved at run time.
            self.resolve_pending.clear();
        }
    }

    fn stream_setting(
        &mut self,
        d: &Directive,
        spec: &'static super::Spec,
        f: &mut StreamFrame,
        seen: &mut Seen,
    ) {
        let args = &d.args;
        match d.name.as_str() {
            "allow" | "deny" => {
                if let Some(rule) = self.access_rule(d) {
                    f.access.get_or_insert_with(Vec::new).push(rule);
                }
                return;
            }
            "set_real_ip_from" => {
                let from = self.real_ip_from(d).into_iter().map(|net| AccessRule {
                    allow: true,
                    net: Some(net),
                });
                f.realip_from.get_or_insert_with(Vec::new).extend(from);
                return;
            }
            "access_log" => {
                let logs = f.access_log.get_or_insert_with(Vec::new);
                if args[0].value == "off" {
                    if args.len() > 1 {
                        self.error(ErrorKind::Arity(d.name.clone()), d.span);
                    }
                    logs.clear();
                } else if args.len() < 2 {
                    // stream has no `combined`: the format must be named.
                    self.error(ErrorKind::Arity(d.name.clone()), d.span);
                } else if let Some(spec) = self.access_log(d) {
                    f.access_log.get_or_insert_with(Vec::new).push(spec);
                }
                return;
            }
            _ => {}
        }
        if !self.once(seen, spec, d) {
            return;
        }
        let flag = || values::flag(&args[0].value);
        match d.name.as_str() {
            "proxy_connect_timeout" => f.connect_timeout = self.duration_arg(d, &args[0]),
            "proxy_timeout" => f.timeout = self.duration_arg(d, &args[0]),
            "preread_timeout" => f.preread_timeout = self.duration_arg(d, &args[0]),
            "proxy_next_upstream" => f.next_upstream = flag(),
            "proxy_half_close" => f.half_close = flag(),
            "tcp_nodelay" => f.tcp_nodelay = flag(),
            "proxy_socket_keepalive" => f.socket_keepalive = flag(),
            "proxy_requests" => f.requests = self.number_arg(d, &args[0]),
            "health_check_timeout" => f.health_check_timeout = self.duration_arg(d, &args[0]),
            "proxy_protocol_timeout" => f.proxy_protocol_timeout = self.duration_arg(d, &args[0]),
            "proxy_protocol" => f.send_proxy_protocol = flag(),
            "ssl_preread" => f.ssl_preread = flag(),
            "proxy_responses" => f.responses = self.number_arg(d, &args[0]),
            "proxy_next_upstream_tries" => {
                f.next_upstream_tries = self.number_arg(d, &args[0]).map(|n| n as u32);
            }
            "proxy_next_upstream_timeout" => {
                f.next_upstream_timeout = self
                    .duration_arg(d, &args[0])
                    .map(|t| (!t.is_zero()).then_some(t));
            }
            "proxy_buffer_size" | "preread_buffer_size" => {
                match values::size(&args[0].value).filter(|&n| n <= 1 << 30) {
                    // A buffer of 0 would read nothing; nginx needs at least a byte too.
                    Some(n) if n > 0 || d.name == "preread_buffer_size" => {
                        if d.name == "proxy_buffer_size" {
                            f.buffer_size = Some(n as usize);
                        } else {
                            f.preread_buffer_size = Some(n as usize);
                        }
                    }
                    _ => self.invalid_value(d, &args[0]),
                }
            }
            "proxy_upload_rate" | "proxy_download_rate" => match values::size(&args[0].value) {
                Some(n) if d.name == "proxy_upload_rate" => f.upload_rate = Some(n),
                Some(n) => f.download_rate = Some(n),
                None => self.invalid_value(d, &args[0]),
            },
            "proxy_bind" => {
                if args[0].value == "off" {
                    if args.len() > 1 {
                        self.error(ErrorKind::Arity(d.name.clone()), d.span);
                    }
                    f.bind = Some(None);
                } else if args.len() > 1 {
                    self.invalid(
                        format!(
                            "the \"{}\" parameter of \"proxy_bind\" is not supported by imbang yet",
                            args[1].value
                        ),
                        args[1].span,
                    );
                } else if !args[0].value.contains('$')
                    && args[0].value.parse::<std::net::IpAddr>().is_err()
                {
                    self.invalid(
                        format!("invalid address \"{}\" in \"proxy_bind\"", args[0].value),
                        args[0].span,
                    );
                } else {
                    f.bind = Some(Some(args[0].value.clone()));
                }
            }
            _ => {}
        }
    }

    fn stream_server(
        &mut self,
        d: &Directive,
        (parent, matches): (&StreamFrame, &HashMap<String, StreamCheck>),
        ups: &mut Upstreams,
        stream: &mut Stream,
    ) -> Option<StreamServer> {
        let mut checks = Vec::new();
        let mut own = StreamFrame::default();
        let mut seen = Seen::default();
        let mut listens = Vec::new();
        let mut action = None;
        let mut sets = Vec::new();
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::STREAM_SERVER) else {
                continue;
            };
            match c.name.as_str() {
                "listen" => self.stream_listen(c, &mut listens),
                "health_check" => checks.push(c),
                "set" => sets.extend(self.set(c)),
                "error_log" => stream.error_log.extend(self.error_log(c)),
                "proxy_pass" | "return" => {
                    if action.is_some() {
                        self.error(ErrorKind::Duplicate(c.name.clone()), c.span);
                        continue;
                    }
                    action = self.stream_action(c, ups);
                }
                _ if spec.effect == super::Effect::Acts => {
                    self.stream_setting(c, spec, &mut own, &mut seen);
                }
                _ => {}
            }
        }
        if listens.is_empty() {
            self.invalid("no \"listen\" is defined for server".to_owned(), d.span);
            return None;
        }
        if action.is_none() {
            self.invalid(
                "no handler for server: \"proxy_pass\" or \"return\" is needed".to_owned(),
                d.span,
            );
            return None;
        }
        let f = own.inherit(parent);
        for c in checks {
            let group = match &action {
                Some(StreamAction::Proxy(group)) => group.clone(),
                _ => {
                    self.invalid(
                        "\"health_check\" requires \"proxy_pass\" to an upstream group in the same server".to_owned(),
                        c.span,
                    );
                    continue;
                }
            };
            let timeout = f.health_check_timeout.unwrap_or(Duration::from_secs(5));
            if let Some(check) = self.stream_health_check(c, group, timeout, matches) {
                stream.health_checks.push(check);
            }
        }
        Some(StreamServer {
            listens,
            action,
            sets,
            access: f.access.unwrap_or_default(),
            access_log: f.access_log.unwrap_or_default(),
            connect_timeout: f.connect_timeout.unwrap_or(Duration::from_secs(60)),
            timeout: f.timeout.unwrap_or(Duration::from_secs(600)),
            next_upstream: f.next_upstream.unwrap_or(true),
            next_upstream_tries: f.next_upstream_tries.unwrap_or(0),
            next_upstream_timeout: f.next_upstream_timeout.flatten(),
            buffer_size: f.buffer_size.unwrap_or(16 * 1024),
            half_close: f.half_close.unwrap_or(false),
            upload_rate: f.upload_rate.unwrap_or(0),
            download_rate: f.download_rate.unwrap_or(0),
            tcp_nodelay: f.tcp_nodelay.unwrap_or(true),
            bind: f.bind.flatten(),
            socket_keepalive: f.socket_keepalive.unwrap_or(false),
            preread_buffer_size: f.preread_buffer_size.unwrap_or(16 * 1024),
            preread_timeout: f.preread_timeout.unwrap_or(Duration::from_secs(30)),
            send_proxy_protocol: f.send_proxy_protocol.unwrap_or(false),
            proxy_protocol_timeout: f.proxy_protocol_timeout.unwrap_or(Duration::from_secs(30)),
            ssl_preread: f.ssl_preread.unwrap_or(false),
            realip_from: f.realip_from.unwrap_or_default(),
            requests: f.requests.unwrap_or(0),
            responses: f.responses,
            location: self.at(d.span),
        })
    }

    /// `proxy_pass group|address|$var;` or `return value;`.
    fn stream_action(&mut self, d: &Directive, ups: &mut Upstreams) -> Option<StreamAction> {
        let arg = &d.args[0];
        if d.name == "return" {
            return Some(StreamAction::Return(arg.value.clone()));
        }
        let text = arg.value.as_str();
        if text.contains('$') {
            return Some(StreamAction::ProxyVars(text.to_owned()));
        }
        if text.starts_with("unix:") {
            self.invalid(
                "unix domain sockets are not supported by imbang yet".to_owned(),
                arg.span,
            );
            return None;
        }
        if ups.by_name.contains_key(text) {
            return Some(StreamAction::Proxy(text.to_owned()));
        }
        // A name without a port must be an upstream block (nginx: "no port in upstream").
        if !has_port(text) {
            self.invalid(format!("no port in upstream \"{text}\""), arg.span);
            return None;
        }
        match values::socket_addrs(text, 0, false) {
            Ok(addrs) => {
                ups.by_name.insert(text.to_owned(), ups.groups.len());
                ups.groups
                    .push(Upstream::implicit(text, addrs, self.at(d.span)));
                Some(StreamAction::Proxy(text.to_owned()))
            }
            Err(AddrError::InvalidPort) => {
                self.invalid(format!("invalid port in upstream \"{text}\""), arg.span);
                None
            }
            Err(_) => {
                let host = text.rsplit_once(':').map_or(text, |(h, _)| h);
                self.error(ErrorKind::HostNotFound(host.to_owned()), d.span);
                None
            }
        }
    }

    /// `listen address:port [reuseport] [backlog=n] ...` in stream (nginx: a port is needed).
    fn stream_listen(&mut self, d: &Directive, listens: &mut Vec<StreamListen>) {
        let addr_arg = &d.args[0];
        let addrs = match values::socket_addrs(&addr_arg.value, 0, true) {
            Ok(addrs) if has_port(&addr_arg.value) || addrs[0].port() != 0 => addrs,
            Ok(_) => {
                self.invalid(
                    format!(
                        "no port in \"{}\" of the \"listen\" directive",
                        addr_arg.value
                    ),
                    addr_arg.span,
                );
                return;
            }
            Err(e) => {
                self.listen_addr_error(e, addr_arg);
                return;
            }
        };
        let mut reuseport = false;
        let mut backlog = None;
        let mut udp = false;
        let mut proxy_protocol = false;
        for p in &d.args[1..] {
            let (name, value) = p.value.split_once('=').unwrap_or((p.value.as_str(), ""));
            match name {
                "reuseport" => reuseport = true,
                "backlog" => match value.parse::<i32>() {
                    Ok(n) if n != 0 => backlog = Some(n),
                    _ => self.invalid(format!("invalid backlog \"{value}\""), p.span),
                },
                "udp" => udp = true,
                "proxy_protocol" => proxy_protocol = true,
                "ssl" => self.invalid(
                    format!(
                        "the \"{}\" parameter of \"listen\" in stream is not supported by imbang yet",
                        p.value
                    ),
                    p.span,
                ),
                "rcvbuf" | "sndbuf" | "bind" | "ipv6only" | "so_keepalive" | "fastopen"
                | "setfib" | "accept_filter" | "deferred" => self.warn(
                    format!("the \"{name}\" parameter of \"listen\" has no effect in imbang"),
                    p.span,
                ),
                _ => self.invalid(format!("invalid parameter \"{}\"", p.value), p.span),
            }
        }
        for addr in addrs {
            listens.push(StreamListen {
                addr,
                reuseport,
                backlog,
                udp,
                proxy_protocol,
                location: self.at(d.span),
            });
        }
    }

    /// `match name { send "..."; expect "..." | expect ~ "regex"; }` of stream.
    fn stream_match(&mut self, d: &Directive, matches: &mut HashMap<String, StreamCheck>) {
        let name = d.args[0].value.clone();
        if matches.contains_key(&name) {
            return self.invalid(format!("duplicate match \"{name}\""), d.span);
        }
        let mut check = StreamCheck::default();
        let mut seen = Seen::default();
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = self.check(c, Contexts::STREAM_MATCH) else {
                continue;
            };
            if !self.once(&mut seen, spec, c) {
                continue;
            }
            match (c.name.as_str(), c.args.len()) {
                ("send", _) => check.send = unescape(&c.args[0].value),
                ("expect", 1) => {
                    check.expect = Some(StreamExpect::Prefix(unescape(&c.args[0].value)));
                }
                ("expect", _) if c.args[0].value == "~" => {
                    check.expect = self
                        .regex_arg(&c.args[1], regex::bytes::Regex::new)
                        .map(StreamExpect::Regex);
                }
                _ => self.invalid_value(c, &c.args[0]),
            }
        }
        matches.insert(name, check);
    }

    /// `health_check [interval=] [jitter=] [fails=] [passes=] [match=] [port=]
    /// [mandatory [persistent]]` in a stream server that proxies to `group`.
    fn stream_health_check(
        &mut self,
        d: &Directive,
        group: String,
        timeout: Duration,
        matches: &HashMap<String, StreamCheck>,
    ) -> Option<HealthCheck> {
        let mut check = HealthCheck {
            upstream: group,
            uri: String::new(),
            port: None,
            interval: Duration::from_secs(5),
            jitter: Duration::ZERO,
            fails: 1,
            passes: 1,
            mandatory: false,
            persistent: false,
            matcher: None,
            host: String::new(),
            http10: false,
            tls: None,
            connect_timeout: timeout,
            send_timeout: timeout,
            read_timeout: timeout,
            location: self.at(d.span),
            stream: Some(StreamCheck::default()),
        };
        let mut ok = true;
        for p in &d.args {
            let (key, value) = p.value.split_once('=').unwrap_or((p.value.as_str(), ""));
            let has_value = p.value.contains('=');
            let good = match super::check_parameter(&mut check, key, has_value, value) {
                Some(good) => good,
                None => match (key, has_value) {
                    ("match", true) => match matches.get(value) {
                        Some(m) => {
                            check.stream = Some(m.clone());
                            true
                        }
                        None => {
                            self.invalid(format!("match \"{value}\" is not defined"), p.span);
                            ok = false;
                            continue;
                        }
                    },
                    ("udp", false) => {
                        self.invalid(
                            "\"udp\" health checks are not supported by imbang yet".to_owned(),
                            p.span,
                        );
                        ok = false;
                        continue;
                    }
                    _ => false,
                },
            };
            if !good {
                self.invalid(format!("invalid parameter \"{}\"", p.value), p.span);
                ok = false;
            }
        }
        (ok && self.persistent_has_mandatory(&check, d)).then_some(check)
    }

    /// nginx: `duplicate "0.0.0.0:12345" address and port pair` among stream servers.
    fn check_stream_listens(&mut self, servers: &[StreamServer]) {
        let mut seen: HashMap<(std::net::SocketAddr, bool), ()> = HashMap::new();
        for l in servers.iter().flat_map(|s| &s.listens) {
            if seen.insert((l.addr, l.udp), ()).is_some() {
                self.errors.push(super::ConfigError::new(
                    ErrorKind::Invalid(format!("duplicate \"{}\" address and port pair", l.addr)),
                    Some(l.location.clone()),
                ));
            }
        }
    }
}

/// Whether `text` (`host:port`, `[v6]:port`, `port`) names a port.
fn has_port(text: &str) -> bool {
    match text.strip_prefix('[') {
        Some(v6) => v6
            .split_once(']')
            .is_some_and(|(_, after)| after.starts_with(':')),
        None => text.contains(':') || text.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// A `send`/`expect` string with NGINX Plus's `\\xHH` escapes decoded (the parser already
/// decoded `\\r`, `\\n`, `\\t` and quotes).
fn unescape(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let Some(hex) = text.get(i + 2..i + 4)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}
