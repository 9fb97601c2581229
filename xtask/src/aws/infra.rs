//! `cargo xtask infra plan|apply|destroy`: the Terraform stages of an AWS
//! environment, in dependency order (the ECR repository before the
//! environment that runs its images).
//!
//! Every name Terraform needs (app, environment, region, state bucket) comes
//! from deploy.toml and is passed as `-var` / `-backend-config`, so nothing is
//! typed twice. Secrets reach Terraform as `TF_VAR_*` in the child's
//! environment only, never on disk and never in argv.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use xshell::{Cmd, cmd};

use crate::{
    aws::init_stamp::InitInputs,
    config::{AwsEnv, Environment},
    secrets,
    support::{
        ctx::Ctx,
        exec::{SpawnOptions, StdoutTo, StopOnInterrupt, require_tool, spawn_and_wait_with, spawn_with_progress},
        prompt::{confirm, type_name_back},
        ui,
    },
};

/// Plan, apply or destroy an environment's infrastructure with Terraform
#[derive(Debug, Args)]
pub struct Infra {
    #[command(subcommand)]
    pub action: InfraAction,
}

#[derive(Debug, Subcommand)]
pub enum InfraAction {
    /// Show what would change (exit 0 either way; the summary says which)
    Plan(StageArgs),
    /// Apply the changes, after a confirmation unless --yes
    Apply(StageArgs),
    /// Destroy the environment, after typing its name back
    Destroy(StageArgs),
}

#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// Only this stage (default: all, in dependency order)
    #[arg(long, value_enum)]
    pub stage: Option<Stage>,
    /// Image of the task definition template (default: the template's
    /// current one, else the image built for this commit); deploys roll out
    /// their own image

    #[arg(long)]
    pub image: Option<String>,
    /// Run `terraform init` even when nothing it records has changed
    /// (the backend, the lock file, the .tf files, the CLI configuration),
    /// which is when it is skipped
    #[arg(long)]
    pub reinit: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    Repositories,
    Environment,
}

impl Stage {
    fn directory(self) -> &'static str {
        match self {
            Stage::Repositories => "infra/repositories",
            Stage::Environment => "infra/environments",
        }
    }
}

/// Whether a plan found changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanResult {
    NoChanges,
    Changes,
}

impl Infra {
    pub fn run(self, ctx: &Ctx, env: &AwsEnv) -> Result<()> {
        let mut terraform = Terraform::new(ctx, env)?;
        let (InfraAction::Plan(args) | InfraAction::Apply(args) | InfraAction::Destroy(args)) = &self.action;
        terraform.always_init = args.reinit;
        match self.action {
            InfraAction::Plan(args) => {
                for stage in stages(args.stage, false) {
                    let result = terraform.plan(stage, args.image.as_deref())?;
                    let summary = match result {
                        PlanResult::NoChanges => "no changes",
                        PlanResult::Changes => "changes pending",
                    };
                    ui::success(&format!("{}: {summary}", stage.directory()));
                    ui::result(&format!("{}\t{summary}", stage.directory()));
                }
                Ok(())
            }
            InfraAction::Apply(args) => {
                for stage in stages(args.stage, false) {
                    terraform.apply(stage, args.image.as_deref())?;
                }
                Ok(())
            }
            InfraAction::Destroy(args) => {
                confirm_environment_name(ctx, &env.name)?;
                for stage in stages(args.stage, true) {
                    terraform.destroy(stage, args.image.as_deref())?;
                }
                Ok(())
            }
        }
    }
}

/// The `.tf` files of a stage directory and its modules, sorted (not the
/// per-environment variable files under `env/`, nor Terraform's data).
fn collect_terraform_files(directory: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(directory).with_context(|| format!("listing {}", directory.display()))?;
    let mut paths: Vec<PathBuf> = Vec::new();
    for entry in entries {
        paths.push(entry.with_context(|| format!("listing {}", directory.display()))?.path());
    }
    paths.sort();
    for path in paths {
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_dir() {
            if name != "env" && !name.starts_with('.') {
                collect_terraform_files(&path, files)?;
            }
        } else if name.ends_with(".tf") {
            files.push(path);
        }
    }
    Ok(())
}

/// Stages in dependency order, reversed for destroy.
fn stages(only: Option<Stage>, reverse: bool) -> Vec<Stage> {
    let mut all = match only {
        Some(stage) => vec![stage],
        None => vec![Stage::Repositories, Stage::Environment],
    };
    if reverse {
        all.reverse();
    }
    all
}

/// What to do when Terraform found no AWS credentials (its S3 backend says
/// so first, in a paragraph that does not name this project's ways).
fn credentials_hint(terraform_stderr: &str) -> &'static str {
    if terraform_stderr.contains("No valid credential sources found") {
        ": no AWS credentials; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or set AWS_PROFILE \
         (`aws configure sso`), or for the sandbox run `eval \"$(cargo xtask sandbox up)\"`"
    } else {
        ""
    }
}

/// Terraform for one environment: the binary, the names, the secrets.
pub struct Terraform<'a> {
    ctx: &'a Ctx,
    /// Stages already initialised in this run (init is slow-ish and
    /// idempotent, but once is enough).
    initialised: std::cell::RefCell<Vec<Stage>>,
    /// Init even when the stamp says it is up to date (`--reinit`).
    pub always_init: bool,
    /// Outputs already read in this run, by stage.
    outputs: std::cell::RefCell<Vec<(Stage, serde_json::Value)>>,
    binary: PathBuf,
    env: &'a AwsEnv,
    /// `env.settings`, the environment as deploy.toml writes it.
    environment: &'a Environment,
    environment_name: &'a str,
}

impl<'a> Terraform<'a> {
    /// Terraform for one AWS environment. Refuses the template's demo
    /// secrets outside a sandbox first, before any other check or question.
    pub fn new(ctx: &'a Ctx, env: &'a AwsEnv) -> Result<Terraform<'a>> {
        secrets::refuse_demo_password(&ctx.root, &env.name)?;
        let binary =
            require_tool("terraform", "install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install")?;
        Ok(Terraform {
            ctx,
            initialised: std::cell::RefCell::new(Vec::new()),
            always_init: false,
            outputs: std::cell::RefCell::new(Vec::new()),
            binary,
            env,
            environment: &env.settings,
            environment_name: &env.name,
        })
    }

    fn directory(&self, stage: Stage) -> PathBuf {
        self.ctx.root.join(stage.directory())
    }

    /// The state key. The repositories stage (the ECR repository, the
    /// release ledger) exists once per account and is shared by the
    /// environments that use that account's state bucket; each environment
    /// has a state of its own.
    pub fn state_key(&self, stage: Stage) -> String {
        match stage {
            Stage::Repositories => format!("{}/repositories.tfstate", self.env.app_name),
            Stage::Environment => format!("{}/{}/environment.tfstate", self.env.app_name, self.environment_name),
        }
    }

    fn terraform(&self, stage: Stage) -> Cmd<'a> {
        let binary = &self.binary;
        let chdir = format!("-chdir={}", self.directory(stage).display());
        cmd!(self.ctx.sh, "{binary} {chdir}").env("TF_IN_AUTOMATION", "1").env("TF_DATA_DIR", self.data_dir(stage))
    }

    /// Terraform's working data (what `.terraform` holds: the backend
    /// settings, links to the providers) for one environment and stage.
    /// Inside the shared stage directory it would belong to whichever
    /// environment was initialised last, and two environments handled at
    /// once (two terminals, parallel tests) would plan against each other's
    /// state.
    fn data_dir(&self, stage: Stage) -> PathBuf {
        let name = match stage {
            Stage::Repositories => "repositories",
            Stage::Environment => "environment",
        };
        self.ctx.root.join("target/terraform").join(self.environment_name).join(name)
    }

    /// `terraform init` with this environment's backend.
    pub fn init(&self, stage: Stage) -> Result<()> {
        if self.initialised.borrow().contains(&stage) {
            return Ok(());
        }
        let (bucket, region) = (&self.env.state_bucket, &self.env.region);
        let environment = self.environment;
        let mut backend = vec![
            format!("-backend-config=bucket={bucket}"),
            format!("-backend-config=key={}", self.state_key(stage)),
            format!("-backend-config=region={region}"),
            "-backend-config=use_lockfile=true".to_owned(),
            "-backend-config=encrypt=true".to_owned(),
        ];
        if environment.s3_path_style {
            backend.push("-backend-config=use_path_style=true".to_owned());
        }
        let (directory, data_dir) = (self.directory(stage), self.data_dir(stage));
        let stamp = InitInputs {
            binary: &self.binary,
            stage_directory: &directory,
            data_dir: &data_dir,
            backend: &backend,
            cli_settings: ["TF_CLI_CONFIG_FILE", "TF_PLUGIN_CACHE_DIR"]
                .into_iter()
                .map(|name| (name, self.ctx.env_var(name)))
                .collect(),
        };
        let state = format!("state s3://{bucket}/{}", self.state_key(stage));
        if !self.always_init && stamp.is_current(&stamp.fingerprint()?) {
            ui::detail(&format!(
                "terraform init {}: up to date ({state}; backend, providers and .tf files as at the last init)",
                stage.directory()
            ));
            self.initialised.borrow_mut().push(stage);
            return Ok(());
        }
        let cmd = self.terraform(stage).args(["init", "-input=false", "-reconfigure", "-no-color"]).args(&backend);
        ui::step(&format!("terraform init {} ({state})", stage.directory()));
        // init only downloads providers and reads state: safe in dry-run,
        // and the plan that dry-run prints needs it.
        ui::detail(&format!("$ {cmd}"));
        stamp.forget()?;
        let output = cmd.quiet().ignore_status().output().context("running terraform init")?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!("terraform init of {} failed{}:\n{}", stage.directory(), credentials_hint(&stderr), stderr.trim());
        }
        stamp.record()?;
        self.initialised.borrow_mut().push(stage);
        Ok(())
    }

    /// `-var` flags and the variable file for a stage.
    fn variables(&self, stage: Stage, image: Option<&str>) -> Result<Vec<String>> {
        let mut args =
            vec![format!("-var=app_name={}", self.env.app_name), format!("-var=aws_region={}", self.env.region)];
        if stage == Stage::Environment {
            args.push(format!("-var=environment={}", self.environment_name));
            args.push(format!("-var=container_port={}", self.env.container_port));
            let tfvars = self.environment.tfvars.as_deref().unwrap_or(self.environment_name);
            let var_file = Path::new("env").join(format!("{tfvars}.tfvars"));
            if self.directory(stage).join(&var_file).exists() {
                args.insert(0, format!("-var-file={}", var_file.display()));
            }
            let image = match image {
                Some(image) => image.to_owned(),
                None => self.default_image()?,
            };
            args.push(format!("-var=image={image}"));
            // HTTPS settings from deploy.toml, only when given: an
            // environment's tfvars file may set them instead.
            let https = [
                ("service_hostname", &self.environment.domain),
                ("certificate_arn", &self.environment.certificate_arn),
                ("route53_zone_id", &self.environment.route53_zone_id),
            ];
            for (variable, setting) in https {
                if let Some(value) = setting {
                    args.push(format!("-var={variable}={}", value.get_ref()));
                }
            }
        }
        Ok(args)
    }

    /// A fingerprint of everything the infrastructure is made from for this
    /// environment: both stages' Terraform files, its variable file, the
    /// configuration (deploy.toml) and the encrypted secrets. A deploy whose
    /// fingerprint matches the last successful release's has nothing to
    /// plan: an app-only change then costs no Terraform run at all.
    pub fn input_fingerprint(&self) -> Result<String> {
        let mut files = Vec::new();
        for stage in [Stage::Repositories, Stage::Environment] {
            collect_terraform_files(&self.directory(stage), &mut files)?;
        }
        let tfvars = self.environment.tfvars.as_deref().unwrap_or(self.environment_name);
        files.push(self.directory(Stage::Environment).join("env").join(format!("{tfvars}.tfvars")));
        files.push(self.env.config_path.clone());
        files.push(self.ctx.root.join(secrets::ENCRYPTED_FILE));
        let mut hasher = openssl::sha::Sha256::new();
        hasher.update(self.environment_name.as_bytes());
        for file in files {
            let relative = file.strip_prefix(&self.ctx.root).unwrap_or(&file);
            hasher.update(relative.to_string_lossy().as_bytes());
            hasher.update(b"\0");
            match std::fs::read(&file) {
                Ok(bytes) => hasher.update(&bytes),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => hasher.update(b"<missing>"),
                Err(err) => return Err(err).with_context(|| format!("reading {}", file.display())),
            }
            hasher.update(b"\0");
        }
        Ok(crate::support::fs::hex(&hasher.finish()))
    }

    /// What runs now (the environment's `image` output), else the image
    /// built for this commit in the environment's repository.
    fn default_image(&self) -> Result<String> {
        if let Some(image) = self.output(Stage::Environment, "image")? {
            return Ok(image);
        }
        let repository_url = self.output(Stage::Repositories, "repository_url")?.with_context(|| {
            format!("no image given and the repositories stage has no output yet: apply it first (cargo xtask infra apply --env {} --stage repositories)", self.environment_name)
        })?;
        let sha = cmd!(self.ctx.sh, "git rev-parse HEAD")
            .quiet()
            .read()
            .context("reading the commit (git rev-parse HEAD)")?;
        Ok(format!("{repository_url}:git-{}", &sha[..12.min(sha.len())]))
    }

    /// One output as JSON text (lists, maps); an error when it is missing.
    pub fn output_json(&self, stage: Stage, name: &str) -> Result<String> {
        match self.outputs(stage)?.get(name) {
            Some(output) => Ok(output["value"].to_string()),
            None => bail!("{} has no output {name:?}: apply it first", stage.directory()),
        }
    }

    /// One output of a stage's state; None when the stage has no state yet.
    pub fn output(&self, stage: Stage, name: &str) -> Result<Option<String>> {
        let outputs = self.outputs(stage)?;
        Ok(outputs[name]["value"].as_str().filter(|value| !value.is_empty()).map(str::to_owned))
    }

    /// All outputs of a stage, read once per run (a deploy asks for a dozen)
    /// and again after an apply or destroy changed them. Null when the stage
    /// has no state yet.
    fn outputs(&self, stage: Stage) -> Result<serde_json::Value> {
        self.prefetch_outputs(&[stage])?;
        let cached = self.outputs.borrow();
        Ok(cached.iter().find(|(cached, _)| *cached == stage).map(|(_, outputs)| outputs.clone()).unwrap_or_default())
    }

    /// Reads the outputs of `stages` not read yet, all at once: each
    /// `terraform output` is half a second of Terraform starting and
    /// fetching the state, and a deploy needs both stages' (the ledger's
    /// tables, the service's names), so it reads them side by side.
    pub fn prefetch_outputs(&self, stages: &[Stage]) -> Result<()> {
        self.start_reading_outputs(stages)?.finish(self)
    }

    /// `prefetch_outputs` in two halves: the `terraform output` processes
    /// start here and are waited for in `OutputReads::finish`, so a caller
    /// can do something else meanwhile (a deploy builds its image).
    pub fn start_reading_outputs(&self, stages: &[Stage]) -> Result<OutputReads> {
        let missing: Vec<Stage> = stages
            .iter()
            .copied()
            .filter(|stage| !self.outputs.borrow().iter().any(|(cached, _)| cached == stage))
            .collect();
        let mut children = Vec::new();
        for &stage in &missing {
            self.init(stage)?;
            // `-raw` prints a warning to stdout with exit 0 when there are no
            // outputs, so read them all as JSON.
            let mut command = std::process::Command::from(self.terraform(stage).args(["output", "-json", "-no-color"]));
            command.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::piped());
            command.stderr(std::process::Stdio::piped());
            children.push((stage, command.spawn().context("running terraform output")?));
        }
        Ok(OutputReads { children })
    }

    /// Forgets the cached outputs of a stage whose state just changed.
    fn state_changed(&self, stage: Stage) {
        self.outputs.borrow_mut().retain(|(cached, _)| *cached != stage);
    }

    fn secret_env(&self, stage: Stage) -> Result<Vec<(String, String)>> {
        if stage == Stage::Environment {
            secrets::terraform_env(self.ctx, self.environment_name)
                .context("decrypting secrets.tfvars.enc for Terraform (set SECRETS_PASSWORD)")
        } else {
            Ok(Vec::new())
        }
    }

    fn plan_file(&self, stage: Stage) -> PathBuf {
        let name = match stage {
            Stage::Repositories => "repositories",
            Stage::Environment => "environment",
        };
        self.ctx.root.join("target/xtask/plans").join(format!("{}-{name}.tfplan", self.environment_name))
    }

    /// `terraform plan`, saved to a plan file for apply.
    pub fn plan(&self, stage: Stage, image: Option<&str>) -> Result<PlanResult> {
        self.init(stage)?;
        let variables = self.variables(stage, image)?;
        let plan_file = self.plan_file(stage);
        std::fs::create_dir_all(plan_file.parent().unwrap_or(Path::new(".")))
            .with_context(|| format!("creating {}", plan_file.display()))?;
        let out = format!("-out={}", plan_file.display());
        let cmd = self
            .terraform(stage)
            .args(["plan", "-input=false", "-no-color", "-detailed-exitcode", "-lock-timeout=0s"])
            .arg(out)
            .args(variables)
            .envs(self.secret_env(stage)?);
        ui::step(&format!("terraform plan {}", stage.directory()));
        // A plan changes nothing, so dry-run shows the real one.
        ui::detail(&format!("$ {cmd}"));
        let status = run_terraform("terraform plan", cmd)?;
        match status.code() {
            Some(0) => Ok(PlanResult::NoChanges),
            Some(2) => Ok(PlanResult::Changes),
            _ => bail!("terraform plan of {} failed ({status}); see its output above", stage.directory()),
        }
    }

    /// Plans and, when the plan has changes, applies it after asking
    /// (unless --yes).
    pub fn apply(&self, stage: Stage, image: Option<&str>) -> Result<()> {
        let result = self.plan(stage, image)?;
        if result == PlanResult::NoChanges {
            ui::success(&format!("{}: no changes", stage.directory()));
            return Ok(());
        }
        let plan_file = self.plan_file(stage);
        let cmd = self
            .terraform(stage)
            .args(["apply", "-input=false", "-no-color", "-lock-timeout=0s"])
            .arg(&plan_file)
            .envs(self.secret_env(stage)?);
        if self.ctx.would(format_args!("run: {cmd}")) {
            return Ok(());
        }
        if !confirm(
            self.ctx.global.yes,
            &format!("apply these changes to {} ({})?", self.environment_name, stage.directory()),
        )? {
            bail!("apply of {} cancelled", stage.directory());
        }
        ui::step(&format!("terraform apply {}", stage.directory()));
        let status = run_terraform_with_progress("terraform apply", cmd)?;
        self.state_changed(stage);
        let _ = std::fs::remove_file(&plan_file);
        if !status.success() {
            bail!(
                "terraform apply of {} failed ({status}); its output above names the resource. A lock error means another apply holds the state: wait for it, or `terraform force-unlock` if its holder is gone",
                stage.directory()
            );
        }
        ui::success(&format!("{} applied", stage.directory()));
        Ok(())
    }

    pub fn destroy(&self, stage: Stage, image: Option<&str>) -> Result<()> {
        self.init(stage)?;
        let variables = self.variables(stage, image).or_else(|_| {
            // Nothing deployed and no repository: destroy needs some image
            // value to evaluate the configuration, not a real one.
            self.variables(stage, Some("destroyed.invalid/placeholder:none"))
        })?;
        let cmd = self
            .terraform(stage)
            .args(["destroy", "-input=false", "-no-color", "-auto-approve", "-lock-timeout=0s"])
            .args(variables)
            .envs(self.secret_env(stage)?);
        if self.ctx.would(format_args!("run: {cmd}")) {
            return Ok(());
        }
        ui::step(&format!("terraform destroy {}", stage.directory()));
        let status = run_terraform_with_progress("terraform destroy", cmd)?;
        self.state_changed(stage);
        if !status.success() {
            bail!("terraform destroy of {} failed ({status}); see its output above", stage.directory());
        }
        Ok(())
    }
}

/// `terraform output` processes under way (see
/// `Terraform::start_reading_outputs`). Dropped unfinished, they run to
/// their end unread: they only read state.
pub struct OutputReads {
    children: Vec<(Stage, std::process::Child)>,
}

impl OutputReads {
    /// Waits for each read and caches its outputs in `terraform`.
    pub fn finish(self, terraform: &Terraform<'_>) -> Result<()> {
        for (stage, child) in self.children {
            let output = child.wait_with_output().context("running terraform output")?;
            // No state yet (or none readable): no outputs; whoever needs one
            // says which stage to apply.
            let outputs = if output.status.success() {
                serde_json::from_slice(&output.stdout).unwrap_or_default()
            } else {
                serde_json::Value::Null
            };
            terraform.outputs.borrow_mut().push((stage, outputs));
        }
        Ok(())
    }
}

/// How Terraform runs: its report is progress, not a result, so it goes to
/// stderr like the rest of xtask's progress, and stdout stays for what
/// scripts read (`--json`); on Ctrl-C it gets SIGINT (see `run_terraform`).
const TERRAFORM: SpawnOptions = SpawnOptions {
    on_interrupt: StopOnInterrupt::InterruptAndWait(std::time::Duration::from_secs(60)),
    stdout: StdoutTo::Stderr,
};

/// Runs a Terraform command that may hold the state lock. On Ctrl-C it
/// gets SIGINT, as on a terminal, and time to write its state and release
/// the lock: a SIGTERM-and-exit would leave the lock to `force-unlock`.
fn run_terraform(description: &str, cmd: Cmd<'_>) -> Result<std::process::ExitStatus> {
    spawn_and_wait_with(description, cmd, TERRAFORM)
}

/// `run_terraform` shown as progress (a spinner on a terminal, the output's
/// tail if it fails): for apply and destroy, which are long and whose output
/// matters when they fail. A plan streams: it is read before confirming.
fn run_terraform_with_progress(description: &str, cmd: Cmd<'_>) -> Result<std::process::ExitStatus> {
    spawn_with_progress(description, cmd, TERRAFORM)
}

/// Destroy asks for the environment name typed back, even with --yes:
/// there is no undo.
fn confirm_environment_name(ctx: &Ctx, name: &str) -> Result<()> {
    use std::io::IsTerminal;
    if ctx.would(format_args!("ask for {name:?} typed back")) {
        return Ok(());
    }
    if let Ok(confirmed) = std::env::var("XTASK_CONFIRM_ENV")
        && ctx.global.yes
    {
        if confirmed == name {
            return Ok(());
        }
        bail!("XTASK_CONFIRM_ENV={confirmed:?} does not match the environment {name:?}");
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "destroying {name:?} needs its name typed back: run on a terminal, or pass --yes with XTASK_CONFIRM_ENV={name}"
        );
    }
    type_name_back(
        name,
        &format!("This destroys every resource of {name:?}. Type the environment name to confirm: "),
        "nothing destroyed",
    )
}
