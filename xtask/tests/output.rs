//! Console output: plain lines in CI and in pipes, a spinner on a terminal
//! (with or without colour), GitHub Actions groups and job summaries.
//!
//! The task that shows progress is `test-local --step fmt`: a real long
//! step that takes about a second. Whether the formatting check passes does
//! not matter here (others may be mid-edit), only how it is shown.

use std::{path::PathBuf, process::Command};

use crate::support::{run, xtask};

const FMT_STEP: [&str; 3] = ["test-local", "--step", "fmt"];

#[test]
fn ci_and_pipes_get_plain_lines_without_escape_codes_or_spinner_frames() {
    // CI=true alone (no NO_COLOR), then no CI but stderr a pipe. TERM is set
    // as on a developer's machine: rustfmt colours a pipe when it is.
    let mut in_ci = xtask();
    in_ci.env_remove("NO_COLOR").env("TERM", "xterm-256color");
    let mut in_a_pipe = xtask();
    in_a_pipe.env_remove("CI").env_remove("NO_COLOR").env_remove("GITHUB_ACTIONS").env("TERM", "xterm-256color");
    for (name, command) in [("CI=true", &mut in_ci), ("a pipe", &mut in_a_pipe)] {
        let (_, stdout, stderr) = run(command.args(FMT_STEP));
        assert!(stderr.contains("==> cargo fmt --check"), "{name}: the step is not announced:\n{stderr}");
        assert!(stderr.contains("test-local summary"), "{name}: no summary:\n{stderr}");
        for (stream, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(!text.contains('\x1b'), "{name}: an escape code on {stream}:\n{text:?}");
            assert!(!text.contains('\r'), "{name}: a carriage return on {stream}:\n{text:?}");
            assert!(spinner_frames(text).is_empty(), "{name}: spinner frames on {stream}:\n{text}");
            assert!(!text.contains("::group::"), "{name}: GitHub groups outside GitHub Actions:\n{text}");
        }
    }
}

#[test]
fn a_terminal_gets_a_spinner_naming_the_step() {
    let (_, output) = on_a_terminal(&[]);
    let plain = strip_escapes(&output);
    let frames = spinner_frames(&output);
    assert!(!frames.is_empty(), "no spinner frame on the terminal:\n{output:?}");
    assert!(
        frames.iter().any(|frame| plain.contains(&format!("{frame} cargo fmt "))),
        "no spinner frame beside the step name:\n{plain}"
    );
    // The spinner redraws its line in place and is cleared at the end.
    assert!(output.contains("\r\x1b[2K"), "the spinner line is never redrawn in place:\n{output:?}");
    assert!(output.contains("\x1b[1;34m==>\x1b[0m cargo fmt --check"), "no colour on a terminal:\n{output:?}");
    assert!(plain.contains("test-local summary"), "{plain}");
}

#[test]
fn no_color_keeps_the_spinner_but_drops_colour() {
    let (_, output) = on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(!spinner_frames(&output).is_empty(), "NO_COLOR must not stop the spinner:\n{output:?}");
    let colour_codes = sgr_sequences(&output);
    assert!(colour_codes.is_empty(), "colour codes despite NO_COLOR: {colour_codes:?}\n{output:?}");
    assert!(output.contains("==> cargo fmt --check"), "{output:?}");
}

#[test]
fn github_actions_gets_groups_and_a_job_summary_appended() {
    let dir = temp_dir("summary");
    let summary = dir.join("step-summary.md");
    std::fs::write(&summary, "## an earlier step's summary\n").unwrap();
    let (output, stdout, stderr) =
        run(xtask().args(FMT_STEP).env("GITHUB_ACTIONS", "true").env("GITHUB_STEP_SUMMARY", &summary));
    let written = std::fs::read_to_string(&summary).unwrap();

    let group = stderr.find("::group::cargo fmt").unwrap_or_else(|| panic!("no group for the step:\n{stderr}"));
    let end = stderr.find("::endgroup::").unwrap_or_else(|| panic!("the group is not closed:\n{stderr}"));
    assert!(group < end, "{stderr}");
    assert!(!stdout.contains("::group::"), "groups belong with the step's output on stderr:\n{stdout}");

    assert!(written.starts_with("## an earlier step's summary\n"), "the summary file was truncated:\n{written}");
    assert!(written.contains("### test-local summary"), "{written}");
    assert!(written.contains("| step | result | time | note |\n| --- | --- | ---: | --- |\n"), "{written}");
    let row = written.lines().find(|line| line.starts_with("| cargo fmt --check | "));
    assert!(row.is_some_and(|row| row.contains("pass") || row.contains("**FAIL**")), "no row for the step:\n{written}");
    assert!(written.contains("| **total** |"), "{written}");

    // A summary that cannot be written is a warning, not a failure.
    let unwritable = dir.join("no-such-directory/step-summary.md");
    let (second, _, second_stderr) =
        run(xtask().args(FMT_STEP).env("GITHUB_ACTIONS", "true").env("GITHUB_STEP_SUMMARY", &unwritable));
    assert!(second_stderr.contains("warning: cannot append the summary to GITHUB_STEP_SUMMARY"), "{second_stderr}");
    assert!(!second_stderr.contains("::error::cannot append"), "{second_stderr}");
    assert_eq!(second.status.code(), output.status.code(), "the summary changed the outcome:\n{second_stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `test-local --step fmt` under a pseudo-terminal (`script` from
/// util-linux), outside CI; returns its exit status and everything the
/// terminal received.
fn on_a_terminal(env: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let command_line = format!("'{}' {}", env!("CARGO_BIN_EXE_xtask"), FMT_STEP.join(" "));
    let mut script = Command::new("script");
    script
        .args(["-qfec", &command_line, "/dev/null"])
        .current_dir(crate::support::project_root())
        .stdin(std::process::Stdio::null())
        .env_remove("CI")
        .env_remove("NO_COLOR")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("XTASK_ENV")
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120");
    for (name, value) in env {
        script.env(name, value);
    }
    let (output, stdout, stderr) = run(&mut script);
    assert!(stderr.is_empty(), "script(1) complained: {stderr}");
    (output.status, stdout)
}

/// indicatif's spinner frames are braille patterns (U+2800 to U+28FF).
fn spinner_frames(text: &str) -> Vec<char> {
    let mut frames: Vec<char> = text.chars().filter(|c| ('\u{2800}'..='\u{28ff}').contains(c)).collect();
    frames.sort_unstable();
    frames.dedup();
    frames
}

/// Colour codes: `ESC [ ... m`.
fn sgr_sequences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("\x1b[") {
        let rest = &text[start + 2..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';')).unwrap_or(rest.len());
        if rest[end..].starts_with('m') {
            found.push(format!("ESC[{}m", &rest[..end]));
        }
    }
    found
}

/// `text` without CSI escape sequences.
fn strip_escapes(text: &str) -> String {
    let mut plain = String::new();
    let mut characters = text.chars();
    while let Some(character) = characters.next() {
        if character == '\x1b' {
            if characters.next() == Some('[') {
                for next in characters.by_ref() {
                    if ('\x40'..='\x7e').contains(&next) {
                        break;
                    }
                }
            }
        } else {
            plain.push(character);
        }
    }
    plain
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-output-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
