//! A tiny blocking HTTP/1.1 GET client for `weir top` and `weir tap`.
//!
//! Both commands talk to the plain-HTTP endpoint of `weir run
//! --metrics-address` on a trusted network; pulling in an HTTP client crate
//! (and an async runtime under it) for two GET requests would cost more
//! build time than this file. It connects with a timeout, sends one
//! `GET` with `Connection: close`, parses the status line and headers, and
//! reads bodies framed by `Content-Length`, `Transfer-Encoding: chunked`
//! or the end of the connection. [`get_streaming`] hands out the body as
//! it arrives (the tap's records), decoding chunked framing incrementally
//! with [`ChunkedDecoder`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context};

/// Largest response head (status line and headers) accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) or trailer section accepted.
const MAX_CHUNK_LINE_BYTES: usize = 4096;

/// Where the server listens: `host:port`, from `host:port` or
/// `http://host:port[/]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
}

impl Endpoint {
    /// Parses an address given on the command line.
    pub fn parse(address: &str) -> anyhow::Result<Endpoint> {
        let a = address.trim();
        let has_scheme = |scheme: &str| {
            a.get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        };
        if has_scheme("https://") {
            bail!("address {address:?}: https is not supported (the metrics endpoint speaks plain HTTP)");
        }
        let a = if has_scheme("http://") { &a[7..] } else { a };
        let a = a.strip_suffix('/').unwrap_or(a);
        let port = match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => port,
            _ => bail!("address {address:?} needs a host and a port, e.g. 127.0.0.1:9464"),
        };
        if a.contains('/') || a.contains('?') || a.contains('#') || a.contains('@') {
            bail!("address {address:?} must be host:port or http://host:port, without a path");
        }
        if port.parse::<u16>().is_err() {
            bail!("address {address:?}: port {port:?} is not a number from 0 to 65535");
        }
        Ok(Endpoint {
            authority: a.to_string(),
        })
    }

    /// `host:port`, as connected to and sent in the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The URL of `path` (which starts with `/`) on this endpoint, for
    /// messages.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.authority, path)
    }
}

/// Status line and headers of a response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub head: Head,
    pub body: Vec<u8>,
}

/// GETs `path` and reads the whole body (at most `max_body` bytes).
/// `timeout` bounds the connect and each read and write.
pub fn get(
    endpoint: &Endpoint,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> anyhow::Result<Response> {
    let (head, mut body) = get_streaming(endpoint, path, timeout, Some(timeout))?;
    let bytes = body
        .read_all(max_body)
        .with_context(|| format!("GET {}: reading the body", endpoint.url(path)))?;
    Ok(Response { head, body: bytes })
}

/// GETs `path` and returns the head once it has arrived, with the body to
/// read as it comes. `timeout` bounds the connect and the wait for the
/// head; `body_timeout` each read of the body (`None`: wait for ever, as a
/// tap of a quiet step does).
pub fn get_streaming(
    endpoint: &Endpoint,
    path: &str,
    timeout: Duration,
    body_timeout: Option<Duration>,
) -> anyhow::Result<(Head, BodyStream)> {
    let mut stream = connect(endpoint, timeout)?;
    let url = endpoint.url(path);
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .with_context(|| format!("GET {url}: setting socket timeouts"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: weir\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        endpoint.authority()
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("GET {url}: sending the request"))?;
    let (head, rest) = read_head(&mut stream).with_context(|| format!("GET {url}"))?;
    stream
        .set_read_timeout(body_timeout)
        .with_context(|| format!("GET {url}: setting socket timeouts"))?;
    let framing = framing(&head).with_context(|| format!("GET {url}"))?;
    Ok((head, BodyStream::new(stream, rest, framing)))
}

fn connect(endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<TcpStream> {
    let authority = endpoint.authority();
    let addrs = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    match last {
        Some(e) => Err(e).with_context(|| format!("cannot connect to {authority}")),
        None => bail!("cannot connect to {authority}: it resolves to no address"),
    }
}

/// Reads up to the end of the head; returns it with the body bytes read
/// past it. Informational (1xx) responses are skipped.
fn read_head(stream: &mut impl Read) -> anyhow::Result<(Head, Vec<u8>)> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut scan_from = 0;
    loop {
        if let Some(at) = find(&buf[scan_from..], b"\r\n\r\n") {
            let end = scan_from + at + 4;
            let head = parse_head(&buf[..end - 4])?;
            let rest = buf.split_off(end);
            if (100..200).contains(&head.status) && head.status != 101 {
                buf = rest;
                scan_from = 0;
                continue;
            }
            return Ok((head, rest));
        }
        scan_from = buf.len().saturating_sub(3);
        if buf.len() > MAX_HEAD_BYTES {
            bail!("the response head is over {MAX_HEAD_BYTES} bytes");
        }
        let mut chunk = [0u8; 4096];
        let n = read_retrying(stream, &mut chunk).context("reading the response head")?;
        if n == 0 {
            if buf.is_empty() {
                bail!("the server closed the connection without answering");
            }
            bail!("the server closed the connection inside the response head");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_head(bytes: &[u8]) -> anyhow::Result<Head> {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let bad = || anyhow::anyhow!("not an HTTP response: status line {status_line:?}");
    let (version, rest) = status_line.split_once(' ').ok_or_else(bad)?;
    if !version.starts_with("HTTP/1.") {
        return Err(bad());
    }
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Head {
        status,
        reason: reason.trim().to_string(),
        headers,
    })
}

/// How the body of a response ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    Close,
}

fn framing(head: &Head) -> anyhow::Result<Framing> {
    if head.status == 204 || head.status == 304 {
        return Ok(Framing::Length(0));
    }
    let codings: Vec<String> = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(last) = codings.last() {
        // RFC 9112 6.3: chunked last frames the body; any other coding
        // last leaves it to the end of the connection.
        return Ok(if last == "chunked" {
            Framing::Chunked(ChunkedDecoder::new())
        } else {
            Framing::Close
        });
    }
    let mut length: Option<u64> = None;
    for (_, v) in head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in v.split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("invalid Content-Length {v:?}"))?;
            if length.is_some_and(|l| l != n) {
                bail!("conflicting Content-Length headers");
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// The body of a response, read as it arrives.
#[derive(Debug)]
pub struct BodyStream {
    stream: TcpStream,
    /// Bytes read with the head that belong to the body.
    pending: Vec<u8>,
    framing: Framing,
    done: bool,
}

impl BodyStream {
    fn new(stream: TcpStream, pending: Vec<u8>, framing: Framing) -> BodyStream {
        let done = matches!(framing, Framing::Length(0));
        BodyStream {
            stream,
            pending,
            framing,
            done,
        }
    }

    /// The next body bytes, as soon as some arrive; `None` at the end of
    /// the body. A connection closed before the framing says the body ends
    /// is an `UnexpectedEof` error.
    pub fn next_bytes(&mut self) -> io::Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            if self.done {
                return Ok(None);
            }
            let input: Vec<u8> = if self.pending.is_empty() {
                let n = read_retrying(&mut self.stream, &mut buf)?;
                if n == 0 {
                    self.done = true;
                    return match &self.framing {
                        Framing::Close => Ok(None),
                        Framing::Length(left) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the server closed the connection {left} bytes before the end of the body"),
                        )),
                        Framing::Chunked(_) => Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection inside the chunked body",
                        )),
                    };
                }
                buf[..n].to_vec()
            } else {
                std::mem::take(&mut self.pending)
            };
            match &mut self.framing {
                Framing::Close => return Ok(Some(input)),
                Framing::Length(left) => {
                    let take = input
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= take as u64;
                    if *left == 0 {
                        self.done = true;
                    }
                    if take > 0 {
                        return Ok(Some(input[..take].to_vec()));
                    }
                }
                Framing::Chunked(decoder) => {
                    let mut out = Vec::new();
                    decoder.decode(&input, &mut out)?;
                    if decoder.is_done() {
                        self.done = true;
                    }
                    if !out.is_empty() {
                        return Ok(Some(out));
                    }
                }
            }
        }
    }

    /// Reads the rest of the body; more than `max` bytes is an error.
    pub fn read_all(&mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(bytes) = self.next_bytes()? {
            if body.len() + bytes.len() > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the body is over {max} bytes"),
                ));
            }
            body.extend_from_slice(&bytes);
        }
        Ok(body)
    }
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "timed out waiting for the server",
                ))
            }
            other => return other,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Where a [`ChunkedDecoder`] is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line (into `line`).
    Size,
    /// Inside chunk data, with this many bytes left.
    Data(u64),
    /// After chunk data, expecting CRLF (`true` once the CR was seen).
    DataEnd(bool),
    /// After the last chunk, reading trailer lines up to an empty one.
    Trailer,
    Done,
}

/// Incremental decoder of `Transfer-Encoding: chunked`: feed it the bytes
/// as they arrive, split anywhere (inside chunk data, a chunk-size line or
/// its CRLF), and it hands out the data.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
            line: Vec::new(),
            trailer_bytes: 0,
        }
    }

    /// Whether the last chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `input`, appending the data it carries to `out`. Returns the
    /// number of input bytes used: all of them, unless the body ended
    /// inside `input`.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> io::Result<usize> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Data(left) => {
                    let take = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(false)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(seen_cr) => {
                    at += 1;
                    self.state = match rest[0] {
                        b'\r' if !seen_cr => ChunkState::DataEnd(true),
                        b'\n' => ChunkState::Size,
                        _ => return Err(invalid("chunk data is not followed by CRLF")),
                    };
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let (taken, complete) = match memchr::memchr(b'\n', rest) {
                        Some(i) => (i + 1, true),
                        None => (rest.len(), false),
                    };
                    self.line.extend_from_slice(&rest[..taken]);
                    at += taken;
                    if self.line.len() > MAX_CHUNK_LINE_BYTES {
                        return Err(invalid("chunk-size or trailer line too long"));
                    }
                    if complete {
                        self.end_line()?;
                    }
                }
            }
        }
        Ok(at)
    }

    /// Handles the complete line (ending in LF) in `self.line`.
    fn end_line(&mut self) -> io::Result<()> {
        let line = std::mem::take(&mut self.line);
        let text = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(&line);
        if self.state == ChunkState::Trailer {
            self.trailer_bytes += line.len();
            if text.is_empty() {
                self.state = ChunkState::Done;
            } else if self.trailer_bytes > MAX_CHUNK_LINE_BYTES {
                return Err(invalid("chunked trailer too long"));
            }
            return Ok(());
        }
        let size_text = text.split(|&b| b == b';').next().unwrap_or_default();
        let size_text = std::str::from_utf8(size_text)
            .map_err(|_| invalid("chunk size is not hexadecimal"))?
            .trim_matches([' ', '\t']);
        if size_text.is_empty()
            || size_text.len() > 16
            || !size_text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Err(invalid(&format!(
                "chunk size {size_text:?} is not hexadecimal"
            )));
        }
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| invalid(&format!("chunk size {size_text:?} is not hexadecimal")))?;
        self.state = if size == 0 {
            ChunkState::Trailer
        } else {
            ChunkState::Data(size)
        };
        Ok(())
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn header<'a>(head: &'a Head, name: &str) -> Option<&'a str> {
        head.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Decodes `input` fed in the pieces `splits` cut it into.
    fn decode_split(input: &[u8], splits: &[usize]) -> io::Result<(Vec<u8>, bool)> {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut from = 0;
        for &to in splits.iter().chain(std::iter::once(&input.len())) {
            let used = d.decode(&input[from..to], &mut out)?;
            assert!(used == to - from || d.is_done());
            from = to;
        }
        Ok((out, d.is_done()))
    }

    const CHUNKED: &[u8] =
        b"5\r\nhello\r\n7;name=value\r\n, world\r\n1A\r\n abcdefghijklmnopqrstuvwxy\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const DECODED: &[u8] = b"hello, world abcdefghijklmnopqrstuvwxy";

    #[test]
    fn chunked_whole() {
        let (out, done) = decode_split(CHUNKED, &[]).unwrap();
        assert_eq!(out, DECODED);
        assert!(done);
    }

    #[test]
    fn chunked_split_at_every_point_and_byte_by_byte() {
        for cut in 0..=CHUNKED.len() {
            let (out, done) = decode_split(CHUNKED, &[cut]).unwrap();
            assert_eq!(out, DECODED, "cut at {cut}");
            assert!(done);
        }
        for a in 0..=CHUNKED.len() {
            for b in a..=CHUNKED.len() {
                let (out, done) = decode_split(CHUNKED, &[a, b]).unwrap();
                assert_eq!(out, DECODED, "cuts at {a}, {b}");
                assert!(done);
            }
        }
        let every: Vec<usize> = (1..CHUNKED.len()).collect();
        let (out, done) = decode_split(CHUNKED, &every).unwrap();
        assert_eq!(out, DECODED);
        assert!(done);
    }

    #[test]
    fn chunked_incomplete_is_not_done_and_stops_at_the_end() {
        let (out, done) = decode_split(&CHUNKED[..30], &[]).unwrap();
        assert_eq!(out, b"hello, worl");
        assert!(!done);
        let mut with_more = CHUNKED.to_vec();
        with_more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        assert_eq!(d.decode(&with_more, &mut out).unwrap(), CHUNKED.len());
        assert_eq!(out, DECODED);
    }

    #[test]
    fn chunked_bare_lf_and_upper_case_hex_accepted() {
        let (out, done) = decode_split(b"A\nabcdefghij\n0\n\n", &[]).unwrap();
        assert_eq!(out, b"abcdefghij");
        assert!(done);
    }

    #[test]
    fn chunked_errors() {
        assert!(decode_split(b"zz\r\nhello\r\n", &[]).is_err());
        assert!(decode_split(b"\r\nhello\r\n", &[]).is_err());
        assert!(decode_split(b"5\r\nhelloX\r\n0\r\n\r\n", &[]).is_err());
        assert!(decode_split(b"11111111111111111\r\n", &[]).is_err());
        let long = vec![b'1'; MAX_CHUNK_LINE_BYTES + 10];
        assert!(decode_split(&long, &[]).is_err());
    }

    #[test]
    fn endpoint_parsing() {
        for ok in [
            "127.0.0.1:9464",
            "http://127.0.0.1:9464",
            "HTTP://127.0.0.1:9464/",
            " 127.0.0.1:9464 ",
        ] {
            assert_eq!(Endpoint::parse(ok).unwrap().authority(), "127.0.0.1:9464");
        }
        assert_eq!(
            Endpoint::parse("http://[::1]:80").unwrap().authority(),
            "[::1]:80"
        );
        assert_eq!(
            Endpoint::parse("localhost:9464").unwrap().url("/metrics"),
            "http://localhost:9464/metrics"
        );
        for bad in [
            "",
            "localhost",
            "http://localhost",
            ":9464",
            "https://a:1",
            "a:1/metrics",
            "a:port",
            "a:70000",
            "::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn head_parsing_and_framing() {
        let h =
            parse_head(b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\nContent-Length: 12")
                .unwrap();
        assert_eq!(h.status, 404);
        assert_eq!(h.reason, "Not Found");
        assert_eq!(header(&h, "Content-Type"), Some("text/plain"));
        assert!(matches!(framing(&h).unwrap(), Framing::Length(12)));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked").unwrap();
        assert!(matches!(framing(&h).unwrap(), Framing::Chunked(_)));
        let h = parse_head(b"HTTP/1.0 200").unwrap();
        assert!(matches!(framing(&h).unwrap(), Framing::Close));
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4").unwrap();
        assert!(framing(&h).is_err());
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_head(b"HTTP/1.1 2000 OK").is_err());
    }

    /// Serves each of `responses` (as pieces written with a pause between
    /// them) to one connection, in order; returns the address and the
    /// requests received.
    pub(crate) fn serve(responses: Vec<Vec<Vec<u8>>>) -> (String, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for pieces in responses {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while find(&request, b"\r\n\r\n").is_none() {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
                for piece in pieces {
                    if conn.write_all(&piece).is_err() {
                        break;
                    }
                    let _ = conn.flush();
                    thread::sleep(Duration::from_millis(15));
                }
            }
            requests
        });
        (addr, handle)
    }

    fn pieces(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn get_over_tcp_content_length_chunked_close_and_errors() {
        let (addr, server) = serve(vec![
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world"]),
            pieces(&[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6\r\n world\r",
                b"\n0\r\n\r\n",
            ]),
            pieces(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"]),
        ]);
        let ep = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let t = Duration::from_secs(5);

        let r = get(&ep, "/metrics", t, 1 << 20).unwrap();
        assert_eq!(r.head.status, 200);
        assert_eq!(header(&r.head, "content-type"), Some("text/plain"));
        assert_eq!(r.body, b"hello world");

        let (head, mut body) = get_streaming(&ep, "/tap/x?rate=5", t, None).unwrap();
        assert_eq!(head.status, 200);
        let mut parts = Vec::new();
        while let Some(b) = body.next_bytes().unwrap() {
            parts.push(b);
        }
        assert_eq!(parts.concat(), b"hello world");
        assert!(parts.len() >= 2, "streamed as it arrived: {parts:?}");

        let r = get(&ep, "/", t, 1 << 20).unwrap();
        assert_eq!(r.body, b"until the end");

        let e = get(&ep, "/", t, 1 << 20).unwrap_err();
        assert!(
            format!("{e:#}").contains("15 bytes before the end"),
            "{e:#}"
        );

        let e = get(&ep, "/", t, 3).unwrap_err();
        assert!(format!("{e:#}").contains("over 3 bytes"), "{e:#}");

        let requests = server.join().unwrap();
        assert_eq!(
            requests[0],
            format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: weir\r\nAccept: */*\r\nConnection: close\r\n\r\n")
        );
        assert!(requests[1].starts_with("GET /tap/x?rate=5 HTTP/1.1\r\n"));
    }

    #[test]
    fn connection_refused_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("cannot connect to {addr}")),
            "{text}"
        );
    }

    #[test]
    fn server_closing_without_answer_is_an_error() {
        let (addr, server) = serve(vec![vec![]]);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        assert!(format!("{e:#}").contains("without answering"), "{e:#}");
        server.join().unwrap();
    }
}
