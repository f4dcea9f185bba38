//! NGINX Plus's API writes (`api write=on`): servers added, changed and removed in a group
//! with a `zone`, through [`crate::resolve::Followed`] (the path DNS changes take too).

use super::*;

/// The biggest request body a write reads (a server's JSON is a few hundred bytes).
const MAX_BODY: usize = 64 * 1024;

/// Answers a POST, PATCH or DELETE: NGINX Plus's writes on upstream servers, on a location with
/// `api write=on` (405 `MethodDisabled` elsewhere, as Plus).
///
/// | method and path | effect | answer |
/// |---|---|---|
/// | `POST /N/http/upstreams/NAME/servers` | adds the server of the JSON body | 201, the server |
/// | `PATCH /N/http/upstreams/NAME/servers/ID` | changes the fields the body has | 200, the server |
/// | `DELETE /N/http/upstreams/NAME/servers/ID` | removes the server | 200, the servers left |
/// | `DELETE /N/http/upstreams/NAME` | resets the peers' counters (any group) | 204 |
///
/// The group must have a `zone` (else 400 `UpstreamStatic`); a change is in force for the next
/// request on every worker, and written to the group's `state` file if it has one.
pub async fn write(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    route: &Route,
    enabled: bool,
    body: Option<crate::http1::RequestBody>,
) -> Response<ResponseBody> {
    let method = ctx.parts.method.clone();
    if !enabled || !(method == Method::POST || method == Method::PATCH || method == Method::DELETE)
    {
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
    let body = match body {
        Some(body) if method != Method::DELETE => match read_body(body).await {
            Ok(bytes) => bytes,
            Err(()) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "failed to read request body",
                    "BodyReadError",
                );
            }
        },
        _ => Bytes::new(),
    };
    match write_answer(shared, &method, &parts, &body) {
        Ok((status, value)) => {
            // Health checks probe the new membership (as after a DNS change).
            if status == StatusCode::NO_CONTENT {
                let mut response = Response::new(ResponseBody::full(Bytes::new()));
                *response.status_mut() = status;
                return response;
            }
            shared.live.members_changed();
            json_response(status, &value)
        }
        Err(Refusal(status, text, code)) => error(status, &text, code),
    }
}

async fn read_body(body: crate::http1::RequestBody) -> Result<Bytes, ()> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(()),
    }
}

/// A write refused: status, Plus's text and code.
struct Refusal(StatusCode, String, &'static str);

impl From<Failure> for Refusal {
    fn from((status, text, code): Failure) -> Self {
        Self(status, text.to_owned(), code)
    }
}

fn bad(text: impl Into<String>, code: &'static str) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, text.into(), code)
}

fn not_found(text: &str, code: &'static str) -> Refusal {
    Refusal(StatusCode::NOT_FOUND, text.to_owned(), code)
}

fn write_answer(
    shared: &Shared,
    method: &Method,
    parts: &[&str],
    body: &[u8],
) -> Result<(StatusCode, Value), Refusal> {
    let Some((version, rest)) = parts.split_first() else {
        return Err(method_disabled());
    };
    if !version.parse().is_ok_and(|v: u64| VERSIONS.contains(&v)) {
        return Err(not_found("unknown version", "UnknownVersion"));
    }
    let ["http", "upstreams", name, rest @ ..] = rest else {
        return Err(if api_path_exists(rest) {
            method_disabled()
        } else {
            PATH_NOT_FOUND.into()
        });
    };
    let snapshot = shared.live.snapshot();
    let group = snapshot
        .group(name)
        .ok_or_else(|| not_found("upstream not found", "UpstreamNotFound"))?;
    // Plus's statistics reset of a group (any group): 204, no body.
    if method == Method::DELETE && rest.is_empty() {
        for peer in group.balancer().peers() {
            peer.state().reset_counters();
        }
        return Ok((StatusCode::NO_CONTENT, Value::Null));
    }
    let followed = match group.followed() {
        Some(f) if f.writable() => f,
        _ if matches!(rest, ["servers", ..]) => {
            return Err(bad("upstream is static", "UpstreamStatic"));
        }
        _ => return Err(method_disabled()),
    };
    let server_id = |id: &str| {
        id.parse::<u32>()
            .map_err(|_| bad("invalid server id", "UpstreamBadServerId"))
    };
    match (method, rest) {
        (&Method::POST, ["servers"]) => {
            let fields = json_object(body)?;
            let server = fields
                .get("server")
                .ok_or_else(|| bad("missing \"server\" argument", "UpstreamConfFormatError"))?;
            let Value::String(address) = server else {
                return Err(invalid_value("server"));
            };
            let addr = server_address(address)?;
            let mut spec = crate::config::model::PeerSpec::new(addr, address.as_str());
            apply_fields(&mut spec, &fields, false)?;
            let added = followed.add(spec).map_err(write_error)?;
            Ok((StatusCode::CREATED, server_json(&added)))
        }
        (&Method::PATCH, ["servers", id]) => {
            let id = server_id(id)?;
            let fields = json_object(body)?;
            // Checked on a copy first, so that a refusal changes nothing.
            let mut probe = followed
                .servers()
                .into_iter()
                .find(|s| s.id == Some(id))
                .ok_or_else(|| not_found("server not found", "ServerNotFound"))?;
            if let Some(address) = fields.get("server") {
                let same = matches!(address, Value::String(a) if server_address(a).is_ok_and(|a| a == probe.addr));
                if !same {
                    return Err(bad(
                        format!("server \"{id}\" address is immutable"),
                        "UpstreamServerImmutable",
                    ));
                }
            }
            apply_fields(&mut probe, &fields, true)?;
            let changed = followed.modify(id, |s| *s = probe).map_err(write_error)?;
            Ok((StatusCode::OK, server_json(&changed)))
        }
        (&Method::DELETE, ["servers", id]) => {
            let id = server_id(id)?;
            let left = followed.remove(id).map_err(write_error)?;
            Ok((
                StatusCode::OK,
                Value::Array(left.iter().map(server_json).collect()),
            ))
        }
        (_, [] | ["servers"] | ["servers", _]) => Err(method_disabled()),
        _ => Err(PATH_NOT_FOUND.into()),
    }
}

/// Whether `rest` (after the version) names a read-only endpoint: a write there is 405.
fn api_path_exists(rest: &[&str]) -> bool {
    matches!(
        rest,
        [] | ["nginx"
            | "processes"
            | "connections"
            | "slabs"
            | "ssl"
            | "workers"
            | "http"
            | "acme"]
            | [
                "http",
                "requests" | "server_zones" | "location_zones" | "upstreams",
                ..
            ]
    )
}

fn method_disabled() -> Refusal {
    Refusal(
        StatusCode::METHOD_NOT_ALLOWED,
        "method disabled".to_owned(),
        "MethodDisabled",
    )
}

fn write_error(e: crate::resolve::members::WriteError) -> Refusal {
    use crate::resolve::members::WriteError;
    match e {
        WriteError::ServerNotFound => not_found("server not found", "ServerNotFound"),
        WriteError::Exists => Refusal(
            StatusCode::CONFLICT,
            "entry exists".to_owned(),
            "EntryExists",
        ),
    }
}

/// The body as a JSON object of scalars (Plus: 415 `JsonError` for what is not JSON, 400 for
/// nested objects or lists).
fn json_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    let json_error = || {
        Refusal(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "json error".to_owned(),
            "JsonError",
        )
    };
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
        return Err(json_error());
    };
    if fields
        .values()
        .any(|v| matches!(v, Value::Object(_) | Value::Array(_)))
    {
        return Err(bad("nested object or list", "UpstreamConfFormatError"));
    }
    Ok(fields)
}

/// `IP:port` or `IP` (port 80): imbang's API takes addresses, not names (no `resolve`).
fn server_address(text: &str) -> Result<std::net::SocketAddr, Refusal> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(std::net::SocketAddr::new(ip, 80));
    }
    Err(bad(
        format!(
            "invalid \"server\" argument \"{text}\": an IP address and port (imbang's API does not resolve names)"
        ),
        "UpstreamBadAddress",
    ))
}

fn invalid_value(name: &str) -> Refusal {
    bad(
        format!("invalid \"{name}\" value"),
        "UpstreamConfFormatError",
    )
}

/// Applies Plus's fields to `spec`; `patch`: a PATCH, where `backup` cannot change.
fn apply_fields(
    spec: &mut crate::config::model::PeerSpec,
    fields: &Map<String, Value>,
    patch: bool,
) -> Result<(), Refusal> {
    let number = |name: &str, v: &Value| v.as_u64().ok_or_else(|| invalid_value(name));
    let flag = |name: &str, v: &Value| v.as_bool().ok_or_else(|| invalid_value(name));
    let time = |name: &str, v: &Value, code| match v {
        Value::String(s) => crate::config::values::duration(s)
            .ok_or_else(|| bad(format!("invalid \"{name}\""), code)),
        Value::Number(n) => n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| bad(format!("invalid \"{name}\""), code)),
        _ => Err(invalid_value(name)),
    };
    for (name, value) in fields {
        match name.as_str() {
            "server" | "id" => {}
            "weight" => {
                let w = number(name, value)?;
                if w == 0 || w > 1_000_000 {
                    return Err(bad("invalid \"weight\"", "UpstreamBadWeight"));
                }
                spec.weight = w as u32;
            }
            "max_conns" => {
                spec.max_conns = u32::try_from(number(name, value)?)
                    .map_err(|_| bad("invalid \"max_conns\"", "UpstreamBadMaxConns"))?;
            }
            "max_fails" => {
                spec.max_fails = u32::try_from(number(name, value)?)
                    .map_err(|_| bad("invalid \"max_fails\"", "UpstreamBadMaxFails"))?;
            }
            "fail_timeout" => spec.fail_timeout = time(name, value, "UpstreamBadFailTimeout")?,
            "slow_start" => spec.slow_start = time(name, value, "UpstreamBadSlowStart")?,
            "backup" => {
                let backup = flag(name, value)?;
                if patch && backup != spec.backup {
                    return Err(bad(
                        "\"backup\" cannot be changed",
                        "UpstreamConfFormatError",
                    ));
                }
                spec.backup = backup;
            }
            "down" => spec.down = flag(name, value)?,
            "drain" => spec.drain = flag(name, value)?,
            // Sticky routes: imbang has no `sticky` yet; an empty route is what it means.
            "route" => match value {
                Value::String(s) if s.is_empty() => {}
                _ => {
                    return Err(bad(
                        "\"route\" is not supported by imbang",
                        "UpstreamConfFormatError",
                    ));
                }
            },
            "resolve" | "service" => match value {
                Value::Bool(false) => {}
                _ => {
                    return Err(bad(
                        format!("\"{name}\" is not supported by imbang's API"),
                        "UpstreamConfFormatError",
                    ));
                }
            },
            other => {
                return Err(bad(
                    format!("unknown parameter \"{other}\""),
                    "UpstreamConfFormatError",
                ));
            }
        }
    }
    Ok(())
}

/// A server as the writes and `/servers` show it (Plus's fields).
pub(super) fn server_json(s: &crate::config::model::PeerSpec) -> Value {
    json!({
        "id": s.id.unwrap_or(0),
        "server": s.name,
        "weight": s.weight,
        "max_conns": s.max_conns,
        "max_fails": s.max_fails,
        "fail_timeout": seconds(s.fail_timeout),
        "slow_start": seconds(s.slow_start),
        "route": "",
        "backup": s.backup,
        "down": s.down,
        "drain": s.drain,
    })
}
