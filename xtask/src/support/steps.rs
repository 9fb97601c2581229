//! One runner for a task's steps (test-local, the functional tests; made to
//! fit a deploy's and `ci`'s too): each named step is announced, run, timed
//! and recorded, becomes a `step` event with `--json`, and the run ends with
//! a summary table.
//!
//! The caller says what a failed step means for the ones after it: a deploy
//! or `ci` stops (each step needs the one before), a test suite goes on (one
//! run shows everything that needs fixing). After Ctrl-C no further step
//! starts; the ones left are shown as skipped.

use std::{
    fmt,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};

use crate::support::{
    cleanup,
    events::{Event, StepOutcome},
    ui::{self, Outcome, SummaryRow},
};

/// What a failed step does to the steps after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// They are skipped, "<failed step> failed" said as the reason.
    Stop,
    /// They still run.
    Continue,
}

/// How a step is announced on stderr before it runs (and when skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Announce {
    /// `==> <name>`.
    Name,
    /// `==> <prefix><name>`, e.g. `ci: ` for ci's steps.
    Prefixed(String),
    /// Nothing: the steps say themselves what they did (the functional
    /// checks print what passed).
    Nothing,
}

/// The steps of one run, in the order they ran.
pub struct Steps {
    title: String,
    on_failure: OnFailure,
    announce: Announce,
    rows: Vec<SummaryRow>,
}

impl Steps {
    /// No steps yet; `title` heads the summary. Steps are announced by name
    /// unless [`Steps::announce`] says otherwise.
    pub fn new(title: impl Into<String>, on_failure: OnFailure) -> Steps {
        Steps { title: title.into(), on_failure, announce: Announce::Name, rows: Vec::new() }
    }

    pub fn announce(self, announce: Announce) -> Steps {
        Steps { announce, ..self }
    }

    /// Runs a step whose result the caller needs (a deploy's image, its
    /// task definition). Its error is the caller's to return, so it is not
    /// printed here: it comes back naming the step.
    pub fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        if let Some(why) = self.reason_to_skip() {
            self.record(name, Outcome::Skipped(why.clone()), Duration::ZERO);
            return Err(anyhow!("step {name:?} did not run: {why}"));
        }
        self.say(name);
        let started = Instant::now();
        let result = step();
        let outcome = match &result {
            Ok(_) => Outcome::Passed,
            Err(err) => Outcome::Failed(first_line(err)),
        };
        self.record(name, outcome, started.elapsed());
        result.with_context(|| format!("step {name:?} failed"))
    }

    /// Runs a step that says how it went: passed, or skipped and why. A
    /// failure is printed here and recorded, and the caller goes on to the
    /// next step (which is skipped under [`OnFailure::Stop`]); [`Steps::finish`]
    /// reports it.
    pub fn check(&mut self, name: &str, step: impl FnOnce() -> Result<Outcome>) {
        if let Some(why) = self.reason_to_skip() {
            self.record(name, Outcome::Skipped(why), Duration::ZERO);
            return;
        }
        self.say(name);
        let started = Instant::now();
        let outcome = step().unwrap_or_else(|err| {
            ui::error(&format!("{name}: {err:#}"));
            Outcome::Failed(first_line(&err))
        });
        self.record(name, outcome, started.elapsed());
    }

    /// A step that does not run, and why (shown like a step that ran).
    pub fn skip(&mut self, name: &str, why: &str) {
        self.say(&format!("{name}: skipped, {why}"));
        self.record(name, Outcome::Skipped(why.to_owned()), Duration::ZERO);
    }

    /// The names of the steps that failed.
    pub fn failed(&self) -> Vec<&str> {
        self.rows.iter().filter(|row| matches!(row.outcome, Outcome::Failed(_))).map(|row| row.name.as_str()).collect()
    }

    /// The summary table so far (a deploy prints it before it returns).
    pub fn print_summary(&self) {
        ui::print_summary(&self.title, &self.rows);
    }

    /// Prints the summary; an error when a step failed or Ctrl-C cut the
    /// run short.
    pub fn finish(self) -> Result<(), StepsFailed> {
        self.print_summary();
        let failed: Vec<String> = self.failed().into_iter().map(str::to_owned).collect();
        if failed.is_empty() && !cleanup::interrupted() { Ok(()) } else { Err(StepsFailed { failed }) }
    }

    /// Why the next step does not run: an earlier one failed (when that
    /// stops the run), or Ctrl-C.
    fn reason_to_skip(&self) -> Option<String> {
        if cleanup::interrupted() {
            return Some("interrupted".to_owned());
        }
        match (self.on_failure, self.failed().first()) {
            (OnFailure::Stop, Some(failed)) => Some(format!("{failed} failed")),
            _ => None,
        }
    }

    fn say(&self, text: &str) {
        match &self.announce {
            Announce::Name => ui::step(text),
            Announce::Prefixed(prefix) => ui::step(&format!("{prefix}{text}")),
            Announce::Nothing => {}
        }
    }

    fn record(&mut self, name: &str, outcome: Outcome, duration: Duration) {
        let (state, reason, error) = match &outcome {
            Outcome::Passed => (StepOutcome::Passed, None, None),
            Outcome::Failed(error) => (StepOutcome::Failed, None, Some(error.clone())),
            Outcome::Skipped(why) => (StepOutcome::Skipped, Some(why.as_str()), None),
        };
        Event::Step { step: name, outcome: state, seconds: duration.as_secs_f64(), reason, error }.emit();
        self.rows.push(SummaryRow { name: name.to_owned(), outcome, duration });
    }
}

/// Why a run of steps did not pass: the steps that failed, or (none)
/// Ctrl-C.
#[derive(Debug)]
pub struct StepsFailed {
    pub failed: Vec<String>,
}

impl fmt::Display for StepsFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.failed.is_empty() {
            write!(f, "interrupted")
        } else {
            write!(f, "{} step(s) failed: {}", self.failed.len(), self.failed.join(", "))
        }
    }
}

impl std::error::Error for StepsFailed {}

/// The first line of an error and its causes: a summary row is one line.
fn first_line(err: &anyhow::Error) -> String {
    format!("{err:#}").lines().next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use anyhow::bail;

    use super::*;

    fn outcomes(steps: &Steps) -> Vec<(&str, &Outcome)> {
        steps.rows.iter().map(|row| (row.name.as_str(), &row.outcome)).collect()
    }

    #[test]
    fn a_suite_runs_every_step_and_names_the_failed_ones() {
        let mut steps = Steps::new("suite", OnFailure::Continue).announce(Announce::Nothing);
        steps.check("fmt", || Ok(Outcome::Passed));
        steps.check("clippy", || bail!("two warnings\nand more"));
        steps.check("terraform", || Ok(Outcome::Skipped("no Terraform code".to_owned())));
        steps.check("test", || bail!("one test failed"));
        assert_eq!(
            outcomes(&steps),
            [
                ("fmt", &Outcome::Passed),
                ("clippy", &Outcome::Failed("two warnings".to_owned())),
                ("terraform", &Outcome::Skipped("no Terraform code".to_owned())),
                ("test", &Outcome::Failed("one test failed".to_owned())),
            ]
        );
        let failed = steps.finish().unwrap_err();
        assert_eq!(failed.failed, ["clippy", "test"]);
        assert_eq!(failed.to_string(), "2 step(s) failed: clippy, test");
    }

    #[test]
    fn a_deploy_gets_each_steps_value_and_stops_at_the_first_failure() {
        let mut steps = Steps::new("deploy to dev", OnFailure::Stop).announce(Announce::Nothing);
        let image = steps.run("build and push", || Ok("repo@sha256:1".to_owned())).unwrap();
        assert_eq!(image, "repo@sha256:1");
        steps.skip("migrate", "no new migrations");
        let err = steps.run("roll out", || -> Result<()> { bail!("no capacity") }).unwrap_err();
        assert_eq!(format!("{err:#}"), "step \"roll out\" failed: no capacity");
        let mut ran = false;
        let after = steps.run("smoke check", || {
            ran = true;
            Ok(())
        });
        assert!(!ran && after.is_err(), "a step after a failed one ran");
        steps.check("functional tests", || Ok(Outcome::Passed));
        assert_eq!(
            outcomes(&steps)[1..],
            [
                ("migrate", &Outcome::Skipped("no new migrations".to_owned())),
                ("roll out", &Outcome::Failed("no capacity".to_owned())),
                ("smoke check", &Outcome::Skipped("roll out failed".to_owned())),
                ("functional tests", &Outcome::Skipped("roll out failed".to_owned())),
            ]
        );
        assert_eq!(steps.finish().unwrap_err().failed, ["roll out"]);
    }

    #[test]
    fn a_run_where_every_step_passed_or_was_skipped_passes() {
        let mut steps = Steps::new("ci", OnFailure::Stop).announce(Announce::Prefixed("ci: ".to_owned()));
        steps.check("build-image", || Ok(Outcome::Passed));
        steps.skip("push", "--skip");
        assert!(steps.failed().is_empty());
        assert!(steps.finish().is_ok());
    }
}
