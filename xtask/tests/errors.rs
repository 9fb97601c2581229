//! The error catalogue: the common failures, each triggered for real, must
//! exit non-zero with a message that names what is wrong and what to do.
//!
//! | failure                      | how it is triggered                                                | the message says                                        | exit |
//! |------------------------------|--------------------------------------------------------------------|---------------------------------------------------------|------|
//! | docker daemon unreachable    | `build-image`, `doctor` with DOCKER_HOST=unix:///nonexistent.sock  | the daemon and DOCKER_HOST, how to start it             | 1    |
//! | terraform missing            | `infra plan --env sandbox` with a PATH without terraform           | `terraform` is not on PATH, where to install it         | 1    |
//! | no AWS credentials           | `infra plan --env sandbox`, AWS_* cleared, no ~/.aws, the endpoint a closed loopback port | no AWS credentials; the variables, AWS_PROFILE, the sandbox | 1 |
//! | demo secrets outside a sandbox | `infra plan --env dev` (and `deploy --env prod --dry-run`) with the shipped secrets file | the demo password, `secrets rekey`, nothing run | 1 |
//! | wrong secrets password       | `secrets decrypt --stdout` with SECRETS_PASSWORD wrong             | wrong password, the variable and flag to check          | 1    |
//! | unknown environment          | `--env nope status`                                                | the file, the known environments, --env                 | 1    |
//! | malformed configuration      | XTASK_CONFIG naming a deploy.toml with a misspelt field            | file:line:col, the field, the expected fields           | 1    |
//! | unknown task or flag         | `cargo xtask deplo`                                                | clap's usage error with a suggestion                    | 2    |
//! | prerequisites missing        | `setup --check`, `deploy` with XTASK_NO_INSTALL=1, a PATH without them | every missing piece, its use, one command for all   | 1    |
//!
//! xtask exits 1 for every failed task and 2 for a command line clap refuses.
//! Nothing here can reach AWS: AWS_* variables are removed, the endpoint is a
//! loopback port nobody listens on, and the EC2 metadata lookup is off.

use std::{net::TcpListener, path::PathBuf, process::Command};

use crate::support::{run, xtask};

/// Runs xtask and returns (exit code, stdout and stderr), asserting the
/// failure. Reports such as doctor's are on stdout, errors on stderr.
fn fails(command: &mut Command) -> (i32, String) {
    let (output, stdout, stderr) = run(command);
    assert!(!output.status.success(), "expected a failure, got success:\n{stdout}\n{stderr}");
    let code = output.status.code().expect("xtask was killed by a signal");
    (code, format!("{stdout}{stderr}"))
}

/// The `error:` line(s) of stderr: the part a user reads first.
fn error_message(stderr: &str) -> String {
    let start = stderr.find("error:").unwrap_or_else(|| panic!("no `error:` in:\n{stderr}"));
    stderr[start..].to_owned()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-errors-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn docker_daemon_unreachable() {
    for task in [&["build-image"][..], &["doctor"]] {
        let (code, stderr) = fails(xtask().args(task).env("DOCKER_HOST", "unix:///nonexistent.sock"));
        assert_eq!(code, 1, "{task:?}: {stderr}");
        assert!(stderr.contains("unix:///nonexistent.sock"), "{task:?} does not name the daemon's address:\n{stderr}");
        assert!(stderr.contains("systemctl start docker") && stderr.contains("DOCKER_HOST"), "{task:?}:\n{stderr}");
    }
    // build-image says it before any slow preparation (vendoring, base images).
    let (_, stderr) = fails(xtask().arg("build-image").env("DOCKER_HOST", "unix:///nonexistent.sock"));
    let message = error_message(&stderr);
    assert!(message.starts_with("error: the Docker daemon at DOCKER_HOST=unix:///nonexistent.sock is not reachable"));
    assert!(!stderr.contains("==>"), "build-image started work without a daemon:\n{stderr}");
}

/// A directory of links to the tools xtask needs to start (and docker),
/// for a PATH that lacks everything else.
fn minimal_path(name: &str, tools: &[&str]) -> PathBuf {
    let bin = scratch_dir(name);
    for tool in ["cargo", "rustc", "git", "docker"].iter().chain(tools) {
        if let Ok(found) = which(tool) {
            let _ = std::os::unix::fs::symlink(found, bin.join(tool));
        }
    }
    bin
}

#[test]
fn prerequisites_missing() {
    let bin = minimal_path("no-prerequisites", &["apt-get", "python3"]);
    // --check installs nothing and names every missing piece at once.
    let (code, output) = fails(xtask().args(["setup", "--check"]).env("PATH", &bin));
    assert_eq!(code, 1, "{output}");
    for missing in ["zsh", "fish", "groovy", "chromium", "docker-registry", "htpasswd", "debootstrap", "terraform"] {
        assert!(output.contains(&format!("MISSING  {missing}")), "{missing} not reported:\n{output}");
    }
    let message = error_message(&output);
    assert!(message.contains("apt-get install -y --no-install-recommends") && message.contains(" zsh "), "{message}");
    assert!(message.contains("cargo xtask setup") && message.contains("install Terraform >= 1.11"), "{message}");

    // The README's first command with installs turned off stops before it
    // does anything, listing what it lacks.
    let (code, output) = fails(xtask().arg("deploy").env("PATH", &bin).env("XTASK_NO_INSTALL", "1"));
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("missing debootstrap"), "{output}");
    assert!(error_message(&output).contains("XTASK_NO_INSTALL=1"), "{output}");
    assert!(!output.contains("==> building"), "deploy started work:\n{output}");

    // --dry-run prints the installs it would make (as root; otherwise it
    // says that it needs root and how).
    let (output, stdout, stderr) = run(xtask().args(["--dry-run", "setup"]).env("PATH", &bin));
    std::fs::remove_dir_all(&bin).unwrap();
    let root = String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout).trim() == "0";
    if root {
        assert!(stdout.contains("would run: apt-get update -q"), "{stdout}\n{stderr}");
        let install =
            stdout.lines().find(|line| line.contains("apt-get install")).unwrap_or_else(|| panic!("{stdout}"));
        assert!(install.contains("zsh") && install.contains("docker-registry"), "{install}");
        // What no package manager installs still fails the setup.
        assert!(!output.status.success() && stderr.contains("terraform"), "{stderr}");
    } else {
        assert!(!output.status.success() && stderr.contains("needs root"), "{stderr}");
    }
}

#[test]
fn terraform_missing() {
    // A PATH with what xtask needs to get that far, but no terraform.
    let bin = scratch_dir("no-terraform");
    for tool in ["cargo", "rustc", "git", "docker"] {
        if let Ok(found) = which(tool) {
            let _ = std::os::unix::fs::symlink(found, bin.join(tool));
        }
    }
    let (code, stderr) = fails(xtask().args(["infra", "plan", "--env", "sandbox"]).env("PATH", &bin));
    std::fs::remove_dir_all(&bin).unwrap();
    assert_eq!(code, 1, "{stderr}");
    let message = error_message(&stderr);
    assert!(message.contains("`terraform` is not on PATH"), "{message}");
    assert!(message.contains("install Terraform >= 1.11"), "{message}");
}

#[test]
fn demo_secrets_refused_outside_a_sandbox() {
    // The shipped secrets.tfvars.enc opens with the README's demo password:
    // a real environment must not get that far, dry run or not. A closed
    // loopback endpoint proves nothing was asked of AWS before the refusal.
    let endpoint = closed_loopback_endpoint();
    for args in [&["infra", "plan", "--env", "dev"][..], &["--dry-run", "deploy", "--env", "prod"]] {
        let (code, stderr) = fails(
            xtask()
                .args(args)
                .env("AWS_ENDPOINT_URL", &endpoint)
                .env("AWS_EC2_METADATA_DISABLED", "true")
                .env("SECRETS_PASSWORD", "demo-password-change-me"),
        );
        assert_eq!(code, 1, "{args:?}: {stderr}");
        let message = error_message(&stderr);
        assert!(message.contains("secrets.tfvars.enc opens with the template's demo password"), "{message}");
        assert!(message.contains("cargo xtask secrets rekey"), "{message}");
        assert!(!stderr.contains("terraform init") && !stderr.contains("would run"), "{args:?} went on: {stderr}");
    }
}

#[test]
fn no_aws_credentials() {
    let home = scratch_dir("no-aws-home");
    let endpoint = closed_loopback_endpoint();
    let mut command = xtask();
    command.args(["infra", "plan", "--env", "sandbox"]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("AWS_") {
            command.env_remove(&key);
        }
    }
    command
        .env("HOME", &home)
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("CHECKPOINT_DISABLE", "1")
        .env("AWS_CONFIG_FILE", home.join("config"))
        .env("AWS_SHARED_CREDENTIALS_FILE", home.join("credentials"));
    assert_never_real_aws(&command);
    let (code, stderr) = fails(&mut command);
    std::fs::remove_dir_all(&home).unwrap();
    assert_eq!(code, 1, "{stderr}");
    let message = error_message(&stderr);
    assert!(message.contains("no AWS credentials"), "{message}");
    assert!(message.contains("AWS_ACCESS_KEY_ID") && message.contains("AWS_PROFILE"), "{message}");
    assert!(message.contains("cargo xtask sandbox up"), "{message}");
}

#[test]
fn wrong_secrets_password() {
    let (code, stderr) = fails(
        xtask()
            .args(["secrets", "decrypt", "--stdout"])
            .env("SECRETS_PASSWORD", "not-the-password")
            .env_remove("SECRETS_PASSWORD_FILE"),
    );
    assert_eq!(code, 1, "{stderr}");
    let message = error_message(&stderr);
    assert!(message.contains("secrets.tfvars.enc") && message.contains("wrong password"), "{message}");
    assert!(message.contains("check SECRETS_PASSWORD") && message.contains("--password-file"), "{message}");
}

#[test]
fn unknown_environment() {
    let (code, stderr) = fails(xtask().args(["--env", "nope", "status"]));
    assert_eq!(code, 1, "{stderr}");
    let message = error_message(&stderr);
    assert!(message.contains("unknown environment \"nope\"") && message.contains("deploy.toml"), "{message}");
    assert!(message.contains("local, preprod, prod, qa, sandbox") && message.contains("--env"), "{message}");
}

#[test]
fn malformed_configuration() {
    let dir = scratch_dir("bad-config");
    let path = dir.join("deploy.toml");
    std::fs::write(&path, "[app]\nname = \"guestbook\"\n\n[environments.local]\nkind = \"docker\"\nhost_prot = 8080\n")
        .unwrap();
    let (code, stderr) = fails(xtask().arg("status").env("XTASK_CONFIG", &path));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{stderr}");
    let message = error_message(&stderr);
    assert!(message.starts_with(&format!("error: {}:6:1: ", path.display())), "{message}");
    assert!(message.contains("unknown field `host_prot`") && message.contains("`host_port`"), "{message}");
}

#[test]
fn unknown_task_is_a_usage_error() {
    let (code, stderr) = fails(xtask().arg("deplo"));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unrecognized subcommand 'deplo'") && stderr.contains("deploy"), "{stderr}");
}

/// An AWS endpoint on loopback where nothing listens: a request fails at
/// once instead of reaching anything.
fn closed_loopback_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Refuses a command that could talk to real AWS: an endpoint must be set
/// and be loopback.
fn assert_never_real_aws(command: &Command) {
    let endpoint = command
        .get_envs()
        .find(|(key, _)| *key == "AWS_ENDPOINT_URL")
        .and_then(|(_, value)| value)
        .map(|value| value.to_string_lossy().into_owned())
        .expect("an AWS test must set AWS_ENDPOINT_URL");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "refusing a non-loopback AWS endpoint {endpoint}");
}

fn which(tool: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(tool)).find(|candidate| candidate.is_file()).ok_or(())
}
