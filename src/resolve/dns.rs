//! One `resolver` line as an asynchronous DNS client (nginx's `ngx_resolver_t`), on
//! hickory-resolver: exactly the name servers written (never `/etc/resolv.conf` or
//! `/etc/hosts`), answers cached for their TTL or for `valid=`, UDP first and the same server
//! over TCP when an answer comes back truncated, the next server when one does not answer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
    ServerOrderingStrategy,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{Name, ResolveError, TokioResolver};
use tokio::time::Instant;

use crate::config::model::Resolver;

/// How long nginx keeps a failed answer (`ngx_resolver`: 10s unless `valid=`).
const NEGATIVE_VALID: Duration = Duration::from_secs(10);

/// A DNS client for one `resolver` (+ `resolver_timeout`). Clients are shared: every level
/// and every snapshot with the same resolver uses one, so its cache survives a reload.
pub struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
    valid: Option<Duration>,
    /// The name servers, for messages.
    servers: Vec<SocketAddr>,
}

/// An answer and until when it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer<T> {
    pub records: T,
    pub valid_until: Instant,
}

/// SRV targets, and the errors of those that could not be looked up.
pub type SrvAnswer = (Answer<Vec<SrvTarget>>, Vec<String>);

/// One SRV record, its target looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrvTarget {
    /// The target name, as the record has it (without the final dot).
    pub name: String,
    pub port: u16,
    pub weight: u16,
    pub priority: u16,
    pub addrs: Vec<IpAddr>,
}

/// Why a name could not be resolved, as nginx's resolver says it: `(3: Host not found)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("({code}: {})", strerror(*.code))]
pub struct DnsError {
    /// nginx's code: the DNS response code (1 FORMERR … 5 REFUSED), or 110 for a timeout.
    pub code: u16,
}

impl DnsError {
    pub const TIMED_OUT: Self = Self { code: 110 };
    pub const NOT_FOUND: Self = Self { code: 3 };

    /// The name does not exist, or has no record of the kind asked for: nginx then empties
    /// a `resolve` server's peers (any other error keeps the last good ones).
    pub fn is_not_found(self) -> bool {
        self == Self::NOT_FOUND
    }

    fn from_hickory(e: &ResolveError) -> Self {
        let Some(proto) = e.proto() else {
            return Self { code: 2 };
        };
        match proto.kind() {
            // An empty answer (NOERROR, no records) is "Host not found" for nginx too.
            ProtoErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => Self::NOT_FOUND,
                code => Self {
                    code: u16::from(code),
                },
            },
            ProtoErrorKind::Timeout => Self::TIMED_OUT,
            _ if proto.is_io() || proto.is_no_connections() => Self::TIMED_OUT,
            _ => Self { code: 2 },
        }
    }
}

/// nginx's `ngx_resolver_strerror`.
fn strerror(code: u16) -> &'static str {
    match code {
        1 => "Format error",
        2 => "Server failure",
        3 => "Host not found",
        4 => "Unimplemented",
        5 => "Operation refused",
        110 => "Operation timed out",
        _ => "Unknown error",
    }
}

impl Dns {
    /// The client for `resolver`, shared with every other user of the same settings.
    pub fn shared(resolver: &Resolver) -> Arc<Dns> {
        static CLIENTS: Mutex<Option<HashMap<Resolver, Weak<Dns>>>> = Mutex::new(None);
        let mut clients = CLIENTS.lock().unwrap_or_else(PoisonError::into_inner);
        let clients = clients.get_or_insert_with(HashMap::new);
        clients.retain(|_, dns| dns.strong_count() > 0);
        if let Some(dns) = clients.get(resolver).and_then(Weak::upgrade) {
            return dns;
        }
        let dns = Arc::new(Self::new(resolver));
        clients.insert(resolver.clone(), Arc::downgrade(&dns));
        dns
    }

    fn new(resolver: &Resolver) -> Self {
        let spec = &resolver.spec;
        let mut config = ResolverConfig::new();
        for &addr in &spec.servers {
            // UDP first; the same server over TCP when the answer is truncated.
            config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
        }
        let mut opts = ResolverOpts::default();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.ndots = 0;
        opts.ip_strategy = match (spec.ipv4, spec.ipv6) {
            (true, true) => LookupIpStrategy::Ipv4AndIpv6,
            (false, _) => LookupIpStrategy::Ipv6Only,
            (true, false) => LookupIpStrategy::Ipv4Only,
        };
        // A server that does not answer within this is left for the next one (nginx resends
        // every 5s); `resolver_timeout` ends it all. Half of it, so a second server is asked
        // within the timeout.
        opts.timeout =
            (resolver.timeout / 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
        opts.attempts = 2;
        // In the order written, as nginx's round robin starts: statistics would reorder them.
        opts.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        opts.num_concurrent_reqs = 1;
        opts.cache_size = 1024;
        opts.positive_min_ttl = spec.valid;
        opts.positive_max_ttl = spec.valid;
        opts.negative_min_ttl = Some(spec.valid.unwrap_or(NEGATIVE_VALID));
        opts.negative_max_ttl = Some(spec.valid.unwrap_or(NEGATIVE_VALID));
        let resolver_built =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(opts)
                .build();
        Self {
            resolver: resolver_built,
            timeout: resolver.timeout,
            valid: spec.valid,
            servers: spec.servers.clone(),
        }
    }

    /// How long an answer that a name does not exist holds (`valid=`, or nginx's 10s).
    pub fn negative_valid(&self) -> Duration {
        self.valid.unwrap_or(NEGATIVE_VALID)
    }

    /// The name servers this client asks.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// `resolver_timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The addresses of `host` (A and/or AAAA records, as `ipv4=`/`ipv6=` say), from the
    /// cache while its TTL (or `valid=`) lasts.
    pub async fn addrs(&self, host: &str) -> Result<Answer<Vec<IpAddr>>, DnsError> {
        let name = fqdn(host)?;
        let lookup = tokio::time::timeout(self.timeout, self.resolver.lookup_ip(name))
            .await
            .map_err(|_| DnsError::TIMED_OUT)?
            .map_err(|e| DnsError::from_hickory(&e))?;
        let mut records: Vec<IpAddr> = lookup.iter().collect();
        if records.is_empty() {
            return Err(DnsError::NOT_FOUND);
        }
        records.sort();
        records.dedup();
        Ok(Answer {
            records,
            valid_until: Instant::from_std(lookup.valid_until()),
        })
    }

    /// The SRV records of `name` (`_http._tcp.app.internal`) with their targets' addresses.
    /// A target that cannot be resolved is left out, its error in the second part (nginx logs
    /// it); valid until the earliest expiry of the records used.
    pub async fn srv(&self, name: &str) -> Result<SrvAnswer, (DnsError, Vec<String>)> {
        let fq = fqdn(name).map_err(|e| (e, Vec::new()))?;
        let lookup = tokio::time::timeout(self.timeout, self.resolver.srv_lookup(fq))
            .await
            .map_err(|_| (DnsError::TIMED_OUT, Vec::new()))?
            .map_err(|e| (DnsError::from_hickory(&e), Vec::new()))?;
        let mut valid_until = Instant::from_std(lookup.as_lookup().valid_until());
        // The targets are looked up at once.
        let records: Vec<_> = lookup.iter().collect();
        let answers = futures_util::future::join_all(records.iter().map(|srv| async move {
            let target = srv.target().to_ascii();
            let target = target.trim_end_matches('.').to_owned();
            let answer = self.addrs(&target).await;
            (target, answer)
        }))
        .await;
        let mut targets = Vec::new();
        let mut failed = Vec::new();
        for (srv, (target, answer)) in records.iter().zip(answers) {
            match answer {
                Ok(answer) => {
                    valid_until = valid_until.min(answer.valid_until);
                    targets.push(SrvTarget {
                        name: target,
                        port: srv.port(),
                        weight: srv.weight(),
                        priority: srv.priority(),
                        addrs: answer.records,
                    });
                }
                Err(e) => failed.push(format!("{target} could not be resolved {e}")),
            }
        }
        if targets.is_empty() && !failed.is_empty() {
            return Err((DnsError::NOT_FOUND, failed));
        }
        targets.sort_by(|a, b| (a.priority, &a.name, a.port).cmp(&(b.priority, &b.name, b.port)));
        let answer = Answer {
            records: targets,
            valid_until,
        };
        Ok((answer, failed))
    }
}

/// `host` as an absolute name (imbang has no search domains).
fn fqdn(host: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(host).map_err(|_| DnsError::NOT_FOUND)?;
    name.set_fqdn(true);
    Ok(name)
}
