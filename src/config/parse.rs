//! Tokens → [`Directive`] trees, with `include` expanded where it appears, as nginx's
//! `ngx_conf_parse` and `ngx_conf_include` do.
//!
//! - The first syntax error stops parsing and is returned, located at `path:line:col`.
//! - Each file must balance its own braces: an included file is parsed as a whole file and its
//!   directives replace the `include` directive, keeping their own spans.
//! - A relative `include` path is taken from `conf_prefix` (the main file's directory), not from
//!   the including file. A path with `*`, `?` or `[` is a pattern, expanded as glob(3) would.
//! - Every file read is added to the [`SourceMap`], in reading order.

use std::fs;
use std::io;
use std::mem;
use std::path::{Path, PathBuf};

use super::ast::{Arg, Directive};
use super::error::{ConfigError, ErrorKind};
use super::glob;
use super::lexer::{Lexer, TokenKind};
use super::source::{FileId, SourceMap, Span};

/// How deep blocks may nest, counted across includes. nginx has no limit; ours keeps every
/// recursive walk of the tree (here and later) far from the end of the stack.
pub const MAX_DEPTH: usize = 100;

/// Reads `path` (the main file; read failure → the nginx `open() ... failed` error with location None) and every include.
pub fn parse_file(
    path: &Path,
    conf_prefix: &Path,
    sources: &mut SourceMap,
) -> Result<Vec<Directive>, ConfigError> {
    let text = read(path).map_err(|e| ConfigError::new(open_failed(path, &e), None))?;
    let mut parser = Parser::new(conf_prefix, sources);
    parser.parse_source(path.to_path_buf(), text, 0)
}

/// The same for in-memory text (tests, `-g` directives); `name` is used as the file path in locations.
pub fn parse_str(
    name: &str,
    text: &str,
    conf_prefix: &Path,
    sources: &mut SourceMap,
) -> Result<Vec<Directive>, ConfigError> {
    let file = sources.add(PathBuf::from(name), text.to_owned());
    Parser::new(conf_prefix, sources).parse_text(file, text, 0)
}

struct Parser<'a> {
    conf_prefix: &'a Path,
    sources: &'a mut SourceMap,
    /// Canonical paths of the files being parsed, outermost first: including one again is a cycle.
    including: Vec<PathBuf>,
}

impl<'a> Parser<'a> {
    fn new(conf_prefix: &'a Path, sources: &'a mut SourceMap) -> Self {
        Self {
            conf_prefix,
            sources,
            including: Vec::new(),
        }
    }

    /// Records a file that was read and parses it with `depth` blocks already open around it.
    fn parse_source(
        &mut self,
        path: PathBuf,
        text: String,
        depth: usize,
    ) -> Result<Vec<Directive>, ConfigError> {
        self.including.push(canonical(&path));
        let file = self.sources.add(path, text.clone());
        let parsed = self.parse_text(file, &text, depth);
        self.including.pop();
        parsed
    }

    /// One file's directives. Blocks are tracked on a stack, not by recursion, so nesting depth
    /// costs no call stack.
    fn parse_text(
        &mut self,
        file: FileId,
        text: &str,
        depth: usize,
    ) -> Result<Vec<Directive>, ConfigError> {
        let mut lexer = Lexer::new(text, file);
        let mut top = Vec::new();
        // Block directives still waiting for their `}`, innermost last, with their children.
        let mut open: Vec<(Directive, Vec<Directive>)> = Vec::new();
        let mut words: Vec<Arg> = Vec::new();
        loop {
            let token = lexer.next_token().map_err(|e| self.error(e.kind, e.span))?;
            let span = token.span;
            match token.kind {
                TokenKind::Word { value, quoted } => words.push(Arg {
                    value,
                    quoted,
                    span,
                }),
                TokenKind::Semicolon => {
                    let directive = take_directive(&mut words)
                        .ok_or_else(|| self.error(ErrorKind::Unexpected(";".into()), span))?;
                    if directive.name == "include" {
                        let included = self.include(&directive, depth + open.len())?;
                        innermost(&mut top, &mut open).extend(included);
                    } else {
                        innermost(&mut top, &mut open).push(directive);
                    }
                }
                TokenKind::OpenBrace => {
                    let directive = take_directive(&mut words)
                        .ok_or_else(|| self.error(ErrorKind::Unexpected("{".into()), span))?;
                    if directive.name == "include" {
                        let kind = ErrorKind::NotTerminated(directive.name);
                        return Err(self.error(kind, directive.span));
                    }
                    if depth + open.len() >= MAX_DEPTH {
                        return Err(self.error(ErrorKind::TooDeep(MAX_DEPTH), span));
                    }
                    open.push((directive, Vec::new()));
                }
                TokenKind::CloseBrace => {
                    let unexpected = || self.error(ErrorKind::Unexpected("}".into()), span);
                    if !words.is_empty() {
                        return Err(unexpected());
                    }
                    let (mut directive, children) = open.pop().ok_or_else(unexpected)?;
                    directive.block = Some(children);
                    innermost(&mut top, &mut open).push(directive);
                }
                TokenKind::Eof => {
                    if !words.is_empty() {
                        return Err(self.error(ErrorKind::UnexpectedEofInDirective, span));
                    }
                    if !open.is_empty() {
                        return Err(self.error(ErrorKind::UnexpectedEof("}"), span));
                    }
                    return Ok(top);
                }
            }
        }
    }

    /// The directives of the file(s) an `include` names, in nginx's order.
    fn include(
        &mut self,
        directive: &Directive,
        depth: usize,
    ) -> Result<Vec<Directive>, ConfigError> {
        let [arg] = directive.args.as_slice() else {
            let kind = ErrorKind::Arity(directive.name.clone());
            return Err(self.error(kind, directive.span));
        };
        let full = self.conf_prefix.join(&arg.value);
        let paths = if glob::is_pattern(&full.to_string_lossy()) {
            glob::expand(&full)
        } else {
            vec![full]
        };
        let mut directives = Vec::new();
        for path in paths {
            if self.including.contains(&canonical(&path)) {
                let kind = ErrorKind::IncludeCycle(path.display().to_string());
                return Err(self.error(kind, directive.span));
            }
            let text =
                read(&path).map_err(|e| self.error(open_failed(&path, &e), directive.span))?;
            directives.extend(self.parse_source(path, text, depth)?);
        }
        Ok(directives)
    }

    fn error(&self, kind: ErrorKind, span: Span) -> ConfigError {
        ConfigError::new(kind, Some(self.sources.location(span)))
    }
}

/// The directive the collected words make (the first word is its name), or `None` if there are
/// no words. Leaves `words` empty.
fn take_directive(words: &mut Vec<Arg>) -> Option<Directive> {
    let mut words = mem::take(words).into_iter();
    let name = words.next()?;
    Some(Directive {
        name: name.value,
        args: words.collect(),
        block: None,
        span: name.span,
    })
}

/// Where the next directive goes: the innermost open block, or the file's top level.
fn innermost<'v>(
    top: &'v mut Vec<Directive>,
    open: &'v mut [(Directive, Vec<Directive>)],
) -> &'v mut Vec<Directive> {
    match open.last_mut() {
        Some((_, children)) => children,
        None => top,
    }
}

/// The file's text. nginx reads bytes; bytes that are not UTF-8 become U+FFFD.
fn read(path: &Path) -> io::Result<String> {
    let bytes = fs::read(path)?;
    Ok(String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

/// The same file under any name, for cycle checks; the path itself if it cannot be resolved.
fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// nginx's `open() "path" failed (2: No such file or directory)`.
fn open_failed(path: &Path, error: &io::Error) -> ErrorKind {
    ErrorKind::Open {
        path: path.display().to_string(),
        reason: errno_text(error),
    }
}

/// `errno: strerror` as nginx prints it, for the errors a config read usually meets.
fn errno_text(error: &io::Error) -> String {
    let Some(code) = error.raw_os_error() else {
        return error.to_string();
    };
    let text = match code {
        2 => "No such file or directory".to_owned(),
        13 => "Permission denied".to_owned(),
        20 => "Not a directory".to_owned(),
        21 => "Is a directory".to_owned(),
        _ => {
            let text = error.to_string();
            let suffix = format!(" (os error {code})");
            text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
        }
    };
    format!("{code}: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn parse(text: &str) -> Result<Vec<Directive>, ConfigError> {
        parse_str(
            "test.conf",
            text,
            Path::new("/nonexistent"),
            &mut SourceMap::default(),
        )
    }

    fn error(text: &str) -> String {
        parse(text).expect_err("must not parse").to_string()
    }

    /// A tree on one line: `name arg "quoted";` and `name { ... }`.
    fn outline(directives: &[Directive]) -> String {
        let mut out = Vec::new();
        for d in directives {
            let mut words = vec![d.name.clone()];
            for arg in &d.args {
                words.push(match arg.quoted {
                    true => format!("\"{}\"", arg.value),
                    false => arg.value.clone(),
                });
            }
            match &d.block {
                None => out.push(format!("{};", words.join(" "))),
                Some(block) if block.is_empty() => out.push(format!("{} {{}}", words.join(" "))),
                Some(block) => out.push(format!("{} {{ {} }}", words.join(" "), outline(block))),
            }
        }
        out.join(" ")
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("imbang-parse-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, relative: &str, text: &str) -> PathBuf {
            let path = self.0.join(relative);
            fs::create_dir_all(path.parent().expect("has parent")).expect("create dirs");
            fs::write(&path, text).expect("write file");
            path
        }

        fn at(&self, relative: &str) -> String {
            self.0.join(relative).display().to_string()
        }

        /// Parses `relative` as the main file with this directory as the prefix.
        fn parse(&self, relative: &str) -> (Result<Vec<Directive>, ConfigError>, SourceMap) {
            let mut sources = SourceMap::default();
            let parsed = parse_file(&self.0.join(relative), &self.0, &mut sources);
            (parsed, sources)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn paths(sources: &SourceMap, dir: &TempDir) -> Vec<String> {
        let files = sources.files().iter();
        files
            .map(|f| {
                f.path
                    .strip_prefix(&dir.0)
                    .unwrap_or(&f.path)
                    .display()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn builds_nested_blocks_with_spans() {
        let text = "user nginx;\nhttp {\n  server { listen 80; location / {} }\n  types {}\n}\n";
        let parsed = parse(text).unwrap();
        assert_eq!(
            outline(&parsed),
            "user nginx; http { server { listen 80; location / {} } types {} }"
        );
        let server = &parsed[1].block.as_ref().unwrap()[0];
        assert_eq!((server.span.line, server.span.col), (3, 3));
        let listen = &server.block.as_ref().unwrap()[0];
        assert_eq!((listen.span.line, listen.span.col), (3, 12));
        assert_eq!((listen.args[0].span.line, listen.args[0].span.col), (3, 19));
        assert_eq!(parsed[1].block.as_ref().unwrap()[1].block, Some(vec![]));
        assert_eq!(parsed[0].block, None);
    }

    #[test]
    fn quoted_empty_and_variable_arguments() {
        let parsed = parse("proxy_set_header Accept-Encoding \"\";\nset $x ${host}_x;").unwrap();
        assert_eq!(
            parsed[0].args[1],
            Arg {
                value: String::new(),
                quoted: true,
                span: Span {
                    file: FileId(0),
                    line: 1,
                    col: 34
                }
            }
        );
        assert_eq!(
            outline(&parsed),
            "proxy_set_header Accept-Encoding \"\"; set $x ${host}_x;"
        );
        assert_eq!(
            outline(&parse("a '\\t' \"x\\\"y\" b\\\"c # c\n;").unwrap()),
            "a \"\t\" \"x\"y\" b\"c;"
        );
        assert_eq!(outline(&parse("").unwrap()), "");
        assert_eq!(outline(&parse("# only a comment").unwrap()), "");
    }

    #[test]
    fn syntax_errors_in_nginx_words() {
        let cases = [
            ("events {\n}\n}\n", "unexpected \"}\" in test.conf:3:1"),
            (
                "http {\n  listen 80\n}",
                "unexpected \"}\" in test.conf:3:1",
            ),
            (
                "http {\n  server {\n  }\n",
                "unexpected end of file, expecting \"}\" in test.conf:4:1",
            ),
            (
                "user nginx",
                "unexpected end of file, expecting \";\" or \"}\" in test.conf:1:11",
            ),
            (
                "user nginx # no semicolon\n",
                "unexpected end of file, expecting \";\" or \"}\" in test.conf:2:1",
            ),
            (
                "x 'abc",
                "unexpected end of file, expecting \";\" or \"}\" in test.conf:1:7",
            ),
            ("user nginx;\n;", "unexpected \";\" in test.conf:2:1"),
            ("  {", "unexpected \"{\" in test.conf:1:3"),
            ("return 200 \"a\"b;", "unexpected \"b\" in test.conf:1:15"),
            // The first error stops parsing.
            ("a;\n}\n;", "unexpected \"}\" in test.conf:2:1"),
            (
                "include a b;",
                "invalid number of arguments in \"include\" directive in test.conf:1:1",
            ),
            (
                "http {\n  include;\n}",
                "invalid number of arguments in \"include\" directive in test.conf:2:3",
            ),
            (
                "include a {}",
                "directive \"include\" is not terminated by \";\" in test.conf:1:1",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(error(text), want, "for {text:?}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        let ok = format!("{}{}", "a {".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
        let deep = "a {".repeat(MAX_DEPTH + 1);
        assert_eq!(
            error(&deep),
            format!(
                "too many nested blocks (more than 100) in test.conf:1:{}",
                3 * MAX_DEPTH + 3
            )
        );
    }

    #[test]
    fn include_is_relative_to_conf_prefix() {
        let dir = TempDir::new();
        dir.write("main.conf", "http {\n    include sites/a.conf;\n}\n");
        // Relative to the prefix, not to sites/.
        dir.write(
            "sites/a.conf",
            "server { listen 80; }\ninclude sites/b.conf;\n",
        );
        dir.write("sites/b.conf", "b;\n");
        let (parsed, sources) = dir.parse("main.conf");
        let parsed = parsed.unwrap();
        assert_eq!(outline(&parsed), "http { server { listen 80; } b; }");
        let server = &parsed[0].block.as_ref().unwrap()[0];
        assert_eq!(
            sources.location(server.span),
            format!("{}:1:1", dir.at("sites/a.conf"))
        );
        assert_eq!(
            paths(&sources, &dir),
            ["main.conf", "sites/a.conf", "sites/b.conf"]
        );
        assert_eq!(sources.files()[2].text, "b;\n");
    }

    #[test]
    fn glob_include_is_sorted_and_skips_dot_files_and_directories() {
        let dir = TempDir::new();
        dir.write(
            "main.conf",
            "include conf.d/*.conf;\ninclude sites-*/[a-b]?.conf;\n",
        );
        for name in ["b", "a", "c", ".hidden"] {
            dir.write(&format!("conf.d/{name}.conf"), &format!("{name};\n"));
        }
        dir.write("conf.d/x.txt", "x;\n");
        fs::create_dir_all(dir.0.join("conf.d/d.conf")).unwrap();
        dir.write("sites-2/b1.conf", "s2b1;\n");
        dir.write("sites-1/a1.conf", "s1a1;\n");
        dir.write("sites-1/c1.conf", "s1c1;\n");
        let (parsed, sources) = dir.parse("main.conf");
        assert_eq!(outline(&parsed.unwrap()), "a; b; c; s1a1; s2b1;");
        assert_eq!(
            paths(&sources, &dir),
            [
                "main.conf",
                "conf.d/a.conf",
                "conf.d/b.conf",
                "conf.d/c.conf",
                "sites-1/a1.conf",
                "sites-2/b1.conf"
            ]
        );
    }

    #[test]
    fn glob_without_match_includes_nothing() {
        let dir = TempDir::new();
        dir.write(
            "main.conf",
            "a;\ninclude nothing/*.conf;\ninclude *.none;\nb;\n",
        );
        let (parsed, sources) = dir.parse("main.conf");
        assert_eq!(outline(&parsed.unwrap()), "a; b;");
        assert_eq!(paths(&sources, &dir), ["main.conf"]);
    }

    #[test]
    fn unreadable_files_give_open_errors() {
        let dir = TempDir::new();
        let mut sources = SourceMap::default();
        let missing = parse_str(
            "test.conf",
            "\n  include missing.conf;",
            &dir.0,
            &mut sources,
        );
        assert_eq!(
            missing.unwrap_err().to_string(),
            format!(
                "open() \"{}\" failed (2: No such file or directory) in test.conf:2:3",
                dir.at("missing.conf")
            )
        );
        fs::create_dir_all(dir.0.join("sub")).unwrap();
        let directory = parse_str("test.conf", "include sub;", &dir.0, &mut sources);
        assert_eq!(
            directory.unwrap_err().to_string(),
            format!(
                "open() \"{}\" failed (21: Is a directory) in test.conf:1:1",
                dir.at("sub")
            )
        );
        let (main, _) = dir.parse("nginx.conf");
        let main = main.unwrap_err();
        assert_eq!(main.location, None);
        assert_eq!(
            main.to_string(),
            format!(
                "open() \"{}\" failed (2: No such file or directory)",
                dir.at("nginx.conf")
            )
        );
    }

    #[test]
    fn include_cycles_are_errors() {
        let dir = TempDir::new();
        dir.write("a.conf", "include b.conf;\n");
        dir.write("b.conf", "x;\ninclude ./a.conf;\n");
        let (parsed, sources) = dir.parse("a.conf");
        assert_eq!(
            parsed.unwrap_err().to_string(),
            format!(
                "include cycle: \"{}\" includes itself in {}:2:1",
                dir.at("./a.conf"),
                dir.at("b.conf")
            )
        );
        assert_eq!(paths(&sources, &dir), ["a.conf", "b.conf"]);

        // A pattern that matches the including file itself.
        let dir = TempDir::new();
        dir.write("self.conf", "a;\ninclude *.conf;\n");
        let (parsed, _) = dir.parse("self.conf");
        assert_eq!(
            parsed.unwrap_err().to_string(),
            format!(
                "include cycle: \"{}\" includes itself in {}:2:1",
                dir.at("self.conf"),
                dir.at("self.conf")
            )
        );
    }

    #[test]
    fn same_file_twice_is_not_a_cycle() {
        let dir = TempDir::new();
        dir.write("main.conf", "include x.conf;\ninclude x.conf;\n");
        dir.write("x.conf", "x;\n");
        let (parsed, sources) = dir.parse("main.conf");
        assert_eq!(outline(&parsed.unwrap()), "x; x;");
        assert_eq!(paths(&sources, &dir), ["main.conf", "x.conf", "x.conf"]);
    }

    #[test]
    fn errors_in_included_files_point_into_them() {
        let dir = TempDir::new();
        dir.write("main.conf", "http {\n  include inc/*.conf;\n}\n");
        dir.write("inc/a.conf", "server {\n  listen 80;\n");
        let (parsed, _) = dir.parse("main.conf");
        assert_eq!(
            parsed.unwrap_err().to_string(),
            format!(
                "unexpected end of file, expecting \"}}\" in {}:3:1",
                dir.at("inc/a.conf")
            )
        );
        // An included file cannot close a block opened by the file that includes it.
        dir.write("inc/a.conf", "a;\n}\n");
        let (parsed, _) = dir.parse("main.conf");
        assert_eq!(
            parsed.unwrap_err().to_string(),
            format!("unexpected \"}}\" in {}:2:1", dir.at("inc/a.conf"))
        );
    }

    #[test]
    fn seed_config_parses() {
        let dir = TempDir::new();
        let prefix = format!("{}/", dir.0.display());
        let main = include_str!("testdata/seed/nginx.conf").replace("/etc/nginx/", &prefix);
        dir.write("nginx.conf", &main);
        dir.write("mime.types", "types {\n    text/html html;\n}\n");
        fs::create_dir_all(dir.0.join("conf.d")).unwrap();
        let site = include_str!("testdata/seed/my.reverse-proxy.conf");
        dir.write("dumbways/my.reverse-proxy.conf", site);

        let (parsed, sources) = dir.parse("nginx.conf");
        let parsed = parsed.unwrap();
        assert_eq!(
            outline(&parsed),
            "user www-data; worker_processes auto; pid /run/nginx.pid; \
             events { worker_connections 768; } \
             http { sendfile on; tcp_nopush on; types_hash_max_size 2048; \
             types { text/html html; } default_type application/octet-stream; \
             access_log /var/log/nginx/access.log; error_log /var/log/nginx/error.log; \
             gzip on; \
             upstream domain { server 192.168.64.6:3000; server 192.168.64.2:3000; } \
             server { server_name mydomain.xyz; location / { proxy_pass http://domain; } } }"
        );
        assert_eq!(
            paths(&sources, &dir),
            ["nginx.conf", "mime.types", "dumbways/my.reverse-proxy.conf"]
        );
        let http = parsed[4].block.as_ref().unwrap();
        let server = http.last().unwrap();
        let location = &server.block.as_ref().unwrap()[1];
        let proxy_pass = &location.block.as_ref().unwrap()[0];
        assert_eq!(
            sources.location(proxy_pass.span),
            format!("{}:9:14", dir.at("dumbways/my.reverse-proxy.conf"))
        );
    }

    #[test]
    fn adversarial_input_is_an_error_not_a_panic() {
        let eof = "unexpected end of file, expecting \";\" or \"}\"";
        let cases = [
            ("\"abc", eof),
            ("'abc", eof),
            ("\\", eof),
            ("a \\", eof),
            ("a ${", eof),
            ("${", eof),
            ("\"a\\", eof),
            ("a ${b", eof),
            ("}}}", "unexpected \"}\""),
            ("{{{", "unexpected \"{\""),
            ("a {{", "unexpected \"{\""),
            ("a \"b\"\"c\"", "unexpected \"\"\""),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text);
            assert_eq!(e.kind.to_string(), want, "for {text:?}");
        }
        // Random mixes of the characters that matter must return, whatever they return.
        let alphabet: Vec<char> = "a $\"'\\{};#\n)é".chars().collect();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut text = String::new();
            for _ in 0..(seed % 40) {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                text.push(alphabet[(seed >> 33) as usize % alphabet.len()]);
            }
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let _ = parse(&text);
        }
        assert!(parse(&"a {".repeat(100_000)).is_err());
    }
}
