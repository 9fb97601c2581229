//! What each `secrets` subcommand does: encrypt, decrypt, edit, rekey and
//! check. Plaintext in memory is a `Plaintext` or a `Decrypted`, both
//! wiped when dropped.

use std::{
    ffi::OsStr,
    fs,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{
    ENCRYPTED_FILE, NEW_PASSWORD_ENV, PASSWORD_ENV, PLAINTEXT_FILE, Plaintext, SecretValue,
    cli::{Check, Decrypt, Edit, Encrypt, EncryptedFile, ReadArgs, Rekey, current_password},
    file_name,
    format::{self, Decrypted, ITERATIONS},
    open, parse_tfvars,
    password::{self, PasswordSource},
    private_dir::{self, PrivateTempFile},
    tfvars,
};
use crate::support::{ctx::Ctx, ui};
use anyhow::{Context, Result, bail};

impl Encrypt {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = match self.input {
            Some(input) => input,
            None => private_dir::project_dir(&ctx.root)?.join(PLAINTEXT_FILE),
        };
        let output = self.output.unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE));
        if ctx.would(format_args!(
            "read {}, check that it parses as tfvars, and write {} (openssl enc -aes-256-cbc -pbkdf2 -md sha256 -iter {ITERATIONS}, with an integrity line)",
            input.display(),
            output.display()
        )) {
            return Ok(());
        }
        let content = Plaintext::new(fs::read(&input).with_context(|| format!("reading {}", input.display()))?);
        let assignments = parse_tfvars(&input, &content)?;
        let password = password::read(&current_password(&self.password, &output, true), &ctx.dotenv)?;
        if output.exists() && !replace_existing(ctx, &output, &content, &password)? {
            return Ok(());
        }
        let encrypted = format::encrypt(&content, password.expose().as_bytes(), ITERATIONS)
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
        Ok(decrypted) if *decrypted.content == content => {
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

impl EncryptedFile {
    /// The file: `--in`, or secrets.tfvars.enc at the project root.
    fn path(&self, ctx: &Ctx) -> PathBuf {
        self.input.clone().unwrap_or_else(|| ctx.root.join(ENCRYPTED_FILE))
    }

    /// Reads the password (flag, environment or prompt) and decrypts `path`
    /// in memory.
    fn open(&self, ctx: &Ctx, path: &Path) -> Result<(SecretValue, Decrypted)> {
        let password = password::read(&current_password(&self.password, path, false), &ctx.dotenv)?;
        let decrypted = open(path, &password, &self.read.options())?;
        Ok((password, decrypted))
    }
}

impl Decrypt {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = self.file.path(ctx);
        let output = match self.output {
            Some(output) => {
                private_dir::ensure_outside_repository(&ctx.root, &output)?;
                output
            }
            None => private_dir::project_dir(&ctx.root)?.join(PLAINTEXT_FILE),
        };
        let destination = if self.stdout {
            "print it to stdout".to_owned()
        } else {
            format!("write {} (mode 0600)", output.display())
        };
        if ctx.would(format_args!("read {}, decrypt it and {destination}", input.display())) {
            return Ok(());
        }
        // Before asking for a password: a refusal should not cost one.
        if !self.stdout {
            ensure_ignored_by_git(&ctx.root, &output)?;
        }
        let (_, decrypted) = self.file.open(ctx, &input)?;
        if self.stdout {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&decrypted.content).and_then(|()| stdout.flush()).context("writing to stdout")?;
            return Ok(());
        }
        match fs::read(&output).map(Plaintext::new) {
            Ok(existing) if existing == decrypted.content => {
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
        let path = self.file.path(ctx);
        let editor = editor();
        if ctx.would(format_args!(
            "decrypt {} into a private temp file under {}, open it with `{editor}`, and re-encrypt {} if the content changed",
            path.display(),
            std::env::temp_dir().display(),
            path.display()
        )) {
            return Ok(());
        }
        let (password, decrypted) = self.file.open(ctx, &path)?;
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
                // Ctrl-C to the whole group reaches the editor and xtask at
                // once: the interrupt, not the editor's death, is the outcome.
                crate::support::cleanup::await_interrupt_if_signalled(&status);
                bail!("the editor `{editor}` failed ({status}): {} left unchanged", path.display());
            }
            Plaintext::new(fs::read(&temp.path).with_context(|| format!("reading {}", temp.path.display()))?)
        };
        if edited == decrypted.content {
            ui::success(&format!("no changes: {} left unchanged", path.display()));
            return Ok(());
        }
        parse_tfvars(Path::new(PLAINTEXT_FILE), &edited)
            .with_context(|| format!("your edit is discarded and {} left unchanged", path.display()))?;
        let encrypted = format::encrypt(&edited, password.expose().as_bytes(), ITERATIONS)
            .with_context(|| format!("encrypting {}", path.display()))?;
        crate::support::fs::write_atomic(&path, &encrypted, 0o644)?;
        ui::success(&format!("re-encrypted {}", path.display()));
        Ok(())
    }
}

impl Rekey {
    pub fn run(self, ctx: &Ctx) -> Result<()> {
        let input = self.file.path(ctx);
        let output = self.output.unwrap_or_else(|| input.clone());
        if ctx.would(format_args!(
            "decrypt {} with the current password and write {} encrypted with the new one (-pbkdf2 -md sha256 -iter {ITERATIONS}, with an integrity line)",
            input.display(),
            output.display()
        )) {
            return Ok(());
        }
        let (_, decrypted) = self.file.open(ctx, &input)?;
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
        let input = self.file.path(ctx);
        if ctx.would(format_args!(
            "read {}, decrypt it in memory and check that it parses as tfvars (writing nothing)",
            input.display()
        )) {
            return Ok(());
        }
        let (_, decrypted) = self.file.open(ctx, &input)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_ignores_the_decrypted_file_at_the_project_root() {
        let root = crate::support::fs::project_root();
        ensure_ignored_by_git(&root, &root.join(PLAINTEXT_FILE)).unwrap();
        ensure_ignored_by_git(&root, &root.join("app.tfvars.plain")).unwrap();
        let err = ensure_ignored_by_git(&root, &root.join("xtask/secrets.txt")).unwrap_err();
        assert!(err.to_string().contains("git does not ignore it"), "{err}");
    }
}
