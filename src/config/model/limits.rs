//! The settings of nginx's `limit_req`, `limit_conn` and `limit_rate` (the runtime is
//! `crate::limit`).

use super::LogLevel;

/// `limit_req_zone` or `limit_conn_zone` (http level): a table of keys shared by every worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitZone {
    pub name: String,
    /// The key, text with variables (`$binary_remote_addr`).
    pub key: String,
    /// The zone's size in bytes: how many keys it holds (see `crate::limit::Table`).
    pub size: u64,
    pub kind: LimitZoneKind,
    /// `path:line:col` of the directive.
    pub location: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitZoneKind {
    /// `limit_req_zone ... rate=`: the rate in milli-requests per second (nginx's unit:
    /// `10r/s` is 10000, `30r/m` is 500).
    Req {
        rate: u64,
    },
    Conn,
}

/// The limits in force in a location; `None` in [`super::LocationConf`] when there are none
/// (requests then pay nothing for the modules).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `limit_req` lines of the level that has some (a level with its own replaces the outer
    /// ones, as nginx).
    pub req: Vec<LimitReq>,
    /// `limit_req_status` (503).
    pub req_status: u16,
    /// `limit_req_log_level` (error); delays are logged one level lower.
    pub req_log_level: LogLevel,
    pub req_dry_run: bool,
    pub conn: Vec<LimitConn>,
    /// `limit_conn_status` (503).
    pub conn_status: u16,
    pub conn_log_level: LogLevel,
    pub conn_dry_run: bool,
    /// `limit_rate` (text with variables; a size per second, 0 = no limit).
    pub rate: Option<String>,
    /// `limit_rate_after` (text with variables; a size).
    pub rate_after: Option<String>,
}

/// `limit_req zone=name [burst=N] [nodelay | delay=N]`, in milli-requests as nginx keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitReq {
    pub zone: String,
    pub burst: u64,
    /// Requests beyond this excess wait; `nodelay` is nginx's largest value.
    pub delay: u64,
    pub location: String,
}

/// `limit_conn zone number`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LimitConn {
    pub zone: String,
    pub conn: u32,
    pub location: String,
}
