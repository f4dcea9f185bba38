//! File-name patterns for `include`, as nginx's `glob(pattern, 0, ...)` call sees them.
//!
//! `*`, `?`, `[abc]`, `[a-z]`, `[!a]` (or `[^a]`) and `\` escapes, in any path component.
//! With no flags, glob(3) sorts its results (byte order, as nginx runs in the C locale) and a
//! leading `.` in a name must be matched by a literal `.`.

use std::fs;
use std::path::{Component, Path, PathBuf};

/// True if nginx would expand `path` as a pattern (it contains `*`, `?` or `[`).
pub fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

/// The files matching `pattern`, sorted by their bytes. Directories are left out; unreadable
/// directories and no match at all give no paths, never an error.
pub fn expand(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let Component::Normal(part) = component else {
            found.iter_mut().for_each(|p| p.push(component));
            continue;
        };
        let part = part.to_string_lossy();
        let atoms = parse(&part);
        if !atoms.iter().any(Atom::is_wild) {
            let literal: String = atoms.iter().filter_map(Atom::literal).collect();
            found.iter_mut().for_each(|p| p.push(&literal));
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            let read_from = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let Ok(entries) = fs::read_dir(read_from) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if matches(&atoms, &name.to_string_lossy()) {
                    next.push(dir.join(name));
                }
            }
        }
        found = next;
    }
    // `a/*/` asks for directories only, which are all left out.
    if pattern.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return Vec::new();
    }
    // A broken symlink stays, so opening it fails as it does in nginx.
    found.retain(|p| match fs::metadata(p) {
        Ok(meta) => !meta.is_dir(),
        Err(_) => fs::symlink_metadata(p).is_ok(),
    });
    found.sort_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    found
}

/// One element of a pattern component.
#[derive(Debug, PartialEq)]
enum Atom {
    Char(char),
    AnyChar,
    AnyRun,
    Set {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Atom {
    fn is_wild(&self) -> bool {
        !matches!(self, Atom::Char(_))
    }

    fn literal(&self) -> Option<char> {
        match self {
            Atom::Char(c) => Some(*c),
            _ => None,
        }
    }

    /// Whether this single-character atom matches `c` (never called for `AnyRun`).
    fn accepts(&self, c: char) -> bool {
        match self {
            Atom::Char(want) => *want == c,
            Atom::AnyChar => true,
            Atom::AnyRun => false,
            Atom::Set { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

/// Splits a pattern component into atoms. A `[` with no closing `]` is an ordinary character.
fn parse(pattern: &str) -> Vec<Atom> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut atoms = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let atom = match chars[i] {
            '*' => Atom::AnyRun,
            '?' => Atom::AnyChar,
            '\\' if i + 1 < chars.len() => {
                i += 1;
                Atom::Char(chars[i])
            }
            '[' => match parse_set(&chars[i + 1..]) {
                Some((set, used)) => {
                    i += used;
                    set
                }
                None => Atom::Char('['),
            },
            c => Atom::Char(c),
        };
        atoms.push(atom);
        i += 1;
    }
    atoms
}

/// A bracket expression after its `[`: the atom and how many characters it used, `]` included.
fn parse_set(chars: &[char]) -> Option<(Atom, usize)> {
    let mut i = 0;
    let negated = matches!(chars.first(), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut lo = *chars.get(i)?;
        if lo == ']' && !first {
            return Some((Atom::Set { negated, ranges }, i + 1));
        }
        first = false;
        if lo == '\\' {
            i += 1;
            lo = *chars.get(i)?;
        }
        i += 1;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
            hi = chars[i + 1];
            i += 2;
            if hi == '\\' {
                hi = *chars.get(i)?;
                i += 1;
            }
        }
        ranges.push((lo, hi));
    }
}

/// Whether `name` matches the whole pattern; a leading `.` needs a literal `.`.
fn matches(atoms: &[Atom], name: &str) -> bool {
    let name: Vec<char> = name.chars().collect();
    if name.first() == Some(&'.') && atoms.first() != Some(&Atom::Char('.')) {
        return false;
    }
    let (mut a, mut n) = (0, 0);
    // After a `*`: the atom after it, and the name position it currently stands for.
    let mut backtrack: Option<(usize, usize)> = None;
    while n < name.len() {
        match atoms.get(a) {
            Some(Atom::AnyRun) => {
                a += 1;
                backtrack = Some((a, n));
                continue;
            }
            Some(atom) if atom.accepts(name[n]) => {
                a += 1;
                n += 1;
                continue;
            }
            _ => {}
        }
        let Some((after_star, from)) = backtrack else {
            return false;
        };
        a = after_star;
        n = from + 1;
        backtrack = Some((after_star, n));
    }
    atoms[a..].iter().all(|atom| *atom == Atom::AnyRun)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, name: &str) -> bool {
        matches(&parse(pattern), name)
    }

    #[test]
    fn wildcards() {
        assert!(m("*.conf", "a.conf"));
        assert!(!m("*.conf", ".conf"));
        assert!(!m("*.conf", "a.conf~"));
        assert!(m("a*b*c", "aXbYbZc"));
        assert!(!m("a*b*c", "aXbYbZ"));
        assert!(m("?.c", "x.c"));
        assert!(!m("?.c", "xy.c"));
        assert!(m("*", "anything"));
        assert!(m("**", ""));
    }

    #[test]
    fn sets_ranges_and_negation() {
        assert!(m("[abc].conf", "b.conf"));
        assert!(!m("[abc].conf", "d.conf"));
        assert!(m("[a-c]x", "cx"));
        assert!(!m("[a-c]x", "dx"));
        assert!(m("[!a]x", "bx"));
        assert!(!m("[!a]x", "ax"));
        assert!(m("[^a]x", "bx"));
        assert!(m("[]a]", "]"));
        assert!(m("[a-]", "-"));
        // An unclosed `[` is literal.
        assert!(m("a[b", "a[b"));
        assert!(!m("a[b", "ab"));
    }

    #[test]
    fn leading_dot_needs_a_literal_dot() {
        assert!(!m("*", ".hidden"));
        assert!(!m("?hidden", ".hidden"));
        assert!(!m("[.]hidden", ".hidden"));
        assert!(m(".*", ".hidden"));
        assert!(m("\\.*", ".hidden"));
        assert!(m("a.*", "a.b"));
    }

    #[test]
    fn escapes() {
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(is_pattern("/etc/nginx/conf.d/*.conf"));
        assert!(is_pattern("a[1]"));
        assert!(!is_pattern("/etc/nginx/mime.types"));
    }
}
