//! Everything that reaches AWS: the API boundary (`api`, values only), the
//! process that holds the SDK (`client`), the ledger's DynamoDB store, and
//! the tasks that deploy, push and apply Terraform.

pub mod api;
pub mod client;
pub mod deploy;
pub mod ecr;
pub mod infra;
pub mod init_stamp;
pub mod migrations;
pub mod operate;
pub mod push;
pub mod reconcile;
pub mod rollout;
pub mod scan;
pub mod service;
pub mod session;
pub mod store;
