//! Just enough HTTP/1.1 for the sandbox, on loopback only: readiness checks,
//! the state bucket, fetching manifests from the registry and receiving its
//! notifications. A client crate would be the first heavy dependency of
//! xtask for a few requests to processes on this machine.

use std::{
    io::{BufRead, BufReader, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// A request to send; `path` includes the query.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Request<'a> {
        Request { method: "GET", path, headers: Vec::new(), body: &[] }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value (names compare without case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// A request received by `read_request`.
#[derive(Debug)]
pub struct IncomingRequest {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
}

/// Sends one request to `address` (`host:port`, loopback only) and reads
/// the whole response.
pub fn send(address: &str, request: &Request<'_>) -> Result<Response> {
    let socket_address = loopback_address(address)?;
    let mut stream = TcpStream::connect_timeout(&socket_address, Duration::from_secs(5))
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).context("setting a read timeout")?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: {}\r\n",
        request.method,
        request.path,
        request.body.len()
    );
    for (name, value) in &request.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let describe = || format!("{} http://{address}{}", request.method, request.path);
    stream.write_all(head.as_bytes()).with_context(|| format!("sending {}", describe()))?;
    stream.write_all(request.body).with_context(|| format!("sending {}", describe()))?;
    let mut reader = BufReader::new(stream);
    let status_line = read_line(&mut reader).with_context(|| format!("reading the answer to {}", describe()))?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("{} answered {status_line:?}, not HTTP", describe()))?;
    let headers = read_headers(&mut reader).with_context(|| format!("reading the answer to {}", describe()))?;
    let body = if request.method == "HEAD" {
        Vec::new()
    } else {
        read_body(&mut reader, &headers, true).with_context(|| format!("reading the answer to {}", describe()))?
    };
    Ok(Response { status, headers, body })
}

/// Reads one request from a client connection; None when the client
/// closed it without sending one (a port probe).
pub fn read_request(stream: &TcpStream) -> Result<Option<IncomingRequest>> {
    stream.set_read_timeout(Some(Duration::from_secs(30))).context("setting a read timeout")?;
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).context("reading the request line")? == 0 {
        return Ok(None);
    }
    let request_line = request_line.trim_end_matches(['\r', '\n']);
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(path)) = (parts.next(), parts.next()) else {
        bail!("malformed request line {request_line:?}");
    };
    let headers = read_headers(&mut reader).context("reading the request headers")?;
    let body = read_body(&mut reader, &headers, false).context("reading the request body")?;
    Ok(Some(IncomingRequest { method: method.to_owned(), path: path.to_owned(), body }))
}

/// Answers a request and closes the connection.
pub fn write_response(mut stream: &TcpStream, status: u16, body: &str) -> Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).context("writing the response")?;
    stream.flush().context("writing the response")
}

/// Parses `host:port` and refuses anything that is not this machine: the
/// sandbox never talks to the network, and a typo must not make it.
pub fn loopback_address(address: &str) -> Result<SocketAddr> {
    let resolved: Vec<SocketAddr> =
        address.to_socket_addrs().with_context(|| format!("{address:?} is not a host:port address"))?.collect();
    match resolved.into_iter().find(|candidate| candidate.ip().is_loopback()) {
        Some(socket_address) => Ok(socket_address),
        None => bail!("{address} is not a loopback address; the sandbox only runs on 127.0.0.1"),
    }
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

fn read_line(reader: &mut impl BufRead) -> Result<String> {
    let mut line = String::new();
    let read = reader.read_line(&mut line)?;
    if read == 0 {
        bail!("connection closed");
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_headers(reader: &mut impl BufRead) -> Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line.split_once(':').with_context(|| format!("malformed header {line:?}"))?;
        headers.push((name.trim().to_owned(), value.trim().to_owned()));
    }
}

/// A body by Content-Length or chunked encoding; a response without either
/// runs to the end of the connection (we always ask for `Connection: close`).
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)], until_close: bool) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if header(headers, "transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(reader)?;
            let size_text = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16).with_context(|| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                // Trailers, then the blank line.
                while !read_line(reader)?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..])?;
            read_line(reader)?;
        }
    }
    match header(headers, "content-length") {
        Some(length) => {
            let length: usize = length.parse().with_context(|| format!("bad Content-Length {length:?}"))?;
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        None if until_close => {
            reader.read_to_end(&mut body)?;
        }
        None => {}
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback_address("127.0.0.1:5055").is_ok());
        assert!(loopback_address("localhost:5055").is_ok());
        assert!(loopback_address("10.1.2.3:5055").is_err());
        assert!(loopback_address("127.0.0.1").is_err());
    }

    #[test]
    fn request_and_response_round_trip_with_chunked_bodies() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let request = read_request(&stream).unwrap().unwrap();
            let mut stream = &stream;
            stream
                .write_all(
                    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                )
                .unwrap();
            request
        });
        let response = send(
            &address,
            &Request { method: "POST", path: "/events?x=1", headers: vec![("X-Test", "yes".to_owned())], body: b"{}" },
        )
        .unwrap();
        let request = server.join().unwrap();
        assert_eq!(
            (request.method.as_str(), request.path.as_str(), request.body.as_slice()),
            ("POST", "/events?x=1", &b"{}"[..])
        );
        assert_eq!(response.status, 201);
        assert_eq!(response.body, b"abcde");
    }
}
