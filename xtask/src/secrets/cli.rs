//! The command line of `cargo xtask secrets`: the subcommands, their flags,
//! and the dispatch to what each one does (`commands`).

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};

use super::{
    PASSWORD_ENV, file_name,
    format::{DecryptOptions, ITERATIONS, Kdf, LegacyDigest},
    password::PasswordSource,
};
use crate::support::ctx::Ctx;

/// Encrypt, decrypt, edit, rekey and check the Terraform secrets file
#[derive(Debug, Args)]
pub struct Secrets {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Encrypt the decrypted secrets.tfvars into secrets.tfvars.enc
    Encrypt(Encrypt),
    /// Decrypt secrets.tfvars.enc into secrets.tfvars (mode 0600), or to stdout
    Decrypt(Decrypt),
    /// Edit the secrets in $VISUAL/$EDITOR through a private temp file
    Edit(Edit),
    /// Re-encrypt with a new password (also upgrades legacy and plain openssl files)
    Rekey(Rekey),
    /// Check that the file decrypts, is intact and parses, writing no plaintext
    Check(Check),
}

impl Secrets {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        match self.command {
            SecretsCommand::Encrypt(task) => task.run(ctx),
            SecretsCommand::Decrypt(task) => task.run(ctx),
            SecretsCommand::Edit(task) => task.run(ctx),
            SecretsCommand::Rekey(task) => task.run(ctx),
            SecretsCommand::Check(task) => task.run(ctx),
        }
    }
}

/// Where the current password comes from (never the command line).
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from this file instead of $SECRETS_PASSWORD or a prompt
    #[arg(long, value_name = "PATH", env = "SECRETS_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
}

/// What a task reading an encrypted file accepts besides our own format.
#[derive(Debug, Default, Args)]
pub struct ReadArgs {
    /// Read a file written by `openssl enc` without -pbkdf2 (EVP_BytesToKey with this -md)
    #[arg(long, value_enum, value_name = "MD")]
    pub legacy_kdf: Option<LegacyDigest>,
    /// Accept a file without an integrity line (written by plain openssl), with a warning
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

/// The encrypted file a task opens: where it is, where its password comes
/// from, and what besides our own format it accepts.
#[derive(Debug, Args)]
pub struct EncryptedFile {
    /// The encrypted file (default: secrets.tfvars.enc at the project root)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Encrypt the decrypted secrets.tfvars into secrets.tfvars.enc
#[derive(Debug, Args)]
pub struct Encrypt {
    /// The plaintext to read (default: what `secrets decrypt` wrote, secrets.tfvars in the private directory)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// The encrypted file to write (default: secrets.tfvars.enc at the project root)
    #[arg(long = "out", value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// Decrypt secrets.tfvars.enc into secrets.tfvars (mode 0600), or to stdout
#[derive(Debug, Args)]
pub struct Decrypt {
    #[command(flatten)]
    pub file: EncryptedFile,
    /// The plaintext to write, outside the repository (default: secrets.tfvars in $XDG_RUNTIME_DIR or /dev/shm, 0700)
    #[arg(long = "out", value_name = "PATH", conflicts_with = "stdout")]
    pub output: Option<PathBuf>,
    /// Print the plaintext instead of writing a file
    #[arg(long)]
    pub stdout: bool,
}

/// Edit the secrets in $VISUAL/$EDITOR through a private temp file
#[derive(Debug, Args)]
pub struct Edit {
    #[command(flatten)]
    pub file: EncryptedFile,
}

/// Re-encrypt with a new password (also upgrades legacy and plain openssl files)
#[derive(Debug, Args)]
pub struct Rekey {
    #[command(flatten)]
    pub file: EncryptedFile,
    /// Where to write the re-encrypted file (default: the input, replaced atomically)
    #[arg(long = "out", value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Read the new password from this file instead of $SECRETS_NEW_PASSWORD or a prompt
    #[arg(long, value_name = "PATH", env = "SECRETS_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
}

/// Check that the file decrypts, is intact and parses, writing no plaintext
#[derive(Debug, Args)]
pub struct Check {
    #[command(flatten)]
    pub file: EncryptedFile,
}

impl ReadArgs {
    pub(super) fn options(&self) -> DecryptOptions {
        DecryptOptions {
            kdf: match self.legacy_kdf {
                Some(digest) => Kdf::Legacy(digest),
                None => Kdf::Pbkdf2 { iterations: ITERATIONS },
            },
            allow_unauthenticated: self.allow_unauthenticated,
        }
    }
}

pub(super) fn current_password<'a>(args: &'a PasswordArgs, file: &Path, confirm: bool) -> PasswordSource<'a> {
    PasswordSource {
        prompt: format!("Password for {}", file_name(file)),
        file: args.password_file.as_deref(),
        file_hint: "pass --password-file PATH",
        env_var: PASSWORD_ENV,
        confirm,
    }
}
