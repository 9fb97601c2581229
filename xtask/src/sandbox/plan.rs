//! What `up` will do, decided before anything starts: the three processes
//! (moto, the sync, the registry) as values, with their ports, logs and
//! environment, and the files it writes. `--dry-run` prints it, `up`
//! carries it out, the state file records it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{ACCESS_KEY_ID, SECRET_ACCESS_KEY, environment::SandboxEnvironment};

/// moto with what the sandbox adds to it (see moto_launcher.py).
pub(super) const MOTO_LAUNCHER_FILE: &str = "moto_launcher.py";

/// A process `up` will start, as a value: `--dry-run` prints it, `up`
/// spawns it, the state records it.
#[derive(Debug, Clone)]
pub(super) struct ProcessSpec {
    pub(super) name: &'static str,
    pub(super) program: PathBuf,
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) address: String,
    pub(super) log: PathBuf,
}

impl std::fmt::Display for ProcessSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (key, value) in &self.env {
            if key.starts_with("MOTO_") {
                write!(f, "{key}={value} ")?;
            }
        }
        write!(f, "{}", self.program.display())?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// Everything `up` does, decided before anything starts.
pub(super) struct UpPlan {
    pub(super) moto: ProcessSpec,
    pub(super) sync: ProcessSpec,
    pub(super) registry: ProcessSpec,
    pub(super) endpoint_url: String,
    /// The environment a client of the sandbox needs (and nothing else of
    /// AWS): the endpoint, static credentials, the region.
    pub(super) aws_env: Vec<(String, String)>,
    pub(super) registry_config: PathBuf,
    pub(super) htpasswd: PathBuf,
    pub(super) registry_storage: PathBuf,
}

impl UpPlan {
    /// `rds_ca`: the directory of the sandbox's RDS CA (`image::rds_ca`),
    /// which signs the certificates of the sandbox's RDS instances.
    pub(super) fn new(sandbox: &SandboxEnvironment, rds_ca: &Path) -> Result<UpPlan> {
        let python = which_tool("python3")?;
        let docker_registry = which_tool("docker-registry")?;
        let xtask = crate::support::exec::self_exe().context("finding the xtask binary (for the sync process)")?;
        let [moto_port, sync_port] = testkit::free_ports();
        let sync_address = format!("127.0.0.1:{sync_port}");
        let endpoint_url = format!("http://127.0.0.1:{moto_port}");
        let aws_env: Vec<(String, String)> = [
            ("AWS_ENDPOINT_URL", endpoint_url.as_str()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("AWS_REGION", sandbox.region.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        let registry_dir = sandbox.dir.join("registry");
        let registry_config = registry_dir.join("config.yml");
        Ok(UpPlan {
            moto: ProcessSpec {
                name: "moto",
                // moto_server through a launcher that runs services' and
                // tasks' containers and databases (see moto_launcher.py).
                program: python,
                args: [
                    sandbox.dir.join(MOTO_LAUNCHER_FILE).to_string_lossy().as_ref(),
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &moto_port.to_string(),
                ]
                .map(str::to_owned)
                .to_vec(),
                env: vec![
                    // ECS task-execution roles attach AWS-managed policies by ARN.
                    ("MOTO_IAM_LOAD_MANAGED_POLICIES".to_owned(), "true".to_owned()),
                    // Where the launcher keeps RDS data and the registry
                    // login, how it labels containers, and the registry
                    // that holds what moto's ECR lists.
                    ("XTASK_SANDBOX_DIR".to_owned(), sandbox.dir.display().to_string()),
                    ("XTASK_SANDBOX_NAME".to_owned(), sandbox.name.clone()),
                    ("XTASK_SANDBOX_REGISTRY".to_owned(), sandbox.registry.clone()),
                    ("XTASK_SANDBOX_RDS_CA".to_owned(), rds_ca.display().to_string()),
                ],
                address: format!("127.0.0.1:{moto_port}"),
                log: sandbox.dir.join("moto.log"),
            },
            sync: ProcessSpec {
                name: "sync",
                program: xtask,
                args: vec![
                    "--env".to_owned(),
                    sandbox.name.clone(),
                    "sandbox".to_owned(),
                    "sync".to_owned(),
                    "--listen".to_owned(),
                    sync_address.clone(),
                    "--registry".to_owned(),
                    sandbox.registry.clone(),
                ],
                env: aws_env.clone(),
                address: sync_address,
                log: sandbox.dir.join("sync.log"),
            },
            registry: ProcessSpec {
                name: "registry",
                program: docker_registry,
                args: vec!["serve".to_owned(), registry_config.display().to_string()],
                env: Vec::new(),
                address: sandbox.registry.clone(),
                log: sandbox.dir.join("registry.log"),
            },
            endpoint_url,
            aws_env,
            registry_config,
            htpasswd: registry_dir.join("htpasswd"),
            registry_storage: registry_dir.join("storage"),
        })
    }

    /// What `up` does, in order, as `--dry-run` shows it (each step
    /// after "would").
    pub(super) fn steps(&self, sandbox: &SandboxEnvironment) -> Vec<String> {
        vec![
            format!("start moto: {} (log {})", self.moto, self.moto.log.display()),
            format!("create the state bucket: PUT {}/{}", self.endpoint_url, sandbox.state_bucket),
            "call: ecr.get_authorization_token {} (the registry's only login)".to_owned(),
            format!("start sync: {} (log {})", self.sync, self.sync.log.display()),
            format!("write {} and {} (user AWS, bcrypt)", self.registry_config.display(), self.htpasswd.display()),
            format!("start registry: {} on {} (log {})", self.registry, sandbox.registry, self.registry.log.display()),
            format!("write {}", sandbox.state_path().display()),
        ]
    }
}

fn which_tool(name: &str) -> Result<PathBuf> {
    which::which(name).map_err(|_| anyhow::anyhow!("`{name}` is not on PATH"))
}
