//! A real docker registry (Debian's `docker-registry`, distribution 2.x) with
//! htpasswd auth, on a free loopback port. Docker pushes to 127.0.0.1
//! without TLS, so no certificates are needed.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::process::{ServiceDir, free_port, http_status, log_tail, spawn_logged, terminate, wait_until};

/// A running registry; stopped on drop.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    port: u16,
    log_path: PathBuf,
    _dir: ServiceDir,
}

impl Registry {
    /// Starts a registry that accepts exactly `user`/`password`.
    pub fn start(user: &str, password: &str) -> Registry {
        let registry = crate::which("docker-registry", "install it with `apt-get install docker-registry`");
        let htpasswd = crate::which("htpasswd", "install it with `apt-get install apache2-utils`");
        let dir = ServiceDir::new("testkit-registry");
        let port = free_port();
        let htpasswd_path = dir.path().join("htpasswd");
        write_htpasswd(&htpasswd, &htpasswd_path, user, password);
        let config_path = dir.path().join("config.yml");
        let storage = dir.path().join("storage");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nauth:\n  htpasswd:\n    realm: testkit\n    path: {}\n",
            storage.display(),
            htpasswd_path.display()
        );
        fs::write(&config_path, config).unwrap_or_else(|err| panic!("writing {}: {err}", config_path.display()));
        let log_path = dir.path().join("registry.log");
        let mut command = Command::new(registry);
        command.arg("serve").arg(&config_path);
        let mut child = spawn_logged(command, &log_path);
        // 401 means it is up and asking for the credentials we configured.
        wait_until("docker-registry", &mut child, &log_path, Duration::from_secs(30), || {
            http_status(port, "/v2/") == Some(401)
        });
        Registry { child, port, log_path, _dir: dir }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the registry part of an image reference.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("testkit: registry log {}:\n{}", self.log_path.display(), log_tail(&self.log_path));
        }
    }
}

fn write_htpasswd(htpasswd: &Path, path: &Path, user: &str, password: &str) {
    // -i reads the password from stdin so it never shows in `ps`.
    let mut child = Command::new(htpasswd)
        .args(["-B", "-i", "-n", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("running htpasswd: {err}"));
    child.stdin.take().expect("htpasswd stdin").write_all(password.as_bytes()).expect("writing to htpasswd");
    let output = child.wait_with_output().expect("waiting for htpasswd");
    assert!(output.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&output.stderr));
    fs::write(path, output.stdout).unwrap_or_else(|err| panic!("writing {}: {err}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_requires_its_credentials() {
        let registry = Registry::start("AWS", "123456789012-auth-token");
        assert_eq!(http_status(registry.port(), "/v2/"), Some(401));
    }
}
