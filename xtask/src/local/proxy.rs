//! The stable URL of a local environment: a TCP proxy on `host_port` that
//! sends each new connection to the app container named in a file.
//!
//! Why a proxy of our own: a published container port belongs to one
//! container, so moving the URL to a new container means stopping the old
//! one first, and requests fail in between. With the proxy the new container
//! starts beside the old one, and switching is an atomic rewrite of the
//! `upstream` file (`127.0.0.1:PORT`): the proxy looks at the file for every
//! new connection, so once it is rewritten no new connection reaches the old
//! container, whose in-flight requests then drain on SIGTERM.
//!
//! It is byte-level, not HTTP-aware: a client's keep-alive connection stays
//! with the container it was first sent to until that one closes it (on its
//! stop), and the client reconnects. Browsers and HTTP libraries do that on
//! their own for idempotent requests; a client that must never see a closed
//! connection should use one connection per request.
//!
//! The proxy is this same binary (`cargo xtask local-proxy`, hidden), started
//! in the background in its own process group with its output in
//! `proxy.log`; its pid is kept in `proxy.pid` and checked against its
//! command line before it is signalled, so a reused pid is never killed.

use std::{
    fs,
    io::Write,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result, bail};
use clap::Args;

use super::{Target, shown};
use crate::{ui, util, util::Ctx};

/// How long a new connection may wait for an upstream that accepts it: it
/// covers a container that is being replaced, not a missing one.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);
/// A connection with nothing to read in either direction for this long is
/// closed (idle keep-alive connections of a forgotten browser tab).
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// Run the stable URL's proxy of a local environment (started by `deploy`)
#[derive(Debug, Args)]
pub struct LocalProxy {
    /// Address to listen on
    #[arg(long)]
    pub listen: SocketAddr,
    /// File holding the upstream address (`127.0.0.1:PORT`), read for each
    /// new connection
    #[arg(long)]
    pub upstream_file: PathBuf,
}

impl LocalProxy {
    pub fn run(self, _ctx: &Ctx) -> Result<()> {
        let listener = TcpListener::bind(self.listen).with_context(|| format!("listening on {}", self.listen))?;
        eprintln!("proxy: listening on {}, upstream from {}", self.listen, self.upstream_file.display());
        serve(listener, self.upstream_file);
        Ok(())
    }
}

/// Accepts connections forever, a thread for each.
fn serve(listener: TcpListener, upstream_file: PathBuf) {
    let upstream = Arc::new(Upstream::new(upstream_file));
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                // Out of file descriptors, typically: back off, keep serving.
                eprintln!("proxy: accepting a connection: {err}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let upstream = upstream.clone();
        let spawned = std::thread::Builder::new().name("proxy-connection".to_owned()).spawn(move || {
            if let Err(err) = forward(client, &upstream) {
                eprintln!("proxy: {err:#}");
            }
        });
        if let Err(err) = spawned {
            eprintln!("proxy: starting a connection thread: {err}");
        }
    }
}

/// The upstream address, read again whenever the file was replaced or
/// changed (one `stat` per connection; an atomic rename changes the inode).
struct Upstream {
    path: PathBuf,
    cached: Mutex<Option<(FileStamp, Option<SocketAddr>)>>,
}

type FileStamp = (u64, SystemTime, u64);

impl Upstream {
    fn new(path: PathBuf) -> Upstream {
        Upstream { path, cached: Mutex::new(None) }
    }

    fn current(&self) -> Option<SocketAddr> {
        let metadata = fs::metadata(&self.path).ok()?;
        let stamp = (metadata.ino(), metadata.modified().ok()?, metadata.len());
        let mut cached = self.cached.lock().unwrap_or_else(|poison| poison.into_inner());
        if let Some((seen, address)) = cached.as_ref()
            && *seen == stamp
        {
            return *address;
        }
        let text = fs::read_to_string(&self.path).ok()?;
        let address: Option<SocketAddr> = text.trim().parse().ok();
        eprintln!(
            "proxy: upstream is now {}",
            address.map_or_else(|| format!("invalid ({text:?})"), |a| a.to_string())
        );
        *cached = Some((stamp, address));
        address
    }
}

/// Pipes one client connection to the current upstream and back, with
/// half-closes passed on (a client that shuts down its sending side still
/// gets the whole answer).
fn forward(client: TcpStream, upstream: &Upstream) -> Result<()> {
    let started = Instant::now();
    let server = loop {
        let failure = match upstream.current() {
            Some(address) => match TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                Ok(server) => break server,
                Err(err) => format!("connecting to {address}: {err}"),
            },
            None => "no upstream yet (nothing deployed)".to_owned(),
        };
        // Retried with the file read again: during a switch the address
        // read a moment ago may already be on its way out.
        if started.elapsed() > CONNECT_PATIENCE {
            // The request is read first: closing a socket with unread data
            // resets it, and the client would never see the answer.
            let _ = client.set_read_timeout(Some(Duration::from_millis(100)));
            let _ = std::io::Read::read(&mut &client, &mut [0u8; 16 * 1024]);
            let body = format!("the local environment has no running app: {failure}\n");
            let _ = write!(
                &client,
                "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.shutdown(Shutdown::Write);
            bail!("{failure}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for stream in [&client, &server] {
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(IDLE_TIMEOUT)).context("setting the idle timeout")?;
    }
    let (client_reader, server_writer) = (client.try_clone()?, server.try_clone()?);
    let requests = std::thread::spawn(move || pipe(client_reader, server_writer));
    pipe(server, client);
    let _ = requests.join();
    Ok(())
}

/// Copies until end of stream or an error, then closes the writing side.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Starts the environment's proxy unless it already runs; fails when another
/// program holds the port.
pub fn ensure_running(ctx: &Ctx, target: &Target) -> Result<()> {
    let listen = listen_address(target);
    if let Some(pid) = running_pid(target) {
        if proxy_command_line(pid).is_some_and(|line| line.contains(&format!("--listen\0{listen}\0"))) {
            ui::detail(&format!("the proxy (pid {pid}) listens on {listen}"));
            return Ok(());
        }
        // deploy.toml names another port now.
        stop(ctx, target)?;
    }
    let upstream_file = target.file("upstream");
    let log_path = target.file("proxy.log");
    let exe = crate::util::self_exe().context("finding the xtask binary to run the proxy")?;
    let description = format!(
        "{} local-proxy --listen {listen} --upstream-file {} (in the background, log {})",
        exe.display(),
        shown(&ctx.root, &upstream_file),
        shown(&ctx.root, &log_path)
    );
    if ctx.dry_run() {
        println!("would start: {description}");
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
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut command = std::process::Command::new(&exe);
    command
        .args(["local-proxy", "--listen", &listen.to_string(), "--upstream-file"])
        .arg(&upstream_file)
        .current_dir(&ctx.root)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("cloning the proxy log handle")?)
        .stderr(log);
    // Its own process group: a Ctrl-C in this terminal, meant for a later
    // xtask, must not stop the URL.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().with_context(|| format!("starting {}", exe.display()))?;
    let pid = child.id();
    // Not waited for: it outlives this process (and is reaped by init).
    drop(child);
    util::write_atomic(&target.file("proxy.pid"), format!("{pid}\n").as_bytes(), 0o644)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_err() {
        if !util::process_running(pid) || Instant::now() > deadline {
            bail!(
                "the proxy did not start listening on {listen}; its log {}:\n{}",
                log_path.display(),
                tail(&log_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Sends new connections to the app on `port` from now on.
pub fn point_at(ctx: &Ctx, target: &Target, port: u16) -> Result<()> {
    let upstream_file = target.file("upstream");
    if ctx.dry_run() {
        println!(
            "would write: 127.0.0.1:{port} to {} (the proxy sends new connections there)",
            shown(&ctx.root, &upstream_file)
        );
        return Ok(());
    }
    util::write_atomic(&upstream_file, format!("127.0.0.1:{port}\n").as_bytes(), 0o644)
}

/// The port new connections go to, if any.
pub fn upstream_port(target: &Target) -> Option<u16> {
    let text = fs::read_to_string(target.file("upstream")).ok()?;
    text.trim().parse::<SocketAddr>().ok().map(|address| address.port())
}

/// The proxy's pid when it runs (checked against its command line).
pub fn running_pid(target: &Target) -> Option<u32> {
    let pid: u32 = fs::read_to_string(target.file("proxy.pid")).ok()?.trim().parse().ok()?;
    let upstream_file = target.file("upstream");
    let line = proxy_command_line(pid)?;
    (util::process_running(pid) && line.contains(&*upstream_file.to_string_lossy())).then_some(pid)
}

/// Stops the proxy (SIGTERM, then SIGKILL after 5 s); the upstream file goes
/// with it, so a new proxy starts with no upstream until a release.
pub fn stop(ctx: &Ctx, target: &Target) -> Result<()> {
    let Some(pid) = running_pid(target) else {
        if !ctx.dry_run() {
            let _ = fs::remove_file(target.file("proxy.pid"));
            let _ = fs::remove_file(target.file("upstream"));
        }
        return Ok(());
    };
    if ctx.dry_run() {
        println!("would stop: the proxy (pid {pid}) on 127.0.0.1:{}", target.host_port);
        return Ok(());
    }
    ui::info(&format!("stopping the proxy (pid {pid}) on 127.0.0.1:{}", target.host_port));
    signal(pid, "TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while util::process_running(pid) {
        if Instant::now() > deadline {
            signal(pid, "KILL");
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::remove_file(target.file("proxy.pid"));
    let _ = fs::remove_file(target.file("upstream"));
    Ok(())
}

fn listen_address(target: &Target) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], target.host_port))
}

/// The NUL-separated command line of a proxy process, or `None` when the
/// pid is not one (any more).
fn proxy_command_line(pid: u32) -> Option<String> {
    let bytes = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let line = String::from_utf8_lossy(&bytes).into_owned();
    line.contains("\0local-proxy\0").then_some(line)
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// An upstream that answers every connection with its name and closes.
    fn named_server(name: &'static str) -> (u16, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(2) {
                let mut stream = stream.unwrap();
                let mut request = Vec::new();
                // The client half-closes after its request: read to the end.
                stream.read_to_end(&mut request).unwrap();
                stream.write_all(format!("{name} got {}", String::from_utf8_lossy(&request)).as_bytes()).unwrap();
            }
        });
        (port, handle)
    }

    fn ask(port: u16, request: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn new_connections_follow_the_upstream_file() {
        let dir = std::env::temp_dir().join(format!("xtask-proxy-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let upstream_file = dir.join("upstream");
        let (blue, blue_server) = named_server("blue");
        let (green, green_server) = named_server("green");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy_port = listener.local_addr().unwrap().port();
        let proxied_file = upstream_file.clone();
        std::thread::spawn(move || serve(listener, proxied_file));

        util::write_atomic(&upstream_file, format!("127.0.0.1:{blue}\n").as_bytes(), 0o644).unwrap();
        assert_eq!(ask(proxy_port, "one"), "blue got one");
        assert_eq!(ask(proxy_port, "two"), "blue got two");
        blue_server.join().unwrap();
        util::write_atomic(&upstream_file, format!("127.0.0.1:{green}\n").as_bytes(), 0o644).unwrap();
        assert_eq!(ask(proxy_port, "three"), "green got three");
        assert_eq!(ask(proxy_port, "four"), "green got four");
        green_server.join().unwrap();

        // Nothing listens on the upstream any more: a 502 after the retries.
        let answer = ask(proxy_port, "GET / HTTP/1.0\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 502 Bad Gateway"), "{answer}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
