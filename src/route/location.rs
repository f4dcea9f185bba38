//! `location` matching within one server, with nginx's precedence.

use super::Regex;

use super::{RouteError, RouteErrorKind, compile_regex};
use crate::config::model::{LocationMatch, Warning};

/// One `location` block as the config wrote it, with its nested blocks.
#[derive(Clone, Debug)]
pub struct LocationEntry<T> {
    pub kind: LocationMatch,
    /// The path (`/images/`), regex (`\.php$`) or name (`@fallback`), without the modifier.
    pub pattern: String,
    pub value: T,
    /// Nested `location` blocks in file order.
    pub children: Vec<LocationEntry<T>>,
    /// `path:line:col` of the `location` directive, for errors.
    pub location: String,
}

/// The `location`s of one server, built once per snapshot.
///
/// [`find`](Self::find) follows `ngx_http_core_find_location`, at each nesting level:
///
/// 1. Among `=` and prefix (plain and `^~`) locations: an `=` equal to the URI wins at once.
///    Otherwise the longest matching prefix is remembered, and if it has nested locations
///    the search repeats among them (a match found there replaces it; an `=` or regex match
///    there ends the whole search).
/// 2. Unless the prefix remembered *at this level* is `^~`, this level's regex locations are
///    tried in config order; the first match wins (and its nested regexes are searched the
///    same way). A `^~` nested deeper does not stop the regexes of outer levels.
/// 3. Else the remembered prefix, if any.
///
/// Prefix matching is case-sensitive, byte by byte (nginx on Linux). Prefix locations of a
/// level are a list sorted longest first and scanned, which is fine for tens of locations;
/// a trie can replace it without changing results.
///
/// As in nginx, `=` and prefix locations nested inside a regex location are never matched
/// (nginx builds no prefix tree for them); [`warnings`](Self::warnings) names them.
#[derive(Debug)]
pub struct LocationTree<T> {
    root: Level<T>,
    named: Vec<(Box<str>, T)>,
    warnings: Vec<Warning>,
}

#[derive(Debug)]
struct Level<T> {
    /// `=` and prefix locations, one per distinct path, longest path first.
    statics: Vec<Static<T>>,
    /// Regex locations in config order.
    regexes: Vec<RegexLocation<T>>,
}

/// An `=` and/or a prefix location with the same path (nginx joins them into one node).
#[derive(Debug)]
struct Static<T> {
    path: Box<str>,
    exact: Option<T>,
    prefix: Option<Node<T>>,
}

#[derive(Debug)]
struct Node<T> {
    value: T,
    /// `^~`: when this is the longest prefix, its level's regexes are not tried.
    no_regex: bool,
    children: Level<T>,
}

#[derive(Debug)]
struct RegexLocation<T> {
    regex: Regex,
    node: Node<T>,
}

impl<T> Level<T> {
    fn empty() -> Self {
        Self {
            statics: Vec::new(),
            regexes: Vec::new(),
        }
    }
}

enum StaticMatch<'a, T> {
    Exact(&'a T),
    Prefix(&'a Node<T>),
    None,
}

impl<T> LocationTree<T> {
    /// Builds the tree of one server's `location`s (config order).
    ///
    /// Fails, with nginx's message and the offending entry's location, on a regex that does
    /// not compile, a nested location nginx forbids (inside `=` or `@name`, a named one not
    /// at server level, a prefix not starting with its parent's pattern), or two `=` / two
    /// prefix locations with the same path at one level. Errors come in nginx's order:
    /// per-entry checks in file order first, duplicates after (innermost levels first).
    pub fn build(entries: Vec<LocationEntry<T>>) -> Result<Self, RouteError> {
        let checked = check(entries, None)?;
        let mut named = Vec::new();
        let mut warnings = Vec::new();
        let root = build_level(checked, Some(&mut named), &mut warnings)?;
        Ok(Self {
            root,
            named,
            warnings,
        })
    }

    /// The location for `uri` (as [`super::normalize_path`] returns it); `None` when no
    /// location matches, in which case the server level's own settings apply (nginx).
    pub fn find(&self, uri: &str) -> Option<&T> {
        let mut found = None;
        search(&self.root, uri.as_bytes(), &mut found);
        found
    }

    /// The server-level `location @name`, for `error_page` / `try_files` redirects. The
    /// leading `@` is optional on both sides. With two of the same name, the first wins (nginx).
    pub fn named(&self, name: &str) -> Option<&T> {
        let name = name.strip_prefix('@').unwrap_or(name);
        self.named
            .iter()
            .find(|(key, _)| **key == *name)
            .map(|(_, value)| value)
    }

    /// Locations that can never match (see the type's docs), in file order of their parents.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }
}

/// One level of `ngx_http_core_find_location`. Returns true when the search is over
/// (an `=` or a regex matched, here or deeper); `found` holds the best location so far.
fn search<'a, T>(level: &'a Level<T>, uri: &[u8], found: &mut Option<&'a T>) -> bool {
    let mut no_regex = false;
    match level.find_static(uri) {
        StaticMatch::Exact(value) => {
            *found = Some(value);
            return true;
        }
        StaticMatch::Prefix(node) => {
            *found = Some(&node.value);
            no_regex = node.no_regex;
            if search(&node.children, uri, found) {
                return true;
            }
        }
        StaticMatch::None => {}
    }
    if !no_regex && let Some(location) = level.regexes.iter().find(|l| l.regex.is_match(uri)) {
        *found = Some(&location.node.value);
        search(&location.node.children, uri, found);
        return true;
    }
    false
}

impl<T> Level<T> {
    fn find_static(&self, uri: &[u8]) -> StaticMatch<'_, T> {
        let start = self.statics.partition_point(|s| s.path.len() > uri.len());
        for candidate in &self.statics[start..] {
            if !uri.starts_with(candidate.path.as_bytes()) {
                continue;
            }
            if candidate.path.len() == uri.len()
                && let Some(value) = &candidate.exact
            {
                return StaticMatch::Exact(value);
            }
            if let Some(node) = &candidate.prefix {
                return StaticMatch::Prefix(node);
            }
        }
        StaticMatch::None
    }
}

/// An entry whose own rules passed (regex compiled, nesting allowed).
struct Checked<T> {
    kind: LocationMatch,
    pattern: String,
    value: T,
    location: String,
    regex: Option<Regex>,
    children: Vec<Checked<T>>,
}

/// An `=` or prefix entry on its way into a [`Level`]; `C` is its children, checked or built.
struct StaticEntry<T, C> {
    exact: bool,
    no_regex: bool,
    path: String,
    value: T,
    location: String,
    children: C,
}

/// The checks nginx makes while parsing each `location`, in file order.
fn check<T>(
    entries: Vec<LocationEntry<T>>,
    parent: Option<(LocationMatch, &str)>,
) -> Result<Vec<Checked<T>>, RouteError> {
    let mut checked = Vec::with_capacity(entries.len());
    for entry in entries {
        let fail = |kind| RouteError::new(kind, Some(&entry.location));
        let regex = match entry.kind {
            LocationMatch::Regex { case_insensitive } => {
                Some(compile_regex(&entry.pattern, case_insensitive).map_err(fail)?)
            }
            _ => None,
        };
        if let Some((parent_kind, parent_pattern)) = parent {
            let name = || entry.pattern.clone();
            let parent = || parent_pattern.to_owned();
            if parent_kind == LocationMatch::Exact {
                return Err(fail(RouteErrorKind::InsideExact {
                    name: name(),
                    parent: parent(),
                }));
            }
            if parent_kind == LocationMatch::Named {
                return Err(fail(RouteErrorKind::InsideNamed {
                    name: name(),
                    parent: parent(),
                }));
            }
            if entry.kind == LocationMatch::Named {
                return Err(fail(RouteErrorKind::NamedNotAtServerLevel(name())));
            }
            if regex.is_none() && !entry.pattern.starts_with(parent_pattern) {
                return Err(fail(RouteErrorKind::Outside {
                    name: name(),
                    parent: parent(),
                }));
            }
        }
        let children = check(entry.children, Some((entry.kind, &entry.pattern)))?;
        checked.push(Checked {
            kind: entry.kind,
            pattern: entry.pattern,
            value: entry.value,
            location: entry.location,
            regex,
            children,
        });
    }
    Ok(checked)
}

/// Builds one level as `ngx_http_init_locations` / `ngx_http_init_static_location_trees` do:
/// prefix locations sorted by path (`=` before a prefix of the same path), their nested
/// levels first, then this level's duplicates. `named` is `Some` at server level only.
fn build_level<T>(
    entries: Vec<Checked<T>>,
    mut named: Option<&mut Vec<(Box<str>, T)>>,
    warnings: &mut Vec<Warning>,
) -> Result<Level<T>, RouteError> {
    let mut statics = Vec::new();
    let mut regexes = Vec::new();
    for entry in entries {
        match (entry.kind, entry.regex) {
            (LocationMatch::Named, _) => {
                // check() only lets named locations through at server level.
                if let Some(named) = named.as_deref_mut() {
                    let name = entry.pattern.strip_prefix('@').unwrap_or(&entry.pattern);
                    named.push((name.into(), entry.value));
                }
            }
            (_, Some(regex)) => {
                let children = regex_children(entry.children, &entry.pattern, warnings);
                regexes.push(RegexLocation {
                    regex,
                    node: Node {
                        value: entry.value,
                        no_regex: false,
                        children,
                    },
                });
            }
            (kind, None) => statics.push(StaticEntry {
                exact: kind == LocationMatch::Exact,
                no_regex: kind == LocationMatch::PrefixNoRegex,
                path: entry.pattern,
                value: entry.value,
                location: entry.location,
                children: entry.children,
            }),
        }
    }

    statics.sort_by(|a, b| a.path.cmp(&b.path).then(b.exact.cmp(&a.exact)));
    let mut built = Vec::with_capacity(statics.len());
    for entry in statics {
        let children = build_level(entry.children, None, warnings)?;
        built.push(StaticEntry {
            exact: entry.exact,
            no_regex: entry.no_regex,
            path: entry.path,
            value: entry.value,
            location: entry.location,
            children,
        });
    }

    let mut joined: Vec<Static<T>> = Vec::with_capacity(built.len());
    for StaticEntry {
        exact,
        no_regex,
        path,
        value,
        location,
        children,
    } in built
    {
        let node = |value| Node {
            value,
            no_regex,
            children,
        };
        match joined.last_mut() {
            Some(same) if *same.path == *path => {
                if (exact && same.exact.is_some()) || (!exact && same.prefix.is_some()) {
                    let kind = RouteErrorKind::DuplicateLocation(path);
                    return Err(RouteError::new(kind, Some(&location)));
                }
                if exact {
                    same.exact = Some(value);
                } else {
                    same.prefix = Some(node(value));
                }
            }
            _ => {
                let (exact, prefix) = if exact {
                    (Some(value), None)
                } else {
                    (None, Some(node(value)))
                };
                joined.push(Static {
                    path: path.into(),
                    exact,
                    prefix,
                });
            }
        }
    }
    joined.sort_by_key(|s| std::cmp::Reverse(s.path.len()));

    Ok(Level {
        statics: joined,
        regexes,
    })
}

/// The nested level of a regex location: only its regex children can ever match.
fn regex_children<T>(
    entries: Vec<Checked<T>>,
    parent: &str,
    warnings: &mut Vec<Warning>,
) -> Level<T> {
    let mut level = Level::empty();
    for entry in entries {
        match entry.regex {
            Some(regex) => {
                let children = regex_children(entry.children, &entry.pattern, warnings);
                level.regexes.push(RegexLocation {
                    regex,
                    node: Node {
                        value: entry.value,
                        no_regex: false,
                        children,
                    },
                });
            }
            None => warnings.push(Warning {
                message: format!(
                    "location \"{}\" inside the regex location \"{parent}\" is never matched \
                     (nginx searches only regex locations there)",
                    entry.pattern
                ),
                location: entry.location,
            }),
        }
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;

    type Entry = LocationEntry<&'static str>;

    fn entry(kind: LocationMatch, pattern: &str, value: &'static str) -> Entry {
        LocationEntry {
            kind,
            pattern: pattern.into(),
            value,
            children: Vec::new(),
            location: "t.conf:1:1".into(),
        }
    }
    fn exact(path: &str, value: &'static str) -> Entry {
        entry(LocationMatch::Exact, path, value)
    }
    fn prefix(path: &str, value: &'static str) -> Entry {
        entry(LocationMatch::Prefix, path, value)
    }
    fn stop(path: &str, value: &'static str) -> Entry {
        entry(LocationMatch::PrefixNoRegex, path, value)
    }
    fn re(pattern: &str, value: &'static str) -> Entry {
        let kind = LocationMatch::Regex {
            case_insensitive: false,
        };
        entry(kind, pattern, value)
    }
    fn re_i(pattern: &str, value: &'static str) -> Entry {
        let kind = LocationMatch::Regex {
            case_insensitive: true,
        };
        entry(kind, pattern, value)
    }
    fn named(name: &str, value: &'static str) -> Entry {
        entry(LocationMatch::Named, name, value)
    }
    fn with(mut parent: Entry, children: Vec<Entry>) -> Entry {
        parent.children = children;
        parent
    }
    fn at(mut entry: Entry, location: &str) -> Entry {
        entry.location = location.into();
        entry
    }

    #[test]
    fn location_precedence_follows_nginx() {
        let tree = LocationTree::build(vec![
            exact("/", "exact-root"),
            prefix("/", "root"),
            prefix("/docs/", "docs"),
            stop("/images/", "images"),
            re_i(r"\.(gif|jpg)$", "img"),
            re(r"\.php$", "php"),
            re(r"^/docs/.*\.php$", "docs-php"),
            with(
                prefix("/api/", "api"),
                vec![
                    prefix("/api/v1/", "api-v1"),
                    re(r"\.json$", "api-json"),
                    exact("/api/health", "api-health"),
                ],
            ),
            with(
                stop("/static/", "static"),
                vec![re(r"\.css$", "static-css")],
            ),
            exact("/exact", "exact"),
            prefix("/exact", "exact-prefix"),
            with(
                prefix("/n/", "n"),
                vec![
                    with(stop("/n/stop/", "n-stop"), vec![re(r"\.z$", "n-stop-z")]),
                    re(r"\.y$", "n-y"),
                ],
            ),
            re(r"\.x$", "x"),
            prefix("/Case/", "case"),
            named("@fallback", "fallback"),
        ])
        .unwrap();

        let cases = [
            ("/", "exact-root"),         // `=` beats everything
            ("/index.html", "root"),     // longest prefix
            ("/a.gif", "img"),           // a regex beats a plain prefix
            ("/a.GIF", "img"),           // `~*` ignores case
            ("/a.PHP", "root"),          // `~` does not
            ("/images/a.gif", "images"), // `^~` stops the regex search
            ("/images", "root"),         // `/images/` needs its slash
            ("/docs/a.html", "docs"),
            ("/docs/a.php", "php"), // first regex in config order
            ("/api/x", "api"),
            ("/api/v1/x", "api-v1"),        // nested prefix, longer
            ("/api/v1/x.json", "api-json"), // nested regex beats nested prefix
            ("/api/health", "api-health"),  // nested `=`
            ("/api/health/x", "api"),
            ("/api/x.php", "php"), // outer regex beats the nested prefix
            ("/api/v1/x.php", "php"),
            ("/static/a.css", "static-css"), // `^~` stops only its own level's regexes
            ("/static/a.gif", "static"),
            ("/exact", "exact"), // `=` and prefix with the same path
            ("/exact/x", "exact-prefix"),
            ("/exactly", "exact-prefix"),
            ("/n/a", "n"),
            ("/n/stop/a", "n-stop"),
            ("/n/a.y", "n-y"),
            ("/n/stop/a.y", "n-stop"), // nested `^~` stops its own level's regexes,
            ("/n/stop/a.z", "n-stop-z"), // not those nested in it,
            ("/n/stop/a.x", "x"),      // nor the outer level's
            ("/n/a.x", "x"),
            ("/Case/a", "case"),
            ("/case/a", "root"),    // prefixes are case-sensitive
            ("/@fallback", "root"), // named locations are not searched
        ];
        for (uri, want) in cases {
            assert_eq!(tree.find(uri), Some(&want), "uri {uri}");
        }
        assert!(tree.warnings().is_empty());
    }

    #[test]
    fn no_match_is_none_and_regex_only_servers_work() {
        let tree = LocationTree::build(vec![
            prefix("/app/", "app"),
            exact("/ping", "ping"),
            re(r"^/r", "r"),
        ])
        .unwrap();
        let cases = [
            ("/", None),
            ("/app", None),
            ("/ping/", None), // `=` needs equality
            ("/pin", None),
            ("/ping", Some("ping")),
            ("/app/x", Some("app")),
            ("/rest", Some("r")),
        ];
        for (uri, want) in cases {
            assert_eq!(tree.find(uri).copied(), want, "uri {uri}");
        }
        let empty = LocationTree::<&str>::build(Vec::new()).unwrap();
        assert_eq!(empty.find("/"), None);
    }

    #[test]
    fn regex_locations_nest_but_hide_their_prefix_children() {
        let tree = LocationTree::build(vec![
            prefix("/", "root"),
            with(
                re("^/re/", "re"),
                vec![
                    with(re(r"\.txt$", "re-txt"), vec![re(r"^/re/a", "re-txt-a")]),
                    at(prefix("^/re/dead", "dead"), "t.conf:9:9"),
                    at(exact("^/re/", "dead-exact"), "t.conf:10:9"),
                ],
            ),
        ])
        .unwrap();
        let cases = [
            ("/re/x", "re"),
            ("/re/x.txt", "re-txt"),
            ("/re/a.txt", "re-txt-a"),
            ("/re/dead", "re"),
            ("/x.txt", "root"),
        ];
        for (uri, want) in cases {
            assert_eq!(tree.find(uri), Some(&want), "uri {uri}");
        }
        let warnings: Vec<(&str, &str)> = tree
            .warnings()
            .iter()
            .map(|w| (w.message.as_str(), w.location.as_str()))
            .collect();
        assert_eq!(
            warnings,
            [
                (
                    r#"location "^/re/dead" inside the regex location "^/re/" is never matched (nginx searches only regex locations there)"#,
                    "t.conf:9:9"
                ),
                (
                    r#"location "^/re/" inside the regex location "^/re/" is never matched (nginx searches only regex locations there)"#,
                    "t.conf:10:9"
                ),
            ]
        );
    }

    #[test]
    fn named_locations() {
        let tree = LocationTree::build(vec![
            named("@fallback", "fallback"),
            named("@other", "other"),
            named("@fallback", "second"),
            prefix("/", "root"),
        ])
        .unwrap();
        let cases = [
            ("@fallback", Some("fallback")), // the first of two with one name
            ("fallback", Some("fallback")),
            ("@other", Some("other")),
            ("@none", None),
            ("/", None),
        ];
        for (name, want) in cases {
            assert_eq!(tree.named(name).copied(), want, "name {name}");
        }
    }

    #[test]
    fn build_errors_read_like_nginx() {
        let cases: Vec<(Vec<Entry>, &str)> = vec![
            (
                vec![prefix("/x", "1"), at(prefix("/x", "2"), "a.conf:2:5")],
                r#"duplicate location "/x" in a.conf:2:5"#,
            ),
            (
                vec![
                    at(stop("/x", "1"), "a.conf:1:5"),
                    at(prefix("/x", "2"), "a.conf:2:5"),
                ],
                r#"duplicate location "/x" in a.conf:2:5"#,
            ),
            (
                vec![
                    exact("/x", "1"),
                    prefix("/x", "2"),
                    at(exact("/x", "3"), "a.conf:3:5"),
                ],
                r#"duplicate location "/x" in a.conf:3:5"#,
            ),
            (
                // `=` sort before prefixes, so the second `=` is the one named
                vec![
                    prefix("/x", "1"),
                    at(prefix("/x", "2"), "a.conf:2:5"),
                    exact("/x", "3"),
                    at(exact("/x", "4"), "a.conf:4:5"),
                ],
                r#"duplicate location "/x" in a.conf:4:5"#,
            ),
            (
                // nested levels are checked before their parent's level
                vec![
                    prefix("/z", "1"),
                    at(prefix("/z", "2"), "a.conf:2:5"),
                    with(
                        prefix("/a", "3"),
                        vec![prefix("/a/b", "4"), at(stop("/a/b", "5"), "a.conf:5:9")],
                    ),
                ],
                r#"duplicate location "/a/b" in a.conf:5:9"#,
            ),
            (
                // per-entry checks come before duplicates, wherever they are
                vec![
                    prefix("/x", "1"),
                    prefix("/x", "2"),
                    with(prefix("/a", "3"), vec![at(prefix("/b", "4"), "a.conf:4:9")]),
                ],
                r#"location "/b" is outside location "/a" in a.conf:4:9"#,
            ),
            (
                vec![at(re("a(", "1"), "a.conf:1:5")],
                r#"pcre2_compile() failed: unclosed group in "a(" in a.conf:1:5"#,
            ),
            (
                vec![with(
                    exact("/a", "1"),
                    vec![at(prefix("/a/b", "2"), "a.conf:2:9")],
                )],
                r#"location "/a/b" cannot be inside the exact location "/a" in a.conf:2:9"#,
            ),
            (
                vec![with(named("@n", "1"), vec![at(re("x", "2"), "a.conf:2:9")])],
                r#"location "x" cannot be inside the named location "@n" in a.conf:2:9"#,
            ),
            (
                vec![with(
                    prefix("/a", "1"),
                    vec![at(named("@n", "2"), "a.conf:2:9")],
                )],
                r#"named location "@n" can be on the server level only in a.conf:2:9"#,
            ),
            (
                vec![with(
                    prefix("/ab", "1"),
                    vec![at(prefix("/a", "2"), "a.conf:2:9")],
                )],
                r#"location "/a" is outside location "/ab" in a.conf:2:9"#,
            ),
            (
                // a prefix inside a regex is compared with the regex text, as in nginx
                vec![with(
                    re(r"\.php$", "1"),
                    vec![at(prefix("/x", "2"), "a.conf:2:9")],
                )],
                r#"location "/x" is outside location "\.php$" in a.conf:2:9"#,
            ),
            (
                // the regex of an entry is compiled before its nesting is checked
                vec![with(exact("/a", "1"), vec![at(re("(", "2"), "a.conf:2:9")])],
                r#"pcre2_compile() failed: unclosed group in "(" in a.conf:2:9"#,
            ),
        ];
        for (entries, want) in cases {
            let error = LocationTree::build(entries).unwrap_err();
            assert_eq!(error.to_string(), want);
        }
    }

    #[test]
    fn allowed_nesting_and_joins_build() {
        // `=` and a prefix with one path join; regexes anywhere under a prefix; a nested
        // prefix equal to its parent's path; duplicate regexes and prefixes under a regex
        // (nginx never looks at the latter).
        let tree = LocationTree::build(vec![
            exact("/a", "a-exact"),
            with(
                stop("/a", "a"),
                vec![
                    prefix("/a", "a-inner"),
                    re("^/b", "b-re"),
                    exact("/a/x", "ax"),
                ],
            ),
            re("^/r", "r1"),
            re("^/r", "r2"),
            with(
                re("^/q", "q"),
                vec![prefix("^/q/a", "1"), prefix("^/q/a", "2")],
            ),
        ])
        .unwrap();
        let cases = [
            ("/a", "a-exact"),
            ("/a/", "a-inner"),
            ("/a/x", "ax"),
            ("/r", "r1"),
        ];
        for (uri, want) in cases {
            assert_eq!(tree.find(uri), Some(&want), "uri {uri}");
        }
        assert_eq!(tree.warnings().len(), 2);
    }
}
