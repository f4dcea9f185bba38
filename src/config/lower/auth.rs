//! The access checks beside `allow`/`deny`: `auth_request` and `auth_request_set`
//! (ngx_http_auth_request_module), `auth_basic` and `auth_basic_user_file`
//! (ngx_http_auth_basic_module), and core's `satisfy` and `auth_delay`. Each is inherited on
//! its own, http → server → location (→ `limit_except`), as nginx merges them; a location ends
//! with an [`AuthSpec`] only where `auth_request` or `auth_basic` is in force, so a location
//! without them pays nothing for this module. [`crate::auth`] does the checking.

use std::time::Duration;

use super::super::ast::Directive;
use super::super::model::{AuthSpec, BasicSpec};
use super::super::values;
use super::{Lower, Seen, Spec};

/// The values set at one level (`None`: not set here).
#[derive(Clone, Debug, Default)]
pub(super) struct AuthFrame {
    satisfy_any: Option<bool>,
    /// `Some(None)`: `auth_request off`.
    request: Option<Option<String>>,
    /// `auth_request_set` lines of one level (inherited as a whole, as nginx).
    request_set: Option<Vec<(String, String)>>,
    realm: Option<String>,
    user_file: Option<(String, String)>,
    delay: Option<Duration>,
}

/// Whether `name` is read by [`Lower::auth_setting`].
pub(super) fn is_auth(name: &str) -> bool {
    matches!(
        name,
        "auth_request"
            | "auth_request_set"
            | "auth_basic"
            | "auth_basic_user_file"
            | "satisfy"
            | "auth_delay"
    )
}

impl AuthFrame {
    /// This level's values where set, the parent's otherwise.
    pub(super) fn inherit(&self, parent: &AuthFrame) -> AuthFrame {
        macro_rules! inherit {
            ($($field:ident),* $(,)?) => {
                AuthFrame { $($field: self.$field.clone().or_else(|| parent.$field.clone()),)* }
            };
        }
        inherit!(satisfy_any, request, request_set, realm, user_file, delay)
    }

    /// The checks in force; `None` when neither `auth_request` nor `auth_basic` is.
    pub(super) fn spec(&self) -> Option<std::sync::Arc<AuthSpec>> {
        let request = self.request.clone().flatten();
        // nginx: `auth_basic` needs both directives, and a realm of `off` turns it off (one
        // with variables is looked at per request).
        let basic = match (&self.realm, &self.user_file) {
            (Some(realm), Some((file, at))) if realm != "off" => Some(BasicSpec {
                realm: realm.clone(),
                user_file: file.clone(),
                at: at.clone(),
            }),
            _ => None,
        };
        if request.is_none() && basic.is_none() {
            return None;
        }
        Some(std::sync::Arc::new(AuthSpec {
            satisfy_any: self.satisfy_any.unwrap_or(false),
            request,
            request_set: self.request_set.clone().unwrap_or_default(),
            basic,
            delay: self.delay.unwrap_or_default(),
        }))
    }
}

impl Lower<'_> {
    /// Reads one of the directives [`is_auth`] names into `f`.
    pub(super) fn auth_setting(
        &mut self,
        d: &Directive,
        spec: &'static Spec,
        f: &mut AuthFrame,
        seen: &mut Seen,
    ) {
        if d.name == "auth_request_set" {
            let (name, value) = (&d.args[0], &d.args[1]);
            let Some(var) = name.value.strip_prefix('$').filter(|v| !v.is_empty()) else {
                self.invalid(
                    format!("invalid variable name \"{}\"", name.value),
                    name.span,
                );
                return;
            };
            if crate::vars::Var::parse(var).is_some() {
                // nginx: imbang's own variables cannot be changed (as `set`).
                self.invalid(format!("the duplicate \"{var}\" variable"), name.span);
                return;
            }
            f.request_set
                .get_or_insert_with(Vec::new)
                .push((var.to_owned(), value.value.clone()));
            return;
        }
        if !self.once(seen, spec, d) {
            return;
        }
        let arg = &d.args[0];
        match d.name.as_str() {
            "auth_request" => {
                f.request = Some(match arg.value.as_str() {
                    "off" => None,
                    uri => Some(uri.to_owned()),
                });
            }
            "auth_basic" => f.realm = Some(arg.value.clone()),
            "auth_basic_user_file" => {
                let path = if arg.value.starts_with('$') {
                    arg.value.clone()
                } else {
                    self.conf_path(arg).to_string_lossy().into_owned()
                };
                f.user_file = Some((path, self.at(d.span)));
            }
            "satisfy" => match arg.value.as_str() {
                "all" => f.satisfy_any = Some(false),
                "any" => f.satisfy_any = Some(true),
                // nginx's enum directives say no more than this.
                other => self.invalid(format!("invalid value \"{other}\""), arg.span),
            },
            "auth_delay" => match values::duration(&arg.value) {
                Some(t) => f.delay = Some(t),
                None => self.invalid(format!("\"{}\" directive invalid value", d.name), arg.span),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;
    use crate::config::tests::{errors, opts};

    #[test]
    fn each_directive_is_inherited_on_its_own() {
        let c = parse_str(
            "/etc/imbang/t.conf",
            "http { satisfy any; auth_basic \"Closed\"; auth_basic_user_file htpasswd;\n\
             server { listen 80; auth_request /auth; auth_request_set $user $upstream_http_x_user;\n\
             location / { auth_delay 1s; }\n\
             location /open { auth_basic off; auth_request off; }\n\
             location /sso { auth_basic off; limit_except GET { auth_basic \"Write\"; } } } }\n",
            &opts(),
        )
        .unwrap();
        let server = &c.http.unwrap().servers[0];
        let auth = server.locations[0].conf.auth.as_ref().expect("auth");
        assert!(auth.satisfy_any);
        assert_eq!(auth.request.as_deref(), Some("/auth"));
        assert_eq!(
            auth.request_set,
            [("user".to_owned(), "$upstream_http_x_user".to_owned())]
        );
        let basic = auth.basic.as_ref().expect("basic");
        assert_eq!(basic.realm, "Closed");
        assert_eq!(basic.user_file, "/etc/imbang/htpasswd");
        assert_eq!(auth.delay, std::time::Duration::from_secs(1));
        assert!(server.locations[1].conf.auth.is_none(), "both off");
        let sso = &server.locations[2].conf;
        assert!(sso.auth.as_ref().unwrap().basic.is_none());
        let le = sso.limit_except.as_ref().unwrap();
        let le_auth = le.conf.auth.as_ref().unwrap();
        assert_eq!(le_auth.basic.as_ref().unwrap().realm, "Write");
        assert_eq!(le_auth.request.as_deref(), Some("/auth"));
    }

    #[test]
    fn errors_are_nginx_s() {
        let base =
            |inner: &str| format!("http {{ server {{ listen 80; location / {{ {inner} }} }} }}\n");
        assert_eq!(
            errors(&base("satisfy some;")),
            ["invalid value \"some\" in /etc/imbang/t.conf:1:49"]
        );
        assert_eq!(
            errors(&base("auth_request_set user $x;")),
            ["invalid variable name \"user\" in /etc/imbang/t.conf:1:58"]
        );
        assert_eq!(
            errors(&base("auth_request_set $host $x;")),
            ["the duplicate \"host\" variable in /etc/imbang/t.conf:1:58"]
        );
        assert_eq!(
            errors(&base("auth_request /a; auth_request /b;")),
            ["\"auth_request\" directive is duplicate in /etc/imbang/t.conf:1:58"]
        );
        assert_eq!(
            errors(&base("auth_delay soon;")),
            ["\"auth_delay\" directive invalid value in /etc/imbang/t.conf:1:52"]
        );
    }
}
