//! Processes by pid and process group: is it running, what does it run,
//! signal its group, wait for it. The low level that `support::daemon` (the
//! background processes xtask supervises) and `support::exec` (the children
//! it waits for) build on.
//!
//! Signals go through `killpg(2)` directly: no `kill` binary to find on
//! PATH, and an error (the group is gone) is just a return value.

use std::{
    fs,
    time::{Duration, Instant},
};

/// How often a wait looks whether a process has exited.
const POLL: Duration = Duration::from_millis(50);

/// The signals xtask sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGINT: what Ctrl-C sends on a terminal; PostgreSQL's fast
    /// shutdown, Terraform's clean stop.
    Interrupt,
    /// SIGTERM: please stop.
    Terminate,
    /// SIGKILL: stop now.
    Kill,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Interrupt => libc::SIGINT,
            Signal::Terminate => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

/// True while the process exists and is not a zombie.
pub fn process_running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat.rsplit_once(')').is_none_or(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// The arguments of a live (not zombie) process, `argv[0]` first.
pub fn command_line(pid: u32) -> Option<Vec<String>> {
    if !process_running(pid) {
        return None;
    }
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = bytes
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    (!args.is_empty()).then_some(args)
}

/// Sends `signal` to every process of the group `process_group`; a group
/// that is gone is fine.
pub fn signal_group(process_group: u32, signal: Signal) {
    // Group 0 is our own group and 1 would be init's: never a child's.
    let Some(process_group) = target(process_group) else { return };
    // SAFETY: killpg takes two integers and touches no memory of ours.
    unsafe { libc::killpg(process_group, signal.number()) };
}

/// SIGTERM to the process group, without waiting.
pub fn kill_process_group(process_group: u32) {
    signal_group(process_group, Signal::Terminate);
}

/// Waits up to `timeout` for `pid` to exit (or become a zombie); true when
/// it did.
pub fn wait_for_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
    true
}

/// A pid that may be signalled: not 0 or negative (which address groups,
/// ours among them) and not init.
fn target(pid: u32) -> Option<libc::pid_t> {
    libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_and_init_are_never_targets() {
        assert_eq!(target(0), None);
        assert_eq!(target(1), None);
        assert_eq!(target(u32::MAX), None);
        assert_eq!(target(4242), Some(4242));
    }

    #[test]
    fn a_signalled_group_stops_and_its_command_line_goes_with_it() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep").arg("30").process_group(0).spawn().expect("starting sleep");
        let pid = child.id();
        let expected = Some(vec!["sleep".to_owned(), "30".to_owned()]);
        // The new program's command line shows once its exec is done.
        let deadline = Instant::now() + Duration::from_secs(5);
        while command_line(pid) != expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(command_line(pid), expected);
        signal_group(pid, Signal::Terminate);
        // A zombie counts as stopped: this process has not reaped it yet.
        assert!(wait_for_exit(pid, Duration::from_secs(5)));
        assert_eq!(command_line(pid), None);
        let _ = child.wait();
    }
}
