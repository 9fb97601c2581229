//! Talking to AWS: requests are JSON values sent to the `xtask-aws` process
//! (which holds the AWS SDK), one per line, answered one per line; the lines
//! are the `aws_wire` crate's, which `xtask-aws` shares.
//!
//! Keeping the SDK in its own binary means the everyday tasks never compile
//! it; keeping requests as values means `--dry-run` prints them and tests can
//! answer them from a script (see `api::ScriptedApi`).

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use anyhow::{Context, Result, bail};
use aws_wire::{Request, Response};
use serde_json::Value;

use super::api::{ApiError, AwsApi, is_read_only};
use crate::support::{ctx::Ctx, exec::cargo, ui};

/// The `xtask-aws` child process.
pub struct AwsProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: u64,
    dry_run: bool,
}

/// How the first `xtask-aws` was started, so that a Ctrl-C cleanup can start
/// another while the main thread keeps that one busy (`spawn_sibling`).
static SPAWN_SETTINGS: std::sync::OnceLock<SpawnSettings> = std::sync::OnceLock::new();

#[derive(Debug, Clone)]
struct SpawnSettings {
    binary: std::path::PathBuf,
    root: std::path::PathBuf,
    env: Vec<(String, String)>,
    dry_run: bool,
}

impl AwsProcess {
    /// Builds (once; cargo skips it when fresh) and starts `xtask-aws`.
    pub fn start(ctx: &Ctx) -> Result<AwsProcess> {
        AwsProcess::start_with_env(ctx, &[])
    }

    /// `start` with extra environment for the child only, such as the
    /// endpoint of an emulator xtask itself started (`sandbox up`): setting
    /// the variables in xtask's own environment would be unsound once
    /// threads exist.
    pub fn start_with_env(ctx: &Ctx, env: &[(String, String)]) -> Result<AwsProcess> {
        let binary = build_binary(ctx)?;
        AwsProcess::spawn(binary, ctx.root.clone(), env.to_vec(), ctx.dry_run())
    }

    fn spawn(
        binary: std::path::PathBuf,
        root: std::path::PathBuf,
        env: Vec<(String, String)>,
        dry_run: bool,
    ) -> Result<AwsProcess> {
        use std::os::unix::process::CommandExt;
        // A process group of its own: Ctrl-C in the terminal goes to xtask's
        // group, and xtask-aws must outlive it long enough to release the
        // deploy lock and record the interrupted release. It ends when its
        // stdin closes, that is when xtask exits.
        let mut child = Command::new(&binary)
            .current_dir(&root)
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdin = child.stdin.take().context("xtask-aws stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("xtask-aws stdout")?);
        let _ = SPAWN_SETTINGS.set(SpawnSettings { binary, root, env, dry_run });
        Ok(AwsProcess { child, stdin, stdout, next_id: 1, dry_run })
    }

    /// Another `xtask-aws` with the settings of the first, for a Ctrl-C
    /// cleanup that finds the shared one busy on the main thread.
    pub fn spawn_sibling() -> Result<AwsProcess> {
        let settings = SPAWN_SETTINGS.get().context("no xtask-aws was started")?.clone();
        AwsProcess::spawn(settings.binary, settings.root, settings.env, settings.dry_run)
    }
}

fn build_binary(ctx: &Ctx) -> Result<PathBuf> {
    ui::detail("building xtask-aws (the AWS SDK half of xtask)");
    let status = cargo(&ctx.sh)
        .args(["build", "--quiet", "--package", "xtask-aws"])
        .quiet()
        .ignore_status()
        .output()
        .context("running cargo build --package xtask-aws")?;
    if !status.status.success() {
        bail!("building xtask-aws failed:\n{}", String::from_utf8_lossy(&status.stderr));
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| ctx.root.join("target"));
    let target_dir = if target_dir.is_absolute() { target_dir } else { ctx.root.join(target_dir) };
    Ok(target_dir.join("debug/xtask-aws"))
}

impl AwsApi for AwsProcess {
    fn call(&mut self, op: &str, params: Value) -> Result<Value, ApiError> {
        if self.dry_run && !is_read_only(op) {
            ui::plan(&format!("would call: {op} {params}"));
            return Ok(Value::Null);
        }
        ui::detail(&format!("aws: {op} {params}"));
        let request = Request { id: self.next_id, op: op.to_owned(), params };
        self.next_id += 1;
        let transport = |message: String| ApiError::new("XtaskAwsFailed", message);
        writeln!(self.stdin, "{}", request.to_line())
            .map_err(|err| transport(format!("sending {op} to xtask-aws: {err}")))?;
        self.stdin.flush().map_err(|err| transport(format!("sending {op} to xtask-aws: {err}")))?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|err| transport(format!("reading the answer to {op}: {err}")))?;
        if line.is_empty() {
            return Err(transport(format!("xtask-aws exited while answering {op}")));
        }
        let response = Response::parse(&line).map_err(|err| transport(format!("parsing the answer to {op}: {err}")))?;
        response.result
    }
}

impl Drop for AwsProcess {
    fn drop(&mut self) {
        // Closing stdin ends its loop; kill in case it is stuck in a call.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
