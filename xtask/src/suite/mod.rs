//! The test suites and the CI pipeline: the tiers `test-all` runs, the
//! functional tests against a running stack, and `ci`.

pub mod ci;
pub mod functional;
pub mod test_docker;
pub mod test_local;
