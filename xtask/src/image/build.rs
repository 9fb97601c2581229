//! `cargo xtask build-image`: the runtime image from docker/Dockerfile.
//!
//! It is tagged `<app>:git-<sha12>` (`-dirty` with uncommitted changes) and
//! `<app>:branch-<branch>`, labelled with the OCI revision, source, created
//! and version, and built with GIT_SHA and SOURCE_DATE_EPOCH (the commit
//! time) so `/version` names the commit. One commit gives one image ID: the
//! files carry the commit time, and the image config's timestamps are set to
//! it after the build (see `image::reproducible` for why Docker 20.10 needs that step).
//! `--incremental` (what deploys that build use) trades that for speed and
//! is tagged `<app>:git-<sha12>-incremental` only.
//!
//! `--offline` (or XTASK_OFFLINE=1, what CI sets) builds without network:
//! crates vendored on the host, `--network none`, and local base images
//! (`cargo xtask builder-image` makes them when missing). With network
//! nothing special is needed.

use std::time::Instant;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use crate::{
    config::AppConfig,
    image::{
        build_args::{AppIdentity, BuildMode, release_build_args},
        docker_build::{BuildKit, DockerBuild},
        offline::{Offline, prepare_build},
        reproducible::make_reproducible,
        smoke::{SmokeReport, smoke},
        source::{Source, image_tags},
    },
    support::{ctx::Ctx, events::Event, ui},
};

/// Build the runtime image: tagged by commit and branch, labelled, reproducible
#[derive(Debug, Args)]
pub struct BuildImage {
    #[command(flatten)]
    pub offline: Offline,
    /// Then run the image against a throwaway Postgres: /healthz, /readyz,
    /// /version, and a clean stop on SIGTERM
    #[arg(long)]
    pub smoke: bool,
    /// Ignore Docker's build cache (a clean build)
    #[arg(long, conflicts_with = "incremental")]
    pub no_cache: bool,
    /// Image repository (default: app.name in deploy.toml)
    #[arg(long)]
    pub name: Option<String>,
    /// Compile incrementally, reusing rustc's state from earlier builds
    /// (what `deploy` does): much faster after a small change, but not
    /// byte-for-byte reproducible, so tagged `git-<sha12>-incremental` only
    #[arg(long)]
    pub incremental: bool,
}

/// The result, printed as JSON with `--json`.
#[derive(Debug, Serialize)]
pub struct BuiltImage {
    /// The commit tag: the reference to use for this build.
    pub image: String,
    pub id: String,
    pub tags: Vec<String>,
    #[serde(flatten)]
    pub source: Source,
    pub created: String,
    pub offline: bool,
    pub smoke: Option<SmokeReport>,
}

/// What a build is asked for: the flags' value, and what `deploy` and `ci`
/// build.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub offline: bool,
    /// Run the smoke test of the built image.
    pub smoke: bool,
    pub no_cache: bool,
    /// The image repository (default: the app's name).
    pub name: Option<String>,
    /// Incremental compilation: fast, not byte-for-byte reproducible.
    pub incremental: bool,
}

impl BuildImage {
    pub fn request(self) -> BuildRequest {
        BuildRequest {
            offline: self.offline.enabled,
            smoke: self.smoke,
            no_cache: self.no_cache,
            name: self.name,
            incremental: self.incremental,
        }
    }

    pub fn run(self, ctx: &Ctx, app: &AppConfig) -> Result<()> {
        self.request().build(ctx, app).map(|_| ())
    }
}

impl BuildRequest {
    /// Builds (and reports) the image; returns its first tag, the reference
    /// to use for this build.
    pub fn build(&self, ctx: &Ctx, app: &AppConfig) -> Result<String> {
        let mut app = AppIdentity::load(&ctx.root, app)?;
        if let Some(name) = &self.name {
            app.name = name.clone();
        }
        let buildkit = BuildKit::find(&ctx.sh)?;
        let source = Source::read(&ctx.sh)?;
        let offline = prepare_build(ctx, self.offline)?;
        let mode = BuildMode { offline, incremental: self.incremental };
        let tags = image_tags(&app.name, &source, mode);
        if source.dirty {
            ui::warn("the working tree has uncommitted changes: the image is tagged -dirty");
        }
        ui::step(&format!("building {}{}", tags.join(", "), mode.announcement()));
        let started = Instant::now();
        let build = DockerBuild {
            context: ctx.root.clone(),
            stage: "runtime".to_owned(),
            build_args: release_build_args(&app, &source, mode),
            offline,
            no_cache: self.no_cache,
            iidfile: None,
            tags: Vec::new(),
        };
        let built_id = build.run(ctx, &buildkit)?;
        let id = make_reproducible(ctx, &built_id, &tags, &source.created())?;
        ui::success(&format!(
            "built {} in {}",
            tags.join(", "),
            crate::support::time::format_duration(started.elapsed())
        ));

        let smoke = if self.smoke { Some(smoke(ctx, &tags[0], &source.git_sha)?) } else { None };
        let image = tags[0].clone();
        // A dry run built nothing: it has no result to report.
        ctx.effect((), || {
            let built =
                BuiltImage { image: image.clone(), id, tags, created: source.created(), source, offline, smoke };
            if ctx.global.json {
                let result = serde_json::to_value(&built)?;
                Event::Result(result.as_object().cloned().unwrap_or_default()).emit();
            } else {
                ui::result(&format!("image: {}", built.image));
                ui::result(&format!("id: {}", built.id));
            }
            Ok(())
        })?;
        Ok(image)
    }
}
