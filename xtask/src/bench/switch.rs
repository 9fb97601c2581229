//! `cargo xtask bench local-switch`: how local release switches look to
//! clients under load. Keep-alive clients (`load.rs`: 16 connections,
//! `GET /api/entries` with a `POST /api/entries` in every 10 requests) ask
//! through the stable URL as fast as they are answered while two images take
//! turns in 10 releases; every connection closed under a request, timeout
//! and 5xx is a failed request.
//!
//! The load is bounded twice: by a request count (1,000,000) and by the end
//! of the switches. XTASK_BENCH_SHORT=1 is the test suite's short version:
//! 2 switches, 4 clients pausing 25 ms between requests (a few hundred
//! requests in all).
//!
//! It runs in an environment of its own (`bench-switch-<pid>`, on a free
//! port, with its own database), not in `local`, and takes it down after.
//! The first image is the working tree's (built like `deploy` builds it) or
//! XTASK_BENCH_IMAGE; the second is the same image with one more label,
//! made with `docker commit`, so that the switch is between two image IDs
//! without a second build.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::local::{
    Target,
    load::{Load, LoadSpec},
    release::{self, ImageChoice, ReleaseRequest},
};
use crate::{
    bench::figure::Figure,
    config::Config,
    image::{
        docker::{image_id, run_read},
        source::Source,
    },
    ledger::ReleaseKind,
    support::{cleanup, ctx::Ctx, ui},
};

/// Releases under load: the second image, the first, the second, ...
const SWITCHES: usize = 10;
const POST_EVERY: u64 = 10;
/// The throughput the goal asks for, on a 2-core machine.
const GOAL_REQUESTS_PER_SECOND: f64 = 2000.0;

pub fn local_switch(ctx: &Ctx, config: &Config) -> Result<Vec<Figure>> {
    let target = Target {
        app_name: config.app_name().to_owned(),
        app: config.app.clone(),
        environment: format!("bench-switch-{}", std::process::id()),
        host_port: testkit::free_port(),
        state_dir: ctx.root.join("target/local").join(format!("bench-switch-{}", std::process::id())),
        // The load posts one request in 10, all from 127.0.0.1: the app's
        // default write limit (a burst of 10, then one per 10 s) would answer
        // 429 to nearly all of them, and the benchmark measures switches, not
        // the limit. Only this environment turns it off; the default stays on.
        app_env: vec![("WRITE_RATE_LIMIT".to_owned(), "off".to_owned())],
    };
    let second_tag = format!("{}-bench:switch-{}", target.app_name, std::process::id());
    // What an interrupted run left behind.
    crate::local::down(ctx, &target, true)?;
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
    crate::local::down(ctx, target, true)?;
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
            crate::image::build_args::BuildMode {
                offline: crate::image::offline::offline_setting(ctx) == Some(true),
                incremental: false,
            },
        )?,
    };
    ui::step("making the second image: the first one with one more label (docker commit)");
    let label = format!("LABEL com.example.bench.switch={}", crate::support::time::now_rfc3339_millis());
    let container = run_read(ctx, sh.cmd("docker").args(["create", &first]))?;
    let container = container.trim();
    let committed = run_read(ctx, sh.cmd("docker").args(["commit", "--change", &label, container, second_tag]));
    let _ = sh.cmd("docker").args(["rm", container]).quiet().ignore_stdout().run();
    committed?;
    let second = image_id(sh, second_tag)?;
    switch_under_load(ctx, target, &first, &second)
}

fn switch_under_load(ctx: &Ctx, target: &Target, first: &str, second: &str) -> Result<Vec<Figure>> {
    let short = ctx.env_var("XTASK_BENCH_SHORT").is_some_and(|value| value == "1");
    let (switches, spec) = if short {
        let spec = LoadSpec {
            port: target.host_port,
            connections: 4,
            max_requests: 5_000,
            post_every: POST_EVERY,
            pause: Duration::from_millis(25),
        };
        (2, spec)
    } else {
        let spec = LoadSpec {
            port: target.host_port,
            connections: 16,
            max_requests: 1_000_000,
            post_every: POST_EVERY,
            pause: Duration::ZERO,
        };
        (SWITCHES, spec)
    };
    let request = |image: &str| ReleaseRequest {
        kind: ReleaseKind::Deploy,
        image: ImageChoice::Reference(image.to_owned()),
        migrate: true,
        smoke: true,
        health_timeout: Duration::from_secs(60),
        force: true,
    };
    ui::step("deploying the first image");
    release::release(ctx, target, &request(first)).context("deploying the first image")?;

    ui::step(&format!(
        "{} keep-alive clients on {} (GET /api/entries, a POST in every {POST_EVERY}), at most {} requests",
        spec.connections,
        target.url(),
        spec.max_requests
    ));
    let load = Load::start(&spec);
    std::thread::sleep(Duration::from_millis(500));
    let mut reports = Vec::new();
    let mut result = Ok(());
    for round in 1..=switches {
        let image = if round % 2 == 1 { second } else { first };
        ui::step(&format!("switch {round} of {switches} under load ({} requests so far)", load.sent()));
        match release::release(ctx, target, &request(image)) {
            Ok(report) => reports.push(report),
            Err(err) => {
                result = Err(err.context(format!("switch {round}")));
                break;
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let load = load.finish();
    result?;
    for failure in &load.failures {
        ui::warn(&format!("failed request: {failure}"));
    }
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
    let rate = load.requests_per_second();
    let millis = |duration: Duration| format!("{:.1}ms", duration.as_secs_f64() * 1000.0);
    Ok(vec![
        Figure {
            name: format!("failed requests across {switches} switches ({} keep-alive clients)", spec.connections),
            value: format!("{} of {} ({} POSTs stored)", load.failed, load.requests, load.posts_ok),
            goal: "0".to_owned(),
            pass: Some(load.failed == 0),
        },
        Figure {
            name: "requests/s through the stable URL while switching".to_owned(),
            value: format!("{rate:.0} ({} requests in {:.1}s)", load.requests, load.elapsed.as_secs_f64()),
            goal: format!(">= {GOAL_REQUESTS_PER_SECOND:.0}"),
            pass: Some(rate >= GOAL_REQUESTS_PER_SECOND),
        },
        Figure {
            name: "latency p50 / p99 / max".to_owned(),
            value: format!(
                "{} / {} / {}",
                millis(load.percentile(0.5)),
                millis(load.percentile(0.99)),
                millis(load.latencies.last().copied().unwrap_or_default())
            ),
            goal: "-".to_owned(),
            pass: None,
        },
        Figure {
            name: "client reconnects (a closed keep-alive connection)".to_owned(),
            value: load.reconnects.to_string(),
            goal: "-".to_owned(),
            pass: None,
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
