//! `cargo xtask`: the task runner that tests, builds, ships and operates the
//! service. `main` only parses the flags, makes the shell and dispatches; every
//! task lives in its own module.

// Output goes through `support::ui` (the console, stderr; plans and results
// on stdout) and `support::ndjson` (`--json`), nowhere else.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod aws;
mod bench;
mod completions;
mod config;
mod deploy;
mod flags;
mod http;
mod image;
mod ledger;
mod local;
mod sandbox;
mod secrets;
mod setup;
mod suite;
mod support;

use std::{process::ExitCode, time::Instant};

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    setup::put_tools_on_path();
    let matches = flags::Cli::command().get_matches();
    let task = matches.subcommand_name().unwrap_or_default().to_owned();
    let cli = flags::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    support::ui::init(cli.global.verbosity());
    let capture = match cli.global.json.then(support::ndjson::Capture::start).transpose() {
        Ok(capture) => capture,
        Err(err) => {
            support::ui::error(&format!("{err:#}"));
            return ExitCode::FAILURE;
        }
    };
    support::cleanup::install_interrupt_handler();
    let started = Instant::now();
    let result = support::ctx::Ctx::new(cli.global).and_then(|ctx| cli.task.run(&ctx));
    support::cleanup::wait_for_interrupt_handler();
    if let Err(err) = &result {
        support::ui::error(&format!("{err:#}"));
    }
    support::events::Event::Task {
        task: &task,
        outcome: if result.is_ok() { "succeeded" } else { "failed" },
        seconds: started.elapsed().as_secs_f64(),
        error: result.as_ref().err().map(|err| format!("{err:#}")),
    }
    .emit();
    if let Some(capture) = capture {
        capture.finish();
    }
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
