//! `cargo xtask secrets encrypt|decrypt|edit|rekey|check`: the Terraform
//! secrets live in git as `secrets.tfvars.enc`, a file that plain
//! `openssl enc -d -aes-256-cbc -pbkdf2 -md sha256 -iter 600000` can read, so
//! a team is never locked into this tool. `cli` is the command line,
//! `commands` what each subcommand does, `terraform` the in-memory path to
//! Terraform, `bench` the figures of `cargo xtask bench secrets`; `format`
//! describes the bytes, `tfvars` what the plaintext may contain, `password`
//! where passwords come from, `hook` the pre-commit hook.
//!
//! Plaintext touches the disk in two places only, both outside the
//! repository (`private_dir`: `$XDG_RUNTIME_DIR` or `/dev/shm`, 0700):
//! `decrypt` (mode 0600; an explicit `--out` must also be outside the
//! repository and ignored by any git work tree it is in) and `edit` (a 0600
//! file in a fresh directory, removed in every case, Ctrl-C included). Terraform gets
//! its secrets from `terraform_env`, in memory, as `TF_VAR_*` variables of
//! the child process. In memory, passwords and plaintext are wiped when
//! dropped (`zeroize`; best effort: copies the OS makes are out of reach).

mod bench;
mod cli;
mod commands;
mod format;
mod hook;
mod password;
mod private_dir;
mod terraform;
mod tfvars;

use std::{fs, path::Path};

use anyhow::{Context, Result};
use zeroize::Zeroizing;

use self::format::{DecryptError, DecryptOptions, Decrypted};
pub use self::{
    bench::bench,
    cli::{Decrypt, Encrypt, Secrets},
    hook::InstallHooks,
    terraform::{refuse_demo_password, terraform_env},
};
use crate::support::{secret::SecretValue, ui};

/// The decrypted file's name, in the private directory outside the
/// repository (`private_dir`); `.gitignore` ignores it anywhere too.
pub const PLAINTEXT_FILE: &str = "secrets.tfvars";
/// The encrypted file, at the project root, committed.
pub const ENCRYPTED_FILE: &str = "secrets.tfvars.enc";
pub const PASSWORD_ENV: &str = "SECRETS_PASSWORD";
/// The password the template's `secrets.tfvars.enc` ships with. The README
/// prints it, so a file it opens protects nothing: only a sandbox may use it.
pub const DEMO_PASSWORD: &str = "demo-password-change-me";
pub const NEW_PASSWORD_ENV: &str = "SECRETS_NEW_PASSWORD";

/// Plaintext read from or written to disk, wiped from memory when dropped.
type Plaintext = Zeroizing<Vec<u8>>;

/// Reads and decrypts a file; the error keeps its `DecryptError` for callers
/// that match on it.
fn open(path: &Path, password: &SecretValue, options: &DecryptOptions) -> Result<Decrypted> {
    let file = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let decrypted = format::decrypt(&file, password.expose().as_bytes(), options)
        .map_err(|err: DecryptError| anyhow::Error::new(err).context(format!("decrypting {}", path.display())))?;
    if !decrypted.authenticated {
        ui::warn(&format!(
            "{} has no integrity line, so a change to it would go unnoticed; run `cargo xtask secrets rekey` to add one",
            path.display()
        ));
    }
    Ok(decrypted)
}

fn parse_tfvars(path: &Path, content: &[u8]) -> Result<Vec<tfvars::Assignment>> {
    tfvars::parse(content).map_err(|err| anyhow::anyhow!("{}:{}: {}", path.display(), err.line, err.message))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}
