//! The `state FILE` of an upstream group (NGINX Plus): its servers as `server` lines, read when
//! the configuration loads (start, reload, `-t`) and written again after every change the API
//! makes, so that servers added, changed or removed at run time survive a restart or a reload.
//!
//! The format is Plus's: one `server ADDRESS [weight=N] [max_conns=N] [max_fails=N]
//! [fail_timeout=T] [slow_start=T] [backup] [down] [drain];` per line; a missing file is an
//! empty group (Plus creates it at the first change). Addresses are IP:port (imbang's API
//! takes no names, see docs/api.md).

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::config::model::PeerSpec;

/// The servers of the file at `path`: empty when there is none; a line that does not parse is
/// an error naming its line number.
pub fn load(path: &Path) -> Result<Vec<PeerSpec>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(format!(
                "open() \"{}\" failed ({})",
                path.display(),
                crate::error_log::errno_text(&e)
            ));
        }
    };
    parse(&text).map_err(|(line, why)| format!("{why} in {}:{line}", path.display()))
}

/// The `server` statements of `text`; `Err((line, why))` for the first bad one.
pub fn parse(text: &str) -> Result<Vec<PeerSpec>, (usize, String)> {
    let mut servers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        for statement in line.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let mut words = statement.split_whitespace();
            if words.next() != Some("server") {
                return Err((n + 1, format!("unknown directive \"{statement}\"")));
            }
            let Some(address) = words.next() else {
                return Err((
                    n + 1,
                    "invalid number of arguments in \"server\"".to_owned(),
                ));
            };
            let addr: SocketAddr = address
                .parse()
                .map_err(|_| (n + 1, format!("invalid address \"{address}\"")))?;
            let mut spec = PeerSpec::new(addr, address);
            for word in words {
                let (name, value) = word.split_once('=').unwrap_or((word, ""));
                apply(&mut spec, name, value)
                    .map_err(|_| (n + 1, format!("invalid parameter \"{word}\"")))?;
            }
            if !line.ends_with(';') {
                return Err((n + 1, "unexpected end of line, expecting \";\"".to_owned()));
            }
            servers.push(spec);
        }
    }
    Ok(servers)
}

/// One `name=value` (or flag) of a `server` line.
fn apply(spec: &mut PeerSpec, name: &str, value: &str) -> Result<(), ()> {
    let number = |v: &str| v.parse::<u32>().map_err(|_| ());
    let time = |v: &str| crate::config::values::duration(v).ok_or(());
    match (name, value) {
        ("weight", v) => {
            spec.weight = number(v).and_then(|w| if w == 0 { Err(()) } else { Ok(w) })?
        }
        ("max_conns", v) => spec.max_conns = number(v)?,
        ("max_fails", v) => spec.max_fails = number(v)?,
        ("fail_timeout", v) => spec.fail_timeout = time(v)?,
        ("slow_start", v) => spec.slow_start = time(v)?,
        ("backup", "") => spec.backup = true,
        ("down", "") => spec.down = true,
        ("drain", "") => spec.drain = true,
        _ => return Err(()),
    }
    Ok(())
}

/// `server` lines for `servers`, nginx's defaults left out.
pub fn render(servers: &[PeerSpec]) -> String {
    let mut out = String::new();
    for s in servers {
        out.push_str(&format!("server {}", s.addr));
        let defaults = PeerSpec::new(s.addr, "");
        if s.weight != defaults.weight {
            out.push_str(&format!(" weight={}", s.weight));
        }
        if s.max_conns != 0 {
            out.push_str(&format!(" max_conns={}", s.max_conns));
        }
        if s.max_fails != defaults.max_fails {
            out.push_str(&format!(" max_fails={}", s.max_fails));
        }
        if s.fail_timeout != defaults.fail_timeout {
            out.push_str(&format!(" fail_timeout={}", time(s.fail_timeout)));
        }
        if !s.slow_start.is_zero() {
            out.push_str(&format!(" slow_start={}", time(s.slow_start)));
        }
        for (on, flag) in [(s.backup, "backup"), (s.down, "down"), (s.drain, "drain")] {
            if on {
                out.push(' ');
                out.push_str(flag);
            }
        }
        out.push_str(";\n");
    }
    out
}

fn time(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Writes `servers` to `path` whole or not at all (a new file renamed over the old one).
pub fn save(path: &Path, servers: &[PeerSpec]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(render(servers).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_bad_ones_name_their_line() {
        let text = "server 127.0.0.1:8081;\nserver [::1]:80 weight=3 max_conns=10 max_fails=2 fail_timeout=5s slow_start=30s backup down drain;\n";
        let servers = parse(text).unwrap();
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[1].weight, 3);
        assert!(servers[1].backup && servers[1].down && servers[1].drain);
        assert_eq!(render(&servers), text);
        assert_eq!(parse("server 1.2.3.4:80;\nserver x;\n").unwrap_err().0, 2);
        assert!(parse("server 1.2.3.4:80 weight=0;").is_err());
        assert!(parse("server 1.2.3.4:80 bogus;").is_err());
        assert!(parse("server 1.2.3.4:80").is_err());
        assert_eq!(parse("# empty\n\n").unwrap(), vec![]);
    }
}
