//! `cargo xtask doctor`: checks the configuration, every external tool and
//! service the tasks need (the checks of `cargo xtask setup`) and the AWS
//! settings, and reports all problems at once, each with the fix.

use std::{path::PathBuf, process::Command, time::Duration};

use anyhow::{Result, bail};
use clap::Args;

use crate::{
    config::{ConfigOnce, EnvironmentKind},
    setup::{
        Need,
        probe::{first_line, run_with_timeout},
        report::findings,
    },
    support::ui,
};

/// Check the tools and services the tasks need
#[derive(Debug, Args)]
pub struct Doctor {}

/// One line of the report.
#[derive(Debug)]
struct Check {
    name: &'static str,
    result: Result<String, String>,
}

impl Doctor {
    /// `env` is the environment `--env` names; a broken deploy.toml is a
    /// finding, not an error.
    pub fn run(self, config: &ConfigOnce, env: &str) -> Result<()> {
        let config = config.get();
        let environment_kind =
            config.as_ref().ok().and_then(|config| config.environment(env).ok()).map(|environment| environment.kind);
        let mut checks = vec![
            Check {
                name: "deploy.toml",
                result: match &config {
                    Ok(config) => match config.environment(env) {
                        Ok(_) => Ok(format!("{} environments, using {:?}", config.environments.len(), env)),
                        Err(err) => Err(format!("{err:#}")),
                    },
                    Err(err) => Err(format!("{err:#}")),
                },
            },
            tool("cargo", &["--version"], "install Rust with rustup: https://rustup.rs"),
        ];
        // The tools and services: the very checks of `cargo xtask setup`.
        checks.extend(
            findings(Need::Everything).into_iter().map(|finding| Check { name: finding.name, result: finding.result }),
        );
        if environment_kind == Some(EnvironmentKind::Aws) {
            checks.push(aws_region());
            checks.push(aws_credentials());
        }

        let width = checks.iter().map(|check| check.name.len()).max().unwrap_or(0);
        let mut missing = Vec::new();
        for check in &checks {
            match &check.result {
                Ok(found) => ui::result(&format!("  ok       {:<width$}  {found}", check.name)),
                Err(fix) => {
                    ui::result(&format!("  MISSING  {:<width$}  {fix}", check.name));
                    missing.push(check.name);
                }
            }
        }
        if !missing.is_empty() {
            bail!("{} check(s) failed: {}", missing.len(), missing.join(", "));
        }
        Ok(())
    }
}

fn tool(name: &'static str, version_args: &[&str], fix: &str) -> Check {
    let result = match which::which(name) {
        Err(_) => Err(format!("not on PATH: {fix}")),
        Ok(path) => match run_with_timeout(Command::new(&path).args(version_args), Duration::from_secs(10)) {
            // htpasswd has no version flag; `-h` prints usage and exits 2.
            Some(_) if version_args == ["-h"] => Ok(path.display().to_string()),
            Some((true, output)) => Ok(format!("{} ({})", first_line(&output), path.display())),
            Some((false, output)) => Err(format!("{} fails: {}", path.display(), first_line(&output))),
            None => Err(format!("{} did not answer within 10 s", path.display())),
        },
    };
    Check { name, result }
}

fn aws_region() -> Check {
    let result = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|key| {
            std::env::var(key).ok().filter(|value| !value.is_empty()).map(|value| format!("{value} (from {key})"))
        })
        .ok_or_else(|| {
            "no AWS_REGION set: export AWS_REGION=<region> (deploy.toml names each environment's region)".to_owned()
        });
    Check { name: "aws region", result }
}

fn aws_credentials() -> Check {
    let from_env =
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some() && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some();
    let profile = std::env::var_os("AWS_PROFILE").is_some();
    let shared_files = std::env::var_os("HOME")
        .map(PathBuf::from)
        .is_some_and(|home| home.join(".aws/credentials").is_file() || home.join(".aws/config").is_file());
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let result = if from_env || profile || shared_files {
        let source = if from_env {
            "environment"
        } else if profile {
            "AWS_PROFILE"
        } else {
            "~/.aws"
        };
        Ok(match endpoint {
            Some(endpoint) => format!("from {source}, endpoint {endpoint}"),
            None => format!("from {source}"),
        })
    } else {
        Err("no AWS credentials: run `aws configure sso` / set AWS_PROFILE, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_owned())
    };
    Check { name: "aws credentials", result }
}
