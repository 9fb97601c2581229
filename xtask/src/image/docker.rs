//! Commands against the Docker daemon, and what it says about images and
//! containers: a build's progress, a quick command's output, an image's ID,
//! label and existence, and removing what a task made.

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell};

use crate::support::{
    cleanup,
    ctx::Ctx,
    exec::{SpawnOptions, StdoutTo, spawn_with_progress},
    ui,
};

/// Runs a command whose output is progress, not a result: its stdout goes to
/// our stderr (nowhere with `--quiet`), so stdout stays clean for `--json`.
/// A non-zero exit is an error. Interruptible like `Ctx::run_interruptible`;
/// on a terminal a spinner (`ui::progress`) stands in for the output.
pub fn run_progress(ctx: &Ctx, description: &str, cmd: Cmd<'_>) -> Result<()> {
    if ctx.would(format_args!("run: {cmd}")) {
        return Ok(());
    }
    ui::detail(&format!("$ {cmd}"));
    let stdout = if ui::verbosity() == ui::Verbosity::Quiet { StdoutTo::Null } else { StdoutTo::Stderr };
    let status = spawn_with_progress(description, cmd, SpawnOptions { stdout, ..SpawnOptions::default() })?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Runs a quick command that changes something and returns its stdout; in
/// dry-run only prints it.
pub fn run_read(ctx: &Ctx, cmd: Cmd<'_>) -> Result<String> {
    if ctx.would(format_args!("run: {cmd}")) {
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
        // A missing image is an answer the caller handles; docker's own
        // "No such image" line would be noise beside it.
        .ignore_stderr()
        .read()
        .with_context(|| format!("inspecting image {image} (not on this machine? `docker images` lists them)"))?;
    Ok(id.trim().to_owned())
}

/// Removes an image this task made and no longer needs (the build's
/// intermediate, a superseded test image), unless something has tagged it
/// meanwhile: then it is not ours to remove.
pub fn remove_if_untagged(sh: &Shell, id: &str) {
    if is_untagged(sh, id) {
        let _ = sh.cmd("docker").args(["image", "rm", id]).quiet().ignore_stdout().ignore_stderr().run();
    }
}

/// Whether an image exists and no tag names it.
pub fn is_untagged(sh: &Shell, id: &str) -> bool {
    let tag_count = sh
        .cmd("docker")
        .args(["image", "inspect", "--format", "{{len .RepoTags}}", id])
        .quiet()
        .ignore_stderr()
        .read()
        .unwrap_or_default();
    tag_count.trim() == "0"
}

/// `docker rm -f NAME` when the guard drops or xtask is interrupted; `--rm`
/// alone is not enough when the docker CLI itself is killed. A dry run
/// started no container and registers nothing.
pub fn remove_container_on_exit(ctx: &Ctx, name: &str) -> Option<cleanup::CleanupGuard> {
    let name = name.to_owned();
    ctx.on_cleanup(format!("remove the container {name}"), move || {
        let _ = std::process::Command::new("docker")
            .args(["rm", "--force", &name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    })
}

/// A file of an image, read by copying it out of a created (never started,
/// so any entry point will do) container; `None` when the image has no
/// such file.
pub fn file_in_image(ctx: &Ctx, image: &str, path: &str) -> Result<Option<Vec<u8>>> {
    let sh = &ctx.sh;
    let container = sh
        .cmd("docker")
        .args(["create", "--entrypoint", "/never-run", image])
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| format!("creating a container of {image} to read {path} (docker create)"))?;
    let container = container.trim().to_owned();
    let copied = sh.cmd("docker").args(["cp", &format!("{container}:{path}"), "-"]).quiet().ignore_stderr().output();
    let _ = sh.cmd("docker").args(["rm", &container]).quiet().ignore_stdout().ignore_stderr().run();
    match copied {
        Ok(output) if output.status.success() => Ok(Some(tar_member(&output.stdout))),
        _ => Ok(None),
    }
}

/// The content of the one file of a tar stream (what `docker cp ... -`
/// writes): after the 512-byte header, as many bytes as the header's size
/// field (octal, bytes 124..136) says.
fn tar_member(tar: &[u8]) -> Vec<u8> {
    let size = tar
        .get(124..136)
        .and_then(|field| std::str::from_utf8(field).ok())
        .and_then(|field| usize::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok())
        .unwrap_or(0);
    tar.get(512..512 + size).unwrap_or_default().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_file_of_a_tar_stream_is_read_by_its_size() {
        let mut tar = vec![0u8; 512];
        tar[124..136].copy_from_slice(b"00000000005\0");
        tar.extend_from_slice(b"hello, and padding");
        assert_eq!(tar_member(&tar), b"hello");
        assert_eq!(tar_member(b"short"), b"");
    }
}
