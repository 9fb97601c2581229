//! `cargo xtask bench image`: what the image costs and how fast it builds.
//!
//! - the runtime image's size next to the stripped binary's (goal: the
//!   image is at most 1.15 times the binary), and the same binary in a
//!   Debian-slim image (the Dockerfile's `runtime-debian` stage);
//! - a cold build (`--no-cache`: every stage, dependencies included, but not
//!   the base image) against a rebuild after editing one .rs file of the app
//!   (goal: at most a quarter of the cold build), in the same run;
//! - two clean builds of the same sources: their image IDs (goal: equal).
//!
//! The builds run offline (vendored crates, `--network none`) so network
//! speed stays out of the figures, and in a copy of the build context under
//! target/bench-image: editing a file there cannot disturb the working tree.

use std::{
    fs,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use xshell::cmd;

use crate::{
    bench::figure::Figure,
    config::AppConfig,
    image::{
        build_args::{AppIdentity, BuildMode, release_build_args},
        docker::image_exists,
        docker_build::{BuildKit, DockerBuild, workspace_members},
        offline::{BaseImages, VENDOR_ARCHIVE, VENDOR_DIR, vendor_crates},
        reproducible::make_reproducible,
        source::Source,
    },
    support::{ctx::Ctx, ui},
};

pub fn image(ctx: &Ctx, app: &AppConfig) -> Result<Vec<Figure>> {
    let sh = &ctx.sh;
    let base = BaseImages::from_dockerfile(&ctx.root)?;
    for image in [&base.rust, &base.debian] {
        if !image_exists(sh, image) {
            anyhow::bail!("{image} is missing: make the base images with `cargo xtask builder-image`");
        }
    }
    let app = AppIdentity::load(&ctx.root, app)?;
    let source = Source::read(sh)?;
    let buildkit = BuildKit::find(sh)?;
    vendor_crates(ctx)?;
    crate::image::rds_ca::prepare_offline_bundle(ctx)?;
    let bench_dir = ctx.root.join("target/bench-image");
    let context = bench_dir.join("context");
    copy_build_context(&ctx.root, &context)?;
    let repository = format!("{}-bench", app.name);
    let created = source.created();
    let build = |stage: &str, no_cache: bool| DockerBuild {
        context: context.clone(),
        stage: stage.to_owned(),
        build_args: release_build_args(&app, &source, BuildMode { offline: true, incremental: false }),
        offline: true,
        no_cache,
        iidfile: None,
        tags: Vec::new(),
    };
    let timed = |description: &str, build: DockerBuild, tag: &str| -> Result<(Duration, String)> {
        ui::step(description);
        let started = Instant::now();
        let built_id = build.run(ctx, &buildkit)?;
        let elapsed = started.elapsed();
        let id = make_reproducible(ctx, &built_id, &[format!("{repository}:{tag}")], &created)?;
        ui::info(&format!("{description}: {} -> {id}", crate::support::time::format_duration(elapsed)));
        Ok((elapsed, id))
    };

    let (cold, first_id) = timed("clean build 1 (cold: --no-cache)", build("runtime", true), "clean-1")?;
    let edited = context.join("app/src/lib.rs");
    let original = fs::read_to_string(&edited).with_context(|| format!("reading {}", edited.display()))?;
    fs::write(&edited, format!("{original}\n// edited by `cargo xtask bench image`\n"))
        .with_context(|| format!("editing {}", edited.display()))?;
    let (rebuild, _) = timed("rebuild after editing app/src/lib.rs", build("runtime", false), "rebuild")?;
    fs::write(&edited, &original).with_context(|| format!("restoring {}", edited.display()))?;
    let (_, second_id) = timed("clean build 2 (--no-cache)", build("runtime", true), "clean-2")?;
    let (_, debian_id) = timed("the same binary on Debian slim", build("runtime-debian", false), "debian")?;

    let runtime_size = image_size(ctx, &first_id)?;
    let debian_size = image_size(ctx, &debian_id)?;
    let binary_size = binary_size(ctx, &first_id)?;
    for tag in ["clean-1", "rebuild", "clean-2", "debian"] {
        let reference = format!("{repository}:{tag}");
        let _ = cmd!(sh, "docker image rm {reference}").quiet().ignore_stdout().ignore_stderr().run();
    }
    let _ = fs::remove_dir_all(&bench_dir);

    let ratio = runtime_size as f64 / binary_size as f64;
    let rebuild_share = rebuild.as_secs_f64() / cold.as_secs_f64();
    let short = |id: &str| id.chars().take(19).collect::<String>();
    Ok(vec![
        Figure {
            name: "stripped app binary".to_owned(),
            value: megabytes(binary_size),
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "runtime image (scratch)".to_owned(),
            value: format!("{} ({ratio:.2}x)", megabytes(runtime_size)),
            goal: "<= 1.15x binary".to_owned(),
            pass: Some(ratio <= 1.15),
        },
        Figure {
            name: "same binary on Debian slim".to_owned(),
            value: format!("{} ({:.1}x)", megabytes(debian_size), debian_size as f64 / binary_size as f64),
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "cold image build (--no-cache)".to_owned(),
            value: crate::support::time::format_duration(cold),
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "rebuild after editing one .rs".to_owned(),
            value: format!("{} ({rebuild_share:.2}x)", crate::support::time::format_duration(rebuild)),
            goal: "<= 0.25x cold".to_owned(),
            pass: Some(rebuild_share <= 0.25),
        },
        Figure { name: "clean build 1 image ID".to_owned(), value: short(&first_id), goal: "-".to_owned(), pass: None },
        Figure {
            name: "clean build 2 image ID".to_owned(),
            value: short(&second_id),
            goal: "= build 1".to_owned(),
            pass: Some(first_id == second_id),
        },
    ])
}

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn image_size(ctx: &Ctx, id: &str) -> Result<u64> {
    let size = ctx.sh.cmd("docker").args(["image", "inspect", "--format", "{{.Size}}", id]).quiet().read()?;
    size.trim().parse().with_context(|| format!("docker image inspect printed {size:?} as the size"))
}

/// The size of /app in the image.
fn binary_size(ctx: &Ctx, id: &str) -> Result<u64> {
    let binary = crate::image::docker::file_in_image(ctx, id, "/app")?.with_context(|| format!("{id} has no /app"))?;
    Ok(binary.len() as u64)
}

/// Copies what docker/Dockerfile.dockerignore lets into the context: the
/// workspace manifests, the lockfile, docker/, app/ and testkit/, plus
/// hard links to the vendored crates.
fn copy_build_context(root: &Path, context: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(context);
    fs::create_dir_all(context).with_context(|| format!("creating {}", context.display()))?;
    for file in ["Cargo.toml", "Cargo.lock"] {
        fs::copy(root.join(file), context.join(file)).with_context(|| format!("copying {file}"))?;
    }
    for dir in ["docker", "app", "testkit"] {
        copy_tree(&root.join(dir), &context.join(dir))?;
    }
    for member in workspace_members(root)? {
        let manifest = Path::new(&member).join("Cargo.toml");
        if !context.join(&manifest).exists() {
            fs::create_dir_all(context.join(&member)).with_context(|| format!("creating {member}"))?;
            fs::copy(root.join(&manifest), context.join(&manifest))
                .with_context(|| format!("copying {}", manifest.display()))?;
        }
    }
    let bundle = Path::new(crate::image::rds_ca::BUNDLE);
    let bundle_dir = context.join(bundle.parent().expect("the bundle has a directory"));
    fs::create_dir_all(&bundle_dir).with_context(|| format!("creating {}", bundle_dir.display()))?;
    fs::copy(root.join(bundle), context.join(bundle)).with_context(|| format!("copying {}", bundle.display()))?;
    let archive = Path::new(VENDOR_DIR).join(VENDOR_ARCHIVE);
    fs::create_dir_all(context.join(VENDOR_DIR)).with_context(|| format!("creating {VENDOR_DIR}"))?;
    fs::hard_link(root.join(&archive), context.join(&archive))
        .or_else(|_| fs::copy(root.join(&archive), context.join(&archive)).map(|_| ()))
        .with_context(|| format!("copying {}", archive.display()))
}

/// Copies one of the project's directories, skipping `target/` as the
/// ignore file does.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry.with_context(|| format!("listing {}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_tree(&source, &target)?;
            }
        } else {
            fs::copy(&source, &target).with_context(|| format!("copying {}", source.display()))?;
        }
    }
    Ok(())
}
