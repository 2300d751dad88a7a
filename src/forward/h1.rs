//! HTTP/1.1 on the wire to the app: one request's head written into a
//! buffer, one answer read and framed (RFC 9112 §6.3). Only what hookgate
//! needs from an answer is kept: the status, `Content-Type`,
//! `Retry-After` and the body; the framing headers decide how the body is
//! read and whether the connection can carry another request.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{StatusCode, Uri};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::PASSED_ON;

/// The answer's head may be at most this large (hyper's default too).
const MAX_HEAD: usize = 64 * 1024;
/// At most this many header fields in the answer's head.
const MAX_HEADERS: usize = 100;
/// A chunk-size line (with its extensions) or the trailers may be at most this large.
const MAX_CHUNK_LINE: usize = 4096;
/// Read at least this much at a time.
const READ_SIZE: usize = 8 * 1024;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The app closed the connection before a complete answer.
    #[error("the app closed the connection before a complete answer")]
    Closed,
    /// Not an HTTP/1.x answer hookgate can read.
    #[error("the app's answer is not valid HTTP/1.1: {0}")]
    Malformed(&'static str),
    /// The body is larger than the limit.
    #[error("the app's answer is larger than the limit")]
    TooLarge,
}

/// A complete answer.
#[derive(Debug)]
pub struct Answer {
    /// The final status (never 1xx).
    pub status: StatusCode,
    /// `Content-Type` and `Retry-After`, the only ones hookgate passes on
    /// or looks at.
    pub headers: HeaderMap,
    /// The whole body, de-chunked.
    pub body: Bytes,
    /// The connection may carry another request.
    pub keep_alive: bool,
}

/// Appends `POST <target> HTTP/1.1`, the headers and the blank line.
/// `headers` are normalized: `Host` and `Content-Length` set, hop-by-hop
/// ones removed (`headers::normalize_request`).
pub fn encode_head(out: &mut Vec<u8>, target: &Uri, headers: &HeaderMap) {
    out.extend_from_slice(b"POST ");
    match target.path_and_query() {
        Some(pq) => out.extend_from_slice(pq.as_str().as_bytes()),
        None => out.push(b'/'),
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    encode_fields(out, headers);
    out.extend_from_slice(b"\r\n");
}

/// Appends each header as a `name: value` line ending in CRLF (a header
/// value cannot hold CR or LF).
pub fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
}

/// Reads more into `buf`; the peer closing is [`Error::Closed`].
async fn fill<R: AsyncRead + Unpin>(io: &mut R, buf: &mut BytesMut) -> Result<(), Error> {
    buf.reserve(READ_SIZE);
    if io.read_buf(buf).await? == 0 {
        return Err(Error::Closed);
    }
    Ok(())
}

/// How the body of an answer is delimited.
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// What the head said.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Parses a complete head at the start of `buf`; None if more is needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Response::new(&mut fields);
    let len = match parsed.parse(buf) {
        // However much arrived at once, the same limit.
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => {
            return Err(Error::Malformed("head too large"));
        }
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(Error::Malformed("head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::Malformed("too many header fields"));
        }
        Err(_) => return Err(Error::Malformed("unreadable head")),
    };
    let code = parsed.code.ok_or(Error::Malformed("no status"))?;
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("bad status"))?;
    let http11 = parsed.version == Some(1);
    let mut headers = HeaderMap::new();
    let (mut length, mut chunked, mut coded) = (None::<u64>, false, false);
    let (mut close, mut keep) = (false, false);
    for field in parsed.headers.iter() {
        let name = field.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(field.value)?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("conflicting Content-Length"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` delimits the body; any other coding
            // runs until the connection closes (RFC 9112 §6.3).
            coded = true;
            chunked = tokens(field.value)
                .last()
                .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            for t in tokens(field.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if let Some(kept) = PASSED_ON
            .iter()
            .find(|n| name.eq_ignore_ascii_case(n.as_str()))
        {
            append(&mut headers, kept.clone(), field.value);
        }
    }
    buf.advance(len);
    let mut keep_alive = !close && (http11 || keep);
    let framing = if code == 204 || code == 304 || (100..200).contains(&code) {
        Framing::None
    } else if coded {
        // Both framings at once: read as the coding says, then close.
        keep_alive &= length.is_none() && chunked;
        if chunked {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    if matches!(framing, Framing::UntilClose) {
        keep_alive = false;
    }
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive,
    }))
}

/// `buf` holds a blank line (LF LF or LF CR LF, as httparse accepts it)
/// that ends at or after `from`.
fn head_ended(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    buf.get(start..).is_some_and(|tail| {
        tail.windows(2).enumerate().any(|(i, w)| {
            w[0] == b'\n' && (w[1] == b'\n' || (w[1] == b'\r' && tail.get(i + 2) == Some(&b'\n')))
        })
    })
}

/// Digits only (no sign, no list): anything else is not a length.
fn parse_length(value: &[u8]) -> Result<u64, Error> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Error::Malformed("bad Content-Length"));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(Error::Malformed("bad Content-Length"))
}

/// The comma-separated tokens of a header value, trimmed.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Keeps a header the app sent if it is a valid value (else drops it).
fn append(headers: &mut HeaderMap, name: header::HeaderName, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.append(name, value);
    }
}

/// Reads one complete answer. Informational (1xx) answers before it are
/// read and dropped; `101 Switching Protocols` is an error (hookgate never
/// asks for an upgrade). `buf` keeps what was read past the answer (a
/// connection with anything left is not reused).
pub async fn read_answer<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max_body: usize,
) -> Result<Answer, Error> {
    // How much of `buf` is known to hold no end of head: the head is parsed
    // once it has ended, not again on every read (an app sending its head
    // a few bytes at a time costs linear time, not quadratic).
    let mut scanned = 0;
    let head = loop {
        // Empty lines before a head are dropped (RFC 9112 §2.2), so that
        // the blank line looked for is the one that ends the head.
        while let Some(n) = [&b"\r\n"[..], b"\n"]
            .iter()
            .find(|e| buf.starts_with(e))
            .map(|e| e.len())
        {
            buf.advance(n);
            scanned = 0;
        }
        let parsed = if head_ended(buf, scanned) {
            parse_head(buf)?
        } else if buf.len() > MAX_HEAD {
            return Err(Error::Malformed("head too large"));
        } else {
            None
        };
        match parsed {
            None => {
                scanned = buf.len();
                fill(io, buf).await?;
            }
            Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                return Err(Error::Malformed("unrequested protocol switch"));
            }
            Some(head) if head.status.is_informational() => scanned = 0,
            Some(head) => break head,
        }
    };
    let mut keep_alive = head.keep_alive;
    let body = match head.framing {
        Framing::None => Bytes::new(),
        Framing::Length(n) => {
            let n = usize::try_from(n)
                .ok()
                .filter(|&n| n <= max_body)
                .ok_or(Error::TooLarge)?;
            while buf.len() < n {
                fill(io, buf).await?;
            }
            let body = Bytes::copy_from_slice(&buf[..n]);
            buf.advance(n);
            body
        }
        Framing::Chunked => read_chunked(io, buf, max_body).await?,
        Framing::UntilClose => {
            while buf.len() <= max_body {
                match fill(io, buf).await {
                    Ok(()) => {}
                    Err(Error::Closed) => break,
                    Err(e) => return Err(e),
                }
            }
            if buf.len() > max_body {
                return Err(Error::TooLarge);
            }
            buf.split().freeze()
        }
    };
    // Anything after the answer was not asked for: do not reuse.
    keep_alive &= buf.is_empty();
    Ok(Answer {
        status: head.status,
        headers: head.headers,
        body,
        keep_alive,
    })
}

/// A chunked body (RFC 9112 §7.1): chunk extensions and trailers are read
/// and dropped.
async fn read_chunked<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max_body: usize,
) -> Result<Bytes, Error> {
    let mut body = BytesMut::new();
    loop {
        let size = match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                size
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                return Err(Error::Malformed("chunk-size line too long"));
            }
            Ok(httparse::Status::Partial) => {
                fill(io, buf).await?;
                continue;
            }
            Err(_) => return Err(Error::Malformed("bad chunk size")),
        };
        if size == 0 {
            break;
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|&s| s <= max_body.saturating_sub(body.len()))
            .ok_or(Error::TooLarge)?;
        while buf.len() < size + 2 {
            fill(io, buf).await?;
        }
        if &buf[size..size + 2] != b"\r\n" {
            return Err(Error::Malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.advance(size + 2);
    }
    // Trailer fields, up to the blank line; only their size is checked.
    let (mut read, mut line_start) = (0, true);
    loop {
        match buf.windows(2).position(|w| w == b"\r\n") {
            Some(0) if line_start => {
                buf.advance(2);
                return Ok(body.freeze());
            }
            Some(end) => {
                read += end + 2;
                buf.advance(end + 2);
                line_start = true;
            }
            None => {
                // Drop the part of a line read so far, but a CR that may
                // start its CRLF.
                let done = buf.len() - usize::from(buf.last() == Some(&b'\r'));
                line_start &= done == 0;
                read += done;
                buf.advance(done);
                fill(io, buf).await?;
            }
        }
        if read > MAX_HEAD {
            return Err(Error::Malformed("trailers too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one answer from `wire` (in pieces of `step` bytes).
    fn read(wire: &[u8], step: usize, max: usize) -> (Result<Answer, Error>, usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut tx, mut rx) = tokio::io::duplex(64 * 1024);
            let wire = wire.to_vec();
            let writer = tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                for piece in wire.chunks(step) {
                    tx.write_all(piece).await.unwrap();
                    tokio::task::yield_now().await;
                }
            });
            let mut buf = BytesMut::new();
            let answer = read_answer(&mut rx, &mut buf, max).await;
            writer.abort();
            (answer, buf.len())
        })
    }

    #[test]
    fn content_length_keep_alive() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Other: 1\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        for step in [1, 7, wire.len()] {
            let (a, left) = read(wire, step, 1024);
            let a = a.unwrap();
            assert_eq!(a.status, StatusCode::OK);
            assert_eq!(&a.body[..], b"{\"ok\":true}");
            assert_eq!(a.headers.len(), 1);
            assert_eq!(a.headers[header::CONTENT_TYPE], "application/json");
            assert!(a.keep_alive);
            assert_eq!(left, 0);
        }
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let wire = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: gzip, chunked\r\nRetry-After: 7\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 5, wire.len()] {
            let a = read(wire, step, 1024).0.unwrap();
            assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(&a.body[..], b"abcdefg");
            assert_eq!(a.headers[header::RETRY_AFTER], "7");
            assert!(a.keep_alive);
        }
    }

    #[test]
    fn until_close_and_http10() {
        let (a, _) = read(b"HTTP/1.0 200 OK\r\n\r\nhello", 3, 1024);
        let a = a.unwrap();
        assert_eq!(&a.body[..], b"hello");
        assert!(!a.keep_alive);
        let a = read(
            b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
            4,
            1024,
        )
        .0
        .unwrap();
        assert!(a.keep_alive && a.body.is_empty());
        let a = read(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            4,
            1024,
        )
        .0
        .unwrap();
        assert!(!a.keep_alive);
    }

    #[test]
    fn informational_answers_are_skipped() {
        let a = read(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
            9,
            1024,
        )
        .0
        .unwrap();
        assert_eq!(a.status, StatusCode::ACCEPTED);
        assert_eq!(&a.body[..], b"ok");
        assert!(matches!(
            read(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", 64, 1024).0,
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn too_large_bodies() {
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}";
        assert!(matches!(read(big, 64, 10).0, Err(Error::TooLarge)));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n";
        assert!(matches!(read(chunked, 64, 10).0, Err(Error::TooLarge)));
        assert!(read(chunked, 64, 12).0.is_ok());
        assert!(matches!(
            read(b"HTTP/1.0 200 OK\r\n\r\n0123456789ab", 64, 10).0,
            Err(Error::TooLarge)
        ));
    }

    #[test]
    fn bad_answers() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n",
            b"SMTP 220 hello\r\n\r\n",
        ] {
            let (a, _) = read(wire, 64, 1024);
            assert!(matches!(a, Err(Error::Malformed(_))), "{a:?}");
        }
        // Cut off in the head and in the body (the writer ends the stream).
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Len"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
        ] {
            let (a, _) = read(wire, 64, 1024);
            assert!(matches!(a, Err(Error::Closed)), "{a:?}");
        }
    }

    #[test]
    fn anything_after_the_answer_stops_reuse() {
        let (a, left) = read(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
            1024,
            1024,
        );
        assert!(!a.unwrap().keep_alive);
        assert!(left > 0);
    }

    #[test]
    fn head_is_origin_form_with_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("app:8080"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(2));
        let mut out = Vec::new();
        encode_head(&mut out, &"/hooks?a=b".parse().unwrap(), &headers);
        assert_eq!(
            out,
            b"POST /hooks?a=b HTTP/1.1\r\nhost: app:8080\r\ncontent-length: 2\r\n\r\n"
        );
    }
}
