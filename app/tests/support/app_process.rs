//! Runs the built `app` binary with a controlled environment.
//!
//! The child gets a cleared environment and an empty working directory, so a
//! developer's shell variables or `.env` cannot change what a test sees.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::http;

const APP: &str = env!("CARGO_BIN_EXE_app");

/// A bare command for the binary: no inherited environment, run in `dir`.
pub fn command(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut command = Command::new(APP);
    command.args(args).env_clear().current_dir(dir);
    for (key, value) in envs {
        command.env(key, value);
    }
    command
}

/// Runs the binary to completion (with a deadline) and returns its output.
pub fn run(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut child = command(dir, args, envs)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the app binary");
    let stdout = collect(child.stdout.take().expect("piped"), Arc::default());
    let stderr = collect(child.stderr.take().expect("piped"), Arc::default());
    let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("`app {}` did not exit within 30s", args.join(" "));
    });
    Output {
        status,
        stdout: stdout.join().expect("stdout reader").into_bytes(),
        stderr: stderr.join().expect("stderr reader").into_bytes(),
    }
}

/// A running `app serve`, killed on drop if still running.
pub struct AppProcess {
    child: Child,
    pub port: u16,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The pipe readers; `wait` joins them once the process has exited, so
    /// its last lines are in `stdout`/`stderr` before anyone reads them.
    readers: Vec<JoinHandle<String>>,
    // Keeps the empty working directory alive.
    _dir: testkit::ServiceDir,
}

impl AppProcess {
    /// Starts `app serve` on a free port and waits until `/healthz` answers.
    pub fn serve(envs: &[(&str, &str)]) -> AppProcess {
        let dir = testkit::ServiceDir::new("app-serve-test");
        let port = testkit::free_port();
        let port_text = port.to_string();
        let mut all_envs = vec![("PORT", port_text.as_str()), ("BIND_ADDR", "127.0.0.1")];
        all_envs.extend_from_slice(envs);
        let mut child = command(dir.path(), &["serve"], &all_envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning the app binary");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().expect("piped"), stdout.clone()),
            collect(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        let mut app = AppProcess { child, port, stdout, stderr, readers, _dir: dir };
        app.wait_until_healthy();
        app
    }

    fn wait_until_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http::get(self.port, "/healthz").is_ok_and(|r| r.status == 200) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "app exited with {status} before it was healthy\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "app was not healthy after 20s\nstdout:\n{}", self.stdout());
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal with `kill(1)` (no libc dependency needed).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, up to `timeout`, and then for its
    /// output to be read to the end.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let status = wait_timeout(&mut self.child, timeout)?;
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Some(status)
    }

    /// Polls stdout until it contains `needle`; panics after `timeout`.
    pub fn wait_for_output(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stdout().contains(needle) {
            assert!(Instant::now() < deadline, "app never logged {needle:?}; stdout:\n{}", self.stdout());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process wrote to stdout so far (its log).
    pub fn stdout(&self) -> String {
        self.stdout.lock().expect("stdout lock").clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }
}

impl Drop for AppProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("app stdout:\n{}\napp stderr:\n{}", self.stdout(), self.stderr());
        }
    }
}

/// Reads a pipe to EOF on a thread, appending to `sink`, so the child never
/// blocks on a full pipe.
fn collect(mut pipe: impl std::io::Read + Send + 'static, sink: Arc<Mutex<String>>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => sink.lock().expect("sink lock").push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
        sink.lock().expect("sink lock").clone()
    })
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}
