//! The command line itself: help, global flags, configuration errors.

use crate::support::{run, xtask};

#[test]
fn help_lists_every_task_with_one_line() {
    let (output, stdout, _) = run(xtask().arg("--help"));
    assert!(output.status.success());
    for task in ["test-local", "doctor", "bench"] {
        let line = stdout.lines().find(|line| line.trim_start().starts_with(task));
        assert!(line.is_some_and(|line| line.len() > task.len() + 10), "no description line for {task}:\n{stdout}");
    }
    for flag in ["--env", "--yes", "--dry-run", "--verbose", "--quiet"] {
        assert!(stdout.contains(flag), "global flag {flag} missing from help:\n{stdout}");
    }
}

#[test]
fn unknown_environment_is_an_error_naming_the_known_ones() {
    let (output, stdout, stderr) = run(xtask().args(["doctor", "--env", "staging"]));
    assert!(!output.status.success());
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("unknown environment \"staging\""), "{all}");
    assert!(all.contains("sandbox"), "{all}");
}

#[test]
fn infra_refuses_the_local_docker_environment() {
    let (output, _, stderr) = run(xtask().args(["infra", "plan"]));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("runs on the local Docker engine"), "{stderr}");
}

#[test]
fn malformed_configuration_names_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("xtask-bad-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("deploy.toml");
    std::fs::write(&path, "[app]\nname = \"guestbook\"\n\n[environments.local]\nkind = \"docker\"\nhost_prot = 8080\n")
        .unwrap();
    let (output, stdout, stderr) = run(xtask().args(["doctor"]).env("XTASK_CONFIG", &path));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!output.status.success());
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("deploy.toml:6:1:") && all.contains("host_prot"), "{all}");
}
