//! The support layer: what every task needs and that knows no task. Nothing
//! here imports anything above it (see ARCHITECTURE.md).

pub mod cleanup;
pub mod ctx;
pub mod daemon;
pub mod events;
pub mod exec;
pub mod fs;
pub mod ndjson;
pub mod process;
pub mod prompt;
pub mod secret;
pub mod steps;
pub mod time;
pub mod ui;
