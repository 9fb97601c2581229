//! The one supervisor of xtask's background processes: the local
//! environment's proxy, the sandbox's moto, sync and registry, the app that
//! `dev` runs.
//!
//! A daemon starts detached: the leader of a process group of its own (a
//! Ctrl-C on this terminal is meant for xtask, which then stops what it
//! started, in order), no terminal input, stdout and stderr in its log file
//! (or on xtask's own, for the app `dev` shows).
//! While xtask holds its [`Daemon`] handle, an error (the handle dropped) or
//! an interrupt stops it; [`Daemon::detach`] lets it outlive xtask.
//!
//! Whoever keeps a daemon running records its pid (a pid file, a state
//! file) and what it runs, its [`Signature`]. A recorded pid is signalled
//! only while `/proc/<pid>/cmdline` still shows that signature: once the
//! daemon is gone its pid may be reused by anything.
//!
//! Stopping is SIGTERM to the group, a grace period for its leader to exit,
//! then SIGKILL: the group also holds the daemon's own children (the sync's
//! `xtask-aws`), which a signal to the leader alone would leave behind.

use std::{
    fs,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::support::{
    cleanup,
    process::{Signal, command_line, signal_group, wait_for_exit},
};

/// How long a stopped daemon's leader gets between SIGTERM and SIGKILL,
/// unless its `Launch` says otherwise.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// How long a group gets to go after SIGKILL before we stop looking.
const KILL_WAIT: Duration = Duration::from_secs(2);

/// A background process to start.
#[derive(Debug)]
pub struct Launch<'a> {
    /// Said in messages: "the proxy", "moto".
    pub name: &'a str,
    /// Program, arguments, environment and directory; its stdin, stdout,
    /// stderr and process group are set by [`Daemon::start`].
    pub command: Command,
    pub output: Output<'a>,
    /// SIGTERM to SIGKILL when it is stopped ([`STOP_GRACE`] for most).
    pub stop_grace: Duration,
}

/// Where a daemon's stdout and stderr go.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// To a log file: it outlives the terminal that started it.
    Log(&'a Path, LogMode),
    /// To xtask's own: a process xtask shows while it runs (the app of
    /// `dev`), stopped when xtask is.
    Inherit,
}

/// What happens to a log file that exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Started afresh: the log holds only this run.
    Truncate,
    /// Appended to: the log keeps every run (a daemon restarted now and
    /// then, whose history helps).
    Append,
}

/// A daemon this xtask started. Stopped when dropped (or on Ctrl-C) until
/// [`Daemon::detach`] lets it go.
pub struct Daemon {
    name: String,
    child: Child,
    signature: Signature,
    stop_grace: Duration,
    /// True while this handle is responsible for stopping it: not once it
    /// is detached, nor once it is reaped (its pid may be reused then).
    armed: Arc<AtomicBool>,
    _stop_on_interrupt: cleanup::CleanupGuard,
}

impl Daemon {
    /// Starts `launch.command` detached, its output in `launch.log`.
    pub fn start(launch: Launch<'_>) -> Result<Daemon> {
        use std::os::unix::process::CommandExt;
        let Launch { name, mut command, output, stop_grace } = launch;
        if let Output::Log(log, mode) = output {
            let log_file = open_log(log, mode)?;
            let log_err = log_file.try_clone().with_context(|| format!("opening {}", log.display()))?;
            command.stdout(log_file).stderr(log_err);
        }
        command.stdin(Stdio::null()).process_group(0);
        let signature = Signature::of(&command);
        let child = command.spawn().with_context(|| format!("starting {name} ({signature})"))?;
        let pid = child.id();
        let armed = Arc::new(AtomicBool::new(true));
        let still_armed = armed.clone();
        let guard = cleanup::register(format!("stop {name} (pid {pid})"), move || {
            if still_armed.swap(false, Ordering::SeqCst) {
                stop_group(pid, stop_grace);
            }
        });
        Ok(Daemon { name: name.to_owned(), child, signature, stop_grace, armed, _stop_on_interrupt: guard })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it runs, to record with its pid.
    pub fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Its exit status once it has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        if status.is_some() {
            self.armed.store(false, Ordering::SeqCst);
        }
        status
    }

    /// Polls `ready` until it is true; fails when the daemon exits first
    /// or `timeout` passes. The caller words the error (with
    /// [`log_tail`]): only it knows what "ready" meant.
    pub fn wait_until_ready(&mut self, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<(), NotReady> {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(NotReady::Exited(status));
            }
            if Instant::now() > deadline {
                return Err(NotReady::TimedOut(timeout));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Stops it now (see [`stop_group`]) and reaps it.
    pub fn stop(mut self) {
        self.stop_and_reap();
    }

    /// Lets it run on after this handle (and xtask) are gone; returns its
    /// pid, for the caller to record with its signature.
    pub fn detach(self) -> u32 {
        self.armed.store(false, Ordering::SeqCst);
        self.pid()
    }

    fn stop_and_reap(&mut self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            if let Ok(None) = self.child.try_wait() {
                stop_group(self.child.id(), self.stop_grace);
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop_and_reap();
    }
}

impl std::fmt::Display for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.name, self.pid())
    }
}

/// Why [`Daemon::wait_until_ready`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    Exited(ExitStatus),
    TimedOut(Duration),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited ({status}) before it was ready"),
            NotReady::TimedOut(timeout) => write!(f, "was not ready after {}s", timeout.as_secs()),
        }
    }
}

impl std::error::Error for NotReady {}

/// What a recorded pid must still run to be the daemon that was started:
/// the program's file name and its arguments. Serialized as two fields,
/// `program` and `args`, beside whatever else a state file keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// File name of the program, found anywhere in the command line: a
    /// script run through an interpreter (a pyenv shim runs
    /// `python3 .../moto_server`) matches too.
    pub program: String,
    /// Arguments that follow the program, side by side and in this order;
    /// empty matches any.
    pub args: Vec<String>,
}

impl Signature {
    /// The signature of what `command` runs.
    pub fn of(command: &Command) -> Signature {
        let program = Path::new(command.get_program()).file_name().unwrap_or_default();
        Signature {
            program: program.to_string_lossy().into_owned(),
            args: command.get_args().map(|arg| arg.to_string_lossy().into_owned()).collect(),
        }
    }

    pub fn matches(&self, command_line: &[String]) -> bool {
        let program_position = command_line
            .iter()
            .position(|arg| Path::new(arg).file_name().is_some_and(|name| name.to_string_lossy() == self.program));
        let Some(position) = program_position else {
            return false;
        };
        let rest = &command_line[position + 1..];
        self.args.is_empty() || rest.windows(self.args.len()).any(|window| window == self.args.as_slice())
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// What a recorded pid runs now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing (or a zombie): the daemon has stopped.
    Gone,
    /// Something else, with this command line: the pid was reused.
    Other(Vec<String>),
    /// The daemon that was recorded.
    Ours,
}

/// Looks at what `pid` runs now.
pub fn find(pid: u32, signature: &Signature) -> Found {
    match command_line(pid) {
        None => Found::Gone,
        Some(command_line) if signature.matches(&command_line) => Found::Ours,
        Some(command_line) => Found::Other(command_line),
    }
}

/// True while `pid` runs what `signature` describes.
pub fn is_ours(pid: u32, signature: &Signature) -> bool {
    find(pid, signature) == Found::Ours
}

/// Stops a recorded daemon (see [`stop_group`]) if `pid` is still ours;
/// returns what it found, so the caller can say what happened.
pub fn stop_recorded(pid: u32, signature: &Signature, grace: Duration) -> Found {
    let found = find(pid, signature);
    if found == Found::Ours {
        stop_group(pid, grace);
    }
    found
}

/// SIGTERM to the process group led by `pid`, up to `grace` for the
/// leader to exit, then SIGKILL. When the leader exits in time the group
/// gets SIGTERM once more, for children that outlived it.
pub fn stop_group(pid: u32, grace: Duration) {
    signal_group(pid, Signal::Terminate);
    if wait_for_exit(pid, grace) {
        signal_group(pid, Signal::Terminate);
        return;
    }
    signal_group(pid, Signal::Kill);
    wait_for_exit(pid, KILL_WAIT);
}

/// The last `lines` lines of a daemon's log, for an error message.
pub fn log_tail(log: &Path, lines: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn open_log(log: &Path, mode: LogMode) -> Result<fs::File> {
    if let Some(dir) = log.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut options = fs::OpenOptions::new();
    match mode {
        LogMode::Truncate => options.write(true).create(true).truncate(true),
        LogMode::Append => options.create(true).append(true),
    };
    options.open(log).with_context(|| format!("opening {}", log.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn a_pid_is_ours_only_while_its_command_line_matches() {
        let moto = Signature { program: "moto_server".to_owned(), args: strings(&["-H", "127.0.0.1", "-p", "4000"]) };
        // Through an interpreter, as a pyenv shim runs it.
        assert!(moto.matches(&strings(&["/usr/bin/python3", "/x/bin/moto_server", "-H", "127.0.0.1", "-p", "4000"])));
        assert!(!moto.matches(&strings(&["/x/bin/moto_server", "-H", "127.0.0.1", "-p", "4001"])));
        assert!(!moto.matches(&strings(&["/usr/bin/vim", "-H", "127.0.0.1", "-p", "4000"])));
    }

    #[test]
    fn a_signature_is_the_programs_file_name_and_its_arguments() {
        let mut command = Command::new("/usr/bin/python3");
        command.args(["launcher.py", "-p", "4000"]);
        let signature = Signature::of(&command);
        assert_eq!(
            signature,
            Signature { program: "python3".to_owned(), args: strings(&["launcher.py", "-p", "4000"]) }
        );
        assert_eq!(signature.to_string(), "python3 launcher.py -p 4000");
    }

    fn sleeper(log: &Path) -> Launch<'_> {
        let mut command = Command::new("sh");
        // Not `exec sleep`: the shell must stay what its signature says.
        command.args(["-c", "echo started; sleep 30; echo done"]);
        Launch { name: "a sleeper", command, output: Output::Log(log, LogMode::Truncate), stop_grace: STOP_GRACE }
    }

    #[test]
    fn a_detached_daemon_runs_on_until_stopped_by_its_record() {
        let dir = testkit::ServiceDir::new("xtask-daemon");
        let log = dir.path().join("logs/sleeper.log");
        let mut daemon = Daemon::start(sleeper(&log)).unwrap();
        daemon.wait_until_ready(Duration::from_secs(10), || log_tail(&log, 1) == "started").unwrap();
        let signature = daemon.signature().clone();
        let pid = daemon.detach();
        assert_eq!(find(pid, &signature), Found::Ours);
        let someone_else = Signature { program: "sh".to_owned(), args: strings(&["-c", "something else"]) };
        assert!(matches!(stop_recorded(pid, &someone_else, STOP_GRACE), Found::Other(_)));
        assert!(is_ours(pid, &signature), "a signature that does not match stopped it");
        assert_eq!(stop_recorded(pid, &signature, STOP_GRACE), Found::Ours);
        assert_eq!(find(pid, &signature), Found::Gone);
    }

    #[test]
    fn a_dropped_daemon_is_stopped_and_an_early_exit_is_reported() {
        let dir = testkit::ServiceDir::new("xtask-daemon-drop");
        let log = dir.path().join("sleeper.log");
        let mut daemon = Daemon::start(sleeper(&log)).unwrap();
        daemon.wait_until_ready(Duration::from_secs(10), || log_tail(&log, 1) == "started").unwrap();
        let pid = daemon.pid();
        drop(daemon);
        assert!(!crate::support::process::process_running(pid));

        let mut command = Command::new("sh");
        command.args(["-c", "echo broken >&2; exit 3"]);
        let output = Output::Log(&log, LogMode::Append);
        let launch = Launch { name: "a failure", command, output, stop_grace: STOP_GRACE };
        let mut daemon = Daemon::start(launch).unwrap();
        let not_ready = daemon.wait_until_ready(Duration::from_secs(10), || false).unwrap_err();
        assert!(not_ready.to_string().starts_with("exited (exit status: 3) before it was ready"), "{not_ready}");
        assert_eq!(log_tail(&log, 5), "started\nbroken");
    }
}
