//! What a release build is given: the app's identity (name, version, port,
//! source URL), how it is compiled (`BuildMode`), and the build arguments
//! and labels that follow from them.

use std::{fs, path::Path};

use anyhow::{Context, Result};

use crate::{config::AppConfig, image::source::Source};

/// What the runtime image is labelled with, from deploy.toml and Cargo.toml.
#[derive(Debug, Clone)]
pub struct AppIdentity {
    pub name: String,
    pub version: String,
    pub port: u16,
    pub source_url: String,
}

impl AppIdentity {
    /// The app of `deploy.toml` (`app`, read once by the command line) and
    /// its version and repository from the manifests under `root`.
    pub fn load(root: &Path, app: &AppConfig) -> Result<AppIdentity> {
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
        Ok(AppIdentity { name: app.name.get_ref().clone(), version, port: app.port, source_url })
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
/// OCI labels, where crates and the RDS CA bundle come from, and whether to
/// compile incrementally.
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
    args.extend(crate::image::rds_ca::build_arg(mode.offline));
    if mode.incremental {
        args.push(("INCREMENTAL".to_owned(), "1".to_owned()));
    }
    args
}

/// `CRATES=vendored` for offline builds; online builds keep the default.
pub fn crates_build_arg(offline: bool) -> Option<(String, String)> {
    offline.then(|| ("CRATES".to_owned(), "vendored".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DOCKERFILE;

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
        let source = Source {
            git_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            dirty: false,
            dirty_id: None,
            branch: None,
            source_date_epoch: 1_700_000_000,
        };
        let incremental = ("INCREMENTAL".to_owned(), "1".to_owned());
        assert!(!release_build_args(&app, &source, BuildMode::default()).contains(&incremental));
        let mode = BuildMode { offline: false, incremental: true };
        assert!(release_build_args(&app, &source, mode).contains(&incremental));
    }
}
