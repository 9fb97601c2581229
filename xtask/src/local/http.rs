//! A minimal HTTP client for the health gate, the smoke check, the switch
//! benchmark and the functional tests: one request, one new connection, no
//! crate. Plain `http://` only (what the local proxy, a container and the
//! load balancer's port 80 speak).

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

/// Where requests go: `http://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub host: String,
    pub port: u16,
    /// A path prefix without the trailing slash (empty for the root).
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl> {
        let Some(rest) = url.trim().strip_prefix("http://") else {
            bail!("{url:?} is not an http:// URL (this client speaks plain HTTP only)");
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
            None => 80,
        };
        if host.is_empty() {
            bail!("{url:?} names no host");
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() { String::new() } else { format!("/{prefix}") };
        Ok(BaseUrl { host: host.to_owned(), port, prefix })
    }

    /// 127.0.0.1 on a port.
    pub fn local(port: u16) -> BaseUrl {
        BaseUrl { host: "127.0.0.1".to_owned(), port, prefix: String::new() }
    }

    /// `host:port` as the Host header says it (IPv6 in brackets).
    fn authority(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        if self.port == 80 { host } else { format!("{host}:{}", self.port) }
    }

    /// The full URL of a path.
    pub fn join(&self, path: &str) -> String {
        format!("http://{}{}{path}", self.authority(), self.prefix)
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.prefix)
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
    let Some(mut stream) = stream else {
        return Err(last_error.unwrap_or_else(|| anyhow::anyhow!("{} has no address", base.host)));
    };
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(remaining)).context("setting a read timeout")?;
    stream.set_write_timeout(Some(remaining)).context("setting a write timeout")?;
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
    stream.read_to_end(&mut response).with_context(|| format!("reading the answer to {shown}"))?;
    parse_response(&String::from_utf8_lossy(&response)).with_context(|| shown.clone())
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

    #[test]
    fn reads_status_and_body_from_a_server_that_closes() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).unwrap();
            assert!(String::from_utf8_lossy(&request[..read]).starts_with("GET /version HTTP/1.0\r\n"));
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"git_sha\":\"abc\"}")
                .unwrap();
        });
        let response = get(port, "/version", Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(version_sha(&response).unwrap(), "abc");
        let unavailable = Response { status: 503, headers: Vec::new(), body: "{}".to_owned() };
        assert!(version_sha(&unavailable).unwrap_err().to_string().contains("503"));
    }

    #[test]
    fn base_urls_parse_host_port_and_prefix() {
        let base = BaseUrl::parse("http://example.com").unwrap();
        assert_eq!(base, BaseUrl { host: "example.com".into(), port: 80, prefix: String::new() });
        assert_eq!(base.join("/healthz"), "http://example.com/healthz");
        let base = BaseUrl::parse("http://127.0.0.1:8080/app/").unwrap();
        assert_eq!((base.host.as_str(), base.port, base.prefix.as_str()), ("127.0.0.1", 8080, "/app"));
        assert_eq!(base.to_string(), "http://127.0.0.1:8080/app");
        let base = BaseUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!((base.host.as_str(), base.port), ("::1", 9000));
        assert_eq!(base.join("/"), "http://[::1]:9000/");
        assert!(BaseUrl::parse("https://example.com").is_err());
        assert!(BaseUrl::parse("http://:80").is_err());
        assert!(BaseUrl::parse("http://host:port").is_err());
    }

    #[test]
    fn posts_a_body_and_reads_headers() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let read = stream.read(&mut request).unwrap();
            let request = String::from_utf8_lossy(&request[..read]).into_owned();
            stream.write_all(b"HTTP/1.1 303 See Other\r\nLocation: /\r\n\r\n").unwrap();
            request
        });
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
