//! Builds without network: `--offline`, the local base images (made by
//! `cargo xtask builder-image` when missing), the fallback to them when the
//! upstream ones cannot be pulled, and crates vendored on the host.

use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::cmd;

use crate::{
    image::{DOCKERFILE, docker::image_exists},
    support::{
        ctx::Ctx,
        exec::{SpawnOptions, StdoutTo, cargo, spawn_and_wait_with},
        fs::write_atomic,
        ui,
    },
};

/// Crates vendored for offline builds; the Dockerfile's `crates-vendored`
/// stage unpacks `<this>/crates.tar`, and its ignore file lets exactly that in.
pub const VENDOR_DIR: &str = "target/docker-vendor";
/// The vendored crates, as one archive in VENDOR_DIR (see `vendor_crates`).
pub const VENDOR_ARCHIVE: &str = "crates.tar";

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
/// `--offline` (or XTASK_OFFLINE) the local builder image, vendored crates
/// and the host's RDS CA bundle; otherwise upstream base images, unless they cannot be had.
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
        crate::image::rds_ca::prepare_offline_bundle(ctx)?;
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
    if ctx.would(format_args!("run: {pull}   (and build offline if it fails)")) {
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

/// Makes `target/docker-vendor/crates.tar` hold every crate of Cargo.lock,
/// for the Dockerfile's `crates-vendored` stage; skipped when it already
/// matches the lockfile. Cargo runs on the host, with the host's cache and
/// network settings (`CARGO_NET_OFFLINE=true` if the host is offline too).
///
/// One archive (which ADD unpacks) rather than the directory: BuildKit
/// checks every file of the context on every build, and the ~18,000 files
/// of the crates cost 0.8 s of each one; one file costs nothing.
///
/// Why vendoring and not the host's CARGO_HOME as a second build context:
/// `--build-context` needs Dockerfile frontend 1.4, which is pulled from
/// Docker Hub, and Docker 20.10's built-in frontend does not have it. A
/// directory inside the one context works with any BuildKit.
pub fn vendor_crates(ctx: &Ctx) -> Result<()> {
    let vendor_dir = ctx.root.join(VENDOR_DIR);
    let archive = vendor_dir.join(VENDOR_ARCHIVE);
    let partial = vendor_dir.join("crates.partial");
    let partial_archive = vendor_dir.join("crates.tar.partial");
    let stamp = vendor_dir.join("Cargo.lock");
    let mut cmd = cargo(&ctx.sh).args(["vendor", "--locked", "--respect-source-config"]);
    if ui::verbosity() != ui::Verbosity::Verbose {
        cmd = cmd.arg("--quiet");
    }
    let cmd = cmd.arg(&partial);
    if ctx.would(format_args!("run (unless {} matches Cargo.lock): {cmd}", archive.display())) {
        return Ok(());
    }
    fs::create_dir_all(&vendor_dir).with_context(|| format!("creating {}", vendor_dir.display()))?;
    // Two builds at once must not vendor into the same directory.
    let lock_path = vendor_dir.join("lock");
    let lock = fs::File::create(&lock_path).with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock().with_context(|| format!("locking {}", lock_path.display()))?;

    let lockfile = ctx.root.join("Cargo.lock");
    let current = fs::read(&lockfile).with_context(|| format!("reading {}", lockfile.display()))?;
    if archive.is_file() && fs::read(&stamp).is_ok_and(|vendored| vendored == current) {
        ui::detail(&format!("{} matches Cargo.lock", archive.display()));
        return Ok(());
    }
    ui::step(&format!("vendoring crates for the offline build into {VENDOR_DIR}/{VENDOR_ARCHIVE}"));
    let _ = fs::remove_dir_all(&partial);
    let _ = fs::remove_file(&stamp);
    ui::detail(&format!("$ {cmd}"));
    // cargo vendor prints a config snippet we do not need on stdout.
    let options = SpawnOptions { stdout: StdoutTo::Null, ..SpawnOptions::default() };
    let status = spawn_and_wait_with("cargo vendor", cmd, options)?;
    if !status.success() {
        let _ = fs::remove_dir_all(&partial);
        bail!(
            "cargo vendor failed ({status}); offline hosts need the crates in ~/.cargo/registry and CARGO_NET_OFFLINE=true"
        );
    }
    // The same crates make the same archive (names sorted, times and owners
    // fixed), so Docker's cache of the ADD survives a re-vendoring.
    let packed = ctx.run(cmd!(
        ctx.sh,
        "tar --create --file {partial_archive} --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --directory {partial} ."
    ));
    let _ = fs::remove_dir_all(&partial);
    if let Err(err) = packed {
        let _ = fs::remove_file(&partial_archive);
        return Err(err).context("packing the vendored crates (GNU tar)");
    }
    fs::rename(&partial_archive, &archive)
        .with_context(|| format!("renaming {} to {}", partial_archive.display(), archive.display()))?;
    // The directory earlier versions vendored into.
    let _ = fs::remove_dir_all(vendor_dir.join("crates"));
    write_atomic(&stamp, &current, 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
