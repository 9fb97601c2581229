//! Running child processes: in their own process group, stopped on
//! Ctrl-C, with a progress line; finding tools; nested cargo.
//!
//! One-shot commands are xshell's (`Ctx::run`, `Ctx::read`). The children
//! here stream or must be stopped: they run as duct handles, which one
//! thread waits on while the Ctrl-C cleanup (another thread) looks whether
//! the child is still running before signalling its process group.

use std::{
    io::{BufRead, BufReader, Read},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Command, ExitStatus, Output},
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use duct::{Expression, Handle};
use xshell::{Cmd, Shell};

use crate::support::{
    cleanup,
    process::{Signal, kill_process_group, signal_group},
    ui,
};

/// Spawns `cmd` in its own process group and waits for it; the group is
/// terminated if xtask is interrupted meanwhile.
pub fn spawn_and_wait(description: &str, cmd: Cmd<'_>) -> Result<ExitStatus> {
    spawn_and_wait_with(description, cmd, SpawnOptions::default())
}

/// How `spawn_and_wait_with` treats its child.
#[derive(Debug, Clone, Copy, Default)]
pub struct SpawnOptions {
    pub on_interrupt: StopOnInterrupt,
    pub stdout: StdoutTo,
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

/// Where the child's stdout goes when it is not captured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StdoutTo {
    /// xtask's own stdout.
    #[default]
    Inherit,
    /// xtask's stderr: for a report that is progress, not a result, so
    /// stdout stays for what scripts read (`--json`).
    Stderr,
    /// Nowhere.
    Null,
}

/// `spawn_and_wait` with options.
pub fn spawn_and_wait_with(description: &str, cmd: Cmd<'_>, options: SpawnOptions) -> Result<ExitStatus> {
    wait_interruptibly(description, routed(expression(cmd), options.stdout), options.on_interrupt)
}

/// `spawn_and_wait_with` for a long step, shown as a `ui::Progress`: on a
/// terminal the child's stdout and stderr are captured (the latest line is
/// the spinner's message; the tail is printed if it fails); elsewhere they
/// go where `options` sends them, as with `spawn_and_wait_with`.
pub fn spawn_with_progress(description: &str, cmd: Cmd<'_>, options: SpawnOptions) -> Result<ExitStatus> {
    let progress = ui::progress(description);
    let status = if progress.captures_output() {
        spawn_piped(description, expression(cmd), options.on_interrupt, &|_, line| progress.output_line(line))?
    } else {
        spawn_and_wait_with(description, cmd, options)?
    };
    progress.finish(status.success());
    Ok(status)
}

/// Runs a long command whose output the caller reads (`Command::output`),
/// shown as a `ui::Progress`; its lines are also shown as they come (the
/// spinner's message on a terminal, plain lines elsewhere). Interruptible
/// like `spawn_and_wait`.
pub fn output_with_progress(description: &str, cmd: Cmd<'_>) -> Result<Output> {
    let progress = ui::progress(description);
    let stdout = Mutex::new(Vec::new());
    let stderr = Mutex::new(Vec::new());
    let expression = expression(cmd).stdin_null();
    let status = spawn_piped(description, expression, StopOnInterrupt::Terminate, &|stream, line| {
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

/// xshell's command (program, arguments, directory, environment) as a duct
/// expression that runs in its own process group and reports a failing
/// exit status instead of erroring on it.
fn expression(cmd: Cmd<'_>) -> Expression {
    let command = Command::from(cmd);
    let mut expression = duct::cmd(command.get_program(), command.get_args());
    if let Some(dir) = command.get_current_dir() {
        expression = expression.dir(dir);
    }
    for (key, value) in command.get_envs() {
        expression = match value {
            Some(value) => expression.env(key, value),
            None => expression.env_remove(key),
        };
    }
    // Its own group: Ctrl-C on the terminal reaches xtask only, which then
    // stops the child's whole group (cargo's rustc, docker's plugins).
    expression.unchecked().before_spawn(|command| {
        command.process_group(0);
        Ok(())
    })
}

fn routed(expression: Expression, stdout: StdoutTo) -> Expression {
    match stdout {
        StdoutTo::Inherit => expression,
        StdoutTo::Stderr => expression.stdout_to_stderr(),
        StdoutTo::Null => expression.stdout_null(),
    }
}

/// Runs `expression` with its stdout and stderr on two pipes, hands every
/// line of either to `on_line` as it comes (from a reader thread per
/// pipe), and waits for the child and both pipes.
fn spawn_piped(
    description: &str,
    expression: Expression,
    on_interrupt: StopOnInterrupt,
    on_line: &(dyn Fn(OutputStream, &str) + Sync),
) -> Result<ExitStatus> {
    let (expression, stdout, stderr) = piped(expression)?;
    std::thread::scope(|scope| {
        for (stream, pipe) in [(OutputStream::Stdout, stdout), (OutputStream::Stderr, stderr)] {
            scope.spawn(move || read_lines(pipe, |line| on_line(stream, line)));
        }
        wait_interruptibly(description, expression, on_interrupt)
    })
}

/// Runs `cmd` with its stdin closed and captures its stdout and stderr,
/// giving it up to `timeout`. A child that is still running then is
/// stopped with its whole process group (`None`); one that exits has its
/// group stopped too, since its helpers may hold the pipes open (a browser).
pub fn capture_within(description: &str, cmd: Cmd<'_>, timeout: Duration) -> Result<Option<Output>> {
    let (expression, stdout, stderr) = piped(expression(cmd).stdin_null())?;
    let (handle, _guard) = start(description, expression, StopOnInterrupt::Terminate)?;
    let read_all = |mut pipe: os_pipe::PipeReader| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let (stdout, stderr) = (read_all(stdout), read_all(stderr));
    let exited =
        handle.wait_timeout(timeout).with_context(|| format!("waiting for {description}"))?.map(|output| output.status);
    if let Some(process_group) = handle.pids().first() {
        kill_process_group(*process_group);
    }
    let Some(status) = exited else {
        let _ = handle.wait();
        return Ok(None);
    };
    let joined = |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_default();
    Ok(Some(Output { status, stdout: joined(stdout), stderr: joined(stderr) }))
}

/// Calls `on_line` with every line of `pipe`, split on bytes: a child may
/// print invalid UTF-8.
fn read_lines(pipe: impl Read, on_line: impl Fn(&str)) {
    let mut reader = BufReader::new(pipe);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line).is_ok_and(|read| read > 0) {
        on_line(String::from_utf8_lossy(&line).trim_end_matches(['\n', '\r']));
        line.clear();
    }
}

/// `expression` with its stdout and stderr on two pipes, and their read
/// ends. The expression owns the write ends: `start` drops it once the
/// child holds its copies, so the readers see the end when the child's
/// group is done.
fn piped(expression: Expression) -> Result<(Expression, os_pipe::PipeReader, os_pipe::PipeReader)> {
    let (stdout, stdout_writer) = os_pipe::pipe().context("creating a pipe for the child's stdout")?;
    let (stderr, stderr_writer) = os_pipe::pipe().context("creating a pipe for the child's stderr")?;
    Ok((expression.stdout_file(stdout_writer).stderr_file(stderr_writer), stdout, stderr))
}

/// Starts `expression`. Until the guard drops or the child has exited, a
/// Ctrl-C (or SIGTERM) to xtask stops its process group as `on_interrupt`
/// says.
fn start(
    description: &str,
    expression: Expression,
    on_interrupt: StopOnInterrupt,
) -> Result<(Arc<Handle>, cleanup::CleanupGuard)> {
    let handle = Arc::new(expression.start().with_context(|| format!("starting {description}"))?);
    // Closes our copies of the pipes' write ends (see `piped`).
    drop(expression);
    let stopping = (description.to_owned(), handle.clone());
    let guard = cleanup::register(format!("stop {description}"), move || {
        let (description, handle) = stopping;
        stop(&description, &handle, on_interrupt);
    });
    Ok((handle, guard))
}

/// Starts `expression` and waits for it, interruptibly (see `start`).
fn wait_interruptibly(description: &str, expression: Expression, on_interrupt: StopOnInterrupt) -> Result<ExitStatus> {
    let (handle, _guard) = start(description, expression, on_interrupt)?;
    let output = handle.wait().with_context(|| format!("waiting for {description}"))?;
    Ok(output.status)
}

/// Stops a child that has not exited: SIGTERM to its group, or SIGINT, a
/// grace period for it to exit, then SIGTERM.
fn stop(description: &str, handle: &Handle, on_interrupt: StopOnInterrupt) {
    // Once the child is reaped its pid (the group's id) may be reused: a
    // child that has exited is not signalled.
    let Some(process_group) = handle.pids().first().copied().filter(|_| matches!(handle.try_wait(), Ok(None))) else {
        return;
    };
    let grace = match on_interrupt {
        StopOnInterrupt::Terminate => return kill_process_group(process_group),
        StopOnInterrupt::InterruptAndWait(grace) => grace,
    };
    signal_group(process_group, Signal::Interrupt);
    ui::notice(&format!("waiting up to {}s for {description} to stop cleanly", grace.as_secs()));
    if matches!(handle.wait_timeout(grace), Ok(Some(_))) {
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
        let sh = Shell::new().unwrap();
        let script = "printf 'one\\ntwo\\n'; echo oops >&2; printf 'no newline'; exit 3";
        let output = output_with_progress("a failing child", sh.cmd("sh").args(["-c", script])).unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8(output.stdout).unwrap(), "one\ntwo\nno newline\n");
        assert_eq!(String::from_utf8(output.stderr).unwrap(), "oops\n");
    }

    #[test]
    fn spawn_with_progress_returns_the_childs_status() {
        let sh = Shell::new().unwrap();
        let status =
            spawn_with_progress("a child", sh.cmd("sh").args(["-c", "exit 4"]), SpawnOptions::default()).unwrap();
        assert_eq!(status.code(), Some(4));
    }

    #[test]
    fn stopping_signals_the_childs_group_as_asked_and_leaves_an_exited_child_alone() {
        use std::os::unix::process::ExitStatusExt;
        let sh = Shell::new().unwrap();
        // Ready once the trap is set: the script prints before it waits.
        let script = "trap 'exit 7' INT; echo ready; sleep 30 & wait";
        let start = |on_interrupt| {
            let (ready, writer) = os_pipe::pipe().unwrap();
            let handle = expression(sh.cmd("sh").args(["-c", script])).stdout_file(writer).start().unwrap();
            BufReader::new(ready).read_line(&mut String::new()).unwrap();
            stop("sh", &handle, on_interrupt);
            handle.wait().unwrap().status
        };
        // SIGINT first: the shell's trap decides the exit code.
        assert_eq!(start(StopOnInterrupt::InterruptAndWait(Duration::from_secs(10))).code(), Some(7));
        assert_eq!(start(StopOnInterrupt::Terminate).signal(), Some(libc::SIGTERM));
        let handle = expression(sh.cmd("true")).start().unwrap();
        handle.wait().unwrap();
        stop("true", &handle, StopOnInterrupt::Terminate);
        assert!(handle.wait().unwrap().status.success());
    }

    #[test]
    fn nested_cargo_does_not_inherit_cargo_run_variables() {
        let sh = Shell::new().unwrap();
        // SAFETY-free: vars are read, not set; the test only inspects Display.
        let cmd = cargo(&sh).arg("--version");
        assert!(cmd.to_string().ends_with("--version"));
    }
}
