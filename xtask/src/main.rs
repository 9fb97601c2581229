//! `cargo xtask`: the task runner that tests, builds, ships and operates the
//! service. `main` only parses the flags, makes the shell and dispatches; every
//! task lives in its own module.

mod advisories;
mod aws;
mod aws_store;
mod bench;
mod build_image;
mod builder_image;
mod ci;
mod cleanup;
mod completions;
mod config;
mod ctx;
mod deploy;
mod deploy_bench;
mod doctor;
mod ecs_deploy;
mod flags;
mod functional;
mod image;
mod image_bench;
mod infra;
mod ledger;
mod local;
mod migrate;
mod ndjson;
mod promote;
mod push;
mod reconcile;
mod rollout;
mod sandbox;
mod secrets;
mod setup;
mod smoke_image;
mod test_docker;
mod test_local;
mod ui;
mod util;

use std::{process::ExitCode, time::Instant};

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    setup::put_tools_on_path();
    let matches = flags::Cli::command().get_matches();
    let task = matches.subcommand_name().unwrap_or_default().to_owned();
    let cli = flags::Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    ui::init(cli.global.verbosity());
    let capture = match cli.global.json.then(ndjson::Capture::start).transpose() {
        Ok(capture) => capture,
        Err(err) => {
            ui::error(&format!("{err:#}"));
            return ExitCode::FAILURE;
        }
    };
    cleanup::install_interrupt_handler();
    let started = Instant::now();
    let result = ctx::Ctx::new(cli.global).and_then(|ctx| cli.task.run(&ctx));
    cleanup::wait_for_interrupt_handler();
    if let Err(err) = &result {
        ui::error(&format!("{err:#}"));
    }
    ndjson::event(serde_json::json!({
        "event": "task",
        "task": task,
        "outcome": if result.is_ok() { "succeeded" } else { "failed" },
        "seconds": started.elapsed().as_secs_f64(),
        "error": result.as_ref().err().map(|err| format!("{err:#}")),
    }));
    if let Some(capture) = capture {
        capture.finish();
    }
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
