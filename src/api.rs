//! NGINX Plus's live API (`api;` in a location), read-only: JSON in the Plus API's shapes about
//! the running imbang and its upstream groups, each peer with its state, load, failures and
//! health checks — enough for the tools that poll `/api/N/http/upstreams`.
//!
//! | path (after the location's prefix) | answer |
//! |---|---|
//! | `/` | the API versions: `[1,...,9]` (every version gets the same shapes) |
//! | `/9/` | the endpoints imbang has: `["nginx","processes","connections","slabs","http","ssl","workers"]`, and `"acme"` when the configuration has `acme_certificate` |
//! | `/9/acme` | imbang's own: each ACME certificate (`acme_certificate`) by `issuer/stem`: `issuer`, `identifiers`, `key`, `state` (`pending`, `valid`, `expired`), `not_before`, `not_after`, `expires_in` and `renew_in` (seconds), `last_error`, `failures` (in a row) |
//! | `/9/ssl` | TLS handshakes on client connections: `handshakes`, `handshakes_failed`, `session_reuses` |
//! | `/9/nginx` | version, build, address, generation (reloads), load_timestamp, timestamp, pid, ppid |
//! | `/9/processes` | `{"respawned":0}` (imbang's workers are threads: none is respawned) |
//! | `/9/connections` | `accepted`, `dropped`, `active`, `idle` ([`crate::stats`]) |
//! | `/9/slabs` | `{}`: no shared memory zones |
//! | `/9/workers` | one entry, the process: `id`, `pid`, `connections`, `http.requests` |
//! | `/9/http/` | `["requests","server_zones","location_zones","upstreams"]` |
//! | `/9/http/requests` | `total`, `current` |
//! | `/9/http/server_zones[/NAME]`, `/9/http/location_zones[/NAME]` | each `status_zone`: `processing`, `requests`, `responses`, `discarded` |
//! | `/9/http/upstreams` | every group by name |
//! | `/9/http/upstreams/NAME` | one group: `peers`, `keepalive`, `queue` |
//! | `/9/http/upstreams/NAME/servers[/ID]` | the configured servers (the Plus write API's GET) |
//! | `/dashboard.html` | imbang's dashboard: a page that polls the above once a second |
//!
//! `?fields=a,b` keeps only those fields (of each member of a collection: upstreams, zones).
//!
//! A peer's fields: `id`, `server`, `name`, `backup`, `weight`, `state` (`up`, `down`,
//! `unavail`, `unhealthy`, `checking`), `active`, `max_conns`, `requests`, `fails`, `unavail`,
//! `health_checks` (`checks`, `fails`, `unhealthy`, `last_passed`), `responses` (`1xx` … `5xx`,
//! `total`), `sent`, `received` (bytes), `header_time`, `response_time` (mean milliseconds,
//! once answered). Plus's per-code counts (`codes`), `selected` and `downtime` are not kept. Errors are Plus's JSON error object with its codes
//! (`PathNotFound`, `UnknownVersion`, `UpstreamNotFound`, `ServerNotFound`, `MethodDisabled`).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::proxy::{RequestCtx, ResponseBody, Shared};
use crate::snapshot::{Group, Route};
use crate::stats::{self, ZoneKind};
use crate::upstream::Peer;
use crate::upstream::health::active::CheckState;

mod write;
use write::server_json;
pub use write::write;

/// The versions of the Plus API answered (all in today's shapes).
const VERSIONS: std::ops::RangeInclusive<u64> = 1..=9;

/// Answers one API request.
pub fn respond(shared: &Shared, ctx: &RequestCtx<'_>, route: &Route) -> Response<ResponseBody> {
    let method = &ctx.parts.method;
    if method != Method::GET && method != Method::HEAD {
        // The writes go through [`write`]; a caller that sends them here has none.
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method disabled",
            "MethodDisabled",
        );
    }
    let path = match &route.prefix {
        Some(prefix) => ctx.path.strip_prefix(prefix.as_str()).unwrap_or(ctx.path),
        None => ctx.path,
    };
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts == ["dashboard.html"] {
        return dashboard();
    }
    match answer(shared, ctx, &parts) {
        Ok(mut value) => {
            if let Some(fields) = fields_param(ctx.args()) {
                let collection = matches!(
                    parts.as_slice(),
                    [_, "http", "upstreams" | "server_zones" | "location_zones"]
                );
                only_fields(&mut value, &fields, collection);
            }
            json_response(StatusCode::OK, &value)
        }
        Err((status, text, code)) => error(status, text, code),
    }
}

/// `fields=a,b` (Plus): the names of the fields to keep; `Some([])` for `fields=`.
fn fields_param(query: Option<&str>) -> Option<Vec<&str>> {
    let value = query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == "fields").then_some(v)
    })?;
    Some(value.split(',').filter(|f| !f.is_empty()).collect())
}

/// Keeps only `fields` of an object, or of each member of a collection (`upstreams`, zones:
/// an empty list leaves their names only, as Plus).
fn only_fields(value: &mut Value, fields: &[&str], collection: bool) {
    let keep = |object: &mut Map<String, Value>| object.retain(|k, _| fields.contains(&k.as_str()));
    match value {
        Value::Object(members) if collection => {
            for member in members.values_mut() {
                if let Value::Object(object) = member {
                    keep(object);
                }
            }
        }
        Value::Object(object) => keep(object),
        _ => {}
    }
}

type Failure = (StatusCode, &'static str, &'static str);

const PATH_NOT_FOUND: Failure = (StatusCode::NOT_FOUND, "path not found", "PathNotFound");

fn answer(shared: &Shared, ctx: &RequestCtx<'_>, parts: &[&str]) -> Result<Value, Failure> {
    let Some((version, rest)) = parts.split_first() else {
        return Ok(json!(VERSIONS.collect::<Vec<_>>()));
    };
    if !version.parse().is_ok_and(|v: u64| VERSIONS.contains(&v)) {
        return Err((StatusCode::NOT_FOUND, "unknown version", "UnknownVersion"));
    }
    let snapshot = shared.live.snapshot();
    match rest {
        [] => {
            let mut endpoints = vec![
                "nginx",
                "processes",
                "connections",
                "slabs",
                "http",
                "ssl",
                "workers",
            ];
            // `acme` (not in NGINX Plus): listed when the configuration has `acme_certificate`.
            if snapshot.config.stream.is_some() {
                endpoints.push("stream");
            }
            if crate::acme::api(&snapshot.config)
                .as_object()
                .is_some_and(|m| !m.is_empty())
            {
                endpoints.push("acme");
            }
            Ok(json!(endpoints))
        }
        ["acme"] => Ok(crate::acme::api(&snapshot.config)),
        ["nginx"] => Ok(nginx(shared, ctx)),
        ["processes"] => Ok(json!({ "respawned": 0 })),
        ["ssl"] => {
            let f = stats::figures();
            Ok(json!({
                "handshakes": f.handshakes,
                "handshakes_failed": f.handshakes_failed,
                "session_reuses": f.session_reuses,
            }))
        }
        ["connections"] => Ok(connections(&stats::figures())),
        // Plus's shared memory zones: imbang keeps its state in the process, in none.
        ["slabs"] => Ok(json!({})),
        ["workers"] => Ok(workers()),
        ["http"] => Ok(json!([
            "requests",
            "server_zones",
            "location_zones",
            "upstreams"
        ])),
        ["http", "requests"] => Ok(requests(&stats::figures())),
        [
            "http",
            kind @ ("server_zones" | "location_zones"),
            rest @ ..,
        ] => {
            let kind = match *kind {
                "server_zones" => ZoneKind::Server,
                _ => ZoneKind::Location,
            };
            let names = zone_names(&snapshot.config, kind);
            match rest {
                [] => Ok(Value::Object(
                    (names.into_iter())
                        .map(|n| {
                            let value = zone(&stats::zone(kind, &n).figures());
                            (n, value)
                        })
                        .collect(),
                )),
                [name] if names.iter().any(|n| n == name) => {
                    Ok(zone(&stats::zone(kind, name).figures()))
                }
                [_] => Err((
                    StatusCode::NOT_FOUND,
                    "zone not found",
                    match kind {
                        ZoneKind::Server => "ServerZoneNotFound",
                        ZoneKind::Location => "LocationZoneNotFound",
                    },
                )),
                _ => Err(PATH_NOT_FOUND),
            }
        }
        ["http", "upstreams"] => {
            let mut groups: Vec<_> = snapshot.groups().collect();
            groups.sort_by(|a, b| a.balancer().name().cmp(b.balancer().name()));
            let map: Map<String, Value> = (groups.into_iter())
                .map(|g| (g.balancer().name().to_owned(), upstream(shared, g)))
                .collect();
            Ok(Value::Object(map))
        }
        ["http", "upstreams", name, rest @ ..] => {
            let group = snapshot.group(name).ok_or((
                StatusCode::NOT_FOUND,
                "upstream not found",
                "UpstreamNotFound",
            ))?;
            let members = group.balancer();
            let peers = members.peers();
            match rest {
                [] => Ok(upstream(shared, group)),
                // A group the API changes: its servers by their ids (`server` lines and
                // API-added ones), then the peers its `resolve` lines found (read-only).
                ["servers", rest @ ..] if group.followed().is_some_and(|f| f.writable()) => {
                    let servers = group.followed().map(|f| f.servers()).unwrap_or_default();
                    let mut all: Vec<(usize, Value)> = (servers.iter())
                        .map(|s| (s.id.unwrap_or(0) as usize, server_json(s)))
                        .collect();
                    let resolved = (peers.iter())
                        .filter(|p| !servers.iter().any(|s| s.id == Some(p.id() as u32)))
                        .map(|p| (p.id(), server(p)));
                    all.extend(resolved);
                    match rest {
                        [] => Ok(Value::Array(all.into_iter().map(|(_, v)| v).collect())),
                        [id] => (all.into_iter())
                            .find(|(i, _)| id.parse() == Ok(*i))
                            .map(|(_, v)| v)
                            .ok_or((StatusCode::NOT_FOUND, "server not found", "ServerNotFound")),
                        _ => Err(PATH_NOT_FOUND),
                    }
                }
                ["servers"] => Ok(Value::Array(peers.iter().map(server).collect())),
                ["servers", id] => {
                    let peer = (id.parse::<usize>().ok())
                        .and_then(|id| peers.iter().find(|p| p.id() == id))
                        .ok_or((StatusCode::NOT_FOUND, "server not found", "ServerNotFound"))?;
                    Ok(server(peer))
                }
                _ => Err(PATH_NOT_FOUND),
            }
        }
        // NGINX Plus's `/stream/`: imbang has its upstreams (no stream server zones yet).
        ["stream"] if snapshot.config.stream.is_some() => Ok(json!(["upstreams"])),
        ["stream", "upstreams"] => {
            let mut groups: Vec<_> = snapshot.stream.groups().collect();
            groups.sort_by(|a, b| a.balancer().name().cmp(b.balancer().name()));
            let map: Map<String, Value> = (groups.into_iter())
                .map(|g| (g.balancer().name().to_owned(), stream_upstream(g)))
                .collect();
            Ok(Value::Object(map))
        }
        ["stream", "upstreams", name, rest @ ..] => {
            let group = snapshot.stream.group(name).ok_or((
                StatusCode::NOT_FOUND,
                "upstream not found",
                "UpstreamNotFound",
            ))?;
            let members = group.balancer();
            let peers = members.peers();
            match rest {
                [] => Ok(stream_upstream(group)),
                ["servers"] => Ok(Value::Array(peers.iter().map(server).collect())),
                ["servers", id] => {
                    let peer = (id.parse::<usize>().ok())
                        .and_then(|id| peers.iter().find(|p| p.index() == id))
                        .ok_or((StatusCode::NOT_FOUND, "server not found", "ServerNotFound"))?;
                    Ok(server(peer))
                }
                _ => Err(PATH_NOT_FOUND),
            }
        }
        _ => Err(PATH_NOT_FOUND),
    }
}

/// One stream upstream group, in NGINX Plus's shape: `connections` for `requests`,
/// `connect_time` (ms, the mean time to connect) and `response_time` (ms, the mean session)
/// for http's times, no `responses` or `keepalive`.
fn stream_upstream(group: &Group) -> Value {
    let now = Instant::now();
    let balancer = &group.balancer();
    let peers: Vec<Value> = (balancer.peers().iter())
        .map(|p| {
            let mut value = peer(p, now);
            if let Some(object) = value.as_object_mut() {
                let requests = object.remove("requests").unwrap_or(json!(0));
                object.insert("connections".to_owned(), requests);
                object.remove("responses");
                if let Some(ms) = object.remove("header_time") {
                    object.insert("connect_time".to_owned(), ms);
                }
            }
            value
        })
        .collect();
    json!({ "peers": peers, "zombies": 0, "zone": balancer.name() })
}

/// `/N/nginx`.
fn nginx(shared: &Shared, ctx: &RequestCtx<'_>) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "build": "imbang",
        "address": ctx.conn.local.ip().to_string(),
        "generation": shared.live.reloads(),
        "load_timestamp": timestamp(shared.live.loaded_at()),
        "timestamp": timestamp(SystemTime::now()),
        "pid": std::process::id(),
        "ppid": nix::unistd::getppid().as_raw(),
    })
}

/// `/N/connections`: Plus's `active` are the connections with a request (being read or
/// answered), `idle` those waiting for one; stub_status's `Active connections` is their sum.
fn connections(f: &stats::Figures) -> Value {
    json!({
        "accepted": f.accepted,
        "dropped": f.accepted.saturating_sub(f.handled),
        "active": f.active.saturating_sub(f.waiting),
        "idle": f.waiting,
    })
}

/// `/N/http/requests`: requests so far, and those being read or answered now.
fn requests(f: &stats::Figures) -> Value {
    json!({ "total": f.requests, "current": f.reading + f.writing })
}

/// The `status_zone` names of `kind` the configuration has, sorted.
pub(crate) fn zone_names(config: &crate::Config, kind: ZoneKind) -> Vec<String> {
    fn walk(locations: &[crate::config::model::Location], names: &mut Vec<String>) {
        for l in locations {
            names.extend(l.conf.status_zone.clone());
            walk(&l.locations, names);
        }
    }
    let mut names = Vec::new();
    for server in config.http.iter().flat_map(|h| &h.servers) {
        match kind {
            ZoneKind::Server => names.extend(server.status_zone.clone()),
            ZoneKind::Location => walk(&server.locations, &mut names),
        }
    }
    names.sort();
    names.dedup();
    names
}

/// One server or location zone: `processing`, `requests`, `responses`, `discarded`.
fn zone(f: &stats::ZoneFigures) -> Value {
    json!({
        "processing": f.processing,
        "requests": f.requests,
        "responses": responses(f.responses),
        "discarded": f.discarded,
    })
}

/// `/N/workers`: Plus lists each worker process; imbang's workers are threads of one process,
/// which counts for all of them, so the list has that process.
fn workers() -> Value {
    let f = stats::figures();
    json!([{
        "id": 0,
        "pid": std::process::id(),
        "connections": connections(&f),
        "http": { "requests": requests(&f) },
    }])
}

/// One upstream group.
fn upstream(shared: &Shared, group: &Group) -> Value {
    let now = Instant::now();
    let balancer = &group.balancer();
    let peers: Vec<Value> = balancer.peers().iter().map(|p| peer(p, now)).collect();
    let mut addrs: Vec<_> = balancer.peers().iter().map(Peer::addr).collect();
    addrs.sort();
    addrs.dedup();
    let keepalive: usize = addrs.iter().map(|&a| shared.pool.idle(a)).sum();
    let mut value = json!({ "peers": peers, "keepalive": keepalive });
    if let Some(queue) = balancer.queue_spec() {
        value["queue"] = json!({ "size": balancer.waiting(), "max_size": queue.size });
    }
    value
}

/// One peer, as `/N/http/upstreams/NAME` lists it.
fn peer(peer: &Peer, now: Instant) -> Value {
    let state = peer.state();
    let active = state.active_health();
    let verdicts = active.verdicts();
    let shown = peer_state(peer, verdicts, now);
    let mut value = json!({
        "id": peer.id(),
        "server": peer.addr().to_string(),
        "name": peer.server(),
        "backup": peer.is_backup(),
        "weight": peer.weight(),
        "state": shown,
        "active": state.in_flight(),
        "requests": state.requests(),
        "responses": responses(state.responses()),
        "fails": state.failed(),
        "unavail": state.went_unavailable(),
        "sent": state.bytes().0,
        "received": state.bytes().1,
    });
    if peer.max_conns() != 0 {
        value["max_conns"] = json!(peer.max_conns());
    }
    // Plus's averages, in milliseconds, once the peer answered.
    let (header, response) = state.latency();
    if let Some(ms) = header.mean_ms() {
        value["header_time"] = json!(ms);
    }
    if let Some(ms) = response.mean_ms() {
        value["response_time"] = json!(ms);
    }
    if !verdicts.is_empty() {
        let mut checks = json!({
            "checks": verdicts.iter().map(|v| v.checks).sum::<u64>(),
            "fails": verdicts.iter().map(|v| v.failed).sum::<u64>(),
            "unhealthy": verdicts.iter().map(|v| v.went_unhealthy).sum::<u64>(),
        });
        let last: Vec<bool> = verdicts.iter().filter_map(|v| v.last_passed).collect();
        if !last.is_empty() {
            checks["last_passed"] = json!(last.iter().all(|&p| p));
        }
        value["health_checks"] = checks;
    }
    value
}

/// A peer's `state` (`up`, `down`, `unavail`, `unhealthy`, `checking`), given what its health
/// checks say (`verdicts`).
pub fn peer_state(
    peer: &Peer,
    verdicts: &[crate::upstream::health::active::Verdict],
    now: Instant,
) -> &'static str {
    let held = |s| {
        verdicts
            .iter()
            .any(|v: &crate::upstream::health::active::Verdict| v.state == s)
    };
    if peer.is_draining() {
        "draining"
    } else if peer.is_down() {
        "down"
    } else if held(CheckState::Unhealthy) {
        "unhealthy"
    } else if held(CheckState::Checking) {
        "checking"
    } else if !peer.passively_available(now) {
        "unavail"
    } else {
        "up"
    }
}

/// `responses`: counts by status class and their total.
fn responses(by_class: [u64; 5]) -> Value {
    let mut value = json!({ "total": by_class.iter().sum::<u64>() });
    for (i, n) in by_class.into_iter().enumerate() {
        value[format!("{}xx", i + 1)] = json!(n);
    }
    value
}

/// One configured server, as the Plus write API's GET shows it.
fn server(peer: &Peer) -> Value {
    let policy = peer.fail_policy();
    json!({
        "id": peer.id(),
        "server": peer.server(),
        "weight": peer.weight(),
        "max_conns": peer.max_conns(),
        "max_fails": policy.max_fails,
        "fail_timeout": seconds(policy.fail_timeout),
        "slow_start": seconds(peer.slow_start()),
        "backup": peer.is_backup(),
        "down": peer.is_down() && !peer.is_draining(),
        "drain": peer.is_draining(),
    })
}

/// `10s`, `1.5s`: a duration as the Plus API writes one.
fn seconds(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{}ms", ms)
    }
}

/// ISO 8601 in UTC with milliseconds, as the Plus API writes times.
fn timestamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// The dashboard page (self-contained: its script fetches `9/...` beside it).
fn dashboard() -> Response<ResponseBody> {
    static PAGE: &str = include_str!("dashboard.html");
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(PAGE.as_bytes())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// The Plus API's error object.
fn error(status: StatusCode, text: &str, code: &str) -> Response<ResponseBody> {
    let value = json!({
        "error": { "status": status.as_u16(), "text": text, "code": code },
        "href": "https://nginx.org/en/docs/http/ngx_http_api_module.html",
    });
    json_response(status, &value)
}

fn json_response(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(ResponseBody::full(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times_are_written_as_the_plus_api_writes_them() {
        use std::time::Duration;
        assert_eq!(seconds(Duration::from_secs(10)), "10s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1500ms");
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        assert_eq!(timestamp(t), "2023-11-14T22:13:20.123Z");
    }
}
