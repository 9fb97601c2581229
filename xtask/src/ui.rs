//! Console output. Everything goes to stderr (stdout is for results a script
//! may capture). In CI or without a terminal the output is plain lines; on
//! GitHub Actions errors become `::error::` annotations.

use std::{io::IsTerminal, sync::OnceLock, time::Duration};

use crate::flags::GlobalArgs;

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
    github_actions: bool,
}

static STYLE: OnceLock<Style> = OnceLock::new();

pub fn init(global: &GlobalArgs) {
    let verbosity = if global.quiet {
        Verbosity::Quiet
    } else if global.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let _ = STYLE.set(Style {
        verbosity,
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() && !in_ci(),
        github_actions: std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true"),
    });
}

fn style() -> &'static Style {
    STYLE.get_or_init(|| Style { verbosity: Verbosity::Normal, color: false, github_actions: false })
}

pub fn verbosity() -> Verbosity {
    style().verbosity
}

/// True under CI (`CI=true`) or when stderr is not a terminal.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

fn paint(code: &str, text: &str) -> String {
    if style().color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
}

/// A task step starts.
pub fn step(message: &str) {
    if verbosity() != Verbosity::Quiet {
        eprintln!("{} {message}", paint("1;34", "==>"));
    }
}

pub fn info(message: &str) {
    if verbosity() != Verbosity::Quiet {
        eprintln!("{message}");
    }
}

/// Only with `--verbose`.
pub fn detail(message: &str) {
    if verbosity() == Verbosity::Verbose {
        eprintln!("{}", paint("2", message));
    }
}

pub fn warn(message: &str) {
    eprintln!("{} {message}", paint("1;33", "warning:"));
}

pub fn error(message: &str) {
    if style().github_actions {
        // One annotation line; GitHub wants newlines escaped.
        eprintln!("::error::{}", message.replace('%', "%25").replace('\n', "%0A"));
    }
    eprintln!("{} {message}", paint("1;31", "error:"));
}

pub fn success(message: &str) {
    if verbosity() != Verbosity::Quiet {
        eprintln!("{} {message}", paint("1;32", "ok:"));
    }
}

pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", duration.as_secs() / 60, duration.as_secs() % 60)
    }
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
/// the result of the task).
pub fn print_summary(title: &str, rows: &[SummaryRow]) {
    let width = rows.iter().map(|row| row.name.len()).max().unwrap_or(4).max(4);
    eprintln!();
    eprintln!("{title}");
    for row in rows {
        let (label, note) = match &row.outcome {
            Outcome::Passed => (paint("32", "pass"), String::new()),
            Outcome::Failed(why) => (paint("31", "FAIL"), format!("  {why}")),
            Outcome::Skipped(why) => (paint("33", "skip"), format!("  {why}")),
        };
        eprintln!("  {:<width$}  {label}  {:>7}{note}", row.name, format_duration(row.duration));
    }
    let total: Duration = rows.iter().map(|row| row.duration).sum();
    eprintln!("  {:<width$}        {:>7}", "total", format_duration(total));
}
