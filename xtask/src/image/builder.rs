//! `cargo xtask builder-image`: the Dockerfile's base images, made on this
//! machine without a registry, so that the unmodified Dockerfile builds
//! offline.
//!
//! `rust:<version>-slim-bookworm` becomes a Debian bookworm root filesystem
//! from Debian's packages (`debootstrap --variant=minbase` plus
//! ca-certificates, gcc and libc6-dev for linking) with the host's active Rust
//! toolchain copied to /usr/local/rust (the x86_64-unknown-linux-gnu standard
//! library only, no documentation); `debian:bookworm-slim` becomes the plain
//! minbase system without documentation. Both are made with `docker import`
//! and tagged with exactly the names the Dockerfile's `ARG ..._IMAGE=`
//! defaults use. Someone with network access never needs this: the real
//! images are pulled.
//!
//! The debootstrap results are cached as tarballs under target/builder-image
//! (with the downloaded .debs), so a second run, or `--force`, only imports.

use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use clap::Args;
use xshell::{Shell, cmd};

use crate::{
    image::{
        DOCKER_HINT,
        docker::{image_exists, image_id, run_progress},
        offline::{BaseImages, DEFAULT_DEBIAN_MIRROR},
    },
    support::{cleanup, ctx::Ctx, ui},
};

/// Make the Dockerfile's base images locally from Debian packages and this
/// machine's Rust toolchain (for offline builds)
#[derive(Debug, Args)]
pub struct BuilderImage {
    /// Import the images again even when they exist (the debootstrap
    /// tarballs under target/builder-image are reused; delete that directory
    /// to bootstrap afresh)
    #[arg(long)]
    pub force: bool,
    /// Debian mirror for debootstrap
    #[arg(long, env = "XTASK_DEBIAN_MIRROR", default_value = DEFAULT_DEBIAN_MIRROR)]
    pub mirror: String,
}

/// The packages the build stage needs on top of minbase: a linker driver and
/// glibc's static libraries, and the CA bundle the runtime image copies.
const BUILD_PACKAGES: &str = "ca-certificates,gcc,libc6-dev";
/// Where the toolchain goes in the image; PATH points at its bin/.
const TOOLCHAIN_DIR: &str = "/usr/local/rust";
/// Marks an image as made here, not pulled.
const STAND_IN_LABEL: &str = "com.example.xtask.builder-image";
const PATH: &str =
    "/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl BuilderImage {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let base = BaseImages::from_dockerfile(&ctx.root)?;
        let suite = debian_suite(&base.rust)?;
        let rust_version = rust_version_of_image(&base.rust)?;
        let toolchain = Toolchain::active(&ctx.sh)?;
        if !(toolchain.version == rust_version || toolchain.version.starts_with(&format!("{rust_version}."))) {
            bail!(
                "docker/Dockerfile builds with {} but the active toolchain is Rust {}: the image would lie about its \
                 version; align RUST_IMAGE in docker/Dockerfile with rust-toolchain.toml",
                base.rust,
                toolchain.version
            );
        }
        let wanted: Vec<&str> = [base.rust.as_str(), base.debian.as_str()]
            .into_iter()
            .filter(|image| self.force || !image_exists(&ctx.sh, image))
            .collect();
        if wanted.is_empty() {
            ui::success(&format!("{} and {} are present (--force makes them again)", base.rust, base.debian));
            return Ok(());
        }
        require_tools_and_root(ctx)?;

        let dir = ctx.root.join("target/builder-image");
        let _lock = ctx.effect(None, || lock_dir(&dir).map(Some))?;
        // Another xtask may have made them while this one waited for the lock
        // (tests build images in parallel).
        let wanted: Vec<&str> =
            wanted.into_iter().filter(|image| self.force || !image_exists(&ctx.sh, image)).collect();
        if wanted.is_empty() {
            ui::success(&format!("{} and {} were made meanwhile", base.rust, base.debian));
            return Ok(());
        }
        let bootstrap = Bootstrap { mirror: &self.mirror, suite: &suite, cache_dir: dir.join("debs") };
        if wanted.contains(&base.debian.as_str()) {
            let rootfs = bootstrap.rootfs_tarball(ctx, &dir.join(format!("debian-{suite}-minbase.tar")), None)?;
            let changes = [
                format!("ENV PATH={PATH}"),
                "ENV LANG=C.UTF-8".to_owned(),
                "CMD [\"bash\"]".to_owned(),
                format!("LABEL {STAND_IN_LABEL}=\"debian {suite} minbase (debootstrap)\""),
            ];
            import(ctx, &rootfs, &base.debian, &changes)?;
        }
        if wanted.contains(&base.rust.as_str()) {
            let rootfs =
                bootstrap.rootfs_tarball(ctx, &dir.join(format!("debian-{suite}-build.tar")), Some(BUILD_PACKAGES))?;
            let with_toolchain = dir.join(format!("rust-{}-{suite}.tar", toolchain.version));
            toolchain.append_to(ctx, &rootfs, &with_toolchain)?;
            let changes = [
                format!("ENV PATH={PATH}"),
                "ENV CARGO_HOME=/usr/local/cargo".to_owned(),
                format!("ENV RUST_VERSION={}", toolchain.version),
                "ENV LANG=C.UTF-8".to_owned(),
                "CMD [\"bash\"]".to_owned(),
                format!(
                    "LABEL {STAND_IN_LABEL}=\"debian {suite} minbase + {BUILD_PACKAGES} (debootstrap), rust {} from the host\"",
                    toolchain.version
                ),
            ];
            let imported = import(ctx, &with_toolchain, &base.rust, &changes);
            ctx.effect((), || {
                let _ = fs::remove_file(&with_toolchain);
                Ok(())
            })?;
            imported?;
        }
        ui::success(&format!("made {} locally", wanted.join(" and ")));
        Ok(())
    }
}

/// `1.95` from `rust:1.95-slim-bookworm`.
pub fn rust_version_of_image(image: &str) -> Result<String> {
    let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or_default();
    let version = tag.split('-').next().unwrap_or_default();
    if version.is_empty() || !version.chars().all(|c| c.is_ascii_digit() || c == '.') {
        bail!("cannot read a Rust version from the image name {image:?} (expected rust:<version>-slim-<suite>)");
    }
    Ok(version.to_owned())
}

/// `bookworm` from `rust:1.95-slim-bookworm`.
fn debian_suite(image: &str) -> Result<String> {
    image
        .rsplit_once('-')
        .map(|(_, suite)| suite.to_owned())
        .filter(|suite| !suite.is_empty() && suite.chars().all(|c| c.is_ascii_lowercase()))
        .with_context(|| format!("cannot read a Debian suite from the image name {image:?}"))
}

/// debootstrap makes device nodes and runs package scripts in a chroot:
/// root only. All missing things are reported at once.
fn require_tools_and_root(ctx: &Ctx) -> Result<()> {
    let mut missing = Vec::new();
    for (tool, hint) in
        [("debootstrap", "`apt-get install debootstrap`"), ("tar", "`apt-get install tar`"), ("docker", DOCKER_HINT)]
    {
        if which::which(tool).is_err() {
            missing.push(format!("`{tool}` is not on PATH: {hint}"));
        }
    }
    // Only a real run needs root: a dry run bootstraps nothing.
    let needs_root = ctx.effect(false, || {
        let uid = fs::metadata("/proc/self").map(|metadata| metadata.uid()).unwrap_or(u32::MAX);
        Ok(uid != 0)
    })?;
    if needs_root {
        missing.push("debootstrap needs root: run `sudo -E cargo xtask builder-image`".to_owned());
    }
    if !missing.is_empty() {
        bail!("builder-image cannot run here:\n  {}", missing.join("\n  "));
    }
    Ok(())
}

/// Serialises builder-image runs (a test and a person, say): the second waits.
fn lock_dir(dir: &Path) -> Result<fs::File> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("lock");
    let file = fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    file.lock().with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

struct Bootstrap<'a> {
    mirror: &'a str,
    suite: &'a str,
    /// Downloaded .debs, shared by both root filesystems.
    cache_dir: PathBuf,
}

impl Bootstrap<'_> {
    /// The cached tarball of a minbase root filesystem (plus `include`),
    /// made with debootstrap when it is missing. Member names carry no `./`
    /// so the toolchain can be appended under a prefix.
    fn rootfs_tarball(&self, ctx: &Ctx, tarball: &Path, include: Option<&str>) -> Result<PathBuf> {
        if tarball.exists() {
            ui::detail(&format!("reusing {}", tarball.display()));
            return Ok(tarball.to_path_buf());
        }
        let rootfs = tarball.with_extension("rootfs");
        let sh = &ctx.sh;
        let (mirror, suite, cache_dir) = (self.mirror, self.suite, &self.cache_dir);
        let include_arg = include.map(|packages| format!("--include={packages}"));
        let debootstrap = cmd!(
            sh,
            "debootstrap --variant=minbase --cache-dir={cache_dir} {include_arg...} {suite} {rootfs} {mirror}"
        );
        ui::step(&format!(
            "bootstrapping Debian {suite} (minbase{}) into {}",
            include.map_or(String::new(), |include| format!(" + {include}")),
            rootfs.display()
        ));
        if ctx.would(format_args!("run: {debootstrap}")) {
            let _ = ctx.would(format_args!(
                "run: tar --create --file {} --numeric-owner --directory {} <top-level entries>",
                tarball.display(),
                rootfs.display()
            ));
            return Ok(tarball.to_path_buf());
        }
        fs::create_dir_all(cache_dir).with_context(|| format!("creating {}", cache_dir.display()))?;
        remove_rootfs(&rootfs)?;
        let rootfs_for_cleanup = rootfs.clone();
        let _remove_rootfs = cleanup::register(format!("remove {}", rootfs.display()), move || {
            let _ = remove_rootfs(&rootfs_for_cleanup);
        });
        run_progress(ctx, "debootstrap", debootstrap)?;
        slim(&rootfs)?;
        let partial = tarball.with_extension("tar.partial");
        let mut entries: Vec<String> = fs::read_dir(&rootfs)
            .with_context(|| format!("listing {}", rootfs.display()))?
            .map(|entry| entry.map(|entry| entry.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()
            .with_context(|| format!("listing {}", rootfs.display()))?;
        entries.sort();
        run_progress(
            ctx,
            "tar",
            cmd!(sh, "tar --create --file {partial} --numeric-owner --directory {rootfs} {entries...}"),
        )?;
        fs::rename(&partial, tarball).with_context(|| format!("renaming {}", partial.display()))?;
        Ok(tarball.to_path_buf())
    }
}

/// Removes what an image does not need: downloaded packages, package lists,
/// documentation, logs, device nodes (Docker provides /dev), and the host's
/// resolver settings and hostname, which debootstrap copies in.
fn slim(rootfs: &Path) -> Result<()> {
    for dir in [
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
        "var/log",
        "dev",
    ] {
        let path = rootfs.join(dir);
        let Ok(entries) = fs::read_dir(&path) else { continue };
        for entry in entries.flatten() {
            let entry_path = entry.path();
            // Keep apt's partial/ and lock file layout intact.
            if entry_path.is_dir() && !entry_path.is_symlink() && dir.starts_with("var/") {
                continue;
            }
            let removed = if entry_path.is_dir() && !entry_path.is_symlink() {
                fs::remove_dir_all(&entry_path)
            } else {
                fs::remove_file(&entry_path)
            };
            removed.with_context(|| format!("removing {}", entry_path.display()))?;
        }
    }
    for file in ["etc/resolv.conf", "etc/hostname"] {
        let path = rootfs.join(file);
        if path.exists() {
            fs::write(&path, "").with_context(|| format!("emptying {}", path.display()))?;
        }
    }
    Ok(())
}

/// Removes a root filesystem directory, unmounting anything an interrupted
/// debootstrap left mounted inside first (removing files under a mounted
/// /proc or /sys must never be attempted).
fn remove_rootfs(rootfs: &Path) -> Result<()> {
    if !rootfs.exists() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = fs::canonicalize(rootfs).unwrap_or_else(|_| rootfs.to_path_buf());
    let mut inside: Vec<&str> = mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .filter(|mount_point| Path::new(mount_point).starts_with(&prefix))
        .collect();
    inside.sort_by_key(|mount_point| std::cmp::Reverse(mount_point.len()));
    for mount_point in &inside {
        let status = std::process::Command::new("umount").args(["--lazy", mount_point]).status();
        if !status.is_ok_and(|status| status.success()) {
            bail!("{mount_point} is still mounted; unmount it, then remove {}", rootfs.display());
        }
    }
    fs::remove_dir_all(rootfs).with_context(|| format!("removing {}", rootfs.display()))
}

/// `docker import` with Dockerfile instructions; replaces an image we made
/// before (the old one is removed once nothing else tags it).
fn import(ctx: &Ctx, tarball: &Path, image: &str, changes: &[String]) -> Result<()> {
    let sh = &ctx.sh;
    let previous = image_exists(sh, image).then(|| image_id(sh, image).ok()).flatten();
    let mut cmd = cmd!(sh, "docker import");
    for change in changes {
        cmd = cmd.arg("--change").arg(change);
    }
    ui::step(&format!("importing {image}"));
    run_progress(ctx, "docker import", cmd.arg(tarball).arg(image))?;
    if let Some(previous) = previous {
        ctx.effect((), || {
            remove_if_unused_stand_in(sh, &previous, image);
            Ok(())
        })?;
    }
    Ok(())
}

/// True when the image is one this task made (it carries our label).
pub fn is_stand_in(sh: &Shell, image: &str) -> bool {
    let label = sh
        .cmd("docker")
        .args(["image", "inspect", "--format", &format!("{{{{index .Config.Labels \"{STAND_IN_LABEL}\"}}}}"), image])
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    !label.trim().is_empty() && label.trim() != "<no value>"
}

fn remove_if_unused_stand_in(sh: &Shell, id: &str, image: &str) {
    if crate::image::docker::is_untagged(sh, id) && is_stand_in(sh, id) {
        ui::detail(&format!("removing the previous {image} ({id})"));
        crate::image::docker::remove_if_untagged(sh, id);
    }
}

/// The toolchain that builds this project on the host (rust-toolchain.toml
/// applies, since the shell runs in the project root).
struct Toolchain {
    sysroot: PathBuf,
    /// `1.95.0`
    version: String,
}

impl Toolchain {
    fn active(sh: &Shell) -> Result<Toolchain> {
        let sysroot = cmd!(sh, "rustc --print sysroot").quiet().read().context("asking rustc for its sysroot")?;
        let version = cmd!(sh, "rustc --version").quiet().read().context("asking rustc for its version")?;
        let version = version
            .split_whitespace()
            .nth(1)
            .with_context(|| format!("cannot read a version from `rustc --version`: {version:?}"))?
            .to_owned();
        Ok(Toolchain { sysroot: PathBuf::from(sysroot.trim()), version })
    }

    /// Copies the rootfs tarball and appends the toolchain under
    /// /usr/local/rust: bin/, lib/ (rustc's libraries and the
    /// x86_64-unknown-linux-gnu std), libexec/, etc/; not the documentation.
    /// The `S` flag keeps symlink targets as they are.
    fn append_to(&self, ctx: &Ctx, rootfs: &Path, output: &Path) -> Result<()> {
        let sh = &ctx.sh;
        let sysroot = &self.sysroot;
        // Exclusions are positional in GNU tar: they go before the files.
        let mut excludes = vec!["--exclude=./share/doc".to_owned(), "--exclude=./lib/rustlib/src".to_owned()];
        if let Ok(entries) = fs::read_dir(sysroot.join("lib/rustlib")) {
            for entry in entries.flatten() {
                let target = entry.file_name().to_string_lossy().into_owned();
                if entry.path().join("lib").is_dir() && target != "x86_64-unknown-linux-gnu" {
                    excludes.push(format!("--exclude=./lib/rustlib/{target}"));
                }
            }
        }
        let transform = format!("--transform=s,^\\.,.{TOOLCHAIN_DIR},S");
        let append = cmd!(
            sh,
            "tar --append --file {output} --numeric-owner --owner=0 --group=0 {excludes...} {transform} --directory {sysroot} ."
        );
        ui::step(&format!("adding Rust {} from {}", self.version, sysroot.display()));
        if ctx.would(format_args!("copy: {} to {}", rootfs.display(), output.display())) {
            let _ = ctx.would(format_args!("run: {append}"));
            return Ok(());
        }
        fs::copy(rootfs, output).with_context(|| format!("copying {} to {}", rootfs.display(), output.display()))?;
        run_progress(ctx, "tar --append", append)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_suites_come_from_the_image_name() {
        assert_eq!(rust_version_of_image("rust:1.95-slim-bookworm").unwrap(), "1.95");
        assert_eq!(rust_version_of_image("docker.io/library/rust:1.95.0-slim-bookworm").unwrap(), "1.95.0");
        assert_eq!(debian_suite("rust:1.95-slim-bookworm").unwrap(), "bookworm");
        assert!(rust_version_of_image("rust:latest").is_err());
    }
}
