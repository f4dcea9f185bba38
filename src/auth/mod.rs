//! nginx's access phase beyond `allow`/`deny`: `auth_basic` ([`basic`]), `auth_request` (a
//! subrequest through imbang's own routing, [`crate::proxy::subrequest`]) and `satisfy`.
//!
//! nginx runs its access handlers in this order: the access module (`allow`/`deny`), then
//! auth_basic, then auth_request. Under `satisfy all` the first that refuses decides; under
//! `satisfy any` the first that allows lets the request through without asking the others,
//! and if none does, the request gets 401 if one said 401, else 403. A handler with nothing to
//! say (no rule matched, `auth_basic off`, `auth_request off`) says nothing. Subrequests skip
//! the whole phase, as in nginx, so an auth location cannot ask itself.
//!
//! Only locations where `auth_basic` or `auth_request` is in force come here (their route has
//! an [`Auth`]); any other keeps the plain `allow`/`deny` check of [`crate::proxy`].

pub mod basic;
pub mod crypt;

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::config::model::{AccessRule, AuthSpec};
use crate::log;
use crate::proxy::{RequestCtx, ResponseBody, Shared};
use crate::snapshot::{Route, ServerRoute};
use crate::vars::{Scope, Template};

/// A location's `auth_*` and `satisfy` compiled.
pub struct Auth {
    satisfy_any: bool,
    /// `auth_request`'s URI.
    request: Option<String>,
    /// `auth_request_set`: the variable and its value, rendered with the subrequest's variables.
    request_set: Vec<(Arc<str>, Template)>,
    basic: Option<basic::Basic>,
    delay: Duration,
}

impl Auth {
    pub fn compile(spec: &AuthSpec, scope: &Scope) -> Result<Self, String> {
        let mut request_set = Vec::with_capacity(spec.request_set.len());
        for (name, value) in &spec.request_set {
            let var = scope.get(name).unwrap_or_else(|| Arc::from(name.as_str()));
            request_set.push((var, Template::compile_in(value, scope)?));
        }
        Ok(Self {
            satisfy_any: spec.satisfy_any,
            request: spec.request.clone(),
            request_set,
            basic: spec
                .basic
                .as_ref()
                .map(|b| basic::Basic::compile(b, scope))
                .transpose()?,
            delay: spec.delay,
        })
    }
}

/// What one access handler said (nginx's return codes).
enum Said {
    Nothing,
    Allowed,
    /// 401 with this `WWW-Authenticate`, if any.
    Unauthorized(Option<HeaderValue>),
    /// 403, 500.
    Status(u16),
}

/// Runs the access phase for `route` (which has `auth`); `None`: the request goes on.
pub async fn access(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    route: &Route,
    auth: &Auth,
) -> Option<Response<ResponseBody>> {
    let any = auth.satisfy_any;
    // `r->access_code` under `satisfy any`, and the `WWW-Authenticate` fields gathered.
    let mut code: Option<u16> = None;
    let mut challenges: Vec<HeaderValue> = Vec::new();
    let mut said = |said: Said, challenges: &mut Vec<HeaderValue>| -> Option<Option<u16>> {
        // Some(None): allowed, stop; Some(Some(code)): refused, stop; None: go on.
        match said {
            Said::Nothing => None,
            Said::Allowed if any => Some(None),
            Said::Allowed => None,
            Said::Unauthorized(challenge) => {
                challenges.extend(challenge);
                if any {
                    code = Some(401);
                    None
                } else {
                    Some(Some(401))
                }
            }
            Said::Status(403) if any => {
                if code != Some(401) {
                    code = Some(403);
                }
                None
            }
            Said::Status(status) => Some(Some(status)),
        }
    };
    let handlers = [Handler::Access, Handler::Basic, Handler::Request];
    for handler in handlers {
        let result = match handler {
            Handler::Access => access_rules(&route.conf.access, ctx, any),
            Handler::Basic => match &auth.basic {
                None => Said::Nothing,
                Some(b) => match b.check(ctx) {
                    basic::Verdict::Declined => Said::Nothing,
                    basic::Verdict::Allowed => Said::Allowed,
                    basic::Verdict::Unauthorized(v) => Said::Unauthorized(Some(v)),
                    basic::Verdict::Status(s) => Said::Status(s),
                },
            },
            Handler::Request => match &auth.request {
                None => Said::Nothing,
                // Boxed: the subrequest runs a whole second request (whose own access phase
                // is skipped, so this does not recurse).
                Some(uri) => pin_box!(subrequest(shared, ctx, server, uri, auth)).await,
            },
        };
        match said(result, &mut challenges) {
            None => {}
            Some(None) => return None,
            Some(Some(status)) => return Some(refuse(status, challenges, auth.delay).await),
        }
    }
    let status = code?;
    Some(refuse(status, challenges, auth.delay).await)
}

#[derive(Clone, Copy)]
enum Handler {
    Access,
    Basic,
    Request,
}

/// The access module: the first rule about the client decides; none: nothing to say.
fn access_rules(rules: &[AccessRule], ctx: &RequestCtx<'_>, any: bool) -> Said {
    let ip = ctx.remote().ip();
    match rules.iter().find(|r| r.covers(ip)) {
        None => Said::Nothing,
        Some(rule) if rule.allow => Said::Allowed,
        Some(_) => {
            // nginx logs the refusal only under `satisfy all`.
            if !any {
                log!(
                    Error,
                    "*{} access forbidden by rule{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
            }
            Said::Status(403)
        }
    }
}

/// nginx's answer to a refused request: the status's page, with the `WWW-Authenticate`
/// fields of a 401 (after `auth_delay`).
async fn refuse(
    status: u16,
    challenges: Vec<HeaderValue>,
    delay: Duration,
) -> Response<ResponseBody> {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = crate::proxy::error::error_page(code);
    if status == 401 {
        for c in challenges {
            response.headers_mut().append(header::WWW_AUTHENTICATE, c);
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    response
}

/// `auth_request`: the subrequest's status decides; `auth_request_set` takes its variables.
async fn subrequest(
    shared: &Shared,
    ctx: &RequestCtx<'_>,
    server: &ServerRoute,
    uri: &str,
    auth: &Auth,
) -> Said {
    let (status, challenge, values) =
        crate::proxy::subrequest(shared, ctx, server, uri, |sub, response| {
            let challenge = response
                .headers()
                .get(header::WWW_AUTHENTICATE)
                .cloned()
                .or_else(|| {
                    let fields = response.body().fields()?;
                    HeaderValue::from_bytes(fields.get(b"www-authenticate")?).ok()
                });
            let values: Vec<(Arc<str>, String)> = auth
                .request_set
                .iter()
                .map(|(name, value)| (name.clone(), value.render(sub)))
                .collect();
            (response.status().as_u16(), challenge, values)
        })
        .await;
    if !values.is_empty() {
        ctx.state.set_auth_values(values);
    }
    match status {
        401 => Said::Unauthorized(challenge),
        403 => Said::Status(403),
        200..=299 => Said::Allowed,
        _ => {
            log!(
                Error,
                "*{} auth request unexpected status: {status}{}",
                ctx.conn.id,
                ctx.log_context(None)
            );
            Said::Status(500)
        }
    }
}
