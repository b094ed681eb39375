//! Appending records through a running `weir ingest` server.
//!
//! A stream of the log has one writer. While `weir ingest` owns a stream,
//! another process that wants to add records to it (`weir dlq replay
//! --via`) must send them through the server. This is the smallest client
//! that does: plain HTTP/1.1 over a `TcpStream`, one request per
//! connection, the bearer token if one is given. Records travel as
//! length-delimited frames (`application/x-protobuf`), the one body format
//! of ingest that carries any bytes unchanged (only the framing is
//! checked), so a record is stored exactly as a direct append stores it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::Range;
use std::time::Duration;

use anyhow::{bail, Context};

/// Largest request body this client sends; batches are split to fit
/// (ingest's default limit is 8 MiB).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Where and how to post records of one stream.
#[derive(Debug)]
pub struct IngestClient {
    /// `host:port` as given, for `Host` and messages.
    authority: String,
    path: String,
    token: Option<String>,
}

impl IngestClient {
    /// A client posting to stream `stream` of the server at `url`
    /// (`http://HOST:PORT`, port 80 if none), with `token` as its bearer
    /// token.
    pub fn new(url: &str, stream: &str, token: Option<String>) -> anyhow::Result<IngestClient> {
        if url.starts_with("https://") {
            bail!(
                "--via {url}: only http:// is supported; to replay into a stream that an HTTPS \
                 ingest server owns, stop the server and replay without --via"
            );
        }
        let Some(rest) = url.strip_prefix("http://") else {
            bail!("--via {url}: expected http://HOST:PORT");
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '@', '?', '#']) {
            bail!("--via {url}: expected http://HOST:PORT, without a path");
        }
        Ok(IngestClient {
            authority: authority.to_string(),
            path: format!("/v1/streams/{stream}/events"),
            token,
        })
    }

    /// The body holding `records` as length-delimited frames.
    pub fn body(records: &[&[u8]]) -> Vec<u8> {
        let mut body = Vec::with_capacity(records.iter().map(|r| r.len() + 5).sum());
        for r in records {
            let mut n = r.len() as u64;
            while n >= 0x80 {
                body.push((n as u8 & 0x7f) | 0x80);
                n >>= 7;
            }
            body.push(n as u8);
            body.extend_from_slice(r);
        }
        body
    }

    /// Posts `records` as one request; the offsets the server stored them
    /// at. Anything but a `200` that accepted every record is an error with
    /// the server's answer.
    pub fn append(&self, records: &[&[u8]]) -> anyhow::Result<Range<u64>> {
        let body = Self::body(records);
        let (status, answer) = self
            .post(&body)
            .with_context(|| format!("cannot post to http://{}{}", self.authority, self.path))?;
        let answer_text = String::from_utf8_lossy(&answer);
        if status != 200 {
            bail!(
                "http://{}{} answered {status}: {}",
                self.authority,
                self.path,
                answer_text.trim()
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)
            .with_context(|| format!("the server's answer is not JSON: {answer_text}"))?;
        let accepted = v.get("accepted").and_then(|a| a.as_u64());
        let offsets = v
            .get("offsets")
            .and_then(|o| Some((o.get(0)?.as_u64()?, o.get(1)?.as_u64()?)));
        match (accepted, offsets) {
            (Some(n), Some((first, end))) if n == records.len() as u64 && end - first == n => {
                Ok(first..end)
            }
            _ => bail!(
                "the server accepted other than the {} records sent: {answer_text}",
                records.len()
            ),
        }
    }

    fn post(&self, body: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
        let with_port = if self
            .authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        {
            self.authority.clone()
        } else {
            format!("{}:80", self.authority)
        };
        let addr = with_port
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {}", self.authority))?
            .next()
            .with_context(|| format!("{} resolves to no address", self.authority))?;
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        conn.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\n\
             Content-Length: {}\r\nConnection: close\r\n",
            self.path,
            self.authority,
            body.len()
        );
        if let Some(token) = &self.token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        head.push_str("\r\n");
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)?;
        let mut answer = Vec::new();
        conn.read_to_end(&mut answer)?;
        parse_response(&answer)
    }
}

/// The status and body of an HTTP/1.1 response read to its end.
fn parse_response(answer: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("the server closed the connection without a complete answer");
    };
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("not an HTTP answer: {head}"))?;
    let mut body = answer[split + 4..].to_vec();
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if chunked {
        body = dechunk(&body).context("a broken chunked answer")?;
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = IngestClient::new("http://127.0.0.1:8080/", "transactions", None).unwrap();
        assert_eq!(c.authority, "127.0.0.1:8080");
        assert_eq!(c.path, "/v1/streams/transactions/events");
        for bad in ["127.0.0.1:8080", "http://", "http://h:1/x", "http://u@h:1"] {
            assert!(IngestClient::new(bad, "s", None).is_err(), "{bad}");
        }
        let e = IngestClient::new("https://h:1", "s", None).unwrap_err();
        assert!(e.to_string().contains("only http://"), "{e}");
    }

    #[test]
    fn bodies_are_length_delimited() {
        let long = vec![7u8; 300];
        let body = IngestClient::body(&[b"ab", b"", &long]);
        let mut want = vec![2, b'a', b'b', 0, 0xac, 0x02];
        want.extend_from_slice(&long);
        assert_eq!(body, want);
    }

    #[test]
    fn responses() {
        let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(plain).unwrap(), (200, b"{}".to_vec()));
        let chunked =
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap(), (401, b"abcde".to_vec()));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
