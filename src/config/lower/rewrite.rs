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
        let regex = self.script_regex(&pattern.value, false, pattern.span)?;
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

    /// A `rewrite` or `if` regex (PCRE's meaning, as locations'), or nginx's error for it.
    fn script_regex(
        &mut self,
        pattern: &str,
        caseless: bool,
        span: Span,
    ) -> Option<crate::route::Regex> {
        match crate::route::compile_regex(pattern, caseless) {
            Ok(re) => Some(re),
            Err(e) => {
                self.invalid(e.to_string(), span);
                None
            }
        }
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
        // A `)` of its own is no word; one at the end of a word is cut off it.
        if inner_last.is_empty() && last > 0 {
            words.pop();
        } else if let Some(w) = words.last_mut() {
            w.0 = inner_last.to_owned();
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
                    let span = words[2].1.span;
                    let regex = self.script_regex(&value, op.ends_with('*'), span)?;
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

#[cfg(test)]
mod tests {
    use crate::config::model::{Condition, FileTest, RewriteFlag, Stmt};
    use crate::config::{LoadOptions, parse_str};

    fn parse(server: &str) -> Result<crate::config::Config, Vec<String>> {
        let text = format!("events {{}} http {{ server {{ listen 127.0.0.1:1;\n{server}\n}} }}");
        let opts = LoadOptions {
            prefix: "/prefix/".into(),
            default_listen_port: 8000,
        };
        parse_str("/t/rw.conf", &text, &opts).map_err(|e| e.iter().map(|e| e.to_string()).collect())
    }

    fn error(server: &str) -> String {
        match parse(server) {
            Ok(_) => panic!("{server}: no error"),
            Err(e) => e.join("\n"),
        }
    }

    fn server_script(server: &str) -> Vec<Stmt> {
        let config = parse(server).unwrap_or_else(|e| panic!("{server}: {e:?}"));
        config.http.unwrap().servers[0].conf.script.clone()
    }

    #[test]
    fn conditions_read_as_nginx_reads_them() {
        let cases = [
            ("if ($a) { }", "var $a"),
            ("if ( $a ) { }", "var $a"),
            ("if ($a = b) { }", "= $a b"),
            ("if ( $a = \"b c\" ) { }", "= $a b c"),
            ("if ($a != '') { }", "!= $a "),
            (r"if ($host ~* ^www\.(.*)$) { }", r"~* $host ^www\.(.*)$"),
            ("if ($a !~ x) { }", "!~ $a x"),
            ("if (-f /x/$a) { }", "-f /x/$a"),
            ("if (!-d /x) { }", "!-d /x"),
            ("if (-e /x) { }", "-e /x"),
            ("if (!-x /x) { }", "!-x /x"),
        ];
        for (text, want) in cases {
            let script = server_script(&format!("set $a 1; {text}"));
            let Stmt::If(i) = &script[1] else {
                panic!("{text}: no if");
            };
            let got = match &i.condition {
                Condition::Var(v) => format!("var {v}"),
                Condition::Equals { var, value, negate } => {
                    format!("{} {var} {value}", if *negate { "!=" } else { "=" })
                }
                Condition::Matches {
                    var,
                    regex,
                    pattern,
                    negate,
                } => {
                    let caseless = regex.is_match(b"WWW.X") && pattern.contains("www");
                    let op = match (negate, caseless) {
                        (false, false) => "~",
                        (false, true) => "~*",
                        (true, _) => "!~",
                    };
                    format!("{op} {var} {pattern}")
                }
                Condition::File { path, test, negate } => {
                    let t = match test {
                        FileTest::File => 'f',
                        FileTest::Dir => 'd',
                        FileTest::Exists => 'e',
                        FileTest::Exec => 'x',
                    };
                    format!("{}-{t} {path}", if *negate { "!" } else { "" })
                }
            };
            assert_eq!(got, want, "{text}");
        }
    }

    #[test]
    fn bad_conditions_and_rewrites_get_nginx_s_messages() {
        // (server block text, nginx 1.22's message, the column it is reported at)
        let cases = [
            ("if $a { }", r#"invalid condition "$a""#, 4),
            ("if ($a ~~ b) { }", r#"unexpected "~~" in condition"#, 8),
            ("if (-z /x) { }", r#"invalid condition "-z""#, 4),
            ("if ($a b c d) { }", r#"invalid condition "$a""#, 4),
            ("if (-f) { }", r#"invalid condition "-f""#, 4),
            ("if ($a = b { }", r#"invalid condition "b""#, 10),
            ("rewrite ^ /x lst;", r#"invalid parameter "lst""#, 14),
            ("rewrite ^ \"\";", "empty replacement", 11),
            (
                "break 1;",
                r#"invalid number of arguments in "break" directive"#,
                1,
            ),
            (
                "rewrite ( /x;",
                r#"pcre2_compile() failed: unclosed group in "(""#,
                9,
            ),
            (
                "if ($uri ~ \"(\") { }",
                r#"pcre2_compile() failed: unclosed group in "(""#,
                12,
            ),
            (
                "location / { if ($uri) { if ($uri) { } } }",
                r#""if" directive is not allowed here"#,
                26,
            ),
            (
                "location / { if ($uri) { proxy_set_header A b; } }",
                r#""proxy_set_header" directive is not allowed here"#,
                26,
            ),
            (
                "if ($uri) { proxy_pass http://127.0.0.1:1; }",
                r#""proxy_pass" directive is not allowed here"#,
                13,
            ),
            (
                "if ($uri) { proxy_http_version 1.1; }",
                r#""proxy_http_version" directive is not allowed here"#,
                13,
            ),
            (
                "if ($uri) { foo_bar x; }",
                r#"unknown directive "foo_bar""#,
                13,
            ),
            (
                "location / { if ($uri) { proxy_pass http://127.0.0.1:1/x; } }",
                r#""proxy_pass" cannot have URI part in location given by regular expression, or inside named location, or inside "if" statement, or inside "limit_except" block"#,
                26,
            ),
        ];
        for (text, message, col) in cases {
            assert_eq!(
                error(text),
                format!("{message} in /t/rw.conf:2:{col}"),
                "{text}"
            );
        }
    }

    #[test]
    fn what_nginx_allows_inside_if_is_accepted() {
        parse(
            "location / { proxy_pass http://127.0.0.1:1;
               if ($uri) { add_header A b; access_log off; error_page 404 /x; proxy_pass http://127.0.0.1:2;
                           rewrite_log on; uninitialized_variable_warn off; set $b 1; rewrite ^ /y; return 204; break; } }
             if ($uri) { rewrite_log on; set $c 1; rewrite ^ /z last; return 301 /w; break; }",
        )
        .unwrap();
    }

    #[test]
    fn rewrite_flags_and_replacements() {
        let script = server_script(
            "rewrite ^/a /b;
             rewrite ^/a /b?x=1? last;
             rewrite ^/a /b break;
             rewrite ^/a /b redirect;
             rewrite ^/a /b permanent;
             rewrite ^/a http://x/ last;
             rewrite ^/a $scheme://x/;
             rewrite ^/a https://x/ permanent;",
        );
        let got: Vec<(RewriteFlag, String, bool)> = script
            .iter()
            .map(|s| match s {
                Stmt::Rewrite(r) => (r.flag, r.replacement.clone(), r.drop_args),
                _ => panic!("not a rewrite"),
            })
            .collect();
        use RewriteFlag::*;
        assert_eq!(
            got,
            [
                (None, "/b".into(), false),
                (Last, "/b?x=1".into(), true),
                (Break, "/b".into(), false),
                (Redirect, "/b".into(), false),
                (Permanent, "/b".into(), false),
                (Redirect, "http://x/".into(), false),
                (Redirect, "$scheme://x/".into(), false),
                (Permanent, "https://x/".into(), false),
            ]
        );
    }
}
