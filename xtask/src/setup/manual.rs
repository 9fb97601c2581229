//! What only a person can fix: the Docker daemon and Terraform's version.
//! Checked and reported with the fix; never installed.

use std::process::{Command, Stdio};

use super::{
    probe::{first_line, run_with_timeout},
    report::{How, Item, State},
};

/// The daemon, asked with a deadline: a hung daemon must not hang setup or
/// doctor. The fix carries what the client said (the address it tried).
pub(super) fn docker_daemon() -> Item {
    let start_it = "start it (`systemctl start docker` or `dockerd &`), or set DOCKER_HOST";
    let (state, fix) = if which::which("docker").is_err() {
        (State::Missing, format!("install Docker Engine (apt-get install docker.io) and {start_it}"))
    } else {
        match run_with_timeout(
            Command::new("docker").args(["version", "--format", "{{.Server.Version}}"]),
            std::time::Duration::from_secs(10),
        ) {
            Some((true, version)) => (State::Present(format!("engine {}", first_line(&version))), String::new()),
            Some((false, output)) => (State::Missing, format!("not reachable ({}): {start_it}", first_line(&output))),
            None => (State::Missing, "did not answer within 10 s: check `docker info` and DOCKER_HOST".to_owned()),
        }
    };
    Item {
        name: "docker daemon",
        purpose: "images, the local environment, the sandbox's containers",
        state,
        how: How::Manual(fix),
    }
}

pub(super) fn terraform() -> Item {
    let output = Command::new("terraform").arg("version").stderr(Stdio::null()).output();
    let version = output.ok().filter(|output| output.status.success()).and_then(|output| {
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines().next().and_then(|line| line.strip_prefix("Terraform v")).map(str::to_owned)
    });
    let recent = |version: &str| {
        let mut numbers = version.split('.').map(|part| part.parse::<u32>().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0)) >= (1, 11)
    };
    let state = match version {
        Some(version) if recent(&version) => State::Present(format!("Terraform {version}")),
        _ => State::Missing,
    };
    Item {
        name: "terraform",
        purpose: "infra, the sandbox, AWS deploys",
        state,
        how: How::Manual("install Terraform >= 1.11: https://developer.hashicorp.com/terraform/install".to_owned()),
    }
}
