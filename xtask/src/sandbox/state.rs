//! The state file, `target/sandbox/<env>/state.json`: what `up` started
//! (each component's pid, address, log and command line), so that `down`
//! and `status` find exactly those processes. Its format is kept: a sandbox
//! that is up across an upgrade of xtask is still found and stopped.

use std::{fs, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{environment::SandboxEnvironment, http};
use crate::support::{
    daemon::{self, Signature},
    fs::write_atomic,
};

/// What `up` records: enough for `down` and `status` to find every process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct State {
    pub(super) environment: String,
    pub(super) config: PathBuf,
    pub(super) endpoint_url: String,
    pub(super) region: String,
    pub(super) registry: String,
    pub(super) components: Vec<Component>,
}

/// One background process, a daemon (`support::daemon`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Component {
    pub(super) name: String,
    pub(super) pid: u32,
    /// `host:port` it answers on.
    pub(super) address: String,
    pub(super) log: PathBuf,
    /// File name of the program and the arguments it was started with
    /// (`program`, `args`): the pid is only ours while its command line
    /// still shows them.
    #[serde(flatten)]
    pub(super) signature: Signature,
}

impl Component {
    /// True when the pid is alive and still runs what we started.
    pub(super) fn is_ours(&self) -> bool {
        daemon::is_ours(self.pid, &self.signature)
    }

    pub(super) fn answers(&self) -> bool {
        http::loopback_address(&self.address)
            .is_ok_and(|address| std::net::TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok())
    }
}

impl SandboxEnvironment {
    pub(super) fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub(super) fn read_state(&self) -> Result<Option<State>> {
        let path = self.state_path();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parsing {}; if the sandbox is gone, delete the file", path.display())),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub(super) fn write_state(&self, state: &State) -> Result<()> {
        let text = serde_json::to_vec_pretty(state).context("encoding the sandbox state")?;
        write_atomic(&self.state_path(), &text, 0o644)
    }

    pub(super) fn remove_state(&self) -> Result<()> {
        let path = self.state_path();
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_file_keeps_its_format() {
        // As written by an `up` before the daemon supervisor: a sandbox that
        // is up across an upgrade is still found and stopped.
        let written = serde_json::json!({
            "environment": "sandbox",
            "config": "/p/deploy.toml",
            "endpoint_url": "http://127.0.0.1:4000",
            "region": "us-east-1",
            "registry": "127.0.0.1:5055",
            "components": [{
                "name": "moto",
                "pid": 42,
                "address": "127.0.0.1:4000",
                "log": "/p/target/sandbox/sandbox/moto.log",
                "program": "python3",
                "args": ["/p/target/sandbox/sandbox/moto_launcher.py", "-H", "127.0.0.1", "-p", "4000"]
            }]
        });
        let state: State = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(state.components[0].signature.program, "python3");
        assert_eq!(state.components[0].signature.args[4], "4000");
        assert_eq!(serde_json::to_value(&state).unwrap(), written);
    }
}
