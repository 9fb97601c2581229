//! `cargo xtask sandbox up|down|status`: an offline rehearsal of the AWS
//! path on this machine.
//!
//! `up` starts, in the background and on loopback only: moto (the AWS
//! emulator) on a free port, with the environment's Terraform state bucket
//! created in it; a real registry on the address deploy.toml gives as the
//! environment's `registry`, accepting exactly the login moto's ECR hands
//! out; and a small sync process that tells moto's ECR about every image
//! pushed to the registry (see `sync`). It then prints the standard AWS
//! variables as `export` lines, so `eval "$(cargo xtask sandbox up)"` points
//! every other task (infra, push) at the sandbox through the same variables
//! they use for real AWS. This module is the only code that knows the
//! endpoint is an emulator.
//!
//! What `up` started is recorded in `target/sandbox/<env>/state.json`
//! (pid, address, log, command line of each process); `down` stops exactly
//! those processes, and only while their command line still matches, so a
//! reused pid is never signalled.

mod http;
mod sync;

use std::{
    fs,
    io::Write,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use self::sync::SyncArgs;
use crate::{
    aws::{client::AwsProcess, infra, push},
    config::Config,
    support::{
        ctx::Ctx,
        daemon::{self, Daemon, Found, Launch, LogMode, Output, Signature},
        fs::write_atomic,
        process::command_line,
        ui,
    },
};

/// Start, stop or inspect the sandbox: an AWS emulator and a registry on this machine
#[derive(Debug, Args)]
pub struct Sandbox {
    #[command(subcommand)]
    pub action: SandboxAction,
}

#[derive(Debug, Subcommand)]
pub enum SandboxAction {
    /// Start the sandbox in the background; prints `export` lines: eval "$(cargo xtask sandbox up)"
    Up(Up),
    /// Stop what `up` started
    Down(Down),
    /// Show each component with its address; exit non-zero unless all are up
    Status,
    /// (internal) Copy images pushed to the sandbox registry into the sandbox's ECR
    #[command(hide = true)]
    Sync(SyncArgs),
}

#[derive(Debug, Args)]
pub struct Up {
    /// Tasks moto reports running for every ECS service created
    /// (MOTO_ECS_SERVICE_RUNNING): a rollout counts as complete when this
    /// reaches the service's desired count
    #[arg(long, default_value_t = 2)]
    pub ecs_service_running: u32,
}

#[derive(Debug, Args)]
pub struct Down {
    /// Also delete the sandbox's directory (registry storage and logs)
    #[arg(long)]
    pub purge: bool,
}

impl Sandbox {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self.action {
            SandboxAction::Up(up) => up.run(ctx),
            SandboxAction::Down(down) => down.run(ctx),
            SandboxAction::Status => status(ctx),
            SandboxAction::Sync(sync) => sync.run(ctx),
        }
    }
}

/// Credentials moto accepts (it accepts any); fixed so the exports are stable.
const ACCESS_KEY_ID: &str = "test";
const SECRET_ACCESS_KEY: &str = "test";
/// moto with the ECS behaviour the sandbox needs (deployments on update).
const MOTO_LAUNCHER_FILE: &str = "moto_launcher.py";
/// The launcher and the modules it imports, written side by side: RDS
/// instances backed by real PostgreSQL servers, RunTask running the real
/// container.
const MOTO_LAUNCHER_FILES: [(&str, &str); 3] = [
    (MOTO_LAUNCHER_FILE, include_str!("moto_launcher.py")),
    ("sandbox_rds.py", include_str!("sandbox_rds.py")),
    ("sandbox_tasks.py", include_str!("sandbox_tasks.py")),
];
/// Label of the containers RunTask starts (sandbox_tasks.py), valued with
/// the environment's name.
const CONTAINER_LABEL: &str = "xtask-sandbox";

/// The sandbox environment from deploy.toml, and where its files live.
#[derive(Debug)]
struct SandboxEnvironment {
    name: String,
    config_path: PathBuf,
    region: String,
    state_bucket: String,
    /// `host:port` of the registry, from the environment's `registry`.
    registry: String,
    /// `target/sandbox/<env>`
    dir: PathBuf,
}

impl SandboxEnvironment {
    fn load(ctx: &Ctx) -> Result<SandboxEnvironment> {
        let name = environment_name(ctx);
        if !crate::config::is_sandbox(&name) {
            bail!(
                "`sandbox` only runs environments whose name starts with \"sandbox\", not {name:?}: the others are real AWS accounts"
            );
        }
        let config = Config::load(&ctx.root)?;
        let environment = infra::aws_environment(&config, &name)?;
        let field = |field: &str| format!("environments.{name}.{field} in {}", config.path.display());
        let registry = environment.registry.clone().with_context(|| {
            format!("{} is not set: the sandbox needs a registry address such as 127.0.0.1:5055", field("registry"))
        })?;
        http::loopback_address(&registry).with_context(|| field("registry"))?;
        Ok(SandboxEnvironment {
            config_path: config.path.clone(),
            region: environment.region.clone().unwrap_or_default(),
            state_bucket: environment.state_bucket.clone().unwrap_or_default(),
            registry,
            dir: ctx.root.join("target/sandbox").join(&name),
            name,
        })
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn read_state(&self) -> Result<Option<State>> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parsing {}; if the sandbox is gone, delete the file", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// `--env`, except that the global default (`local`, a Docker environment)
/// means `sandbox` here: `cargo xtask sandbox up` should just work.
fn environment_name(ctx: &Ctx) -> String {
    let given_explicitly = std::env::var_os("XTASK_ENV").is_some_and(|value| !value.is_empty())
        || std::env::args().any(|arg| arg == "--env" || arg.starts_with("--env="));
    if ctx.global.environment == "local" && !given_explicitly {
        "sandbox".to_owned()
    } else {
        ctx.global.environment.clone()
    }
}

/// What `up` records: enough for `down` and `status` to find every process.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    environment: String,
    config: PathBuf,
    endpoint_url: String,
    region: String,
    registry: String,
    components: Vec<Component>,
}

/// One background process, a daemon (`support::daemon`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Component {
    name: String,
    pid: u32,
    /// `host:port` it answers on.
    address: String,
    log: PathBuf,
    /// File name of the program and the arguments it was started with
    /// (`program`, `args`): the pid is only ours while its command line
    /// still shows them.
    #[serde(flatten)]
    signature: Signature,
}

impl Component {
    /// True when the pid is alive and still runs what we started.
    fn is_ours(&self) -> bool {
        daemon::is_ours(self.pid, &self.signature)
    }

    fn answers(&self) -> bool {
        http::loopback_address(&self.address)
            .is_ok_and(|address| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
    }
}

/// A process `up` will start, as a value: `--dry-run` prints it, `up`
/// spawns it, the state records it.
#[derive(Debug, Clone)]
struct ProcessSpec {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    address: String,
    log: PathBuf,
}

impl std::fmt::Display for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (key, value) in &self.env {
            if key.starts_with("MOTO_") {
                write!(f, "{key}={value} ")?;
            }
        }
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// Everything `up` does, decided before anything starts.
struct UpPlan {
    moto: ProcessSpec,
    sync: ProcessSpec,
    registry: ProcessSpec,
    endpoint_url: String,
    /// The environment a client of the sandbox needs (and nothing else of
    /// AWS): the endpoint, static credentials, the region.
    aws_env: Vec<(String, String)>,
    registry_config: PathBuf,
    htpasswd: PathBuf,
    registry_storage: PathBuf,
}

impl UpPlan {
    fn new(sandbox: &SandboxEnvironment, up: &Up) -> Result<UpPlan> {
        let python = which_tool("python3")?;
        let docker_registry = which_tool("docker-registry")?;
        let xtask = crate::support::exec::self_exe().context("finding the xtask binary (for the sync process)")?;
        let moto_port = testkit::free_port();
        let sync_address = format!("127.0.0.1:{}", testkit::free_port());
        let endpoint_url = format!("http://127.0.0.1:{moto_port}");
        let aws_env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", endpoint_url.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", sandbox.region.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let registry_dir = sandbox.dir.join("registry");
        let registry_config = registry_dir.join("config.yml");
        Ok(UpPlan {
            moto: ProcessSpec {
                name: "moto",
                // moto_server through a launcher that makes UpdateService start
                // deployments (see moto_launcher.py).
                program: python,
                args: [
                    sandbox.dir.join(MOTO_LAUNCHER_FILE).to_string_lossy().as_ref(),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &moto_port.to_string(),
                ]
                .map(str::to_owned)
                .to_vec(),
                env: vec![
                    // ECS task-execution roles attach AWS-managed policies by ARN.
                    ("MOTO_IAM_LOAD_MANAGED_POLICIES".to_owned(), "true".to_owned()),
                    // moto decides a service's rollout once, at creation:
                    // COMPLETED when this many tasks "run" (>= desired count).
                    ("MOTO_ECS_SERVICE_RUNNING".to_owned(), up.ecs_service_running.to_string()),
                    // Where the launcher keeps RDS data and the registry
                    // login, how it labels containers, and the registry
                    // that holds what moto's ECR lists.
                    ("XTASK_SANDBOX_DIR".to_owned(), sandbox.dir.display().to_string()),
                    ("XTASK_SANDBOX_NAME".to_owned(), sandbox.name.clone()),
                    ("XTASK_SANDBOX_REGISTRY".to_owned(), sandbox.registry.clone()),
                ],
                address: format!("127.0.0.1:{moto_port}"),
                log: sandbox.dir.join("moto.log"),
            },
            sync: ProcessSpec {
                name: "sync",
                program: xtask,
                args: vec![
                    "--env".to_owned(),
                    sandbox.name.clone(),
                    "sandbox".to_owned(),
                    "sync".to_owned(),
                    "--listen".to_owned(),
                    sync_address.clone(),
                    "--registry".to_owned(),
                    sandbox.registry.clone(),
                ],
                env: aws_env.clone(),
                address: sync_address,
                log: sandbox.dir.join("sync.log"),
            },
            registry: ProcessSpec {
                name: "registry",
                program: docker_registry,
                args: vec!["serve".to_owned(), registry_config.display().to_string()],
                env: Vec::new(),
                address: sandbox.registry.clone(),
                log: sandbox.dir.join("registry.log"),
            },
            endpoint_url,
            aws_env,
            registry_config,
            htpasswd: registry_dir.join("htpasswd"),
            registry_storage: registry_dir.join("storage"),
        })
    }

    fn print(&self, sandbox: &SandboxEnvironment) {
        println!("would start moto: {} (log {})", self.moto, self.moto.log.display());
        println!("would create the state bucket: PUT {}/{}", self.endpoint_url, sandbox.state_bucket);
        println!("would call: ecr.get_authorization_token {{}} (the registry's only login)");
        println!("would start sync: {} (log {})", self.sync, self.sync.log.display());
        println!("would write {} and {} (user AWS, bcrypt)", self.registry_config.display(), self.htpasswd.display());
        println!(
            "would start registry: {} on {} (log {})",
            self.registry,
            sandbox.registry,
            self.registry.log.display()
        );
        println!("would write {}", sandbox.state_path().display());
    }
}

impl Up {
    fn run(self, ctx: &Ctx) -> Result<()> {
        let sandbox = SandboxEnvironment::load(ctx)?;
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
            if !ctx.dry_run() {
                stop_all(&sandbox, &state);
                remove_state(&sandbox)?;
            }
        }
        check_tools()?;
        let plan = UpPlan::new(&sandbox, &self)?;
        if ctx.dry_run() {
            plan.print(&sandbox);
            return Ok(());
        }
        let state = start(ctx, &sandbox, &plan)?;
        ui::success(&format!(
            "sandbox {} is up: AWS (moto) {}, registry {}; stop it with `cargo xtask sandbox down`",
            sandbox.name, state.endpoint_url, state.registry
        ));
        print_exports(&state);
        Ok(())
    }
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
    for (file, text) in MOTO_LAUNCHER_FILES {
        write_atomic(&sandbox.dir.join(file), text.as_bytes(), 0o644)?;
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
        push::ecr_token(&mut aws)?
    };
    write_htpasswd(&plan.htpasswd, &token.user, token.password.expose())?;

    ui::step(&format!("starting the registry-to-ECR sync on {}", plan.sync.address));
    started.push(Started::spawn(&plan.sync)?);
    let sync_address = plan.sync.address.clone();
    started[1].wait_until_ready(Duration::from_secs(300), || {
        http::send(&sync_address, &http::Request::get(sync::HEALTH_PATH)).is_ok_and(|r| r.status == 200)
    })?;

    ui::step(&format!("starting the registry on {}", sandbox.registry));
    let config = registry_config(&plan.registry_storage, &plan.htpasswd, &sandbox.registry, &plan.sync.address);
    write_atomic(&plan.registry_config, config.as_bytes(), 0o644)?;
    started.push(Started::spawn(&plan.registry)?);
    started[2].wait_until_ready(Duration::from_secs(30), || {
        // 401: up, and asking for the credentials it was given.
        http::send(&sandbox.registry, &http::Request::get("/v2/")).is_ok_and(|r| r.status == 401)
    })?;

    let state = State {
        environment: sandbox.name.clone(),
        config: sandbox.config_path.clone(),
        endpoint_url: plan.endpoint_url.clone(),
        region: sandbox.region.clone(),
        registry: sandbox.registry.clone(),
        components: started.iter().map(|started| started.component.clone()).collect(),
    };
    let text = serde_json::to_vec_pretty(&state).context("encoding the sandbox state")?;
    write_atomic(&sandbox.state_path(), &text, 0o644)?;
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

fn which_tool(name: &str) -> Result<PathBuf> {
    which::which(name).map_err(|_| anyhow::anyhow!("`{name}` is not on PATH"))
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

/// `htpasswd -B -i -n USER` with the password on stdin, never in argv.
fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut child = Command::new("htpasswd")
        .args(["-B", "-i", "-n", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running htpasswd")?;
    // A write error (an htpasswd that exits without reading) is reported
    // through its exit status and stderr below, which say why.
    let written = child.stdin.take().context("htpasswd stdin")?.write_all(password.as_bytes());
    let output = child.wait_with_output().context("waiting for htpasswd")?;
    if !output.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    written.context("writing the password to htpasswd")?;
    write_atomic(path, &output.stdout, 0o600)
}

/// The registry's configuration: htpasswd auth, storage under the sandbox
/// directory, and a notification for every manifest push sent to the sync.
fn registry_config(storage: &Path, htpasswd: &Path, registry_address: &str, sync_address: &str) -> String {
    // JSON strings are valid YAML scalars, whatever the path contains.
    let quote = |path: &Path| json!(path.display().to_string()).to_string();
    format!(
        r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {registry_address}
auth:
  htpasswd:
    realm: xtask-sandbox
    path: {htpasswd}
notifications:
  endpoints:
    - name: xtask-sandbox-sync
      url: http://{sync_address}{events}
      timeout: 5s
      threshold: 3
      backoff: 1s
      ignore:
        mediatypes:
          - application/octet-stream
        actions:
          - pull
"#,
        storage = quote(storage),
        htpasswd = quote(htpasswd),
        events = sync::EVENTS_PATH,
    )
}

/// The variables that point a shell at the sandbox.
fn print_exports(state: &State) {
    println!("export AWS_ENDPOINT_URL={}", state.endpoint_url);
    println!("export AWS_ACCESS_KEY_ID={ACCESS_KEY_ID}");
    println!("export AWS_SECRET_ACCESS_KEY={SECRET_ACCESS_KEY}");
    println!("export AWS_REGION={}", state.region);
}

impl Down {
    fn run(self, ctx: &Ctx) -> Result<()> {
        let sandbox = SandboxEnvironment::load(ctx)?;
        match sandbox.read_state()? {
            Some(state) => {
                if ctx.dry_run() {
                    for component in state.components.iter().rev() {
                        println!("would stop {} (pid {})", component.name, component.pid);
                    }
                    println!(
                        "would stop the PostgreSQL servers under {} and remove containers labelled {CONTAINER_LABEL}={}",
                        sandbox.dir.join("rds").display(),
                        sandbox.name
                    );
                    println!("would remove {}", sandbox.state_path().display());
                } else {
                    stop_all(&sandbox, &state);
                    remove_state(&sandbox)?;
                    ui::success(&format!("sandbox {} is down", sandbox.name));
                }
            }
            None => ui::info(&format!("sandbox {} is not up (no {})", sandbox.name, sandbox.state_path().display())),
        }
        if self.purge && sandbox.dir.exists() {
            if ctx.dry_run() {
                println!("would delete {}", sandbox.dir.display());
            } else {
                fs::remove_dir_all(&sandbox.dir).with_context(|| format!("deleting {}", sandbox.dir.display()))?;
                ui::info(&format!("deleted {}", sandbox.dir.display()));
            }
        }
        Ok(())
    }
}

/// Stops every component, newest first; a pid that now runs something
/// else is left alone. Then what moto started for its resources and did
/// not stop itself (it was killed, say): database servers and containers.
fn stop_all(sandbox: &SandboxEnvironment, state: &State) {
    stop_components(state);
    stop_database_servers(&sandbox.dir.join("rds"));
    remove_containers(&sandbox.name);
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

/// Containers RunTask started (sandbox_tasks.py), labelled with the
/// environment's name; Docker runs them, so no signal to moto reaches them.
fn remove_containers(environment: &str) {
    let Ok(docker) = which::which("docker") else {
        return;
    };
    let filter = format!("label={CONTAINER_LABEL}={environment}");
    let Ok(listed) = Command::new(&docker).args(["ps", "-aq", "--filter", &filter]).stderr(Stdio::null()).output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect();
    if ids.is_empty() {
        return;
    }
    let removed =
        Command::new(&docker).args(["rm", "-f"]).args(&ids).stdout(Stdio::null()).stderr(Stdio::null()).status();
    match removed {
        Ok(status) if status.success() => ui::info(&format!("removed {} task container(s)", ids.len())),
        _ => ui::warn(&format!("could not remove the task containers {}: `docker rm -f` them", ids.join(" "))),
    }
}

fn remove_state(sandbox: &SandboxEnvironment) -> Result<()> {
    let path = sandbox.state_path();
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
    }
}

fn status(ctx: &Ctx) -> Result<()> {
    let sandbox = SandboxEnvironment::load(ctx)?;
    let Some(state) = sandbox.read_state()? else {
        bail!("sandbox {} is not up: start it with `cargo xtask sandbox up`", sandbox.name);
    };
    let mut down = Vec::new();
    for component in &state.components {
        let running = component.is_ours();
        let answering = running && component.answers();
        let label = if answering {
            "up"
        } else {
            down.push(component.name.clone());
            if running { "not answering" } else { "down" }
        };
        let address =
            if component.name == "moto" { format!("http://{}", component.address) } else { component.address.clone() };
        println!(
            "{:<8}  {label:<13}  {address:<22}  pid {:<7}  log {}",
            component.name,
            component.pid,
            component.log.display()
        );
    }
    if !down.is_empty() {
        bail!(
            "sandbox {} is not fully up ({} down): `cargo xtask sandbox down` then `up`, or see the logs",
            sandbox.name,
            down.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_its_format() {
        // As written by an `up` before the daemon supervisor: a sandbox that
        // is up across an upgrade is still found and stopped.
        let written = serde_json::json!({
            "environment": "sandbox",
            "config": "/p/deploy.toml",
            "endpoint_url": "http://127.0.0.1:4000",
            "region": "us-east-1",
            "registry": "127.0.0.1:5055",
            "components": [{
                "name": "moto",
                "pid": 42,
                "address": "127.0.0.1:4000",
                "log": "/p/target/sandbox/sandbox/moto.log",
                "program": "python3",
                "args": ["/p/target/sandbox/sandbox/moto_launcher.py", "-H", "127.0.0.1", "-p", "4000"]
            }]
        });
        let state: State = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(state.components[0].signature.program, "python3");
        assert_eq!(state.components[0].signature.args[4], "4000");
        assert_eq!(serde_json::to_value(&state).unwrap(), written);
    }

    #[test]
    fn registry_config_notifies_the_sync_of_manifest_pushes_only() {
        let dir = Path::new("/tmp/sand box/registry");
        let config = registry_config(&dir.join("storage"), &dir.join("htpasswd"), "127.0.0.1:5055", "127.0.0.1:6000");
        assert!(config.contains("addr: 127.0.0.1:5055"), "{config}");
        assert!(config.contains("url: http://127.0.0.1:6000/events"), "{config}");
        assert!(config.contains("rootdirectory: \"/tmp/sand box/registry/storage\""), "{config}");
        assert!(config.contains("- application/octet-stream"), "{config}");
    }
}
