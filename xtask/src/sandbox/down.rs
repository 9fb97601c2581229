//! `sandbox down`: stops what `up` recorded (a pid only while it still
//! runs what was started), then what moto started for its resources:
//! database servers and task containers.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use super::{Down, environment::SandboxEnvironment, state::State, would_all};
use crate::support::{
    ctx::Ctx,
    daemon::{self, Found},
    process::command_line,
    ui,
};

/// Label of the containers RunTask starts (sandbox_tasks.py), valued with
/// the environment's name.
const CONTAINER_LABEL: &str = "xtask-sandbox";

impl Down {
    pub(super) fn run(self, ctx: &Ctx, sandbox: &SandboxEnvironment) -> Result<()> {
        match sandbox.read_state()? {
            Some(state) => {
                if !would_all(ctx, &steps(sandbox, &state)) {
                    stop_all(sandbox, &state);
                    sandbox.remove_state()?;
                    ui::success(&format!("sandbox {} is down", sandbox.name));
                }
            }
            None => ui::info(&format!("sandbox {} is not up (no {})", sandbox.name, sandbox.state_path().display())),
        }
        if self.purge && sandbox.dir.exists() && !ctx.would(format_args!("delete {}", sandbox.dir.display())) {
            fs::remove_dir_all(&sandbox.dir).with_context(|| format!("deleting {}", sandbox.dir.display()))?;
            ui::info(&format!("deleted {}", sandbox.dir.display()));
        }
        Ok(())
    }
}

/// What `down` does, in order, as `--dry-run` shows it (each step after
/// "would").
fn steps(sandbox: &SandboxEnvironment, state: &State) -> Vec<String> {
    let components =
        state.components.iter().rev().map(|component| format!("stop {} (pid {})", component.name, component.pid));
    let leftovers = format!(
        "stop the PostgreSQL servers under {} and remove containers labelled {CONTAINER_LABEL}={}",
        sandbox.dir.join("rds").display(),
        sandbox.name
    );
    components.chain([leftovers, format!("remove {}", sandbox.state_path().display())]).collect()
}

/// Stops every component, newest first; a pid that now runs something
/// else is left alone. Then what moto started for its resources and did
/// not stop itself (it was killed, say): database servers and containers.
pub(super) fn stop_all(sandbox: &SandboxEnvironment, state: &State) {
    stop_components(state);
    stop_database_servers(&sandbox.dir.join("rds"));
    remove_docker_resources(&sandbox.name);
}

fn stop_components(state: &State) {
    for component in state.components.iter().rev() {
        match daemon::stop_recorded(component.pid, &component.signature, daemon::STOP_GRACE) {
            Found::Gone => ui::info(&format!("{} (pid {}) had already stopped", component.name, component.pid)),
            Found::Other(command_line) => ui::warn(&format!(
                "pid {} is no longer the sandbox's {} (it runs `{}`): not signalling it",
                component.pid,
                component.name,
                command_line.join(" ")
            )),
            Found::Ours => ui::info(&format!("stopped {} (pid {})", component.name, component.pid)),
        }
    }
}

/// The PostgreSQL servers behind the sandbox's RDS instances
/// (sandbox_rds.py), each found by the pid in its data directory and
/// signalled only while its command line names that directory. SIGINT is
/// PostgreSQL's fast shutdown.
fn stop_database_servers(rds_dir: &Path) {
    let Ok(instances) = fs::read_dir(rds_dir) else {
        return;
    };
    for instance in instances.flatten() {
        let data_dir = instance.path().join("data");
        let Some(pid) = fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next().and_then(|line| line.trim().parse::<u32>().ok()))
        else {
            continue;
        };
        let data_dir_text = data_dir.display().to_string();
        let ours = command_line(pid).is_some_and(|args| args.contains(&data_dir_text));
        if !ours {
            continue;
        }
        testkit::stop_postgres(pid, Duration::from_secs(10));
        ui::info(&format!("stopped the database server of {} (pid {pid})", data_dir_text));
    }
}

/// Containers of the services' and RunTask's tasks (sandbox_services.py,
/// sandbox_tasks.py) and the databases' networks (sandbox_rds.py), labelled
/// with the environment's name; Docker runs them, so no signal to moto
/// reaches them. Containers first: a network in use cannot be removed.
fn remove_docker_resources(environment: &str) {
    let Ok(docker) = which::which("docker") else {
        return;
    };
    let filter = format!("label={CONTAINER_LABEL}={environment}");
    for (kind, list, remove) in
        [("task container", ["ps", "-aq"], ["rm", "-f"]), ("database network", ["network", "ls"], ["network", "rm"])]
    {
        let listed = Command::new(&docker).args(list).args(["-q", "--filter", &filter]).stderr(Stdio::null()).output();
        let Ok(listed) = listed else {
            return;
        };
        let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect();
        if ids.is_empty() {
            continue;
        }
        let removed =
            Command::new(&docker).args(remove).args(&ids).stdout(Stdio::null()).stderr(Stdio::null()).status();
        match removed {
            Ok(status) if status.success() => ui::info(&format!("removed {} {kind}(s)", ids.len())),
            _ => {
                ui::warn(&format!("could not remove the {kind}s {}: `docker {}` them", ids.join(" "), remove.join(" ")))
            }
        }
    }
}
