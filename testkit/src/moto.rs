//! A moto server (the AWS emulator) on a free loopback port.
//!
//! Tests point `AWS_ENDPOINT_URL` at it; the product has no moto-specific
//! code path. moto reads some behaviour from its own environment when a
//! resource is created (for example `MOTO_ECS_SERVICE_RUNNING`), so one
//! scenario is one server.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use crate::process::{ServiceDir, free_port, http_status, log_tail, spawn_logged, terminate, wait_until};

/// A running moto server; stopped on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: ServiceDir,
}

impl Moto {
    /// Starts moto with AWS-managed IAM policies loaded (ECS execution roles
    /// attach them by ARN) plus the given extra environment.
    pub fn start_with_env(extra_env: &[(&str, &str)]) -> Moto {
        let moto_server = crate::which("moto_server", "install it with `pip install 'moto[server]'`");
        let dir = ServiceDir::new("testkit-moto");
        let port = free_port();
        let log_path = dir.path().join("moto.log");
        let mut command = Command::new(moto_server);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")
            .envs(extra_env.iter().copied());
        let mut child = spawn_logged(command, &log_path);
        wait_until("moto_server", &mut child, &log_path, Duration::from_secs(60), || {
            http_status(port, "/moto-api/data.json") == Some(200)
        });
        Moto { child, port, log_path, _dir: dir }
    }

    pub fn start() -> Moto {
        Moto::start_with_env(&[])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The environment a child process needs to talk to this server and
    /// nothing else: static test credentials, a region, the endpoint.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint_url()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("testkit: moto log {}:\n{}", self.log_path.display(), log_tail(&self.log_path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moto_answers_on_loopback() {
        let moto = Moto::start();
        crate::assert_loopback_endpoint(&moto.endpoint_url());
        assert_eq!(http_status(moto.port(), "/moto-api/data.json"), Some(200));
    }
}
