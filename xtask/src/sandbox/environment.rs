//! Which sandbox a command means: the environment from deploy.toml (only
//! those named `sandbox...`), its region, bucket and registry address, and
//! its directory under `target/sandbox`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::http;
use crate::{config::Config, support::ctx::Ctx};

/// The sandbox environment from deploy.toml, and where its files live.
#[derive(Debug)]
pub(super) struct SandboxEnvironment {
    pub(super) name: String,
    pub(super) config_path: PathBuf,
    pub(super) region: String,
    pub(super) state_bucket: String,
    /// `host:port` of the registry, from the environment's `registry`.
    pub(super) registry: String,
    /// `target/sandbox/<env>`
    pub(super) dir: PathBuf,
}

impl SandboxEnvironment {
    pub(super) fn load(ctx: &Ctx, config: &Config, name: &str) -> Result<SandboxEnvironment> {
        let name = name.to_owned();
        if !crate::config::is_sandbox(&name) {
            bail!(
                "`sandbox` only runs environments whose name starts with \"sandbox\", not {name:?}: the others are real AWS accounts"
            );
        }
        let environment = config.aws_env(&name)?.settings;
        let field = |field: &str| format!("environments.{name}.{field} in {}", config.path.display());
        let registry = environment.registry.clone().with_context(|| {
            format!("{} is not set: the sandbox needs a registry address such as 127.0.0.1:5055", field("registry"))
        })?;
        http::loopback_address(&registry).with_context(|| field("registry"))?;
        Ok(SandboxEnvironment {
            config_path: config.path.clone(),
            region: environment.region.clone().unwrap_or_default(),
            state_bucket: environment.state_bucket.clone().unwrap_or_default(),
            registry,
            dir: ctx.root.join("target/sandbox").join(&name),
            name,
        })
    }

    /// Where moto's launcher appends each request it rejected as AWS would
    /// (sandbox_validation.py), one JSON object per line.
    pub(super) fn rejected_requests_file(&self) -> PathBuf {
        self.dir.join("rejected-requests.ndjson")
    }

    /// The lines of `rejected_requests_file`; none when it does not exist.
    pub(super) fn rejected_requests(&self) -> Result<Vec<String>> {
        let path = self.rejected_requests_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter(|line| !line.trim().is_empty()).map(str::to_owned).collect()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// `--env`, except that the global default (`local`, a Docker environment)
/// means `sandbox` here: `cargo xtask sandbox up` should just work.
pub(super) fn sandbox_name(env: &str) -> String {
    let given_explicitly = std::env::var_os("XTASK_ENV").is_some_and(|value| !value.is_empty())
        || std::env::args().any(|arg| arg == "--env" || arg.starts_with("--env="));
    if env == "local" && !given_explicitly { "sandbox".to_owned() } else { env.to_owned() }
}
