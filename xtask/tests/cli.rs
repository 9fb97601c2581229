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
