//! `cargo xtask`: the task runner that tests, builds, ships and operates the
//! service. `main` only parses the flags, makes the shell and dispatches; every
//! task lives in its own module.

mod aws;
mod aws_store;
mod bench;
mod build_image;
mod builder_image;
mod cleanup;
mod config;
mod deploy;
mod doctor;
mod ecs_deploy;
mod flags;
mod image;
mod image_bench;
mod infra;
mod ledger;
mod local;
mod migrate;
mod promote;
mod push;
mod rollout;
mod sandbox;
mod secrets;
mod smoke_image;
mod test_docker;
mod test_local;
mod ui;
mod util;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = flags::Cli::parse();
    ui::init(&cli.global);
    cleanup::install_interrupt_handler();
    let result = util::Ctx::new(cli.global).and_then(|ctx| cli.task.run(&ctx));
    cleanup::wait_for_interrupt_handler();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            ui::error(&format!("{err:#}"));
            ExitCode::FAILURE
        }
    }
}
