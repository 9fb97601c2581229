//! A minimal HTTP client for the health gate, the smoke check and the switch
//! benchmark: one GET, one new connection, no crate.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// What a GET answered.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` on 127.0.0.1:port over a new connection, everything within
/// `timeout`. HTTP/1.0 with `Connection: close`: the server closes after the
/// answer and does not chunk it, so reading to the end is the whole body.
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<Response> {
    let started = Instant::now();
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).with_context(|| format!("connecting to {address}"))?;
    let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    stream.set_read_timeout(Some(remaining)).context("setting a read timeout")?;
    stream.set_write_timeout(Some(remaining)).context("setting a write timeout")?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
        .with_context(|| format!("sending GET {path}"))?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).with_context(|| format!("reading the answer to GET {path}"))?;
    let response = String::from_utf8_lossy(&response);
    let Some(status) = response.split_whitespace().nth(1).and_then(|code| code.parse().ok()) else {
        bail!("GET {path}: not an HTTP response: {:?}", response.chars().take(200).collect::<String>());
    };
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Ok(Response { status, body })
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
        let unavailable = Response { status: 503, body: "{}".to_owned() };
        assert!(version_sha(&unavailable).unwrap_err().to_string().contains("503"));
    }
}
