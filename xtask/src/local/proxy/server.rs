//! The proxy process itself: it owns every client connection (keep-alive
//! included) and sends each request, one at a time, to the release named in
//! the `upstream` file at that moment.
//!
//! The switch works request by request, not connection by connection:
//! choosing a release and counting the request as in flight on it happen
//! under one lock, so once `drain` has seen the new upstream file, no new
//! request goes to the old release, and `drain` returns when the requests
//! already sent there have been answered. Only then is the old container
//! stopped (by the release, in `release.rs`), so no request is ever sent to
//! a container that is stopping, and none is cut off by its stop.
//!
//! A request that cannot be delivered gets a 502 naming the release, never
//! a dropped connection. A keep-alive connection to the app that the app
//! closed while idle is retried once on a new connection: nothing was
//! answered on it, and the app (hyper) reads no request on a connection it
//! is closing.

use std::{
    collections::HashMap,
    fs,
    io::{self, BufRead, BufReader, BufWriter, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use crate::{
    http::http1::{self, Body, Head},
    support::ui,
};

/// How long a request may wait for a release that accepts its connection:
/// it covers a container that is being replaced, not a missing one.
const CONNECT_PATIENCE: Duration = Duration::from_secs(3);
/// A client connection with nothing to read for this long is closed (idle
/// keep-alive connections of a forgotten browser tab), and an answer that
/// takes longer is given up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// A connection to the app unused for this long is not reused: the app may
/// be about to close it, and a new loopback connection costs little.
const UPSTREAM_REUSE: Duration = Duration::from_secs(5);
/// Request bodies are read whole before they are sent, so a stale upstream
/// connection can be retried; the app's own limit is far below this.
const MAX_REQUEST_BODY: usize = 16 * 1024 * 1024;

/// Where requests go now, and how many are in flight on each release.
pub struct Router {
    upstream_file: PathBuf,
    /// CONNECT_PATIENCE; shorter in this module's tests, which wait it out.
    connect_patience: Duration,
    state: Mutex<RouterState>,
    answered: Condvar,
}

#[derive(Default)]
struct RouterState {
    stamp: Option<FileStamp>,
    current: Option<Upstream>,
    in_flight: HashMap<SocketAddr, usize>,
}

type FileStamp = (u64, SystemTime, u64);

/// One release as the upstream file names it: `127.0.0.1:PORT NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub address: SocketAddr,
    /// The container's name, for messages (`release` without one).
    pub release: String,
}

impl Upstream {
    pub fn parse(text: &str) -> Option<Upstream> {
        let mut words = text.split_whitespace();
        let address = words.next()?.parse().ok()?;
        let release = words.next().unwrap_or("release").to_owned();
        Some(Upstream { address, release })
    }
}

impl Router {
    pub fn new(upstream_file: PathBuf) -> Arc<Router> {
        Router::with_patience(upstream_file, CONNECT_PATIENCE)
    }

    fn with_patience(upstream_file: PathBuf, connect_patience: Duration) -> Arc<Router> {
        Arc::new(Router {
            upstream_file,
            connect_patience,
            state: Mutex::new(RouterState::default()),
            answered: Condvar::new(),
        })
    }

    /// Chooses the current release for one request and counts it in flight
    /// there until the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> Option<InFlight> {
        let mut state = self.lock();
        self.refresh(&mut state);
        let upstream = state.current.clone()?;
        *state.in_flight.entry(upstream.address).or_default() += 1;
        Some(InFlight { router: self.clone(), upstream })
    }

    /// Reads the upstream file again (it is replaced atomically for a
    /// switch), then waits until no request is in flight on any other
    /// release, at most `timeout`. Returns how many still are.
    pub fn drain(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        self.refresh(&mut state);
        loop {
            let current = state.current.as_ref().map(|upstream| upstream.address);
            let elsewhere: usize =
                state.in_flight.iter().filter(|(address, _)| Some(**address) != current).map(|(_, n)| n).sum();
            let now = Instant::now();
            if elsewhere == 0 || now >= deadline {
                return elsewhere;
            }
            state = self.answered.wait_timeout(state, deadline - now).unwrap_or_else(|poison| poison.into_inner()).0;
        }
    }

    /// One `stat` per request; the file is read again when it was replaced
    /// or changed.
    fn refresh(&self, state: &mut RouterState) {
        let Ok(metadata) = fs::metadata(&self.upstream_file) else {
            return;
        };
        let Ok(modified) = metadata.modified() else {
            return;
        };
        let stamp = (metadata.ino(), modified, metadata.len());
        if state.stamp == Some(stamp) {
            return;
        }
        let text = fs::read_to_string(&self.upstream_file).unwrap_or_default();
        let upstream = Upstream::parse(&text);
        match &upstream {
            Some(upstream) => {
                ui::info(&format!("proxy: requests go to {} ({}) from now on", upstream.release, upstream.address))
            }
            None => ui::info(&format!("proxy: the upstream file holds no address: {text:?}")),
        }
        state.stamp = Some(stamp);
        state.current = upstream;
    }

    fn lock(&self) -> MutexGuard<'_, RouterState> {
        self.state.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A request in flight on a release.
struct InFlight {
    router: Arc<Router>,
    upstream: Upstream,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.router.lock();
        if let Some(count) = state.in_flight.get_mut(&self.upstream.address) {
            *count -= 1;
            if *count == 0 {
                state.in_flight.remove(&self.upstream.address);
            }
        }
        drop(state);
        self.router.answered.notify_all();
    }
}

/// Accepts client connections forever, a thread for each.
pub fn serve(listener: TcpListener, router: Arc<Router>) {
    for client in listener.incoming() {
        let client = match client {
            Ok(client) => client,
            Err(err) => {
                // Out of file descriptors, typically: back off, keep serving.
                ui::info(&format!("proxy: accepting a connection: {err}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let router = router.clone();
        let spawned = std::thread::Builder::new().name("proxy-connection".to_owned()).spawn(move || {
            if let Err(err) = ClientConnection::new(client).and_then(|connection| connection.serve(&router)) {
                // A client that went away is no news.
                if !matches!(err.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) {
                    ui::info(&format!("proxy: {err}"));
                }
            }
        });
        if let Err(err) = spawned {
            ui::info(&format!("proxy: starting a connection thread: {err}"));
        }
    }
}

/// Answers `drain MILLISECONDS` lines on the control port: `drained`, or
/// `busy N` when N requests are still in flight on old releases at the
/// timeout. Read-only for the routing, so any local process may ask.
pub fn serve_control(listener: TcpListener, router: Arc<Router>) {
    for connection in listener.incoming().flatten() {
        let router = router.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            let Ok(reader) = connection.try_clone() else { return };
            if BufReader::new(reader).read_line(&mut line).is_err() {
                return;
            }
            let answer = match line.trim().strip_prefix("drain ").and_then(|millis| millis.parse().ok()) {
                Some(millis) => match router.drain(Duration::from_millis(millis)) {
                    0 => "drained\n".to_owned(),
                    busy => format!("busy {busy}\n"),
                },
                None => format!("error: unknown command {:?}\n", line.trim()),
            };
            let _ = (&connection).write_all(answer.as_bytes());
        });
    }
}

/// A keep-alive connection to one release, reused for the requests of one
/// client connection while that release is current.
struct UpstreamConnection {
    address: SocketAddr,
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    last_used: Instant,
}

impl UpstreamConnection {
    fn connect(address: SocketAddr) -> io::Result<UpstreamConnection> {
        let stream = TcpStream::connect_timeout(&address, Duration::from_secs(1))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(UpstreamConnection { address, stream, reader, last_used: Instant::now() })
    }
}

struct ClientConnection {
    peer: SocketAddr,
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    upstream: Option<UpstreamConnection>,
}

/// What happens to a client connection after an exchange.
#[derive(PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

impl ClientConnection {
    fn new(client: TcpStream) -> io::Result<ClientConnection> {
        client.set_nodelay(true)?;
        client.set_read_timeout(Some(IDLE_TIMEOUT))?;
        let peer = client.peer_addr()?;
        Ok(ClientConnection { peer, reader: BufReader::new(client.try_clone()?), writer: client, upstream: None })
    }

    fn serve(mut self, router: &Arc<Router>) -> io::Result<()> {
        while let Some(request) = http1::read_head(&mut self.reader)? {
            if self.exchange(router, &request)? == Next::Close {
                break;
            }
        }
        let _ = self.writer.shutdown(Shutdown::Write);
        Ok(())
    }

    /// One request and its answer.
    fn exchange(&mut self, router: &Arc<Router>, request: &Head) -> io::Result<Next> {
        let framing = match request.request_body() {
            Ok(framing) => framing,
            Err(err) => {
                return self.answer_error(400, "Bad Request", &format!("the proxy cannot read this request: {err}"));
            }
        };
        if matches!(framing, Body::Length(length) if length > MAX_REQUEST_BODY as u64) {
            return self.answer_error(413, "Content Too Large", "the request body is larger than the proxy's 16 MiB");
        }
        // The proxy reads the body before it picks a release, so it answers
        // the client's Expect itself rather than passing it on.
        if request.has_token("expect", "100-continue") {
            self.writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = LimitedBuffer::default();
        if let Err(err) = http1::copy_body(&mut self.reader, &mut body, framing) {
            return if body.over_limit {
                self.answer_error(413, "Content Too Large", "the request body is larger than the proxy's 16 MiB")
            } else {
                Err(err)
            };
        }
        let forwarded_for = match request.header("x-forwarded-for") {
            Some(earlier) => format!("{earlier}, {}", self.peer.ip()),
            None => self.peer.ip().to_string(),
        };
        let mut message = request.to_bytes(&["expect", "x-forwarded-for"], &[("X-Forwarded-For", forwarded_for)]);
        message.extend_from_slice(&body.bytes);
        let client_closes = request.request_closes();

        let started = Instant::now();
        let mut retried_stale = false;
        loop {
            let Some(in_flight) = router.begin() else {
                if started.elapsed() > router.connect_patience {
                    return self.answer_error(
                        502,
                        "Bad Gateway",
                        "the local environment has no release yet (nothing deployed)",
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let upstream = &in_flight.upstream;
            let reused = self
                .upstream
                .as_ref()
                .is_some_and(|held| held.address == upstream.address && held.last_used.elapsed() < UPSTREAM_REUSE);
            if !reused {
                match UpstreamConnection::connect(upstream.address) {
                    Ok(connection) => self.upstream = Some(connection),
                    Err(err) => {
                        self.upstream = None;
                        if started.elapsed() > router.connect_patience {
                            let message =
                                format!("{} ({}) refuses connections: {err}", upstream.release, upstream.address);
                            return self.answer_error(502, "Bad Gateway", &message);
                        }
                        drop(in_flight);
                        // The upstream file is read again on the next try:
                        // the release read a moment ago may be on its way out.
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
            }
            let Some(connection) = self.upstream.as_mut() else { unreachable!("connected above") };
            let response =
                connection.stream.write_all(&message).and_then(|()| http1::read_head(&mut connection.reader));
            let response = match response {
                Ok(Some(response)) => response,
                failed => {
                    self.upstream = None;
                    if reused && !retried_stale {
                        // Closed by the app while idle: nothing was answered.
                        retried_stale = true;
                        continue;
                    }
                    let error = match failed {
                        Err(err) => err.to_string(),
                        _ => "it closed the connection without an answer".to_owned(),
                    };
                    let message = format!("{} ({}) did not answer: {error}", upstream.release, upstream.address);
                    return self.answer_error(502, "Bad Gateway", &message);
                }
            };
            let next = self.pass_response(request, response, client_closes);
            drop(in_flight);
            return next;
        }
    }

    /// Copies the release's answer to the client; an upgrade (101) turns the
    /// connection into a two-way pipe until either side closes.
    fn pass_response(&mut self, request: &Head, mut response: Head, client_closes: bool) -> io::Result<Next> {
        let Some(connection) = self.upstream.as_mut() else { unreachable!("an answer came on it") };
        let mut status = response.status()?;
        // Informational answers (103 Early Hints) go through as they come.
        while (100..200).contains(&status) && status != 101 {
            self.writer.write_all(&response.to_bytes(&[], &[]))?;
            response = http1::read_head(&mut connection.reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the app closed after a 1xx answer"))?;
            status = response.status()?;
        }
        if status == 101 {
            self.writer.write_all(&response.to_bytes(&[], &[]))?;
            let Some(connection) = self.upstream.take() else { unreachable!("checked above") };
            splice(&mut self.reader, &self.writer, connection);
            return Ok(Next::Close);
        }
        let framing = response.response_body(request.method())?;
        let upstream_closes = framing == Body::UntilClose
            || response.has_token("connection", "close")
            || (response.start_line.starts_with("HTTP/1.0") && !response.has_token("connection", "keep-alive"));
        // The client's connection lives as long as the client wants, not as
        // long as the app's: hop-by-hop headers are the proxy's to set.
        let closes = client_closes || framing == Body::UntilClose;
        let added: &[(&str, String)] = if closes { &[("Connection", "close".to_owned())] } else { &[] };
        let mut writer = BufWriter::new(&self.writer);
        writer.write_all(&response.to_bytes(&["connection", "keep-alive"], added))?;
        http1::copy_body(&mut connection.reader, &mut writer, framing)?;
        writer.flush()?;
        if upstream_closes {
            self.upstream = None;
        } else {
            connection.last_used = Instant::now();
        }
        Ok(if closes { Next::Close } else { Next::KeepAlive })
    }

    /// An answer of the proxy's own; the connection stays usable.
    fn answer_error(&mut self, status: u16, reason: &str, message: &str) -> io::Result<Next> {
        ui::info(&format!("proxy: answering {status}: {message}"));
        let body = format!("{{\"error\":{}}}\n", serde_json::Value::String(format!("local proxy: {message}")));
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        self.writer.write_all(answer.as_bytes())?;
        // After a refused body the rest of the request is still unread.
        Ok(if status == 413 || status == 400 { Next::Close } else { Next::KeepAlive })
    }
}

/// A request body in memory, refused past MAX_REQUEST_BODY.
#[derive(Default)]
struct LimitedBuffer {
    bytes: Vec<u8>,
    over_limit: bool,
}

impl Write for LimitedBuffer {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + data.len() > MAX_REQUEST_BODY {
            self.over_limit = true;
            return Err(io::Error::other("request body over the limit"));
        }
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Both directions of an upgraded connection (WebSocket), each until its
/// end of stream, with half-closes passed on.
fn splice(client_reader: &mut BufReader<TcpStream>, client_writer: &TcpStream, upstream: UpstreamConnection) {
    // Bytes the client sent after its request are already in the buffer.
    let early = client_reader.buffer().to_vec();
    let (Ok(mut to_upstream), Ok(mut to_client)) = (upstream.stream.try_clone(), client_writer.try_clone()) else {
        return;
    };
    let Ok(mut from_client) = client_writer.try_clone() else { return };
    let requests = std::thread::spawn(move || {
        let _ = to_upstream.write_all(&early).and_then(|()| io::copy(&mut from_client, &mut to_upstream));
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let mut from_upstream = upstream.reader;
    let _ = io::copy(&mut from_upstream, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = requests.join();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{io::Read, sync::atomic::AtomicUsize};

    /// A keep-alive HTTP server that answers `NAME METHOD PATH BODY`;
    /// `/slow` answers after 300 ms, `/stream` in three chunks.
    struct Release {
        port: u16,
        connections: Arc<AtomicUsize>,
    }

    fn release(name: &'static str) -> Release {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let stream = stream.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut writer = stream;
                    while let Ok(Some(head)) = http1::read_head(&mut reader) {
                        let mut body = Vec::new();
                        http1::copy_body(&mut reader, &mut body, head.request_body().unwrap()).unwrap();
                        let path = head.start_line.split(' ').nth(1).unwrap().to_owned();
                        if path == "/slow" {
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        if path == "/stream" {
                            let chunks = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n";
                            writer.write_all(chunks.as_bytes()).unwrap();
                            continue;
                        }
                        let text = format!("{name} {} {path} {}", head.method(), String::from_utf8_lossy(&body));
                        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{text}", text.len());
                        if writer.write_all(answer.as_bytes()).is_err() {
                            break;
                        }
                        if path == "/close-after" {
                            break;
                        }
                    }
                });
            }
        });
        Release { port, connections }
    }

    struct Proxy {
        port: u16,
        router: Arc<Router>,
        upstream_file: PathBuf,
        _dir: testkit::ServiceDir,
    }

    fn proxy() -> Proxy {
        let dir = testkit::ServiceDir::new("xtask-proxy-test");
        let upstream_file = dir.path().join("upstream");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // The 502 tests wait the patience out; a tenth of it is plenty on
        // loopback.
        let router = Router::with_patience(upstream_file.clone(), CONNECT_PATIENCE / 10);
        let serving = router.clone();
        std::thread::spawn(move || serve(listener, serving));
        Proxy { port, router, upstream_file, _dir: dir }
    }

    impl Proxy {
        fn switch(&self, release: &Release, name: &str) {
            crate::support::fs::write_atomic(
                &self.upstream_file,
                format!("127.0.0.1:{} {name}\n", release.port).as_bytes(),
                0o644,
            )
            .unwrap();
        }
    }

    /// One keep-alive client connection.
    struct Client {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Client {
        fn connect(port: u16) -> Client {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Client { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream }
        }

        fn send(&mut self, method: &str, path: &str, body: &str) -> (u16, String) {
            let request =
                format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n{body}", body.len());
            self.writer.write_all(request.as_bytes()).unwrap();
            let head = http1::read_head(&mut self.reader).unwrap().expect("an answer");
            let mut answer = Vec::new();
            http1::copy_body(&mut self.reader, &mut answer, head.response_body(method).unwrap()).unwrap();
            (head.status().unwrap(), String::from_utf8(answer).unwrap())
        }
    }

    #[test]
    fn requests_on_one_keep_alive_connection_follow_the_switch() {
        let (blue, green, proxy) = (release("blue"), release("green"), proxy());
        proxy.switch(&blue, "blue-container");
        let mut client = Client::connect(proxy.port);
        assert_eq!(client.send("GET", "/a", ""), (200, "blue GET /a ".to_owned()));
        assert_eq!(client.send("POST", "/entries", "hello"), (200, "blue POST /entries hello".to_owned()));
        proxy.switch(&green, "green-container");
        assert_eq!(client.send("POST", "/entries", "again"), (200, "green POST /entries again".to_owned()));
        assert_eq!(client.send("GET", "/stream", ""), (200, "3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n".to_owned()));
        assert_eq!(client.send("GET", "/b", ""), (200, "green GET /b ".to_owned()));
        // The proxy kept one connection to each release.
        assert_eq!(blue.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(green.connections.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[test]
    fn drain_waits_for_the_requests_in_flight_on_the_old_release() {
        let (blue, green, proxy) = (release("blue"), release("green"), proxy());
        proxy.switch(&blue, "blue");
        let port = proxy.port;
        let slow = std::thread::spawn(move || Client::connect(port).send("GET", "/slow", ""));
        // Until the slow request is counted on blue.
        let deadline = Instant::now() + Duration::from_secs(5);
        while proxy.router.lock().in_flight.is_empty() {
            assert!(Instant::now() < deadline, "the slow request never reached the proxy");
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.switch(&green, "green");
        let started = Instant::now();
        assert_eq!(proxy.router.drain(Duration::from_secs(5)), 0);
        assert!(started.elapsed() >= Duration::from_millis(100), "drain returned before blue answered");
        assert_eq!(slow.join().unwrap(), (200, "blue GET /slow ".to_owned()));
        // A drain that gives up says how many are left.
        let port = proxy.port;
        let slow = std::thread::spawn(move || Client::connect(port).send("GET", "/slow", ""));
        while proxy.router.lock().in_flight.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        proxy.switch(&blue, "blue");
        assert_eq!(proxy.router.drain(Duration::from_millis(10)), 1);
        slow.join().unwrap();
    }

    #[test]
    fn an_app_that_closed_an_idle_connection_costs_no_request() {
        let (blue, proxy) = (release("blue"), proxy());
        proxy.switch(&blue, "blue");
        let mut client = Client::connect(proxy.port);
        // The release closes its connection after this answer; the next
        // request goes out on a new one.
        assert_eq!(client.send("GET", "/close-after", "").0, 200);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(client.send("POST", "/entries", "kept"), (200, "blue POST /entries kept".to_owned()));
        assert_eq!(blue.connections.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn an_upgraded_connection_is_piped_both_ways() {
        // A release that accepts an upgrade (a WebSocket handshake, say) and
        // then echoes raw bytes in upper case.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut writer = stream;
            let head = http1::read_head(&mut reader).unwrap().unwrap();
            assert!(head.has_token("connection", "upgrade"));
            writer
                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                .unwrap();
            let mut buffer = [0u8; 64];
            loop {
                let read = std::io::Read::read(&mut reader, &mut buffer).unwrap();
                if read == 0 {
                    break;
                }
                writer.write_all(&buffer[..read].to_ascii_uppercase()).unwrap();
            }
        });
        let proxy = proxy();
        crate::support::fs::write_atomic(&proxy.upstream_file, format!("127.0.0.1:{port} echo\n").as_bytes(), 0o644)
            .unwrap();
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"GET /ws HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n").unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let head = http1::read_head(&mut reader).unwrap().unwrap();
        assert_eq!(head.status().unwrap(), 101);
        for word in ["hello", "again"] {
            stream.write_all(word.as_bytes()).unwrap();
            let mut echoed = vec![0u8; word.len()];
            reader.read_exact(&mut echoed).unwrap();
            assert_eq!(echoed, word.to_uppercase().as_bytes());
        }
    }

    #[test]
    fn a_release_that_is_gone_gets_a_502_naming_it_and_the_connection_stays() {
        let proxy = proxy();
        let mut client = Client::connect(proxy.port);
        let (status, body) = client.send("GET", "/", "");
        assert_eq!(status, 502);
        assert!(body.contains("no release yet"), "{body}");
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        crate::support::fs::write_atomic(
            &proxy.upstream_file,
            format!("127.0.0.1:{port} app-local-1\n").as_bytes(),
            0o644,
        )
        .unwrap();
        let (status, body) = client.send("POST", "/entries", "x");
        assert_eq!(status, 502);
        assert!(body.contains("app-local-1"), "{body}");
        // Bodies over the limit are refused before any release sees them.
        let mut raw = TcpStream::connect(("127.0.0.1", proxy.port)).unwrap();
        raw.write_all(format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", MAX_REQUEST_BODY + 1).as_bytes())
            .unwrap();
        let mut answer = String::new();
        raw.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    }
}
