//! A minimal HTTP client for the health gate, the smoke check, the switch
//! benchmark and the functional tests: one request, one new connection.
//! `http://`, and `https://` through the openssl crate xtask already links
//! for the secrets (no new crate): the peer's certificate is verified
//! against the system's roots, or the bundle named by `SSL_CERT_FILE`
//! (OpenSSL's own variable: how tests trust a CA they made), and its name
//! against the URL's host.

pub mod http1;
use std::{
    fmt,
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// What a request answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header of this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }
}

/// Where requests go: `http[s]://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// A path prefix without the trailing slash (empty for the root).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl> {
        let url = url.trim();
        let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => bail!("{url:?} is not an http:// or https:// URL"),
        };
        let (authority, prefix) = rest.split_once('/').map_or((rest, ""), |(authority, path)| (authority, path));
        // An IPv6 literal is in brackets: [::1]:8080.
        let (host, port) = match authority.strip_prefix('[') {
            Some(bracketed) => {
                let (host, after) =
                    bracketed.split_once(']').with_context(|| format!("{url:?}: an unclosed [ in the host"))?;
                (host, after.strip_prefix(':'))
            }
            None => authority.split_once(':').map_or((authority, None), |(host, port)| (host, Some(port))),
        };
        let port = match port {
            Some(port) => port.parse().with_context(|| format!("{url:?}: {port:?} is not a port number"))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() {
            bail!("{url:?} names no host");
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(BaseUrl { tls, host: host.to_owned(), port, prefix })
    }

    /// 127.0.0.1 on a port, plain HTTP.
    pub fn local(port: u16) -> BaseUrl {
        BaseUrl { tls: false, host: "127.0.0.1".to_owned(), port, prefix: String::new() }
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `host:port` as the Host header says it (IPv6 in brackets).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port { host } else { format!("{host}:{}", self.port) }
    }

    /// The full URL of a path.
    pub fn join(&self, path: &str) -> String {
        format!("{}://{}{}{path}", self.scheme(), self.authority(), self.prefix)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority(), self.prefix)
    }
}

/// A request as a value: checks print what they send and send what they print.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// The path below the base URL's prefix, with its query.
    pub path: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn get(path: &str) -> Request {
        Request { method: "GET", path: path.to_owned(), content_type: None, body: Vec::new() }
    }

    pub fn post(path: &str, content_type: &'static str, body: impl Into<Vec<u8>>) -> Request {
        Request { method: "POST", path: path.to_owned(), content_type: Some(content_type), body: body.into() }
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method, self.path)
    }
}

/// `GET path` on 127.0.0.1:port over a new connection, everything within
/// `timeout`.
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<Response> {
    send(&BaseUrl::local(port), &Request::get(path), timeout)
}

/// Sends one request over a new connection and reads the answer, everything
/// within `timeout`. HTTP/1.0 with `Connection: close`: the server closes
/// after the answer and does not chunk it, so reading to the end is the
/// whole body. Redirects are answers, not followed.
pub fn send(base: &BaseUrl, request: &Request, timeout: Duration) -> Result<Response> {
    let ca_file = std::env::var_os("SSL_CERT_FILE").filter(|file| !file.is_empty()).map(std::path::PathBuf::from);
    send_trusting(base, request, timeout, ca_file.as_deref())
}

/// `send`, trusting the CAs of `ca_file` instead of the system's.
fn send_trusting(
    base: &BaseUrl,
    request: &Request,
    timeout: Duration,
    ca_file: Option<&std::path::Path>,
) -> Result<Response> {
    let started = Instant::now();
    let shown = format!("{} {}", request.method, base.join(&request.path));
    let addresses: Vec<SocketAddr> = (base.host.as_str(), base.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", base.host))?
        .collect();
    let mut stream = None;
    let mut last_error = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, timeout) {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(err) => last_error = Some(anyhow::Error::new(err).context(format!("connecting to {address}"))),
        }
    }
    let Some(stream) = stream else {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{} has no address", base.host)));
    };
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(remaining)).context("setting a read timeout")?;
    stream.set_write_timeout(Some(remaining)).context("setting a write timeout")?;
    let mut stream: Box<dyn ReadWrite> = if base.tls {
        Box::new(tls_connect(&base.host, stream, ca_file).with_context(|| format!("TLS with {}", base.join("")))?)
    } else {
        Box::new(stream)
    };
    let mut head = format!(
        "{} {}{} HTTP/1.0\r\nHost: {}\r\nConnection: close\r\n",
        request.method,
        base.prefix,
        request.path,
        base.authority()
    );
    if let Some(content_type) = request.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    if !request.body.is_empty() || request.method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(&request.body);
    stream.write_all(&bytes).with_context(|| format!("sending {shown}"))?;
    let mut response = Vec::new();
    if let Err(err) = stream.read_to_end(&mut response) {
        // Servers often close a TLS connection without close_notify after
        // an HTTP/1.0 answer; what arrived is the whole answer then.
        let unexpected_eof =
            err.kind() == std::io::ErrorKind::UnexpectedEof || err.to_string().contains("unexpected eof");
        if !(base.tls && unexpected_eof && !response.is_empty()) {
            return Err(anyhow::Error::new(err).context(format!("reading the answer to {shown}")));
        }
    }
    parse_response(&String::from_utf8_lossy(&response)).with_context(|| shown.clone())
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A verified TLS client connection: the system's roots or `ca_file`, SNI,
/// and the host name checked by OpenSSL.
fn tls_connect(
    host: &str,
    stream: TcpStream,
    ca_file: Option<&std::path::Path>,
) -> Result<openssl::ssl::SslStream<TcpStream>> {
    use openssl::ssl::{SslConnector, SslMethod, SslVersion};
    let mut builder = SslConnector::builder(SslMethod::tls_client()).context("setting up TLS")?;
    builder.set_min_proto_version(Some(SslVersion::TLS1_2)).context("setting up TLS")?;
    if let Some(ca_file) = ca_file {
        builder
            .set_ca_file(ca_file)
            .with_context(|| format!("reading the CA bundle {} (SSL_CERT_FILE)", ca_file.display()))?;
    }
    let connector = builder.build();
    connector.connect(host, stream).map_err(|err| match err {
        openssl::ssl::HandshakeError::Failure(mid) => {
            let verify = mid.ssl().verify_result();
            anyhow::anyhow!(
                "the TLS handshake failed ({}): {}",
                verify.error_string(),
                "the server's certificate must chain to a trusted CA (SSL_CERT_FILE) and name the host"
            )
        }
        other => anyhow::anyhow!("the TLS handshake failed: {other}"),
    })
}

fn parse_response(response: &str) -> Result<Response> {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let Some(status) = status_line
        .strip_prefix("HTTP/")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
    else {
        bail!("not an HTTP response: {:?}", response.chars().take(200).collect::<String>());
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Response { status, headers, body: body.to_owned() })
}

/// The `git_sha` of a `/version` answer.
pub fn version_sha(response: &Response) -> Result<String> {
    if response.status != 200 {
        bail!("/version answered {}: {}", response.status, response.body.trim());
    }
    let version: serde_json::Value = serde_json::from_str(&response.body)
        .with_context(|| format!("/version answered {:?}, not JSON", response.body))?;
    version
        .get("git_sha")
        .and_then(|sha| sha.as_str())
        .map(str::to_owned)
        .with_context(|| format!("/version answered {} without a git_sha", response.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server on a free port that reads one request, answers `response`
    /// and closes; joining it gives the request it read.
    fn one_shot_server(response: &'static [u8]) -> (u16, std::thread::JoinHandle<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).unwrap();
            stream.write_all(response).unwrap();
            String::from_utf8_lossy(&request[..read]).into_owned()
        });
        (port, server)
    }

    #[test]
    fn reads_status_and_body_from_a_server_that_closes() {
        let (port, server) =
            one_shot_server(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"git_sha\":\"abc\"}");
        let response = get(port, "/version", Duration::from_secs(5)).unwrap();
        assert!(server.join().unwrap().starts_with("GET /version HTTP/1.0\r\n"));
        assert_eq!(response.status, 200);
        assert_eq!(version_sha(&response).unwrap(), "abc");
        let unavailable = Response { status: 503, headers: Vec::new(), body: "{}".to_owned() };
        assert!(version_sha(&unavailable).unwrap_err().to_string().contains("503"));
    }

    #[test]
    fn base_urls_parse_host_port_and_prefix() {
        let base = BaseUrl::parse("http://example.com").unwrap();
        assert_eq!(base, BaseUrl { tls: false, host: "example.com".into(), port: 80, prefix: String::new() });
        assert_eq!(base.join("/healthz"), "http://example.com/healthz");
        let base = BaseUrl::parse("http://127.0.0.1:8080/app/").unwrap();
        assert_eq!((base.host.as_str(), base.port, base.prefix.as_str()), ("127.0.0.1", 8080, "/app"));
        assert_eq!(base.to_string(), "http://127.0.0.1:8080/app");
        let base = BaseUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((base.host.as_str(), base.port), ("::1", 9000));
        assert_eq!(base.join("/"), "http://[::1]:9000/");
        let base = BaseUrl::parse("https://example.com/").unwrap();
        assert_eq!((base.tls, base.port, base.to_string()), (true, 443, "https://example.com".to_owned()));
        assert_eq!(BaseUrl::parse("https://example.com:8443").unwrap().join("/v"), "https://example.com:8443/v");
        assert!(BaseUrl::parse("ftp://example.com").is_err());
        assert!(BaseUrl::parse("http://:80").is_err());
        assert!(BaseUrl::parse("http://host:port").is_err());
    }

    /// A real TLS server (the openssl CLI's `s_server -HTTP`, serving files)
    /// with a certificate for 127.0.0.1 from a CA made here.
    #[test]
    fn https_verifies_the_server_against_the_trusted_ca_and_its_name() {
        let ca = testkit::TestCa::new("xtask-https", "IP:127.0.0.1");
        let other_ca = testkit::TestCa::new("xtask-https-other", "IP:127.0.0.1");
        std::fs::write(
            ca.path("version"),
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"git_sha\":\"abc\"}",
        )
        .unwrap();
        let port = testkit::free_port();
        let mut server = std::process::Command::new("openssl")
            .args([
                "s_server",
                "-quiet",
                "-HTTP",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                "server.pem",
                "-key",
                "server.key",
            ])
            .current_dir(ca.dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "s_server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let base = BaseUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
        let get = |trusted: std::path::PathBuf| {
            send_trusting(&base, &Request::get("/version"), Duration::from_secs(5), Some(&trusted))
        };
        let trusted = get(ca.path("ca.pem"));
        let untrusted = get(other_ca.path("ca.pem")).map(|response| response.status);
        // By name: `localhost` is not what the certificate says.
        let misnamed = BaseUrl::parse(&format!("https://localhost:{port}")).unwrap();
        let wrong_name =
            send_trusting(&misnamed, &Request::get("/version"), Duration::from_secs(5), Some(&ca.path("ca.pem")))
                .map(|response| response.status);
        let _ = server.kill();
        let _ = server.wait();
        let response = trusted.unwrap();
        assert_eq!(version_sha(&response).unwrap(), "abc");
        let err = format!("{:#}", untrusted.unwrap_err());
        assert!(err.contains("certificate") && err.contains("SSL_CERT_FILE"), "{err}");
        let err = format!("{:#}", wrong_name.unwrap_err());
        assert!(err.contains("hostname mismatch") || err.contains("certificate"), "{err}");
    }

    #[test]
    fn posts_a_body_and_reads_headers() {
        let (port, server) = one_shot_server(b"HTTP/1.1 303 See Other\r\nLocation: /\r\n\r\n");
        let request = Request::post("/entries", "application/x-www-form-urlencoded", "name=a&message=b");
        let response = send(&BaseUrl::local(port), &request, Duration::from_secs(5)).unwrap();
        let sent = server.join().unwrap();
        assert!(sent.starts_with("POST /entries HTTP/1.0\r\n"), "{sent}");
        assert!(sent.contains("Content-Type: application/x-www-form-urlencoded\r\n"), "{sent}");
        assert!(sent.contains("Content-Length: 16\r\n") && sent.ends_with("\r\n\r\nname=a&message=b"), "{sent}");
        assert_eq!(response.status, 303);
        assert_eq!(response.header("location"), Some("/"));
    }
}
