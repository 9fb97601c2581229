//! What the image tasks share: where an image comes from (commit, uncommitted
//! changes, branch, SOURCE_DATE_EPOCH), its tags and build arguments, the
//! BuildKit client, `docker build` as a value, vendoring crates for offline
//! builds, and the step that makes image IDs reproducible.
//!
//! Why that last step exists: BuildKit in Docker 20.10 (BuildKit 0.8) writes
//! the wall-clock time into the image config (`created` and each history
//! entry), and an image ID is the digest of its config, so two builds with
//! byte-identical layers still get different IDs. BuildKit 0.11+ would take
//! SOURCE_DATE_EPOCH for those fields; 20.10 cannot. `docker import` and the
//! legacy builder stamp the current time as well. So after the build the
//! image is saved, its config's timestamps are set to SOURCE_DATE_EPOCH, and
//! it is loaded back: the ID is then the digest of a config that depends on
//! the sources only.

pub mod advisories;
pub mod build;
pub mod builder;
pub mod smoke;
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::Args;
use serde::Serialize;
use xshell::{Cmd, Shell, cmd};

use crate::support::time::rfc3339;
use crate::{
    config,
    support::{
        cleanup,
        ctx::Ctx,
        exec::{SpawnOptions, cargo, require_tool, spawn_and_wait, spawn_with_progress},
        fs::{hex, write_atomic},
        ui,
    },
};

/// The Dockerfile, relative to the build context (the project root).
pub const DOCKERFILE: &str = "docker/Dockerfile";
/// Crates vendored for offline builds; the Dockerfile's `crates-vendored`
/// stage copies `<this>/crates`, and its ignore file lets exactly that in.
pub const VENDOR_DIR: &str = "target/docker-vendor";
pub const DOCKER_HINT: &str = "install Docker (Debian: `apt-get install docker.io`) and start the daemon";
/// The in-container test command; the test stage's CMD says the same (a unit
/// test checks), so extra arguments can be appended to it.
pub const CONTAINER_TEST_COMMAND: [&str; 5] = ["cargo", "test", "--frozen", "-p", "app"];

/// `--offline` for the image tasks.
#[derive(Debug, Clone, Copy, Args)]
pub struct Offline {
    /// Build with no network: crates vendored on the host, `--network none`
    /// for the build, local base images (made by `cargo xtask builder-image`
    /// when missing)
    // XTASK_OFFLINE=1 as well as =true: any value but 0/false/no/off/empty.
    #[arg(long = "offline", env = "XTASK_OFFLINE", value_parser = clap::builder::FalseyValueParser::new())]
    pub enabled: bool,
}

/// Where an image comes from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub git_sha: String,
    /// Uncommitted changes (untracked files included): the image is then not
    /// the commit's image, and its commit tag says so.
    pub dirty: bool,
    /// With `dirty`: 8 hex of a hash of those changes, so two builds of one
    /// commit with different edits get different tags (ECR keeps tags
    /// immutable, and would refuse the second push of one tag).
    pub dirty_id: Option<String>,
    pub branch: Option<String>,
    /// The commit time: every timestamp in the image is this one.
    pub source_date_epoch: i64,
}

impl Source {
    pub fn read(sh: &Shell) -> Result<Source> {
        let hint = "build-image names images after the git commit; run it in a git checkout with at least one commit";
        let git_sha = cmd!(sh, "git rev-parse HEAD")
            .quiet()
            .read()
            .with_context(|| format!("reading the commit (git rev-parse HEAD): {hint}"))?;
        let status = cmd!(sh, "git status --porcelain")
            .quiet()
            .read()
            .context("looking for uncommitted changes (git status --porcelain)")?;
        let epoch = cmd!(sh, "git log -1 --format=%ct")
            .quiet()
            .read()
            .context("reading the commit time (git log -1 --format=%ct)")?;
        let source_date_epoch =
            epoch.trim().parse().with_context(|| format!("git log printed {epoch:?} as the commit time"))?;
        // A detached HEAD (CI checkouts) has no branch; CI names it instead.
        let branch = cmd!(sh, "git symbolic-ref --short -q HEAD")
            .quiet()
            .ignore_status()
            .read()
            .ok()
            .filter(|branch| !branch.is_empty())
            .or_else(|| {
                ["GITHUB_HEAD_REF", "GITHUB_REF_NAME", "CI_COMMIT_REF_NAME"]
                    .iter()
                    .find_map(|name| std::env::var(name).ok().filter(|value| !value.is_empty()))
            });
        let dirty = !status.trim().is_empty();
        let dirty_id = if dirty { Some(changes_id(sh)?) } else { None };
        Ok(Source { git_sha: git_sha.trim().to_owned(), dirty, dirty_id, branch, source_date_epoch })
    }

    /// `git-<12 hex>`, with `-dirty-<8 hex of the changes>` for uncommitted
    /// changes.
    pub fn commit_tag(&self) -> String {
        let short = self.git_sha.get(..12).unwrap_or(&self.git_sha);
        match (&self.dirty_id, self.dirty) {
            (Some(id), true) => format!("git-{short}-dirty-{id}"),
            (None, true) => format!("git-{short}-dirty"),
            _ => format!("git-{short}"),
        }
    }

    /// SOURCE_DATE_EPOCH as RFC 3339, for the `created` fields and label.
    pub fn created(&self) -> String {
        rfc3339(self.source_date_epoch)
    }
}

/// What the working tree changes against HEAD: the binary diff of tracked
/// files, and each untracked (not ignored) file's path and blob id. Equal
/// edits give equal ids; any difference, another.
fn changes_id(sh: &Shell) -> Result<String> {
    let diff = cmd!(sh, "git diff HEAD --binary")
        .quiet()
        .output()
        .context("reading the uncommitted changes (git diff HEAD --binary)")?
        .stdout;
    let untracked = cmd!(sh, "git ls-files --others --exclude-standard -z")
        .quiet()
        .output()
        .context("listing untracked files (git ls-files --others)")?
        .stdout;
    let mut hasher = openssl::sha::Sha256::new();
    hasher.update(&diff);
    for path in untracked.split(|byte| *byte == 0).filter(|path| !path.is_empty()) {
        let path = String::from_utf8_lossy(path).into_owned();
        // A file that vanished meanwhile counts by its name alone.
        let blob = cmd!(sh, "git hash-object -- {path}").quiet().ignore_stderr().read().unwrap_or_default();
        hasher.update(path.as_bytes());
        hasher.update(blob.as_bytes());
    }
    Ok(hex(&hasher.finish()[..4]))
}

/// The image's tags: `<name>:git-<sha12>[-dirty-<id>]` first, then
/// `<name>:branch-<branch>` when there is a branch. An incremental build is
/// not the commit's reproducible image and must never take its tags (ECR
/// keeps tags immutable: CI's clean build of the same commit would then be
/// refused): it is only `<name>:git-<sha12>[-dirty]-incremental`.
pub fn image_tags(name: &str, source: &Source, mode: BuildMode) -> Vec<String> {
    if mode.incremental {
        return vec![format!("{name}:{}-incremental", source.commit_tag())];
    }
    let mut tags = vec![format!("{name}:{}", source.commit_tag())];
    if let Some(tag) = source.branch.as_deref().and_then(branch_tag) {
        tags.push(format!("{name}:{tag}"));
    }
    tags
}

/// `branch-<name>` made a valid Docker tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`):
/// lower case, runs of other characters become one `-`, at most 128
/// characters. `None` when nothing of the name is left.
pub fn branch_tag(branch: &str) -> Option<String> {
    let mut sanitised = String::new();
    for c in branch.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
            sanitised.push(c.to_ascii_lowercase());
        } else if !sanitised.is_empty() && !sanitised.ends_with('-') {
            sanitised.push('-');
        }
    }
    let mut tag = format!("branch-{}", sanitised.trim_matches(['-', '.']));
    tag.truncate(128);
    let tag = tag.trim_end_matches(['-', '.']).to_owned();
    (tag.len() > "branch-".len()).then_some(tag)
}

/// What the runtime image is labelled with, from deploy.toml and Cargo.toml.
#[derive(Debug, Clone)]
pub struct AppIdentity {
    pub name: String,
    pub version: String,
    pub port: u16,
    pub source_url: String,
}

impl AppIdentity {
    pub fn load(root: &Path) -> Result<AppIdentity> {
        let config = config::Config::load(root)?;
        let manifest = |path: &Path| -> Result<toml::Table> {
            let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
        };
        let app_manifest = manifest(&root.join("app/Cargo.toml"))?;
        let version = app_manifest
            .get("package")
            .and_then(|package| package.get("version"))
            .and_then(|version| version.as_str())
            .context("app/Cargo.toml has no package.version")?
            .to_owned();
        let workspace_manifest = manifest(&root.join("Cargo.toml"))?;
        let source_url = workspace_manifest
            .get("workspace")
            .and_then(|workspace| workspace.get("package"))
            .and_then(|package| package.get("repository"))
            .and_then(|url| url.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(AppIdentity { name: config.app_name().to_owned(), version, port: config.app.port, source_url })
    }
}

/// How a release image is compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BuildMode {
    /// Crates vendored on the host, no network (see `Offline`).
    pub offline: bool,
    /// rustc's incremental state kept between builds (INCREMENTAL=1 in
    /// docker/Dockerfile): a small change compiles in seconds, but the bytes
    /// may differ from a clean build's, so only deploys that build their own
    /// image use it.
    pub incremental: bool,
}

impl BuildMode {
    /// " (offline, incremental)" and the like, for a build's announcement.
    pub fn announcement(self) -> String {
        let words: Vec<&str> = [(self.offline, "offline"), (self.incremental, "incremental")]
            .into_iter()
            .filter_map(|(on, word)| on.then_some(word))
            .collect();
        if words.is_empty() { String::new() } else { format!(" ({})", words.join(", ")) }
    }
}

/// The build arguments of a release build: what app/build.rs bakes in, the
/// OCI labels, where crates come from, and whether to compile incrementally.
pub fn release_build_args(app: &AppIdentity, source: &Source, mode: BuildMode) -> Vec<(String, String)> {
    let mut args = vec![
        ("GIT_SHA".to_owned(), source.git_sha.clone()),
        ("SOURCE_DATE_EPOCH".to_owned(), source.source_date_epoch.to_string()),
        ("IMAGE_CREATED".to_owned(), source.created()),
        ("APP_NAME".to_owned(), app.name.clone()),
        ("APP_VERSION".to_owned(), app.version.clone()),
        ("PORT".to_owned(), app.port.to_string()),
    ];
    if !app.source_url.is_empty() {
        args.push(("SOURCE_URL".to_owned(), app.source_url.clone()));
    }
    args.extend(crates_build_arg(mode.offline));
    if mode.incremental {
        args.push(("INCREMENTAL".to_owned(), "1".to_owned()));
    }
    args
}

/// `CRATES=vendored` for offline builds; online builds keep the default.
pub fn crates_build_arg(offline: bool) -> Option<(String, String)> {
    offline.then(|| ("CRATES".to_owned(), "vendored".to_owned()))
}

/// How this machine runs a BuildKit build. The Dockerfile needs BuildKit
/// (its ignore file sits next to it, and CRATES selects a stage). Docker 23+
/// clients build with BuildKit only through the buildx plugin; older clients
/// have it built in behind DOCKER_BUILDKIT=1. On this project's machines the
/// `docker` first on PATH is client 28 without buildx, while Debian's 20.10
/// client is at /usr/bin/docker, so both are looked for.
#[derive(Debug, Clone)]
pub struct BuildKit {
    program: PathBuf,
    buildx: bool,
}

impl BuildKit {
    /// The docker client this build uses.
    pub fn docker_path(&self) -> &Path {
        &self.program
    }

    /// How a shell script spells a build with it: `docker buildx build
    /// --load` or `docker build` (with DOCKER_BUILDKIT=1).
    pub fn build_words(&self) -> Vec<String> {
        let docker = self.program.display().to_string();
        if self.buildx {
            vec![docker, "buildx".into(), "build".into(), "--load".into()]
        } else {
            vec![docker, "build".into()]
        }
    }

    pub fn find(sh: &Shell) -> Result<BuildKit> {
        let docker = require_tool("docker", DOCKER_HINT)?;
        require_docker_daemon(&docker)?;
        if sh.cmd(&docker).args(["buildx", "version"]).quiet().ignore_stdout().ignore_stderr().run().is_ok() {
            return Ok(BuildKit { program: docker, buildx: true });
        }
        let mut candidates: Vec<PathBuf> = which::which_all("docker").map(|found| found.collect()).unwrap_or_default();
        candidates.push(PathBuf::from("/usr/bin/docker"));
        let mut seen = Vec::new();
        let mut versions = Vec::new();
        for candidate in candidates {
            let Ok(canonical) = fs::canonicalize(&candidate) else { continue };
            if seen.contains(&canonical) {
                continue;
            }
            seen.push(canonical);
            let version = sh
                .cmd(&candidate)
                .args(["version", "--format", "{{.Client.Version}}"])
                .quiet()
                .ignore_status()
                .ignore_stderr()
                .read()
                .unwrap_or_default();
            let major: Option<u32> = version.split('.').next().and_then(|major| major.trim().parse().ok());
            if major.is_some_and(|major| major < 23) {
                return Ok(BuildKit { program: candidate, buildx: false });
            }
            versions.push(format!("{} is client {}", candidate.display(), version.trim()));
        }
        bail!(
            "no docker client here can build with BuildKit ({}): Docker 23+ clients need the buildx plugin for it \
             (https://docs.docker.com/go/buildx/); a client older than 23 would use its built-in BuildKit",
            versions.join(", ")
        )
    }

    /// `docker buildx build --load`, or `env DOCKER_BUILDKIT=1 docker build`
    /// (through `env` so that a printed command is complete).
    pub fn build_command<'a>(&self, sh: &'a Shell) -> Cmd<'a> {
        if self.buildx {
            sh.cmd(&self.program).args(["buildx", "build", "--load"])
        } else {
            sh.cmd("env").arg("DOCKER_BUILDKIT=1").arg(&self.program).arg("build")
        }
    }
}

/// Fails unless the Docker daemon answers, saying how to start it. Checked
/// before anything else: an offline build would otherwise spend minutes on
/// debootstrap and vendoring before its first docker command fails.
pub fn require_docker_daemon(docker: &Path) -> Result<()> {
    let output = Command::new(docker)
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .with_context(|| format!("running {} version", docker.display()))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let reason = stderr.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no answer");
    let host = std::env::var("DOCKER_HOST").map(|host| format!(" at DOCKER_HOST={host}")).unwrap_or_default();
    bail!(
        "the Docker daemon{host} is not reachable ({reason}): start it (`systemctl start docker` or `dockerd &`) \
         or point DOCKER_HOST at a running one; `cargo xtask doctor` checks every tool"
    )
}

/// One `docker build` of docker/Dockerfile.
#[derive(Debug, Clone)]
pub struct DockerBuild {
    /// The build context; the Dockerfile is `<context>/docker/Dockerfile`.
    pub context: PathBuf,
    pub stage: String,
    pub build_args: Vec<(String, String)>,
    /// `--network none`: proof that nothing is downloaded inside.
    pub offline: bool,
    pub no_cache: bool,
    pub iidfile: Option<PathBuf>,
    pub tags: Vec<String>,
}

impl DockerBuild {
    pub fn command<'a>(&self, sh: &'a Shell, buildkit: &BuildKit) -> Cmd<'a> {
        // Relative paths when building the project itself: the printed
        // command is then the one a person would type.
        let context = match self.context.strip_prefix(sh.current_dir()) {
            Ok(relative) => relative.to_path_buf(),
            Err(_) => self.context.clone(),
        };
        let mut cmd =
            buildkit.build_command(sh).arg("--file").arg(context.join(DOCKERFILE)).args(["--target", &self.stage]);
        let context = if context.as_os_str().is_empty() { PathBuf::from(".") } else { context };
        for (name, value) in &self.build_args {
            cmd = cmd.arg("--build-arg").arg(format!("{name}={value}"));
        }
        if self.offline {
            cmd = cmd.args(["--network", "none"]);
        }
        if self.no_cache {
            cmd = cmd.arg("--no-cache");
        }
        for tag in &self.tags {
            cmd = cmd.args(["--tag", tag]);
        }
        if let Some(iidfile) = &self.iidfile {
            cmd = cmd.arg("--iidfile").arg(iidfile);
        }
        if ui::verbosity() == ui::Verbosity::Quiet {
            cmd = cmd.arg("--quiet");
        } else if ui::in_ci() || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            cmd = cmd.args(["--progress", "plain"]);
        }
        cmd.arg(context)
    }

    /// Runs the build; returns the image ID (a placeholder in dry-run).
    pub fn run(&self, ctx: &Ctx, buildkit: &BuildKit) -> Result<String> {
        let mut build = self.clone();
        let work_dir = ctx.root.join("target/docker-image");
        let iidfile = work_dir.join(format!("{}-{}.iid", self.stage, std::process::id()));
        build.iidfile = Some(iidfile.clone());
        if !ctx.dry_run() {
            fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display()))?;
        }
        run_progress(ctx, &format!("docker build --target {}", self.stage), build.command(&ctx.sh, buildkit))?;
        if ctx.dry_run() {
            return Ok(format!("<id of the {} image>", self.stage));
        }
        let id = fs::read_to_string(&iidfile).with_context(|| format!("reading {}", iidfile.display()))?;
        let _ = fs::remove_file(&iidfile);
        Ok(id.trim().to_owned())
    }
}

/// Runs a command whose output is progress, not a result: its stdout goes to
/// our stderr (nowhere with `--quiet`), so stdout stays clean for `--json`.
/// A non-zero exit is an error. Interruptible like `Ctx::run_interruptible`;
/// on a terminal a spinner (`ui::progress`) stands in for the output.
pub fn run_progress(ctx: &Ctx, description: &str, cmd: Cmd<'_>) -> Result<()> {
    if ctx.dry_run() {
        println!("would run: {cmd}");
        return Ok(());
    }
    ui::detail(&format!("$ {cmd}"));
    let mut command = Command::from(cmd);
    if ui::verbosity() == ui::Verbosity::Quiet {
        command.stdout(std::process::Stdio::null());
    } else {
        command.stdout(std::io::stderr());
    }
    let status = spawn_with_progress(description, &mut command, SpawnOptions::default())?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Runs a quick command that changes something and returns its stdout; in
/// dry-run only prints it.
pub fn run_read(ctx: &Ctx, cmd: Cmd<'_>) -> Result<String> {
    if ctx.dry_run() {
        println!("would run: {cmd}");
        return Ok(String::new());
    }
    ui::detail(&format!("$ {cmd}"));
    Ok(cmd.quiet().read()?)
}

/// The commit an image was built from (its `org.opencontainers.image.revision`
/// label, which `build-image` sets): `Ok(None)` for an image without one,
/// an error when the image is not on this machine.
pub fn revision_label(sh: &Shell, image: &str) -> Result<Option<String>> {
    let label = sh
        .cmd("docker")
        .args(["image", "inspect", "--format", "{{index .Config.Labels \"org.opencontainers.image.revision\"}}"])
        .arg(image)
        .quiet()
        .ignore_stderr()
        .read()?;
    let label = label.trim();
    Ok((!label.is_empty() && label != "<no value>").then(|| label.to_owned()))
}

/// True when the daemon has this image (read-only, so also in dry-run).
pub fn image_exists(sh: &Shell, image: &str) -> bool {
    sh.cmd("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok()
}

/// The image ID a reference points to.
pub fn image_id(sh: &Shell, image: &str) -> Result<String> {
    let id = sh
        .cmd("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .quiet()
        .read()
        .with_context(|| format!("inspecting image {image}"))?;
    Ok(id.trim().to_owned())
}

/// The base images the Dockerfile names by default (`ARG RUST_IMAGE=...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseImages {
    pub rust: String,
    pub debian: String,
}

impl BaseImages {
    pub fn from_dockerfile(root: &Path) -> Result<BaseImages> {
        let path = root.join(DOCKERFILE);
        let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let default = |name: &str| -> Result<String> {
            let prefix = format!("ARG {name}=");
            text.lines()
                .find_map(|line| line.trim().strip_prefix(&prefix))
                .map(|value| value.trim().to_owned())
                .with_context(|| format!("{} has no `{prefix}...` line", path.display()))
        };
        Ok(BaseImages { rust: default("RUST_IMAGE")?, debian: default("DEBIAN_IMAGE")? })
    }
}

/// Gets an image build ready and says whether it runs offline: with
/// `--offline` (or XTASK_OFFLINE) the local builder image and vendored
/// crates; otherwise upstream base images, unless they cannot be had.
///
/// Why the fallback: the README's first command must work on a fresh
/// machine that cannot pull images (ours, and many corporate ones), and
/// failing with "no such host" after the user typed `cargo xtask deploy`
/// helps nobody. A machine that can pull never takes it: the upstream
/// images stay the default. XTASK_OFFLINE=false turns the fallback off.
pub fn prepare_build(ctx: &Ctx, requested_offline: bool) -> Result<bool> {
    let offline = requested_offline || upstream_base_unavailable(ctx)?;
    if offline {
        require_local_rust_image(ctx)?;
        vendor_crates(ctx)?;
    }
    Ok(offline)
}

/// XTASK_OFFLINE from the environment or `.env` (clap sees only the
/// former): `Some(true)` for a yes, `Some(false)` for an explicit no.
pub fn offline_setting(ctx: &Ctx) -> Option<bool> {
    ctx.env_var("XTASK_OFFLINE")
        .map(|value| !matches!(value.trim().to_ascii_lowercase().as_str(), "0" | "false" | "no" | "off" | "n" | "f"))
}

/// True when the build must fall back to offline: the Rust base image is
/// the stand-in `cargo xtask builder-image` made (this machine builds
/// offline), or it is missing and `docker pull` cannot fetch it.
fn upstream_base_unavailable(ctx: &Ctx) -> Result<bool> {
    if offline_setting(ctx) == Some(false) {
        return Ok(false);
    }
    let base = BaseImages::from_dockerfile(&ctx.root)?;
    if image_exists(&ctx.sh, &base.rust) {
        let stand_in = crate::image::builder::is_stand_in(&ctx.sh, &base.rust);
        if stand_in {
            ui::info(&format!(
                "{} here was made by `cargo xtask builder-image`: building offline (set XTASK_OFFLINE=false to build online)",
                base.rust
            ));
        }
        return Ok(stand_in);
    }
    let pull = ctx.sh.cmd("docker").args(["pull", "--quiet", &base.rust]);
    if ctx.dry_run() {
        println!("would run: {pull}   (and build offline if it fails)");
        return Ok(false);
    }
    ui::step(&format!("pulling the base image {}", base.rust));
    let output = Command::from(pull).output().with_context(|| format!("running docker pull {}", base.rust))?;
    if output.status.success() {
        return Ok(false);
    }
    let reason = String::from_utf8_lossy(&output.stderr);
    ui::warn(&format!(
        "cannot pull {}: {}\n  building offline instead: the builder image is made on this machine from Debian \
         packages and the host's Rust toolchain (once, a few minutes), crates are vendored on the host. Pass \
         --offline to skip this check, or set XTASK_OFFLINE=false to make it an error",
        base.rust,
        reason.trim()
    ));
    Ok(true)
}

/// Offline builds need the Rust base image locally: nothing can be pulled.
pub fn require_local_rust_image(ctx: &Ctx) -> Result<()> {
    let base = BaseImages::from_dockerfile(&ctx.root)?;
    if image_exists(&ctx.sh, &base.rust) {
        return Ok(());
    }
    // --offline is the explicit opt-in to images made on this machine, so
    // making the missing one is part of what it asked for.
    ui::step(&format!(
        "the builder image {} is not on this machine and an offline build cannot pull it: making it (cargo xtask builder-image)",
        base.rust
    ));
    let mirror = std::env::var("XTASK_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_DEBIAN_MIRROR.to_owned());
    crate::image::builder::BuilderImage { force: false, mirror }
        .run(ctx)
        .context("making the builder image for an offline build (cargo xtask builder-image)")
}

/// Where debootstrap fetches Debian from, unless XTASK_DEBIAN_MIRROR says otherwise.
pub const DEFAULT_DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Makes `target/docker-vendor/crates` hold every crate of Cargo.lock, for
/// the Dockerfile's `crates-vendored` stage; skipped when it already matches
/// the lockfile. Cargo runs on the host, with the host's cache and network
/// settings (`CARGO_NET_OFFLINE=true` if the host is offline too).
///
/// Why vendoring and not the host's CARGO_HOME as a second build context:
/// `--build-context` needs Dockerfile frontend 1.4, which is pulled from
/// Docker Hub, and Docker 20.10's built-in frontend does not have it. A
/// directory inside the one context works with any BuildKit.
pub fn vendor_crates(ctx: &Ctx) -> Result<()> {
    let vendor_dir = ctx.root.join(VENDOR_DIR);
    let crates = vendor_dir.join("crates");
    let partial = vendor_dir.join("crates.partial");
    let stamp = vendor_dir.join("Cargo.lock");
    let mut cmd = cargo(&ctx.sh).args(["vendor", "--locked", "--respect-source-config"]);
    if ui::verbosity() != ui::Verbosity::Verbose {
        cmd = cmd.arg("--quiet");
    }
    let cmd = cmd.arg(&partial);
    if ctx.dry_run() {
        println!("would run (unless {} matches Cargo.lock): {cmd}", crates.display());
        return Ok(());
    }
    fs::create_dir_all(&vendor_dir).with_context(|| format!("creating {}", vendor_dir.display()))?;
    // Two builds at once must not vendor into the same directory.
    let lock_path = vendor_dir.join("lock");
    let lock = fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;

    let lockfile = ctx.root.join("Cargo.lock");
    let current = fs::read(&lockfile).with_context(|| format!("reading {}", lockfile.display()))?;
    if crates.is_dir() && fs::read(&stamp).is_ok_and(|vendored| vendored == current) {
        ui::detail(&format!("{} matches Cargo.lock", crates.display()));
        return Ok(());
    }
    ui::step(&format!("vendoring crates for the offline build into {VENDOR_DIR}/crates"));
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_file(&stamp);
    ui::detail(&format!("$ {cmd}"));
    let mut command = Command::from(cmd);
    // cargo vendor prints a config snippet we do not need on stdout.
    command.stdout(std::process::Stdio::null());
    let status = spawn_and_wait("cargo vendor", &mut command)?;
    if !status.success() {
        let _ = fs::remove_dir_all(&partial);
        bail!(
            "cargo vendor failed ({status}); offline hosts need the crates in ~/.cargo/registry and CARGO_NET_OFFLINE=true"
        );
    }
    if crates.exists() {
        fs::remove_dir_all(&crates).with_context(|| format!("removing the old {}", crates.display()))?;
    }
    fs::rename(&partial, &crates).with_context(|| format!("renaming {} to {}", partial.display(), crates.display()))?;
    write_atomic(&stamp, &current, 0o644)?;
    Ok(())
}

/// Sets the config timestamps of `built_id` to the source's time, loads the
/// result under `tags`, removes the intermediate image, and returns the new
/// ID (see the module comment for why).
pub fn make_reproducible(ctx: &Ctx, built_id: &str, tags: &[String], created: &str) -> Result<String> {
    let sh = &ctx.sh;
    let work = ctx.root.join(format!("target/docker-image/reproducible-{}", std::process::id()));
    let saved = work.join("saved.tar");
    let unpacked = work.join("image");
    let loaded = work.join("reproducible.tar");
    let save = cmd!(sh, "docker save --output {saved} {built_id}");
    let load = cmd!(sh, "docker load --quiet --input {loaded}");
    if ctx.dry_run() {
        println!("would run: {save}");
        println!(
            "would set: created and history[].created to {created} in the image config; RepoTags to {}",
            tags.join(" ")
        );
        println!("would run: {load}");
        println!("would run: docker image rm {built_id}");
        return Ok("<reproducible image id>".to_owned());
    }
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&unpacked).with_context(|| format!("creating {}", unpacked.display()))?;
    let work_for_cleanup = work.clone();
    let _remove_work = cleanup::register(format!("remove {}", work.display()), move || {
        let _ = fs::remove_dir_all(&work_for_cleanup);
    });

    run_read(ctx, save)?;
    run_read(ctx, cmd!(sh, "tar --extract --file {saved} --directory {unpacked}"))?;
    fs::remove_file(&saved).with_context(|| format!("removing {}", saved.display()))?;
    let manifest_path = unpacked.join("manifest.json");
    let manifest = fs::read(&manifest_path).with_context(|| format!("reading {}", manifest_path.display()))?;
    let config_name = config_file_name(&manifest)?;
    let config_path = unpacked.join(&config_name);
    let config = fs::read(&config_path).with_context(|| format!("reading {}", config_path.display()))?;
    let reproducible_config = reproducible_config(&config, created)?;
    let digest = hex(&openssl::sha::sha256(&reproducible_config));
    fs::remove_file(&config_path).with_context(|| format!("removing {}", config_path.display()))?;
    let new_config_name = format!("{digest}.json");
    fs::write(unpacked.join(&new_config_name), &reproducible_config).context("writing the image config")?;
    fs::write(&manifest_path, retagged_manifest(&manifest, &new_config_name, tags)?)
        .context("writing manifest.json")?;
    run_read(ctx, cmd!(sh, "tar --create --file {loaded} --directory {unpacked} ."))?;
    run_read(ctx, load)?;

    let id = format!("sha256:{digest}");
    let loaded_id = image_id(sh, &tags[0])?;
    if loaded_id != id {
        bail!("docker loaded {} as {loaded_id}, expected {id}", tags[0]);
    }
    if built_id != id {
        remove_if_untagged(sh, built_id);
    }
    Ok(id)
}

/// Removes an image this task made and no longer needs (the build's
/// intermediate, a superseded test image), unless something has tagged it
/// meanwhile: then it is not ours to remove.
pub fn remove_if_untagged(sh: &Shell, id: &str) {
    let tag_count = sh
        .cmd("docker")
        .args(["image", "inspect", "--format", "{{len .RepoTags}}", id])
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    if tag_count.trim() == "0" {
        let _ = sh.cmd("docker").args(["image", "rm", id]).quiet().ignore_stdout().ignore_stderr().run();
    }
}

/// The config file named by a `docker save` manifest.json.
fn config_file_name(manifest: &[u8]) -> Result<String> {
    let manifest: serde_json::Value = serde_json::from_slice(manifest).context("parsing manifest.json")?;
    manifest
        .get(0)
        .and_then(|image| image.get("Config"))
        .and_then(|config| config.as_str())
        .map(str::to_owned)
        .context("manifest.json names no Config")
}

fn retagged_manifest(manifest: &[u8], config_name: &str, tags: &[String]) -> Result<Vec<u8>> {
    let mut manifest: serde_json::Value = serde_json::from_slice(manifest).context("parsing manifest.json")?;
    let image = manifest.get_mut(0).and_then(|image| image.as_object_mut()).context("manifest.json is empty")?;
    image.insert("Config".to_owned(), config_name.into());
    image.insert("RepoTags".to_owned(), tags.into());
    Ok(serde_json::to_vec(&manifest)?)
}

/// The image config with `created` and every `history[].created` set to
/// `created`, and the per-build container fields of the legacy builder
/// dropped. Serialised compactly, so equal inputs give equal bytes.
pub fn reproducible_config(config: &[u8], created: &str) -> Result<Vec<u8>> {
    let mut config: serde_json::Value = serde_json::from_slice(config).context("parsing the image config")?;
    let object = config.as_object_mut().context("the image config is not a JSON object")?;
    object.insert("created".to_owned(), created.into());
    for field in ["container", "container_config"] {
        object.remove(field);
    }
    if let Some(history) = object.get_mut("history").and_then(|history| history.as_array_mut()) {
        for entry in history.iter_mut().filter_map(|entry| entry.as_object_mut()) {
            entry.insert("created".to_owned(), created.into());
        }
    }
    Ok(serde_json::to_vec(&config)?)
}

/// The workspace members, from the root Cargo.toml.
pub fn workspace_members(root: &Path) -> Result<Vec<String>> {
    let path = root.join("Cargo.toml");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let manifest: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let members = manifest
        .get("workspace")
        .and_then(|workspace| workspace.get("members"))
        .and_then(|members| members.as_array())
        .with_context(|| format!("{} has no workspace.members", path.display()))?;
    Ok(members.iter().filter_map(|member| member.as_str().map(str::to_owned)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(dirty: bool, branch: Option<&str>) -> Source {
        Source {
            git_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            dirty,
            dirty_id: dirty.then(|| "5eed1234".to_owned()),
            branch: branch.map(str::to_owned),
            source_date_epoch: 1_700_000_000,
        }
    }

    #[test]
    fn tags_name_the_commit_and_the_branch() {
        assert_eq!(
            image_tags("guestbook", &source(false, Some("main")), BuildMode::default()),
            ["guestbook:git-0123456789ab", "guestbook:branch-main"]
        );
        assert_eq!(
            image_tags("guestbook", &source(true, None), BuildMode::default()),
            ["guestbook:git-0123456789ab-dirty-5eed1234"]
        );
        let incremental = BuildMode { offline: true, incremental: true };
        assert_eq!(
            image_tags("guestbook", &source(false, Some("main")), incremental),
            ["guestbook:git-0123456789ab-incremental"]
        );
    }

    #[test]
    fn a_dirty_tag_names_the_changes_so_two_edits_of_one_commit_differ() {
        let dir = testkit::ServiceDir::new("xtask-dirty-id");
        let sh = Shell::new().unwrap();
        sh.change_dir(dir.path());
        let git = |args: &[&str]| {
            sh.cmd("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .quiet()
                .run()
                .unwrap()
        };
        git(&["init", "-q"]);
        std::fs::write(dir.path().join("a.txt"), "one\n").unwrap();
        git(&["add", "a.txt"]);
        git(&["commit", "-q", "-m", "one"]);
        assert_eq!(Source::read(&sh).unwrap().dirty_id, None);

        std::fs::write(dir.path().join("a.txt"), "two\n").unwrap();
        let first = Source::read(&sh).unwrap();
        assert!(first.dirty && first.commit_tag().starts_with("git-") && first.commit_tag().contains("-dirty-"));
        assert_eq!(Source::read(&sh).unwrap().commit_tag(), first.commit_tag(), "the same edit, the same tag");
        std::fs::write(dir.path().join("a.txt"), "three\n").unwrap();
        let second = Source::read(&sh).unwrap();
        assert_ne!(second.commit_tag(), first.commit_tag());
        std::fs::write(dir.path().join("new.txt"), "x\n").unwrap();
        let third = Source::read(&sh).unwrap();
        assert_ne!(third.commit_tag(), second.commit_tag(), "an untracked file counts");
        assert_eq!(third.dirty_id.as_ref().map(String::len), Some(8));
    }

    #[test]
    fn branch_names_become_valid_tags() {
        assert_eq!(branch_tag("feature/Login-Page").as_deref(), Some("branch-feature-login-page"));
        assert_eq!(branch_tag("dependabot/cargo/tokio-1.2.3").as_deref(), Some("branch-dependabot-cargo-tokio-1.2.3"));
        assert_eq!(branch_tag("--weird//name--").as_deref(), Some("branch-weird-name"));
        assert_eq!(branch_tag("///"), None);
        let long = branch_tag(&"x".repeat(300)).unwrap();
        assert_eq!(long.len(), 128);
        let valid = |tag: &str| {
            tag.len() <= 128
                && tag.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
                && tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        };
        for branch in ["a", "ünïcode/branch", "release/v1.2", "x y\tz"] {
            let tag = branch_tag(branch).unwrap();
            assert!(valid(&tag), "{branch:?} gave {tag:?}");
        }
    }

    #[test]
    fn reproducible_config_pins_every_timestamp_and_is_deterministic() {
        let built = |time: &str| {
            format!(
                r#"{{"architecture":"amd64","config":{{"Labels":{{"a":"b"}}}},"created":"{time}","container":"abc",
                "history":[{{"created":"{time}","created_by":"COPY /rootfs/ / # buildkit"}},{{"created":"{time}","empty_layer":true}}],
                "os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:00"]}}}}"#
            )
        };
        let first = reproducible_config(built("2026-01-01T10:00:00.1Z").as_bytes(), "2023-11-14T22:13:20Z").unwrap();
        let second = reproducible_config(built("2026-01-02T11:11:11.2Z").as_bytes(), "2023-11-14T22:13:20Z").unwrap();
        assert_eq!(first, second);
        let config: serde_json::Value = serde_json::from_slice(&first).unwrap();
        assert_eq!(config["created"], "2023-11-14T22:13:20Z");
        assert!(config["history"].as_array().unwrap().iter().all(|entry| entry["created"] == "2023-11-14T22:13:20Z"));
        assert!(config.get("container").is_none());
        assert_eq!(config["config"]["Labels"]["a"], "b");
    }

    #[test]
    fn manifest_is_retagged_and_points_at_the_new_config() {
        let manifest = br#"[{"Config":"old.json","RepoTags":null,"Layers":["x/layer.tar"]}]"#;
        assert_eq!(config_file_name(manifest).unwrap(), "old.json");
        let tags = vec!["guestbook:git-0123456789ab".to_owned()];
        let rewritten: serde_json::Value =
            serde_json::from_slice(&retagged_manifest(manifest, "new.json", &tags).unwrap()).unwrap();
        assert_eq!(rewritten[0]["Config"], "new.json");
        assert_eq!(rewritten[0]["RepoTags"][0], "guestbook:git-0123456789ab");
        assert_eq!(rewritten[0]["Layers"][0], "x/layer.tar");
    }

    /// Every workspace member's manifest must reach the dependency stage:
    /// cargo refuses to resolve a workspace with a member missing.
    #[test]
    fn dockerfile_and_its_ignore_file_copy_every_workspace_member_manifest() {
        let root = crate::support::fs::project_root();
        let dockerfile = fs::read_to_string(root.join(DOCKERFILE)).unwrap();
        let ignore = fs::read_to_string(root.join("docker/Dockerfile.dockerignore")).unwrap();
        for member in workspace_members(&root).unwrap() {
            let copy = format!("COPY {member}/Cargo.toml {member}/");
            assert!(dockerfile.lines().any(|line| line.trim() == copy), "docker/Dockerfile lacks `{copy}`");
            let allowed = [format!("!{member}"), format!("!{member}/Cargo.toml")];
            assert!(
                ignore.lines().any(|line| allowed.contains(&line.trim().to_owned())),
                "docker/Dockerfile.dockerignore lets neither {member}/ nor {member}/Cargo.toml into the context"
            );
        }
    }

    /// A plain `docker build` must stay the clean, reproducible build; only
    /// a build that asks for it (deploy) compiles incrementally.
    #[test]
    fn builds_are_clean_unless_they_ask_to_be_incremental() {
        let dockerfile = fs::read_to_string(crate::support::fs::project_root().join(DOCKERFILE)).unwrap();
        assert!(
            dockerfile.lines().any(|line| line.trim() == "ARG INCREMENTAL=0"),
            "docker/Dockerfile lacks `ARG INCREMENTAL=0`"
        );
        let app = AppIdentity {
            name: "guestbook".to_owned(),
            version: "0.1.0".to_owned(),
            port: 8080,
            source_url: String::new(),
        };
        let source = source(false, None);
        let incremental = ("INCREMENTAL".to_owned(), "1".to_owned());
        assert!(!release_build_args(&app, &source, BuildMode::default()).contains(&incremental));
        let mode = BuildMode { offline: false, incremental: true };
        assert!(release_build_args(&app, &source, mode).contains(&incremental));
    }

    #[test]
    fn the_test_stage_runs_the_command_test_docker_extends() {
        let dockerfile = fs::read_to_string(crate::support::fs::project_root().join(DOCKERFILE)).unwrap();
        let expected = format!(
            "CMD [{}]",
            CONTAINER_TEST_COMMAND.iter().map(|word| format!("\"{word}\"")).collect::<Vec<_>>().join(", ")
        );
        assert!(dockerfile.lines().any(|line| line.trim() == expected), "docker/Dockerfile lacks `{expected}`");
    }

    /// builder-image copies the host's toolchain into an image named after
    /// the Dockerfile's default, so the two versions must agree.
    #[test]
    fn the_rust_image_matches_the_pinned_toolchain() {
        let root = crate::support::fs::project_root();
        let base = BaseImages::from_dockerfile(&root).unwrap();
        let toolchain = fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
        let table: toml::Table = toml::from_str(&toolchain).unwrap();
        let channel = table["toolchain"]["channel"].as_str().unwrap();
        let tag_version = crate::image::builder::rust_version_of_image(&base.rust).unwrap();
        assert!(
            channel == tag_version || channel.starts_with(&format!("{tag_version}.")),
            "rust-toolchain.toml pins {channel}, docker/Dockerfile defaults to {}",
            base.rust
        );
    }
}
