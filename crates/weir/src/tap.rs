//! `weir tap`: watch sampled records passing a step of a running pipeline.
//!
//! `weir run --metrics-address` streams, on `GET /tap/{step}`, one JSON
//! object per sampled output record of the step (rate-limited by the
//! server). This command copies those lines to standard output as they
//! arrive, flushing each, so it can be piped into `jq` or `head`; it stops
//! when the server ends the body, after `--limit` lines, when the reader of
//! standard output goes away, or on Ctrl-C. Taps need the endpoint's
//! bearer token: from `--token-file`, else `WEIR_ENDPOINT_TOKEN`. Empty
//! lines (the server's heartbeat on a quiet step) are skipped.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::http_client::{self, Endpoint};

/// How long to wait for the connection and the response head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest error body shown, and longest record line accepted.
const MAX_ERROR_BODY: usize = 64 * 1024;
const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Arguments of `weir tap`.
#[derive(Debug, clap::Args)]
pub struct TapArgs {
    /// Address of a `weir run --metrics-address` endpoint: host:port or
    /// http://host:port.
    address: String,
    /// The step whose output records to sample.
    step: String,
    /// Most records per second the server samples (1 to 1000).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    rate: u32,
    /// Stop after printing this many records.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
    /// File holding the endpoint's bearer token (else
    /// WEIR_ENDPOINT_TOKEN).
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
}

/// Runs `weir tap`.
pub fn run(args: TapArgs) -> anyhow::Result<()> {
    let token = crate::observe::load_token(args.token_file.as_deref())?;
    let endpoint = Endpoint::parse(&args.address)?.with_token(token);
    let stdout = io::stdout();
    let mut out = stdout.lock();
    tap(&endpoint, &args.step, args.rate, args.limit, &mut out).map(|_| ())
}

/// The request path of a tap.
fn tap_path(step: &str, rate: u32, limit: Option<u64>) -> String {
    let mut path = format!("/tap/{}?rate={rate}", percent_encode(step));
    if let Some(n) = limit {
        path.push_str(&format!("&limit={n}"));
    }
    path
}

/// Copies the tapped lines to `out`, flushing after each; returns how many
/// were written.
fn tap(
    endpoint: &Endpoint,
    step: &str,
    rate: u32,
    limit: Option<u64>,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    let path = tap_path(step, rate, limit);
    let url = endpoint.url(&path);
    let mut response = http_client::get_streaming(endpoint, &path, CONNECT_TIMEOUT, None)
        .with_context(|| {
            format!(
                "cannot tap step {step:?} at {} (is `weir run --metrics-address {}` running?)",
                endpoint.authority(),
                endpoint.authority()
            )
        })?;
    if response.status != 200 {
        let text = response
            .body
            .read_all(MAX_ERROR_BODY)
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        if response.status == 404 && !text.is_empty() {
            bail!("{text}");
        }
        let reason = if response.reason.is_empty() {
            String::new()
        } else {
            format!(" {}", response.reason)
        };
        let hint = match response.status {
            401 => format!(
                " (give the endpoint's token with --token-file or {})",
                crate::observe::TOKEN_ENV
            ),
            _ => String::new(),
        };
        if text.is_empty() {
            bail!("GET {url} answered {}{reason}{hint}", response.status);
        }
        bail!(
            "GET {url} answered {}{reason}: {text}{hint}",
            response.status
        );
    }
    let mut lines = LineSplitter::default();
    let mut printer = LinePrinter {
        out,
        limit,
        written: 0,
    };
    while let Some(bytes) = response
        .body
        .next_bytes()
        .with_context(|| format!("GET {url}"))?
    {
        for line in lines.push(&bytes).with_context(|| format!("GET {url}"))? {
            if !printer.print(&line)? {
                return Ok(printer.written);
            }
        }
    }
    if let Some(line) = lines.finish() {
        printer.print(&line)?;
    }
    Ok(printer.written)
}

/// Writes tapped lines out, each flushed, up to the limit.
struct LinePrinter<'a, W> {
    out: &'a mut W,
    limit: Option<u64>,
    written: u64,
}

impl<W: Write> LinePrinter<'_, W> {
    /// Writes `line` (a blank one is skipped); returns whether to go on: no
    /// longer at the limit, nor once the reader of the output went away
    /// (`| head`), which is no error.
    fn print(&mut self, line: &[u8]) -> anyhow::Result<bool> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(true);
        }
        let written = self
            .out
            .write_all(line)
            .and_then(|()| self.out.write_all(b"\n"))
            .and_then(|()| self.out.flush());
        match written {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("writing to standard output"),
        }
        self.written += 1;
        Ok(self.limit.is_none_or(|n| self.written < n))
    }
}

/// Splits a byte stream into lines (without the `\n` or `\r\n`), holding
/// a partial line until its end arrives.
#[derive(Debug, Default)]
struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Takes the next bytes; returns the lines they complete.
    fn push(&mut self, mut bytes: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let mut lines = Vec::new();
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&bytes[..i]);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            lines.push(line);
            bytes = &bytes[i + 1..];
        }
        self.partial.extend_from_slice(bytes);
        if self.partial.len() > MAX_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record line is over {MAX_LINE_BYTES} bytes"),
            ));
        }
        Ok(lines)
    }

    /// The last line, where the stream did not end with a newline.
    fn finish(self) -> Option<Vec<u8>> {
        (!self.partial.is_empty()).then_some(self.partial)
    }
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved
/// characters).
fn percent_encode(segment: &str) -> String {
    let mut s = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_client::tests::serve;

    fn split_all(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut s = LineSplitter::default();
        let mut lines = Vec::new();
        let mut from = 0;
        for &to in cuts.iter().chain(std::iter::once(&input.len())) {
            lines.extend(s.push(&input[from..to]).unwrap());
            from = to;
        }
        lines.extend(s.finish());
        lines
    }

    #[test]
    fn lines_split_anywhere() {
        let input = b"{\"a\":1}\n{\"b\":2}\r\n\n{\"c\":3}";
        let want: Vec<Vec<u8>> = vec![
            b"{\"a\":1}".to_vec(),
            b"{\"b\":2}".to_vec(),
            b"".to_vec(),
            b"{\"c\":3}".to_vec(),
        ];
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(split_all(input, &[a, b]), want, "cuts {a} {b}");
            }
        }
        assert!(split_all(b"", &[]).is_empty());
        assert_eq!(split_all(b"x\n", &[]), vec![b"x".to_vec()]);
    }

    #[test]
    fn path_encodes_step_and_parameters() {
        assert_eq!(tap_path("decode", 10, None), "/tap/decode?rate=10");
        assert_eq!(
            tap_path("a b/c?é", 1000, Some(5)),
            "/tap/a%20b%2Fc%3F%C3%A9?rate=1000&limit=5"
        );
    }

    /// A chunked tap body whose chunks split records mid-line and whose
    /// chunk-size lines arrive split across writes.
    fn chunked_tap_response() -> Vec<Vec<u8>> {
        let lines = "{\"_step\":\"decode\",\"id\":1}\n{\"_step\":\"decode\",\"id\":2}\n{\"_step\":\"decode\",\"id\":3}\n";
        let (a, rest) = lines.split_at(10);
        let (b, c) = rest.split_at(30);
        let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
        let body = format!("{}{}{}0\r\n\r\n", chunk(a), chunk(b), chunk(c));
        let mut writes = vec![b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()];
        // Cut inside the second chunk-size line, inside data, and inside
        // the CRLF after data.
        let cut1 = chunk(a).len() + 1;
        let cut2 = cut1 + 12;
        let cut3 = chunk(a).len() + chunk(b).len() - 1;
        let bytes = body.into_bytes();
        writes.push(bytes[..cut1].to_vec());
        writes.push(bytes[cut1..cut2].to_vec());
        writes.push(bytes[cut2..cut3].to_vec());
        writes.push(bytes[cut3..].to_vec());
        writes
    }

    #[test]
    fn tap_copies_lines_until_the_body_ends_or_the_limit() {
        let not_found =
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 40\r\n\r\nunknown step \"x\"; steps: decode, scores\n"
                .to_vec();
        let (addr, server) = serve(vec![
            chunked_tap_response(),
            chunked_tap_response(),
            vec![not_found],
            vec![b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec()],
        ]);
        let ep = Endpoint::parse(&addr).unwrap();

        let mut out = Vec::new();
        assert_eq!(tap(&ep, "decode", 10, None, &mut out).unwrap(), 3);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"_step\":\"decode\",\"id\":1}\n{\"_step\":\"decode\",\"id\":2}\n{\"_step\":\"decode\",\"id\":3}\n"
        );

        let mut out = Vec::new();
        assert_eq!(tap(&ep, "decode", 50, Some(2), &mut out).unwrap(), 2);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"_step\":\"decode\",\"id\":1}\n{\"_step\":\"decode\",\"id\":2}\n"
        );

        let e = tap(&ep, "x", 10, None, &mut Vec::new()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "unknown step \"x\"; steps: decode, scores"
        );

        let e = tap(&ep, "decode", 10, None, &mut Vec::new()).unwrap_err();
        assert!(
            format!("{e:#}").contains("answered 503 Service Unavailable"),
            "{e:#}"
        );

        let requests = server.join().unwrap();
        assert!(requests[0].starts_with("GET /tap/decode?rate=10 HTTP/1.1\r\n"));
        assert!(requests[1].starts_with("GET /tap/decode?rate=50&limit=2 HTTP/1.1\r\n"));
    }

    #[test]
    fn tap_sends_the_token_and_says_where_a_refused_one_comes_from() {
        let unauthorized = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 32\r\n\r\nmissing or invalid bearer token\n".to_vec();
        let (addr, server) = serve(vec![chunked_tap_response(), vec![unauthorized]]);
        let ep = Endpoint::parse(&addr)
            .unwrap()
            .with_token(Some("s3cret".into()));
        assert!(!format!("{ep:?}").contains("s3cret"), "{ep:?}");
        assert_eq!(tap(&ep, "decode", 10, None, &mut Vec::new()).unwrap(), 3);
        let e = tap(&ep, "decode", 10, None, &mut Vec::new()).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "GET http://{addr}/tap/decode?rate=10 answered 401 Unauthorized: missing or \
                 invalid bearer token (give the endpoint's token with --token-file or \
                 WEIR_ENDPOINT_TOKEN)"
            )
        );
        let requests = server.join().unwrap();
        assert!(
            requests[0].contains("\r\nauthorization: Bearer s3cret\r\n"),
            "{}",
            requests[0]
        );
    }

    #[test]
    fn tap_stops_quietly_when_stdout_goes_away() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from(io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (addr, server) = serve(vec![chunked_tap_response()]);
        let ep = Endpoint::parse(&addr).unwrap();
        assert_eq!(tap(&ep, "decode", 10, None, &mut Closed).unwrap(), 0);
        server.join().unwrap();
    }

    #[test]
    fn tap_of_an_unreachable_address_names_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = tap(&ep, "decode", 10, None, &mut Vec::new()).unwrap_err();
        assert!(format!("{e:#}").contains(&addr), "{e:#}");
    }
}
