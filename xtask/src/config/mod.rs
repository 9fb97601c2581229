//! The common configuration file, `deploy.toml` at the project root.
//!
//! It holds the application's name and every environment. Errors name the
//! file, the line and the field, because a deploy tool that says "invalid
//! config" sends people digging.
//!
//! It is read once per run, by the command line (`flags.rs`), and resolved
//! there into the [`Target`] a task acts on (`target.rs`).

mod target;

pub use target::{AwsEnv, DockerEnv, Target};

use std::{
    collections::BTreeMap,
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use toml::Spanned;

pub const CONFIG_FILE_NAME: &str = "deploy.toml";

/// Names another configuration file to read instead of the project's
/// `deploy.toml` (tests use a copy with other ports).
pub const CONFIG_ENV_VAR: &str = "XTASK_CONFIG";

#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub app: AppConfig,
    pub environments: BTreeMap<String, Environment>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    pub name: Spanned<String>,
    #[serde(default = "default_port")]
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvironmentKind {
    /// Containers on this machine's Docker engine.
    Docker,
    /// ECS on AWS (or the AWS emulator for `sandbox`).
    Aws,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub kind: EnvironmentKind,
    /// AWS region (aws environments).
    pub region: Option<String>,
    /// The AWS account the environment must run in; tasks refuse others.
    pub account_id: Option<Spanned<String>>,
    /// S3 bucket holding the Terraform state (aws environments).
    pub state_bucket: Option<String>,
    /// Registry host overriding the ECR address (the sandbox's local registry).
    pub registry: Option<String>,
    /// Address the state bucket path-style (S3-compatible stores, the sandbox).
    #[serde(default)]
    pub s3_path_style: bool,
    /// The environment whose successful releases this one accepts.
    pub promote_from: Option<Spanned<String>>,
    /// The Terraform variable file, `infra/environments/env/<tfvars>.tfvars`
    /// (default: the environment's name).
    pub tfvars: Option<String>,
    /// After a rollout, check `GET <service_url>/version` (off where no
    /// container really runs: the sandbox's emulated ECS).
    #[serde(default = "default_true")]
    pub smoke_check: bool,
    /// Deploys ask for the environment name typed back.
    #[serde(default)]
    pub protected: bool,
    /// Port published on the host (docker environments).
    pub host_port: Option<u16>,
    /// The dependency check of the vulnerability gate (aws environments).
    #[serde(default)]
    pub vulnerabilities: VulnerabilityPolicy,
    /// The service's host name (aws environments): with `certificate_arn`
    /// or `route53_zone_id`, the load balancer serves HTTPS for it and port
    /// 80 redirects; the smoke check and functional tests then use
    /// `https://<domain>`.
    pub domain: Option<Spanned<String>>,
    /// An ACM certificate covering `domain`, issued beforehand.
    pub certificate_arn: Option<Spanned<String>>,
    /// A Route 53 hosted zone holding `domain`: Terraform requests the
    /// certificate, validates it by DNS and points `domain` at the load
    /// balancer.
    pub route53_zone_id: Option<Spanned<String>>,
}

/// `[environments.<name>.vulnerabilities]`: what a finding of the dependency
/// check does, and the advisories this environment accepts for a while.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VulnerabilityPolicy {
    /// `block` (the default) stops the push at the threshold; `warn` only
    /// reports.
    #[serde(default)]
    pub mode: GateMode,
    #[serde(default)]
    pub ignore: Vec<IgnoredAdvisory>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GateMode {
    #[default]
    Block,
    Warn,
}

/// An advisory accepted until a date, for a stated reason (both required:
/// an ignore nobody can explain or that never ends is a hole in the gate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoredAdvisory {
    pub id: String,
    pub reason: String,
    /// `YYYY-MM-DD`, the last day the ignore holds.
    pub until: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    app: AppConfig,
    environments: BTreeMap<String, Spanned<Environment>>,
}

/// Whether an environment is an offline rehearsal (`cargo xtask sandbox`)
/// rather than a real AWS account: its name starts with "sandbox". Only a
/// sandbox may run with the template's demo secrets.
pub fn is_sandbox(environment: &str) -> bool {
    environment.starts_with("sandbox")
}

/// `domain` with exactly one of `certificate_arn` and `route53_zone_id`,
/// each of the shape AWS gives it; neither without `domain`.
fn https_settings(
    environment: &Environment,
    field: &dyn Fn(&str) -> String,
    at: &dyn Fn(std::ops::Range<usize>, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let (domain, certificate, zone) = (&environment.domain, &environment.certificate_arn, &environment.route53_zone_id);
    if let Some(domain) = domain {
        let value = domain.get_ref();
        let valid = value.len() <= 253
            && value.contains('.')
            && value.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                    && !label.starts_with('-')
            });
        if !valid {
            return Err(at(
                domain.span(),
                format!("{} {value:?} is not a host name such as app.example.com", field("domain")),
            ));
        }
        if certificate.is_none() && zone.is_none() {
            return Err(at(
                domain.span(),
                format!(
                    "{} needs {} (an ACM certificate for it) or {} (a Route 53 zone to validate one in)",
                    field("domain"),
                    field("certificate_arn"),
                    field("route53_zone_id")
                ),
            ));
        }
    }
    if let (Some(_), Some(zone)) = (certificate, zone) {
        return Err(at(
            zone.span(),
            format!("{} and {} exclude each other: choose one", field("certificate_arn"), field("route53_zone_id")),
        ));
    }
    for (name, setting) in [("certificate_arn", certificate), ("route53_zone_id", zone)] {
        let Some(setting) = setting else { continue };
        if domain.is_none() {
            return Err(at(
                setting.span(),
                format!("{} needs {} (the host name it is for)", field(name), field("domain")),
            ));
        }
        let value = setting.get_ref();
        let valid = match name {
            "certificate_arn" => {
                value.starts_with("arn:") && value.contains(":acm:") && value.contains(":certificate/")
            }
            _ => value.starts_with('Z') && value.len() <= 32 && value.bytes().all(|byte| byte.is_ascii_alphanumeric()),
        };
        if !valid {
            let shape = if name == "certificate_arn" {
                "arn:aws:acm:REGION:ACCOUNT:certificate/ID"
            } else {
                "Z followed by letters and digits"
            };
            return Err(at(setting.span(), format!("{} {value:?} is not of the form {shape}", field(name))));
        }
    }
    Ok(())
}

fn default_true() -> bool {
    true
}

fn default_port() -> u16 {
    8080
}

/// A configuration error with the place it was found.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// `deploy.toml` for one run: read on first use and never again. The
/// command line holds one and hands out the config or the resolved target;
/// tasks that never ask (setup, secrets) work even when the file is broken.
pub struct ConfigOnce {
    root: PathBuf,
    config: std::cell::OnceCell<Config>,
}

impl ConfigOnce {
    pub fn new(root: &Path) -> ConfigOnce {
        ConfigOnce { root: root.to_path_buf(), config: std::cell::OnceCell::new() }
    }

    pub fn get(&self) -> Result<&Config> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let config = Config::load(&self.root)?;
        Ok(self.config.get_or_init(|| config))
    }
}

impl Config {
    /// Reads `deploy.toml` from the project root, or the file named by
    /// `XTASK_CONFIG` when that is set.
    pub fn load(root: &Path) -> Result<Config> {
        let (path, origin) = match std::env::var_os(CONFIG_ENV_VAR).filter(|value| !value.is_empty()) {
            // Made absolute so that child processes (which run elsewhere)
            // and messages name the same file.
            Some(value) => {
                let path = PathBuf::from(value);
                let path = if path.is_absolute() {
                    path
                } else {
                    std::env::current_dir().context("reading the current directory")?.join(path)
                };
                (path, format!(" (from {CONFIG_ENV_VAR})"))
            }
            None => (root.join(CONFIG_FILE_NAME), String::new()),
        };
        let text = fs::read_to_string(&path).with_context(|| {
            format!("reading {}{origin}: every task takes its environments from this file", path.display())
        })?;
        let config = Config::parse(&path, &text)?;
        crate::support::ui::detail(&format!(
            "read {} ({} environments)",
            config.path.display(),
            config.environments.len()
        ));
        Ok(config)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let at = |span: std::ops::Range<usize>, message: String| {
            let (line, column) = line_and_column(text, span.start);
            ConfigError { path: path.to_path_buf(), line, column, message }
        };
        let raw: RawConfig =
            toml::from_str(text).map_err(|err| at(err.span().unwrap_or(0..0), err.message().trim().to_owned()))?;

        let name = raw.app.name.get_ref();
        if !is_resource_name(name) {
            return Err(at(
                raw.app.name.span(),
                format!(
                    "app.name {name:?} must be 2-32 characters of a-z, 0-9 and '-', starting with a letter (it names AWS resources)"
                ),
            ));
        }
        for (env_name, environment) in &raw.environments {
            let span = environment.span();
            let environment = environment.get_ref();
            let field = |field: &str| format!("environments.{env_name}.{field}");
            if !is_resource_name(env_name) {
                return Err(at(
                    span,
                    format!("environment name {env_name:?} must be 2-32 characters of a-z, 0-9 and '-'"),
                ));
            }
            if environment.kind == EnvironmentKind::Aws {
                for (key, value) in [("region", &environment.region), ("state_bucket", &environment.state_bucket)] {
                    if value.as_deref().is_none_or(str::is_empty) {
                        return Err(at(span, format!("{} is required for kind = \"aws\"", field(key))));
                    }
                }
            }
            if let Some(account_id) = &environment.account_id {
                let value = account_id.get_ref();
                if value.len() != 12 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
                    return Err(at(
                        account_id.span(),
                        format!("{} {value:?} must be the 12-digit AWS account id", field("account_id")),
                    ));
                }
            }
            https_settings(environment, &field, &at)?;
            if let Some(source) = &environment.promote_from {
                if !raw.environments.contains_key(source.get_ref()) {
                    return Err(at(
                        source.span(),
                        format!(
                            "{} names {:?}, which is not an environment (known: {})",
                            field("promote_from"),
                            source.get_ref(),
                            raw.environments.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    ));
                }
                if source.get_ref() == env_name {
                    return Err(at(
                        source.span(),
                        format!("{} cannot name the environment itself", field("promote_from")),
                    ));
                }
            }
        }
        Ok(Config {
            path: path.to_path_buf(),
            app: raw.app,
            environments: raw.environments.into_iter().map(|(name, env)| (name, env.into_inner())).collect(),
        })
    }

    pub fn app_name(&self) -> &str {
        self.app.name.get_ref()
    }

    /// The named environment, or an error listing the ones that exist.
    pub fn environment(&self, name: &str) -> Result<&Environment> {
        match self.environments.get(name) {
            Some(environment) => Ok(environment),
            None => bail!(
                "unknown environment {name:?}: {} defines {}; pass one of them with --env",
                self.path.display(),
                self.environments.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

fn is_resource_name(name: &str) -> bool {
    (2..=32).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |index| index + 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("deploy.toml"), text)
    }

    #[test]
    fn the_shipped_configuration_is_valid() {
        let config = Config::load(&crate::support::fs::project_root()).unwrap();
        assert_eq!(config.app_name(), "guestbook");
        for name in ["local", "sandbox", "dev", "qa", "preprod", "prod"] {
            config.environment(name).unwrap();
        }
        assert!(config.environment("prod").unwrap().protected);
        assert_eq!(config.environment("local").unwrap().kind, EnvironmentKind::Docker);
    }

    #[test]
    fn https_needs_a_domain_and_exactly_one_way_to_a_certificate() {
        let environment = |extra: &str| {
            format!(
                "[app]\nname = \"gb\"\n[environments.dev]\nkind = \"aws\"\nregion = \"eu-west-1\"\nstate_bucket = \"b\"\n{extra}"
            )
        };
        let arn = "certificate_arn = \"arn:aws:acm:eu-west-1:111111111111:certificate/0a1b\"\n";
        let zone = "route53_zone_id = \"Z0123456789ABC\"\n";
        let domain = "domain = \"guestbook.example.com\"\n";
        parse(&environment(&format!("{domain}{arn}"))).unwrap();
        let config = parse(&environment(&format!("{domain}{zone}"))).unwrap();
        assert_eq!(config.environment("dev").unwrap().domain.as_ref().unwrap().get_ref(), "guestbook.example.com");
        for (extra, message) in [
            (domain.to_owned(), "environments.dev.domain needs environments.dev.certificate_arn"),
            (format!("{domain}{arn}{zone}"), "exclude each other"),
            (arn.to_owned(), "environments.dev.certificate_arn needs environments.dev.domain"),
            ("domain = \"not a host\"\nroute53_zone_id = \"Z1\"\n".to_owned(), "is not a host name"),
            (format!("{domain}certificate_arn = \"arn:aws:iam::1:role/x\"\n"), "is not of the form arn:aws:acm"),
            (format!("{domain}route53_zone_id = \"example.com\"\n"), "is not of the form Z"),
        ] {
            let err = parse(&environment(&extra)).unwrap_err().to_string();
            assert!(err.starts_with("deploy.toml:") && err.contains(message), "{extra}: {err}");
        }
    }

    #[test]
    fn unknown_field_names_file_line_and_field() {
        let err = parse("[app]\nname = \"guestbook\"\n\n[environments.dev]\nkind = \"aws\"\nregon = \"eu-west-1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("deploy.toml:6:1:"), "{err}");
        assert!(err.contains("regon"), "{err}");
    }

    #[test]
    fn missing_region_is_named() {
        let err = parse("[app]\nname = \"guestbook\"\n[environments.dev]\nkind = \"aws\"\nstate_bucket = \"b\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("environments.dev.region is required"), "{err}");
        assert!(err.starts_with("deploy.toml:3:"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let err = parse("[app]\nname = \"Guest Book\"\n[environments]\n").unwrap_err().to_string();
        assert!(err.starts_with("deploy.toml:2:8: app.name"), "{err}");
        let err = parse("[app]\nname = \"gb\"\n[environments.x1]\nkind = \"kubernetes\"\n").unwrap_err().to_string();
        assert!(err.starts_with("deploy.toml:4:"), "{err}");
        assert!(err.contains("kubernetes"), "{err}");
        let err = parse("[app]\nname = \"gb\"\n[environments.qa]\nkind = \"docker\"\npromote_from = \"dve\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("environments.qa.promote_from names \"dve\""), "{err}");
        let err = parse("[app]\nname = \"gb\"\n[environments.qa]\nkind = \"docker\"\naccount_id = \"12\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("12-digit"), "{err}");
    }

    #[test]
    fn unknown_environment_lists_the_known_ones() {
        let config = parse("[app]\nname = \"gb\"\n[environments.local]\nkind = \"docker\"\n").unwrap();
        let err = config.environment("prdo").unwrap_err().to_string();
        assert!(err.contains("unknown environment \"prdo\"") && err.contains("local"), "{err}");
    }
}
