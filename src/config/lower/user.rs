//! `user` and `worker_rlimit_nofile`: read here, acted on by [`crate::privileges`] (the names
//! are looked up there, so that the configuration stays free of system calls).

use super::super::ast::Directive;
use super::super::model::UserSpec;
use super::Lower;

impl Lower<'_> {
    /// `user USER [GROUP]`: the group defaults to the user's name, as nginx's.
    pub(super) fn user(&mut self, d: &Directive) -> UserSpec {
        let user = d.args[0].value.clone();
        let group = d
            .args
            .get(1)
            .map_or_else(|| user.clone(), |g| g.value.clone());
        UserSpec {
            user,
            group,
            location: self.at(d.span),
        }
    }

    /// `worker_rlimit_nofile N`: a plain number, as nginx's `ngx_conf_set_num_slot`.
    pub(super) fn rlimit_nofile(&mut self, d: &Directive) -> Option<u64> {
        let v = d.args[0].value.parse::<u64>().ok();
        if v.is_none() {
            self.invalid(
                "\"worker_rlimit_nofile\" directive invalid number".to_owned(),
                d.span,
            );
        }
        v
    }
}
