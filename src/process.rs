//! The process around a [`Server`]: nginx's command-line actions (`-t`, `-T`, `-s`), the pid
//! file, daemonizing, the runtime, and signals (HUP reload, QUIT graceful stop, TERM/INT fast
//! stop, USR1 reopen logs).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{self, Cli};
use crate::config::model::{ErrorLogSpec, LogLevel, LogTarget, UserSpec, Warning};
use crate::config::{self, Config, ConfigErrors, LoadOptions, Source};
use crate::privileges::{self, Plan};
use crate::server::{self, Server};
use crate::snapshot::Snapshot;
use crate::upstream::PeerRegistry;
use crate::{error_log, log};

/// Runs what the command line asks for and returns the exit status (0 ok, 1 failure, as nginx).
pub fn main(cli: Cli) -> ExitCode {
    if cli.version {
        eprintln!("{}", cli::version_line());
        return ExitCode::SUCCESS;
    }
    if cli.version_configure {
        eprintln!("{}", cli::configure_lines());
        return ExitCode::SUCCESS;
    }
    if let Some(cli::Command::Demo(args)) = &cli.command {
        return crate::demo::main(args.clone());
    }
    let prefix = cli.prefix();
    let source = Source {
        conf_file: cli.conf_file(),
        globals: cli.globals.clone(),
        options: LoadOptions {
            prefix: prefix.clone(),
            default_listen_port: if nix::unistd::geteuid().is_root() {
                80
            } else {
                8000
            },
        },
    };
    if cli.test || cli.dump {
        return test_config(&source, cli.quiet, cli.dump);
    }
    let config = match config::load(&source) {
        Ok(config) => config,
        Err(errors) => return emerg(&errors),
    };
    if let Some(name) = &cli.signal {
        return send_signal(&config.main.pid, name);
    }
    let default_log = ErrorLogSpec {
        target: match cli.error_log.as_deref() {
            Some("stderr") => LogTarget::Stderr,
            Some(path) if Path::new(path).is_absolute() => LogTarget::File(PathBuf::from(path)),
            Some(path) => LogTarget::File(prefix.join(path)),
            None => LogTarget::File(prefix.join(cli::DEFAULT_ERROR_LOG)),
        },
        level: LogLevel::Error,
    };
    run(config, source, default_log)
}

fn emerg(errors: &ConfigErrors) -> ExitCode {
    for e in errors.iter() {
        eprintln!("imbang: [emerg] {e}");
    }
    ExitCode::FAILURE
}

/// `-t` / `-T`: parse, validate and compile (certificates, regexes) without binding anything.
fn test_config(source: &Source, quiet: bool, dump: bool) -> ExitCode {
    let path = source.conf_file.display();
    let checked = config::load(source).and_then(|c| {
        let (_, warning) = privileges::plan(c.main.user.as_ref())?;
        Ok((Snapshot::compile(c, &PeerRegistry::new())?, warning))
    });
    match checked {
        Ok((snapshot, warning)) => {
            print_warnings(&snapshot);
            print_warning(warning.as_ref());
            if !quiet {
                eprintln!("imbang: the configuration file {path} syntax is ok");
                eprintln!("imbang: configuration file {path} test is successful");
            }
            if dump {
                for file in snapshot.config.sources.files() {
                    println!("# configuration file {}:", file.path.display());
                    print!("{}", file.text);
                    if !file.text.ends_with('\n') {
                        println!();
                    }
                    println!();
                }
            }
            ExitCode::SUCCESS
        }
        Err(errors) => {
            emerg(&errors);
            eprintln!("imbang: configuration file {path} test failed");
            ExitCode::FAILURE
        }
    }
}

fn print_warning(warning: Option<&Warning>) {
    if let Some(w) = warning {
        eprintln!("imbang: [warn] {} in {}", w.message, w.location);
    }
}

fn print_warnings(snapshot: &Snapshot) {
    for w in &snapshot.config.warnings {
        eprintln!("imbang: [warn] {} in {}", w.message, w.location);
    }
    for w in &snapshot.warnings {
        eprintln!("imbang: [warn] {w}");
    }
}

/// `-s stop|quit|reopen|reload`: the signal to the pid in the pid file.
fn send_signal(pid_file: &Path, name: &str) -> ExitCode {
    let sig = match name {
        "stop" => Signal::SIGTERM,
        "quit" => Signal::SIGQUIT,
        "reopen" => Signal::SIGUSR1,
        _ => Signal::SIGHUP,
    };
    let text = match fs::read_to_string(pid_file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("imbang: [error] {}", error_log::open_failed(pid_file, &e));
            return ExitCode::FAILURE;
        }
    };
    let Some(pid) = text.trim().parse::<i32>().ok().filter(|&p| p > 0) else {
        eprintln!(
            "imbang: [error] invalid PID number \"{}\" in \"{}\"",
            text.trim(),
            pid_file.display()
        );
        return ExitCode::FAILURE;
    };
    match kill(Pid::from_raw(pid), sig) {
        Ok(()) => ExitCode::SUCCESS,
        Err(errno) => {
            eprintln!(
                "imbang: [alert] kill({pid}, {}) failed ({}: {})",
                sig as i32,
                errno as i32,
                errno.desc()
            );
            ExitCode::FAILURE
        }
    }
}

/// Starts serving `config` and blocks until the process is told to stop.
///
/// As root with `user`, everything that needs root happens first (binding, opening the log
/// files, reading the configuration, daemonizing, writing the pid file's inode), then the
/// process becomes that user, and only then do the worker threads start: no request is ever
/// served as root.
fn run(config: Config, source: Source, default_log: ErrorLogSpec) -> ExitCode {
    let (plan, user_warning) = match privileges::plan(config.main.user.as_ref()) {
        Ok(planned) => planned,
        Err(e) => return emerg(&e.into()),
    };
    let user = config.main.user.clone();
    let rlimit_nofile = config.main.rlimit_nofile;
    let daemon = config.main.daemon;
    let workers = config.main.worker_processes.count();
    let log = match server::open_error_log(&config, Some(&default_log)) {
        Ok(log) => log,
        Err(e) if config.main.error_log.is_empty() => {
            // nginx goes on when only its default log cannot be opened.
            eprintln!("imbang: [alert] could not open error log file: {e}");
            let mut fallback = config.clone();
            fallback.main.error_log = vec![ErrorLogSpec {
                target: LogTarget::Stderr,
                level: LogLevel::Error,
            }];
            match server::open_error_log(&fallback, None) {
                Ok(log) => log,
                Err(e) => {
                    eprintln!("imbang: [emerg] {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Err(e) => {
            eprintln!("imbang: [emerg] {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid_file = config.main.pid.clone();
    let shutdown_timeout = config.main.shutdown_timeout;
    let server = match Server::new(config, Some(source), Some(default_log)) {
        Ok(server) => server,
        Err(errors) => return emerg(&errors),
    };
    print_warnings(&server.snapshot());
    print_warning(user_warning.as_ref());
    let inherited = inherited_sockets();
    let upgraded = !inherited.is_empty();
    let bound = match server.bind_with(inherited) {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("imbang: [emerg] {e}");
            return ExitCode::FAILURE;
        }
    };
    let log_paths: Vec<PathBuf> = log
        .paths()
        .chain(server.snapshot().log_paths())
        .map(Path::to_path_buf)
        .collect();
    error_log::install(log);
    // A new binary started by USR2 stays a child of the old process, as nginx's does.
    if daemon && !upgraded {
        // Before any thread exists: the runtime starts in the child.
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        if let Err(e) = daemonize::Daemonize::new()
            .working_directory(cwd)
            .umask(0o022)
            .start()
        {
            eprintln!("imbang: [emerg] daemon() failed: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(n) = rlimit_nofile {
        privileges::set_nofile(n);
    }
    // `client_body_temp_path` directories, made now as nginx's master makes its paths.
    let body_paths = crate::proxy::spool::temp_paths(&server.snapshot().config);
    if let Plan::DropTo(account) = &plan {
        // The pid file is written once every listener accepts, by then as the user: its inode
        // is made now, as root, in a directory the user may not write to (nginx's /run).
        let made = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pid_file);
        if let Err(e) = made {
            log!(Emerg, "{}", error_log::open_failed(&pid_file, &e));
            return ExitCode::FAILURE;
        }
        // The ACME state directories too (made now if needed, as nginx's master makes its
        // paths for its workers' user), with what earlier runs kept in them.
        let state = crate::acme::state_paths(&server.snapshot().config);
        let paths = (log_paths.iter().chain([&pid_file]).chain(&state)).chain(&body_paths);
        privileges::hand_over(paths.map(PathBuf::as_path), account);
        if let Err(e) = privileges::drop_to(account) {
            log!(Emerg, "{e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = privileges::keep_for_control() {
        log!(Emerg, "{e}");
        return ExitCode::FAILURE;
    }
    let (runtime, worker_threads) = match start_workers(workers.max(1)) {
        Ok(started) => started,
        Err(e) => {
            log!(Emerg, "cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    server.set_workers(worker_threads.handles());
    let mut pid = PidFile {
        path: pid_file.clone(),
        current: Some(pid_file),
    };
    let running = Running {
        shutdown_timeout,
        user,
    };
    let code = runtime.block_on(serve(server, bound, &mut pid, running));
    // Graceful or fast, the lines in access-log buffers reach their files.
    crate::access_log::flush_at_exit();
    pid.remove();
    code
}

/// What the signal loop needs from the start.
struct Running {
    shutdown_timeout: Option<std::time::Duration>,
    /// `user` as the process started: a reload cannot change it.
    user: Option<UserSpec>,
}

/// Tells systemd (when it started us with `Type=notify`; a no-op otherwise).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        log!(Warn, "sd_notify() failed: {e}");
    }
}

/// `RELOADING=1` with the time, as `Type=notify-reload` requires.
fn reloading() {
    let mut state = vec![sd_notify::NotifyState::Reloading];
    if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
        state.push(now);
    }
    notify(&state);
}

/// The worker runtimes beside the main one; dropping this stops their threads.
struct WorkerThreads {
    handles: Vec<tokio::runtime::Handle>,
    _stop: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl WorkerThreads {
    fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.handles.clone()
    }
}

/// nginx's worker model on threads: `n` current-thread runtimes on threads of their own, each
/// accepting on the shared listening sockets and serving the connections it accepted, beside
/// the main thread's runtime, which serves no request: it runs signals, reloads, binary
/// upgrades and health checks, and is the only thread that keeps capabilities after the drop
/// (crate::privileges). Chosen over tokio's work-stealing runtime by measurement
/// (bench/PROFILE.md, session 10: 2.7% fewer instructions per request, level in time): no
/// cross-thread wake-ups on the request path.
fn start_workers(n: usize) -> Result<(tokio::runtime::Runtime, WorkerThreads), String> {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // tokio's blocking-pool threads, should any start: no capabilities either.
            .on_thread_start(|| {
                if let Err(e) = privileges::clear_thread() {
                    log!(Emerg, "{e}");
                    std::process::exit(2);
                }
            })
            .build()
            .map_err(|e| e.to_string())
    };
    let main = runtime()?;
    let mut workers = WorkerThreads {
        handles: Vec::with_capacity(n),
        _stop: Vec::new(),
    };
    let (started_tx, started) = std::sync::mpsc::channel();
    for i in 0..n {
        let runtime = runtime()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        workers.handles.push(runtime.handle().clone());
        workers._stop.push(stop);
        let started = started_tx.clone();
        std::thread::Builder::new()
            .name(format!("imbang-worker-{i}"))
            .spawn(move || {
                // A thread inherits its creator's capabilities: a worker gives up all of them
                // before it can accept a connection, or does not run.
                let cleared = privileges::clear_thread();
                let ok = cleared.is_ok();
                let _ = started.send(cleared);
                if ok {
                    let _ = runtime.block_on(stopped);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    for _ in 0..n {
        started
            .recv()
            .map_err(|e| e.to_string())
            .and_then(|cleared| cleared)?;
    }
    Ok((main, workers))
}

/// The pid file, and where this process's pid is now: `<path>.oldbin` while a new binary takes
/// over; `None` once a new binary has written its own over it (a directory this process may
/// not write to: see `upgrade_binary`).
struct PidFile {
    path: PathBuf,
    current: Option<PathBuf>,
}

impl PidFile {
    /// At exit: the file that holds this process's pid goes; where the directory is not the
    /// process's to write (root's /run after the drop), it is emptied instead, so that no stale
    /// pid is left for `-s` to signal.
    fn remove(&self) {
        let Some(current) = &self.current else {
            return;
        };
        let ours =
            fs::read_to_string(current).is_ok_and(|t| t.trim() == std::process::id().to_string());
        if !ours {
            return;
        }
        if let Err(e) = fs::remove_file(current) {
            let emptied = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(current);
            if emptied.is_err() {
                log!(
                    Alert,
                    "unlink() \"{}\" failed ({})",
                    current.display(),
                    error_log::errno_text(&e)
                );
            }
        }
    }
}

/// Environment naming the configured address of each inherited socket, in fd order.
const LISTEN_KEYS: &str = "IMBANG_LISTEN_KEYS";

/// Listening sockets handed down by a previous imbang on USR2 (or by systemd socket activation:
/// `LISTEN_FDS`), with the configured address each was bound for.
fn inherited_sockets() -> Vec<(std::net::SocketAddr, std::net::TcpListener)> {
    let mut fds = listenfd::ListenFd::from_env();
    let keys: Vec<std::net::SocketAddr> = std::env::var(LISTEN_KEYS)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|k| k.parse().ok())
        .collect();
    let mut sockets = Vec::new();
    for i in 0..fds.len() {
        match fds.take_tcp_listener(i) {
            Ok(Some(socket)) => {
                let key = keys.get(i).copied().or_else(|| socket.local_addr().ok());
                if let Some(key) = key {
                    sockets.push((key, socket));
                }
            }
            Ok(None) => {}
            Err(e) => eprintln!("imbang: [alert] inherited socket {i} is unusable: {e}"),
        }
    }
    sockets
}

/// nginx's USR2: hand the listening sockets to a new copy of the binary (the same path and
/// arguments) and move the pid file to `.oldbin`. Returns true once the new process serves (it
/// wrote the pid file); on any failure the pid file is moved back and this process goes on.
async fn upgrade_binary(server: &Server, pid: &mut PidFile) -> bool {
    let oldbin = PathBuf::from(format!("{}.oldbin", pid.path.display()));
    let sockets = match server.listening_sockets().await {
        Ok(s) => s,
        Err(e) => {
            log!(Alert, "cannot pass listening sockets: {e}");
            return false;
        }
    };
    match fs::rename(&pid.path, &oldbin) {
        Ok(()) => pid.current = Some(oldbin.clone()),
        // The directory is root's and this process no longer is: the new binary writes its pid
        // over this one's, in the file that was handed to the user at the drop.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            log!(
                Notice,
                "rename() \"{}\" to \"{}\" failed ({}): the new binary writes its pid in place",
                pid.path.display(),
                oldbin.display(),
                error_log::errno_text(&e)
            );
        }
        Err(e) => {
            log!(
                Alert,
                "rename() \"{}\" to \"{}\" failed ({})",
                pid.path.display(),
                oldbin.display(),
                error_log::errno_text(&e)
            );
            return false;
        }
    }
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "imbang".into());
    let keys: Vec<String> = sockets.iter().map(|(k, _)| k.to_string()).collect();
    let mappings = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (_, socket))| command_fds::FdMapping {
            parent_fd: socket.into(),
            child_fd: 3 + i as i32,
        })
        .collect();
    let mut command = std::process::Command::new(&program);
    command
        .args(args)
        .env("LISTEN_FDS", keys.len().to_string())
        .env(LISTEN_KEYS, keys.join(" "))
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES");
    let spawned = match command_fds::CommandFdExt::fd_mappings(&mut command, mappings) {
        Ok(_) => {
            // After the drop, the new binary starts with what this thread kept, as ambient.
            let _ambient = privileges::for_new_binary();
            tokio::process::Command::from(command)
                .spawn()
                .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            log!(
                Alert,
                "execve() \"{}\" failed: {e}",
                program.to_string_lossy()
            );
            restore_pid_file(pid);
            return false;
        }
    };
    let child_pid = child.id().unwrap_or(0);
    log!(Notice, "start new binary process {child_pid}");
    // Ready when the new process has written its pid to the pid file (after it listens).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let written = fs::read_to_string(&pid.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        if written == Some(child_pid) {
            log!(
                Notice,
                "new binary process {child_pid} is serving; this one stops gracefully"
            );
            if pid.current.as_ref() == Some(&pid.path) {
                pid.current = None; // Written in place: the file is the new process's now.
            }
            return true;
        }
        tokio::select! {
            status = child.wait() => {
                log!(Alert, "new binary process {child_pid} exited ({}) before serving", status.map(|s| s.to_string()).unwrap_or_default());
                restore_pid_file(pid);
                return false;
            }
            _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
        }
        if tokio::time::Instant::now() > deadline {
            log!(
                Alert,
                "new binary process {child_pid} did not start serving in 60s; keeping this one"
            );
            let _ = child.start_kill();
            restore_pid_file(pid);
            return false;
        }
    }
}

/// The upgrade failed: the pid file names this process again.
fn restore_pid_file(pid: &mut PidFile) {
    match &pid.current {
        Some(current) if *current != pid.path => {
            if fs::rename(current, &pid.path).is_ok() {
                pid.current = Some(pid.path.clone());
            }
        }
        // In place: the new process may have written its pid before it failed.
        _ => {
            let _ = fs::write(&pid.path, format!("{}\n", std::process::id()));
            pid.current = Some(pid.path.clone());
        }
    }
}

async fn serve(
    server: Arc<Server>,
    bound: Vec<(std::net::SocketAddr, std::net::TcpListener)>,
    pid: &mut PidFile,
    running: Running,
) -> ExitCode {
    let shutdown_timeout = running.shutdown_timeout;
    let pid_file = pid.path.clone();
    let signals = (
        signal(SignalKind::hangup()),
        signal(SignalKind::quit()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    );
    let usr2 = signal(SignalKind::user_defined2());
    let (Ok(mut hup), Ok(mut quit), Ok(mut term), Ok(mut int), Ok(mut usr1), Ok(mut usr2)) =
        (signals.0, signals.1, signals.2, signals.3, signals.4, usr2)
    else {
        log!(Emerg, "cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    if let Err(e) = server.serve(bound).await {
        log!(Emerg, "cannot listen: {e}");
        return ExitCode::FAILURE;
    }
    // Written only now that every listener accepts, so whoever waits for it can connect.
    if let Err(e) = fs::write(&pid_file, format!("{}\n", std::process::id())) {
        log!(Emerg, "{}", error_log::open_failed(&pid_file, &e));
        server.shutdown(false, None).await;
        return ExitCode::FAILURE;
    }
    log!(Notice, "imbang/{} started", env!("CARGO_PKG_VERSION"));
    // systemd (Type=notify): serving now; a new binary also names itself the main process.
    notify(&[
        sd_notify::NotifyState::MainPid(std::process::id()),
        sd_notify::NotifyState::Ready,
    ]);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                log!(Notice, "signal 1 (SIGHUP) received, reconfiguring");
                reloading();
                let result = {
                    // Reading root-only files and binding ports below 1024, as the user.
                    let _raised = privileges::for_reload();
                    server.reload().await
                };
                notify(&[sd_notify::NotifyState::Ready]);
                match result {
                    Ok(()) => {
                        let main = &server.snapshot().config.main;
                        if let Some(n) = main.rlimit_nofile {
                            privileges::set_nofile(n);
                        }
                        let changed =
                            privileges::reload_warning(running.user.as_ref(), main.user.as_ref());
                        if let Some(w) = changed {
                            log!(Warn, "{} in {}", w.message, w.location);
                        }
                        log!(Notice, "reconfiguring done");
                    }
                    Err(e) => {
                        for line in e.to_string().lines() {
                            log!(Emerg, "{line}");
                        }
                        log!(Error, "reload failed, the previous configuration stays in force");
                    }
                }
            }
            _ = usr1.recv() => {
                log!(Notice, "signal 10 (SIGUSR1) received, reopening logs");
                // A file that cannot be opened keeps its old descriptor (and is said here).
                let failed: Vec<String> = [error_log::reopen(), server.snapshot().reopen_logs()]
                    .into_iter()
                    .filter_map(Result::err)
                    .collect();
                for line in failed.iter().flat_map(|e| e.lines()) {
                    log!(Alert, "{line}");
                }
                if failed.is_empty() {
                    log!(Notice, "logs reopened");
                }
            }
            _ = usr2.recv() => {
                log!(Notice, "signal 12 (SIGUSR2) received, changing binary");
                if upgrade_binary(&server, pid).await {
                    server.shutdown(true, shutdown_timeout).await;
                    break;
                }
            }
            _ = quit.recv() => {
                log!(Notice, "signal 3 (SIGQUIT) received, shutting down gracefully");
                notify(&[sd_notify::NotifyState::Stopping]);
                server.shutdown(true, shutdown_timeout).await;
                break;
            }
            _ = term.recv() => {
                log!(Notice, "signal 15 (SIGTERM) received, exiting");
                notify(&[sd_notify::NotifyState::Stopping]);
                server.shutdown(false, None).await;
                break;
            }
            _ = int.recv() => {
                log!(Notice, "signal 2 (SIGINT) received, exiting");
                notify(&[sd_notify::NotifyState::Stopping]);
                server.shutdown(false, None).await;
                break;
            }
        }
    }
    log!(Notice, "exit");
    ExitCode::SUCCESS
}
