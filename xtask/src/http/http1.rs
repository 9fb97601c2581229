//! HTTP/1.1 message framing (RFC 9112) for the local proxy and the
//! keep-alive load client of the switch benchmark: read a request or
//! response head, tell how its body is delimited, and copy that body from
//! one stream to another unchanged.
//!
//! Why not hyper: the proxy only has to know where one message ends and the
//! next begins; it never interprets a body. This file is that part, and the
//! task runner stays free of an async runtime.

use std::io::{self, BufRead, Read, Write};

/// The longest head (start line and headers) accepted; a longer one is an
/// error, as in most servers (hyper's default is 400 KiB, nginx's 8-32 KiB).
pub const MAX_HEAD: usize = 64 * 1024;

/// A request or response head as received: the raw bytes (forwarded as
/// they are) and what was parsed out of them.
#[derive(Debug, Clone)]
pub struct Head {
    /// The start line without its line ending.
    pub start_line: String,
    /// Header names and values as received (names keep their case).
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.trim())
    }

    /// Whether a comma-separated header (Connection, Transfer-Encoding)
    /// holds a token, in any of its lines.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case(name))
            .flat_map(|(_, value)| value.split(','))
            .any(|item| item.trim().eq_ignore_ascii_case(token))
    }

    /// `GET`, `POST`, ... of a request head.
    pub fn method(&self) -> &str {
        self.start_line.split(' ').next().unwrap_or_default()
    }

    /// `HTTP/1.1` or `HTTP/1.0`: the last word of a request line, the first
    /// of a status line.
    pub fn request_version(&self) -> &str {
        self.start_line.rsplit(' ').next().unwrap_or_default()
    }

    /// The status code of a response head.
    pub fn status(&self) -> io::Result<u16> {
        self.start_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("not a status line: {:?}", self.start_line)))
    }

    /// Whether the sender of this request wants the connection closed after
    /// the answer: `Connection: close`, or HTTP/1.0 without keep-alive.
    pub fn request_closes(&self) -> bool {
        self.has_token("connection", "close")
            || (self.request_version() == "HTTP/1.0" && !self.has_token("connection", "keep-alive"))
    }

    /// How the body of a request is delimited (RFC 9112 section 6.3):
    /// chunked, a length, or none.
    pub fn request_body(&self) -> io::Result<Body> {
        if self.header("transfer-encoding").is_some() {
            return if self.has_token("transfer-encoding", "chunked") {
                Ok(Body::Chunked)
            } else {
                Err(invalid("a request with a transfer coding other than chunked".to_owned()))
            };
        }
        self.content_length().map(|length| Body::Length(length.unwrap_or(0)))
    }

    /// How the body of a response to `request_method` is delimited: none for
    /// HEAD, 1xx, 204 and 304; else chunked, a length, or until the server
    /// closes the connection.
    pub fn response_body(&self, request_method: &str) -> io::Result<Body> {
        let status = self.status()?;
        if request_method == "HEAD" || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(Body::Length(0));
        }
        if self.has_token("transfer-encoding", "chunked") {
            return Ok(Body::Chunked);
        }
        Ok(match self.content_length()? {
            Some(length) => Body::Length(length),
            None => Body::UntilClose,
        })
    }

    fn content_length(&self) -> io::Result<Option<u64>> {
        match self.header("content-length") {
            None => Ok(None),
            Some(value) => value.parse().map(Some).map_err(|_| invalid(format!("a Content-Length of {value:?}"))),
        }
    }

    /// The head as bytes to send, with headers left out by name and others
    /// added at the end.
    pub fn to_bytes(&self, leave_out: &[&str], add: &[(&str, String)]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(self.start_line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        for (name, value) in &self.headers {
            if leave_out.iter().any(|left| name.eq_ignore_ascii_case(left)) {
                continue;
            }
            bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        for (name, value) in add {
            bytes.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        bytes
    }
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    Length(u64),
    Chunked,
    /// Only a response: the body ends when the server closes.
    UntilClose,
}

/// Reads one head. `Ok(None)` is a clean end of stream before its first
/// byte (a keep-alive connection the peer closed); blank lines before a
/// request line are skipped as RFC 9112 section 2.2 allows.
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Option<Head>> {
    let mut start_line = String::new();
    loop {
        start_line.clear();
        if read_line(reader, &mut start_line)? == 0 {
            return Ok(None);
        }
        if !start_line.trim_end().is_empty() {
            break;
        }
    }
    let mut headers = Vec::new();
    let mut total = start_line.len();
    loop {
        let mut line = String::new();
        let read = read_line(reader, &mut line)?;
        if read == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a message head"));
        }
        total += read;
        if total > MAX_HEAD {
            return Err(invalid(format!("a message head longer than {MAX_HEAD} bytes")));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        let (name, value) =
            line.split_once(':').ok_or_else(|| invalid(format!("a header line without ':': {line:?}")))?;
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(invalid(format!("a malformed header name: {name:?}")));
        }
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    Ok(Some(Head { start_line: start_line.trim_end_matches(['\r', '\n']).to_owned(), headers }))
}

/// Copies one body from `from` to `to` as it is framed (chunk sizes and
/// trailers included), flushing after every chunk so a streamed response
/// reaches the client as it is produced. Returns the bytes copied.
pub fn copy_body(from: &mut impl BufRead, to: &mut impl Write, body: Body) -> io::Result<u64> {
    match body {
        Body::Length(length) => {
            let copied = io::copy(&mut from.by_ref().take(length), to)?;
            if copied < length {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a body"));
            }
            Ok(copied)
        }
        Body::UntilClose => io::copy(from, to),
        Body::Chunked => {
            let mut copied = 0;
            loop {
                let mut size_line = String::new();
                if read_line(from, &mut size_line)? == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
                }
                to.write_all(size_line.as_bytes())?;
                let hex = size_line.trim_end().split(';').next().unwrap_or_default().trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| invalid(format!("a chunk size of {hex:?}")))?;
                if size == 0 {
                    // Trailer fields, then the empty line that ends them.
                    loop {
                        let mut line = String::new();
                        if read_line(from, &mut line)? == 0 {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "the connection closed in trailers",
                            ));
                        }
                        to.write_all(line.as_bytes())?;
                        if line.trim_end().is_empty() {
                            to.flush()?;
                            return Ok(copied);
                        }
                    }
                }
                // The chunk and its CRLF.
                let wanted = size + 2;
                if io::copy(&mut from.by_ref().take(wanted), to)? < wanted {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
                }
                to.flush()?;
                copied += size;
            }
        }
    }
}

/// One line with its ending, bounded by MAX_HEAD so a peer that never sends
/// a line break cannot make us buffer without end.
fn read_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<usize> {
    let mut bytes = Vec::new();
    let read = reader.by_ref().take(MAX_HEAD as u64 + 1).read_until(b'\n', &mut bytes)?;
    if read > MAX_HEAD {
        return Err(invalid(format!("a line longer than {MAX_HEAD} bytes")));
    }
    line.push_str(std::str::from_utf8(&bytes).map_err(|_| invalid("a head that is not UTF-8".to_owned()))?);
    Ok(read)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn head(text: &str) -> Head {
        read_head(&mut BufReader::new(text.as_bytes())).unwrap().unwrap()
    }

    #[test]
    fn request_framing() {
        let get = head("\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(get.method(), "GET");
        assert_eq!(get.request_body().unwrap(), Body::Length(0));
        assert!(!get.request_closes());
        let post = head("POST /a HTTP/1.1\r\nContent-Length: 5\r\nConnection: keep-alive, close\r\n\r\n");
        assert_eq!(post.request_body().unwrap(), Body::Length(5));
        assert!(post.request_closes());
        let chunked = head("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(chunked.request_body().unwrap(), Body::Chunked);
        assert!(head("GET / HTTP/1.0\r\n\r\n").request_closes());
        assert!(!head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").request_closes());
        assert!(head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").request_body().is_err());
        assert!(head("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n").request_body().is_err());
    }

    #[test]
    fn response_framing() {
        let ok = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n");
        assert_eq!(ok.status().unwrap(), 200);
        assert_eq!(ok.response_body("GET").unwrap(), Body::Length(3));
        assert_eq!(ok.response_body("HEAD").unwrap(), Body::Length(0));
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").response_body("GET").unwrap(), Body::Length(0));
        assert_eq!(head("HTTP/1.1 200 OK\r\n\r\n").response_body("GET").unwrap(), Body::UntilClose);
        assert_eq!(
            head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").response_body("GET").unwrap(),
            Body::Chunked
        );
    }

    #[test]
    fn bodies_are_copied_exactly_and_the_next_message_stays_unread() {
        let stream = "5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let mut reader = BufReader::new(stream.as_bytes());
        let mut copied = Vec::new();
        assert_eq!(copy_body(&mut reader, &mut copied, Body::Chunked).unwrap(), 5);
        assert_eq!(String::from_utf8(copied).unwrap(), "5\r\nhello\r\n0\r\nx-trailer: 1\r\n\r\n");
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "NEXT");

        let mut reader = BufReader::new("abcdef".as_bytes());
        let mut copied = Vec::new();
        copy_body(&mut reader, &mut copied, Body::Length(4)).unwrap();
        assert_eq!(copied, b"abcd");
        assert!(copy_body(&mut BufReader::new("ab".as_bytes()), &mut Vec::new(), Body::Length(4)).is_err());
    }

    #[test]
    fn heads_are_rebuilt_without_the_left_out_headers() {
        let request = head("POST /a HTTP/1.1\r\nExpect: 100-continue\r\nHost: x\r\n\r\n");
        let bytes = request.to_bytes(&["expect"], &[("X-Forwarded-For", "127.0.0.1".to_owned())]);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /a HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 127.0.0.1\r\n\r\n"
        );
        assert!(read_head(&mut BufReader::new("".as_bytes())).unwrap().is_none());
        assert!(read_head(&mut BufReader::new("GET / HTTP/1.1\r\nbad\r\n\r\n".as_bytes())).is_err());
    }
}
