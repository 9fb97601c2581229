//! The sandbox's registry: its only login (the one moto's ECR hands out,
//! in an htpasswd file) and its configuration, which sends every manifest
//! push to the sync.

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::sync;
use crate::support::fs::write_atomic;

/// `htpasswd -B -i -n USER` with the password on stdin, never in argv.
pub(super) fn write_htpasswd(path: &Path, user: &str, password: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut child = Command::new("htpasswd")
        .args(["-B", "-i", "-n", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running htpasswd")?;
    // A write error (an htpasswd that exits without reading) is reported
    // through its exit status and stderr below, which say why.
    let written = child.stdin.take().context("htpasswd stdin")?.write_all(password.as_bytes());
    let output = child.wait_with_output().context("waiting for htpasswd")?;
    if !output.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    written.context("writing the password to htpasswd")?;
    write_atomic(path, &output.stdout, 0o600)
}

/// The registry's configuration: htpasswd auth, storage under the sandbox
/// directory, and a notification for every manifest push sent to the sync.
pub(super) fn registry_config(storage: &Path, htpasswd: &Path, registry_address: &str, sync_address: &str) -> String {
    // JSON strings are valid YAML scalars, whatever the path contains.
    let quote = |path: &Path| json!(path.display().to_string()).to_string();
    format!(
        r#"version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {registry_address}
auth:
  htpasswd:
    realm: xtask-sandbox
    path: {htpasswd}
notifications:
  endpoints:
    - name: xtask-sandbox-sync
      url: http://{sync_address}{events}
      timeout: 5s
      threshold: 3
      backoff: 1s
      ignore:
        mediatypes:
          - application/octet-stream
        actions:
          - pull
"#,
        storage = quote(storage),
        htpasswd = quote(htpasswd),
        events = sync::EVENTS_PATH,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_notifies_the_sync_of_manifest_pushes_only() {
        let dir = Path::new("/tmp/sand box/registry");
        let config = registry_config(&dir.join("storage"), &dir.join("htpasswd"), "127.0.0.1:5055", "127.0.0.1:6000");
        assert!(config.contains("addr: 127.0.0.1:5055"), "{config}");
        assert!(config.contains("url: http://127.0.0.1:6000/events"), "{config}");
        assert!(config.contains("rootdirectory: \"/tmp/sand box/registry/storage\""), "{config}");
        assert!(config.contains("- application/octet-stream"), "{config}");
    }
}
