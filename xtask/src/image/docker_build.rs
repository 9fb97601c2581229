//! `docker build` of docker/Dockerfile as a value: the BuildKit client that
//! runs it, the command it makes, and what the build context must hold.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use crate::{
    image::{DOCKER_HINT, DOCKERFILE, docker::run_progress},
    support::{ctx::Ctx, exec::require_tool, ui},
};

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
        ctx.effect((), || fs::create_dir_all(&work_dir).with_context(|| format!("creating {}", work_dir.display())))?;
        run_progress(ctx, &format!("docker build --target {}", self.stage), build.command(&ctx.sh, buildkit))?;
        ctx.effect(format!("<id of the {} image>", self.stage), || {
            let id = fs::read_to_string(&iidfile).with_context(|| format!("reading {}", iidfile.display()))?;
            let _ = fs::remove_file(&iidfile);
            Ok(id.trim().to_owned())
        })
    }
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
}
