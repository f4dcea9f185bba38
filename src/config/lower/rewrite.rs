//! The rewrite module's directives (nginx's `ngx_http_rewrite_module`): `set`, `rewrite`,
//! `return`, `break` and `if`, lowered into one ordered [`Stmt`] list per level, as nginx
//! compiles them into one code array per level. The conditions of `if` are read as
//! `ngx_http_rewrite_if_condition` reads them, with its error messages.

use super::*;

impl Lower<'_> {
    /// A `set`, `return`, `rewrite` or `break` of a server, location or `if` block, appended to
    /// `script`. False when `d` is none of them.
    pub(super) fn script_directive(&mut self, d: &Directive, script: &mut Vec<Stmt>) -> bool {
        match d.name.as_str() {
            "set" => script.extend(self.set(d).map(Stmt::Set)),
            "return" => script.extend(self.ret(d).map(Stmt::Return)),
            "rewrite" => script.extend(self.rewrite(d).map(Stmt::Rewrite)),
            "break" => script.push(Stmt::Break),
            _ => return false,
        }
        true
    }

    /// `rewrite regex replacement [last|break|redirect|permanent];`
    fn rewrite(&mut self, d: &Directive) -> Option<RewriteSpec> {
        let (pattern, replacement) = (&d.args[0], &d.args[1]);
        if replacement.value.is_empty() {
            self.invalid("empty replacement".to_owned(), replacement.span);
            return None;
        }
        let regex = self.regex(&pattern.value, &pattern.value, pattern.span, |p| {
            crate::route::compile_regex(p, false).map_err(|e| e.to_string())
        })?;
        let (text, drop_args) = match replacement.value.strip_suffix('?') {
            Some(text) => (text.to_owned(), true),
            None => (replacement.value.clone(), false),
        };
        let absolute = ["http://", "https://", "$scheme"]
            .iter()
            .any(|p| replacement.value.starts_with(p));
        let mut flag = if absolute {
            RewriteFlag::Redirect
        } else {
            RewriteFlag::None
        };
        if let Some(arg) = d.args.get(2) {
            flag = match arg.value.as_str() {
                "last" if !absolute => RewriteFlag::Last,
                "break" if !absolute => RewriteFlag::Break,
                // nginx: an absolute replacement redirects whatever the flag says, with the
                // flag's status for `permanent`.
                "last" | "break" | "redirect" => RewriteFlag::Redirect,
                "permanent" => RewriteFlag::Permanent,
                _ => {
                    self.invalid(format!("invalid parameter \"{}\"", arg.value), arg.span);
                    return None;
                }
            };
        }
        Some(RewriteSpec {
            regex,
            pattern: pattern.value.clone(),
            replacement: text,
            drop_args,
            flag,
            location: self.at(d.span),
        })
    }

    /// `if (condition) { ... }` of a server (`location_if` is `None`) or a location. For a
    /// location, `location_if` gives what the implicit location of the block inherits: the
    /// location's settings, its kind (for `proxy_pass`) and its content handler.
    pub(super) fn if_block(
        &mut self,
        d: &Directive,
        location_if: Option<(&Frame, Option<&Action>)>,
        ups: &mut Upstreams,
    ) -> Option<Stmt> {
        let condition = self.condition(d);
        let in_server = location_if.is_none();
        let mut body = Vec::new();
        let mut own = Frame::default();
        let mut seen = Seen::default();
        let mut proxy = None;
        for c in d.block.as_deref().unwrap_or_default() {
            let Some(spec) = directives::lookup_in_if(&c.name, in_server) else {
                let known = directives::lookup(&c.name, Contexts::LOCATION).is_some()
                    || directives::lookup(&c.name, Contexts::HTTP).is_some()
                    || directives::NOT_YET.contains(&c.name.as_str());
                if known {
                    self.error(ErrorKind::NotAllowedHere(c.name.clone()), c.span);
                } else {
                    self.error(ErrorKind::UnknownDirective(c.name.clone()), c.span);
                }
                continue;
            };
            let ctx = if in_server {
                Contexts::SERVER
            } else {
                Contexts::LOCATION
            };
            let Some(spec) = self.check(c, ctx).filter(|s| s.name == spec.name) else {
                continue;
            };
            if self.script_directive(c, &mut body) {
                continue;
            }
            match c.name.as_str() {
                "proxy_pass" => {
                    if self.once(&mut seen, spec, c) {
                        // nginx: no URI part inside `if` (the kind says so to `proxy_pass`).
                        proxy = self.proxy_pass(c, LocationMatch::Named, ups);
                    }
                }
                _ => {
                    self.setting(c, spec, &mut own, &mut seen);
                }
            }
        }
        let condition = condition?;
        let conf = location_if.map(|(frame, action)| {
            let frame = own.inherit(frame);
            frame.conf(proxy.or_else(|| action.cloned()))
        });
        Some(Stmt::If(Box::new(IfSpec {
            condition,
            body,
            conf,
            location: self.at(d.span),
        })))
    }

    /// The condition of an `if`, from the words nginx's lexer made of it (`($a`, `=`, `b)`).
    fn condition(&mut self, d: &Directive) -> Option<Condition> {
        let args = &d.args;
        let invalid = |this: &mut Self, arg: &Arg, text: &str| {
            this.invalid(format!("invalid condition \"{text}\""), arg.span);
            None
        };
        let first = &args[0];
        let Some(opened) = first.value.strip_prefix('(') else {
            return invalid(self, first, &first.value);
        };
        // The words inside the parentheses, with their spans.
        let mut words: Vec<(String, &Arg)> = Vec::new();
        if !opened.is_empty() {
            words.push((opened.to_owned(), first));
        }
        for arg in &args[1..] {
            words.push((arg.value.clone(), arg));
        }
        let last = args.len() - 1;
        let closed = if last == 0 { opened } else { &args[last].value };
        let Some(inner_last) = closed.strip_suffix(')') else {
            return invalid(self, &args[last], closed);
        };
        match words.last_mut() {
            Some(w) if inner_last.is_empty() && last > 0 => {
                let _ = w;
                words.pop();
            }
            Some(w) => w.0 = inner_last.to_owned(),
            None => {}
        }
        let Some((word, arg)) = words.first().cloned() else {
            return invalid(self, first, "");
        };
        if word.len() > 1 && word.starts_with('$') {
            if words.len() != 1 && words.len() != 3 {
                return invalid(self, arg, &word);
            }
            let var = word.clone();
            if words.len() == 1 {
                return Some(Condition::Var(var));
            }
            let (op, op_arg) = words[1].clone();
            let value = words[2].0.clone();
            return match op.as_str() {
                "=" | "!=" => Some(Condition::Equals {
                    var,
                    value,
                    negate: op == "!=",
                }),
                "~" | "~*" | "!~" | "!~*" => {
                    let value_arg = words[2].1;
                    let regex = self.regex(&value, &value, value_arg.span, |p| {
                        crate::route::compile_regex(p, op.ends_with('*')).map_err(|e| e.to_string())
                    })?;
                    Some(Condition::Matches {
                        var,
                        regex,
                        pattern: value,
                        negate: op.starts_with('!'),
                    })
                }
                _ => {
                    self.invalid(format!("unexpected \"{op}\" in condition"), op_arg.span);
                    None
                }
            };
        }
        let (negate, test) = match word.as_bytes() {
            [b'-', t] => (false, *t),
            [b'!', b'-', t] => (true, *t),
            _ => return invalid(self, arg, &word),
        };
        if words.len() != 2 {
            return invalid(self, arg, &word);
        }
        let test = match test {
            b'f' => FileTest::File,
            b'd' => FileTest::Dir,
            b'e' => FileTest::Exists,
            b'x' => FileTest::Exec,
            _ => return invalid(self, arg, &word),
        };
        Some(Condition::File {
            path: words[1].0.clone(),
            test,
            negate,
        })
    }
}
