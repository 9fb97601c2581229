//! Running child processes: in their own process group, stopped on
//! Ctrl-C, with a progress line; finding tools; nested cargo.

use std::{
    io::{BufRead, BufReader, Read},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::Mutex,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use crate::support::{
    cleanup,
    process::{Signal, kill_process_group, signal_group, wait_for_exit},
    ui,
};

/// Spawns `command` in its own process group and waits for it; the group is
/// terminated if xtask is interrupted meanwhile.
pub fn spawn_and_wait(description: &str, command: &mut Command) -> Result<ExitStatus> {
    spawn_and_wait_with(description, command, SpawnOptions::default())
}

/// How `spawn_and_wait_with` treats its child.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    pub on_interrupt: StopOnInterrupt,
}

/// What happens to the child when xtask gets Ctrl-C or SIGTERM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopOnInterrupt {
    /// SIGTERM to its process group at once.
    #[default]
    Terminate,
    /// SIGINT to its process group (what Ctrl-C sends on a terminal), then
    /// up to this long for it to exit before SIGTERM. For children that
    /// must finish cleanly: Terraform writes its state and releases the
    /// state lock after an interrupt, which takes a few seconds.
    InterruptAndWait(Duration),
}

/// `spawn_and_wait` with options.
pub fn spawn_and_wait_with(description: &str, command: &mut Command, options: SpawnOptions) -> Result<ExitStatus> {
    spawn_and_wait_observed(description, command, options, |_| {})
}

/// `spawn_and_wait_with` for a long step, shown as a `ui::Progress`: on a
/// terminal the child's stdout and stderr are captured (the latest line is
/// the spinner's message; the tail is printed if it fails); elsewhere they
/// go where `command` sends them, as with `spawn_and_wait_with`.
pub fn spawn_with_progress(description: &str, command: &mut Command, options: SpawnOptions) -> Result<ExitStatus> {
    let progress = ui::progress(description);
    let status = if progress.captures_output() {
        spawn_piped(description, command, options, &|_, line| progress.output_line(line))?
    } else {
        spawn_and_wait_with(description, command, options)?
    };
    progress.finish(status.success());
    Ok(status)
}

/// Runs a long command whose output the caller reads (`Command::output`),
/// shown as a `ui::Progress`; its lines are also shown as they come (the
/// spinner's message on a terminal, plain lines elsewhere). Interruptible
/// like `spawn_and_wait`.
pub fn output_with_progress(description: &str, command: &mut Command) -> Result<Output> {
    let progress = ui::progress(description);
    let stdout = Mutex::new(Vec::new());
    let stderr = Mutex::new(Vec::new());
    command.stdin(Stdio::null());
    let status = spawn_piped(description, command, SpawnOptions::default(), &|stream, line| {
        let buffer = match stream {
            OutputStream::Stdout => &stdout,
            OutputStream::Stderr => &stderr,
        };
        let mut buffer = buffer.lock().unwrap_or_else(|poison| poison.into_inner());
        buffer.extend_from_slice(line.as_bytes());
        buffer.push(b'\n');
        drop(buffer);
        progress.output_line(line);
    })?;
    progress.finish(status.success());
    let into_inner = |buffer: Mutex<Vec<u8>>| buffer.into_inner().unwrap_or_else(|poison| poison.into_inner());
    Ok(Output { status, stdout: into_inner(stdout), stderr: into_inner(stderr) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutputStream {
    Stdout,
    Stderr,
}

/// Spawns `command` with its stdout and stderr piped, hands every line of
/// either to `on_line` as it comes (from a reader thread per stream), and
/// waits for the child and both streams.
fn spawn_piped(
    description: &str,
    command: &mut Command,
    options: SpawnOptions,
    on_line: &(dyn Fn(OutputStream, &str) + Sync),
) -> Result<ExitStatus> {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    std::thread::scope(|scope| {
        spawn_and_wait_observed(description, command, options, |child| {
            let streams: [(OutputStream, Option<Box<dyn Read + Send>>); 2] = [
                (OutputStream::Stdout, child.stdout.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>)),
                (OutputStream::Stderr, child.stderr.take().map(|pipe| Box::new(pipe) as Box<dyn Read + Send>)),
            ];
            for (stream, pipe) in streams {
                let Some(pipe) = pipe else { continue };
                scope.spawn(move || {
                    // Lines are split on bytes: a child may print invalid UTF-8.
                    let mut reader = BufReader::new(pipe);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
                        let text = String::from_utf8_lossy(&line);
                        on_line(stream, text.trim_end_matches(['\n', '\r']));
                        line.clear();
                    }
                });
            }
        })
    })
}

/// `spawn_and_wait_with`, calling `on_spawned` with the child before
/// waiting for it (to take its pipes).
fn spawn_and_wait_observed(
    description: &str,
    command: &mut Command,
    options: SpawnOptions,
    on_spawned: impl FnOnce(&mut Child),
) -> Result<ExitStatus> {
    use std::os::unix::process::CommandExt;
    command.process_group(0);
    let mut child = command.spawn().with_context(|| format!("starting {description}"))?;
    on_spawned(&mut child);
    let process_group = child.id();
    // Once the child is reaped its pid may be reused: the guard must not
    // signal it after a normal exit.
    let exited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let exited_flag = exited.clone();
    let stopping = description.to_owned();
    let _guard = cleanup::register(format!("stop {description}"), move || {
        if exited_flag.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        match options.on_interrupt {
            StopOnInterrupt::Terminate => kill_process_group(process_group),
            StopOnInterrupt::InterruptAndWait(grace) => interrupt_and_wait(&stopping, process_group, grace),
        }
    });
    let status = child.wait().with_context(|| format!("waiting for {description}"));
    exited.store(true, std::sync::atomic::Ordering::SeqCst);
    status
}

/// SIGINT, a grace period for the group leader to exit, then SIGTERM.
fn interrupt_and_wait(description: &str, process_group: u32, grace: Duration) {
    signal_group(process_group, Signal::Interrupt);
    ui::notice(&format!("waiting up to {}s for {description} to stop cleanly", grace.as_secs()));
    if wait_for_exit(process_group, grace) {
        return;
    }
    ui::notice(&format!("{description} did not stop within {}s; terminating it", grace.as_secs()));
    kill_process_group(process_group);
}

pub fn success_status() -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    ExitStatus::from_raw(0)
}

/// This xtask binary, to start one of its own background processes (the
/// local proxy, the sandbox sync). When cargo rebuilt it while it runs
/// (`cargo xtask ci` runs test-local, whose `cargo test` builds xtask
/// again), Linux reports the old file as "<path> (deleted)"; the path then
/// holds the new build of the same sources, which is the one to start.
pub fn self_exe() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("finding the xtask binary")?;
    if exe.exists() {
        return Ok(exe);
    }
    let rebuilt = exe.to_string_lossy().strip_suffix(" (deleted)").map(PathBuf::from);
    match rebuilt {
        Some(rebuilt) if rebuilt.exists() => Ok(rebuilt),
        _ => bail!("the xtask binary {} is gone: run the task again", exe.display()),
    }
}

/// Finds a tool on PATH or says how to get it.
pub fn require_tool(name: &str, install_hint: &str) -> Result<PathBuf> {
    which::which(name).map_err(|_| anyhow::anyhow!("`{name}` is not on PATH: {install_hint}"))
}

/// A `cargo` command for a child build. xtask runs under `cargo run`, which
/// sets `CARGO_*` variables describing the xtask package; a nested cargo that
/// inherits them sees a different environment and rebuilds everything, so
/// they are removed. `RUSTUP_TOOLCHAIN` stays: cargo runs rustc in each
/// crate's own directory, and some published crates ship a
/// `rust-toolchain.toml` (sqlx asks for 1.78) that the rustup proxy would
/// otherwise obey and fail on ("toolchain ... is not installed").
pub fn cargo<'a>(sh: &'a Shell) -> Cmd<'a> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = sh.cmd(cargo);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let inherited_from_cargo_run = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR";
        if inherited_from_cargo_run {
            cmd = cmd.env_remove(key.as_ref());
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_with_progress_keeps_both_streams_and_the_exit_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "printf 'one\\ntwo\\n'; echo oops >&2; printf 'no newline'; exit 3"]);
        let output = output_with_progress("a failing child", &mut command).unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "one\ntwo\nno newline\n");
        assert_eq!(String::from_utf8(output.stderr).unwrap(), "oops\n");
    }

    #[test]
    fn spawn_with_progress_returns_the_childs_status() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 4"]);
        let status = spawn_with_progress("a child", &mut command, SpawnOptions::default()).unwrap();
        assert_eq!(status.code(), Some(4));
    }

    #[test]
    fn nested_cargo_does_not_inherit_cargo_run_variables() {
        let sh = Shell::new().unwrap();
        // SAFETY-free: vars are read, not set; the test only inspects Display.
        let cmd = cargo(&sh).arg("--version");
        assert!(cmd.to_string().ends_with("--version"));
    }
}
