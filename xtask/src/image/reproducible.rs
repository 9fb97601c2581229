//! The step after a build that makes image IDs reproducible.
//!
//! Why it exists: BuildKit in Docker 20.10 (BuildKit 0.8) writes
//! the wall-clock time into the image config (`created` and each history
//! entry), and an image ID is the digest of its config, so two builds with
//! byte-identical layers still get different IDs. BuildKit 0.11+ would take
//! SOURCE_DATE_EPOCH for those fields; 20.10 cannot. `docker import` and the
//! legacy builder stamp the current time as well. So after the build the
//! image is saved, its config's timestamps are set to SOURCE_DATE_EPOCH, and
//! it is loaded back: the ID is then the digest of a config that depends on
//! the sources only.

use std::fs;

use anyhow::{Context, Result, bail};
use xshell::cmd;

use crate::{
    image::docker::{image_id, remove_if_untagged, run_read},
    support::{cleanup, ctx::Ctx, fs::hex},
};

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
    if ctx.would(format_args!("run: {save}")) {
        let _ = ctx.would(format_args!(
            "set: created and history[].created to {created} in the image config; RepoTags to {}",
            tags.join(" ")
        ));
        let _ = ctx.would(format_args!("run: {load}"));
        let _ = ctx.would(format_args!("run: docker image rm {built_id}"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
