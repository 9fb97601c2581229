//! `--json`: every line on stdout is a JSON object (NDJSON), for every task.
//!
//! Tasks print their results on stdout as they always do; results that are
//! JSON already (build-image, push, deploy) pass through unchanged. Anything
//! else a task or one of its children writes there becomes
//! `{"event":"output","text":...}`. The console messages (`ui::step`,
//! `ui::warn`, ...) also become `{"event":"log","level":...,"message":...}`
//! (humans still get them on stderr), and the run ends with one
//! `{"event":"task",...}` saying how it went.
//!
//! Why a pipe behind stdout instead of a JSON path in every task: a task
//! that forgot would break every consumer's parser, and children (cargo,
//! terraform, docker) write to the same descriptor.

use std::{
    fs::File,
    io::{BufRead, BufReader, Write},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::support::events::Event;

/// The pipe that stands in for stdout while a task runs with `--json`.
pub struct Capture {
    /// The real stdout, restored by `finish`.
    original: OwnedFd,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Points file descriptor 1 at a pipe whose reader wraps non-JSON lines.
    pub fn start() -> Result<Capture> {
        crate::support::events::enable();
        let mut fds = [0; 2];
        // SAFETY: pipe() fills the two descriptors, which we then own.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            bail!("creating a pipe for --json: {}", std::io::Error::last_os_error());
        }
        // SAFETY: both descriptors were just created and are owned here.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let original = std::io::stdout().as_raw_fd();
        // SAFETY: dup() of our own stdout; the result is owned here.
        let saved = unsafe { libc::dup(original) };
        if saved < 0 {
            bail!("duplicating stdout for --json: {}", std::io::Error::last_os_error());
        }
        // SAFETY: the descriptor was just created by dup().
        let original_fd = unsafe { OwnedFd::from_raw_fd(saved) };
        let mut out = File::from(original_fd.try_clone().context("duplicating stdout for --json")?);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(File::from(read_end)).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(out, "{}", wrap(&line));
                let _ = out.flush();
            }
        });
        std::io::stdout().flush().context("flushing stdout")?;
        // SAFETY: dup2 onto fd 1; write_end stays open until dropped below,
        // after which fd 1 is the pipe's only writer in this process.
        if unsafe { libc::dup2(write_end.as_raw_fd(), original) } < 0 {
            bail!("redirecting stdout for --json: {}", std::io::Error::last_os_error());
        }
        drop(write_end);
        Ok(Capture { original: original_fd, reader: Some(reader) })
    }

    /// Puts the real stdout back and waits (briefly) for the last lines.
    /// Children still holding the pipe (background processes a task
    /// started) must not keep xtask from exiting.
    pub fn finish(mut self) {
        let _ = std::io::stdout().flush();
        // SAFETY: dup2 of the saved descriptor back onto fd 1 closes the
        // pipe's write end held by fd 1.
        unsafe { libc::dup2(self.original.as_raw_fd(), std::io::stdout().as_raw_fd()) };
        if let Some(reader) = self.reader.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while !reader.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

/// A stdout line as NDJSON: JSON objects unchanged, anything else wrapped.
fn wrap(line: &str) -> String {
    let trimmed = line.trim();
    if trimmed.starts_with('{') && serde_json::from_str::<serde_json::Map<String, Value>>(trimmed).is_ok() {
        return trimmed.to_owned();
    }
    Event::Output { text: line }.to_value().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_pass_and_everything_else_is_wrapped() {
        assert_eq!(wrap(r#"{"event":"deployed","image":"x"}"#), r#"{"event":"deployed","image":"x"}"#);
        assert_eq!(wrap("image: guestbook:git-1"), r#"{"event":"output","text":"image: guestbook:git-1"}"#);
        // A JSON value that is not an object is text to an NDJSON reader.
        assert_eq!(wrap("[1,2]"), r#"{"event":"output","text":"[1,2]"}"#);
        assert_eq!(wrap("{not json"), r#"{"event":"output","text":"{not json"}"#);
    }
}
