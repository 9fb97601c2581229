//! A bounded loopback load on a running app, to see the abuse limits hold
//! under pressure: keep-alive HTTP/1.1 clients (std `TcpStream`, no client
//! crate) share a fixed number of `GET /api/entries` and `POST /api/entries`
//! from one address, then the tool prints what came back.
//!
//! ```text
//! cargo run --release -p app --example load -- \
//!     --url http://127.0.0.1:8080 --reads 20000 --writes 200 --connections 8
//! ```
//!
//! It exits 1 when any answer was a 5xx or a request failed outright, or
//! when more writes than the burst (`--burst`, default the app's 10) were
//! sent and none was refused with 429: the limit is then not working. The
//! app's integration tests run the same loop in a small, fixed size.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `host:port` of the app (from `--url http://host:port`).
    pub authority: String,
    pub reads: u64,
    pub writes: u64,
    pub connections: u64,
    /// The app's write burst: more writes than this must meet a 429.
    pub burst: u64,
}

/// What came back.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub writes_created: u64,
    pub writes_limited: u64,
    pub writes_other: u64,
    pub server_errors: u64,
    /// Requests that got no answer (connection refused, reset, timed out).
    pub failed: u64,
    /// Latencies of the answered reads, sorted.
    pub read_latencies: Vec<Duration>,
    pub requests: u64,
    pub elapsed: Duration,
    /// The first few problems, as text.
    pub samples: Vec<String>,
}

impl LoadReport {
    /// Why the run counts as failed; empty when it passed.
    pub fn problems(&self, options: &LoadOptions) -> Vec<String> {
        let mut problems = Vec::new();
        if self.server_errors > 0 {
            problems.push(format!("{} answers were 5xx", self.server_errors));
        }
        if self.failed > 0 {
            problems.push(format!("{} requests got no answer", self.failed));
        }
        if options.writes > options.burst && self.writes_limited == 0 {
            problems
                .push(format!("{} writes from one client met no 429 (the burst is {})", options.writes, options.burst));
        }
        problems
    }

    /// The read latency below which `fraction` of the reads were answered.
    pub fn read_percentile(&self, fraction: f64) -> Duration {
        if self.read_latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.read_latencies.len() as f64 * fraction).ceil() as usize).clamp(1, self.read_latencies.len());
        self.read_latencies[index - 1]
    }

    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64().max(0.001)
    }

    /// The figures, one per line.
    pub fn summary(&self) -> String {
        let millis = |duration: Duration| format!("{:.2}ms", duration.as_secs_f64() * 1000.0);
        format!(
            "writes: {} created, {} refused with 429, {} other\n\
             5xx answers: {}, requests without an answer: {}\n\
             read latency p50 / p99 / max: {} / {} / {}\n\
             {} requests in {:.2}s: {:.0} requests/s",
            self.writes_created,
            self.writes_limited,
            self.writes_other,
            self.server_errors,
            self.failed,
            millis(self.read_percentile(0.5)),
            millis(self.read_percentile(0.99)),
            millis(self.read_latencies.last().copied().unwrap_or_default()),
            self.requests,
            self.elapsed.as_secs_f64(),
            self.requests_per_second(),
        )
    }
}

/// Runs the load to the end and reports.
pub fn run(options: &LoadOptions) -> LoadReport {
    let started = Instant::now();
    let connections = options.connections.max(1);
    let threads: Vec<_> = (0..connections)
        .map(|index| {
            // Shares as even as whole numbers allow.
            let share = |total: u64| total / connections + u64::from(index < total % connections);
            let (reads, writes) = (share(options.reads), share(options.writes));
            let authority = options.authority.clone();
            thread::spawn(move || client(&authority, index, reads, writes))
        })
        .collect();
    let mut report = LoadReport::default();
    for thread in threads {
        let part = thread.join().expect("a load thread panicked");
        report.writes_created += part.writes_created;
        report.writes_limited += part.writes_limited;
        report.writes_other += part.writes_other;
        report.server_errors += part.server_errors;
        report.failed += part.failed;
        report.requests += part.requests;
        report.read_latencies.extend(part.read_latencies);
        report.samples.extend(part.samples.into_iter().take(5usize.saturating_sub(report.samples.len())));
    }
    report.elapsed = started.elapsed();
    report.read_latencies.sort();
    report
}

/// One keep-alive connection's part: `writes` spread evenly among `reads`.
fn client(authority: &str, index: u64, reads: u64, writes: u64) -> LoadReport {
    let mut report = LoadReport::default();
    let mut connection: Option<Connection> = None;
    let total = reads + writes;
    for k in 0..total {
        let write = (k + 1) * writes / total > k * writes / total;
        let request = if write {
            let body = format!(r#"{{"name":"load {index}","message":"load test entry {k}"}}"#);
            format!(
                "POST /api/entries HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        } else {
            format!("GET /api/entries?limit=20 HTTP/1.1\r\nHost: {authority}\r\n\r\n")
        };
        report.requests += 1;
        let sent = Instant::now();
        let answer = match connection.take() {
            Some(open) => Ok(open),
            None => Connection::open(authority),
        }
        .and_then(|mut open| open.exchange(&request).map(|answer| (open, answer)));
        let status = match answer {
            Ok((open, (status, closes))) => {
                if !closes {
                    connection = Some(open);
                }
                status
            }
            Err(err) => {
                report.failed += 1;
                note(&mut report, format!("{} got no answer: {err}", if write { "POST" } else { "GET" }));
                continue;
            }
        };
        if status >= 500 {
            report.server_errors += 1;
            note(&mut report, format!("{} answered {status}", if write { "POST" } else { "GET" }));
        }
        if write {
            match status {
                201 => report.writes_created += 1,
                429 => report.writes_limited += 1,
                _ => report.writes_other += 1,
            }
        } else if status < 500 {
            report.read_latencies.push(sent.elapsed());
        }
    }
    report
}

fn note(report: &mut LoadReport, sample: String) {
    if report.samples.len() < 5 {
        report.samples.push(sample);
    }
}

/// A keep-alive connection.
struct Connection {
    reader: BufReader<TcpStream>,
}

impl Connection {
    fn open(authority: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(authority)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Connection { reader: BufReader::new(stream) })
    }

    /// Sends one request and reads the answer: its status, and whether the
    /// server closes the connection after it.
    fn exchange(&mut self, request: &str) -> io::Result<(u16, bool)> {
        self.reader.get_mut().write_all(request.as_bytes())?;
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed without an answer"));
        }
        let status = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        let (mut length, mut closes) = (None, false);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed in the head"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<u64>().map_err(|_| invalid(format!("bad content-length {value:?}")))?);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
                closes = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // The app's answers are all of a known length.
                return Err(invalid(format!("transfer-encoding {value:?} is not supported")));
            }
        }
        let length = length.ok_or_else(|| invalid("an answer without content-length".to_owned()))?;
        io::copy(&mut (&mut self.reader).take(length), &mut io::sink())?;
        Ok((status, closes))
    }
}

const USAGE: &str = "usage: load --url http://HOST:PORT [--reads N] [--writes N] [--connections N] [--burst N]";

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    eprintln!(
        "{} reads and {} writes over {} keep-alive connections to {}",
        options.reads, options.writes, options.connections, options.authority
    );
    let report = run(&options);
    println!("{}", report.summary());
    for sample in &report.samples {
        eprintln!("  e.g. {sample}");
    }
    let problems = report.problems(&options);
    for problem in &problems {
        eprintln!("error: {problem}");
    }
    if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<LoadOptions, String> {
    let mut options = LoadOptions { authority: String::new(), reads: 20_000, writes: 200, connections: 8, burst: 10 };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || value.parse::<u64>().map_err(|_| format!("{flag} {value:?} is not a whole number"));
        match flag.as_str() {
            "--url" => {
                let rest = value.strip_prefix("http://").ok_or_else(|| format!("--url {value:?} is not http://"))?;
                options.authority = rest.trim_end_matches('/').to_owned();
            }
            "--reads" => options.reads = number()?,
            "--writes" => options.writes = number()?,
            "--connections" => options.connections = number()?.max(1),
            "--burst" => options.burst = number()?,
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    if options.authority.is_empty() {
        return Err("--url is required".to_owned());
    }
    Ok(options)
}
