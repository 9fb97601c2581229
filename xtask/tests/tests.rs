//! Integration tests of `cargo xtask`: one test binary, one module per task,
//! helpers in `support`. They run the real xtask binary against real tools.

mod support;

mod ci;
mod cli;
mod deploy;
mod errors;
mod images;
mod local;
mod local_deploy;
mod output;
mod pipelines;
mod push;
mod sandbox;
mod secrets;
