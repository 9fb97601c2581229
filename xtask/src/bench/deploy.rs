//! `cargo xtask bench deploy`: the time of each step of `cargo xtask deploy`
//! for an app-only change against the sandbox, next to the naive deploy
//! script (`xtask/bench/naive-deploy.sh`: build, push, terraform apply,
//! update-service, wait) on the same kind of change.
//!
//! Everything happens in a clone of this repository's HEAD under
//! `target/bench-deploy/` with a sandbox of its own (moto and a registry on
//! free ports), so the working tree, its sandbox and its Terraform data are
//! untouched. The task runner itself is this binary, pointed at the clone
//! with XTASK_PROJECT_ROOT. Both contenders start warm: the clone is
//! deployed once first (infrastructure applied, Docker's layer cache and
//! the builder image in place), then each gets a fresh commit that changes
//! one line of the app's routes.
//!
//! Both build with docker/Dockerfile and the same arguments; the deploy
//! adds INCREMENTAL=1, as every deploy that builds its own image does (see
//! the Dockerfile's build stage), while the script makes the plain
//! `docker build` a team would write.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::figure::Figure,
    config::AppConfig,
    image::{
        build_args::{AppIdentity, BuildMode, release_build_args},
        offline::offline_setting,
        source::Source,
    },
    support::{cleanup, ctx::Ctx, exec::require_tool, ui},
};

const ENVIRONMENT: &str = "sandbox";
/// Where the benchmark's app-only change goes, and the text it extends.
const APP_CHANGE_FILE: &str = "app/src/routes.rs";
const APP_CHANGE_TEXT: &str = "Sign the guestbook";
/// The step names of `cargo xtask deploy` (its `--json` events) in order.
const OUR_STEPS: [&str; 9] = [
    "check the working tree",
    "find the ledger and the lock",
    "take the deploy lock",
    "build and push the image",
    "apply the infrastructure if its inputs changed",
    "run the database migrations",
    "roll out",
    "wait for the rollout",
    "smoke check GET /version",
];

pub fn deploy(ctx: &Ctx, app: &AppConfig) -> Result<Vec<Figure>> {
    for (tool, hint) in [
        ("moto_server", "pip install 'moto[server]'"),
        ("docker-registry", "apt-get install docker-registry"),
        ("aws", "pip install awscli (the naive script uses it)"),
    ] {
        require_tool(tool, hint)?;
    }
    let password = ctx.env_var(crate::secrets::PASSWORD_ENV).with_context(|| {
        format!("the benchmark applies Terraform with the secrets: set {}", crate::secrets::PASSWORD_ENV)
    })?;
    let work = ctx.root.join("target/bench-deploy");
    let bench = BenchCheckout::create(ctx, &work, password)?;
    let _teardown = {
        let bench = bench.clone();
        cleanup::register("stop the benchmark's sandbox", move || bench.stop_sandbox())
    };
    bench.start_sandbox()?;

    ui::step("warm-up: infra apply and a first deploy of HEAD (not timed)");
    bench.xtask_checked(&["--yes", "infra", "apply"])?;
    bench.xtask_checked(&deploy_args())?;

    bench.commit_app_change(1)?;
    ui::step("timed: cargo xtask deploy after an app-only change");
    let started = Instant::now();
    let output = bench.xtask_checked(&deploy_args())?;
    let ours_total = started.elapsed();
    let ours = step_seconds(&output)?;

    bench.commit_app_change(2)?;
    ui::step("timed: the naive script after an app-only change");
    let started = Instant::now();
    let naive_output = bench.naive_deploy(ctx, app)?;
    let naive_total = started.elapsed();
    let naive = naive_step_seconds(&naive_output);

    let mut figures = Vec::new();
    for name in OUR_STEPS {
        if let Some(seconds) = ours.get(name) {
            figures.push(row(&format!("xtask deploy: {name}"), *seconds));
        }
    }
    figures.push(row("xtask deploy: total", ours_total.as_secs_f64()));
    for (name, seconds) in &naive {
        figures.push(row(&format!("naive script: {name}"), *seconds));
    }
    figures.push(row("naive script: total", naive_total.as_secs_f64()));
    let ratio = ours_total.as_secs_f64() / naive_total.as_secs_f64();
    figures.push(Figure {
        name: "xtask deploy / naive script (app-only change)".to_owned(),
        value: format!("{ratio:.2}x"),
        goal: "<= 0.45x".to_owned(),
        pass: Some(ratio <= 0.45),
    });
    Ok(figures)
}

fn row(name: &str, seconds: f64) -> Figure {
    Figure {
        name: name.to_owned(),
        value: crate::support::time::format_duration(Duration::from_secs_f64(seconds)),
        goal: String::new(),
        pass: None,
    }
}

fn deploy_args() -> Vec<&'static str> {
    // Everything on, as a user runs it: the gate (offline, XTASK_ADVISORY_DB
    // names a copy of the advisory database) and the smoke check, against
    // the sandbox's real containers behind its load balancer.
    vec!["--yes", "--json", "deploy"]
}

/// `--json` step events (`{"event":"step","step":...,"seconds":...}`):
/// step name to seconds.
fn step_seconds(stdout: &str) -> Result<BTreeMap<String, f64>> {
    let mut steps = BTreeMap::new();
    for line in stdout.lines().filter(|line| !line.trim().is_empty()) {
        let event: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("parsing the deploy's JSON event {line}"))?;
        if event["event"] != "step" {
            continue;
        }
        if let (Some(name), Some(seconds)) = (event["step"].as_str(), event["seconds"].as_f64()) {
            steps.insert(name.to_owned(), seconds);
        }
    }
    if steps.is_empty() {
        bail!("the deploy printed no step events:\n{stdout}");
    }
    Ok(steps)
}

/// The naive script's `step <name> <seconds>` lines, in order.
fn naive_step_seconds(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .filter_map(|line| line.strip_prefix("step "))
        .filter_map(|rest| rest.rsplit_once(' '))
        .filter_map(|(name, seconds)| Some((name.to_owned(), seconds.parse().ok()?)))
        .collect()
}

/// The clone the benchmark deploys from, and its sandbox settings.
#[derive(Debug, Clone)]
struct BenchCheckout {
    /// The project the benchmark runs from (its target dir is shared, so
    /// xtask-aws is not built again).
    root: PathBuf,
    work: PathBuf,
    checkout: PathBuf,
    config: PathBuf,
    registry: String,
    xtask: PathBuf,
    password: String,
    /// What `sandbox up` exported (AWS_ENDPOINT_URL and credentials).
    exports: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl BenchCheckout {
    fn create(ctx: &Ctx, work: &Path, password: String) -> Result<BenchCheckout> {
        let checkout = work.join("checkout");
        if work.exists() {
            // A previous run's sandbox may still be up.
            let stale = BenchCheckout::at(ctx, work, &checkout, String::new(), password.clone())?;
            if stale.config.exists() {
                stale.stop_sandbox();
            }
            fs::remove_dir_all(work).with_context(|| format!("removing {}", work.display()))?;
        }
        fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
        ui::step(&format!("cloning HEAD into {}", checkout.display()));
        if Source::read(&ctx.sh)?.dirty {
            ui::warn("uncommitted changes are not part of the benchmark: it deploys a clone of HEAD");
        }
        let status = Command::new("git")
            .args(["clone", "--quiet"])
            .arg(&ctx.root)
            .arg(&checkout)
            .status()
            .context("running git clone")?;
        if !status.success() {
            bail!("git clone of {} failed ({status})", ctx.root.display());
        }
        for (key, value) in [("user.email", "bench@xtask.invalid"), ("user.name", "xtask bench")] {
            git(&checkout, &["config", key, value])?;
        }
        let registry = format!("127.0.0.1:{}", testkit::free_port());
        let bench = BenchCheckout::at(ctx, work, &checkout, registry.clone(), password)?;
        let shipped = fs::read_to_string(checkout.join("deploy.toml")).context("reading the clone's deploy.toml")?;
        let shipped_registry = "registry = \"127.0.0.1:5055\"";
        if !shipped.contains(shipped_registry) {
            bail!("deploy.toml's sandbox no longer has {shipped_registry}: update the deploy benchmark");
        }
        let config = shipped.replace(shipped_registry, &format!("registry = \"{registry}\""));
        fs::write(&bench.config, config).with_context(|| format!("writing {}", bench.config.display()))?;
        fs::create_dir_all(work.join("docker")).context("creating the benchmark's docker config directory")?;
        Ok(bench)
    }

    fn at(ctx: &Ctx, work: &Path, checkout: &Path, registry: String, password: String) -> Result<BenchCheckout> {
        Ok(BenchCheckout {
            root: ctx.root.clone(),
            work: work.to_path_buf(),
            checkout: checkout.to_path_buf(),
            config: work.join("deploy.toml"),
            registry,
            xtask: std::env::current_exe().context("finding the xtask binary")?,
            password,
            exports: Default::default(),
        })
    }

    /// This binary, run against the clone and its sandbox, and nothing of
    /// the caller's AWS or Terraform settings but the provider mirror.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(&self.checkout);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            if key.starts_with("AWS_") || (key.starts_with("TF_") && key != "TF_CLI_CONFIG_FILE") {
                command.env_remove(&*key);
            }
        }
        command
            .env("XTASK_PROJECT_ROOT", &self.checkout)
            .env("XTASK_CONFIG", &self.config)
            .env("XTASK_ENV", ENVIRONMENT)
            .env("CARGO_TARGET_DIR", self.root.join("target"))
            .env("DOCKER_CONFIG", self.work.join("docker"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env(crate::secrets::PASSWORD_ENV, &self.password)
            .env("CI", "true");
        let exports = self.exports.lock().unwrap_or_else(|poison| poison.into_inner());
        command.envs(exports.iter().map(|(key, value)| (key, value)));
        // The aws CLI (v1) reads the region from AWS_DEFAULT_REGION only.
        if let Some((_, region)) = exports.iter().find(|(key, _)| key == "AWS_REGION") {
            command.env("AWS_DEFAULT_REGION", region);
        }
        command
    }

    /// Runs the task runner; its stdout, or an error with its stderr.
    fn xtask_checked(&self, args: &[&str]) -> Result<String> {
        let mut command = self.command(&self.xtask);
        command.args(args).stderr(std::process::Stdio::inherit());
        let output = command.output().with_context(|| format!("running xtask {}", args.join(" ")))?;
        if !output.status.success() {
            bail!("xtask {} failed ({}); its output is above", args.join(" "), output.status);
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn start_sandbox(&self) -> Result<()> {
        let stdout = self.xtask_checked(&["sandbox", "up"])?;
        let exports: Vec<(String, String)> = stdout
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|assignment| assignment.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .collect();
        let endpoint = exports.iter().find(|(key, _)| key == "AWS_ENDPOINT_URL").map(|(_, value)| value.as_str());
        match endpoint {
            Some(endpoint) if testkit::is_loopback_url(endpoint) => {}
            other => {
                bail!("the benchmark's sandbox exported AWS_ENDPOINT_URL={other:?}: refusing anything but loopback")
            }
        }
        *self.exports.lock().unwrap_or_else(|poison| poison.into_inner()) = exports;
        Ok(())
    }

    fn stop_sandbox(&self) {
        let mut command = self.command(&self.xtask);
        command.args(["sandbox", "down", "--purge"]);
        match command.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => ui::warn(&format!(
                "stopping the benchmark's sandbox failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(err) => ui::warn(&format!("stopping the benchmark's sandbox: {err}")),
        }
    }

    /// Commits a change to the app's code, as a feature would: a new text on
    /// the page, in the library the routes live in (not a comment, which the
    /// compiler would see through). The image must be rebuilt, the
    /// infrastructure is the same.
    fn commit_app_change(&self, number: u32) -> Result<()> {
        let path = self.checkout.join(APP_CHANGE_FILE);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let changed = text.replacen(APP_CHANGE_TEXT, &format!("{APP_CHANGE_TEXT} (bench change {number})"), 1);
        if changed == text {
            bail!("{APP_CHANGE_FILE} no longer contains {APP_CHANGE_TEXT:?}: update the deploy benchmark");
        }
        fs::write(&path, changed).with_context(|| format!("writing {}", path.display()))?;
        git(&self.checkout, &["commit", "--quiet", "--all", "--message", &format!("bench: app-only change {number}")])
    }

    /// The checkout is a clone of this project: the same `[app]`.
    fn naive_deploy(&self, ctx: &Ctx, app: &AppConfig) -> Result<String> {
        let app = AppIdentity::load(&self.checkout, app)?;
        let sh = xshell::Shell::new().context("creating a shell")?;
        sh.change_dir(&self.checkout);
        let source = Source::read(&sh)?;
        let offline = offline_setting(ctx) == Some(true);
        let mut build_args: Vec<String> = release_build_args(&app, &source, BuildMode { offline, incremental: false })
            .into_iter()
            .map(|(name, value)| format!("--build-arg={name}={value}"))
            .collect();
        if offline {
            build_args.push("--network=none".to_owned());
        }
        let buildkit = crate::image::docker_build::BuildKit::find(&ctx.sh)?;
        let mut command = self.command(Path::new("bash"));
        command
            .arg(self.root.join("xtask/bench/naive-deploy.sh"))
            .env("REGISTRY", &self.registry)
            .env("APP", &app.name)
            .env("ENVIRONMENT", ENVIRONMENT)
            .env("XTASK", &self.xtask)
            .env("DOCKER", buildkit.docker_path())
            .env("DOCKER_BUILD", buildkit.build_words().join(" "))
            .env("BUILD_ARGS", build_args.join(" "))
            .stderr(std::process::Stdio::inherit());
        let output = command.output().context("running xtask/bench/naive-deploy.sh")?;
        if !output.status.success() {
            bail!("the naive deploy script failed ({}); its output is above", output.status);
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

fn git(directory: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .current_dir(directory)
        .args(args)
        .status()
        .with_context(|| format!("running git {}", args.join(" ")))?;
    if !status.success() {
        bail!("git {} failed in {} ({status})", args.join(" "), directory.display());
    }
    Ok(())
}
