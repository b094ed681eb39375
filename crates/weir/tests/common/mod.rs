//! What the tests of the `weir` binary need beyond weir-test-support:
//! running it, appending fraud events to the log stream its pipelines
//! follow, and talking to the endpoint of `weir run --metrics-address`.

#![allow(dead_code)] // each test file uses its own subset

pub mod split;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use weir_test_support::fraud;
use weir_test_support::process::{self, Running};

/// The `weir` binary of this build.
pub const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// `weir ARGS` in `dir`, to the end.
pub fn weir(args: &[&str], dir: &Path) -> Output {
    process::run(WEIR, args, dir)
}

/// `weir run pipeline.toml ARGS` in `dir`, in the background, its standard
/// error into `dir/weir.stderr`.
pub fn start(dir: &Path, args: &[&str]) -> Running {
    let stderr = std::fs::File::create(dir.join("weir.stderr")).expect("stderr file");
    let args: Vec<&str> = ["run", "pipeline.toml"]
        .iter()
        .chain(args)
        .copied()
        .collect();
    process::start(WEIR, &args, dir, stderr)
}

/// Appends fraud-v1 events `from..to`, then the `extra` records, to the
/// stream `log/transactions` under `dir`.
pub fn append(dir: &Path, from: usize, to: usize, extra: &[&[u8]]) {
    let events = fraud::events(to as u64);
    let records: Vec<&[u8]> = events
        .iter()
        .skip(from)
        .map(Vec::as_slice)
        .chain(extra.iter().copied())
        .collect();
    let log = weir_log::Log::open(dir.join("log")).expect("log");
    let stream = log
        .stream("transactions", weir_log::StreamConfig::default())
        .expect("stream");
    for chunk in records.chunks(4096) {
        stream.partition(0).append(chunk).expect("append");
    }
    stream.flush().expect("flush");
}

/// `GET path` over plain HTTP/1.1: the status and body, or why there is
/// none (nothing listening yet, a cut answer).
pub fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    get_with(port, path, "")
}

/// `GET path` with `Authorization: Bearer token`, as [`get`].
pub fn get_with_token(port: u16, path: &str, token: &str) -> Result<(u16, String), String> {
    get_with(port, path, &format!("Authorization: Bearer {token}\r\n"))
}

/// `GET path` with extra header lines (each ending in CRLF), as [`get`].
pub fn get_with(port: u16, path: &str, headers: &str) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{headers}\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            format!(
                "no end of headers in {:?}",
                String::from_utf8_lossy(&response)
            )
        })?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let mut body = response[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body)?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if body.len() < len {
            return Err(format!("body of {} bytes, announced {len}", body.len()));
        }
        body.truncate(len);
    }
    let body = String::from_utf8(body).map_err(|e| format!("body is not UTF-8: {e}"))?;
    Ok((status, body))
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line without CRLF")?;
        let line = String::from_utf8_lossy(&raw[..eol]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|e| format!("chunk size {size:?}: {e}"))?;
        raw = &raw[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if raw.len() < size + 2 {
            return Err("truncated chunk".to_string());
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}
