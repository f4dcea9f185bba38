//! DNS at run time: the `resolver` directive's client, and upstream groups whose peers follow
//! the A/AAAA or SRV records of their `server name resolve` lines.
//!
//! | module      | holds                                                                   |
//! |-------------|-------------------------------------------------------------------------|
//! | [`dns`]     | [`Dns`]: one `resolver` as an async client (hickory-resolver), shared   |
//! | [`members`] | [`Followed`]: a group's peers as the last answers say; [`Members`]: one request's view |
//! | this one    | [`Following`]: a task per (group, name) that re-resolves when the answer expires |
//!
//! A name is looked up again when its answer's TTL (or the resolver's `valid=`) runs out. A
//! new answer changes the group's peers at once; a failed lookup keeps the last good ones
//! and is tried again after `resolver_timeout` (at least a second), logged in nginx's words:
//! `app.internal could not be resolved (110: Operation timed out)`. As in nginx, an answer
//! that the name does not exist (or has no address) empties the line's peers.
//!
//! The last answers outlive a reload: a snapshot's groups start with the answers known for
//! the same (upstream, name), and names never looked up are looked up before the snapshot goes
//! in force, so a reload that adds a `resolve` line opens no window of 502s.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::model::ResolveSpec;
use crate::log;
use crate::snapshot::Snapshot;
use crate::upstream::PeerRegistry;

pub mod dns;
pub mod members;

pub use dns::{Dns, DnsError};
pub use members::{Followed, Found, Members};

/// The shortest wait before a name is looked up again (an answer with TTL 0, a failure with a
/// shorter `resolver_timeout`), as nginx waits at least a second.
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// A line's identity across reloads: its upstream and what it looks up.
type Key = (String, String, Option<String>, u16);

fn key(upstream: &str, line: &ResolveSpec) -> Key {
    (
        upstream.to_owned(),
        line.host.clone(),
        line.service.clone(),
        line.port,
    )
}

/// The last good answer of a line, and until when it holds.
#[derive(Clone, Debug)]
struct Known {
    found: Vec<Found>,
    valid_until: Instant,
}

/// Keeps the groups of the snapshot in force following their names.
pub struct Following {
    registry: Arc<PeerRegistry>,
    known: Mutex<HashMap<Key, Known>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Called after a group's membership changed (the server reconciles health checks).
    on_change: Mutex<Option<Arc<dyn Fn() + Send + Sync>>>,
}

impl Following {
    pub fn new(registry: Arc<PeerRegistry>) -> Arc<Self> {
        Arc::new(Self {
            registry,
            known: Mutex::default(),
            tasks: Mutex::default(),
            on_change: Mutex::default(),
        })
    }

    /// Sets what runs after a group's peers changed.
    pub fn on_change(&self, f: Arc<dyn Fn() + Send + Sync>) {
        *self
            .on_change
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    /// Before `snapshot` goes in force: its groups get the last answers known for their lines;
    /// lines never answered are looked up now, all at once, each bounded by its
    /// `resolver_timeout`.
    pub async fn prepare(&self, snapshot: &Snapshot) {
        let mut lookups = Vec::new();
        for group in snapshot.groups() {
            let Some(followed) = group.followed() else {
                continue;
            };
            for (i, line) in followed.names().iter().enumerate() {
                let known = self.known(&key(followed.name(), line));
                match known {
                    Some(k) => {
                        followed.set(i, k.found, &self.registry);
                    }
                    None => lookups.push((followed.clone(), i)),
                }
            }
        }
        let lookups = lookups.into_iter().map(|(followed, i)| async move {
            let dns = dns_of(&followed);
            self.refresh(&followed, i, &dns).await;
        });
        futures_util::future::join_all(lookups).await;
    }

    /// Follows the lines of `snapshot` (in force now) from here on; the tasks that followed
    /// the previous snapshot's stop.
    pub fn start(self: &Arc<Self>, snapshot: &Snapshot) {
        let mut tasks = Vec::new();
        let mut lines = std::collections::HashSet::new();
        for group in snapshot.groups() {
            // Groups that follow the API alone (a `zone`, no `resolve` line) have no names.
            let Some(followed) = group.followed().filter(|f| !f.names().is_empty()) else {
                continue;
            };
            let dns = dns_of(followed);
            for i in 0..followed.names().len() {
                lines.insert(key(followed.name(), &followed.names()[i]));
                let next = self
                    .known(&key(followed.name(), &followed.names()[i]))
                    .map_or_else(Instant::now, |k| k.valid_until);
                let task = follow(Arc::downgrade(self), followed.clone(), i, dns.clone(), next);
                tasks.push(tokio::spawn(task));
            }
        }
        // Answers of lines no longer configured are forgotten.
        (self.known.lock().unwrap_or_else(PoisonError::into_inner))
            .retain(|k, _| lines.contains(k));
        let old = std::mem::replace(
            &mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner),
            tasks,
        );
        for task in old {
            task.abort();
        }
    }

    /// Stops every task (the server stops).
    pub fn stop(&self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }

    /// Lines followed now.
    pub fn count(&self) -> usize {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn known(&self, key: &Key) -> Option<Known> {
        let known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        known.get(key).cloned()
    }

    /// Looks line `i` of `followed` up once and applies the answer; returns when to look again.
    async fn refresh(&self, followed: &Followed, i: usize, dns: &Dns) -> Instant {
        let line = &followed.names()[i];
        let (found, next) = match lookup(dns, line).await {
            Ok((found, valid_until)) => (found, valid_until),
            Err(e) if e.is_not_found() => {
                // nginx: NXDOMAIN empties the line's peers, until the next lookup.
                let retry = Instant::now() + dns.negative_valid();
                (Vec::new(), retry)
            }
            Err(_) => {
                let retry = Instant::now() + dns.timeout().max(MIN_INTERVAL);
                return retry; // the last good answer stays
            }
        };
        let next = next.max(Instant::now() + MIN_INTERVAL);
        let changed = followed.set(i, found.clone(), &self.registry);
        self.known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                key(followed.name(), line),
                Known {
                    found,
                    valid_until: next,
                },
            );
        if changed {
            log!(
                Info,
                "upstream \"{}\": {} now has {}",
                followed.name(),
                line.query_name(),
                describe(&followed.found(i).unwrap_or_default())
            );
            let hook = self
                .on_change
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Some(hook) = hook {
                hook();
            }
        }
        next
    }
}

/// The task that follows line `i` of `followed`: looks it up at `next`, then whenever its
/// answer expires.
async fn follow(
    following: Weak<Following>,
    followed: Arc<Followed>,
    i: usize,
    dns: Arc<Dns>,
    mut next: Instant,
) {
    loop {
        tokio::time::sleep_until(next).await;
        let Some(following) = following.upgrade() else {
            return;
        };
        next = following.refresh(&followed, i, &dns).await;
    }
}

fn dns_of(followed: &Followed) -> Arc<Dns> {
    let resolver = followed.resolver();
    Dns::shared(resolver)
}

/// One lookup of `line`: the peers it yields and until when. Errors are logged here, in
/// nginx's words.
async fn lookup(dns: &Dns, line: &ResolveSpec) -> Result<(Vec<Found>, Instant), DnsError> {
    let Some(service) = &line.service else {
        return match dns.addrs(&line.host).await {
            Ok(answer) => {
                let found = (answer.records.iter())
                    .map(|&ip| Found {
                        addr: SocketAddr::new(ip, line.port),
                        srv: None,
                    })
                    .collect();
                Ok((found, answer.valid_until))
            }
            Err(e) => {
                log!(Error, "{} could not be resolved {e}", line.host);
                Err(e)
            }
        };
    };
    match dns.srv(&line.query_name()).await {
        Ok((answer, failed)) => {
            for f in failed {
                log!(
                    Error,
                    "{f} while resolving service {service} of {}",
                    line.host
                );
            }
            let best = answer.records.iter().map(|t| t.priority).min();
            let found = (answer.records.iter())
                .flat_map(|t| {
                    let backup = Some(t.priority) != best;
                    t.addrs.iter().map(move |&ip| Found {
                        addr: SocketAddr::new(ip, t.port),
                        srv: Some((t.name.clone(), t.weight, backup)),
                    })
                })
                .collect();
            Ok((found, answer.valid_until))
        }
        Err((e, failed)) => {
            for f in failed {
                log!(
                    Error,
                    "{f} while resolving service {service} of {}",
                    line.host
                );
            }
            log!(
                Error,
                "service {service} of {} could not be resolved {e}",
                line.host
            );
            Err(e)
        }
    }
}

/// `127.0.0.2:8080, 127.0.0.3:8080` (or `no address`).
fn describe(found: &[Found]) -> String {
    if found.is_empty() {
        return "no address".to_owned();
    }
    let addrs: Vec<String> = found.iter().map(|f| f.addr.to_string()).collect();
    addrs.join(", ")
}
