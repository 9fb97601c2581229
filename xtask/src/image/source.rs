//! Where an image comes from (commit, uncommitted changes, branch,
//! SOURCE_DATE_EPOCH) and the tags that name it.

use anyhow::{Context, Result};
use serde::Serialize;
use xshell::{Shell, cmd};

use crate::{
    image::build_args::BuildMode,
    support::{fs::hex, time::rfc3339},
};

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
}
