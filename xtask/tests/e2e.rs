//! The task runner's end-to-end tests (`cargo xtask test-all`): the real
//! xtask binary against Docker, a registry, Terraform, PostgreSQL and the
//! sandbox. Each test has its own sandbox, environment name, state
//! directory and ports, so they run several at a time. One module per
//! task, helpers in `support`.

mod support;

mod ci;
mod deploy;
mod images;
mod local;
mod local_deploy;
mod oidc;
mod push;
mod sandbox;
mod static_checks;
