//! A bounded keep-alive load on a loopback URL, for the switch benchmark and
//! its short twin in the test suite: a few client threads, each on one
//! persistent connection, asking `GET /api/entries` with a `POST
//! /api/entries` now and then, until told to stop or a fixed number of
//! requests is reached.
//!
//! A failed request is what a user would see as one: a connection closed or
//! reset under a request, an answer that never came, or a 5xx. After a
//! failure the thread reconnects, as a browser would.

use std::{
    io::{BufReader, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::http::http1;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub port: u16,
    /// Client threads, each with one keep-alive connection.
    pub connections: usize,
    /// Stop after this many requests in all, whatever happens.
    pub max_requests: u64,
    /// Every n-th request of a thread is a POST.
    pub post_every: u64,
    /// A pause after each request of a thread (zero: as fast as answered).
    pub pause: Duration,
}

/// What the load saw.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub requests: u64,
    pub failed: u64,
    pub posts_ok: u64,
    /// Connections opened after the first one of each thread.
    pub reconnects: u64,
    pub elapsed: Duration,
    /// Latencies of the answered requests, sorted.
    pub latencies: Vec<Duration>,
    /// The first few failures, as text.
    pub failures: Vec<String>,
}

impl LoadReport {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// The latency below which `fraction` of the answers came.
    pub fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 * fraction).ceil() as usize).clamp(1, self.latencies.len()) - 1;
        self.latencies[index]
    }
}

/// A running load; `finish` stops it and reports.
pub struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    threads: Vec<JoinHandle<ThreadReport>>,
    started: Instant,
}

impl Load {
    pub fn start(spec: &LoadSpec) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..spec.connections)
            .map(|number| {
                let (spec, stop, sent) = (spec.clone(), stop.clone(), sent.clone());
                std::thread::spawn(move || client(number, &spec, &stop, &sent))
            })
            .collect();
        Load { stop, sent, threads, started: Instant::now() }
    }

    /// Requests sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = LoadReport::default();
        for thread in self.threads {
            let Ok(thread) = thread.join() else { continue };
            report.requests += thread.requests;
            report.failed += thread.failed;
            report.posts_ok += thread.posts_ok;
            report.reconnects += thread.reconnects;
            report.latencies.extend(thread.latencies);
            if report.failures.len() < 5 {
                report.failures.extend(thread.failures.into_iter().take(5 - report.failures.len()));
            }
        }
        report.elapsed = self.started.elapsed();
        report.latencies.sort();
        report
    }
}

#[derive(Default)]
struct ThreadReport {
    requests: u64,
    failed: u64,
    posts_ok: u64,
    reconnects: u64,
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

fn client(number: usize, spec: &LoadSpec, stop: &AtomicBool, sent: &AtomicU64) -> ThreadReport {
    let address = SocketAddr::from(([127, 0, 0, 1], spec.port));
    let mut report = ThreadReport::default();
    let mut connection: Option<(BufReader<TcpStream>, TcpStream)> = None;
    let mut opened = 0u64;
    let mut count = 0u64;
    while !stop.load(Ordering::SeqCst) && sent.fetch_add(1, Ordering::SeqCst) < spec.max_requests {
        count += 1;
        let post = spec.post_every > 0 && count.is_multiple_of(spec.post_every);
        if connection.is_none() {
            match connect(address) {
                Ok(opened_now) => {
                    opened += 1;
                    connection = Some(opened_now);
                }
                Err(err) => {
                    report.requests += 1;
                    fail(&mut report, format!("connecting to {address}: {err}"));
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((reader, writer)) = connection.as_mut() else { unreachable!("connected above") };
        let started = Instant::now();
        report.requests += 1;
        match exchange(reader, writer, post, number, count) {
            Ok((status, closes)) if status < 500 => {
                report.latencies.push(started.elapsed());
                if post && (200..300).contains(&status) {
                    report.posts_ok += 1;
                }
                if closes {
                    connection = None;
                }
                std::thread::sleep(spec.pause);
            }
            Ok((status, _)) => {
                report.latencies.push(started.elapsed());
                fail(&mut report, format!("{} answered {status}", if post { "POST" } else { "GET" }));
                connection = None;
            }
            Err(err) => {
                let method = if post { "POST" } else { "GET" };
                fail(&mut report, format!("{method} on a kept-alive connection: {err}"));
                connection = None;
            }
        }
    }
    report.reconnects = opened.saturating_sub(1);
    report
}

fn connect(address: SocketAddr) -> std::io::Result<(BufReader<TcpStream>, TcpStream)> {
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok((BufReader::new(stream.try_clone()?), stream))
}

/// One request; the status and whether the server closes the connection.
fn exchange(
    reader: &mut BufReader<TcpStream>,
    writer: &mut TcpStream,
    post: bool,
    thread: usize,
    count: u64,
) -> std::io::Result<(u16, bool)> {
    let request = if post {
        let body = format!(r#"{{"name":"load {thread}","message":"request {count} of client {thread}"}}"#);
        format!(
            "POST /api/entries HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "GET /api/entries?limit=5 HTTP/1.1\r\nhost: bench\r\n\r\n".to_owned()
    };
    writer.write_all(request.as_bytes())?;
    let head = http1::read_head(reader)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection closed"))?;
    let method = if post { "POST" } else { "GET" };
    let framing = head.response_body(method)?;
    http1::copy_body(reader, &mut std::io::sink(), framing)?;
    Ok((head.status()?, head.has_token("connection", "close") || framing == http1::Body::UntilClose))
}

fn fail(report: &mut ThreadReport, failure: String) {
    report.failed += 1;
    if report.failures.len() < 5 {
        report.failures.push(failure);
    }
}
