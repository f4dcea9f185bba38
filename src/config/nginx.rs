//! nginx's own directive table and build options, as facts to check imbang's against: which module
//! a directive belongs to (so "unknown directive" can say which nginx module imbang lacks), which
//! modules `-V` may claim, and the coverage test (tests/directive_coverage.rs).
//!
//! The two files are derived from nginx's source by `tools/nginx-directives.py` (its
//! `ngx_command_t` tables and `auto/options`, release-1.22.1 and the newest release); rerun it to
//! refresh them. They are read only on the slow paths (an error, `-V`, tests).

use super::directives::{self, Arity, Contexts, Effect};

/// Tab-separated `module, directive, contexts, arity, block, versions`, one directive a line.
pub static DIRECTIVES_TSV: &str = include_str!("nginx-directives.tsv");
/// `with` or `without`, a tab, an option's module part: nginx's configure options for modules.
pub static OPTIONS_TSV: &str = include_str!("nginx-options.tsv");

/// One line of nginx's directive table.
#[derive(Clone, Copy, Debug)]
pub struct NginxDirective {
    /// The `ngx_module_t` that holds it: `ngx_http_proxy_module`.
    pub module: &'static str,
    pub name: &'static str,
    /// nginx's context flags without `NGX_` and `_CONF`, `|`-separated: `HTTP_MAIN|HTTP_SRV`.
    pub contexts: &'static str,
    /// nginx's arity flags the same way: `TAKE12`, `NOARGS|TAKE1`, `FLAG`, `1MORE`.
    pub arity: &'static str,
    pub block: bool,
    /// `both`, or the one nginx version that has this line (added later, removed, or changed).
    pub versions: &'static str,
}

/// Every line of the table, in the file's order (by module, then name).
pub fn all() -> impl Iterator<Item = NginxDirective> {
    DIRECTIVES_TSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some(NginxDirective {
                module: f.next()?,
                name: f.next()?,
                contexts: f.next()?,
                arity: f.next()?,
                block: f.next()? == "BLOCK",
                versions: f.next()?,
            })
        })
}

/// The lines nginx's newest release has (a directive whose flags changed keeps only its newest
/// line; one removed since 1.22.1 keeps its old line).
pub fn newest() -> impl Iterator<Item = NginxDirective> {
    let mut lines: Vec<NginxDirective> = Vec::new();
    for d in all() {
        match lines.last_mut() {
            // The older version's line comes first (tools/nginx-directives.py).
            Some(prev) if prev.module == d.module && prev.name == d.name => *prev = d,
            _ => lines.push(d),
        }
    }
    lines.into_iter()
}

/// nginx's contexts that imbang has no context for (yet): `if` in server and location, and
/// `limit_except`. They are left out of [`NginxDirective::imbang_contexts`].
pub const CONTEXTS_NOT_MODELLED: &[&str] = &["HTTP_SIF", "HTTP_LIF", "HTTP_LMT"];

impl NginxDirective {
    /// The contexts as imbang names them, without those imbang does not model (stream, mail,
    /// and [`CONTEXTS_NOT_MODELLED`]); `None` when none is left.
    pub fn imbang_contexts(&self) -> Option<Contexts> {
        let mut all: Option<Contexts> = None;
        for c in self.contexts.split('|') {
            let c = match c {
                "MAIN" => Contexts::MAIN,
                "EVENT" => Contexts::EVENTS,
                "HTTP_MAIN" => Contexts::HTTP,
                "HTTP_SRV" => Contexts::SERVER,
                "HTTP_LOC" => Contexts::LOCATION,
                "HTTP_UPS" => Contexts::UPSTREAM,
                "ACME_ISSUER" => Contexts::ACME_ISSUER,
                _ => continue,
            };
            all = Some(all.map_or(c, |a| a.or(c)));
        }
        all
    }

    /// The arity in imbang's terms.
    pub fn imbang_arity(&self) -> Arity {
        let (mut min, mut max) = (u8::MAX, 0u8);
        for a in self.arity.split('|') {
            match a {
                "FLAG" => return Arity::Flag,
                "1MORE" => return Arity::AtLeast(1),
                "2MORE" => return Arity::AtLeast(2),
                "ANY" => return Arity::AtLeast(0),
                "NOARGS" => (min, max) = (0, max),
                takes => {
                    for n in takes.trim_start_matches("TAKE").bytes() {
                        let n = n - b'0';
                        (min, max) = (min.min(n), max.max(n));
                    }
                }
            }
        }
        Arity::Range(min, max)
    }

    /// imbang's entry for this directive in each of its contexts: `None` when imbang lacks it
    /// somewhere nginx allows it.
    pub fn in_imbang(&self) -> Option<&'static directives::Spec> {
        let ctxs = self.imbang_contexts()?;
        let mut found = None;
        for bit in 0..16 {
            let ctx = Contexts::from_bits(1 << bit);
            if !ctxs.contains(ctx) {
                continue;
            }
            let spec = directives::lookup(self.name, ctx).filter(|s| s.contexts.contains(ctx))?;
            found = Some(spec);
        }
        found
    }
}

/// The nginx module a directive imbang does not know belongs to, preferring one that allows it
/// where it was found (`proxy_pass` is in both the http and the stream proxy modules).
pub fn module_of(name: &str, ctx: Contexts) -> Option<&'static str> {
    let mut fallback = None;
    for d in all().filter(|d| d.name == name) {
        if d.imbang_contexts().is_some_and(|c| c.contains(ctx)) {
            return Some(d.module);
        }
        fallback = fallback.or(Some(d.module));
    }
    fallback
}

/// How far imbang has an nginx module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModuleState {
    /// Every directive of the module is in imbang's table, and either none is refused as "not
    /// supported yet" or at least one acts: a configuration written for the module reads.
    Present,
    /// Some directives are in the table, some are not; or all are, but none acts and some are
    /// refused (the module's work is not there, only its companions are accepted).
    Partial,
    /// None is: its directives are "unknown".
    Absent,
}

/// Whether imbang has `module` (`ngx_http_map_module`), judged from its directives in nginx's
/// newest release.
pub fn module_state(module: &str) -> ModuleState {
    let (mut have, mut lack, mut acts, mut refused) = (0, 0, false, false);
    for d in newest().filter(|d| d.module == module) {
        match d.in_imbang().map(|s| s.effect) {
            Some(effect) => {
                have += 1;
                acts |= effect == Effect::Acts;
                refused |= matches!(effect, Effect::NotYet(_));
            }
            None => lack += 1,
        }
    }
    match (have, lack) {
        (0, _) => ModuleState::Absent,
        (_, 0) if acts || !refused => ModuleState::Present,
        _ => ModuleState::Partial,
    }
}

/// nginx's configure options for modules: (`true` for `--with-…` (off unless asked), the option's
/// module part `http_sub_module`). Only http modules: imbang has no stream or mail.
pub fn options() -> impl Iterator<Item = (bool, &'static str)> {
    OPTIONS_TSV
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, m)| m.starts_with("http_"))
        .map(|(kind, m)| (kind == "with", m))
}

/// The source module an option names: `http_sub_module` → `ngx_http_sub_filter_module` (the
/// filter modules' options drop `_filter`). `None` for options with no directives of their own.
pub fn option_module(option: &str) -> Option<&'static str> {
    let plain = format!("ngx_{option}");
    let filter = format!("ngx_{}_filter_module", option.trim_end_matches("_module"));
    all()
        .find(|d| d.module == plain || d.module == filter)
        .map(|d| d.module)
}

/// `-V`'s module options, as nginx's build would print them for what imbang has: `--with-…` for
/// an optional module that is present, `--without-…` for a default one that is absent or partial.
/// nginx's switch for its cache comes last: `--without-http-cache` (`proxy_cache` is refused).
pub fn configure_options() -> Vec<String> {
    let mut with = Vec::new();
    let mut without = Vec::new();
    for (optional, option) in options() {
        let Some(module) = option_module(option) else {
            continue;
        };
        let present = module_state(module) == ModuleState::Present;
        if optional && present {
            with.push(format!("--with-{option}"));
        } else if !optional && !present {
            without.push(format!("--without-{option}"));
        }
    }
    // stream's modules are not in nginx's table here: claimed when imbang's table has them.
    for (option, directive) in [
        ("stream", "proxy_pass"),
        ("stream_realip_module", "set_real_ip_from"),
        ("stream_ssl_preread_module", "ssl_preread"),
    ] {
        let acts = directives::lookup(directive, Contexts::STREAM_SERVER).is_some_and(|s| {
            s.contexts.contains(Contexts::STREAM_SERVER) && s.effect == Effect::Acts
        });
        if acts {
            with.push(format!("--with-{option}"));
        }
    }
    with.append(&mut without);
    if directives::lookup("proxy_cache", Contexts::LOCATION)
        .is_none_or(|s| matches!(s.effect, Effect::NotYet(_)))
    {
        with.push("--without-http-cache".to_owned());
    }
    with
}
