//! Running with as little privilege as the job needs: nginx's `user` (a process started as root
//! becomes that user once it has bound its sockets and opened its files, before it serves a
//! request) and `worker_rlimit_nofile`; and the two capabilities kept, thread by thread, for
//! what a running imbang still has to do as the administrator's agent (docs/hardening.md,
//! "Privileges", gives the reasons):
//!
//! | thread | capabilities (Linux keeps them per thread) |
//! |---|---|
//! | worker threads (every request, every upstream connection) | none, in every set |
//! | the main (control) thread: signals, reload, reopen, binary upgrade, health checks | [`KEPT`] in its *permitted* set only; effective around a reload's file reads and binds ([`for_reload`]), ambient around the start of a new binary ([`for_new_binary`]) |
//!
//! The user and groups are the process's (one uid for every thread): the drop happens before
//! any thread is started. A process started as root *without* `user` stays root, threads and
//! all (nginx would run its workers as `nobody`).

use std::ffi::CString;
use std::io;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::errno::Errno;
use nix::unistd::{self, Gid, Group, Uid, User};

use crate::config::model::{UserSpec, Warning};
use crate::config::{ConfigError, ErrorKind};
use crate::error_log::errno_text;
use crate::log;

/// What the control thread keeps through the drop: binding a port below 1024 on reload, and
/// reading files only root may read on reload (TLS keys in /etc/ssl/private, a root-only
/// `include`). Both are what nginx's root master uses on a reload.
pub const KEPT: [Capability; 2] = [
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_DAC_READ_SEARCH,
];

/// The user and group `user` names, looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    pub user: String,
    pub uid: Uid,
    pub gid: Gid,
}

/// What `user` asks of this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Started as root with `user`: become that account after binding ([`drop_to`]).
    DropTo(Account),
    /// No `user`, or not started as root: nothing to change.
    Stay,
}

/// nginx's `user` handler: as root, both names must exist (`getpwnam("x") failed` otherwise,
/// at the directive); as anyone else the directive is ignored with nginx's warning, except
/// that a process already running as that user and group (a binary started by USR2 after the
/// drop, or a systemd unit with `User=`) says nothing.
pub fn plan(spec: Option<&UserSpec>) -> Result<(Plan, Option<Warning>), ConfigError> {
    let Some(spec) = spec else {
        return Ok((Plan::Stay, None));
    };
    let located = |message: String| {
        ConfigError::new(ErrorKind::Invalid(message), Some(spec.location.clone()))
    };
    let user = User::from_name(&spec.user);
    let group = Group::from_name(&spec.group);
    if !unistd::geteuid().is_root() {
        let already = matches!((&user, &group), (Ok(Some(u)), Ok(Some(g)))
            if u.uid == unistd::geteuid() && g.gid == unistd::getegid());
        let warning = (!already).then(|| Warning {
            message: "the \"user\" directive makes sense only if the master process runs with \
                      super-user privileges, ignored"
                .to_owned(),
            location: spec.location.clone(),
        });
        return Ok((Plan::Stay, warning));
    }
    let user = match user {
        Ok(Some(u)) => u,
        Ok(None) => return Err(located(format!("getpwnam(\"{}\") failed", spec.user))),
        Err(e) => {
            return Err(located(format!(
                "getpwnam(\"{}\") failed ({})",
                spec.user,
                errno(e)
            )));
        }
    };
    let group = match group {
        Ok(Some(g)) => g,
        Ok(None) => return Err(located(format!("getgrnam(\"{}\") failed", spec.group))),
        Err(e) => {
            return Err(located(format!(
                "getgrnam(\"{}\") failed ({})",
                spec.group,
                errno(e)
            )));
        }
    };
    let account = Account {
        user: user.name,
        uid: user.uid,
        gid: group.gid,
    };
    Ok((Plan::DropTo(account), None))
}

/// A reload cannot change whom the process runs as (it is no longer root): said once per
/// reload that tries, at the new directive.
pub fn reload_warning(in_force: Option<&UserSpec>, new: Option<&UserSpec>) -> Option<Warning> {
    let names = |s: Option<&UserSpec>| s.map(|s| (s.user.clone(), s.group.clone()));
    if names(in_force) == names(new) {
        return None;
    }
    let running = match in_force {
        Some(s) => format!("\"{}\" (group \"{}\")", s.user, s.group),
        None => "the user it was started as".to_owned(),
    };
    Some(Warning {
        message: format!(
            "the \"user\" directive takes effect on restart: imbang keeps running as {running}"
        ),
        location: new
            .or(in_force)
            .map(|s| s.location.clone())
            .unwrap_or_default(),
    })
}

fn errno(e: Errno) -> String {
    errno_text(&io::Error::from(e))
}

fn caps_error(what: &str, e: caps::errors::CapsError) -> String {
    format!("{what} failed ({e})")
}

/// `worker_rlimit_nofile N`: the soft limit becomes N, the hard one at least N. nginx sets both
/// to N; imbang keeps a higher hard limit so that a later reload can raise the soft one again
/// without privileges. Failure (N above the hard limit, not root) is logged as nginx logs it.
pub fn set_nofile(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).map_or(n, |(_, hard)| hard.max(n));
    if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, n, hard) {
        log!(Alert, "setrlimit(RLIMIT_NOFILE, {n}) failed ({})", errno(e));
    }
}

/// Hands files opened as root to the account (`chown user`, the group unchanged), so that the
/// process can open them again on USR1 and reload once it is that user: nginx's root master
/// does the same to its log files on reopen. A failure is logged; the start goes on.
pub fn hand_over<'a>(paths: impl IntoIterator<Item = &'a Path>, account: &Account) {
    for path in paths {
        if let Err(e) = std::os::unix::fs::chown(path, Some(account.uid.as_raw()), None) {
            log!(
                Alert,
                "chown(\"{}\", {}) failed ({})",
                path.display(),
                account.uid,
                errno_text(&e)
            );
        }
    }
}

/// Becomes `account` for good, as nginx's workers do: `setgid`, `initgroups` (the user's
/// supplementary groups), `setuid`. With `PR_SET_KEEPCAPS` around `setuid` so that this thread
/// keeps its permitted capabilities for [`keep_for_control`] to narrow. Must run before any
/// other thread exists (the kernel's keep-caps flag is per thread).
pub fn drop_to(account: &Account) -> Result<(), String> {
    let name = CString::new(account.user.as_str()).map_err(|e| e.to_string())?;
    nix::sys::prctl::set_keepcaps(true)
        .map_err(|e| format!("prctl(PR_SET_KEEPCAPS, 1) failed ({})", errno(e)))?;
    unistd::setgid(account.gid)
        .map_err(|e| format!("setgid({}) failed ({})", account.gid, errno(e)))?;
    unistd::initgroups(&name, account.gid).map_err(|e| {
        format!(
            "initgroups({}, {}) failed ({})",
            account.user,
            account.gid,
            errno(e)
        )
    })?;
    unistd::setuid(account.uid)
        .map_err(|e| format!("setuid({}) failed ({})", account.uid, errno(e)))?;
    nix::sys::prctl::set_keepcaps(false)
        .map_err(|e| format!("prctl(PR_SET_KEEPCAPS, 0) failed ({})", errno(e)))?;
    // A setuid() that left a way back would not be a drop.
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("setuid(0) succeeded after the drop".to_owned());
    }
    Ok(())
}

/// The capabilities this thread may keep: [`KEPT`] where it has them.
fn keepable() -> Result<CapsHashSet, String> {
    let permitted = caps::read(None, CapSet::Permitted).map_err(|e| caps_error("capget()", e))?;
    Ok(KEPT
        .iter()
        .copied()
        .filter(|c| permitted.contains(c))
        .collect())
}

/// Narrows the control thread to [`KEPT`], permitted (and inheritable, for a new binary's
/// ambient set) but not effective. Run after [`drop_to`], or at the start of a process that was
/// not started as root (a new binary after USR2, a systemd unit with `User=` and
/// `AmbientCapabilities=`, which arrive with them effective). A root process keeps everything.
pub fn keep_for_control() -> Result<(), String> {
    if unistd::geteuid().is_root() {
        return Ok(());
    }
    let keep = keepable()?;
    // Nothing this process starts (only ever itself, on USR2) may gain privileges from
    // set-user-ID bits or file capabilities: systemd's `NoNewPrivileges=`, for any start.
    nix::sys::prctl::set_no_new_privs()
        .map_err(|e| format!("prctl(PR_SET_NO_NEW_PRIVS) failed ({})", errno(e)))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_error("PR_CAP_AMBIENT_CLEAR_ALL", e))?;
    caps::clear(None, CapSet::Effective).map_err(|e| caps_error("capset()", e))?;
    caps::set(None, CapSet::Inheritable, &keep).map_err(|e| caps_error("capset()", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| caps_error("capset()", e))?;
    Ok(())
}

/// Empties every capability set of the calling thread: the first thing a worker thread does.
/// A root process (no `user`) is left as it is.
pub fn clear_thread() -> Result<(), String> {
    if unistd::geteuid().is_root() {
        return Ok(());
    }
    caps::clear(None, CapSet::Ambient).map_err(|e| caps_error("PR_CAP_AMBIENT_CLEAR_ALL", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| caps_error("capset()", e))?;
    caps::clear(None, CapSet::Permitted).map_err(|e| caps_error("capset()", e))?;
    Ok(())
}

/// The kept capabilities are effective in this thread while this lives (see [`for_reload`]).
#[must_use]
pub struct Raised(bool);

/// Makes the kept capabilities effective in the calling (control) thread until the guard
/// drops: a reload reads files and binds addresses with them, nothing else does.
pub fn for_reload() -> Raised {
    if unistd::geteuid().is_root() {
        return Raised(false);
    }
    let raised = keepable()
        .and_then(|keep| {
            caps::set(None, CapSet::Effective, &keep).map_err(|e| caps_error("capset()", e))
        })
        .inspect_err(|e| log!(Alert, "{e}"))
        .is_ok();
    Raised(raised)
}

impl Drop for Raised {
    fn drop(&mut self) {
        if self.0 {
            if let Err(e) = caps::clear(None, CapSet::Effective) {
                log!(Alert, "{}", caps_error("capset()", e));
            }
        }
    }
}

/// The kept capabilities are in this thread's ambient set while this lives.
#[must_use]
pub struct Ambient(bool);

/// Puts the kept capabilities in the calling thread's ambient set until the guard drops, so
/// that a binary it starts (USR2) begins with them, as this process did: it is not root, and
/// an executable without file capabilities gets only what is ambient. `NoNewPrivileges=` does
/// not stop that (it forbids gaining more, ambient is what the parent already holds).
pub fn for_new_binary() -> Ambient {
    if unistd::geteuid().is_root() {
        return Ambient(false);
    }
    let raised = keepable()
        .and_then(|keep| {
            keep.into_iter().try_for_each(|c| {
                caps::raise(None, CapSet::Ambient, c)
                    .map_err(|e| caps_error("PR_CAP_AMBIENT_RAISE", e))
            })
        })
        .inspect_err(|e| log!(Alert, "{e}; the new binary starts without it"))
        .is_ok();
    Ambient(raised)
}

impl Drop for Ambient {
    fn drop(&mut self) {
        if self.0 {
            if let Err(e) = caps::clear(None, CapSet::Ambient) {
                log!(Alert, "{}", caps_error("PR_CAP_AMBIENT_CLEAR_ALL", e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(user: &str, group: &str) -> UserSpec {
        UserSpec {
            user: user.to_owned(),
            group: group.to_owned(),
            location: "/etc/imbang/imbang.conf:1:1".to_owned(),
        }
    }

    #[test]
    fn unknown_names_are_nginx_s_errors_as_root_and_a_warning_otherwise() {
        let got = plan(Some(&spec("no-such-user-imbang", "root")));
        if unistd::geteuid().is_root() {
            assert_eq!(
                got.unwrap_err().to_string(),
                "getpwnam(\"no-such-user-imbang\") failed in /etc/imbang/imbang.conf:1:1"
            );
            assert_eq!(
                plan(Some(&spec("root", "no-such-group-imbang")))
                    .unwrap_err()
                    .to_string(),
                "getgrnam(\"no-such-group-imbang\") failed in /etc/imbang/imbang.conf:1:1"
            );
            let (plan, warning) = plan(Some(&spec("root", "root"))).unwrap();
            assert_eq!(
                plan,
                Plan::DropTo(Account {
                    user: "root".to_owned(),
                    uid: Uid::from_raw(0),
                    gid: Gid::from_raw(0)
                })
            );
            assert_eq!(warning, None);
        } else {
            let (plan, warning) = got.unwrap();
            assert_eq!(plan, Plan::Stay);
            assert!(warning.unwrap().message.contains("makes sense only if"));
        }
        assert_eq!(plan(None).unwrap(), (Plan::Stay, None));
    }

    #[test]
    fn a_reload_that_changes_user_is_told_it_waits_for_a_restart() {
        let a = spec("www-data", "www-data");
        let b = UserSpec {
            location: "/etc/imbang/imbang.conf:2:1".to_owned(),
            ..spec("nobody", "nogroup")
        };
        assert_eq!(reload_warning(Some(&a), Some(&a.clone())), None);
        assert_eq!(reload_warning(None, None), None);
        let w = reload_warning(Some(&a), Some(&b)).unwrap();
        assert_eq!(
            format!("{} in {}", w.message, w.location),
            "the \"user\" directive takes effect on restart: imbang keeps running as \
             \"www-data\" (group \"www-data\") in /etc/imbang/imbang.conf:2:1"
        );
        let w = reload_warning(None, Some(&b)).unwrap();
        assert!(
            w.message.ends_with("as the user it was started as"),
            "{w:?}"
        );
        let w = reload_warning(Some(&a), None).unwrap();
        assert_eq!(w.location, "/etc/imbang/imbang.conf:1:1");
    }
}
