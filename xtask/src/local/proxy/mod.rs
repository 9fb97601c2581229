//! The stable URL of a local environment: an HTTP proxy on `host_port` that
//! sends each request to the release named in the `upstream` file.
//!
//! Why a proxy of our own: a published container port belongs to one
//! container, so moving the URL to a new container means stopping the old
//! one first, and requests fail in between. With the proxy the new container
//! starts beside the old one, and a switch is an atomic rewrite of the
//! `upstream` file (`127.0.0.1:PORT NAME`) followed by a `drain` on the
//! proxy's control port, which returns when no request is in flight on the
//! old release any more; only then is the old container stopped.
//!
//! It speaks HTTP/1.1 (`server.rs`, framing in `http/http1.rs`): client
//! connections, keep-alive included, belong to the proxy, and every request
//! goes to the release that is current when it arrives, so a switch loses
//! no request on a connection that outlives the old release. WebSocket
//! upgrades and streamed answers pass through.
//!
//! The proxy is this same binary (`cargo xtask local-proxy`, hidden), started
//! as a daemon (`support::daemon`: its own process group, its output in
//! `proxy.log`); its pid is kept in `proxy.pid` and checked against its
//! command line before it is signalled, so a reused pid is never killed. It
//! writes its control port to `proxy.control`.

mod server;

use std::{
    fs,
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Target, shown};
use crate::support::{
    ctx::Ctx,
    daemon::{self, Daemon, Launch, LogMode, Output, Signature},
    ui,
};

pub use server::Upstream;

/// Run the stable URL's proxy of a local environment (started by `deploy`)
#[derive(Debug, Args)]
pub struct LocalProxy {
    /// Address to listen on
    #[arg(long)]
    pub listen: SocketAddr,
    /// File holding the current release (`127.0.0.1:PORT NAME`), looked at
    /// for each request
    #[arg(long)]
    pub upstream_file: PathBuf,
    /// File the proxy writes its control port to (for `drain`)
    #[arg(long)]
    pub control_file: PathBuf,
}

impl LocalProxy {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let listener = TcpListener::bind(self.listen).with_context(|| format!("listening on {}", self.listen))?;
        let control = TcpListener::bind("127.0.0.1:0").context("listening on a control port")?;
        let control_port = control.local_addr().context("reading the control port")?.port();
        let router = server::Router::new(self.upstream_file.clone());
        crate::support::fs::write_atomic(&self.control_file, format!("{control_port}\n").as_bytes(), 0o644)?;
        ui::info(&format!(
            "proxy: listening on {}, releases from {}, control port {control_port}",
            self.listen,
            self.upstream_file.display()
        ));
        let control_router = router.clone();
        std::thread::Builder::new()
            .name("proxy-control".to_owned())
            .spawn(move || server::serve_control(control, control_router))
            .context("starting the control thread")?;
        server::serve(listener, router);
        Ok(())
    }
}

/// Starts the environment's proxy unless it already runs; fails when another
/// program holds the port.
pub fn ensure_running(ctx: &Ctx, target: &Target) -> Result<()> {
    let listen = listen_address(target);
    let upstream_file = target.file("upstream");
    let control_file = target.file("proxy.control");
    let args = proxy_args(target);
    if let Some(pid) = running_pid(target) {
        // A proxy of an older xtask (no control port) is replaced too.
        if daemon::is_ours(pid, &Signature { program: PROGRAM.to_owned(), args: args.clone() }) {
            ui::detail(&format!("the proxy (pid {pid}) listens on {listen}"));
            return Ok(());
        }
        // deploy.toml names another port now, or the proxy is an old one.
        stop(ctx, target)?;
    }
    let log_path = target.file("proxy.log");
    let exe = crate::support::exec::self_exe().context("finding the xtask binary to run the proxy")?;
    let description = format!(
        "{} local-proxy --listen {listen} --upstream-file {} --control-file {} (in the background, log {})",
        exe.display(),
        shown(&ctx.root, &upstream_file),
        shown(&ctx.root, &control_file),
        shown(&ctx.root, &log_path)
    );
    if ctx.would(format_args!("start: {description}")) {
        return Ok(());
    }
    if let Err(err) = TcpListener::bind(listen) {
        bail!(
            "{listen} is taken by another program ({err}): stop it, or give environments.{}.host_port another port in deploy.toml",
            target.environment
        );
    }
    ui::info(&format!("starting the proxy for {}: {description}", target.url()));
    fs::create_dir_all(&target.state_dir).with_context(|| format!("creating {}", target.state_dir.display()))?;
    // The new proxy writes its own; until then `drain` must not find an old one.
    let _ = fs::remove_file(&control_file);
    let mut command = Command::new(&exe);
    command.args(&args).current_dir(&ctx.root);
    // A daemon: a Ctrl-C in this terminal, meant for a later xtask, must
    // not stop the URL.
    let mut proxy = Daemon::start(Launch {
        name: "the proxy",
        command,
        output: Output::Log(&log_path, LogMode::Append),
        stop_grace: daemon::STOP_GRACE,
    })?;
    crate::support::fs::write_atomic(&target.file("proxy.pid"), format!("{}\n", proxy.pid()).as_bytes(), 0o644)?;
    proxy
        .wait_until_ready(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok() && control_file.exists()
        })
        .map_err(|_| {
            anyhow::anyhow!(
                "the proxy did not start listening on {listen}; its log {}:\n{}",
                log_path.display(),
                daemon::log_tail(&log_path, 20)
            )
        })?;
    // It outlives this process (and is reaped by init).
    proxy.detach();
    Ok(())
}

/// Sends new requests to the release `name` on `port` from now on, then
/// waits until the proxy has no request in flight on the one before (at most
/// `drain_timeout`: a WebSocket held open on the old release would otherwise
/// hold the switch up; it is then cut by the old container's stop).
pub fn switch_to(ctx: &Ctx, target: &Target, port: u16, name: &str, drain_timeout: Duration) -> Result<()> {
    let upstream_file = target.file("upstream");
    if ctx.would(format_args!(
        "write: 127.0.0.1:{port} {name} to {} (the proxy sends new requests there)",
        shown(&ctx.root, &upstream_file)
    )) {
        // The drain that follows the write is planned with it.
        ui::plan("would wait: for the proxy to answer the requests in flight on the old release");
        return Ok(());
    }
    crate::support::fs::write_atomic(&upstream_file, format!("127.0.0.1:{port} {name}\n").as_bytes(), 0o644)?;
    // From here on the new release serves: a drain that cannot be asked
    // for must not fail the release (its caller would remove the container
    // the URL now points at); the old container's own drain covers it.
    let started = Instant::now();
    match drain(target, drain_timeout) {
        Ok(0) => ui::detail(&format!(
            "the proxy has no request in flight on the old release ({} after the switch)",
            crate::support::time::format_duration(started.elapsed())
        )),
        Ok(busy) => ui::warn(&format!(
            "{busy} requests are still in flight on the old release after {}: stopping it anyway (its drain gets them)",
            crate::support::time::format_duration(drain_timeout)
        )),
        Err(err) => {
            ui::warn(&format!("could not ask the proxy to drain the old release ({err:#}); giving it 1 s instead"));
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    Ok(())
}

/// Asks the proxy to take the upstream file as it is now and answer when
/// no request is in flight elsewhere; returns how many still were.
fn drain(target: &Target, timeout: Duration) -> Result<usize> {
    let control_file = target.file("proxy.control");
    let port: u16 = fs::read_to_string(&control_file)
        .with_context(|| format!("reading the proxy's control port from {}", control_file.display()))?
        .trim()
        .parse()
        .with_context(|| format!("{} holds no port number", control_file.display()))?;
    let mut connection = TcpStream::connect(("127.0.0.1", port)).with_context(|| {
        format!("connecting to the proxy's control port {port} (see {})", target.file("proxy.log").display())
    })?;
    connection.set_read_timeout(Some(timeout + Duration::from_secs(5))).context("setting a read timeout")?;
    connection
        .write_all(format!("drain {}\n", timeout.as_millis()).as_bytes())
        .context("asking the proxy to drain the old release")?;
    let mut answer = String::new();
    BufReader::new(connection).read_line(&mut answer).context("waiting for the proxy's drain")?;
    match answer.trim() {
        "drained" => Ok(0),
        other => match other.strip_prefix("busy ").and_then(|n| n.parse().ok()) {
            Some(busy) => Ok(busy),
            None => bail!("the proxy answered {other:?} to drain (see {})", target.file("proxy.log").display()),
        },
    }
}

/// The port new connections go to, if any.
pub fn upstream_port(target: &Target) -> Option<u16> {
    let text = fs::read_to_string(target.file("upstream")).ok()?;
    Upstream::parse(&text).map(|upstream| upstream.address.port())
}

/// The proxy's pid when it runs (checked against its command line).
pub fn running_pid(target: &Target) -> Option<u32> {
    let pid: u32 = fs::read_to_string(target.file("proxy.pid")).ok()?.trim().parse().ok()?;
    // Whichever port it listens on: deploy.toml may name another one now.
    let upstream_file = target.file("upstream").to_string_lossy().into_owned();
    let any_proxy = Signature { program: PROGRAM.to_owned(), args: vec!["--upstream-file".to_owned(), upstream_file] };
    daemon::is_ours(pid, &any_proxy).then_some(pid)
}

/// Stops the proxy (SIGTERM to its group, then SIGKILL after 5 s); the
/// upstream file goes with it, so a new proxy starts with no upstream until
/// a release.
pub fn stop(ctx: &Ctx, target: &Target) -> Result<()> {
    let Some(pid) = running_pid(target) else {
        return ctx.effect((), || {
            remove_files(target);
            Ok(())
        });
    };
    if ctx.would(format_args!("stop: the proxy (pid {pid}) on 127.0.0.1:{}", target.host_port)) {
        return Ok(());
    }
    ui::info(&format!("stopping the proxy (pid {pid}) on 127.0.0.1:{}", target.host_port));
    daemon::stop_group(pid, daemon::STOP_GRACE);
    remove_files(target);
    Ok(())
}

/// The file name of the program the proxy runs: this binary.
const PROGRAM: &str = env!("CARGO_BIN_NAME");

/// The proxy's command line after the program: also what a running proxy
/// must show to be the current one.
fn proxy_args(target: &Target) -> Vec<String> {
    let path = |name: &str| target.file(name).to_string_lossy().into_owned();
    [
        "local-proxy".to_owned(),
        "--listen".to_owned(),
        listen_address(target).to_string(),
        "--upstream-file".to_owned(),
        path("upstream"),
        "--control-file".to_owned(),
        path("proxy.control"),
    ]
    .to_vec()
}

/// What a running proxy keeps; gone with it.
fn remove_files(target: &Target) {
    for name in ["proxy.pid", "upstream", "proxy.control"] {
        let _ = fs::remove_file(target.file(name));
    }
}

fn listen_address(target: &Target) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], target.host_port))
}
