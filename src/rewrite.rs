//! nginx's rewrite module at request time (`ngx_http_rewrite_handler` running the codes of
//! `ngx_http_script.c`): each level's `set`, `rewrite`, `if`, `return` and `break` in the
//! order written, the server's script before the location search and the location's after
//! it, and the search again (at most 10 times) while a location's script changed the URI.
//!
//! Scripts are compiled once per snapshot ([`Script::compile`]); a request that no `rewrite`
//! touches allocates nothing here (the [`State`] starts empty).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::route::Regex;

use crate::config::model::{self, Condition, FileTest, RewriteFlag};
use crate::config::{ConfigError, ConfigErrors, ErrorKind};
use crate::log;
use crate::proxy::{Captures, RequestCtx};
use crate::snapshot::{Answer, Route, ServerRoute};
use crate::vars::{Scope, Template};

/// nginx's `NGX_HTTP_MAX_URI_CHANGES`: a request's URI may send it to a new location this
/// many times; one more is a 500.
const MAX_URI_CHANGES: u8 = 10;

/// One level's statements, compiled.
#[derive(Default)]
pub struct Script {
    stmts: Vec<Stmt>,
    /// `rewrite_log`: notice lines about each regex and rewrite.
    log: bool,
}

enum Stmt {
    Set(Arc<str>, Template),
    Rewrite(Box<Rewrite>),
    Return(Answer),
    Break,
    If(Box<If>),
}

struct Rewrite {
    regex: Regex,
    pattern: String,
    /// Named groups: (group index, the variable their value goes to).
    names: Vec<(usize, Arc<str>)>,
    /// The replacement up to its first `?` (a redirect: all of it).
    uri: Template,
    /// The replacement after its first `?`: the new arguments.
    args: Option<Template>,
    /// No trailing `?`: the request's arguments are kept (appended to new ones).
    add_args: bool,
    flag: RewriteFlag,
}

struct If {
    condition: Cond,
    body: Vec<Stmt>,
    /// A location's `if`: the implicit location that becomes the request's when true.
    route: Option<Arc<Route>>,
}

enum Cond {
    Var(Template),
    Equals(Template, Template, bool),
    Matches {
        subject: Template,
        regex: Regex,
        pattern: String,
        names: Vec<(usize, Arc<str>)>,
        negate: bool,
    },
    File(Template, FileTest, bool),
}

/// The variables named groups of `regex` set (declared in the scope by the snapshot).
fn group_names(regex: &Regex, scope: &Scope) -> Vec<(usize, Arc<str>)> {
    regex
        .capture_names()
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| Some((i, scope.get(n?)?)))
        .collect()
}

/// Declares the named groups of every regex of `stmts` (nginx makes each a variable).
pub fn declare_names(stmts: &[model::Stmt], scope: &mut Scope) {
    for stmt in stmts {
        let regex = match stmt {
            model::Stmt::Rewrite(r) => &r.regex,
            model::Stmt::If(i) => {
                declare_names(&i.body, scope);
                match &i.condition {
                    Condition::Matches { regex, .. } => regex,
                    _ => continue,
                }
            }
            _ => continue,
        };
        for name in regex.capture_names().into_iter().flatten() {
            scope.declare_group(name);
        }
    }
}

/// The `set` statements of `stmts`, `if` bodies included.
pub fn sets(stmts: &[model::Stmt]) -> Vec<&model::SetVar> {
    let mut out = Vec::new();
    for stmt in stmts {
        match stmt {
            model::Stmt::Set(s) => out.push(s),
            model::Stmt::If(i) => out.extend(sets(&i.body)),
            _ => {}
        }
    }
    out
}

/// What compiling a script needs from the snapshot being compiled.
pub trait CompileCx {
    fn scope(&self) -> &Scope;
    /// The scope and the errors together.
    fn parts(&mut self) -> (&Scope, &mut ConfigErrors);
    /// The implicit location of a location's `if` (at `at`), compiled.
    fn if_route(&mut self, conf: &Arc<model::LocationConf>, at: &str) -> Route;
}

impl Script {
    /// Compiles a level's statements.
    pub fn compile(stmts: &[model::Stmt], log: bool, cx: &mut dyn CompileCx) -> Self {
        Self {
            stmts: compile_stmts(stmts, cx),
            log,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }
}

fn compile_stmts(stmts: &[model::Stmt], cx: &mut dyn CompileCx) -> Vec<Stmt> {
    let mut out = Vec::new();
    for stmt in stmts {
        let template = |text: &str, at: &str, cx: &mut dyn CompileCx| {
            let (scope, errors) = cx.parts();
            Template::compile_in(text, scope)
                .map_err(|m| errors.push(ConfigError::new(ErrorKind::Invalid(m), Some(at.into()))))
                .ok()
        };
        match stmt {
            model::Stmt::Set(set) => {
                // A name not in the scope was refused already (`the duplicate ... variable`).
                let Some(name) = cx.scope().get(&set.name) else {
                    continue;
                };
                if let Some(t) = template(&set.value, &set.location, cx) {
                    out.push(Stmt::Set(name, t));
                }
            }
            model::Stmt::Return(r) => {
                // Where a `return` is reported, nginx names the directive; the level will do.
                let (scope, errors) = cx.parts();
                if let Some(answer) = Answer::compile(r, &r.location, scope, errors) {
                    out.push(Stmt::Return(answer));
                }
            }
            model::Stmt::Break => out.push(Stmt::Break),
            model::Stmt::Rewrite(r) => {
                let redirect = matches!(r.flag, RewriteFlag::Redirect | RewriteFlag::Permanent);
                let (uri, args) = match r.replacement.split_once('?') {
                    Some((uri, args)) if !redirect => (uri, Some(args)),
                    _ => (r.replacement.as_str(), None),
                };
                let uri = template(uri, &r.location, cx);
                let args = match args {
                    Some(a) => template(a, &r.location, cx).map(Some),
                    None => Some(None),
                };
                let (Some(uri), Some(args)) = (uri, args) else {
                    continue;
                };
                out.push(Stmt::Rewrite(Box::new(Rewrite {
                    names: group_names(&r.regex, cx.scope()),
                    regex: r.regex.clone(),
                    pattern: r.pattern.clone(),
                    uri,
                    args,
                    add_args: !r.drop_args,
                    flag: r.flag,
                })));
            }
            model::Stmt::If(spec) => {
                let at = spec.location.as_str();
                let condition = match &spec.condition {
                    Condition::Var(v) => template(v, at, cx).map(Cond::Var),
                    Condition::Equals { var, value, negate } => {
                        match (template(var, at, cx), template(value, at, cx)) {
                            (Some(a), Some(b)) => Some(Cond::Equals(a, b, *negate)),
                            _ => None,
                        }
                    }
                    Condition::Matches {
                        var,
                        regex,
                        pattern,
                        negate,
                    } => template(var, at, cx).map(|subject| Cond::Matches {
                        subject,
                        names: group_names(regex, cx.scope()),
                        regex: regex.clone(),
                        pattern: pattern.clone(),
                        negate: *negate,
                    }),
                    Condition::File { path, test, negate } => {
                        template(path, at, cx).map(|p| Cond::File(p, *test, *negate))
                    }
                };
                let body = compile_stmts(&spec.body, cx);
                let route = spec
                    .conf
                    .as_ref()
                    .map(|conf| Arc::new(cx.if_route(conf, at)));
                if let Some(condition) = condition {
                    out.push(Stmt::If(Box::new(If {
                        condition,
                        body,
                        route,
                    })));
                }
            }
        }
    }
    out
}

/// What a request's rewrite phases changed. Empty (and free) until a statement changes
/// something.
#[derive(Default)]
pub struct State<'s> {
    /// Values given by `set` (and named captures), in order; a later one wins.
    pub sets: Vec<(Arc<str>, String)>,
    /// `$uri` and `$args` after a `rewrite` changed them.
    pub rewritten: Option<Rewritten>,
    /// The captures of the last `rewrite`/`if` regex tried (`None`: the location's).
    captures: Option<Captures<'static>>,
    /// A location's `rewrite` without `break` changed the URI: search the locations again.
    uri_changed: bool,
    /// The implicit location of the last true `if` of the location's script.
    if_route: Option<&'s Arc<Route>>,
    /// An internal redirect (`error_page`) or a rewritten URI: `internal` locations may answer.
    pub internal: bool,
}

/// The URI a `rewrite` made.
#[derive(Clone, Debug)]
pub struct Rewritten {
    /// The new `$uri` (decoded, as locations match it).
    pub path: String,
    /// The new `$args`.
    pub args: String,
    /// False after `rewrite ... break` (or `break` after a rewrite): `proxy_pass` with a URI
    /// part then sends the rewritten URI as it is, without replacing the location's prefix.
    pub valid_location: bool,
}

/// How the rewrite phases ended.
pub enum Flow<'s> {
    /// On to the access phase and the content handler.
    Next,
    /// `return`.
    Return(&'s Answer),
    /// `rewrite` to an absolute URL or with `redirect`/`permanent`: the status and `Location`.
    Redirect(u16, String),
    /// An error status (a cycle of rewrites, an empty URI, an `internal` location).
    Status(u16),
}

/// How one script ended.
enum Control<'s> {
    Continue,
    /// `break`, `rewrite ... last|break`: the script is over.
    Stop,
    Done(Flow<'s>),
}

impl<'s> State<'s> {
    /// The state an internal redirect (`error_page`) starts with: the variables set so far.
    pub fn internal_redirect(sets: Vec<(Arc<str>, String)>) -> Self {
        Self {
            sets,
            internal: true,
            ..Self::default()
        }
    }

    /// A context for rendering templates: `base` with this state's values.
    pub fn ctx<'a>(&'a self, base: &RequestCtx<'a>) -> RequestCtx<'a> {
        RequestCtx {
            sets: &self.sets,
            path: self
                .rewritten
                .as_ref()
                .map_or(base.path, |r| r.path.as_str()),
            captures: self.captures.as_ref().unwrap_or(base.captures),
            rewritten: self.rewritten.as_ref().or(base.rewritten),
            ..*base
        }
    }
}

/// The server's rewrite phase, the location search, the location's rewrite phase and the
/// search again while the URI changed. Returns the route whose settings answer (a true
/// `if`'s implicit location, else the location found) and how the phases ended. `base` is
/// the request before any rewrite.
pub fn phases<'s>(
    server: &'s ServerRoute,
    base: &RequestCtx<'_>,
    state: &mut State<'s>,
) -> (&'s Arc<Route>, Flow<'s>) {
    base.state.uninitialized.set(&server.fallback.conf);
    let script = &server.fallback.script;
    if !script.is_empty()
        && let Control::Done(flow) = run(script, &script.stmts, base, state, false)
    {
        return (&server.fallback, flow);
    }
    locations(server, None, base, state)
}

/// The location phases only, from `named` (a named location an `error_page` goes to: nginx
/// starts there at the location's rewrite phase) or from a search.
pub fn locations<'s>(
    server: &'s ServerRoute,
    mut named: Option<&'s Arc<Route>>,
    base: &RequestCtx<'_>,
    state: &mut State<'s>,
) -> (&'s Arc<Route>, Flow<'s>) {
    let mut changes = MAX_URI_CHANGES + 1;
    loop {
        let path = state
            .rewritten
            .as_ref()
            .map_or(base.path, |r| r.path.as_str());
        let route = match named.take() {
            Some(route) => route,
            None => server.locations.find(path).unwrap_or(&server.fallback),
        };
        // A regex location's named groups are variables (nginx sets them as it matches).
        if let Some(regex) = &route.regex
            && !route.regex_names.is_empty()
            && let Some(spans) = regex.captures(path.as_bytes())
        {
            for (i, name) in &route.regex_names {
                let value = spans.get(*i).copied().flatten();
                let value = value.map_or("", |(start, end)| path.get(start..end).unwrap_or(""));
                state.sets.push((name.clone(), value.to_owned()));
            }
        }
        state.uri_changed = false;
        state.if_route = None;
        if let Some(r) = &mut state.rewritten {
            r.valid_location = true;
        }
        if route.regex.is_some() {
            // The location's regex matched: its groups are `$1`.. now.
            state.captures = None;
        }
        let internal = state.internal || state.rewritten.is_some();
        if route.conf.internal && !internal {
            return (route, Flow::Status(404));
        }
        // `limit_except`: another method gets the block's settings, without the location's
        // rewrite statements (nginx's find-config phase switches the whole configuration).
        let route = match &route.limit_except {
            Some(le) if le.spec.limits(base.parts.method.as_str()) => &le.route,
            _ => route,
        };
        base.state.uninitialized.set(&route.conf);
        if Arc::ptr_eq(route, &server.fallback) || route.script.is_empty() {
            // nginx skips the location phase for the server's own settings (its script ran).
            return (route, Flow::Next);
        }
        // A regex location's groups are `$1`..; elsewhere those of `base` stay (a named
        // location keeps the request's, as nginx).
        let captures = Captures::of(route);
        let located = RequestCtx {
            captures: captures.or(base.captures),
            ..*base
        };
        let control = run(&route.script, &route.script.stmts, &located, state, true);
        let answering = state.if_route.unwrap_or(route);
        if let Control::Done(flow) = control {
            return (answering, flow);
        }
        if !state.uri_changed {
            return (answering, Flow::Next);
        }
        changes -= 1;
        if changes == 0 {
            let ctx = state.ctx(base);
            log!(
                Error,
                "*{} rewrite or internal redirection cycle while processing \"{}\"{}",
                base.conn.id,
                ctx.path,
                ctx.log_context(None)
            );
            return (answering, Flow::Status(500));
        }
    }
}

/// Runs `stmts` of `script` (a level's statements, or an `if` body inside them).
fn run<'s>(
    script: &'s Script,
    stmts: &'s [Stmt],
    base: &RequestCtx<'_>,
    state: &mut State<'s>,
    in_location: bool,
) -> Control<'s> {
    for stmt in stmts {
        match stmt {
            Stmt::Set(name, value) => {
                let value = value.render(&state.ctx(base));
                state.sets.push((name.clone(), value));
            }
            Stmt::Return(answer) => return Control::Done(Flow::Return(answer)),
            Stmt::Break => {
                if state.uri_changed {
                    state.uri_changed = false;
                    if let Some(r) = &mut state.rewritten {
                        r.valid_location = false;
                    }
                }
                return Control::Stop;
            }
            Stmt::Rewrite(rw) => match rewrite(script, rw, base, state, in_location) {
                Control::Continue => {}
                other => return other,
            },
            Stmt::If(i) => {
                if !test(script, &i.condition, base, state) {
                    continue;
                }
                if let Some(route) = &i.route {
                    state.if_route = Some(route);
                }
                match run(script, &i.body, base, state, in_location) {
                    Control::Continue => {}
                    other => return other,
                }
            }
        }
    }
    Control::Continue
}

/// Runs `regex` on `subject`; on a match its groups become the request's captures and its
/// named groups variables, as `ngx_http_regex_exec` does. No match clears the captures.
fn exec(regex: &Regex, names: &[(usize, Arc<str>)], subject: &str, state: &mut State<'_>) -> bool {
    let Some(spans) = regex.captures(subject.as_bytes()) else {
        state.captures = Some(Captures::matched(String::new(), Vec::new()));
        return false;
    };
    for (i, name) in names {
        let value = spans
            .get(*i)
            .copied()
            .flatten()
            .map_or("", |(start, end)| subject.get(start..end).unwrap_or(""));
        state.sets.push((name.clone(), value.to_owned()));
    }
    state.captures = Some(Captures::matched(subject.to_owned(), spans));
    true
}

fn test(script: &Script, cond: &Cond, base: &RequestCtx<'_>, state: &mut State<'_>) -> bool {
    match cond {
        Cond::Var(t) => {
            let v = t.render(&state.ctx(base));
            !(v.is_empty() || v == "0")
        }
        Cond::Equals(a, b, negate) => {
            let ctx = state.ctx(base);
            (a.render(&ctx) == b.render(&ctx)) != *negate
        }
        Cond::Matches {
            subject,
            regex,
            pattern,
            names,
            negate,
        } => {
            let subject = subject.render(&state.ctx(base));
            let matched = exec(regex, names, &subject, state);
            if script.log {
                log_match(base, state, pattern, &subject, matched);
            }
            matched != *negate
        }
        Cond::File(path, kind, negate) => {
            let path = path.render(&state.ctx(base));
            let meta = std::fs::metadata(&path);
            let found = match (kind, meta) {
                (FileTest::File, Ok(m)) => m.is_file(),
                (FileTest::Dir, Ok(m)) => m.is_dir(),
                (FileTest::Exists, Ok(_)) => true,
                (FileTest::Exec, Ok(m)) => {
                    use std::os::unix::fs::PermissionsExt;
                    // nginx asks access(X_OK); the mode bits are what it sees for most.
                    m.permissions().mode() & 0o111 != 0
                }
                (_, Err(_)) => false,
            };
            found != *negate
        }
    }
}

fn log_match(base: &RequestCtx<'_>, state: &State<'_>, pattern: &str, subject: &str, hit: bool) {
    let ctx = state.ctx(base);
    let verb = if hit { "matches" } else { "does not match" };
    log!(
        Notice,
        "*{} \"{pattern}\" {verb} \"{subject}\"{}",
        base.conn.id,
        ctx.log_context(None)
    );
}

/// One `rewrite`: nginx's `ngx_http_script_regex_start_code` and `_end_code`.
fn rewrite<'s>(
    script: &Script,
    rw: &Rewrite,
    base: &RequestCtx<'_>,
    state: &mut State<'s>,
    in_location: bool,
) -> Control<'s> {
    let subject = state.ctx(base).path.to_owned();
    let matched = exec(&rw.regex, &rw.names, &subject, state);
    if script.log {
        log_match(base, state, &rw.pattern, &subject, matched);
    }
    if !matched {
        return Control::Continue;
    }
    let ctx = state.ctx(base);
    let current_args = match &ctx.rewritten {
        Some(r) => r.args.as_str(),
        None => ctx.parts.uri.query().unwrap_or(""),
    };
    // nginx escapes captures that go into a redirect or into arguments when the request's
    // URI had escapes (`quoted_uri`) or a `+` (`plus_in_uri`): they come from the decoded URI.
    let raw = ctx.parts.uri.path();
    let quoted = raw.contains('%') || raw.contains('+');
    let redirect = matches!(rw.flag, RewriteFlag::Redirect | RewriteFlag::Permanent);
    let mut target = match (quoted, redirect) {
        (true, true) => rw.uri.render(&Quoting(&ctx, in_redirect)),
        _ => rw.uri.render(&ctx),
    };
    if redirect {
        if rw.add_args && !current_args.is_empty() {
            target.push(if target.contains('?') { '&' } else { '?' });
            target.push_str(current_args);
        }
        if script.log {
            log!(
                Notice,
                "*{} rewritten redirect: \"{target}\"{}",
                base.conn.id,
                ctx.log_context(None)
            );
        }
        let status = if rw.flag == RewriteFlag::Permanent {
            301
        } else {
            302
        };
        return Control::Done(Flow::Redirect(status, target));
    }
    let args = match &rw.args {
        Some(t) => {
            let mut a = match quoted {
                true => t.render(&Quoting(&ctx, in_args)),
                false => t.render(&ctx),
            };
            if rw.add_args && !current_args.is_empty() {
                a.push('&');
                a.push_str(current_args);
            }
            a
        }
        None if rw.add_args => current_args.to_owned(),
        None => String::new(),
    };
    if script.log {
        log!(
            Notice,
            "*{} rewritten data: \"{target}\", args: \"{args}\"{}",
            base.conn.id,
            ctx.log_context(None)
        );
    }
    if target.is_empty() {
        log!(
            Error,
            "*{} the rewritten URI has a zero length{}",
            base.conn.id,
            ctx.log_context(None)
        );
        return Control::Done(Flow::Status(500));
    }
    let valid_location = rw.flag != RewriteFlag::Break;
    state.rewritten = Some(Rewritten {
        path: target,
        args,
        valid_location,
    });
    // A server's changed URI is searched anyway; a location's is searched again unless
    // `break` said it stays.
    state.uri_changed = in_location && rw.flag != RewriteFlag::Break;
    match rw.flag {
        RewriteFlag::Last | RewriteFlag::Break => Control::Stop,
        _ => Control::Continue,
    }
}

/// Captures rendered escaped (`ngx_http_script_copy_capture_code` with `quote` or `is_args`),
/// every other variable as it is. The function says which bytes are escaped.
struct Quoting<'c, 'a>(&'c RequestCtx<'a>, fn(u8) -> bool);

impl crate::vars::Vars for Quoting<'_, '_> {
    fn append(&self, var: &crate::vars::Var, out: &mut String) {
        if !matches!(var, crate::vars::Var::Capture(_)) {
            return self.0.append(var, out);
        }
        let mut value = String::new();
        self.0.append(var, &mut value);
        for b in value.bytes() {
            if self.1(b) {
                out.push_str(&format!("%{b:02X}"));
            } else {
                out.push(b as char);
            }
        }
    }
}

/// nginx's `NGX_ESCAPE_ARGS` set.
fn in_args(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || b"\"#%&+;<>?\\^`{|}".contains(&b)
}

/// What stays escaped in a redirect: `NGX_ESCAPE_ARGS`, less what `NGX_UNESCAPE_REDIRECT`
/// decodes again (the printable bytes above `%`).
fn in_redirect(b: u8) -> bool {
    in_args(b) && !(b > b'%' && b < 0x7f)
}

#[cfg(test)]
mod tests {
    use super::{in_args, in_redirect};

    #[test]
    fn the_args_escape_set_is_nginx_s() {
        // nginx's `NGX_ESCAPE_ARGS` bitmap (ngx_string.c), one bit per byte.
        let table: [u32; 8] = [
            0xffffffff, 0xd800086d, 0x50000000, 0xb8000001, 0xffffffff, 0xffffffff, 0xffffffff,
            0xffffffff,
        ];
        for b in 0..=255u8 {
            let nginx = table[usize::from(b >> 5)] & (1 << (b & 0x1f)) != 0;
            assert_eq!(in_args(b), nginx, "byte {b:#04x}");
        }
    }

    #[test]
    fn a_redirect_keeps_only_what_nginx_does_not_decode_again() {
        let kept: Vec<u8> = (0x20..0x7f).filter(|&b| in_redirect(b)).collect();
        assert_eq!(kept, b" \"#%");
        assert!(in_redirect(0x0a) && in_redirect(0x80) && !in_redirect(b'&'));
    }
}

/// `uninitialized_variable_warn` for one request: whether the configuration in force (the
/// server's in its rewrite phase, then the location's) warns, and the variables warned about
/// (nginx warns once per variable and request: the empty value is then kept).
#[derive(Debug, Default)]
pub struct Uninitialized {
    off: std::sync::atomic::AtomicBool,
    warned: std::sync::Mutex<Vec<Arc<str>>>,
}

impl Clone for Uninitialized {
    fn clone(&self) -> Self {
        Self {
            off: std::sync::atomic::AtomicBool::new(self.off.load(Ordering::Relaxed)),
            warned: std::sync::Mutex::new(
                self.warned.lock().map(|w| w.clone()).unwrap_or_default(),
            ),
        }
    }
}

impl Uninitialized {
    /// The configuration `conf` is in force from now on.
    pub fn set(&self, conf: &model::LocationConf) {
        let off = !conf.uninitialized_variable_warn;
        if self.off.load(Ordering::Relaxed) != off {
            self.off.store(off, Ordering::Relaxed);
        }
    }

    /// `name`, which only `set` declares, was read where no `set` gave it a value: nginx's
    /// warn line, once per request.
    pub fn warn(&self, name: &Arc<str>, ctx: &RequestCtx<'_>) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut warned) = self.warned.lock() else {
            return;
        };
        if warned.iter().any(|w| w == name) {
            return;
        }
        warned.push(name.clone());
        drop(warned);
        log!(
            Warn,
            "*{} using uninitialized \"{name}\" variable{}",
            ctx.conn.id,
            ctx.log_context(None)
        );
    }
}
