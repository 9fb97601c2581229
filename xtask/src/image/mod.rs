//! The image family: the app's runtime image, how it is named, built, made
//! reproducible and checked, and the names the family shares.
//!
//! - `source`: where an image comes from (commit, uncommitted changes,
//!   branch, SOURCE_DATE_EPOCH) and the tags that name it;
//! - `build_args`: what a release build is given (the app's identity, the
//!   build mode, the build arguments);
//! - `docker_build`: the BuildKit client, `docker build` as a value, and
//!   what the build context must hold;
//! - `reproducible`: the step after the build that makes image IDs
//!   reproducible;
//! - `offline`: builds without network (local base images, vendored crates);
//! - `rds_ca`: the RDS CA bundle the image carries (AWS's online, the
//!   host's offline) and the sandbox's RDS CA;
//! - `docker`: commands against the Docker daemon, and what it says about
//!   images and containers;
//! - `postgres`: the PostgreSQL the images are tested against;
//! - the tasks: `build` (build-image), `builder` (builder-image), `smoke`
//!   (smoke-image) and `advisories` (the dependency gate of a push).

pub mod advisories;
pub mod build;
pub mod build_args;
pub mod builder;
pub mod docker;
pub mod docker_build;
pub mod offline;
pub mod postgres;
pub mod rds_ca;
pub mod reproducible;
pub mod smoke;
pub mod source;

/// The Dockerfile, relative to the build context (the project root).
pub const DOCKERFILE: &str = "docker/Dockerfile";
/// How to get Docker, for the errors that find it missing.
pub const DOCKER_HINT: &str = "install Docker (Debian: `apt-get install docker.io`) and start the daemon";
/// The in-container test command; the test stage's CMD says the same (a unit
/// test checks), so extra arguments can be appended to it.
pub const CONTAINER_TEST_COMMAND: [&str; 5] = ["cargo", "test", "--frozen", "-p", "app"];

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[test]
    fn the_test_stage_runs_the_command_test_docker_extends() {
        let dockerfile = fs::read_to_string(crate::support::fs::project_root().join(DOCKERFILE)).unwrap();
        let expected = format!(
            "CMD [{}]",
            CONTAINER_TEST_COMMAND.iter().map(|word| format!("\"{word}\"")).collect::<Vec<_>>().join(", ")
        );
        assert!(dockerfile.lines().any(|line| line.trim() == expected), "docker/Dockerfile lacks `{expected}`");
    }
}
