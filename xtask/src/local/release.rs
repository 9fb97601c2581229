//! One release of a local environment, shared by `deploy`, `rollback` and
//! the switch benchmark: the image (built, named or pinned), the database,
//! the migrations, the new container and its health gate, the switch, the
//! old container's drain, and the ledger record of it all.
//!
//! The order is what keeps the URL up: the old container serves until the
//! new one has answered `/readyz` (and `/version`, with the expected commit),
//! then the proxy sends new requests to the new one and reports when the
//! requests in flight on the old one are answered, and only then does the
//! old container get SIGTERM. A release that fails at any step before the
//! switch leaves the old one serving untouched.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{Target, containers, database, proxy, short_id, short_sha};
use crate::http;
use crate::{
    image::{
        build_args::{AppIdentity, BuildMode, release_build_args},
        docker::image_id,
        docker_build::{BuildKit, DockerBuild},
        offline::prepare_build,
        reproducible::make_reproducible,
        source::{Source, image_tags},
    },
    ledger::{self, LedgerStore, Outcome, Release, ReleaseKind},
    support::events::{Event, StepOutcome},
    support::{cleanup, ctx::Ctx, ui},
};

/// The longest a switch waits for the requests in flight on the old release
/// (normally milliseconds); past it, the old container's own drain on
/// SIGTERM finishes them.
const SWITCH_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Debug, Clone)]
pub enum ImageChoice {
    /// Build the working tree (`<app>:git-<sha12>[-dirty]`), like
    /// `cargo xtask build-image`.
    BuildWorkingTree { mode: BuildMode },
    /// Any image on this machine: a tag or an ID.
    Reference(String),
    /// An image ID from the ledger, with the commit it was recorded with.
    Pinned { id: String, git_sha: String },
}

#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub kind: ReleaseKind,
    pub image: ImageChoice,
    pub migrate: bool,
    /// Check `/version` of the new container before the switch and through
    /// the stable URL after it.
    pub smoke: bool,
    pub health_timeout: Duration,
    /// Roll out even when the environment already serves this exact image.
    pub force: bool,
}

/// What a release did and how long it took.
#[derive(Debug, Clone)]
pub struct ReleaseReport {
    pub image_id: String,
    pub git_sha: String,
    /// `git_sha` of `/version` through the stable URL, after the switch.
    pub served_sha: Option<String>,
    pub total: Duration,
    /// From `docker run` to the first 200 on `/readyz`.
    pub ready_after: Duration,
    /// From that 200 to the old containers stopped: the switch as a whole.
    pub ready_to_old_stopped: Duration,
    /// SIGTERM to exit of the old containers (their drain).
    pub old_stop: Duration,
    pub replaced: Vec<String>,
    /// The environment already served this image: nothing was started,
    /// stopped or recorded.
    pub unchanged: bool,
}

/// Runs one release; prints the URL and the version it serves last (stdout).
pub fn release(ctx: &Ctx, target: &Target, request: &ReleaseRequest) -> Result<ReleaseReport> {
    let started = Instant::now();
    let _lock = target.lock(ctx)?;
    let planned = plan_image(ctx, target, &request.image)?;
    if !request.force
        && let Some(image_id) = known_image_id(ctx, &planned)
        && let Some(live) = serving_release(ctx, target, &image_id)?
    {
        return Ok(unchanged(target, &live, started));
    }
    let journal = Journal::start(ctx, target, request.kind, &planned)?;
    match run(ctx, target, request, planned, &journal, started) {
        Ok(report) if report.unchanged => {
            journal.discard()?;
            Ok(report)
        }
        Ok(report) => {
            journal.finish(Outcome::Succeeded)?;
            {
                let switch = if report.replaced.is_empty() {
                    "the first release of the environment".to_owned()
                } else {
                    format!(
                        "the old release switched off and drained in {}",
                        crate::support::time::format_duration(report.ready_to_old_stopped)
                    )
                };
                ctx.success(&format!(
                    "{} {} (git {}) is live on {} after {}: ready in {}, {switch}",
                    kind_word(request.kind),
                    short_id(&report.image_id),
                    short_sha(&report.git_sha),
                    target.environment,
                    crate::support::time::format_duration(report.total),
                    crate::support::time::format_duration(report.ready_after),
                ));
            }
            ui::result(&format!("url: {}", target.url()));
            ui::result(&match &report.served_sha {
                Some(sha) => format!("version: {sha}"),
                // Only a dry run skips the check it was asked for.
                None if request.smoke => format!("version: {} (expected)", report.git_sha),
                None => format!("version: {} (not checked: --skip-smoke)", report.git_sha),
            });
            Ok(report)
        }
        Err(err) => {
            let reason = format!("{err:#}").lines().next().unwrap_or_default().chars().take(300).collect();
            journal.finish(Outcome::Failed(reason))?;
            Err(err)
        }
    }
}

/// The image's ID when it is known without building: a reference or a
/// pinned ID, or the tag of a clean working tree's build that exists
/// already (the same commit builds the same image).
fn known_image_id(ctx: &Ctx, planned: &PlannedImage) -> Option<String> {
    let reference = match (&planned.choice, &planned.source) {
        (ImageChoice::BuildWorkingTree { .. }, Some(source)) if !source.dirty => planned.reference.clone(),
        (ImageChoice::BuildWorkingTree { .. }, _) => return None,
        _ => planned.reference.clone(),
    };
    image_id(&ctx.sh, &reference).ok()
}

/// The live release when it runs `image_id` and serves the stable URL now:
/// its container runs, and the proxy sends requests to it.
fn serving_release(ctx: &Ctx, target: &Target, image_id: &str) -> Result<Option<Release>> {
    let history = target.ledger().history(&target.environment, usize::MAX)?;
    let Some(live) = ledger::live_release(&history) else { return Ok(None) };
    if live.image != image_id || proxy::running_pid(target).is_none() {
        return Ok(None);
    }
    let upstream = proxy::upstream_port(target);
    let serving = containers::list(&ctx.sh, target)?.into_iter().any(|container| {
        Some(&container.name) == live.runs_as.as_ref() && container.running && Some(container.port) == upstream
    });
    Ok(serving.then(|| live.clone()))
}

/// Says that nothing changed, in words and as a skipped step (`--json`).
fn unchanged(target: &Target, live: &Release, started: Instant) -> ReleaseReport {
    let why = format!(
        "{} already runs {} (git {}, released {}): nothing to do (--force rolls it out again)",
        target.environment,
        short_id(&live.image),
        short_sha(&live.git_sha),
        live.started_at
    );
    ui::success(&why);
    Event::Step { step: "roll out", outcome: StepOutcome::Skipped, seconds: 0.0, reason: Some(&why), error: None }
        .emit();
    ui::result(&format!("url: {}", target.url()));
    ui::result(&format!("version: {}", live.git_sha));
    ReleaseReport {
        image_id: live.image.clone(),
        git_sha: live.git_sha.clone(),
        served_sha: None,
        total: started.elapsed(),
        ready_after: Duration::ZERO,
        ready_to_old_stopped: Duration::ZERO,
        old_stop: Duration::ZERO,
        replaced: Vec::new(),
        unchanged: true,
    }
}

/// The image before it is resolved to an ID: enough to record the attempt.
struct PlannedImage {
    choice: ImageChoice,
    /// A tag, an ID or `<tag to build>`, for the record until the ID is known.
    reference: String,
    /// The commit `/version` must report, when known.
    expected_sha: Option<String>,
    source: Option<Source>,
}

fn plan_image(ctx: &Ctx, target: &Target, choice: &ImageChoice) -> Result<PlannedImage> {
    match choice {
        ImageChoice::BuildWorkingTree { mode } => {
            let source = Source::read(&ctx.sh)?;
            let tag = image_tags(&target.app_name, &source, *mode).remove(0);
            Ok(PlannedImage {
                choice: choice.clone(),
                reference: tag,
                expected_sha: Some(source.git_sha.clone()),
                source: Some(source),
            })
        }
        ImageChoice::Reference(reference) => {
            let Ok(revision) = crate::image::docker::revision_label(&ctx.sh, reference) else {
                bail!(
                    "there is no image {reference:?} on this machine (`docker image ls {}` lists the app's images)",
                    target.app_name
                );
            };
            Ok(PlannedImage {
                choice: choice.clone(),
                reference: reference.clone(),
                expected_sha: revision,
                source: None,
            })
        }
        ImageChoice::Pinned { id, git_sha } => {
            if !crate::image::docker::image_exists(&ctx.sh, id) {
                bail!(
                    "the image {id} is no longer on this machine (removed or pruned): rebuild its commit {} and deploy it",
                    short_sha(git_sha)
                );
            }
            Ok(PlannedImage {
                choice: choice.clone(),
                reference: id.clone(),
                expected_sha: (git_sha != "unknown").then(|| git_sha.clone()),
                source: None,
            })
        }
    }
}

fn run(
    ctx: &Ctx,
    target: &Target,
    request: &ReleaseRequest,
    planned: PlannedImage,
    journal: &Journal,
    started: Instant,
) -> Result<ReleaseReport> {
    let sh = &ctx.sh;
    let image_id = match (&planned.choice, &planned.source) {
        (ImageChoice::BuildWorkingTree { mode }, Some(source)) => build_working_tree(ctx, target, source, *mode)?,
        _ => image_id(sh, &planned.reference)?,
    };
    if !request.force
        && let Some(live) = serving_release(ctx, target, &image_id)?
    {
        // A build of a changed working tree that came out the same.
        return Ok(unchanged(target, &live, started));
    }
    journal.update(|record| record.image = image_id.clone());
    let named = if planned.reference == image_id { String::new() } else { format!(" ({})", planned.reference) };
    let (verb, preposition) = match request.kind {
        ReleaseKind::Rollback => ("rolling back to", "on"),
        _ => ("deploying", "to"),
    };
    ui::step(&format!("{verb} {}{named} {preposition} {}", short_id(&image_id), target.environment));

    let database = database::ensure_running(ctx, target)?;
    proxy::ensure_running(ctx, target)?;
    if request.migrate {
        ui::step(&format!("running the migrations with {}", short_id(&image_id)));
        let version = containers::migrate(ctx, target, &image_id, &database)?;
        journal.update(|record| record.migration_version = version.clone());
    }

    let spec = containers::AppContainerSpec {
        name: format!("{}-{}-{}", target.app_name, target.environment, containers::unique_suffix()),
        image_id: image_id.clone(),
        port: testkit::free_port(),
        database_url: database.app_url(),
        release: journal.started_at(),
    };
    journal.update(|record| record.runs_as = Some(spec.name.clone()));
    ui::step(&format!("starting {} on 127.0.0.1:{}", spec.name, spec.port));
    let container_started = Instant::now();
    crate::image::docker::run_read(ctx, containers::run_command(sh, target, &spec))?;
    // Removed on the way out (a failed gate, an error, Ctrl-C) until it serves.
    let new_container = crate::image::docker::remove_container_on_exit(ctx, &spec.name);

    let gate = (|| -> Result<Option<String>> {
        containers::wait_ready(ctx, &spec.name, spec.port, request.health_timeout)?;
        if !request.smoke {
            return Ok(None);
        }
        let Some(answer) = ctx.effect(None, || http::get(spec.port, "/version", Duration::from_secs(5)).map(Some))?
        else {
            return Ok(None);
        };
        let sha = http::version_sha(&answer)?;
        if let Some(expected) = &planned.expected_sha
            && *expected != sha
        {
            bail!("{} reports git_sha {sha} on /version, but the image is labelled with {expected}", spec.name);
        }
        Ok(Some(sha))
    })();
    let new_sha = match gate {
        Ok(sha) => sha,
        Err(err) => {
            ui::info(&format!("the last lines of {}:\n{}", spec.name, containers::logs_tail(sh, &spec.name, 30)));
            containers::remove(ctx, &spec.name);
            bail!("{err:#}; removed it, the old release keeps serving {}", target.url());
        }
    };
    let ready_at = Instant::now();
    let ready_after = ready_at - container_started;
    let git_sha = new_sha.clone().or(planned.expected_sha.clone()).unwrap_or_else(|| "unknown".to_owned());
    journal.update(|record| record.git_sha = git_sha.clone());
    ctx.success(&format!("{} is ready after {}", spec.name, crate::support::time::format_duration(ready_after)));

    let old: Vec<String> = containers::list(sh, target)?
        .into_iter()
        .map(|container| container.name)
        .filter(|name| *name != spec.name)
        .collect();
    ui::step(&format!(
        "switching {} to {}{}",
        target.url(),
        spec.name,
        if old.is_empty() { String::new() } else { format!(" (from {})", old.join(", ")) }
    ));
    proxy::switch_to(ctx, target, spec.port, &spec.name, SWITCH_DRAIN_TIMEOUT)?;
    if let Some(guard) = new_container {
        guard.disarm();
    }
    let stopping = Instant::now();
    for name in &old {
        containers::stop_and_remove(ctx, name)?;
    }
    let old_stop = stopping.elapsed();
    let ready_to_old_stopped = ready_at.elapsed();

    let served_sha = if !request.smoke
        || ctx.would(format_args!("check: GET {}/version reports the new release's git_sha", target.url()))
    {
        None
    } else {
        let answer = http::get(target.host_port, "/version", Duration::from_secs(5))
            .with_context(|| format!("checking {}/version after the switch", target.url()))?;
        let sha = http::version_sha(&answer).with_context(|| format!("checking {}/version", target.url()))?;
        if Some(&sha) != new_sha.as_ref() {
            bail!("{}/version reports {sha} after the switch, not {}", target.url(), new_sha.unwrap_or_default());
        }
        Some(sha)
    };
    Ok(ReleaseReport {
        image_id,
        git_sha,
        served_sha,
        total: started.elapsed(),
        ready_after,
        ready_to_old_stopped,
        old_stop,
        replaced: old,
        unchanged: false,
    })
}

/// Builds the working tree's image the way `cargo xtask build-image` does
/// with the same mode (`--incremental` for a deploy, unless --clean-build).
pub fn build_working_tree(ctx: &Ctx, target: &Target, source: &Source, requested: BuildMode) -> Result<String> {
    let app = AppIdentity::load(&ctx.root, &target.app)?;
    let buildkit = BuildKit::find(&ctx.sh)?;
    let offline = prepare_build(ctx, requested.offline)?;
    let mode = BuildMode { offline, ..requested };
    let tags = image_tags(&app.name, source, mode);
    if source.dirty {
        ui::info("the working tree has uncommitted changes: the image is tagged -dirty (fine for a local deploy)");
    }
    ui::step(&format!("building {}{}", tags.join(", "), mode.announcement()));
    let started = Instant::now();
    let build = DockerBuild {
        context: ctx.root.clone(),
        stage: "runtime".to_owned(),
        build_args: release_build_args(&app, source, mode),
        offline,
        no_cache: false,
        iidfile: None,
        tags: Vec::new(),
    };
    let built_id = build.run(ctx, &buildkit).with_context(|| {
        if offline {
            "building the image".to_owned()
        } else {
            "building the image (without network, pass --offline or set XTASK_OFFLINE=true in .env to build \
             from the local base images of `cargo xtask builder-image`)"
                .to_owned()
        }
    })?;
    let id = make_reproducible(ctx, &built_id, &tags, &source.created())?;
    ctx.success(&format!("built {} in {}", tags[0], crate::support::time::format_duration(started.elapsed())));
    Ok(id)
}

fn kind_word(kind: ReleaseKind) -> &'static str {
    match kind {
        ReleaseKind::Deploy => "release",
        ReleaseKind::Rollback => "rollback to",
        ReleaseKind::Promotion => "promotion of",
    }
}

/// The ledger record of one attempt: written as in progress at the start,
/// kept up to date, finished as succeeded or failed, and marked failed by
/// the Ctrl-C handler when the attempt is interrupted.
struct Journal {
    record: Arc<Mutex<Release>>,
    target: Target,
    dry_run: bool,
    finished: Arc<AtomicBool>,
    _on_interrupt: Option<cleanup::CleanupGuard>,
}

impl Journal {
    fn start(ctx: &Ctx, target: &Target, kind: ReleaseKind, planned: &PlannedImage) -> Result<Journal> {
        let record = Release {
            environment: target.environment.clone(),
            started_at: crate::support::time::now_rfc3339_millis(),
            image: planned.reference.clone(),
            git_sha: planned.expected_sha.clone().unwrap_or_else(|| "unknown".to_owned()),
            runs_as: None,
            migration_version: None,
            who: ledger::who(),
            kind,
            outcome: Outcome::InProgress,
            finished_at: None,
            infra_inputs: None,
            migrations: None,
        };
        let dry_run = ctx.would(format_args!(
            "record: the attempt in {} (in progress, then its outcome)",
            super::shown(&ctx.root, &target.ledger_path())
        ));
        if !dry_run {
            target.ledger().put(&record)?;
        }
        let record = Arc::new(Mutex::new(record));
        let finished = Arc::new(AtomicBool::new(false));
        let on_interrupt = (!dry_run).then(|| {
            let (record, finished, ledger_path) = (record.clone(), finished.clone(), target.ledger_path());
            cleanup::register("record the interrupted release", move || {
                if finished.swap(true, Ordering::SeqCst) {
                    return;
                }
                let mut record = record.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
                record.outcome = Outcome::Failed("interrupted".to_owned());
                record.finished_at = Some(crate::support::time::now_rfc3339_millis());
                let _ = ledger::FileLedger::new(ledger_path).put(&record);
            })
        });
        Ok(Journal { record, target: target.clone(), dry_run, finished, _on_interrupt: on_interrupt })
    }

    fn started_at(&self) -> String {
        self.lock().started_at.clone()
    }

    fn update(&self, change: impl FnOnce(&mut Release)) {
        change(&mut self.lock());
    }

    fn finish(&self, outcome: Outcome) -> Result<()> {
        if self.finished.swap(true, Ordering::SeqCst) || self.dry_run {
            return Ok(());
        }
        let mut record = self.lock().clone();
        record.outcome = outcome;
        record.finished_at = Some(crate::support::time::now_rfc3339_millis());
        self.target.ledger().put(&record)
    }

    /// Takes the attempt out of the ledger again: it changed nothing.
    fn discard(&self) -> Result<()> {
        if self.finished.swap(true, Ordering::SeqCst) || self.dry_run {
            return Ok(());
        }
        let record = self.lock().clone();
        self.target.ledger().remove(&record.environment, &record.started_at)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Release> {
        self.record.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}
