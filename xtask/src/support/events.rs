//! The `--json` events: one typed family, each variant one kind of line,
//! told apart by its `event` field (cargo's `machine_message.rs` is the
//! model). Tasks emit these; `ndjson.rs` writes them, and turns anything
//! else on stdout into `output` events.
//!
//! The kinds a consumer reads:
//! - `task`: the last line of every run, how it went;
//! - `step`: a step of a task passed, failed or was skipped (deploy, ci,
//!   test-local, the functional tests);
//! - `summary`: a task's table of steps;
//! - `result` / `deployed`: what a task produced (push and build-image /
//!   deploy);
//! - `log` and `output`: console messages and other stdout lines.

use std::{
    io::Write,
    sync::atomic::{AtomicBool, Ordering},
};

use serde::Serialize;
use serde_json::{Map, Value};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// `--json` is on: events are written (`ndjson::Capture::start` says so).
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// True with `--json`.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// A console message as an event.
pub fn log(level: &str, message: &str) {
    Event::Log { level, message }.emit();
}

/// One line of `--json` output.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    Task {
        task: &'a str,
        outcome: &'a str,
        seconds: f64,
        error: Option<String>,
    },
    Step {
        step: &'a str,
        outcome: StepOutcome,
        seconds: f64,
        /// Why it was skipped.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'a str>,
        /// The first line of its error.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    Summary {
        title: &'a str,
        steps: Vec<SummaryStep<'a>>,
    },
    /// A task's result, its fields its own (push: the image by digest and its
    /// scan; build-image: the tags).
    Result(Map<String, Value>),
    Deployed {
        environment: &'a str,
        image: &'a str,
        task_definition: &'a str,
        git_sha: &'a str,
        /// The environment ran this already: nothing was rolled out.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        unchanged: bool,
    },
    Log {
        level: &'a str,
        message: &'a str,
    },
    Output {
        text: &'a str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Passed,
    Failed,
    Skipped,
}

/// A row of a `summary` event.
#[derive(Debug, Serialize)]
pub struct SummaryStep<'a> {
    pub step: &'a str,
    pub outcome: StepOutcome,
    pub seconds: f64,
    pub reason: Option<&'a str>,
}

impl Event<'_> {
    /// The event as a JSON object.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self)
            .unwrap_or_else(|err| serde_json::json!({ "event": "error", "error": err.to_string() }))
    }

    /// Writes the event as one line on stdout (only with `--json`).
    pub fn emit(&self) {
        if enabled() {
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{}", self.to_value());
            let _ = stdout.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_their_kind_and_only_the_fields_that_apply() {
        let skipped = Event::Step {
            step: "roll out",
            outcome: StepOutcome::Skipped,
            seconds: 0.0,
            reason: Some("unchanged"),
            error: None,
        };
        assert_eq!(
            skipped.to_value().to_string(),
            r#"{"event":"step","outcome":"skipped","reason":"unchanged","seconds":0.0,"step":"roll out"}"#
        );
        let deployed = Event::Deployed {
            environment: "dev",
            image: "r@sha256:1",
            task_definition: "td:2",
            git_sha: "abc",
            unchanged: false,
        };
        assert_eq!(deployed.to_value()["event"], "deployed");
        assert!(deployed.to_value().get("unchanged").is_none());
        let mut fields = Map::new();
        fields.insert("image".to_owned(), "r@sha256:1".into());
        assert_eq!(Event::Result(fields).to_value().to_string(), r#"{"event":"result","image":"r@sha256:1"}"#);
        let task = Event::Task { task: "deploy", outcome: "succeeded", seconds: 1.5, error: None };
        assert_eq!(task.to_value()["error"], Value::Null);
    }
}
