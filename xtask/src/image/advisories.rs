//! The dependency half of the vulnerability gate: the `Cargo.lock` an image
//! was built from, checked against the RustSec advisory database.
//!
//! Why: the runtime image is `FROM scratch`, and ECR does not scan such an
//! image (basic scanning ends FAILED with `UnsupportedImageError`, enhanced
//! scanning reports `UNSUPPORTED_IMAGE`: ECR user guide, "Troubleshooting
//! image scanning"). Its only software is our binary, whose dependencies
//! are exactly the lock file's packages, so checking them is the scan that
//! matters (what `cargo audit` and `cargo deny check advisories` do, from
//! the same database).
//!
//! The database is a checkout of https://github.com/rustsec/advisory-db:
//! one `crates/<package>/RUSTSEC-YYYY-NNNN.md` per advisory, its metadata in
//! a fenced TOML block (`[advisory]` id, package, title, cvss,
//! informational, withdrawn; `[versions]` patched and unaffected).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use semver::{Version, VersionReq};
use serde::Deserialize;

use crate::{
    config::{GateMode, VulnerabilityPolicy},
    support::{ctx::Ctx, ui},
};

/// Where the database comes from when no `--advisory-db` is given.
pub const ADVISORY_DB_URL: &str = "https://github.com/rustsec/advisory-db.git";

/// One advisory, as far as the gate needs it.
#[derive(Debug, Clone)]
pub struct Advisory {
    pub id: String,
    pub package: String,
    pub title: String,
    pub severity: Severity,
    /// The versions that fix it, as written (`>= 1.2.3`).
    pub patched: Vec<String>,
    patched_reqs: Vec<VersionReq>,
    unaffected_reqs: Vec<VersionReq>,
}

/// A CVSS severity (ECR's names); `Unknown` for an advisory without a
/// score we can compute, which the gate counts as HIGH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    None,
    Low,
    Medium,
    High,
    Unknown,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::None => "NONE",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Unknown => "HIGH (no CVSS score)",
            Severity::Critical => "CRITICAL",
        }
    }

    /// The rank the push gate compares with its threshold (ECR's scale).
    pub fn rank(self) -> u8 {
        match self {
            Severity::None => 0,
            Severity::Low => 1,
            Severity::Medium => 2,
            Severity::High | Severity::Unknown => 3,
            Severity::Critical => 4,
        }
    }
}

/// A locked package that an advisory applies to.
#[derive(Debug, Clone)]
pub struct Finding {
    pub advisory: Advisory,
    pub version: String,
}

impl Finding {
    /// `crate 1.2.3: RUSTSEC-2024-0001 (HIGH) title; fixed in >= 1.2.4`
    pub fn describe(&self) -> String {
        let fixed = if self.advisory.patched.is_empty() {
            "no fixed version".to_owned()
        } else {
            format!("fixed in {}", self.advisory.patched.join(" or "))
        };
        format!(
            "{} {}: {} ({}) {}; {fixed}",
            self.advisory.package,
            self.version,
            self.advisory.id,
            self.advisory.severity.name(),
            self.advisory.title
        )
    }
}

/// Reads every advisory under `<db>/crates`; informational (unmaintained,
/// unsound) and withdrawn ones are left out, as `cargo audit` does by
/// default.
pub fn load_database(db: &Path) -> Result<Vec<Advisory>> {
    let crates = db.join("crates");
    let packages = fs::read_dir(&crates).with_context(|| {
        format!("reading the advisory database {} (a checkout of {ADVISORY_DB_URL})", crates.display())
    })?;
    let mut advisories = Vec::new();
    for package in packages {
        let package = package.with_context(|| format!("listing {}", crates.display()))?.path();
        let Ok(files) = fs::read_dir(&package) else { continue };
        for file in files.flatten().map(|entry| entry.path()) {
            if file.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            if let Some(advisory) = parse_advisory(&text).with_context(|| format!("parsing {}", file.display()))? {
                advisories.push(advisory);
            }
        }
    }
    advisories.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(advisories)
}

/// The packages of a `Cargo.lock` that advisories apply to.
pub fn check(lock: &str, advisories: &[Advisory]) -> Result<Vec<Finding>> {
    let lock: LockFile = toml::from_str(lock).context("parsing Cargo.lock")?;
    let mut findings = Vec::new();
    for package in &lock.package {
        // Only crates.io packages are in the database; ours have no source.
        if package.source.is_none() {
            continue;
        }
        let Ok(version) = Version::parse(&package.version) else { continue };
        for advisory in advisories.iter().filter(|advisory| advisory.package == package.name) {
            let safe = advisory.patched_reqs.iter().chain(&advisory.unaffected_reqs).any(|req| req.matches(&version));
            if !safe {
                findings.push(Finding { advisory: advisory.clone(), version: package.version.clone() });
            }
        }
    }
    Ok(findings)
}

/// The dependency half of the gate, as the scan half sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependencyCheck {
    /// `--fail-on-severity NONE`.
    Off,
    /// Not an image built from this project (no revision label).
    NotApplicable,
    Passed {
        packages: usize,
        advisories: usize,
    },
}

/// What the push gate asks of the dependency check.
pub struct GateRequest<'a> {
    /// The local image about to be pushed.
    pub image: &'a str,
    /// Built from this checkout (its Cargo.lock is the working tree's).
    pub of_this_checkout: bool,
    pub database: Option<&'a Path>,
    /// Findings at or above this rank block the push (ECR's scale).
    pub threshold_rank: u8,
    pub threshold_name: &'a str,
    pub policy: &'a VulnerabilityPolicy,
}

/// Checks the image's dependencies; fails naming every blocking finding
/// (crate, version, advisory, fixed versions). An image without our
/// revision label was not built by `build-image`: its dependencies are
/// unknown here, and ECR's scan alone decides.
pub fn gate(ctx: &Ctx, request: &GateRequest<'_>) -> Result<DependencyCheck> {
    let revision = crate::image::docker::revision_label(&ctx.sh, request.image)?;
    let Some(revision) = revision.as_deref() else {
        ui::info(&format!(
            "dependency check: {} has no org.opencontainers.image.revision label (not built by build-image), so ECR's scan alone decides",
            request.image
        ));
        return Ok(DependencyCheck::NotApplicable);
    };
    let lock = if request.of_this_checkout {
        let path = ctx.root.join("Cargo.lock");
        fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
    } else {
        let image = request.image;
        let show = format!("{revision}:Cargo.lock");
        ctx.sh.cmd("git").args(["show", &show]).quiet().ignore_stderr().read().with_context(|| {
            format!("reading Cargo.lock of {revision}, the commit {image} was built from: fetch that commit")
        })?
    };
    let planned_database = request
        .database
        .map_or(format!("{ADVISORY_DB_URL}, fetched into target/advisory-db"), |path| path.display().to_string());
    if ctx.would(format_args!("check: Cargo.lock of {revision} against the RustSec advisories of {planned_database}")) {
        return Ok(DependencyCheck::NotApplicable);
    }
    let database = database_path(ctx, request.database)?;
    let advisories = load_database(&database)?;
    let packages = toml::from_str::<LockFile>(&lock).map(|lock| lock.package.len()).unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |since| since.as_secs());
    let today = crate::support::time::rfc3339(now as i64);
    let mut blocking = Vec::new();
    for finding in check(&lock, &advisories)? {
        let ignored = request.policy.ignore.iter().find(|ignore| ignore.id == finding.advisory.id);
        match ignored {
            Some(ignore) if ignore.until.as_str() >= &today[..10] => {
                ui::warn(&format!("ignored until {} ({}): {}", ignore.until, ignore.reason, finding.describe()));
                continue;
            }
            Some(ignore) => ui::warn(&format!(
                "the ignore of {} in deploy.toml expired on {}: it counts again",
                ignore.id, ignore.until
            )),
            None => {}
        }
        if finding.advisory.severity.rank() >= request.threshold_rank && request.policy.mode == GateMode::Block {
            blocking.push(finding);
        } else {
            ui::warn(&format!("vulnerable dependency (not blocking): {}", finding.describe()));
        }
    }
    if !blocking.is_empty() {
        let list: Vec<String> = blocking.iter().map(|finding| format!("  {}", finding.describe())).collect();
        bail!(
            "{} was NOT pushed: its Cargo.lock has {} known vulnerabilit{} at or above {} (RustSec):\n{}\nupdate them (`cargo update -p <crate>`), or ignore one in deploy.toml with a reason and an expiry date",
            request.image,
            blocking.len(),
            if blocking.len() == 1 { "y" } else { "ies" },
            request.threshold_name,
            list.join("\n")
        );
    }
    ui::success(&format!(
        "dependency check: {packages} locked packages of {revision} against {} RustSec advisories, nothing at or above {}",
        advisories.len(),
        request.threshold_name
    ));
    Ok(DependencyCheck::Passed { packages, advisories: advisories.len() })
}

/// The database to read: `--advisory-db`, or the checkout kept in
/// `target/advisory-db`, fetched (or brought up to date) first.
pub fn database_path(ctx: &Ctx, given: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let path = ctx.root.join("target/advisory-db");
    let sh = &ctx.sh;
    let fetched = if path.join(".git").exists() {
        ui::step(&format!("updating the RustSec advisory database in {}", path.display()));
        sh.cmd("git").arg("-C").arg(&path).args(["pull", "--ff-only", "--quiet"]).quiet().run()
    } else {
        ui::step(&format!("fetching the RustSec advisory database ({ADVISORY_DB_URL})"));
        sh.cmd("git").args(["clone", "--depth", "1", "--quiet", ADVISORY_DB_URL]).arg(&path).quiet().run()
    };
    fetched.with_context(|| {
        format!(
            "fetching {ADVISORY_DB_URL}: without network, pass --advisory-db PATH (or XTASK_ADVISORY_DB) naming a copy of it"
        )
    })?;
    Ok(path)
}

#[derive(Deserialize)]
struct LockFile {
    #[serde(default)]
    package: Vec<LockedPackage>,
}

#[derive(Deserialize)]
struct LockedPackage {
    name: String,
    version: String,
    source: Option<String>,
}

#[derive(Deserialize)]
struct AdvisoryFile {
    advisory: AdvisoryMeta,
    #[serde(default)]
    versions: Versions,
}

#[derive(Deserialize)]
struct AdvisoryMeta {
    id: String,
    package: String,
    #[serde(default)]
    title: String,
    cvss: Option<String>,
    informational: Option<String>,
    withdrawn: Option<toml::Value>,
}

#[derive(Deserialize, Default)]
struct Versions {
    #[serde(default)]
    patched: Vec<String>,
    #[serde(default)]
    unaffected: Vec<String>,
}

/// The advisory in a database file; `None` for informational or withdrawn.
fn parse_advisory(text: &str) -> Result<Option<Advisory>> {
    let body = text.trim_start().strip_prefix("```toml").context("no ```toml block at the start")?;
    let end = body.find("\n```").context("the ```toml block is not closed")?;
    let file: AdvisoryFile = toml::from_str(&body[..end]).context("reading the advisory's TOML")?;
    if file.advisory.informational.is_some() || file.advisory.withdrawn.is_some() {
        return Ok(None);
    }
    let reqs = |written: &[String]| -> Result<Vec<VersionReq>> {
        written
            .iter()
            .map(|req| VersionReq::parse(req).with_context(|| format!("the version requirement {req:?}")))
            .collect()
    };
    // The title is also the document's first heading; the metadata's wins.
    let title = if file.advisory.title.is_empty() {
        body[end..].lines().find_map(|line| line.strip_prefix("# ")).unwrap_or_default().to_owned()
    } else {
        file.advisory.title.clone()
    };
    Ok(Some(Advisory {
        severity: file.advisory.cvss.as_deref().map_or(Severity::Unknown, cvss_severity),
        patched_reqs: reqs(&file.versions.patched)?,
        unaffected_reqs: reqs(&file.versions.unaffected)?,
        patched: file.versions.patched,
        id: file.advisory.id,
        package: file.advisory.package,
        title,
    }))
}

/// The severity of a CVSS 3.x vector from its base score (FIRST's CVSS
/// v3.1 specification, section 7.1; ratings from section 5). Other
/// versions are `Unknown`.
pub fn cvss_severity(vector: &str) -> Severity {
    match cvss3_base_score(vector) {
        None => Severity::Unknown,
        Some(0.0) => Severity::None,
        Some(score) if score < 4.0 => Severity::Low,
        Some(score) if score < 7.0 => Severity::Medium,
        Some(score) if score < 9.0 => Severity::High,
        Some(_) => Severity::Critical,
    }
}

fn cvss3_base_score(vector: &str) -> Option<f64> {
    let mut metrics = vector.split('/');
    if !matches!(metrics.next()?, "CVSS:3.0" | "CVSS:3.1") {
        return None;
    }
    let metric = |name: &str| vector.split('/').find_map(|part| part.strip_prefix(name)?.strip_prefix(':'));
    let changed = metric("S")? == "C";
    let av = match metric("AV")? {
        "N" => 0.85,
        "A" => 0.62,
        "L" => 0.55,
        "P" => 0.2,
        _ => return None,
    };
    let ac = match metric("AC")? {
        "L" => 0.77,
        "H" => 0.44,
        _ => return None,
    };
    let pr = match (metric("PR")?, changed) {
        ("N", _) => 0.85,
        ("L", false) => 0.62,
        ("L", true) => 0.68,
        ("H", false) => 0.27,
        ("H", true) => 0.5,
        _ => return None,
    };
    let ui = match metric("UI")? {
        "N" => 0.85,
        "R" => 0.62,
        _ => return None,
    };
    let impact_of = |name: &str| match metric(name) {
        Some("H") => Some(0.56),
        Some("L") => Some(0.22),
        Some("N") => Some(0.0),
        _ => None,
    };
    let iss: f64 = 1.0 - (1.0 - impact_of("C")?) * (1.0 - impact_of("I")?) * (1.0 - impact_of("A")?);
    let impact: f64 = if changed { 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02).powi(15) } else { 6.42 * iss };
    if impact <= 0.0 {
        return Some(0.0);
    }
    let exploitability: f64 = 8.22 * av * ac * pr * ui;
    let score =
        if changed { (1.08 * (impact + exploitability)).min(10.0) } else { (impact + exploitability).min(10.0) };
    // Round up to one decimal (the specification's Roundup, without its
    // floating-point correction, which only matters past the 5th decimal).
    Some((score * 10.0).ceil() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"

[[package]]
name = "smallvec"
version = "1.13.2"
source = "registry+https://github.com/rust-lang/crates.io-index"

[[package]]
name = "anyhow"
version = "1.0.86"
source = "registry+https://github.com/rust-lang/crates.io-index"
"#;

    fn advisory(package: &str, extra_meta: &str, versions: &str) -> String {
        format!(
            "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"{package}\"\ndate = \"2099-01-01\"\n{extra_meta}\n\n[versions]\n{versions}\n```\n\n# A test advisory\n\nText.\n"
        )
    }

    fn parsed(text: &str) -> Option<Advisory> {
        parse_advisory(text).unwrap()
    }

    #[test]
    fn a_locked_version_outside_patched_and_unaffected_is_a_finding() {
        let affected = parsed(&advisory(
            "smallvec",
            "cvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H\"",
            "patched = [\">= 1.13.3\"]\nunaffected = [\"< 1.0.0\"]",
        ))
        .unwrap();
        let findings = check(LOCK, std::slice::from_ref(&affected)).unwrap();
        assert_eq!(findings.len(), 1);
        assert_eq!(
            findings[0].describe(),
            "smallvec 1.13.2: RUSTSEC-2099-0001 (CRITICAL) A test advisory; fixed in >= 1.13.3"
        );
        // Patched, or never affected: no finding.
        let patched = parsed(&advisory("smallvec", "", "patched = [\">= 1.13.0\"]")).unwrap();
        let unaffected =
            parsed(&advisory("smallvec", "", "patched = [\">= 2.0.0\"]\nunaffected = [\"< 1.14\"]")).unwrap();
        assert!(check(LOCK, &[patched, unaffected]).unwrap().is_empty());
        // Our own packages (no source) are never matched.
        let ours = parsed(&advisory("app", "", "patched = []")).unwrap();
        assert!(check(LOCK, &[ours]).unwrap().is_empty());
    }

    #[test]
    fn informational_and_withdrawn_advisories_are_left_out() {
        assert!(parsed(&advisory("anyhow", "informational = \"unmaintained\"", "patched = []")).is_none());
        assert!(parsed(&advisory("anyhow", "withdrawn = \"2099-02-01\"", "patched = []")).is_none());
        let no_score = parsed(&advisory("anyhow", "", "patched = []")).unwrap();
        assert_eq!(no_score.severity, Severity::Unknown);
        assert_eq!(no_score.severity.rank(), 3);
        assert!(parse_advisory("no front matter").is_err());
    }

    #[test]
    fn cvss_base_scores_follow_the_specification() {
        // Scores from FIRST's CVSS v3.1 calculator.
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"), Some(9.8));
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"), Some(7.5));
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:L/I:N/A:N"), Some(3.7));
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:C/C:L/I:L/A:N"), Some(6.4));
        assert_eq!(cvss3_base_score("CVSS:3.1/AV:L/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:N"), Some(0.0));
        assert_eq!(cvss_severity("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:H/VI:H/VA:H/SC:N/SI:N/SA:N"), Severity::Unknown);
        assert_eq!(cvss_severity("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H"), Severity::High);
    }

    #[test]
    fn the_database_is_read_from_its_crates_folder() {
        let dir = testkit::ServiceDir::new("xtask-advisory-db");
        let folder = dir.path().join("crates/smallvec");
        fs::create_dir_all(&folder).unwrap();
        fs::write(folder.join("RUSTSEC-2099-0001.md"), advisory("smallvec", "", "patched = [\">= 9\"]")).unwrap();
        fs::write(folder.join("README.txt"), "not an advisory").unwrap();
        let advisories = load_database(dir.path()).unwrap();
        assert_eq!(advisories.len(), 1);
        assert_eq!(advisories[0].title, "A test advisory");
        let err = load_database(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{err:#}").contains("advisory database"), "{err:#}");
    }
}
