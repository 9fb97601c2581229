//! `cargo xtask bench`: benchmarks that print their figures next to their
//! goals. Figures are printed, never asserted in tests, so a slow machine
//! cannot make the test suite flake.

pub mod deploy;
pub mod figure;
pub mod image;
pub mod switch;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};

use crate::{
    bench::figure::Figure,
    config::ConfigOnce,
    support::{ctx::Ctx, exec::cargo, ui},
};

/// Run benchmarks and print their figures next to their goals
#[derive(Debug, Args)]
pub struct Bench {
    /// Which benchmarks (default: every one, in this order; about 40 minutes)
    #[arg(value_enum)]
    pub which: Vec<Which>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Which {
    /// Cold builds of the everyday task runner and of the AWS path, warm `cargo xtask --help`
    Startup,
    /// Encrypt and decrypt a 10 KB secrets file at 600,000 PBKDF2 iterations
    Secrets,
    /// Image size vs binary, cold build vs one-file rebuild, two clean builds' IDs
    Image,
    /// Failed requests and switch time while a local release replaces another
    LocalSwitch,
    /// Each step of `deploy` for an app-only change against a sandbox, next to a naive deploy script
    Deploy,
    /// The test tiers: test-local cold and warm, test-docker, test-all (about 25 minutes)
    Tests,
}

impl Bench {
    pub fn run(self, ctx: &Ctx, config: &ConfigOnce) -> Result<()> {
        let which = if self.which.is_empty() { Which::value_variants().to_vec() } else { self.which };
        let mut figures = Vec::new();
        let mut failed = Vec::new();
        for bench in which {
            let measured = match bench {
                Which::Startup => startup(ctx),
                Which::Secrets => crate::secrets::bench(ctx),
                Which::Image => config.get().and_then(|config| crate::bench::image::image(ctx, &config.app)),
                Which::LocalSwitch => config.get().and_then(|config| crate::bench::switch::local_switch(ctx, config)),
                Which::Deploy => config.get().and_then(|config| crate::bench::deploy::deploy(ctx, &config.app)),
                Which::Tests => tests(ctx),
            };
            // One benchmark that cannot run (a missing tool, say) must not
            // cost the figures of the others: it becomes a failed row.
            let name = bench.to_possible_value().map(|value| value.get_name().to_owned()).unwrap_or_default();
            match measured {
                Ok(measured) => figures.extend(measured),
                Err(err) => {
                    ui::error(&format!("benchmark {name}: {err:#}"));
                    figures.push(Figure {
                        name: format!("benchmark {name}"),
                        value: "did not run".to_owned(),
                        goal: "runs".to_owned(),
                        pass: Some(false),
                    });
                    failed.push(name);
                }
            }
        }
        print_table(&figures);
        if !failed.is_empty() {
            bail!("benchmarks that did not run: {} (their errors are above)", failed.join(", "));
        }
        Ok(())
    }
}

pub fn print_table(figures: &[Figure]) {
    let name_width = figures.iter().map(|f| f.name.len()).max().unwrap_or(6).max(6);
    let value_width = figures.iter().map(|f| f.value.len()).max().unwrap_or(5).max(5);
    let goal_width = figures.iter().map(|f| f.goal.len()).max().unwrap_or(4).max(4);
    ui::result(&format!("{:<name_width$}  {:>value_width$}  {:<goal_width$}  result", "figure", "value", "goal"));
    for figure in figures {
        let result = match figure.pass {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None => "-",
        };
        ui::result(&format!(
            "{:<name_width$}  {:>value_width$}  {:<goal_width$}  {result}",
            figure.name, figure.value, figure.goal
        ));
    }
}

/// Cold build of xtask in a fresh target directory (the crates are already
/// downloaded), then the wall time of a warm `cargo xtask --help`.
fn startup(ctx: &Ctx) -> Result<Vec<Figure>> {
    let sh = &ctx.sh;
    let cold_target = ctx.root.join("target/bench-cold");
    let _ = std::fs::remove_dir_all(&cold_target);
    ui::step("cold build of the everyday task runner (cargo build -p xtask, empty target dir)");
    let cold = time_command(
        ctx,
        "cold build",
        cargo(sh).args(["build", "-p", "xtask"]).env("CARGO_TARGET_DIR", &cold_target),
    )?;
    let _ = std::fs::remove_dir_all(&cold_target);

    ui::step("cold build of the AWS path (cargo build -p xtask-aws, empty target dir)");
    let cpu_before = children_cpu_time();
    let aws_wall = time_command(
        ctx,
        "cold build",
        cargo(sh).args(["build", "-p", "xtask-aws"]).env("CARGO_TARGET_DIR", &cold_target),
    )?;
    let aws_cpu = children_cpu_time().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    let _ = std::fs::remove_dir_all(&cold_target);

    ui::step("warm `cargo xtask --help` (median of 11)");
    let _ = cargo(sh).args(["build", "-q", "-p", "xtask"]).quiet().run();
    let mut samples = Vec::new();
    for _ in 0..11 {
        samples.push(time_command(
            ctx,
            "cargo xtask --help",
            cargo(sh).args(["xtask", "--help"]).ignore_stdout().quiet(),
        )?);
    }
    samples.sort();
    let warm = samples[samples.len() / 2];
    Ok(vec![
        Figure {
            name: "cold build, everyday path (xtask)".to_owned(),
            value: crate::support::time::format_duration(cold),
            goal: "<= 40s".to_owned(),
            pass: Some(cold <= Duration::from_secs(40)),
        },
        Figure {
            name: "cold build, AWS path (xtask-aws), CPU time".to_owned(),
            value: match aws_cpu {
                Some(cpu) => format!(
                    "{} ({} wall)",
                    crate::support::time::format_duration(cpu),
                    crate::support::time::format_duration(aws_wall)
                ),
                None => format!("? ({} wall)", crate::support::time::format_duration(aws_wall)),
            },
            goal: "<= 150s CPU".to_owned(),
            pass: aws_cpu.map(|cpu| cpu <= Duration::from_secs(150)),
        },
        Figure {
            name: "warm `cargo xtask --help`".to_owned(),
            value: format!("{:.3}s", warm.as_secs_f64()),
            goal: "<= 0.15s".to_owned(),
            pass: Some(warm <= Duration::from_millis(150)),
        },
    ])
}

/// The wall time of each test tier, as a developer runs it: `cargo xtask
/// test-local` again after a first run (warm), the same in an empty target
/// directory (cold: everything compiles), `test-docker`, and `test-all`.
///
/// Warm comes first: measured right after the cold run it once took 47 s
/// where every other warm run took 25-28 s, the cold run's few gigabytes of
/// artefacts still being written back and deleted.
fn tests(ctx: &Ctx) -> Result<Vec<Figure>> {
    let sh = &ctx.sh;
    ui::step("tier 1, warm: cargo xtask test-local (after one untimed run)");
    let _ = cargo(sh).args(["xtask", "test-local"]).quiet().ignore_stdout().ignore_stderr().run();
    let warm = time_command(ctx, "test-local (warm)", cargo(sh).args(["xtask", "test-local"]))?;
    let cold_target = ctx.root.join("target/bench-tests-cold");
    let _ = std::fs::remove_dir_all(&cold_target);
    ui::step("tier 1, cold: cargo xtask test-local with an empty target directory");
    let cold = time_command(
        ctx,
        "test-local (cold)",
        cargo(sh).args(["xtask", "test-local"]).env("CARGO_TARGET_DIR", &cold_target),
    );
    let _ = std::fs::remove_dir_all(&cold_target);
    let cold = cold?;
    ui::step("tier 2: cargo xtask test-docker");
    let docker = time_command(ctx, "test-docker", cargo(sh).args(["xtask", "test-docker"]))?;
    ui::step("the full suite: cargo xtask test-all");
    let all = time_command(ctx, "test-all", cargo(sh).args(["xtask", "test-all"]))?;
    let figure = |name: &str, took: Duration, goal: Option<Duration>| Figure {
        name: name.to_owned(),
        value: crate::support::time::format_duration(took),
        goal: goal.map_or("-".to_owned(), |goal| format!("<= {}", crate::support::time::format_duration(goal))),
        pass: goal.map(|goal| took <= goal),
    };
    Ok(vec![
        figure("tier 1 (test-local), cold", cold, Some(Duration::from_secs(180))),
        figure("tier 1 (test-local), warm", warm, Some(Duration::from_secs(30))),
        figure("tier 2 (test-docker)", docker, None),
        figure("full suite (test-all)", all, Some(Duration::from_secs(12 * 60))),
    ])
}

fn time_command(ctx: &Ctx, description: &str, cmd: xshell::Cmd<'_>) -> Result<Duration> {
    let started = Instant::now();
    let status = ctx.run_interruptible(description, cmd).with_context(|| format!("running {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(started.elapsed())
}

/// User + system CPU time of all waited-for children of this process (and
/// their waited-for children: rustc under cargo), from /proc/self/stat.
fn children_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; cutime and cstime are
    // fields 16 and 17 of the whole line.
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?;
    let ticks_per_second: u64 = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100);
    Some(Duration::from_millis(ticks * 1000 / ticks_per_second))
}
