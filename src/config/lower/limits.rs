//! nginx's `ngx_http_limit_req_module`, `ngx_http_limit_conn_module` and the core module's
//! `limit_rate`/`limit_rate_after`: zones read at the http level, the limits of each level
//! inherited as nginx merges them (a level with its own `limit_req` lines replaces all of the
//! outer ones; likewise `limit_conn`; every other directive on its own). The runtime is
//! `crate::limit`; zone names are checked against the zones when the snapshot is compiled.

use super::super::ast::Directive;
use super::super::error::ErrorKind;
use super::super::model::{LimitConn, LimitReq, LimitZone, LimitZoneKind, Limits, LogLevel};
use super::super::values;
use super::{Lower, Seen};
use crate::config::directives::Spec;

/// nginx's `nodelay`: `NGX_MAX_INT_T_VALUE / 1000` requests (in milli-requests, as stored).
pub const NODELAY: u64 = (i64::MAX as u64 / 1000) * 1000;

/// The limit directives set at one level (`None`: not set here).
#[derive(Clone, Debug, Default)]
pub(super) struct LimitsFrame {
    req: Option<Vec<LimitReq>>,
    req_status: Option<u16>,
    req_log_level: Option<LogLevel>,
    req_dry_run: Option<bool>,
    conn: Option<Vec<LimitConn>>,
    conn_status: Option<u16>,
    conn_log_level: Option<LogLevel>,
    conn_dry_run: Option<bool>,
    rate: Option<String>,
    rate_after: Option<String>,
}

/// Whether `name` is read by [`Lower::limit`] (the zones excepted: http level only).
pub(super) fn is_limit(name: &str) -> bool {
    matches!(
        name,
        "limit_req"
            | "limit_req_status"
            | "limit_req_log_level"
            | "limit_req_dry_run"
            | "limit_conn"
            | "limit_conn_status"
            | "limit_conn_log_level"
            | "limit_conn_dry_run"
            | "limit_rate"
            | "limit_rate_after"
    )
}

impl LimitsFrame {
    /// This level's values where set, the parent's otherwise.
    pub(super) fn inherit(&self, parent: &LimitsFrame) -> LimitsFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                LimitsFrame { $($field: self.$field.clone().or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(
            req,
            req_status,
            req_log_level,
            req_dry_run,
            conn,
            conn_status,
            conn_log_level,
            conn_dry_run,
            rate,
            rate_after,
        )
    }

    /// The limits in force, `None` when nothing limits this level's requests.
    pub(super) fn spec(&self) -> Option<std::sync::Arc<Limits>> {
        let req = self.req.clone().unwrap_or_default();
        let conn = self.conn.clone().unwrap_or_default();
        // `limit_rate 0` is nginx's "no limit": such a level pays nothing either.
        let rate = self.rate.clone().filter(|r| r != "0");
        if req.is_empty() && conn.is_empty() && rate.is_none() {
            return None;
        }
        Some(std::sync::Arc::new(Limits {
            req,
            req_status: self.req_status.unwrap_or(503),
            req_log_level: self.req_log_level.unwrap_or(LogLevel::Error),
            req_dry_run: self.req_dry_run.unwrap_or(false),
            conn,
            conn_status: self.conn_status.unwrap_or(503),
            conn_log_level: self.conn_log_level.unwrap_or(LogLevel::Error),
            conn_dry_run: self.conn_dry_run.unwrap_or(false),
            rate,
            rate_after: self.rate_after.clone(),
        }))
    }
}

impl Lower<'_> {
    /// `limit_req_zone key zone=name:size rate=Nr/s|Nr/m [sync]` and `limit_conn_zone key
    /// zone=name:size`, with nginx's checks and wording.
    pub(super) fn limit_zone(&mut self, d: &Directive) {
        let is_req = d.name == "limit_req_zone";
        let mut zone = None;
        let mut rate = None;
        for arg in &d.args[1..] {
            let v = arg.value.as_str();
            if let Some(z) = v.strip_prefix("zone=") {
                let Some((name, size)) = z.split_once(':') else {
                    return self.invalid(format!("invalid zone size \"{v}\""), arg.span);
                };
                let Some(size) = values::size(size) else {
                    return self.invalid(format!("invalid zone size \"{v}\""), arg.span);
                };
                // nginx: at least 8 pages.
                if size < 8 * 4096 {
                    return self.invalid(format!("zone \"{v}\" is too small"), arg.span);
                }
                zone = Some((name.to_owned(), size));
            } else if let Some(r) = v.strip_prefix("rate=").filter(|_| is_req) {
                let (n, scale) = match (r.strip_suffix("r/s"), r.strip_suffix("r/m")) {
                    (Some(n), _) => (n, 1),
                    (_, Some(n)) => (n, 60),
                    _ => (r, 1),
                };
                match values::number(n).filter(|&n| n > 0 && n < (1 << 40)) {
                    Some(n) => rate = Some(n * 1000 / scale),
                    None => return self.invalid(format!("invalid rate \"{v}\""), arg.span),
                }
            } else if v == "sync" && is_req {
                // NGINX Plus: the zone's state is shared across a cluster (`zone_sync`).
                self.warn(
                    "the \"sync\" parameter of \"limit_req_zone\" has no effect in imbang: a zone is shared by the workers of one instance only".to_owned(),
                    arg.span,
                );
            } else {
                return self.invalid(format!("invalid parameter \"{v}\""), arg.span);
            }
        }
        let Some((name, size)) = zone else {
            return self.invalid(
                format!("\"{}\" must have \"zone\" parameter", d.name),
                d.span,
            );
        };
        if let Some(other) = self.limit_zones.iter().find(|z| z.name == name) {
            let same_kind = matches!(other.kind, LimitZoneKind::Req { .. }) == is_req;
            let message = if same_kind {
                format!(
                    "{} \"{name}\" is already bound to key \"{}\"",
                    d.name, other.key
                )
            } else {
                format!("the shared memory zone \"{name}\" is already declared for a different use")
            };
            return self.invalid(message, d.span);
        }
        let kind = match is_req {
            // nginx's default when `rate=` is left out: 1r/s.
            true => LimitZoneKind::Req {
                rate: rate.unwrap_or(1000),
            },
            false => LimitZoneKind::Conn,
        };
        let location = self.at(d.span);
        self.limit_zones.push(LimitZone {
            name,
            key: d.args[0].value.clone(),
            size,
            kind,
            location,
        });
    }

    /// The directives of [`is_limit`] at one level.
    pub(super) fn limit(
        &mut self,
        d: &Directive,
        spec: &'static Spec,
        f: &mut LimitsFrame,
        seen: &mut Seen,
    ) {
        let args = &d.args;
        let arg = &args[0];
        match d.name.as_str() {
            "limit_req" => {
                if let Some(limit) = self.limit_req(d) {
                    let limits = f.req.get_or_insert_with(Vec::new);
                    if limits.iter().any(|l| l.zone == limit.zone) {
                        return self
                            .invalid("\"limit_req\" directive is duplicate".to_owned(), d.span);
                    }
                    limits.push(limit);
                }
            }
            "limit_conn" => {
                let zone = arg.value.clone();
                let Some(conn) = values::number(&args[1].value).filter(|&n| n > 0) else {
                    return self.invalid(
                        format!("invalid number of connections \"{}\"", args[1].value),
                        args[1].span,
                    );
                };
                if conn > 65535 {
                    return self.invalid(
                        "connection limit must be less 65536".to_owned(),
                        args[1].span,
                    );
                }
                let limits = f.conn.get_or_insert_with(Vec::new);
                if limits.iter().any(|l| l.zone == zone) {
                    return self
                        .invalid("\"limit_conn\" directive is duplicate".to_owned(), d.span);
                }
                let location = self.at(d.span);
                f.conn.get_or_insert_with(Vec::new).push(LimitConn {
                    zone,
                    conn: conn as u32,
                    location,
                });
            }
            _ if !self.once(seen, spec, d) => {}
            "limit_req_status" | "limit_conn_status" => {
                let code = values::number(&arg.value);
                match code {
                    Some(code @ 400..=599) => match d.name.as_str() {
                        "limit_req_status" => f.req_status = Some(code as u16),
                        _ => f.conn_status = Some(code as u16),
                    },
                    Some(_) => {
                        self.invalid("value must be between 400 and 599".to_owned(), arg.span)
                    }
                    None => self.invalid_value(d, arg),
                }
            }
            "limit_req_log_level" | "limit_conn_log_level" => {
                let level = match arg.value.as_str() {
                    "info" => LogLevel::Info,
                    "notice" => LogLevel::Notice,
                    "warn" => LogLevel::Warn,
                    "error" => LogLevel::Error,
                    _ => return self.invalid_value(d, arg),
                };
                match d.name.as_str() {
                    "limit_req_log_level" => f.req_log_level = Some(level),
                    _ => f.conn_log_level = Some(level),
                }
            }
            "limit_req_dry_run" | "limit_conn_dry_run" => {
                let on = values::flag(&arg.value);
                if on.is_none() {
                    return self.invalid_value(d, arg);
                }
                match d.name.as_str() {
                    "limit_req_dry_run" => f.req_dry_run = on,
                    _ => f.conn_dry_run = on,
                }
            }
            "limit_rate" | "limit_rate_after" => {
                // A size, or text with variables that renders to one per request (nginx
                // 1.17.0+); a constant is checked now.
                if !arg.value.contains('$') && values::size(&arg.value).is_none() {
                    return self
                        .invalid(format!("\"{}\" directive invalid value", d.name), arg.span);
                }
                match d.name.as_str() {
                    "limit_rate" => f.rate = Some(arg.value.clone()),
                    _ => f.rate_after = Some(arg.value.clone()),
                }
            }
            _ => {}
        }
    }

    /// `limit_req zone=name [burst=N] [nodelay | delay=N]`.
    fn limit_req(&mut self, d: &Directive) -> Option<LimitReq> {
        let (mut zone, mut burst, mut delay) = (None, 0, 0);
        for arg in &d.args {
            let v = arg.value.as_str();
            if let Some(z) = v.strip_prefix("zone=") {
                zone = Some(z.to_owned());
            } else if let Some(b) = v.strip_prefix("burst=") {
                match values::number(b).filter(|&n| n > 0 && n < (1 << 40)) {
                    Some(n) => burst = n * 1000,
                    None => {
                        self.invalid(format!("invalid burst value \"{v}\""), arg.span);
                        return None;
                    }
                }
            } else if let Some(b) = v.strip_prefix("delay=") {
                match values::number(b).filter(|&n| n > 0 && n < (1 << 40)) {
                    Some(n) => delay = n * 1000,
                    None => {
                        self.invalid(format!("invalid delay value \"{v}\""), arg.span);
                        return None;
                    }
                }
            } else if v == "nodelay" {
                delay = NODELAY;
            } else {
                self.invalid(format!("invalid parameter \"{v}\""), arg.span);
                return None;
            }
        }
        let Some(zone) = zone else {
            self.error(
                ErrorKind::Invalid("\"limit_req\" must have \"zone\" parameter".to_owned()),
                d.span,
            );
            return None;
        };
        Some(LimitReq {
            zone,
            burst,
            delay,
            location: self.at(d.span),
        })
    }
}
