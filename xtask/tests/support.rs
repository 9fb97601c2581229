//! Helpers shared by the integration tests.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

/// The project root (xtask's parent directory).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// A command running the xtask binary built for these tests, from the
/// project root, with CI-style plain output.
pub fn xtask() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.current_dir(project_root()).env("CI", "true").env("NO_COLOR", "1").env_remove("XTASK_ENV");
    command
}

/// The `{"event":"result",...}` line of a `--json` run's NDJSON stdout,
/// checking on the way that every line is a JSON object.
pub fn json_result(stdout: &str) -> serde_json::Value {
    let mut result = None;
    for line in stdout.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("--json printed a line that is not JSON ({err}): {line}"));
        assert!(event.is_object(), "not an object: {line}");
        if event["event"] == "result" {
            result = Some(event);
        }
    }
    result.unwrap_or_else(|| panic!("--json printed no result event:\n{stdout}"))
}

/// Runs and returns the output; stdout and stderr as text.
pub fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// True while a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains(") Z "))
}
