//! `cargo xtask secrets encrypt|decrypt|edit|rekey|check`: the Terraform
//! secrets live in git as `secrets.tfvars.enc`, a file that plain
//! `openssl enc -d -aes-256-cbc -pbkdf2 -md sha256 -iter 600000` can read, so
//! a team is never locked into this tool. `format` describes the bytes,
//! `tfvars` what the plaintext may contain, `password` where passwords come
//! from, `hook` the pre-commit hook.
//!
//! Plaintext touches the disk in two places only, both outside the
//! repository (`private_dir`: `$XDG_RUNTIME_DIR` or `/dev/shm`, 0700):
//! `decrypt` (mode 0600; an explicit `--out` must also be outside the
//! repository and ignored by any git work tree it is in) and `edit` (a 0600
//! file in a fresh directory, removed in every case, Ctrl-C included). Terraform gets
//! its secrets from `terraform_env`, in memory, as `TF_VAR_*` variables of
//! the child process.

mod format;
mod hook;
mod password;
mod private_dir;
mod tfvars;

use std::{
    ffi::OsStr,
    fmt, fs,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

pub use self::hook::InstallHooks;
use self::{
    format::{DecryptError, DecryptOptions, Decrypted, ITERATIONS, Kdf, LegacyDigest},
    password::PasswordSource,
    private_dir::PrivateTempFile,
};
use crate::{
    bench::Figure,
    support::{ctx::Ctx, exec, ui},
};

/// The decrypted file's name, in the private directory outside the
/// repository (`private_dir`); `.gitignore` ignores it anywhere too.
pub const PLAINTEXT_FILE: &str = "secrets.tfvars";
/// The encrypted file, at the project root, committed.
pub const ENCRYPTED_FILE: &str = "secrets.tfvars.enc";
pub const PASSWORD_ENV: &str = "SECRETS_PASSWORD";
/// The password the template's `secrets.tfvars.enc` ships with. The README
/// prints it, so a file it opens protects nothing: only a sandbox may use it.
pub const DEMO_PASSWORD: &str = "demo-password-change-me";
/// How the template marks its demo values (`db_password = "demo-...-change-me"`).
const DEMO_VALUE_MARKER: &str = "change-me";
pub const NEW_PASSWORD_ENV: &str = "SECRETS_NEW_PASSWORD";

/// A password or a decrypted value. `Debug` never shows it, and its memory
/// is overwritten when dropped.
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: String) -> SecretValue {
        SecretValue(value)
    }

    /// The value itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl AsRef<OsStr> for SecretValue {
    fn as_ref(&self) -> &OsStr {
        OsStr::new(&self.0)
    }
}

impl Drop for SecretValue {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

/// The `TF_VAR_<name>` variables of `secrets.tfvars.enc` at the project root,
/// decrypted in memory with the password from `SECRETS_PASSWORD` (process
/// environment or `.env`), `SECRETS_PASSWORD_FILE` or the terminal. Put them
/// in the Terraform child's environment only (`cmd.envs(..)`), never in
/// xtask's own, and never print them. Strings come unescaped; numbers,
/// bools, lists and maps as HCL text, which Terraform parses for variables
/// of those types.
pub fn terraform_env(ctx: &Ctx, environment: &str) -> Result<Vec<(String, String)>> {
    let path = ctx.root.join(ENCRYPTED_FILE);
    let password_file = ctx.env_var("SECRETS_PASSWORD_FILE").map(PathBuf::from);
    let password = password::read(
        &PasswordSource {
            prompt: format!("Password for {ENCRYPTED_FILE}"),
            file: password_file.as_deref(),
            file_hint: "set SECRETS_PASSWORD_FILE to a file holding it",
            env_var: PASSWORD_ENV,
            confirm: false,
        },
        &ctx.dotenv,
    )?;
    terraform_env_with(&path, &password, environment)
}

/// Refuses to take a non-sandbox environment further while the secrets file
/// still opens with [`DEMO_PASSWORD`]: its values are as public as the
/// README. Checked before anything reaches the environment, dry runs
/// included, and costs one key derivation (a fraction of a second). A
/// missing or unreadable file is left to the task that needs it.
pub fn refuse_demo_password(root: &Path, environment: &str) -> Result<()> {
    if crate::config::is_sandbox(environment) {
        return Ok(());
    }
    let path = root.join(ENCRYPTED_FILE);
    let Ok(file) = fs::read(&path) else { return Ok(()) };
    let options = ReadArgs::default().options();
    if format::decrypt(&file, DEMO_PASSWORD.as_bytes(), &options).is_ok() {
        bail!(
            "{} opens with the template's demo password, which the README prints, and {environment:?} is not a sandbox: \
             choose a real password with `cargo xtask secrets rekey`, then replace the demo values with `cargo xtask secrets edit`",
            path.display()
        );
    }
    Ok(())
}

/// `terraform_env` for a given file and password. Outside a sandbox, a
/// value still carrying the template's demo marker is refused.
pub fn terraform_env_with(path: &Path, password: &SecretValue, environment: &str) -> Result<Vec<(String, String)>> {
    let decrypted = open(path, password, &ReadArgs::default().options())?;
    let assignments = parse_tfvars(path, &decrypted.content)?;
    if !crate::config::is_sandbox(environment)
        && let Some(demo) = assignments.iter().find(|assignment| assignment.value.expose().contains(DEMO_VALUE_MARKER))
    {
        bail!(
            "{}: {} still holds the template's demo value (it contains \"{DEMO_VALUE_MARKER}\"), and {environment:?} is not a sandbox: \
             set a real value with `cargo xtask secrets edit`",
            path.display(),
            demo.name
        );
    }
    Ok(tfvars::terraform_env_pairs(&assignments))
}

/// Figures for `cargo xtask bench secrets`: a 10 KB file at the real
/// iteration count, ours and the openssl CLI's decryption for reference.
pub fn bench(ctx: &Ctx) -> Result<Vec<Figure>> {
    let mut content = String::new();
    while content.len() < 10 * 1024 {
        content.push_str(&format!("secret_{} = \"{}\"\n", content.len(), "x".repeat(40)));
    }
    if ctx.dry_run() {
        println!("would time encrypting and decrypting a {} byte file at {ITERATIONS} iterations", content.len());
        return Ok(Vec::new());
    }
    ui::step(&format!("secrets: encrypt and decrypt a 10 KB file at {ITERATIONS} PBKDF2 iterations (median of 3)"));
    let password = b"bench-password";
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut encrypt_times = Vec::new();
    let mut encrypted = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        encrypted = format::encrypt(content.as_bytes(), password, ITERATIONS)?;
        encrypt_times.push(started.elapsed());
    }
    let mut decrypt_times = Vec::new();
    let options = ReadArgs::default().options();
    for _ in 0..3 {
        let started = Instant::now();
        let decrypted = format::decrypt(&encrypted, password, &options)?;
        decrypt_times.push(started.elapsed());
        anyhow::ensure!(decrypted.content == content.as_bytes(), "the benchmark's round trip changed the content");
    }
    let openssl_time = time_openssl_decrypt(&encrypted, password)?;
    let goal = Duration::from_secs(1);
    let figure = |name: &str, duration: Duration, pass: Option<bool>| Figure {
        name: name.to_owned(),
        value: format!("{:.3}s", duration.as_secs_f64()),
        goal: if pass.is_some() { "<= 1s".to_owned() } else { "reference".to_owned() },
        pass,
    };
    let encrypt_time = median(encrypt_times);
    let decrypt_time = median(decrypt_times);
    Ok(vec![
        figure("secrets encrypt, 10 KB, 600k iterations", encrypt_time, Some(encrypt_time <= goal)),
        figure("secrets decrypt, 10 KB, 600k iterations", decrypt_time, Some(decrypt_time <= goal)),
        figure("openssl enc -d (CLI), same file", openssl_time, None),
    ])
}

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
    /// The encrypted file to read (default: secrets.tfvars.enc at the project root)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// The plaintext to write, outside the repository (default: secrets.tfvars in $XDG_RUNTIME_DIR or /dev/shm, 0700)
    #[arg(long = "out", value_name = "PATH", conflicts_with = "stdout")]
    pub output: Option<PathBuf>,
    /// Print the plaintext instead of writing a file
    #[arg(long)]
    pub stdout: bool,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Edit the secrets in $VISUAL/$EDITOR through a private temp file
#[derive(Debug, Args)]
pub struct Edit {
    /// The encrypted file to edit (default: secrets.tfvars.enc at the project root)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Re-encrypt with a new password (also upgrades legacy and plain openssl files)
#[derive(Debug, Args)]
pub struct Rekey {
    /// The encrypted file to read (default: secrets.tfvars.enc at the project root)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Where to write the re-encrypted file (default: the input, replaced atomically)
    #[arg(long = "out", value_name = "PATH")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    /// Read the new password from this file instead of $SECRETS_NEW_PASSWORD or a prompt
    #[arg(long, value_name = "PATH", env = "SECRETS_NEW_PASSWORD_FILE")]
    pub new_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Check that the file decrypts, is intact and parses, writing no plaintext
#[derive(Debug, Args)]
pub struct Check {
    /// The encrypted file to check (default: secrets.tfvars.enc at the project root)
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    #[command(flatten)]
    pub password: PasswordArgs,
    #[command(flatten)]
    pub read: ReadArgs,
}

impl Encrypt {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = match self.input {
            Some(input) => input,
            None => private_dir::project_dir(&ctx.root)?.join(PLAINTEXT_FILE),
        };
        let output = self.output.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        if ctx.dry_run() {
            println!(
                "would read {}, check that it parses as tfvars, and write {} (openssl enc -aes-256-cbc -pbkdf2 -md sha256 -iter {ITERATIONS}, with an integrity line)",
                input.display(),
                output.display()
            );
            return Ok(());
        }
        let content = Plaintext(fs::read(&input).with_context(|| format!("reading {}", input.display()))?);
        let assignments = parse_tfvars(&input, &content.0)?;
        let password = password::read(&current_password(&self.password, &output, true), &ctx.dotenv)?;
        if output.exists() && !replace_existing(ctx, &output, &content.0, &password)? {
            return Ok(());
        }
        let encrypted = format::encrypt(&content.0, password.expose().as_bytes(), ITERATIONS)
            .with_context(|| format!("encrypting {}", input.display()))?;
        crate::support::fs::write_atomic(&output, &encrypted, 0o644)?;
        ui::success(&format!(
            "encrypted {} ({} variables) into {}",
            input.display(),
            assignments.len(),
            output.display()
        ));
        Ok(())
    }
}

/// Decides whether `encrypt` may replace an existing encrypted file: not
/// when it already holds this content (a new salt would make a needless git
/// diff), and only after confirmation when it was encrypted with another
/// password or cannot be read.
fn replace_existing(ctx: &Ctx, output: &Path, content: &[u8], password: &SecretValue) -> Result<bool> {
    let existing = fs::read(output).with_context(|| format!("reading {}", output.display()))?;
    match format::decrypt(&existing, password.expose().as_bytes(), &ReadArgs::default().options()) {
        Ok(decrypted) if decrypted.content == content => {
            ui::success(&format!("{} already holds this content: left unchanged", output.display()));
            Ok(false)
        }
        Ok(_) => Ok(true),
        Err(err) => {
            ui::warn(&format!("{} does not decrypt with this password: {err}", output.display()));
            if crate::support::prompt::confirm(
                ctx.global.yes,
                &format!("replace {} (use `secrets rekey` to change a password)?", output.display()),
            )? {
                Ok(true)
            } else {
                bail!("left {} unchanged", output.display());
            }
        }
    }
}

impl Decrypt {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = self.input.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        let output = match self.output {
            Some(output) => {
                private_dir::ensure_outside_repository(&ctx.root, &output)?;
                output
            }
            None => private_dir::project_dir(&ctx.root)?.join(PLAINTEXT_FILE),
        };
        if ctx.dry_run() {
            let destination = if self.stdout {
                "print it to stdout".to_owned()
            } else {
                format!("write {} (mode 0600)", output.display())
            };
            println!("would read {}, decrypt it and {destination}", input.display());
            return Ok(());
        }
        // Before asking for a password: a refusal should not cost one.
        if !self.stdout {
            ensure_ignored_by_git(&ctx.root, &output)?;
        }
        let password = password::read(&current_password(&self.password, &input, false), &ctx.dotenv)?;
        let decrypted = open(&input, &password, &self.read.options())?;
        if self.stdout {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&decrypted.content).and_then(|()| stdout.flush()).context("writing to stdout")?;
            return Ok(());
        }
        match fs::read(&output).map(Plaintext) {
            Ok(existing) if existing.0 == decrypted.content => {
                ui::success(&format!("{} is already up to date", output.display()));
                return Ok(());
            }
            Ok(_) => {
                let question = format!(
                    "{} differs from {}: overwrite it (local changes would be lost)?",
                    output.display(),
                    input.display()
                );
                if !crate::support::prompt::confirm(ctx.global.yes, &question)? {
                    bail!("left {} unchanged", output.display());
                }
            }
            Err(_) => {}
        }
        crate::support::fs::write_atomic(&output, &decrypted.content, 0o600)?;
        ui::success(&format!("decrypted {} into {} (mode 0600)", input.display(), output.display()));
        Ok(())
    }
}

impl Edit {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let path = self.input.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        let editor = editor();
        if ctx.dry_run() {
            println!(
                "would decrypt {} into a private temp file under {}, open it with `{editor}`, and re-encrypt {} if the content changed",
                path.display(),
                std::env::temp_dir().display(),
                path.display()
            );
            return Ok(());
        }
        let password = password::read(&current_password(&self.password, &path, false), &ctx.dotenv)?;
        let decrypted = open(&path, &password, &self.read.options())?;
        // The temp file and its directory are removed when `temp` goes out of
        // scope, on every path out of this block.
        let edited = {
            let temp = PrivateTempFile::create(&ctx.root, PLAINTEXT_FILE, &decrypted.content)?;
            // On a terminal, `set -m` makes the editor a job of its own in the
            // foreground: a Ctrl-C typed in the editor (vim users do) then
            // reaches the editor only, not xtask, whose interrupt handler
            // would delete the file being edited.
            let job_control = if std::io::stdin().is_terminal() { "set -m; " } else { "" };
            // `sh -c` so that `EDITOR="code --wait"` works, as in git.
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!("{job_control}{editor} \"$@\""))
                .arg(&editor)
                .arg(&temp.path)
                .env_remove(PASSWORD_ENV)
                .env_remove(NEW_PASSWORD_ENV)
                .status()
                .with_context(|| format!("starting the editor `{editor}`"))?;
            if !status.success() {
                bail!("the editor `{editor}` failed ({status}): {} left unchanged", path.display());
            }
            Plaintext(fs::read(&temp.path).with_context(|| format!("reading {}", temp.path.display()))?)
        };
        if edited.0 == decrypted.content {
            ui::success(&format!("no changes: {} left unchanged", path.display()));
            return Ok(());
        }
        parse_tfvars(Path::new(PLAINTEXT_FILE), &edited.0)
            .with_context(|| format!("your edit is discarded and {} left unchanged", path.display()))?;
        let encrypted = format::encrypt(&edited.0, password.expose().as_bytes(), ITERATIONS)
            .with_context(|| format!("encrypting {}", path.display()))?;
        crate::support::fs::write_atomic(&path, &encrypted, 0o644)?;
        ui::success(&format!("re-encrypted {}", path.display()));
        Ok(())
    }
}

impl Rekey {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = self.input.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        let output = self.output.unwrap_or_else(|| input.clone());
        if ctx.dry_run() {
            println!(
                "would decrypt {} with the current password and write {} encrypted with the new one (-pbkdf2 -md sha256 -iter {ITERATIONS}, with an integrity line)",
                input.display(),
                output.display()
            );
            return Ok(());
        }
        let password = password::read(&current_password(&self.password, &input, false), &ctx.dotenv)?;
        let decrypted = open(&input, &password, &self.read.options())?;
        if let Err(err) = tfvars::parse(&decrypted.content) {
            ui::warn(&format!("{} does not parse as tfvars ({err}); re-encrypting it as it is", input.display()));
        }
        let new_password = password::read(
            &PasswordSource {
                prompt: format!("New password for {}", file_name(&output)),
                file: self.new_password_file.as_deref(),
                file_hint: "pass --new-password-file PATH",
                env_var: NEW_PASSWORD_ENV,
                confirm: true,
            },
            &ctx.dotenv,
        )?;
        let encrypted = format::encrypt(&decrypted.content, new_password.expose().as_bytes(), ITERATIONS)
            .with_context(|| format!("encrypting {}", output.display()))?;
        crate::support::fs::write_atomic(&output, &encrypted, 0o644)?;
        ui::success(&format!(
            "re-encrypted {} with the new password (-pbkdf2 -md sha256 -iter {ITERATIONS}, integrity line){}",
            output.display(),
            if output == input { String::new() } else { format!(" from {}", input.display()) }
        ));
        Ok(())
    }
}

impl Check {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = self.input.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        if ctx.dry_run() {
            println!(
                "would read {}, decrypt it in memory and check that it parses as tfvars (writing nothing)",
                input.display()
            );
            return Ok(());
        }
        let password = password::read(&current_password(&self.password, &input, false), &ctx.dotenv)?;
        let decrypted = open(&input, &password, &self.read.options())?;
        let assignments = parse_tfvars(&input, &decrypted.content)?;
        // Names and kinds only: `check` runs in CI logs.
        let names: Vec<String> = assignments
            .iter()
            .map(|assignment| format!("TF_VAR_{} ({})", assignment.name, assignment.kind.name()))
            .collect();
        ui::success(&format!(
            "{} decrypts{}, parses, and sets {} variable(s): {}",
            input.display(),
            if decrypted.authenticated { ", is intact" } else { " (no integrity line to verify)" },
            names.len(),
            names.join(", ")
        ));
        Ok(())
    }
}

impl ReadArgs {
    fn options(&self) -> DecryptOptions {
        DecryptOptions {
            kdf: match self.legacy_kdf {
                Some(digest) => Kdf::Legacy(digest),
                None => Kdf::Pbkdf2 { iterations: ITERATIONS },
            },
            allow_unauthenticated: self.allow_unauthenticated,
        }
    }
}

fn current_password<'a>(args: &'a PasswordArgs, file: &Path, confirm: bool) -> PasswordSource<'a> {
    PasswordSource {
        prompt: format!("Password for {}", file_name(file)),
        file: args.password_file.as_deref(),
        file_hint: "pass --password-file PATH",
        env_var: PASSWORD_ENV,
        confirm,
    }
}

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

/// Refuses a plaintext destination that git could commit: inside a work
/// tree, the path must be ignored (`git check-ignore`). Outside any
/// repository anything goes; without git, only outside this project.
fn ensure_ignored_by_git(root: &Path, path: &Path) -> Result<()> {
    let dir = match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => dir.to_path_buf(),
        None => PathBuf::from("."),
    };
    let file_name = path.file_name().with_context(|| format!("{} has no file name", path.display()))?;
    let git = |args: &[&OsStr]| {
        Command::new("git").arg("-C").arg(&dir).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).output()
    };
    let inside_work_tree = match git(&["rev-parse".as_ref(), "--is-inside-work-tree".as_ref()]) {
        Ok(output) => output.status.success() && output.stdout.starts_with(b"true"),
        Err(_) => {
            let absolute = std::path::absolute(&dir).unwrap_or(dir.clone());
            if absolute.starts_with(root) {
                bail!(
                    "refusing to write decrypted secrets to {}: git is not available to check that it is ignored",
                    path.display()
                );
            }
            return Ok(());
        }
    };
    if !inside_work_tree {
        return Ok(());
    }
    let output =
        git(&["check-ignore".as_ref(), "-q".as_ref(), "--".as_ref(), file_name]).context("running git check-ignore")?;
    match output.status.code() {
        Some(0) => Ok(()),
        Some(1) => bail!(
            "refusing to write decrypted secrets to {}: it is inside a git repository and git does not ignore it \
             (add it to .gitignore, use --stdout, or choose a path outside the repository)",
            path.display()
        ),
        _ => bail!("git check-ignore failed for {} ({})", path.display(), output.status),
    }
}

/// `$VISUAL`, then `$EDITOR`, then `vi`, as git does.
fn editor() -> String {
    ["VISUAL", "EDITOR"]
        .into_iter()
        .filter_map(|name| std::env::var(name).ok())
        .find(|value| !value.trim().is_empty())
        .unwrap_or_else(|| "vi".to_owned())
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |name| name.to_string_lossy().into_owned())
}

/// Plaintext read from or written to disk, wiped from memory when dropped.
struct Plaintext(Vec<u8>);

impl Drop for Plaintext {
    fn drop(&mut self) {
        self.0.fill(0);
        std::hint::black_box(&self.0);
    }
}

/// The reference figure: the same file through the openssl CLI, the password
/// in the child's environment only.
fn time_openssl_decrypt(encrypted: &[u8], password: &[u8]) -> Result<Duration> {
    let openssl = exec::require_tool("openssl", "apt-get install openssl")?;
    let started = Instant::now();
    let mut child = Command::new(openssl)
        .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-md", "sha256", "-iter", &ITERATIONS.to_string()])
        .args(["-pass", "env:XTASK_BENCH_PASSWORD"])
        .env("XTASK_BENCH_PASSWORD", OsStr::new(std::str::from_utf8(password)?))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting openssl")?;
    child.stdin.take().expect("stdin is piped").write_all(encrypted).context("writing to openssl")?;
    let status = child.wait().context("waiting for openssl")?;
    if !status.success() {
        bail!("openssl enc -d failed ({status})");
    }
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_secrets_file_decrypts_with_the_demo_password() {
        let path = crate::support::fs::project_root().join(ENCRYPTED_FILE);
        let env = terraform_env_with(&path, &SecretValue::new(DEMO_PASSWORD.to_owned()), "sandbox").unwrap();
        let names: Vec<&str> = env.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, ["TF_VAR_db_password", "TF_VAR_db_app_password"]);
        // The validations of `variable "db_password"` and `"db_app_password"`
        // in infra/environments.
        for (_, password) in &env {
            assert!((16..=128).contains(&password.len()), "length {}", password.len());
            assert!(!password.contains(['/', '@', '"', ' ']));
        }
        assert_ne!(env[0].1, env[1].1, "the service role shares the master's password");
    }

    #[test]
    fn only_a_sandbox_may_use_the_demo_password_or_the_demo_values() {
        let root = crate::support::fs::project_root();
        refuse_demo_password(&root, "sandbox").unwrap();
        refuse_demo_password(&root, "sandboxdep").unwrap();
        for environment in ["dev", "prod"] {
            let err = refuse_demo_password(&root, environment).unwrap_err().to_string();
            assert!(err.contains("demo password") && err.contains("cargo xtask secrets rekey"), "{err}");
        }
        // Rekeyed but not edited: the password is new, the values are not.
        let dir = testkit::ServiceDir::new("xtask-demo-values");
        let rekeyed = dir.path().join(ENCRYPTED_FILE);
        let demo = open(
            &root.join(ENCRYPTED_FILE),
            &SecretValue::new(DEMO_PASSWORD.to_owned()),
            &ReadArgs::default().options(),
        )
        .unwrap();
        fs::write(&rekeyed, format::encrypt(&demo.content, b"a-real-password", ITERATIONS).unwrap()).unwrap();
        refuse_demo_password(dir.path(), "dev").unwrap();
        let password = SecretValue::new("a-real-password".to_owned());
        let err = terraform_env_with(&rekeyed, &password, "dev").unwrap_err().to_string();
        assert!(err.contains("db_password") && err.contains("cargo xtask secrets edit"), "{err}");
        assert!(!err.contains("demo-db-"), "the error shows the value: {err}");
        terraform_env_with(&rekeyed, &password, "sandbox").unwrap();
    }

    #[test]
    fn the_shipped_secrets_file_refuses_a_wrong_password() {
        let path = crate::support::fs::project_root().join(ENCRYPTED_FILE);
        let err = terraform_env_with(&path, &SecretValue::new("change-me".to_owned()), "sandbox").unwrap_err();
        assert!(matches!(err.downcast_ref::<DecryptError>(), Some(DecryptError::WrongPassword { .. })), "{err:#}");
    }

    #[test]
    fn secret_values_never_show_in_debug_output() {
        let value = SecretValue::new("hunter2".to_owned());
        assert_eq!(format!("{value:?}"), "SecretValue(<redacted>)");
        assert_eq!(format!("{:?}", Some(&value)), "Some(SecretValue(<redacted>))");
    }

    #[test]
    fn git_ignores_the_decrypted_file_at_the_project_root() {
        let root = crate::support::fs::project_root();
        ensure_ignored_by_git(&root, &root.join(PLAINTEXT_FILE)).unwrap();
        ensure_ignored_by_git(&root, &root.join("app.tfvars.plain")).unwrap();
        let err = ensure_ignored_by_git(&root, &root.join("xtask/secrets.txt")).unwrap_err();
        assert!(err.to_string().contains("git does not ignore it"), "{err}");
    }
}
