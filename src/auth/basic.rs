//! `auth_basic` with `auth_basic_user_file` (ngx_http_auth_basic_module): the client's
//! `Authorization: Basic` credentials checked against an htpasswd file.
//!
//! nginx opens the file for every request; imbang reads a file named without variables once,
//! when the configuration is loaded (and again on each reload), so the request path makes no
//! syscall. A file named with variables is read per request, as nginx does. A file missing at
//! load is not a configuration error (nginx loads such a configuration too): its requests get
//! nginx's 403, and the error log says why, as nginx's does.

use base64::Engine as _;
use http::HeaderMap;

use crate::log;
use crate::proxy::RequestCtx;
use crate::vars::{Scope, Template};

/// One `auth_basic` in force.
pub struct Basic {
    realm: Template,
    file: UserFile,
}

enum UserFile {
    /// Read at load: the path and its lines (or why it could not be read).
    Loaded(String, Result<Users, FileError>),
    /// A path with variables: read per request.
    PerRequest(Template),
}

/// An htpasswd file's `user:hash` lines, in order (nginx takes the first line of a user).
struct Users(Vec<(Vec<u8>, String)>);

#[derive(Debug)]
enum FileError {
    /// nginx: 403 (`open() "..." failed (2: No such file or directory)`).
    NotFound(std::io::Error),
    /// nginx: 500.
    Other(std::io::Error),
}

/// What the check says (nginx's handler's return values).
pub enum Verdict {
    /// `auth_basic` is off for this request (the realm rendered to `off`).
    Declined,
    Allowed,
    /// 401, with this `WWW-Authenticate` value.
    Unauthorized(http::HeaderValue),
    /// 403 (file missing) or 500 (file unreadable, hash of no known scheme).
    Status(u16),
}

impl Basic {
    pub fn compile(spec: &crate::config::model::BasicSpec, scope: &Scope) -> Result<Self, String> {
        let realm = Template::compile_in(&spec.realm, scope)?;
        let file = if spec.user_file.contains('$') {
            UserFile::PerRequest(Template::compile_in(&spec.user_file, scope)?)
        } else {
            UserFile::Loaded(spec.user_file.clone(), read_users(&spec.user_file))
        };
        Ok(Self { realm, file })
    }

    pub fn check(&self, ctx: &RequestCtx<'_>) -> Verdict {
        let realm = self.realm.render(ctx);
        if realm == "off" {
            return Verdict::Declined;
        }
        let Some((user, password)) = credentials(&ctx.parts.headers) else {
            log!(
                Info,
                "*{} no user/password was provided for basic authentication{}",
                ctx.conn.id,
                ctx.log_context(None)
            );
            return unauthorized(&realm);
        };
        let per_request;
        let (path, users) = match &self.file {
            UserFile::Loaded(path, users) => (path.as_str(), users),
            UserFile::PerRequest(t) => {
                let path = t.render(ctx);
                per_request = (read_users(&path), path);
                (per_request.1.as_str(), &per_request.0)
            }
        };
        let users = match users {
            Ok(users) => users,
            Err(e) => {
                let (level, err, status) = match e {
                    FileError::NotFound(err) => (crate::config::model::LogLevel::Error, err, 403),
                    FileError::Other(err) => (crate::config::model::LogLevel::Crit, err, 500),
                };
                crate::error_log::log(
                    level,
                    format_args!(
                        "*{} {}{}",
                        ctx.conn.id,
                        crate::error_log::open_failed(std::path::Path::new(path), err),
                        ctx.log_context(None)
                    ),
                );
                return Verdict::Status(status);
            }
        };
        let shown = String::from_utf8_lossy(&user);
        let Some((_, hash)) = users.0.iter().find(|(u, _)| *u == user) else {
            log!(
                Error,
                "*{} user \"{shown}\" was not found in \"{path}\"{}",
                ctx.conn.id,
                ctx.log_context(None)
            );
            return unauthorized(&realm);
        };
        match super::crypt::verify(&password, hash) {
            Some(true) => Verdict::Allowed,
            Some(false) => {
                log!(
                    Error,
                    "*{} user \"{shown}\": password mismatch{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                unauthorized(&realm)
            }
            None => {
                log!(
                    Error,
                    "*{} user \"{shown}\": the password hash is of a scheme imbang does not know{}",
                    ctx.conn.id,
                    ctx.log_context(None)
                );
                Verdict::Status(500)
            }
        }
    }
}

fn unauthorized(realm: &str) -> Verdict {
    let value = format!("Basic realm=\"{realm}\"");
    match http::HeaderValue::from_str(&value) {
        Ok(v) => Verdict::Unauthorized(v),
        Err(_) => Verdict::Status(500),
    }
}

fn read_users(path: &str) -> Result<Users, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(parse_users(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::NotFound(e)),
        Err(e) => Err(FileError::Other(e)),
    }
}

/// nginx's reading of the file: a line starting with `#` (or CR) is a comment; `user:` then
/// the hash up to the end of the line or the next `:` (htpasswd's comment field after it).
fn parse_users(bytes: &[u8]) -> Users {
    let mut users = Vec::new();
    for line in bytes.split(|&b| b == b'\n') {
        if line.is_empty() || line[0] == b'#' || line[0] == b'\r' {
            continue;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let rest = &line[colon + 1..];
        let end = rest
            .iter()
            .position(|&b| b == b'\r' || b == b':')
            .unwrap_or(rest.len());
        users.push((
            line[..colon].to_vec(),
            String::from_utf8_lossy(&rest[..end]).into_owned(),
        ));
    }
    Users(users)
}

/// The user and password of an `Authorization: Basic ...` header, as nginx reads them: the
/// scheme's name in any case, the decoded text split at its first `:`, an empty user or none
/// at all meaning no credentials.
pub fn credentials(headers: &HeaderMap) -> Option<(Vec<u8>, Vec<u8>)> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    if value.len() < 6 || !value[..6].eq_ignore_ascii_case(b"Basic ") {
        return None;
    }
    let encoded = value[6..].trim_ascii_start();
    if encoded.is_empty() {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    if colon == 0 {
        return None;
    }
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

/// `$remote_user`: the user the client names in `Authorization: Basic` (checked or not).
pub fn remote_user(headers: &HeaderMap, out: &mut String) {
    if let Some((user, _)) = credentials(headers) {
        out.push_str(&String::from_utf8_lossy(&user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_as_nginx_reads_them() {
        let mut h = HeaderMap::new();
        let put = |h: &mut HeaderMap, v: &str| {
            h.insert(http::header::AUTHORIZATION, v.parse().unwrap());
        };
        put(&mut h, "basic   YWxpY2U6czpl"); // alice:s:e
        assert_eq!(credentials(&h), Some((b"alice".to_vec(), b"s:e".to_vec())));
        put(&mut h, "Basic OnNlY3JldA=="); // :secret
        assert_eq!(credentials(&h), None);
        put(&mut h, "Basic YWxpY2U="); // alice
        assert_eq!(credentials(&h), None);
        put(&mut h, "Bearer YWxpY2U6cw==");
        assert_eq!(credentials(&h), None);
    }

    #[test]
    fn the_file_is_read_as_nginx_reads_it() {
        let users = parse_users(
            b"# comment\nalice:{PLAIN}a:comment\r\nbob:{PLAIN}b\r\n\nalice:{PLAIN}z\nnocolon\n",
        );
        let got: Vec<(&[u8], &str)> = users
            .0
            .iter()
            .map(|(u, h)| (u.as_slice(), h.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (&b"alice"[..], "{PLAIN}a"),
                (&b"bob"[..], "{PLAIN}b"),
                (&b"alice"[..], "{PLAIN}z")
            ]
        );
    }
}
