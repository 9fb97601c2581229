//! The environment a task acts on, resolved from `deploy.toml` once per
//! run. Its kind decides its fields, and the fields a kind requires are
//! values, not `Option`s: a backend never looks an environment up again or
//! defaults a setting a second time.

use std::path::PathBuf;

use anyhow::{Result, bail};

use super::{AppConfig, Config, Environment, EnvironmentKind};

/// One environment of `deploy.toml`, by kind.
#[derive(Debug, Clone)]
pub enum Target {
    Docker(DockerEnv),
    Aws(Box<AwsEnv>),
}

/// A `kind = "docker"` environment: containers on this machine.
#[derive(Debug, Clone)]
pub struct DockerEnv {
    pub name: String,
    pub app_name: String,
    /// `[app]` of deploy.toml.
    pub app: AppConfig,
    /// The stable URL's port (`host_port`, else the app's port).
    pub host_port: u16,
}

/// A `kind = "aws"` environment: ECS, ECR, RDS, behind Terraform.
#[derive(Debug, Clone)]
pub struct AwsEnv {
    pub name: String,
    pub app_name: String,
    /// `[app]` of deploy.toml.
    pub app: AppConfig,
    /// The port the app's container listens on.
    pub container_port: u16,
    pub region: String,
    pub state_bucket: String,
    /// The file it was read from, for messages.
    pub config_path: PathBuf,
    /// Its other settings, as written.
    pub settings: Environment,
}

impl Target {
    pub fn name(&self) -> &str {
        match self {
            Target::Docker(env) => &env.name,
            Target::Aws(env) => &env.name,
        }
    }
}

impl Config {
    /// The named environment, resolved; an unknown name lists the known ones.
    pub fn target(&self, name: &str) -> Result<Target> {
        let environment = self.environment(name)?;
        Ok(match environment.kind {
            EnvironmentKind::Docker => Target::Docker(DockerEnv {
                name: name.to_owned(),
                app_name: self.app_name().to_owned(),
                app: self.app.clone(),
                host_port: environment.host_port.unwrap_or(self.app.port),
            }),
            EnvironmentKind::Aws => Target::Aws(Box::new(self.aws_env(name)?)),
        })
    }

    /// The named environment, which must be an AWS one (infrastructure,
    /// push, promotion).
    pub fn aws_env(&self, name: &str) -> Result<AwsEnv> {
        let environment = self.environment(name)?;
        if environment.kind != EnvironmentKind::Aws {
            bail!(
                "environment {name:?} runs on the local Docker engine (kind = \"docker\" in {}); infrastructure tasks need an aws environment such as sandbox",
                self.path.display()
            );
        }
        // `parse` refused an aws environment without these.
        let required = |value: &Option<String>| value.clone().unwrap_or_default();
        Ok(AwsEnv {
            name: name.to_owned(),
            app_name: self.app_name().to_owned(),
            app: self.app.clone(),
            container_port: self.app.port,
            region: required(&environment.region),
            state_bucket: required(&environment.state_bucket),
            config_path: self.path.clone(),
            settings: environment.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const CONFIG: &str = r#"
[app]
name = "guestbook"
port = 3000

[environments.local]
kind = "docker"
host_port = 8080

[environments.dev]
kind = "aws"
region = "eu-west-1"
state_bucket = "tf-state"
"#;

    #[test]
    fn a_target_has_the_fields_of_its_kind() {
        let config = Config::parse(Path::new("deploy.toml"), CONFIG).unwrap();
        match config.target("local").unwrap() {
            Target::Docker(env) => assert_eq!((env.name.as_str(), env.host_port), ("local", 8080)),
            other => panic!("{other:?}"),
        }
        match config.target("dev").unwrap() {
            Target::Aws(env) => {
                assert_eq!((env.region.as_str(), env.state_bucket.as_str()), ("eu-west-1", "tf-state"));
                assert_eq!((env.app_name.as_str(), env.container_port), ("guestbook", 3000));
            }
            other => panic!("{other:?}"),
        }
        let err = config.aws_env("local").unwrap_err().to_string();
        assert!(err.contains("runs on the local Docker engine"), "{err}");
        let err = config.target("prod").unwrap_err().to_string();
        assert!(err.contains("defines dev, local"), "{err}");
    }
}
