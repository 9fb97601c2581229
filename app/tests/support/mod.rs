//! Helpers shared by the integration tests.

pub mod app_process;
pub mod db;
pub mod http;
