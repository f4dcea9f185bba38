//! `limit_except METHOD ... { allow ...; deny ...; }` (ngx_http_core_module): nginx gives a
//! request whose method is not listed the block's configuration instead of the location's. That
//! configuration inherits the location's settings and its `proxy_pass`, but not its rewrite
//! statements (`set`, `rewrite`, `if`, `return`), which nginx runs only for the methods listed:
//! imbang does the same. Inside the block imbang reads `allow`, `deny`, `auth_basic`,
//! `auth_basic_user_file`, `access_log` and `proxy_pass` (without a URI part, as nginx).

use std::sync::Arc;

use super::super::ast::Directive;
use super::super::model::{Action, LIMIT_EXCEPT_METHODS, LimitExcept, LocationMatch};
use super::{Contexts, Frame, Lower, Seen, Upstreams};

impl Lower<'_> {
    /// The block `d` of a location whose settings are `location` and action `action`.
    pub(super) fn limit_except(
        &mut self,
        d: &Directive,
        location: &Frame,
        action: &Option<Action>,
        internal: bool,
        ups: &mut Upstreams,
    ) -> Option<Arc<LimitExcept>> {
        let mut methods = Vec::new();
        for arg in &d.args {
            let Some(m) = LIMIT_EXCEPT_METHODS
                .iter()
                .find(|m| m.eq_ignore_ascii_case(&arg.value))
            else {
                self.invalid(format!("invalid method \"{}\"", arg.value), arg.span);
                return None;
            };
            methods.push((*m).to_owned());
        }
        if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
            methods.push("HEAD".to_owned()); // nginx: GET implies HEAD
        }
        let mut own = Frame::default();
        let mut seen = Seen::default();
        let mut proxy = None;
        for c in d.block.as_deref().unwrap_or_default() {
            match c.name.as_str() {
                "allow" | "deny" | "access_log" | "auth_basic" | "auth_basic_user_file" => {
                    // Their arity and values as in a location.
                    if let Some(spec) = self.check(c, Contexts::LOCATION) {
                        self.setting(c, spec, &mut own, &mut seen);
                    }
                }
                "proxy_pass" => {
                    if let Some(spec) = self.check(c, Contexts::LOCATION)
                        && self.once(&mut seen, spec, c)
                    {
                        // nginx: no URI part here (the kind says so to `proxy_pass`).
                        proxy = self.proxy_pass(c, LocationMatch::Named, ups);
                    }
                }
                _ => {
                    // A directive nginx knows is "not allowed here"; any other is unknown.
                    if self.check(c, Contexts::LOCATION).is_some() {
                        self.error(
                            super::super::error::ErrorKind::NotAllowedHere(c.name.clone()),
                            c.span,
                        );
                    }
                }
            }
        }
        let mut conf = own.inherit(location).conf(proxy.or_else(|| action.clone()));
        Arc::make_mut(&mut conf).internal = internal;
        Some(Arc::new(LimitExcept { methods, conf }))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::parse_str;
    use crate::config::tests::{errors, opts};

    #[test]
    fn the_block_applies_to_the_methods_not_listed_and_get_brings_head() {
        let c = parse_str(
            "/etc/imbang/t.conf",
            "http { server { listen 80; location / { deny 10.0.0.1; return 204;\n\
             limit_except get POST { allow 127.0.0.1; deny all; } } } }\n",
            &opts(),
        )
        .unwrap();
        let loc = &c.http.unwrap().servers[0].locations[0];
        let le = loc.conf.limit_except.as_ref().expect("limit_except");
        assert_eq!(le.methods, ["GET", "POST", "HEAD"]);
        assert!(le.limits("PUT") && le.limits("get") && !le.limits("HEAD"));
        assert_eq!(le.conf.access.len(), 2);
        assert!(le.conf.script.is_empty(), "no rewrite statements");
        assert_eq!(loc.conf.access.len(), 1);
    }

    #[test]
    fn errors_are_nginx_s() {
        assert_eq!(
            errors(
                "http { server { listen 80; location / { limit_except FOO { deny all; } } } }\n"
            ),
            ["invalid method \"FOO\" in /etc/imbang/t.conf:1:54"]
        );
        assert_eq!(
            errors(
                "http { server { listen 80; location / { limit_except GET { deny all; }\n\
                 limit_except POST { deny all; } } } }\n"
            ),
            ["\"limit_except\" directive is duplicate in /etc/imbang/t.conf:2:1"]
        );
        assert_eq!(
            errors(
                "http { server { listen 80; location / { limit_except GET { return 403; } } } }\n"
            ),
            ["\"return\" directive is not allowed here in /etc/imbang/t.conf:1:60"]
        );
        let got = errors(
            "http { server { listen 80; location / { limit_except GET { proxy_pass http://a/b; } } } }\n",
        );
        assert!(got[0].contains("cannot have URI part"), "{got:?}");
        assert_eq!(
            errors(
                "http { server { listen 80; location / { limit_except GET { auth_request /a; } } } }\n"
            ),
            ["\"auth_request\" directive is not allowed here in /etc/imbang/t.conf:1:60"]
        );
    }
}
