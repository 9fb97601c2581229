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

/// The response header by which `up` knows its own registry (see
/// `registry_config`).
pub(super) const INSTANCE_HEADER: &str = "X-Xtask-Sandbox-Registry";

/// True when `response` (to `GET /v2/` without credentials) comes from the
/// registry started with `instance`: up, asking for credentials, and ours.
pub(super) fn is_instance(response: &super::http::Response, instance: &str) -> bool {
    response.status == 401 && response.header(INSTANCE_HEADER) == Some(instance)
}

/// The registry's configuration: htpasswd auth, storage under the sandbox
/// directory, and a notification for every manifest push sent to the sync.
/// Every answer carries `INSTANCE_HEADER: <instance>`: should another
/// process take the registry's port between `up`'s check and the
/// registry's start (two sandboxes picking one free port), the registry
/// exits on the bind error while the other process goes on answering, and
/// only the header tells the two apart.
pub(super) fn registry_config(
    storage: &Path,
    htpasswd: &Path,
    registry_address: &str,
    sync_address: &str,
    instance: &str,
) -> String {
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
  headers:
    {INSTANCE_HEADER}: [{instance}]
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
        instance = json!(instance),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_registry_with_our_instance_header_is_ours() {
        let answer = |status: u16, headers: &[(&str, &str)]| super::super::http::Response {
            status,
            headers: headers.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect(),
            body: Vec::new(),
        };
        assert!(is_instance(&answer(401, &[("x-xtask-sandbox-registry", "c0ffee")]), "c0ffee"));
        // Another sandbox's registry on the port we picked, or anything else.
        assert!(!is_instance(&answer(401, &[(INSTANCE_HEADER, "0ther")]), "c0ffee"));
        assert!(!is_instance(&answer(401, &[]), "c0ffee"));
        assert!(!is_instance(&answer(200, &[(INSTANCE_HEADER, "c0ffee")]), "c0ffee"));
    }

    #[test]
    fn registry_config_notifies_the_sync_of_manifest_pushes_only() {
        let dir = Path::new("/tmp/sand box/registry");
        let config =
            registry_config(&dir.join("storage"), &dir.join("htpasswd"), "127.0.0.1:5055", "127.0.0.1:6000", "c0ffee");
        assert!(config.contains("addr: 127.0.0.1:5055"), "{config}");
        assert!(config.contains("url: http://127.0.0.1:6000/events"), "{config}");
        assert!(config.contains("rootdirectory: \"/tmp/sand box/registry/storage\""), "{config}");
        assert!(config.contains("- application/octet-stream"), "{config}");
        assert!(config.contains("    X-Xtask-Sandbox-Registry: [\"c0ffee\"]"), "{config}");
    }
}
