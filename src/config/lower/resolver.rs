//! `resolver` and `resolver_timeout` (ngx_http_core_module in http, server and location;
//! ngx_http_upstream_module in `upstream`), and the `resolve` and `service=` parameters of an
//! upstream's `server` line (nginx ≥ 1.27.3, NGINX Plus). See docs/dns.md.
//!
//! An upstream follows the names of its `resolve` lines through its own `resolver`, or else the
//! http level's (as nginx takes the http block's core settings for upstreams); none is an error
//! as in nginx ("no resolver defined to resolve names at run time in upstream ..."). nginx also
//! requires a `zone` for `resolve`; imbang's peer state is always shared, so a missing `zone`
//! only warns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::super::ast::{Arg, Directive};
use super::super::model::{
    PeerSpec, ResolveSpec, Resolver, ResolverSpec, Upstream, UpstreamResolve,
};
use super::super::source::Span;
use super::super::values::{self, AddrError};
use super::{Frame, Lower};

/// nginx's default `resolver_timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// An upstream's own `resolver` lines and `resolve` names, until the http level's resolver is
/// known (upstream blocks are read before the http level's other directives).
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// Index of the upstream in the http block's list.
    upstream: usize,
    resolver: Option<Arc<ResolverSpec>>,
    timeout: Option<Duration>,
    names: Vec<ResolveSpec>,
    /// The `upstream` block, for errors about it.
    at: Option<Span>,
    has_zone: bool,
}

impl Pending {
    pub(super) fn new(upstream: usize, at: Span) -> Self {
        Self {
            upstream,
            at: Some(at),
            ..Self::default()
        }
    }
}

impl Lower<'_> {
    /// `resolver` or `resolver_timeout` at the http, server or location level (duplicates are
    /// refused by the caller, as nginx says "is duplicate").
    pub(super) fn resolver_setting(&mut self, d: &Directive, f: &mut Frame) {
        match d.name.as_str() {
            "resolver" => f.resolver = self.resolver_spec(d).map(Arc::new),
            _ => f.resolver_timeout = self.duration_arg(d, &d.args[0]),
        }
    }

    /// The same directives inside an `upstream` block.
    pub(super) fn upstream_resolver_setting(&mut self, d: &Directive, pending: &mut Pending) {
        match d.name.as_str() {
            "resolver" => pending.resolver = self.resolver_spec(d).map(Arc::new),
            "resolver_timeout" => pending.timeout = self.duration_arg(d, &d.args[0]),
            _ => pending.has_zone = true,
        }
    }

    /// `address[:port] ... [valid=time] [ipv4=on|off] [ipv6=on|off] [status_zone=zone]`, read
    /// as `ngx_resolver_create` reads it: a name is looked up now, as nginx looks it up.
    fn resolver_spec(&mut self, d: &Directive) -> Option<ResolverSpec> {
        let mut spec = ResolverSpec {
            servers: Vec::new(),
            valid: None,
            ipv4: true,
            ipv6: true,
        };
        let mut ok = true;
        for arg in &d.args {
            let v = arg.value.as_str();
            let flag = |text: &str| match text {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            let parsed = if let Some(t) = v.strip_prefix("valid=") {
                values::duration(t).map(|t| spec.valid = Some(t))
            } else if let Some(t) = v.strip_prefix("ipv4=") {
                flag(t).map(|on| spec.ipv4 = on)
            } else if let Some(t) = v.strip_prefix("ipv6=") {
                flag(t).map(|on| spec.ipv6 = on)
            } else if let Some(zone) = v.strip_prefix("status_zone=") {
                // NGINX Plus's statistics of the resolver: imbang keeps none.
                self.warn(
                    format!("\"status_zone={zone}\" of \"resolver\" has no effect in imbang"),
                    arg.span,
                );
                Some(())
            } else {
                match self.name_server(arg) {
                    Some(addrs) => {
                        spec.servers.extend(addrs);
                        Some(())
                    }
                    None => {
                        ok = false;
                        continue;
                    }
                }
            };
            if parsed.is_none() {
                self.invalid(format!("invalid parameter: {v}"), arg.span);
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        if !spec.ipv4 && !spec.ipv6 {
            self.invalid(
                "\"ipv4\" and \"ipv6\" cannot both be \"off\"".to_owned(),
                d.span,
            );
            return None;
        }
        if spec.servers.is_empty() {
            self.invalid("no name servers defined".to_owned(), d.span);
            return None;
        }
        Some(spec)
    }

    /// One name server: an address (port 53 unless given) or a name with its addresses.
    fn name_server(&mut self, arg: &Arg) -> Option<Vec<SocketAddr>> {
        let v = &arg.value;
        let why = match values::socket_addrs(v, 53, false) {
            Ok(addrs) => return Some(addrs),
            Err(AddrError::Unix) => "unix domain sockets are not supported",
            Err(AddrError::InvalidPort) => "invalid port",
            Err(AddrError::HostNotFound) => "host not found",
        };
        self.invalid(format!("{why} in resolver \"{v}\""), arg.span);
        None
    }

    /// Reads a `server` line's `resolve` and `service=` (nginx's `ngx_http_upstream_server`).
    /// `Ok(None)`: a line without `resolve`, or one with an address (which nginx never looks
    /// up again), to be added as fixed peers. `Err(())`: reported.
    pub(super) fn resolve_peer(
        &mut self,
        d: &Directive,
        template: &PeerSpec,
        resolve: bool,
        service: Option<&Arg>,
    ) -> Result<Option<ResolveSpec>, ()> {
        let name = &d.args[0];
        let text = name.value.as_str();
        if let Some(service) = service {
            let value = &service.value["service=".len()..];
            if value.is_empty() {
                self.invalid("service is empty".to_owned(), service.span);
                return Err(());
            }
            if !resolve {
                self.invalid(
                    format!("service upstream \"{text}\" requires \"resolve\" parameter"),
                    d.span,
                );
                return Err(());
            }
        }
        if !resolve {
            return Ok(None);
        }
        let (host, port) = match split_name(text) {
            Ok(parts) => parts,
            Err(why) => {
                self.invalid(format!("{why} in upstream \"{text}\""), name.span);
                return Err(());
            }
        };
        let is_address = host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[');
        let value = service.map(|s| &s.value["service=".len()..]);
        let Some(value) = value else {
            return Ok((!is_address).then(|| ResolveSpec {
                host: host.to_ascii_lowercase(),
                service: None,
                port: port.unwrap_or(80),
                template: template.clone(),
            }));
        };
        if port.is_some() {
            self.invalid(
                format!("service upstream \"{text}\" may not have port"),
                d.span,
            );
            return Err(());
        }
        if is_address {
            self.invalid(
                format!("service upstream \"{text}\" requires domain name"),
                d.span,
            );
            return Err(());
        }
        Ok(Some(ResolveSpec {
            host: host.to_ascii_lowercase(),
            service: Some(value.to_owned()),
            port: 0,
            template: template.clone(),
        }))
    }

    /// Gives each upstream with `resolve` lines its resolver: its own, or the http level's.
    pub(super) fn finish_upstream_resolvers(
        &mut self,
        upstreams: &mut [Upstream],
        http: &Frame,
        pending: Vec<Pending>,
    ) {
        for p in pending {
            if p.names.is_empty() {
                continue;
            }
            let up = &mut upstreams[p.upstream];
            let at = p.at.expect("an upstream's span");
            let Some(spec) = p.resolver.or_else(|| http.resolver.clone()) else {
                self.invalid(
                    format!(
                        "no resolver defined to resolve names at run time in upstream \"{}\"",
                        up.name
                    ),
                    at,
                );
                continue;
            };
            if !p.has_zone {
                self.warn(
                    format!(
                        "resolving names at run time requires upstream \"{}\" to be in shared memory in nginx (a \"zone\"); imbang's peer state is always shared",
                        up.name
                    ),
                    at,
                );
            }
            let timeout = p.timeout.or(http.resolver_timeout);
            up.resolve = Some(UpstreamResolve {
                resolver: Resolver {
                    spec,
                    timeout: timeout.unwrap_or(DEFAULT_TIMEOUT),
                },
                names: p.names,
            });
        }
    }
}

impl Pending {
    pub(super) fn push(&mut self, name: ResolveSpec) {
        self.names.push(name);
    }
}

impl Frame {
    /// The resolver in force at this level, if any.
    pub(super) fn resolver(&self) -> Option<Resolver> {
        self.resolver.clone().map(|spec| Resolver {
            spec,
            timeout: self.resolver_timeout.unwrap_or(DEFAULT_TIMEOUT),
        })
    }
}

/// `name[:port]` as nginx splits an upstream server's address: `Err` is nginx's reason.
fn split_name(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    if text.starts_with("unix:") {
        return Err("unix domain sockets are not supported by imbang yet");
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or("invalid host")?;
        let after = &rest[end + 1..];
        match after {
            "" => (&text[..end + 2], None),
            _ => (
                &text[..end + 2],
                Some(after.strip_prefix(':').ok_or("invalid host")?),
            ),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("invalid port"),
        },
    };
    Ok((host, port))
}
