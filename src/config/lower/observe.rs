//! The directives that make a location answer with figures about imbang itself rather than
//! forward: NGINX Plus's `api`, nginx's `stub_status` (ngx_http_stub_status_module) and Angie's
//! `prometheus`. A location has at most one such handler, and none beside `proxy_pass`.

use super::{Directive, Lower};
use crate::config::model::Action;

impl Lower<'_> {
    /// Reads `api`, `stub_status` or `prometheus` into the location's (or server's) `handler`.
    pub(super) fn handler<'d>(
        &mut self,
        d: &'d Directive,
        handler: &mut Option<(Action, &'d str)>,
    ) {
        let action = match d.name.as_str() {
            "api" => self.api(d),
            "stub_status" => Some(Action::StubStatus),
            "prometheus" => self.prometheus(d),
            _ => None,
        };
        let Some(action) = action else {
            return;
        };
        if let Some((_, other)) = handler {
            self.invalid(
                format!(
                    "\"{}\" cannot be used with \"{other}\" in the same location",
                    d.name
                ),
                d.span,
            );
            return;
        }
        *handler = Some((action, d.name.as_str()));
    }

    /// `prometheus template` (Angie): only the built-in template `all` exists in imbang.
    fn prometheus(&mut self, d: &Directive) -> Option<Action> {
        let arg = &d.args[0];
        if arg.value == "all" {
            return Some(Action::Prometheus);
        }
        self.invalid(
            format!(
                "unknown prometheus template \"{}\": imbang has the built-in \"all\" only (\"prometheus_template\" is not supported yet)",
                arg.value
            ),
            arg.span,
        );
        None
    }
}
