//! `cargo xtask bench local-switch`: how a local release switch looks to a
//! client. A client thread asks `GET /version` through the stable URL in a
//! steady stream (a new connection per request, up to 200 a second) while
//! two images take turns in five releases; every connection error, non-200
//! answer and timeout is a failed request.
//!
//! It runs in an environment of its own (`bench-switch`, on a free port,
//! with its own database), not in `local`, and takes it down afterwards.
//! The first image is the working tree's (built like `deploy` builds it) or
//! XTASK_BENCH_IMAGE; the second is the same image with one more label,
//! made with `docker commit`, so that the switch is between two image IDs
//! without a second build.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use super::{
    Target, http,
    release::{self, ImageChoice, ReleaseRequest},
};
use crate::{
    bench::Figure,
    cleanup,
    config::Config,
    image::{Source, image_id, run_read},
    ledger::ReleaseKind,
    ui,
    util::Ctx,
};

const ENVIRONMENT: &str = "bench-switch";
/// Releases under load: the second image, the first, the second, ...
const SWITCHES: usize = 5;
/// The pause between two requests of the client thread.
const REQUEST_INTERVAL: Duration = Duration::from_millis(5);

pub fn local_switch(ctx: &Ctx) -> Result<Vec<Figure>> {
    let config = Config::load(&ctx.root)?;
    let target = Target {
        app_name: config.app_name().to_owned(),
        environment: ENVIRONMENT.to_owned(),
        host_port: testkit::free_port(),
        state_dir: ctx.root.join("target/local").join(ENVIRONMENT),
    };
    let second_tag = format!("{}-bench:switch-{}", target.app_name, std::process::id());
    // What an interrupted run left behind.
    super::down(ctx, &target, true)?;
    // Runs when this function returns, and on Ctrl-C.
    let _teardown = {
        let (target, global, second_tag) = (target.clone(), ctx.global.clone(), second_tag.clone());
        cleanup::register("take the benchmark environment down", move || {
            if let Err(err) = Ctx::new(global).and_then(|ctx| teardown(&ctx, &target, &second_tag)) {
                ui::warn(&format!("taking the benchmark environment down: {err:#}"));
            }
        })
    };
    measure(ctx, &target, &second_tag)
}

/// Nothing of a benchmark is worth keeping, not even its release history.
fn teardown(ctx: &Ctx, target: &Target, second_tag: &str) -> Result<()> {
    super::down(ctx, target, true)?;
    // After `down`: a container still using the image would keep it.
    let _ = ctx.sh.cmd("docker").args(["image", "rm", second_tag]).quiet().ignore_stdout().ignore_stderr().run();
    std::fs::remove_dir_all(&target.state_dir).with_context(|| format!("removing {}", target.state_dir.display()))
}

fn measure(ctx: &Ctx, target: &Target, second_tag: &str) -> Result<Vec<Figure>> {
    let sh = &ctx.sh;
    let first = match ctx.env_var("XTASK_BENCH_IMAGE") {
        Some(image) => image_id(sh, &image)?,
        None => release::build_working_tree(
            ctx,
            target,
            &Source::read(sh)?,
            crate::image::BuildMode { offline: crate::image::offline_setting(ctx) == Some(true), incremental: false },
        )?,
    };
    ui::step("making the second image: the first one with one more label (docker commit)");
    let label = format!("LABEL com.example.bench.switch={}", crate::ledger::now_rfc3339());
    let container = run_read(ctx, sh.cmd("docker").args(["create", &first]))?;
    let container = container.trim();
    let committed = run_read(ctx, sh.cmd("docker").args(["commit", "--change", &label, container, second_tag]));
    let _ = sh.cmd("docker").args(["rm", container]).quiet().ignore_stdout().run();
    committed?;
    let second = image_id(sh, second_tag)?;
    switch_under_load(ctx, target, &first, &second)
}

fn switch_under_load(ctx: &Ctx, target: &Target, first: &str, second: &str) -> Result<Vec<Figure>> {
    let request = |image: &str| ReleaseRequest {
        kind: ReleaseKind::Deploy,
        image: ImageChoice::Reference(image.to_owned()),
        migrate: true,
        smoke: true,
        health_timeout: Duration::from_secs(60),
    };
    ui::step("deploying the first image");
    release::release(ctx, target, &request(first)).context("deploying the first image")?;

    let stats = Arc::new(Mutex::new(ClientStats::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stats, stop, port) = (stats.clone(), stop.clone(), target.host_port);
        std::thread::spawn(move || client_loop(port, &stats, &stop))
    };
    let snapshot = || stats.lock().unwrap_or_else(|poison| poison.into_inner()).clone();
    std::thread::sleep(Duration::from_secs(1));
    let mut reports = Vec::new();
    let mut during_deploys = 0;
    let mut result = Ok(());
    for round in 1..=SWITCHES {
        let image = if round % 2 == 1 { second } else { first };
        ui::step(&format!("switch {round} of {SWITCHES} while a client asks {}/version in a loop", target.url()));
        let before = snapshot();
        let report = release::release(ctx, target, &request(image));
        let after = snapshot();
        during_deploys += (after.ok + after.failed) - (before.ok + before.failed);
        match report {
            Ok(report) => reports.push(report),
            Err(err) => {
                result = Err(err.context(format!("switch {round}")));
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::SeqCst);
    let _ = client.join();
    result?;
    let overall = snapshot();
    for failure in overall.first_failures.iter() {
        ui::warn(&format!("failed request: {failure}"));
    }
    let deploy_time: Duration = reports.iter().map(|report| report.total).sum();
    let spread = |value: fn(&release::ReleaseReport) -> Duration| {
        let mut values: Vec<Duration> = reports.iter().map(value).collect();
        values.sort();
        let (median, max) = (values[values.len() / 2], values[values.len() - 1]);
        (format!("{:.2}s (max {:.2}s)", median.as_secs_f64(), max.as_secs_f64()), max)
    };
    let (total_text, total_max) = spread(|report| report.total);
    let (switch_text, switch_max) = spread(|report| report.ready_to_old_stopped);
    let (ready_text, _) = spread(|report| report.ready_after);
    let (stop_text, _) = spread(|report| report.old_stop);
    let failed = overall.failed;
    Ok(vec![
        Figure {
            name: format!("failed requests across {SWITCHES} release switches"),
            value: format!("{failed} of {}", overall.ok + overall.failed),
            goal: "0".to_owned(),
            pass: Some(failed == 0),
        },
        Figure {
            name: "requests while deploying".to_owned(),
            value: format!("{during_deploys} ({:.0}/s)", during_deploys as f64 / deploy_time.as_secs_f64().max(0.001)),
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "slowest request".to_owned(),
            value: format!("{:.3}s", overall.slowest.as_secs_f64()),
            goal: "<= 1s".to_owned(),
            pass: Some(overall.slowest <= Duration::from_secs(1)),
        },
        Figure {
            name: "deploy time, median (migrate, start, ready, switch, drain)".to_owned(),
            value: total_text,
            goal: "<= 15s".to_owned(),
            pass: Some(total_max <= Duration::from_secs(15)),
        },
        Figure {
            name: "new container ready after, median".to_owned(),
            value: ready_text,
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "switch: new ready -> old stopped, median".to_owned(),
            value: switch_text,
            goal: "<= 3s".to_owned(),
            pass: Some(switch_max <= Duration::from_secs(3)),
        },
        Figure {
            name: "old container's stop (SIGTERM -> exit), median".to_owned(),
            value: stop_text,
            goal: "-".to_owned(),
            pass: None,
        },
    ])
}

#[derive(Debug, Clone, Default)]
struct ClientStats {
    ok: u64,
    failed: u64,
    slowest: Duration,
    first_failures: Vec<String>,
}

fn client_loop(port: u16, stats: &Mutex<ClientStats>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let outcome = match http::get(port, "/version", Duration::from_secs(5)) {
            Ok(answer) if answer.status == 200 => Ok(()),
            Ok(answer) => Err(format!("HTTP {}: {}", answer.status, answer.body.trim())),
            Err(err) => Err(format!("{err:#}")),
        };
        let elapsed = started.elapsed();
        let mut stats = stats.lock().unwrap_or_else(|poison| poison.into_inner());
        stats.slowest = stats.slowest.max(elapsed);
        match outcome {
            Ok(()) => stats.ok += 1,
            Err(failure) => {
                stats.failed += 1;
                if stats.first_failures.len() < 5 {
                    stats.first_failures.push(failure);
                }
            }
        }
        drop(stats);
        std::thread::sleep(REQUEST_INTERVAL);
    }
}
