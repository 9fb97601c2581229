//! Shared plumbing: temp directories that survive a failing test, free ports,
//! finding binaries, and waiting for a service with a deadline.

use std::{
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU64, Ordering},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::error::{Context, Result, bail};

/// A private temp directory for one service. Removed on drop, unless the
/// thread is panicking: then it is kept and its path printed.
#[derive(Debug)]
pub struct ServiceDir {
    path: PathBuf,
    keep: bool,
}

impl ServiceDir {
    pub fn new(prefix: &str) -> ServiceDir {
        ServiceDir::try_new(prefix).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `new`, returning the failure.
    pub fn try_new(prefix: &str) -> Result<ServiceDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let name = format!("{prefix}-{}-{}-{nanos}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let path = std::env::temp_dir().join(name);
        fs::create_dir_all(&path).context(|| format!("creating {}", path.display()))?;
        Ok(ServiceDir { path, keep: false })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps the directory after drop (for a caller that owns its cleanup).
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ServiceDir {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if thread::panicking() {
            eprintln!("testkit: kept {} for inspection (the test failed)", self.path.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|err| panic!("{err}"))
}

/// `N` distinct ports that were free a moment ago on 127.0.0.1. Every
/// listener is held until all are chosen: two `free_port()` calls in a row
/// can return the same port, since the first listener is closed before the
/// second binds (seen in CI: moto and the sandbox's sync were handed one port).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap_or_else(|err| panic!("binding 127.0.0.1:0 to find a free port: {err}"))
        })
        .collect();
    std::array::from_fn(|i| {
        listeners[i].local_addr().unwrap_or_else(|err| panic!("reading the bound address: {err}")).port()
    })
}

pub(crate) fn try_free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context(|| "binding 127.0.0.1:0 to find a free port".to_owned())?;
    Ok(listener.local_addr().context(|| "reading the bound address".to_owned())?.port())
}

/// Finds a binary on PATH (and in `extra_dirs`), or fails the test with how to
/// install it.
pub fn which(binary: &str, install_hint: &str) -> PathBuf {
    find_tool(binary, install_hint).unwrap_or_else(|err| panic!("{err}"))
}

/// `which`, returning the failure.
pub(crate) fn find_tool(binary: &str, install_hint: &str) -> Result<PathBuf> {
    // The project's pinned tools (`cargo xtask setup`: the Python
    // environment, the cargo-installed ones, checkov's own environment),
    // also when a test runs under a plain `cargo test` that did not put
    // them on PATH.
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/tools");
    let project_tools = ["python/bin", "cargo/bin", "checkov/bin"].map(|dir| tools.join(dir));
    match try_which(binary, &project_tools) {
        Some(path) => Ok(path),
        None => {
            let ci_note = if crate::in_ci() { " (CI=true: a missing component fails the run)" } else { "" };
            bail!("`{binary}` is not on PATH: {install_hint} (or `cargo xtask setup`){ci_note}")
        }
    }
}

pub(crate) fn try_which(binary: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .chain(extra_dirs.iter().cloned())
        .map(|dir| dir.join(binary))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

pub(crate) fn running_as_root() -> bool {
    // `id -u` avoids a libc dependency; it is in coreutils everywhere we run.
    Command::new("id").arg("-u").output().map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0").unwrap_or(false)
}

/// Spawns `command` with stdout and stderr appended to `log_path`, in its own
/// process group so a Ctrl-C meant for the test runner reaches us first and we
/// stop the service in order.
pub(crate) fn spawn_logged(command: Command, log_path: &Path) -> Child {
    try_spawn_logged(command, log_path).unwrap_or_else(|err| panic!("{err}"))
}

pub(crate) fn try_spawn_logged(mut command: Command, log_path: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .context(|| format!("opening log {}", log_path.display()))?;
    let log_err = log.try_clone().context(|| "cloning a log file handle".to_owned())?;
    command.stdin(Stdio::null()).stdout(log).stderr(log_err).process_group(0);
    command.spawn().context(|| format!("starting {command:?}"))
}

/// Polls `ready` every 50 ms until it returns true, the child exits, or the
/// deadline passes; the failure message includes the tail of the log.
pub(crate) fn wait_until(
    what: &str,
    child: &mut Child,
    log_path: &Path,
    timeout: Duration,
    ready: impl FnMut() -> bool,
) {
    try_wait_until(what, child, log_path, timeout, ready).unwrap_or_else(|err| panic!("{err}"))
}

/// `wait_until`, returning the failure. A child that is still running when
/// the time is up is stopped: nobody else holds it.
pub(crate) fn try_wait_until(
    what: &str,
    child: &mut Child,
    log_path: &Path,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "{what} exited with {status} before it was ready; log {}:\n{}",
                log_path.display(),
                log_tail(log_path)
            );
        }
        if Instant::now() > deadline {
            terminate(child, Duration::from_secs(5));
            bail!("{what} was not ready after {timeout:?}; log {}:\n{}", log_path.display(), log_tail(log_path));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

pub(crate) fn log_tail(log_path: &Path) -> String {
    let text = fs::read_to_string(log_path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Sends a bare HTTP/1.1 GET and returns the status code.
pub(crate) fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Stops a child: SIGTERM, a grace period, then SIGKILL.
pub(crate) fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    send_signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Sends a signal with `kill(1)`; a process that is already gone is fine.
pub(crate) fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).stderr(Stdio::null()).status();
}
