//! `weir top`: a live view of a running pipeline from its `/metrics`.
//!
//! Operators want to see a running `weir run --metrics-address` at a
//! glance without setting up Prometheus: records and rates per source,
//! step and sink, sink latencies, model inference time, per-shard
//! watermark lag and window state, consumer lag, checkpoints, dead
//! letters, connectors, readiness and the process's CPU and memory.
//!
//! This module scrapes the endpoint and redraws; the exposition is parsed
//! by [`weir_metrics::exposition`], histogram quantiles are estimated by
//! [`weir_metrics::exposition::histogram`],
//! and each view is rendered by [`render::render`], a pure function of two
//! parsed scrapes and the time between them (rates and interval quantiles
//! need two), so it is tested on fixture exposition text.

#[cfg(test)]
mod fixtures;
mod format;
mod render;

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http_client::{self, Endpoint};
use exposition::Scrape;
pub(crate) use format::count;
use render::render;
use weir_metrics::exposition;
use weir_metrics::exposition::histogram;

/// Timeout of the connect and of each read of a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/metrics` body accepted.
const MAX_SCRAPE_BYTES: usize = 64 * 1024 * 1024;
/// Clears the terminal and moves the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// Arguments of `weir top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Address of a `weir run --metrics-address` endpoint: host:port or
    /// http://host:port.
    address: String,
    /// Time between scrapes, over which rates are computed (e.g. 500ms,
    /// 1s, 5s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Print one snapshot (from two scrapes an interval apart) and exit,
    /// as when standard output is not a terminal.
    #[arg(long)]
    once: bool,
    /// File holding the endpoint's bearer token, where `weir run` has one
    /// (else WEIR_ENDPOINT_TOKEN).
    #[arg(long, value_name = "PATH")]
    token_file: Option<std::path::PathBuf>,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let ms = weir_config::parse_duration_ms(text)?;
    if ms <= 0 {
        return Err(format!("interval {text:?} must be positive"));
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// Runs `weir top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let token = crate::observe::load_token(args.token_file.as_deref())?;
    let endpoint = Endpoint::parse(&args.address)?.with_token(token);
    let address = endpoint.authority().to_string();
    let stdout = std::io::stdout();
    let live = !args.once && stdout.is_terminal();
    let (mut prev, mut prev_at) = scrape(&endpoint)?;
    if !live {
        std::thread::sleep(args.interval);
        let (cur, cur_at) = scrape(&endpoint)?;
        let view = render(&address, &prev, &cur, cur_at - prev_at);
        let mut out = stdout.lock();
        return write_quietly(&mut out, &view);
    }
    let mut out = stdout.lock();
    write_quietly(
        &mut out,
        &format!("{CLEAR}{}", render(&address, &prev, &prev, Duration::ZERO)),
    )?;
    loop {
        std::thread::sleep(args.interval);
        match scrape(&endpoint) {
            Ok((cur, cur_at)) => {
                let view = render(&address, &prev, &cur, cur_at - prev_at);
                write_quietly(&mut out, &format!("{CLEAR}{view}"))?;
                (prev, prev_at) = (cur, cur_at);
            }
            Err(e) => {
                // Keep the last view, say why it is stale, and retry: the
                // pipeline may be restarting.
                let view = render(&address, &prev, &prev, Duration::ZERO);
                write_quietly(
                    &mut out,
                    &format!("{CLEAR}{view}\nerror: {e:#} (retrying every interval)\n"),
                )?;
            }
        }
    }
}

/// Writes and flushes `text`; a closed standard output (`| head`) is not
/// an error.
fn write_quietly(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// GETs and parses `/metrics`; returns the scrape and when it arrived.
fn scrape(endpoint: &Endpoint) -> anyhow::Result<(Scrape, Instant)> {
    let r = http_client::get(endpoint, "/metrics", SCRAPE_TIMEOUT, MAX_SCRAPE_BYTES).with_context(
        || {
            format!(
                "cannot scrape {} (is `weir run --metrics-address {}` running?)",
                endpoint.url("/metrics"),
                endpoint.authority()
            )
        },
    )?;
    let at = Instant::now();
    if r.status != 200 {
        let body = String::from_utf8_lossy(&r.body);
        let hint = match r.status {
            401 => format!(
                " (give the endpoint's token with --token-file or {})",
                crate::observe::TOKEN_ENV
            ),
            _ => String::new(),
        };
        bail!(
            "GET {} answered {} {}: {}{hint}",
            endpoint.url("/metrics"),
            r.status,
            r.reason,
            body.trim()
        );
    }
    Ok((Scrape::parse(&String::from_utf8_lossy(&r.body)), at))
}

#[cfg(test)]
mod tests {
    use super::fixtures::{row, CUR, PREV};
    use super::*;

    #[test]
    fn interval_parsing() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1").is_err());
        assert!(parse_interval("fast").is_err());
    }

    #[test]
    fn once_against_a_server_and_an_unreachable_address() {
        let response = |body: &str| {
            vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        };
        let (addr, server) = crate::http_client::tests::serve(vec![response(PREV), response(CUR)]);
        let ep = Endpoint::parse(&addr).unwrap();
        let (a, _) = scrape(&ep).unwrap();
        let (b, _) = scrape(&ep).unwrap();
        assert_eq!(a.samples.len(), Scrape::parse(PREV).samples.len());
        let view = render(&addr, &a, &b, Duration::from_secs(2));
        assert_eq!(
            row(&view, "source orders"),
            ["source orders", "3,000", "1,000"]
        );
        server.join().unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = scrape(&Endpoint::parse(&gone).unwrap()).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("cannot scrape http://{gone}/metrics")),
            "{e:#}"
        );
    }
}
