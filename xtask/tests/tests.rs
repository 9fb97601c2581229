//! The task runner's fast integration tests (tier 1, `cargo xtask
//! test-local`): the real xtask binary against real tools, but no Docker,
//! Terraform or emulator. The end-to-end tests are in `e2e.rs`. One module
//! per task, helpers in `support`.

mod support;

mod architecture;
mod cli;
mod errors;
mod output;
mod pipelines;
mod secrets;
