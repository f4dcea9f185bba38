//! nginx's `stream { }`: TCP connections proxied to upstream groups, byte for byte.
//!
//! | step    | where            | what happens                                                |
//! |---------|------------------|-------------------------------------------------------------|
//! | accept  | [`crate::server`]| the same listeners, reload and binary upgrade as http; a connection on a stream address comes here |
//! | access  | [`session`]      | `allow`/`deny`, then `set`                                   |
//! | pick    | [`crate::upstream`] | the same groups, balancers and peer state as http (a registry namespace of stream's own) |
//! | connect | [`session`]      | `proxy_connect_timeout`, `proxy_bind`; a failed connect moves on (`proxy_next_upstream`) |
//! | relay   | [`relay`]        | both directions, `proxy_timeout`, rates, `proxy_half_close` |
//! | record  | [`session`]      | the access log's line with stream's variables                |
//!
//! A session holds the snapshot's compiled server it started on: a reload changes what new
//! connections get, never a session that is running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::FastMap;
use crate::access_log::{self, AccessLogs, LogCache, LogFile};
use crate::config::model::{self, AccessRule, BalanceMethod, StreamAction};
use crate::config::{ConfigError, ConfigErrors, ErrorKind};
use crate::snapshot::Group;
use crate::upstream::PeerRegistry;
use crate::vars::{Scope, Template, Var};

mod relay;
pub mod session;
pub mod udp;

/// `stream { }` compiled for one snapshot.
#[derive(Default)]
pub struct Tables {
    servers: FastMap<SocketAddr, Arc<Server>>,
    /// `listen ... udp` addresses (a port may be TCP and UDP at once, as DNS's).
    udp_servers: FastMap<SocketAddr, Arc<Server>>,
    groups: Arc<FastMap<String, Arc<Group>>>,
    /// Every access-log file stream writes (for USR1).
    pub log_files: Vec<Arc<LogFile>>,
}

/// One stream `server { }` as its sessions run it.
pub struct Server {
    pub spec: model::StreamServer,
    action: Action,
    sets: Vec<(Arc<str>, Template)>,
    access: Vec<AccessRule>,
    logs: AccessLogs,
    bind: Option<Template>,
    /// Every group of the snapshot, for `proxy_pass $var`.
    groups: Arc<FastMap<String, Arc<Group>>>,
}

enum Action {
    Proxy(Arc<Group>),
    ProxyVars(Template),
    Return(Template),
}

impl Tables {
    /// The server for a connection accepted on the listener bound for `key`, whose local
    /// address is `local` (a wildcard listener serves the specific addresses it covers).
    pub fn server(&self, key: SocketAddr, local: SocketAddr) -> Option<&Arc<Server>> {
        if self.servers.is_empty() {
            return None;
        }
        if key.ip().is_unspecified() {
            let specific = SocketAddr::new(local.ip(), key.port());
            if let Some(s) = self.servers.get(&specific) {
                return Some(s);
            }
        }
        self.servers.get(&key)
    }

    /// The configured TCP listen addresses.
    pub fn addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.servers.keys().copied()
    }

    /// The configured UDP listen addresses.
    pub fn udp_addresses(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.udp_servers.keys().copied()
    }

    /// The server of the UDP socket bound for `key`.
    pub fn udp_server(&self, key: SocketAddr) -> Option<&Arc<Server>> {
        self.udp_servers.get(&key)
    }

    /// Stream's upstream group `name`.
    pub fn group(&self, name: &str) -> Option<&Arc<Group>> {
        self.groups.get(name)
    }

    /// Stream's upstream groups, in no particular order.
    pub fn groups(&self) -> impl Iterator<Item = &Arc<Group>> {
        self.groups.values()
    }
}

/// Compiles `stream`; peer state comes from `registry` (stream's own namespace).
pub fn compile(
    stream: &model::Stream,
    registry: &PeerRegistry,
    workers: usize,
    errors: &mut ConfigErrors,
) -> Tables {
    let scope = stream_scope(stream, errors);
    let error = |message: String, at: &str| {
        ConfigError::new(ErrorKind::Invalid(message), Some(at.to_owned()))
    };
    let mut groups = FastMap::default();
    for up in &stream.upstreams {
        let hash_key = match &up.method {
            BalanceMethod::Hash { key, location, .. } => match Template::compile_in(key, &scope) {
                Ok(key) => Some(key),
                Err(message) => {
                    errors.push(error(message, location));
                    None
                }
            },
            _ => None,
        };
        groups.insert(
            up.name.clone(),
            Arc::new(Group::new(up, registry, hash_key)),
        );
    }
    let groups = Arc::new(groups);
    let mut logs = LogCache::new(stream.log_buffers.clone(), workers);
    let mut servers = FastMap::default();
    let mut udp_servers = FastMap::default();
    for spec in &stream.servers {
        let at = spec.location.as_str();
        let mut compile = |text: &str| match Template::compile_in(text, &scope) {
            Ok(t) => Some(t),
            Err(message) => {
                errors.push(error(message, at));
                None
            }
        };
        let action = match &spec.action {
            Some(StreamAction::Proxy(name)) => match groups.get(name) {
                Some(group) => Action::Proxy(group.clone()),
                None => continue, // lowering made every name it accepted
            },
            Some(StreamAction::ProxyVars(text)) => match compile(text) {
                Some(t) => Action::ProxyVars(t),
                None => continue,
            },
            Some(StreamAction::Return(text)) => match compile(text) {
                Some(t) => Action::Return(t),
                None => continue,
            },
            None => continue,
        };
        let mut sets = Vec::new();
        for set in &spec.sets {
            let Some(value) = compile(&set.value) else {
                continue;
            };
            sets.push((
                scope
                    .get(&set.name)
                    .unwrap_or_else(|| set.name.as_str().into()),
                value,
            ));
        }
        let bind = spec.bind.as_deref().and_then(&mut compile);
        let (server_logs, log_errors) = access_log::compile(&spec.access_log, &mut logs, &scope);
        for (message, place) in log_errors {
            errors.push(ConfigError::new(
                ErrorKind::Invalid(message),
                place.or_else(|| Some(at.to_owned())),
            ));
        }
        let server = Arc::new(Server {
            spec: spec.clone(),
            action,
            sets,
            access: spec.access.clone(),
            logs: server_logs,
            bind,
            groups: groups.clone(),
        });
        for l in &spec.listens {
            match l.udp {
                false => servers.insert(l.addr, server.clone()),
                true => udp_servers.insert(l.addr, server.clone()),
            };
        }
    }
    Tables {
        servers,
        udp_servers,
        groups,
        log_files: logs.into_files(),
    }
}

/// stream's variables: `set` names, `map`s (stream's own, in file order) and their regexes'
/// named groups.
fn stream_scope(stream: &model::Stream, errors: &mut ConfigErrors) -> Scope {
    let mut scope = Scope::for_stream();
    let mut declared = HashMap::new();
    for set in stream.servers.iter().flat_map(|s| &s.sets) {
        if Var::parse_stream(&set.name).is_some() {
            errors.push(ConfigError::new(
                ErrorKind::Invalid(format!("the duplicate \"{}\" variable", set.name)),
                Some(set.location.clone()),
            ));
        } else {
            declared.insert(set.name.clone(), scope.declare(&set.name));
        }
    }
    for map in &stream.maps {
        for (key, _) in &map.entries {
            if let model::MapKey::Regex(re) = key {
                for group in re.capture_names().flatten() {
                    scope.declare_group(group);
                }
            }
        }
    }
    for map in &stream.maps {
        let error = |message: String| {
            ConfigError::new(ErrorKind::Invalid(message), Some(map.location.clone()))
        };
        if Var::parse_stream(&map.name).is_some() || scope.has(&map.name) {
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
