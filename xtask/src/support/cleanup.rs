//! Cleanup that also runs on Ctrl-C and SIGTERM.
//!
//! `Drop` does not run when a signal kills the process, so anything that must
//! not outlive xtask (a throwaway Postgres, a container, a child build)
//! registers an action here. The guard runs the action when it goes out of
//! scope normally; the signal handler runs every registered action, newest
//! first, and exits with 130.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

type Action = Box<dyn FnOnce() + Send>;

static ACTIONS: Mutex<Vec<(u64, String, Action)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once Ctrl-C or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Called by `main` before it exits: when an interrupt is being handled,
/// the handler owns the exit (with 130, after its cleanup), so the main
/// thread must not race it with an exit code of its own.
pub fn wait_for_interrupt_handler() {
    if interrupted() {
        loop {
            std::thread::park();
        }
    }
}

/// For a child that failed: one killed by SIGINT or SIGTERM was most
/// likely signalled with its whole process group (a terminal's Ctrl-C), so
/// this process got the same signal and its handler owns the exit (130,
/// after the cleanup). Waits a moment for that handler, so the caller does
/// not exit first with the child's failure. A child signalled alone (an
/// editor in a job of its own) costs its caller that moment, no more.
pub fn await_interrupt_if_signalled(status: &std::process::ExitStatus) {
    use std::os::unix::process::ExitStatusExt;
    if !matches!(status.signal(), Some(libc::SIGINT | libc::SIGTERM)) {
        return;
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while !interrupted() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    wait_for_interrupt_handler();
}

/// Runs its action when dropped, unless the signal handler ran it first.
#[must_use = "the cleanup runs when the guard is dropped; bind it to a named variable"]
pub struct CleanupGuard {
    id: u64,
}

pub fn register(description: impl Into<String>, action: impl FnOnce() + Send + 'static) -> CleanupGuard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    ACTIONS.lock().unwrap_or_else(|poison| poison.into_inner()).push((id, description.into(), Box::new(action)));
    CleanupGuard { id }
}

impl CleanupGuard {
    /// Forgets the action without running it: what it would undo is to
    /// stay (a release's container, once it serves).
    pub fn disarm(self) {
        let _ = self.take_action();
        std::mem::forget(self);
    }

    fn take_action(&self) -> Option<Action> {
        let mut actions = ACTIONS.lock().unwrap_or_else(|poison| poison.into_inner());
        let index = actions.iter().position(|(id, ..)| *id == self.id)?;
        Some(actions.remove(index).2)
    }
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if let Some(action) = self.take_action() {
            action();
        }
    }
}

pub fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C while cleaning up: the first one is handling it.
            return;
        }
        crate::support::ui::notice("\ninterrupted: cleaning up");
        run_all();
        std::process::exit(130);
    });
    if let Err(err) = result {
        crate::support::ui::warn(&format!(
            "could not install the Ctrl-C handler ({err}); an interrupt may leave things running"
        ));
    }
}

fn run_all() {
    let actions = std::mem::take(&mut *ACTIONS.lock().unwrap_or_else(|poison| poison.into_inner()));
    for (_, description, action) in actions.into_iter().rev() {
        crate::support::ui::notice(&format!("cleanup: {description}"));
        action();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, atomic::AtomicBool};

    #[test]
    fn guard_runs_its_action_once_when_dropped() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        let guard = register("test", move || flag.store(true, Ordering::SeqCst));
        assert!(!ran.load(Ordering::SeqCst));
        drop(guard);
        assert!(ran.load(Ordering::SeqCst));
    }

    #[test]
    fn a_disarmed_guard_forgets_its_action() {
        let ran = Arc::new(AtomicBool::new(false));
        let flag = ran.clone();
        register("disarmed", move || flag.store(true, Ordering::SeqCst)).disarm();
        assert!(!ran.load(Ordering::SeqCst), "the disarmed guard ran its action");
        let actions = ACTIONS.lock().unwrap_or_else(|poison| poison.into_inner());
        assert!(!actions.iter().any(|(_, description, _)| description == "disarmed"));
    }
}
