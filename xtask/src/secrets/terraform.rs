//! The path from the encrypted file to Terraform: the `TF_VAR_*` variables
//! of the Terraform child, decrypted in memory, and the refusal of the
//! template's demo password and values outside a sandbox.

use std::{fs, path::Path, path::PathBuf};

use anyhow::{Result, bail};

use super::{
    DEMO_PASSWORD, ENCRYPTED_FILE, PASSWORD_ENV, SecretValue,
    cli::ReadArgs,
    format, open, parse_tfvars,
    password::{self, PasswordSource},
    tfvars,
};
use crate::support::ctx::Ctx;

/// How the template marks its demo values (`db_password = "demo-...-change-me"`).
const DEMO_VALUE_MARKER: &str = "change-me";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::format::{DecryptError, ITERATIONS};

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
}
