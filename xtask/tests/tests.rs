//! Integration tests of `cargo xtask`: one test binary, one module per task,
//! helpers in `support`. They run the real xtask binary against real tools.

mod support;

mod cli;
mod deploy;
mod images;
mod local;
mod local_deploy;
mod push;
mod sandbox;
mod secrets;
