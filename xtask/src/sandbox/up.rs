//! `sandbox up`: starts moto, the sync and the registry as daemons (see
//! `support::daemon`), each waited for until it answers, records them in
//! the state file, and prints the `export` lines. A failure (or Ctrl-C)
//! on the way stops what already started.

use std::{fs, net::TcpListener, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use super::{
    ACCESS_KEY_ID, SECRET_ACCESS_KEY, Up, down,
    environment::SandboxEnvironment,
    http,
    plan::{MOTO_LAUNCHER_FILE, ProcessSpec, UpPlan},
    registry,
    state::{Component, State},
    sync, would_all,
};
use crate::{
    aws::client::AwsProcess,
    support::{
        ctx::Ctx,
        daemon::{self, Daemon, Launch, LogMode, Output},
        fs::{hex, write_atomic},
        ui,
    },
};

/// The launcher and the modules it imports, written side by side: RDS
/// instances backed by real PostgreSQL servers, services and RunTask
/// running real containers, requests checked against the services' models.
const MOTO_LAUNCHER_FILES: [(&str, &str); 5] = [
    (MOTO_LAUNCHER_FILE, include_str!("moto_launcher.py")),
    ("sandbox_rds.py", include_str!("sandbox_rds.py")),
    ("sandbox_services.py", include_str!("sandbox_services.py")),
    ("sandbox_tasks.py", include_str!("sandbox_tasks.py")),
    ("sandbox_validation.py", include_str!("sandbox_validation.py")),
];

impl Up {
    pub(super) fn run(self, ctx: &Ctx, sandbox: &SandboxEnvironment) -> Result<()> {
        if let Some(state) = sandbox.read_state()? {
            let stopped: Vec<&str> = state
                .components
                .iter()
                .filter(|component| !component.is_ours())
                .map(|component| component.name.as_str())
                .collect();
            if stopped.is_empty() {
                ui::info(&format!("sandbox {} is already up (`cargo xtask sandbox status`)", sandbox.name));
                if state.registry != sandbox.registry {
                    ui::warn(&format!(
                        "it runs its registry on {}, but {} now says {}: `cargo xtask sandbox down` and up again to apply",
                        state.registry,
                        sandbox.config_path.display(),
                        sandbox.registry
                    ));
                }
                print_exports(&state);
                return Ok(());
            }
            ui::warn(&format!(
                "sandbox {} is partly down ({} not running): stopping the rest and starting afresh",
                sandbox.name,
                stopped.join(", ")
            ));
            ctx.effect((), || {
                down::stop_all(sandbox, &state);
                sandbox.remove_state()
            })?;
        }
        check_tools()?;
        let rds_ca = ctx.root.join(crate::image::rds_ca::SANDBOX_CA_DIR);
        let mut plan = UpPlan::new(sandbox, &rds_ca)?;
        if would_all(ctx, &plan.steps(sandbox)) {
            return Ok(());
        }
        // moto's and the sync's ports are picked free here and bound a
        // moment later by those processes: another process may take one in
        // between. `start` then stops what it started, and we try again on
        // other ports (the registry's port is the user's, and not retried).
        let mut attempt = 1;
        let state = loop {
            match start(ctx, sandbox, &plan) {
                Err(err) if attempt < PORT_ATTEMPTS && lost_a_picked_port(&err, sandbox) => {
                    ui::warn(&format!(
                        "{err:#}\nanother process took a port sandbox up had picked: again on other ports"
                    ));
                    attempt += 1;
                    plan = UpPlan::new(sandbox, &rds_ca)?;
                }
                result => break result?,
            }
        };
        ui::success(&format!(
            "sandbox {} is up: AWS (moto) {}, registry {}; stop it with `cargo xtask sandbox down`",
            sandbox.name, state.endpoint_url, state.registry
        ));
        print_exports(&state);
        Ok(())
    }
}

/// How many times `up` picks moto's and the sync's ports.
const PORT_ATTEMPTS: u32 = 3;

/// True when `err` is a port that `up` picked (moto's or the sync's, not
/// the configured registry's) being in use by the time it was bound.
fn lost_a_picked_port(err: &anyhow::Error, sandbox: &SandboxEnvironment) -> bool {
    let text = format!("{err:#}");
    text.to_lowercase().contains("address already in use") && !text.contains(&sandbox.registry)
}

/// Starts everything; on any failure (or Ctrl-C) what already started is
/// stopped again.
fn start(ctx: &Ctx, sandbox: &SandboxEnvironment, plan: &UpPlan) -> Result<State> {
    if let Err(err) = TcpListener::bind(http::loopback_address(&sandbox.registry)?) {
        bail!(
            "the registry address {} (environments.{}.registry in {}) is in use ({err}): stop what listens there or choose another port",
            sandbox.registry,
            sandbox.name,
            sandbox.config_path.display()
        );
    }
    for dir in [&sandbox.dir, &plan.registry_storage] {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // The CA the sandbox's RDS signs its servers' certificates with: the
    // one offline images carry (see image::rds_ca).
    crate::image::rds_ca::sandbox_ca(ctx)?;
    for (file, text) in MOTO_LAUNCHER_FILES {
        write_atomic(&sandbox.dir.join(file), text.as_bytes(), 0o644)?;
    }
    // Rejections are counted per run of the sandbox.
    let rejections = sandbox.rejected_requests_file();
    if let Err(err) = fs::remove_file(&rejections)
        && err.kind() != std::io::ErrorKind::NotFound
    {
        return Err(err).with_context(|| format!("removing {}", rejections.display()));
    }

    ui::step(&format!("starting moto on {}", plan.moto.address));
    let moto = Started::spawn(&plan.moto)?;
    let mut started = vec![moto];
    started[0].wait_until_ready(Duration::from_secs(60), || {
        http::send(&plan.moto.address, &http::Request::get("/moto-api/data.json")).is_ok_and(|r| r.status == 200)
    })?;
    create_bucket(&plan.moto.address, &sandbox.state_bucket, &sandbox.region)?;

    // The registry's only login is what ECR hands out, so the real
    // `docker login` flow works against it unchanged.
    ui::step("asking the sandbox's ECR for the registry login");
    let token = {
        let mut aws = AwsProcess::start_with_env(ctx, &plan.aws_env)?;
        crate::aws::ecr::ecr_token(&mut aws)?
    };
    registry::write_htpasswd(&plan.htpasswd, &token.user, token.password.expose())?;

    ui::step(&format!("starting the registry-to-ECR sync on {}", plan.sync.address));
    started.push(Started::spawn(&plan.sync)?);
    let sync_address = plan.sync.address.clone();
    started[1].wait_until_ready(Duration::from_secs(300), || {
        http::send(&sync_address, &http::Request::get(sync::HEALTH_PATH)).is_ok_and(|r| r.status == 200)
    })?;

    ui::step(&format!("starting the registry on {}", sandbox.registry));
    let mut nonce = [0u8; 8];
    openssl::rand::rand_bytes(&mut nonce).context("making the registry's instance name")?;
    let instance = hex(&nonce);
    let config = registry::registry_config(
        &plan.registry_storage,
        &plan.htpasswd,
        &sandbox.registry,
        &plan.sync.address,
        &instance,
    );
    write_atomic(&plan.registry_config, config.as_bytes(), 0o644)?;
    started.push(Started::spawn(&plan.registry)?);
    started[2].wait_until_ready(Duration::from_secs(30), || {
        // 401: up, and asking for the credentials it was given; ours, not
        // whatever else listens there (then ours exits on the bind error,
        // and the wait fails with its log).
        http::send(&sandbox.registry, &http::Request::get("/v2/"))
            .is_ok_and(|response| registry::is_instance(&response, &instance))
    })?;

    let state = State {
        environment: sandbox.name.clone(),
        config: sandbox.config_path.clone(),
        endpoint_url: plan.endpoint_url.clone(),
        region: sandbox.region.clone(),
        registry: sandbox.registry.clone(),
        components: started.iter().map(|started| started.component.clone()).collect(),
    };
    sandbox.write_state(&state)?;
    for started in started {
        started.keep_running();
    }
    Ok(state)
}

/// A process started by this `up`: stopped again (on an error, on Ctrl-C)
/// unless `keep_running`.
struct Started {
    component: Component,
    daemon: Daemon,
}

impl Started {
    fn spawn(spec: &ProcessSpec) -> Result<Started> {
        let mut command = Command::new(&spec.program);
        command.args(&spec.args);
        // Only the sandbox's own AWS settings: a profile or service endpoint
        // from the user's shell must not leak into the emulator's clients.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("AWS_") {
                command.env_remove(key);
            }
        }
        command.envs(spec.env.iter().map(|(key, value)| (key, value)));
        // A daemon: a Ctrl-C on this terminal is not for it, and it
        // outlives xtask once `keep_running`.
        let daemon = Daemon::start(Launch {
            name: &format!("the sandbox's {}", spec.name),
            command,
            output: Output::Log(&spec.log, LogMode::Truncate),
            stop_grace: daemon::STOP_GRACE,
        })?;
        let component = Component {
            name: spec.name.to_owned(),
            pid: daemon.pid(),
            address: spec.address.clone(),
            log: spec.log.clone(),
            signature: daemon.signature().clone(),
        };
        Ok(Started { component, daemon })
    }

    /// Polls `ready`; fails with the log's tail when the process exits or
    /// the time is up.
    fn wait_until_ready(&mut self, timeout: Duration, ready: impl FnMut() -> bool) -> Result<()> {
        self.daemon.wait_until_ready(timeout, ready).map_err(|not_ready| {
            anyhow::anyhow!("{} {not_ready}; {}", self.component.name, log_tail(&self.component.log))
        })
    }

    /// Lets it run on: the process is recorded in the state and belongs to
    /// `down` now.
    fn keep_running(self) {
        self.daemon.detach();
    }
}

fn log_tail(log: &Path) -> String {
    format!("log {}:\n{}", log.display(), daemon::log_tail(log, 20))
}

/// Every missing tool at once, each with how to get it.
fn check_tools() -> Result<()> {
    let tools = [
        ("moto_server", "pip install 'moto[server]'"),
        ("docker-registry", "apt-get install docker-registry"),
        ("htpasswd", "apt-get install apache2-utils"),
    ];
    let missing: Vec<String> = tools
        .iter()
        .filter(|(name, _)| which::which(name).is_err())
        .map(|(name, hint)| format!("  {name}: {hint}"))
        .collect();
    if !missing.is_empty() {
        bail!("the sandbox needs tools that are not on PATH:\n{}", missing.join("\n"));
    }
    Ok(())
}

/// moto takes an unsigned path-style CreateBucket.
fn create_bucket(moto_address: &str, bucket: &str, region: &str) -> Result<()> {
    let path = format!("/{bucket}");
    let body = if region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
        )
    };
    let response = http::send(
        moto_address,
        &http::Request { method: "PUT", path: &path, headers: Vec::new(), body: body.as_bytes() },
    )
    .with_context(|| format!("creating the state bucket {bucket}"))?;
    if response.status != 200 && response.status != 409 {
        bail!("creating the state bucket {bucket}: HTTP {}: {}", response.status, response.body_text().trim());
    }
    ui::info(&format!("state bucket s3://{bucket} created"));
    Ok(())
}

/// The variables that point a shell at the sandbox.
fn print_exports(state: &State) {
    ui::result(&format!("export AWS_ENDPOINT_URL={}", state.endpoint_url));
    ui::result(&format!("export AWS_ACCESS_KEY_ID={ACCESS_KEY_ID}"));
    ui::result(&format!("export AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}"));
    ui::result(&format!("export AWS_REGION={}", state.region));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_lost_port_that_up_picked_is_tried_again() {
        let sandbox = SandboxEnvironment {
            name: "sandbox".to_owned(),
            config_path: "deploy.toml".into(),
            region: "us-east-1".to_owned(),
            state_bucket: "tfstate-sandbox".to_owned(),
            registry: "127.0.0.1:5055".to_owned(),
            dir: "target/sandbox/sandbox".into(),
        };
        let sync = anyhow::anyhow!("listening on 127.0.0.1:39807: Address already in use (os error 98)")
            .context("sync exited (exit status: 1) before it was ready");
        assert!(lost_a_picked_port(&sync, &sandbox));
        let registry = anyhow::anyhow!("listen tcp 127.0.0.1:5055: bind: address already in use");
        assert!(!lost_a_picked_port(&registry, &sandbox), "the registry's port is the user's");
        assert!(!lost_a_picked_port(&anyhow::anyhow!("moto exited with exit status: 1"), &sandbox));
    }
}
