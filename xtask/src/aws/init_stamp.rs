//! When `terraform init` can be skipped.
//!
//! init is idempotent but not free: with `-reconfigure` it configures the
//! backend again and checks every provider against the lock file, about 2 s
//! a stage here, paid twice by a deploy that only reads outputs (the ledger's
//! table, the service's names). Terraform needs init again only when what it
//! recorded in the data directory would change: the backend settings, the
//! providers (the lock file, the CLI configuration that says where they come
//! from, the binary), or the modules and provider requirements the `.tf`
//! files declare (Terraform's docs, "terraform init": "It is safe to run
//! this command multiple times", and it is needed after any of those
//! changes; Terragrunt's auto-init decides the same way). So a successful
//! init leaves a stamp in the data directory with a fingerprint of exactly
//! those inputs, and the next init with the same fingerprint is skipped.
//! Anything else, including a failed or interrupted init (the stamp is
//! removed before init runs and written after it succeeds), runs init.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use crate::support::fs::{hex, write_atomic};

const STAMP: &str = "xtask-init.sha256";

/// What one stage's init depends on.
pub struct InitInputs<'a> {
    pub binary: &'a Path,
    pub stage_directory: &'a Path,
    pub data_dir: &'a Path,
    pub backend: &'a [String],
    /// TF_CLI_CONFIG_FILE and TF_PLUGIN_CACHE_DIR as the init would see them.
    pub cli_settings: Vec<(&'static str, Option<String>)>,
}

impl InitInputs<'_> {
    /// The fingerprint of the inputs (read now: call it after init for the
    /// stamp, since init may update the lock file).
    pub fn fingerprint(&self) -> Result<String> {
        let mut hasher = openssl::sha::Sha256::new();
        let mut part = |label: &str, bytes: &[u8]| {
            hasher.update(label.as_bytes());
            hasher.update(b"\0");
            hasher.update(bytes);
            hasher.update(b"\0");
        };
        let binary = fs::metadata(self.binary).with_context(|| format!("reading {}", self.binary.display()))?;
        let modified = binary.modified().ok().and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok());
        part("binary", format!("{} {} {modified:?}", self.binary.display(), binary.len()).as_bytes());
        part("backend", self.backend.join("\n").as_bytes());
        for (name, value) in &self.cli_settings {
            part(name, value.as_deref().unwrap_or("<unset>").as_bytes());
            if let Some(path) = value.as_deref().filter(|_| *name == "TF_CLI_CONFIG_FILE") {
                part("cli config", &read_or_missing(Path::new(path))?);
            }
        }
        for file in stage_files(self.stage_directory)? {
            part(&file.display().to_string(), &read_or_missing(&file)?);
        }
        Ok(hex(&hasher.finish()))
    }

    /// True when the last init of this data directory succeeded with these
    /// inputs and what it made is still there.
    pub fn is_current(&self, fingerprint: &str) -> bool {
        let initialised = self.data_dir.join("terraform.tfstate").is_file() && self.data_dir.join("providers").is_dir();
        initialised && fs::read_to_string(self.stamp()).is_ok_and(|stamp| stamp.trim() == fingerprint)
    }

    /// Before init runs: whatever happens to it, no stale stamp survives.
    pub fn forget(&self) -> Result<()> {
        match fs::remove_file(self.stamp()) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                Err(err).with_context(|| format!("removing {}", self.stamp().display()))
            }
            _ => Ok(()),
        }
    }

    /// After a successful init.
    pub fn record(&self) -> Result<()> {
        write_atomic(&self.stamp(), format!("{}\n", self.fingerprint()?).as_bytes(), 0o644)
    }

    fn stamp(&self) -> PathBuf {
        self.data_dir.join(STAMP)
    }
}

/// The stage's `.tf` files (module calls and provider requirements live
/// there) and its lock file, sorted. Local modules are read in place by
/// Terraform, so a change inside one needs no init, only a new call does.
fn stage_files(directory: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(directory).with_context(|| format!("listing {}", directory.display()))? {
        let path = entry.with_context(|| format!("listing {}", directory.display()))?.path();
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if path.is_file() && (name.ends_with(".tf") || name == ".terraform.lock.hcl") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn read_or_missing(path: &Path) -> Result<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(b"<missing>".to_vec()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: PathBuf,
        binary: PathBuf,
        stage: PathBuf,
        data: PathBuf,
        backend: Vec<String>,
    }

    impl Fixture {
        fn new(name: &str) -> Fixture {
            let dir = std::env::temp_dir().join(format!("xtask-init-stamp-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            let (stage, data) = (dir.join("stage"), dir.join("data"));
            fs::create_dir_all(&stage).unwrap();
            fs::create_dir_all(data.join("providers")).unwrap();
            fs::write(data.join("terraform.tfstate"), "{}").unwrap();
            fs::write(stage.join("main.tf"), "terraform {}\n").unwrap();
            fs::write(stage.join(".terraform.lock.hcl"), "# lock\n").unwrap();
            let binary = dir.join("terraform");
            fs::write(&binary, "binary").unwrap();
            Fixture { binary, stage, data, backend: vec!["-backend-config=key=a".to_owned()], dir }
        }

        fn inputs(&self) -> InitInputs<'_> {
            InitInputs {
                binary: &self.binary,
                stage_directory: &self.stage,
                data_dir: &self.data,
                backend: &self.backend,
                cli_settings: vec![("TF_CLI_CONFIG_FILE", None)],
            }
        }

        fn current(&self) -> bool {
            let inputs = self.inputs();
            inputs.is_current(&inputs.fingerprint().unwrap())
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn a_recorded_init_is_current_until_an_input_changes() {
        let mut fixture = Fixture::new("inputs");
        assert!(!fixture.current(), "no stamp yet");
        fixture.inputs().record().unwrap();
        assert!(fixture.current());

        // A variable file or the app is not an input; a .tf file, the lock
        // file and the backend are.
        fs::create_dir_all(fixture.stage.join("env")).unwrap();
        fs::write(fixture.stage.join("env/dev.tfvars"), "x = 1\n").unwrap();
        assert!(fixture.current());
        fs::write(fixture.stage.join("main.tf"), "terraform {}\nmodule \"m\" { source = \"./m\" }\n").unwrap();
        assert!(!fixture.current(), "a changed .tf file");
        fixture.inputs().record().unwrap();
        fs::write(fixture.stage.join(".terraform.lock.hcl"), "# another lock\n").unwrap();
        assert!(!fixture.current(), "a changed lock file");
        fixture.inputs().record().unwrap();
        fixture.backend = vec!["-backend-config=key=b".to_owned()];
        assert!(!fixture.current(), "another backend");
    }

    #[test]
    fn a_forgotten_stamp_or_a_missing_data_directory_means_init() {
        let fixture = Fixture::new("forget");
        fixture.inputs().record().unwrap();
        fixture.inputs().forget().unwrap();
        assert!(!fixture.current(), "init was started and never recorded");
        fixture.inputs().forget().unwrap();

        fixture.inputs().record().unwrap();
        fs::remove_file(fixture.data.join("terraform.tfstate")).unwrap();
        assert!(!fixture.current(), "the backend settings are gone");
    }
}
