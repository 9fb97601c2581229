//! Console output. Everything goes to stderr (stdout is for results a script
//! may capture). On a terminal long steps show a spinner (`progress`); in CI
//! or without a terminal the output is plain lines with no escape codes; on
//! GitHub Actions long steps are folded into `::group::`s, errors become
//! `::error::` annotations and summaries also go to `$GITHUB_STEP_SUMMARY`.
//! `NO_COLOR` turns colour off, not the spinner (https://no-color.org).

#![allow(clippy::print_stdout, clippy::print_stderr, reason = "the one module that prints")]

use std::{
    collections::VecDeque,
    fs,
    io::{IsTerminal, Write},
    path::PathBuf,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

use crate::support::cleanup;
use crate::support::time::format_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug)]
struct Style {
    verbosity: Verbosity,
    color: bool,
    /// Spinners: stderr is a terminal and this is not CI.
    animate: bool,
    github_actions: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

pub fn init(verbosity: Verbosity) {
    let animate = std::io::stderr().is_terminal() && !in_ci();
    // no-color.org: set and not empty.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let _ = STYLE.set(Style {
        verbosity,
        color: animate && !no_color,
        animate,
        github_actions: std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
    });
}

fn style() -> &'static Style {
    STYLE.get_or_init(|| Style { verbosity: Verbosity::Normal, color: false, animate: false, github_actions: false })
}

pub fn verbosity() -> Verbosity {
    style().verbosity
}

/// True when xtask colours its output; children that colour a pipe on
/// their own are told not to when it is false.
pub fn color() -> bool {
    style().color
}

/// True under CI (`CI=true` or `CI=1`).
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn paint(code: &str, text: &str) -> String {
    if style().color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
}

/// A task step starts.
pub fn step(message: &str) {
    crate::support::events::log("step", message);
    if verbosity() != Verbosity::Quiet {
        print_line(&format!("{} {message}", paint("1;34", "==>")));
    }
}

pub fn info(message: &str) {
    crate::support::events::log("info", message);
    if verbosity() != Verbosity::Quiet {
        print_line(message);
    }
}

/// Only with `--verbose`.
pub fn detail(message: &str) {
    if verbosity() == Verbosity::Verbose {
        print_line(&paint("2", message));
    }
}

pub fn warn(message: &str) {
    crate::support::events::log("warning", message);
    print_line(&format!("{} {message}", paint("1;33", "warning:")));
}

pub fn error(message: &str) {
    crate::support::events::log("error", message);
    if style().github_actions {
        // One annotation line; GitHub wants newlines escaped.
        print_line(&format!("::error::{}", message.replace('%', "%25").replace('\n', "%0A")));
    }
    print_line(&format!("{} {message}", paint("1;31", "error:")));
}

pub fn success(message: &str) {
    crate::support::events::log("ok", message);
    if verbosity() != Verbosity::Quiet {
        print_line(&format!("{} {message}", paint("1;32", "ok:")));
    }
}

/// A plain line on stderr, with no progress bar to suspend: for the Ctrl-C
/// handler's thread, which must not wait on a lock the interrupted task
/// may hold.
pub fn notice(message: &str) {
    eprintln!("{message}");
}

/// A question on the terminal, the answer typed on the same line.
pub fn ask(question: &str) {
    eprint!("{question}");
}

/// A line of a `--dry-run` plan (`would run: ...`), on stdout: the plan is
/// the task's result, which a script may capture.
pub fn plan(line: &str) {
    println!("{line}");
}

/// A task's result on stdout: JSON for scripts (one line), or text a user
/// reads (`version: 1.2.3`, a list of releases).
pub fn result(text: &str) {
    println!("{text}");
}

/// One row of an end-of-task summary.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    pub name: String,
    pub outcome: Outcome,
    pub duration: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// Prints a per-step table with timings (always, even with --quiet: it is
/// the result of the task). On GitHub Actions the same table, in Markdown,
/// is appended to the job summary (`$GITHUB_STEP_SUMMARY`).
pub fn print_summary(title: &str, rows: &[SummaryRow]) {
    use crate::support::events::{Event, StepOutcome, SummaryStep};
    let steps = rows
        .iter()
        .map(|row| {
            let (outcome, reason) = match &row.outcome {
                Outcome::Passed => (StepOutcome::Passed, None),
                Outcome::Failed(why) => (StepOutcome::Failed, Some(why.as_str())),
                Outcome::Skipped(why) => (StepOutcome::Skipped, Some(why.as_str())),
            };
            SummaryStep { step: &row.name, outcome, seconds: row.duration.as_secs_f64(), reason }
        })
        .collect();
    Event::Summary { title, steps }.emit();
    let width = rows.iter().map(|row| row.name.len()).max().unwrap_or(4).max(4);
    let mut lines = vec![String::new(), title.to_owned()];
    for row in rows {
        let (label, note) = match &row.outcome {
            Outcome::Passed => (paint("32", "pass"), String::new()),
            Outcome::Failed(why) => (paint("31", "FAIL"), format!("  {why}")),
            Outcome::Skipped(why) => (paint("33", "skip"), format!("  {why}")),
        };
        lines.push(format!("  {:<width$}  {label}  {:>7}{note}", row.name, format_duration(row.duration)));
    }
    let total: Duration = rows.iter().map(|row| row.duration).sum();
    lines.push(format!("  {:<width$}        {:>7}", "total", format_duration(total)));
    print_line(&lines.join("\n"));
    if let Some(path) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        // The job summary is a report about the task, not its result: a
        // failure to write it must not fail the task.
        if let Err(err) = append_to_file(&path, &markdown_summary(title, rows)) {
            warn(&format!("cannot append the summary to GITHUB_STEP_SUMMARY ({}): {err}", path.display()));
        }
    }
}

/// The summary as a Markdown table for a GitHub job summary.
pub fn markdown_summary(title: &str, rows: &[SummaryRow]) -> String {
    let mut markdown =
        format!("### {}\n\n| step | result | time | note |\n| --- | --- | ---: | --- |\n", markdown_cell(title));
    for row in rows {
        let (label, note) = match &row.outcome {
            Outcome::Passed => ("pass", ""),
            Outcome::Failed(why) => ("**FAIL**", why.as_str()),
            Outcome::Skipped(why) => ("skip", why.as_str()),
        };
        markdown.push_str(&format!(
            "| {} | {label} | {} | {} |\n",
            markdown_cell(&row.name),
            format_duration(row.duration),
            markdown_cell(note)
        ));
    }
    let total: Duration = rows.iter().map(|row| row.duration).sum();
    markdown.push_str(&format!("| **total** | | {} | |\n\n", format_duration(total)));
    markdown
}

/// Text that cannot break out of its table cell.
fn markdown_cell(text: &str) -> String {
    text.replace('\\', "\\\\").replace('|', "\\|").replace(['\r', '\n'], " ")
}

fn append_to_file(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().append(true).create(true).open(path)?;
    file.write_all(text.as_bytes())
}

/// The spinner on screen, if any: other output is printed above it.
static ACTIVE_BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);
/// GitHub Actions groups do not nest: an inner long step stays in the
/// outer one's group.
static GROUP_OPEN: AtomicBool = AtomicBool::new(false);

/// Prints a line (or several) to stderr, above the spinner when one runs.
fn print_line(text: &str) {
    let bar = ACTIVE_BAR.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
    match bar {
        Some(bar) => bar.suspend(|| eprintln!("{text}")),
        None => eprintln!("{text}"),
    }
}

/// How many lines of a failed step's captured output are printed.
const FAILURE_TAIL_LINES: usize = 40;

/// A long step in progress. On a terminal: a spinner with the step's name,
/// the elapsed time and the latest line of the step's output, which is
/// captured (to `target/xtask/logs/<step>.log`, its tail printed if the step
/// fails; with `--verbose` every line is printed above the spinner).
/// Elsewhere: plain lines, inside a `::group::` on GitHub Actions. Dropping
/// it clears the spinner and closes the group; `finish` also says how long
/// the step took.
pub struct Progress {
    name: String,
    started: Instant,
    bar: Option<ProgressBar>,
    group: bool,
    captured: Mutex<Captured>,
    closed: bool,
    /// Clears the spinner if xtask is interrupted.
    _clear_guard: Option<cleanup::CleanupGuard>,
}

#[derive(Default)]
struct Captured {
    tail: VecDeque<String>,
    lines: usize,
    log: Option<(PathBuf, fs::File)>,
}

/// Starts showing a long step (see `Progress`).
pub fn progress(name: &str) -> Progress {
    let style = style();
    let mut active = ACTIVE_BAR.lock().unwrap_or_else(|poison| poison.into_inner());
    // One spinner at a time: a step inside another one prints plain lines.
    let bar = (style.animate && style.verbosity != Verbosity::Quiet && active.is_none()).then(|| {
        let template = if style.color {
            "{spinner:.cyan} {prefix:.bold} {elapsed:.dim} {wide_msg:.dim}"
        } else {
            "{spinner} {prefix} {elapsed} {wide_msg}"
        };
        let spinner_style = ProgressStyle::with_template(template).expect("the spinner template is valid");
        let bar = ProgressBar::new_spinner().with_style(spinner_style).with_prefix(name.to_owned());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar.tick();
        *active = Some(bar.clone());
        bar
    });
    drop(active);
    let group = bar.is_none() && style.github_actions && !GROUP_OPEN.swap(true, Ordering::SeqCst);
    if group {
        print_line(&format!("::group::{}", name.replace(['\r', '\n'], " ")));
    }
    let captured = Captured { log: bar.as_ref().and_then(|_| open_log(name)), ..Captured::default() };
    let clear_guard =
        bar.clone().map(|bar| cleanup::register("clear the progress spinner", move || bar.finish_and_clear()));
    Progress {
        name: name.to_owned(),
        started: Instant::now(),
        bar,
        group,
        captured: Mutex::new(captured),
        closed: false,
        _clear_guard: clear_guard,
    }
}

impl Progress {
    /// True when the step's output should be piped to `output_line` rather
    /// than streamed: a spinner owns the terminal's last line.
    pub fn captures_output(&self) -> bool {
        self.bar.is_some()
    }

    /// One line of the step's output.
    pub fn output_line(&self, line: &str) {
        let Some(bar) = &self.bar else {
            info(&printable(line));
            return;
        };
        let mut captured = self.captured.lock().unwrap_or_else(|poison| poison.into_inner());
        captured.lines += 1;
        if captured.tail.len() == FAILURE_TAIL_LINES {
            captured.tail.pop_front();
        }
        captured.tail.push_back(line.to_owned());
        if let Some((_, log)) = &mut captured.log {
            let _ = writeln!(log, "{line}");
        }
        drop(captured);
        if verbosity() == Verbosity::Verbose {
            bar.suspend(|| eprintln!("{}", printable(line)));
        } else {
            let message = plain_text(line);
            if !message.is_empty() {
                bar.set_message(message);
            }
        }
    }

    /// Sets the spinner's message (nothing without a spinner): for steps
    /// whose progress lines are xtask's own, printed by the caller.
    pub fn message(&self, text: &str) {
        if let Some(bar) = &self.bar {
            bar.set_message(plain_text(text));
        }
    }

    /// Ends the step. A success says how long it took; a failure prints the
    /// tail of the captured output (streamed output is already on screen).
    pub fn finish(mut self, success: bool) {
        self.close();
        let elapsed = format_duration(self.started.elapsed());
        if success {
            info(&format!("{}: done in {elapsed}", self.name));
            return;
        }
        let captured = self.captured.lock().unwrap_or_else(|poison| poison.into_inner());
        if self.bar.is_none() || captured.lines == 0 || verbosity() == Verbosity::Verbose {
            return;
        }
        let log =
            captured.log.as_ref().map(|(path, _)| format!(", all of it in {}", path.display())).unwrap_or_default();
        let mut lines = vec![format!(
            "{} failed after {elapsed}; its last {} lines of output{log}:",
            self.name,
            captured.tail.len()
        )];
        lines.extend(captured.tail.iter().map(|line| format!("  {}", printable(line))));
        print_line(&lines.join("\n"));
    }

    fn close(&mut self) {
        if std::mem::replace(&mut self.closed, true) {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            ACTIVE_BAR.lock().unwrap_or_else(|poison| poison.into_inner()).take();
        }
        if self.group {
            print_line("::endgroup::");
            GROUP_OPEN.store(false, Ordering::SeqCst);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.close();
    }
}

/// `target/xtask/logs/<step>.log`, truncated; None if it cannot be made
/// (the spinner still works, only the full log is missing).
fn open_log(name: &str) -> Option<(PathBuf, fs::File)> {
    let dir = crate::support::fs::project_root().join("target/xtask/logs");
    let path = dir.join(format!("{}.log", file_slug(name)));
    fs::create_dir_all(&dir).ok()?;
    let file = fs::File::create(&path).ok()?;
    Some((path, file))
}

/// A step name as a file name: `docker build --target runtime` becomes
/// `docker-build-target-runtime`.
fn file_slug(name: &str) -> String {
    let mut slug = String::new();
    for character in name.chars() {
        if character.is_ascii_alphanumeric() || character == '_' || character == '.' {
            slug.push(character.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    if slug.is_empty() { "step".to_owned() } else { slug.chars().take(80).collect() }
}

/// A line of a child's output as a spinner message: what a terminal would
/// show after the last carriage return, without escape sequences or other
/// control characters.
fn plain_text(line: &str) -> String {
    let visible = line.rsplit('\r').find(|part| !part.trim().is_empty()).unwrap_or_default();
    strip_escapes(visible).replace('\t', " ").trim().to_owned()
}

/// A line of a child's output to print: without escape sequences when
/// colour is off (rustfmt, for one, colours a pipe whenever TERM is set).
fn printable(line: &str) -> String {
    if style().color { line.to_owned() } else { strip_escapes(line) }
}

/// `text` without terminal escape sequences and control characters other
/// than tabs. `console`'s parser knows what build tools print (colours,
/// cursor movement, erasing, `?25l`, OSC titles and links, `ESC ( B`); of a
/// rarer CSI sequence (`ESC [ s`) only the ESC goes.
fn strip_escapes(text: &str) -> String {
    console::strip_ansi_codes(text).chars().filter(|&character| character == '\t' || !character.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinner_messages_are_plain_text() {
        assert_eq!(plain_text("\x1b[1;32m   Compiling\x1b[0m app v0.1.0"), "Compiling app v0.1.0");
        assert_eq!(plain_text("10%\r50%\r90%\r"), "90%");
        assert_eq!(plain_text("#5 [2/3] RUN\tcargo build\x07"), "#5 [2/3] RUN cargo build");
        assert_eq!(plain_text(""), "");
        assert_eq!(plain_text("\x1b(B\x1b[m\x1b[32m+ x\x1b]0;title\x07 y"), "+ x y");
        assert_eq!(strip_escapes("\ta\x1b[31mb\x1b(Bc\x1b[0m"), "\tabc");
        assert_eq!(
            strip_escapes("\x1b[?25l\x1b[2K\x1b[1A\x1b[38;5;196mred\x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\"),
            "redlink"
        );
    }

    #[test]
    fn step_names_become_file_names() {
        assert_eq!(file_slug("docker build --target runtime"), "docker-build-target-runtime");
        assert_eq!(file_slug("terraform apply"), "terraform-apply");
        assert_eq!(file_slug("../.."), "..-..");
        assert_eq!(file_slug("--"), "step");
    }

    #[test]
    fn markdown_summary_is_one_table_with_escaped_cells() {
        let rows = vec![
            SummaryRow {
                name: "cargo fmt --check".to_owned(),
                outcome: Outcome::Passed,
                duration: Duration::from_secs(1),
            },
            SummaryRow {
                name: "a | b".to_owned(),
                outcome: Outcome::Failed("exit 1\nsee above".to_owned()),
                duration: Duration::from_secs(90),
            },
            SummaryRow {
                name: "terraform".to_owned(),
                outcome: Outcome::Skipped("no infra".to_owned()),
                duration: Duration::ZERO,
            },
        ];
        let markdown = markdown_summary("test-local summary", &rows);
        let expected = "### test-local summary\n\n\
            | step | result | time | note |\n\
            | --- | --- | ---: | --- |\n\
            | cargo fmt --check | pass | 1.0s |  |\n\
            | a \\| b | **FAIL** | 1m30s | exit 1 see above |\n\
            | terraform | skip | 0.0s | no infra |\n\
            | **total** | | 1m31s | |\n\n";
        assert_eq!(markdown, expected);
    }

    #[test]
    fn summary_is_appended_to_the_file_never_truncating_it() {
        let path = std::env::temp_dir().join(format!("xtask-step-summary-{}.md", std::process::id()));
        fs::write(&path, "earlier step\n").unwrap();
        append_to_file(&path, "| a |\n").unwrap();
        append_to_file(&path, "| b |\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "earlier step\n| a |\n| b |\n");
        fs::remove_file(&path).unwrap();
    }
}
