//! `cargo xtask bench secrets`: how long encrypting and decrypting a 10 KB
//! file takes at the real iteration count, against the openssl CLI.

use std::{
    ffi::OsStr,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use super::{
    cli::ReadArgs,
    format::{self, ITERATIONS},
};
use crate::{
    bench::figure::Figure,
    support::{ctx::Ctx, exec, ui},
};

/// Figures for `cargo xtask bench secrets`: a 10 KB file at the real
/// iteration count, ours and the openssl CLI's decryption for reference.
pub fn bench(ctx: &Ctx) -> Result<Vec<Figure>> {
    let mut content = String::new();
    while content.len() < 10 * 1024 {
        content.push_str(&format!("secret_{} = \"{}\"\n", content.len(), "x".repeat(40)));
    }
    let plan = format!("time encrypting and decrypting a {} byte file at {ITERATIONS} iterations", content.len());
    if ctx.would(plan) {
        return Ok(Vec::new());
    }
    ui::step(&format!("secrets: encrypt and decrypt a 10 KB file at {ITERATIONS} PBKDF2 iterations (median of 3)"));
    let password = b"bench-password";
    let median = |mut samples: Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    let mut encrypt_times = Vec::new();
    let mut encrypted = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        encrypted = format::encrypt(content.as_bytes(), password, ITERATIONS)?;
        encrypt_times.push(started.elapsed());
    }
    let mut decrypt_times = Vec::new();
    let options = ReadArgs::default().options();
    for _ in 0..3 {
        let started = Instant::now();
        let decrypted = format::decrypt(&encrypted, password, &options)?;
        decrypt_times.push(started.elapsed());
        anyhow::ensure!(*decrypted.content == content.as_bytes(), "the benchmark's round trip changed the content");
    }
    let openssl_time = time_openssl_decrypt(&encrypted, password)?;
    let goal = Duration::from_secs(1);
    let figure = |name: &str, duration: Duration, pass: Option<bool>| Figure {
        name: name.to_owned(),
        value: format!("{:.3}s", duration.as_secs_f64()),
        goal: if pass.is_some() { "<= 1s".to_owned() } else { "reference".to_owned() },
        pass,
    };
    let encrypt_time = median(encrypt_times);
    let decrypt_time = median(decrypt_times);
    Ok(vec![
        figure("secrets encrypt, 10 KB, 600k iterations", encrypt_time, Some(encrypt_time <= goal)),
        figure("secrets decrypt, 10 KB, 600k iterations", decrypt_time, Some(decrypt_time <= goal)),
        figure("openssl enc -d (CLI), same file", openssl_time, None),
    ])
}

/// The reference figure: the same file through the openssl CLI, the password
/// in the child's environment only.
fn time_openssl_decrypt(encrypted: &[u8], password: &[u8]) -> Result<Duration> {
    let openssl = exec::require_tool("openssl", "apt-get install openssl")?;
    let started = Instant::now();
    let mut child = Command::new(openssl)
        .args(["enc", "-d", "-aes-256-cbc", "-pbkdf2", "-md", "sha256", "-iter", &ITERATIONS.to_string()])
        .args(["-pass", "env:XTASK_BENCH_PASSWORD"])
        .env("XTASK_BENCH_PASSWORD", OsStr::new(std::str::from_utf8(password)?))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("starting openssl")?;
    child.stdin.take().expect("stdin is piped").write_all(encrypted).context("writing to openssl")?;
    let status = child.wait().context("waiting for openssl")?;
    if !status.success() {
        bail!("openssl enc -d failed ({status})");
    }
    Ok(started.elapsed())
}
