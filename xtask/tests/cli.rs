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

/// The completion script of one shell, checked to name the tasks.
#[test]
fn bench_prints_one_table_and_a_benchmark_that_cannot_run_is_a_failed_row() {
    // secrets is quick; deploy cannot run without the secrets password.
    let (output, stdout, stderr) = run(xtask()
        .args(["bench", "secrets", "deploy"])
        .env_remove("SECRETS_PASSWORD")
        .env_remove("SECRETS_PASSWORD_FILE"));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("figure")
            && header.contains("value")
            && header.contains("goal")
            && header.ends_with("result")
    );
    assert_eq!(stdout.lines().filter(|line| line.starts_with("figure")).count(), 1, "one table:\n{stdout}");
    let encrypt = stdout.lines().find(|line| line.contains("encrypt")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(encrypt.ends_with("pass") || encrypt.ends_with("FAIL"), "{encrypt}");
    let deploy = stdout.lines().find(|line| line.starts_with("benchmark deploy")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(deploy.contains("did not run") && deploy.ends_with("FAIL"), "{deploy}");
    assert!(stderr.contains("SECRETS_PASSWORD"), "the error says what to set:\n{stderr}");
}

/// `--json` lines on stdout, each checked to be a JSON object.
fn ndjson(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|line| {
            let event: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}\n{stdout}"));
            assert!(event["event"].is_string(), "no event name: {line}");
            event
        })
        .collect()
}

#[test]
fn json_makes_every_stdout_line_an_event_and_ends_with_the_task_outcome() {
    // A task whose results are text: they become output events.
    let (output, stdout, stderr) = run(xtask().args(["--json", "--dry-run", "test-local", "--step", "fmt"]));
    assert!(output.status.success(), "{stderr}");
    let events = ndjson(&stdout);
    assert!(events.iter().any(|e| e["event"] == "output" && e["text"].as_str().unwrap().contains("would run")));
    assert!(events.iter().any(|e| e["event"] == "log" && e["level"] == "step"), "{stdout}");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["event"], &last["task"], &last["outcome"]),
        (&"task".into(), &"test-local".into(), &"succeeded".into())
    );
    assert!(!stderr.is_empty(), "people still get the messages on stderr");

    // A failure: the error is an event, the exit code stays.
    let (output, stdout, _) = run(xtask().args(["--json", "--env", "nope", "status"]));
    assert_eq!(output.status.code(), Some(1));
    let events = ndjson(&stdout);
    assert!(events.iter().any(|e| e["event"] == "log" && e["level"] == "error"), "{stdout}");
    let last = events.last().unwrap();
    assert_eq!(last["outcome"], "failed");
    assert!(last["error"].as_str().unwrap().contains("nope"), "{last}");
}

fn completion_script(shell: &str) -> String {
    let (output, stdout, stderr) = run(xtask().args(["completions", shell]));
    assert!(output.status.success(), "completions {shell} failed:\n{}", crate::support::errors_first(&stderr));
    for task in ["deploy", "status", "rollback", "promote", "infra"] {
        assert!(stdout.contains(task), "the {shell} script does not name {task}:\n{stdout}");
    }
    stdout
}

/// Writes a script to a temp file for a shell to source.
fn script_file(shell: &str, script: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("xtask-completions-{}.{shell}", std::process::id()));
    std::fs::write(&path, script).unwrap();
    path
}

/// Runs `program args` and returns its stdout; the shells are installed by
/// .ci/run, so a missing one is a failure, not a skip.
fn shell_output(program: &str, args: &[&str]) -> String {
    let output = std::process::Command::new(program).args(args).output();
    let output = output
        .unwrap_or_else(|err| panic!("running {program} (.ci/run installs it: apt-get install {program}): {err}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

#[test]
fn bash_completion_completes_cargo_xtask_and_keeps_cargos_own() {
    let path = script_file("bash", &completion_script("bash"));
    // A stand-in for cargo's own completion, registered first as rustup's is.
    let probe = format!(
        r#"_cargo() {{ COMPREPLY=(cargo-own); }}
complete -F _cargo cargo
source {path}
complete -p cargo
complete_line() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _cargo_with_xtask cargo "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"; echo "$*: ${{COMPREPLY[*]}}"; }}
complete_line cargo xtask dep
complete_line cargo xtask infra ''
complete_line cargo xtask completions ''
complete_line cargo bu
"#,
        path = path.display()
    );
    let stdout = shell_output("bash", &["--norc", "--noprofile", "-c", &probe]);
    std::fs::remove_file(&path).unwrap();
    assert!(stdout.contains("-F _cargo_with_xtask") && stdout.lines().next().unwrap().ends_with(" cargo"), "{stdout}");
    let line = |prefix: &str| stdout.lines().find(|line| line.starts_with(prefix)).unwrap_or_default().to_owned();
    assert_eq!(line("cargo xtask dep:"), "cargo xtask dep: deploy", "{stdout}");
    assert!(line("cargo xtask infra :").contains("plan apply destroy"), "{stdout}");
    assert!(line("cargo xtask completions :").contains("bash zsh fish"), "{stdout}");
    assert_eq!(line("cargo bu:"), "cargo bu: cargo-own", "other cargo commands keep cargo's completion:\n{stdout}");
}

#[test]
fn zsh_completion_parses_and_defines_the_cargo_subcommand_function() {
    let path = script_file("zsh", &completion_script("zsh"));
    let path_text = path.display().to_string();
    shell_output("zsh", &["-n", &path_text]);
    // cargo's zsh completion calls _cargo-<subcommand>; without it, the
    // script completes `cargo` itself.
    let probe = format!(
        "autoload -U compinit && compinit -u -D && source {path_text} && whence -w _cargo-xtask && print comp=$_comps[cargo]"
    );
    let stdout = shell_output("zsh", &["-f", "-c", &probe]);
    std::fs::remove_file(&path).unwrap();
    assert!(stdout.contains("_cargo-xtask: function"), "{stdout}");
    assert!(stdout.contains("comp=_cargo_xtask_only"), "{stdout}");
}

#[test]
fn fish_completion_completes_cargo_xtask() {
    let path = script_file("fish", &completion_script("fish"));
    let path_text = path.display().to_string();
    shell_output("fish", &["--no-execute", &path_text]);
    let probe = format!(
        "source {path_text}; for line in 'cargo xtask dep' 'cargo xtask infra ' 'cargo xtask --env dev infra plan --st' 'cargo xt'; echo \"== $line\"; complete -C $line; end"
    );
    let stdout = shell_output("fish", &["--no-config", "-c", &probe]);
    std::fs::remove_file(&path).unwrap();
    let completions_of = |line: &str| -> Vec<String> {
        let section = stdout.split(&format!("== {line}\n")).nth(1).unwrap_or_default();
        section
            .lines()
            .take_while(|entry| !entry.starts_with("== "))
            .map(|entry| entry.split('\t').next().unwrap().to_owned())
            .collect()
    };
    assert_eq!(completions_of("cargo xtask dep"), ["deploy"], "{stdout}");
    assert!(
        ["plan", "apply", "destroy"]
            .iter()
            .all(|action| completions_of("cargo xtask infra ").iter().any(|c| c == action)),
        "{stdout}"
    );
    assert_eq!(completions_of("cargo xtask --env dev infra plan --st"), ["--stage"], "{stdout}");
    assert!(completions_of("cargo xt").iter().any(|c| c == "xtask"), "{stdout}");
}
