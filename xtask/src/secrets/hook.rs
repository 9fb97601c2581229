//! `cargo xtask install-hooks`: the git pre-commit hook that keeps decrypted
//! secrets and broken encrypted files out of commits. The hook itself is the
//! POSIX sh script `pre-commit.sh` next to this file, so a commit never waits
//! for cargo.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::support::ui;

/// The script written to `.git/hooks/pre-commit`.
pub const PRE_COMMIT_HOOK: &str = include_str!("pre-commit.sh");

/// Identifies a hook we wrote, of any version, so it can be upgraded
/// without `--force`.
const HOOK_MARKER: &str = "# xtask-secrets-hook";

/// Install the git pre-commit hook that refuses decrypted secrets
#[derive(Debug, Args)]
pub struct InstallHooks {
    /// Replace an existing pre-commit hook that xtask did not write
    #[arg(long)]
    pub force: bool,
    /// The repository to install into (default: this project)
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
}

impl InstallHooks {
    pub fn run(self, ctx: &crate::support::ctx::Ctx) -> Result<()> {
        let repo = self.repo.unwrap_or_else(|| ctx.root.clone());
        let hooks_dir = hooks_dir(&repo)?;
        let hook_path = hooks_dir.join("pre-commit");
        let existing = match fs::read_to_string(&hook_path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            // A binary hook is someone else's too.
            Err(err) if err.kind() == std::io::ErrorKind::InvalidData => Some(String::new()),
            Err(err) => {
                return Err(err).with_context(|| format!("reading {}", hook_path.display()));
            }
        };
        match &existing {
            Some(text) if text == PRE_COMMIT_HOOK => {
                ui::success(&format!("{} is already installed and up to date", hook_path.display()));
                return Ok(());
            }
            Some(text) if !text.contains(HOOK_MARKER) && !self.force => bail!(
                "{} exists and was not written by xtask: merge it by hand, or pass --force to replace it",
                hook_path.display()
            ),
            _ => {}
        }
        if ctx.would(format_args!("write {} (mode 0755)", hook_path.display())) {
            return Ok(());
        }
        fs::create_dir_all(&hooks_dir).with_context(|| format!("creating {}", hooks_dir.display()))?;
        crate::support::fs::write_atomic(&hook_path, PRE_COMMIT_HOOK.as_bytes(), 0o755)?;
        // The umask may have taken bits away, and git skips a hook that is not executable.
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&hook_path, fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", hook_path.display()))?;
        ui::success(&format!(
            "installed {}: commits of secrets.tfvars, *.tfvars.plain and broken *.enc files are refused",
            hook_path.display()
        ));
        Ok(())
    }
}

/// The hooks directory git uses for `repo` (this honours `core.hooksPath`
/// and linked worktrees).
fn hooks_dir(repo: &Path) -> Result<PathBuf> {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--path-format=absolute", "--git-path", "hooks"])
        .output()
        .context("running git (apt-get install git)")?;
    if !output.status.success() {
        bail!("{} is not a git repository: {}", repo.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hook_is_a_posix_sh_script_that_parses() {
        assert!(PRE_COMMIT_HOOK.starts_with("#!/bin/sh\n"));
        assert!(PRE_COMMIT_HOOK.contains(HOOK_MARKER));
        let status = Command::new("sh").args(["-n", "-c", PRE_COMMIT_HOOK]).status().unwrap();
        assert!(status.success());
    }
}
