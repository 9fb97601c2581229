//! `test-local` and `doctor`: the everyday tasks that need no AWS.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use crate::support::{process_alive, project_root, run, xtask};

/// A `test-local` that runs only one quick testkit test, in its own target
/// directory (the outer `cargo test` holds the main one).
fn nested_test_local(hold_seconds: u32) -> Command {
    let mut command = xtask();
    command
        .args(["test-local", "--step", "test", "--", "-p", "testkit", "database_url_is_reachable"])
        .env("CARGO_TARGET_DIR", project_root().join("target/nested-test-local"))
        .env("TESTKIT_HOLD_SECONDS", hold_seconds.to_string())
        .env_remove("DATABASE_URL");
    command
}

/// Parses "started a throwaway Postgres on ... (pid N, data DIR)".
fn parse_postgres_line(line: &str) -> Option<(u32, PathBuf)> {
    let rest = line.split("(pid ").nth(1)?;
    let (pid, rest) = rest.split_once(", data ")?;
    Some((pid.parse().ok()?, PathBuf::from(rest.trim_end_matches(')'))))
}

#[test]
fn test_local_starts_a_throwaway_postgres_and_removes_it() {
    let (output, _, stderr) = run(&mut nested_test_local(0));
    assert!(output.status.success(), "test-local failed:\n{}", crate::support::errors_first(&stderr));
    let (pid, data_dir) = stderr
        .lines()
        .find_map(parse_postgres_line)
        .unwrap_or_else(|| panic!("no throwaway Postgres line in:\n{stderr}"));
    assert!(stderr.contains("test-local summary"), "{stderr}");
    assert!(stderr.contains("cargo test (unit, app, fast task runner tests)") && stderr.contains("pass"), "{stderr}");
    assert!(!process_alive(pid), "postgres {pid} still runs");
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());
}

#[test]
fn test_local_cleans_up_after_ctrl_c() {
    use std::os::unix::process::CommandExt;
    let mut child = nested_test_local(300)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("starting xtask test-local");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut seen = String::new();
    let (pid, data_dir) = loop {
        let line = lines.next().expect("xtask ended before starting Postgres").unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if let Some(found) = parse_postgres_line(&line) {
            break found;
        }
    };
    assert!(process_alive(pid));
    // Give the nested cargo time to build and start the holding test; the
    // interrupt must land while the database is in use.
    std::thread::sleep(Duration::from_secs(8));
    // A terminal's Ctrl-C goes to the whole foreground process group.
    let group = format!("-{}", child.id());
    assert!(Command::new("kill").args(["-INT", "--", &group]).status().unwrap().success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "xtask did not exit 30 s after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert_eq!(status.code(), Some(130), "exit status after Ctrl-C; output:\n{seen}{}", rest.join("\n"));
    assert!(!process_alive(pid), "postgres {pid} survived the interrupt");
    assert!(!data_dir.exists(), "{} survived the interrupt", data_dir.display());
}

#[test]
fn doctor_reports_a_tool_missing_from_path() {
    let bin = std::env::temp_dir().join(format!("xtask-doctor-path-{}", std::process::id()));
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["cargo", "git", "docker", "openssl", "docker-registry", "htpasswd", "initdb", "postgres"] {
        if let Ok(path) = which_path(tool) {
            let _ = std::os::unix::fs::symlink(path, bin.join(tool));
        }
    }
    let (output, stdout, stderr) = run(xtask().arg("doctor").env("PATH", &bin));
    std::fs::remove_dir_all(&bin).unwrap();
    assert_eq!(output.status.code(), Some(1), "doctor must fail:\n{stdout}{stderr}");
    let terraform_line = stdout.lines().find(|line| line.contains("terraform")).expect("a terraform line");
    assert!(terraform_line.contains("MISSING"), "{terraform_line}");
    assert!(terraform_line.contains("developer.hashicorp.com/terraform/install"), "{terraform_line}");
    let git_line = stdout.lines().find(|line| line.contains(" git ")).expect("a git line");
    assert!(git_line.trim_start().starts_with("ok"), "{git_line}");
    assert!(stderr.contains("terraform"), "the final error names terraform: {stderr}");
}

#[test]
fn doctor_and_setup_check_report_the_same_prerequisites() {
    // One list of checks (setup's), two tasks: every row `setup --check`
    // prints is a row of doctor's report, word for word.
    let (_, _, setup_stderr) = run(xtask().args(["setup", "--check"]));
    let (_, doctor_stdout, _) = run(xtask().arg("doctor"));
    let rows: Vec<&str> =
        setup_stderr.lines().filter(|line| line.starts_with("  ok ") || line.starts_with("  MISSING ")).collect();
    assert!(rows.len() >= 15, "setup --check printed too few rows:\n{setup_stderr}");
    for row in rows {
        let name = row.split_whitespace().nth(1).unwrap();
        let doctor_row = doctor_stdout
            .lines()
            .find(|line| line.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("doctor has no {name} row:\n{doctor_stdout}"));
        let words = |line: &str| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(words(doctor_row), words(row), "doctor and setup --check disagree on {name}");
    }
}

fn which_path(tool: &str) -> Result<PathBuf, ()> {
    let output = Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_err(|_| ())?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if path.is_empty() { Err(()) } else { Ok(PathBuf::from(path)) }
}
