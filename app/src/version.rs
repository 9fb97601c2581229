//! Build identity of this binary, baked in by `build.rs`.
//!
//! Served at `/version`, shown on the home page and printed by `app version`,
//! so an operator can tell exactly which commit is running where.

use serde::Serialize;

/// What was built, from which commit, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Crate name (`app`).
    pub name: &'static str,
    /// Crate version from Cargo.toml.
    pub version: &'static str,
    /// Full commit sha, or `unknown` when built without git metadata.
    pub git_sha: &'static str,
    /// RFC 3339 UTC build time (from `SOURCE_DATE_EPOCH` when set).
    pub build_time: &'static str,
}

/// The version of the running binary.
pub const VERSION: VersionInfo = VersionInfo {
    name: env!("CARGO_PKG_NAME"),
    version: env!("CARGO_PKG_VERSION"),
    git_sha: env!("APP_GIT_SHA"),
    build_time: env!("APP_BUILD_TIME"),
};

impl VersionInfo {
    /// The first 12 characters of the sha: unambiguous in practice and short
    /// enough for a page footer or a log line.
    pub fn short_sha(&self) -> &'static str {
        let sha = self.git_sha;
        sha.get(..12).unwrap_or(sha)
    }
}

impl std::fmt::Display for VersionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} (git {}, built {})", self.name, self.version, self.git_sha, self.build_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_comes_from_cargo_and_build_script() {
        assert_eq!(VERSION.name, "app");
        assert_eq!(VERSION.version, env!("CARGO_PKG_VERSION"));
        assert!(!VERSION.git_sha.is_empty());
        // The build time must be RFC 3339 UTC: chrono agrees it parses.
        let parsed = chrono::DateTime::parse_from_rfc3339(VERSION.build_time).unwrap();
        assert_eq!(parsed.offset().local_minus_utc(), 0);
        assert!(VERSION.build_time.ends_with('Z'));
    }

    #[test]
    fn display_and_short_sha() {
        let v = VersionInfo {
            name: "app",
            version: "1.2.3",
            git_sha: "0123456789abcdef0123",
            build_time: "2024-01-02T03:04:05Z",
        };
        assert_eq!(v.short_sha(), "0123456789ab");
        assert_eq!(v.to_string(), "app 1.2.3 (git 0123456789abcdef0123, built 2024-01-02T03:04:05Z)");
        assert_eq!(VersionInfo { git_sha: "unknown", ..v }.short_sha(), "unknown");
    }
}
