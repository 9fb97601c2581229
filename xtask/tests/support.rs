//! Helpers shared by the integration tests (both test binaries, each of
//! which uses some of them).
#![allow(dead_code)]

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

/// GET over a new connection (HTTP/1.0) to 127.0.0.1: status and body, or
/// None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = raw_get(port, path, "localhost")?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n")?.1.to_owned()))
}

/// The status line and headers a GET over a new connection (HTTP/1.0, Host
/// 127.0.0.1:port) is answered with; empty when nothing answers.
pub fn http_head(port: u16, path: &str) -> String {
    let response = raw_get(port, path, &format!("127.0.0.1:{port}")).unwrap_or_default();
    response.split_once("\r\n\r\n").map_or(response.clone(), |(head, _)| head.to_owned() + "\r\n")
}

/// The whole answer to `GET path` (HTTP/1.0, `Host: host`) on 127.0.0.1:port.
fn raw_get(port: u16, path: &str, host: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Runs and returns the output; stdout and stderr as text.
pub fn run(command: &mut Command) -> (Output, String, String) {
    let output = command.output().unwrap_or_else(|err| panic!("running {command:?}: {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// A failed command's log for an assertion message: its error lines
/// first (each with the few lines after it, where Terraform's and xtask's
/// errors explain themselves), then the whole log. A log of Terraform's
/// plans runs to hundreds of lines, and a CI page that shows only its start
/// and end would otherwise cut the error out.
pub fn errors_first(log: &str) -> String {
    const AFTER: usize = 6;
    let lines: Vec<&str> = log.lines().collect();
    let mut keep = vec![false; lines.len()];
    for (index, line) in lines.iter().enumerate() {
        let lower = line.to_lowercase();
        if lower.contains("error") || line.contains("panicked") {
            for flag in keep.iter_mut().skip(index).take(AFTER + 1) {
                *flag = true;
            }
        }
    }
    let errors: Vec<&str> = lines.iter().zip(&keep).filter(|(_, keep)| **keep).map(|(line, _)| *line).collect();
    if errors.is_empty() {
        return log.to_owned();
    }
    format!("--- its error lines:\n{}\n--- its whole log:\n{log}", errors.join("\n"))
}

/// True while a process with this pid exists.
pub fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.contains(") Z "))
}

#[test]
fn errors_first_puts_the_error_and_what_follows_it_before_the_whole_log() {
    let plan: String = (0..200).map(|line| format!("  + attribute {line}\n")).collect();
    let log = format!("==> terraform plan\n{plan}│ Error: creating RDS DB Instance\n│ \n│ because\nend\n");
    let shown = errors_first(&log);
    assert!(
        shown.starts_with(
            "--- its error lines:\n│ Error: creating RDS DB Instance\n│ \n│ because\nend\n--- its whole log:\n"
        ),
        "{shown}"
    );
    assert!(shown.ends_with(&log), "{shown}");
    assert_eq!(errors_first("all fine\n"), "all fine\n");
}
