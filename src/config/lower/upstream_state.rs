//! `state FILE` in an `upstream` block (NGINX Plus): the group's servers come from the file,
//! which the API writes back after every change ([`crate::upstream::state`]).

use super::super::ast::Directive;
use super::super::model::Upstream;
use super::Lower;

impl Lower<'_> {
    /// `state file;`: the file's servers become the group's (read now, so that `-t` and a
    /// reload see a broken file as a configuration error).
    pub(super) fn upstream_state(&mut self, d: &Directive, up: &mut Upstream) {
        let path = self.path(&d.args[0].value);
        match crate::upstream::state::load(&path) {
            Ok(servers) => up.peers.extend(servers),
            Err(why) => self.invalid(why, d.args[0].span),
        }
        up.state = Some(path);
    }

    /// Plus's rules for a group with `state`: no `server` lines beside it, and a `zone`.
    pub(super) fn check_upstream_state(&mut self, d: &Directive, up: &Upstream) {
        if up.state.is_none() {
            return;
        }
        let block = d.block.as_deref().unwrap_or_default();
        if let Some(server) = block.iter().find(|c| c.name == "server") {
            self.invalid(
                "\"server\" directive is not allowed in an upstream with \"state\"".to_owned(),
                server.span,
            );
        }
        if !up.zone {
            self.invalid(
                "\"state\" directive requires \"zone\" in the upstream".to_owned(),
                d.span,
            );
        }
    }
}
