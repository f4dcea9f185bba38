//! Where a `proxy_pass` with variables goes this time (nginx's `ngx_http_proxy_eval` and the
//! upstream lookup of `ngx_http_upstream_init_request`).
//!
//! The URL is rendered per request and read as `http://authority[/uri]`:
//!
//! | authority | goes to |
//! |---|---|
//! | an IP address, optional port (`10.0.0.1:8080`, `[::1]`) | that address (port 80 by default), no resolver needed |
//! | a name with no port that an `upstream {}` block has | that group, as a literal `proxy_pass http://name` |
//! | `host[:port]` that a literal `proxy_pass http://host[:port]` elsewhere made a group of | that group (port 80 by default) |
//! | any other name | the addresses the location's `resolver` gives (cached for their TTL or `valid=`); 502 "no resolver defined to resolve" without one, 502 "could not be resolved" when the lookup fails |
//!
//! A URL that cannot be read this way is a 500, as in nginx. Groups for IP addresses are made
//! on first use and kept for the snapshot's life (up to [`MAX_ADDRESS_GROUPS`]), so their
//! balancer and in-flight counts are shared by every request to that address; pooled
//! connections are the process's, keyed by address, as for any peer. A resolved name gets a
//! group of all its addresses (round robin, the next one tried on failure, as nginx's
//! per-request peers), kept while the answer stays the same.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use http::Uri;

use super::ProxyError;
use crate::FastMap;
use crate::config::model::{Resolver, Upstream};
use crate::pool::tls::{ConfiguredName, LocationTls, TlsTarget};
use crate::resolve::Dns;
use crate::snapshot::{Group, PassUri, Proxy};
use crate::upstream::PeerRegistry;
use crate::vars::{Template, Vars};

/// IP-address groups one snapshot keeps; past this, a request gets a group of its own (as
/// every request does in nginx), so a URL built from client input cannot grow memory.
pub const MAX_ADDRESS_GROUPS: usize = 1024;

/// `proxy_pass` with variables, compiled.
pub struct ProxyVars {
    pub url: Template,
    pub targets: Arc<Targets>,
    /// The location's `resolver`, and its client once first used.
    resolver: Option<Resolver>,
    dns: OnceLock<Arc<Dns>>,
    /// The location's `proxy_ssl_*` for a URL that renders to `https://`.
    pub tls: Option<LocationTls>,
}

impl ProxyVars {
    pub fn new(
        url: Template,
        targets: Arc<Targets>,
        resolver: Option<Resolver>,
        tls: Option<LocationTls>,
    ) -> Self {
        Self {
            url,
            targets,
            resolver,
            dns: OnceLock::new(),
            tls,
        }
    }

    /// Renders the URL for one request and finds its group. `Err`: the answer to give
    /// (500 for a URL that is not `http://authority[/uri]`, 502 for a name that cannot be
    /// resolved), to be logged by the caller.
    pub async fn resolve(&self, vars: &(dyn Vars + Sync)) -> Result<Proxy, ProxyError> {
        let url = self.url.render(vars);
        let target = Target::parse(&url).map_err(ProxyError::ProxyUrl)?;
        let default_port = if target.tls { 443 } else { 80 };
        let group = match target.ip {
            Some(ip) => {
                (self.targets).address(SocketAddr::new(ip, target.port.unwrap_or(default_port)))
            }
            None => match (self.targets)
                .named(target.host, target.port.or((target.tls).then_some(443)))
            {
                Some(group) => group,
                None => {
                    self.lookup(target.host, target.port.unwrap_or(default_port))
                        .await?
                }
            },
        };
        let tls = match (&self.tls, target.tls) {
            (_, false) => None,
            (None, true) => return Err(ProxyError::ProxyUrl(format!("no TLS for \"{url}\""))),
            (Some(LocationTls { tls, name }), true) => {
                let name = match name {
                    Some(ConfiguredName::Template(template)) => template.render(vars),
                    Some(ConfiguredName::Fixed(fixed)) => fixed.clone(),
                    // nginx: the resolved host, without a port.
                    None => target.host.to_owned(),
                };
                Some(TlsTarget::fixed(tls.clone(), &name))
            }
        };
        let uri = match target.uri {
            Some(uri) => PassUri::Whole(request_target(&uri)?),
            None => PassUri::Unchanged,
        };
        Ok(Proxy {
            group,
            proxy_host: target.host_header.to_owned(),
            uri,
            tls,
        })
    }
}

impl ProxyVars {
    /// The group of the addresses `host` has now, through the location's `resolver`.
    async fn lookup(&self, host: &str, port: u16) -> Result<Arc<Group>, ProxyError> {
        let Some(resolver) = &self.resolver else {
            return Err(ProxyError::NoResolver(host.to_owned()));
        };
        let dns = self.dns.get_or_init(|| Dns::shared(resolver));
        let answer =
            (dns.addrs(host).await).map_err(|e| ProxyError::Unresolved(host.to_owned(), e))?;
        let addrs: Vec<SocketAddr> = (answer.records.iter())
            .map(|&ip| SocketAddr::new(ip, port))
            .collect();
        Ok(self.targets.resolved(host, port, addrs))
    }
}

/// The groups a rendered authority can name, and the groups made for IP addresses.
pub struct Targets {
    /// `upstream {}` blocks by lower-case name (no port), and the groups of literal
    /// `proxy_pass http://host[:port]` by lower-case host and port (80 when not written).
    named: FastMap<(String, Option<u16>), Arc<Group>>,
    by_address: RwLock<FastMap<SocketAddr, Arc<Group>>>,
    /// Groups of resolved names (lower-case name, port), with the addresses they were made of.
    by_name: RwLock<FastMap<(String, u16), Arc<Group>>>,
    /// Peer state of the address groups (one peer each: no passive health, nothing worth
    /// carrying across a reload).
    registry: PeerRegistry,
}

impl Targets {
    /// The lookup table over a snapshot's `groups` (by upstream name).
    pub fn new(upstreams: &[Upstream], groups: &FastMap<String, Arc<Group>>) -> Self {
        let mut named = FastMap::default();
        for up in upstreams {
            let Some(group) = groups.get(&up.name) else {
                continue;
            };
            let key = if up.implicit {
                match Target::authority(&up.name, 80) {
                    // An address is always connected to directly, never looked up.
                    Ok(t) if t.ip.is_none() => {
                        (t.host.to_ascii_lowercase(), Some(t.port.unwrap_or(80)))
                    }
                    _ => continue,
                }
            } else {
                (up.name.to_ascii_lowercase(), None)
            };
            // nginx takes the first group that matches.
            named.entry(key).or_insert_with(|| group.clone());
        }
        Self {
            named,
            by_address: RwLock::default(),
            by_name: RwLock::default(),
            registry: PeerRegistry::new(),
        }
    }

    /// nginx's match: an `upstream` block only by a bare name, an implicit group by its port.
    fn named(&self, host: &str, port: Option<u16>) -> Option<Arc<Group>> {
        let host = host.to_ascii_lowercase();
        let found = match port {
            None => (self.named.get(&(host.clone(), None)))
                .or_else(|| self.named.get(&(host, Some(80)))),
            Some(port) => self.named.get(&(host, Some(port))),
        };
        found.cloned()
    }

    /// The group of `addrs`, the addresses `host` resolved to: the one made before while the
    /// answer is the same, a new one when it changed.
    fn resolved(&self, host: &str, port: u16, addrs: Vec<SocketAddr>) -> Arc<Group> {
        let key = (host.to_ascii_lowercase(), port);
        let same = |group: &Group| {
            let members = group.balancer();
            members.len() == addrs.len()
                && members
                    .peers()
                    .iter()
                    .zip(&addrs)
                    .all(|(p, a)| p.addr() == *a)
        };
        let read = self.by_name.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = read.get(&key).filter(|g| same(g)) {
            return group.clone();
        }
        drop(read);
        let name = format!("{host}:{port}");
        let spec = Upstream::implicit(&name, addrs, String::new());
        let group = Arc::new(Group::new(&spec, &self.registry, None));
        let mut groups = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
        if groups.len() < MAX_ADDRESS_GROUPS || groups.contains_key(&key) {
            groups.insert(key, group.clone());
        }
        group
    }

    /// The one-peer group for `addr`, made on first use.
    fn address(&self, addr: SocketAddr) -> Arc<Group> {
        let read = self
            .by_address
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = read.get(&addr) {
            return group.clone();
        }
        drop(read);
        let mut groups = self
            .by_address
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(group) = groups.get(&addr) {
            return group.clone();
        }
        let spec = Upstream::implicit(&addr.to_string(), vec![addr], String::new());
        let group = Arc::new(Group::new(&spec, &self.registry, None));
        if groups.len() < MAX_ADDRESS_GROUPS {
            groups.insert(addr, group.clone());
        }
        group
    }
}

/// A rendered `http://authority[/uri]`, read as `ngx_parse_url` reads it.
#[derive(Debug, PartialEq, Eq)]
struct Target<'u> {
    /// As written: `app`, `10.0.0.1`, `[::1]`.
    host: &'u str,
    ip: Option<IpAddr>,
    port: Option<u16>,
    /// `$proxy_host` and the `Host` sent: the authority without a port of 80.
    host_header: &'u str,
    /// From the first `/` (or `?`, then with a `/` put before it) to the end.
    uri: Option<String>,
    /// `https://`.
    tls: bool,
}

impl<'u> Target<'u> {
    /// `Err`: nginx's error-log text for the URL.
    fn parse(url: &'u str) -> Result<Self, String> {
        // `get`, not `[..n]`: a multibyte character may straddle the scheme's length.
        let scheme = |s: &str| {
            url.len() > s.len()
                && url
                    .get(..s.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(s))
        };
        if scheme("https://") {
            return Self::authority(&url[8..], 443);
        }
        if !scheme("http://") {
            return Err(format!("invalid URL prefix in \"{url}\""));
        }
        Self::authority(&url[7..], 80)
    }

    /// `authority[/uri]`, after the scheme (whose port is `default_port`).
    fn authority(rest: &'u str, default_port: u16) -> Result<Self, String> {
        let err = |what: &str| Err(format!("{what} in upstream \"{rest}\""));
        if rest
            .get(..5)
            .is_some_and(|p| p.eq_ignore_ascii_case("unix:"))
        {
            return err("unix domain sockets are not supported by imbang");
        }
        // An IPv6 address ends at `]`; its URI only at a `/`.
        let end = if rest.starts_with('[') {
            let Some(close) = rest.find(']') else {
                return err("invalid host");
            };
            close
                + 1
                + rest[close + 1..]
                    .find('/')
                    .unwrap_or(rest.len() - close - 1)
        } else {
            rest.find(['/', '?']).unwrap_or(rest.len())
        };
        let (authority, uri) = rest.split_at(end);
        let uri = match uri.as_bytes().first() {
            None => None,
            Some(b'?') => Some(format!("/{uri}")),
            Some(_) => Some(uri.to_owned()),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (inside, after) = v6.split_once(']').unwrap_or((v6, ""));
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or(())),
            };
            match port {
                Some(Err(())) => return err("invalid host"),
                Some(Ok(port)) => (&authority[..inside.len() + 2], Some(port)),
                None => (authority, None),
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        let port = match port {
            None => None,
            Some(text) => match text.parse::<u16>() {
                Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(n),
                _ => return err("invalid port"),
            },
        };
        if host.is_empty() || host == "[]" {
            return err("no host");
        }
        let ip = match host.strip_prefix('[') {
            Some(v6) => match v6[..v6.len() - 1].parse::<Ipv6Addr>() {
                Ok(ip) => Some(IpAddr::V6(ip)),
                Err(_) => return err("invalid IPv6 address"),
            },
            None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
        };
        let host_header = match port {
            None => host,
            Some(port) if port == default_port => host,
            Some(_) => authority,
        };
        Ok(Self {
            host,
            ip,
            port,
            host_header,
            uri,
            tls: default_port == 443,
        })
    }
}

/// The rendered URI part as a request target. nginx sends it byte for byte; bytes that may not
/// stand in a request line (a space from a decoded `$1`, say) are percent-encoded here instead.
fn request_target(uri: &str) -> Result<Uri, ProxyError> {
    let mut escaped = String::with_capacity(uri.len());
    for b in uri.bytes() {
        if b <= b' ' || b >= 0x7f || b"\"#<>\\^`{|}".contains(&b) {
            escaped.push_str(&format!("%{b:02X}"));
        } else {
            escaped.push(b as char);
        }
    }
    escaped
        .parse()
        .map_err(|_| ProxyError::ProxyUrl(format!("invalid URI \"{uri}\" to proxy")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<Target<'_>, String> {
        Target::parse(url)
    }

    #[test]
    fn urls_read_as_nginx_reads_them() {
        let t = target("http://App:8080/x?y").unwrap();
        assert_eq!(
            (t.host, t.ip, t.port, t.host_header, t.uri.as_deref()),
            ("App", None, Some(8080), "App:8080", Some("/x?y"))
        );
        let t = target("HTTP://10.0.0.1:80").unwrap();
        assert_eq!(
            (t.ip, t.port, t.host_header, t.uri),
            (
                Some("10.0.0.1".parse().unwrap()),
                Some(80),
                "10.0.0.1",
                None
            )
        );
        let t = target("http://[::1]:81/a").unwrap();
        assert_eq!(
            (t.host, t.ip, t.port, t.host_header, t.uri.as_deref()),
            (
                "[::1]",
                Some("::1".parse().unwrap()),
                Some(81),
                "[::1]:81",
                Some("/a")
            )
        );
        let t = target("http://[::1]").unwrap();
        assert_eq!((t.host_header, t.port), ("[::1]", None));
        // A query right after the authority: nginx puts a `/` before it.
        assert_eq!(
            target("http://app?a=1").unwrap().uri.as_deref(),
            Some("/?a=1")
        );
        // A colon after the URI started is not a port.
        let t = target("http://app/a:b").unwrap();
        assert_eq!((t.host, t.port), ("app", None));
        let t = target("https://App:443/x").unwrap();
        assert_eq!((t.host_header, t.port, t.tls), ("App", Some(443), true));
        assert_eq!(target("https://a:80").unwrap().host_header, "a:80");
        // Not dotted-quad: a name.
        assert_eq!(target("http://10.1:80").unwrap().ip, None);
    }

    #[test]
    fn bad_urls_get_nginx_s_words() {
        let cases = [
            ("ftp://a", "invalid URL prefix in \"ftp://a\""),
            ("http://", "invalid URL prefix in \"http://\""),
            ("http:///x", "no host in upstream \"/x\""),
            ("http://a:0/", "invalid port in upstream \"a:0/\""),
            ("http://a:x", "invalid port in upstream \"a:x\""),
            ("http://a:+80", "invalid port in upstream \"a:+80\""),
            ("http://[::1", "invalid host in upstream \"[::1\""),
            ("http://[::1]x", "invalid host in upstream \"[::1]x\""),
            (
                "http://[zz]:1",
                "invalid IPv6 address in upstream \"[zz]:1\"",
            ),
            (
                "http://unix:/tmp/s",
                "unix domain sockets are not supported by imbang in upstream \"unix:/tmp/s\"",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(target(url).unwrap_err(), want, "{url}");
        }
    }

    #[test]
    fn targets_keep_their_bytes_unless_a_request_line_cannot_carry_them() {
        let t = request_target("/a%20b/c d?x=\"1\"#f").unwrap();
        assert_eq!(t, "/a%20b/c%20d?x=%221%22%23f");
        assert_eq!(request_target("/é").unwrap(), "/%C3%A9");
    }
}
