//! `weir ingest`: the HTTP ingest server in front of the durable log.
//!
//! Producers post records to `/v1/streams/{stream}/events`; pipelines read
//! the stream with a `log` source. The bearer token comes from a file or
//! the `WEIR_INGEST_TOKEN` environment variable, never from the command
//! line (where `ps` would show it), and is never printed.
//!
//! `--max-lag N` refuses requests (`429`, `Retry-After`) to a stream whose
//! slowest committed consumer is more than N records behind; pipelines
//! commit their position after each checkpoint. `--tls-cert` and
//! `--tls-key` (PEM files, both or neither) switch the server to HTTPS only.
//!
//! SIGTERM or SIGINT stops it gracefully: the port closes, requests in
//! flight are finished and answered, the streams are fsynced, a summary is
//! printed and the process exits 0 — within `--stop-timeout`, or it exits
//! 1 (a second signal exits at once).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use weir_ingest::{IdempotencyConfig, Limits};
use weir_log::{FsyncPolicy, Log, StreamConfig};

use crate::parse_duration;
use crate::signals;

/// Arguments of `weir ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Also serve /metrics, /healthz and /readyz on this address (with
    /// connections of their own, so scrapes and probes get through while
    /// the events port is saturated); they are on --listen in any case.
    #[arg(long, value_name = "ADDRESS")]
    metrics_address: Option<SocketAddr>,
    /// Directory of the durable log.
    #[arg(long, default_value = "weir-data/log")]
    log_dir: PathBuf,
    /// Stream accepting events (repeat for several).
    #[arg(long = "stream", required = true)]
    streams: Vec<String>,
    /// When appends are forced to disk: always (group commit), interval
    /// (every --fsync-interval-ms) or never.
    #[arg(long, default_value = "always")]
    fsync: String,
    /// Interval for --fsync interval.
    #[arg(long, default_value_t = 10)]
    fsync_interval_ms: u64,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = weir_ingest::DEFAULT_MAX_BODY_BYTES)]
    max_body_bytes: usize,
    /// File holding the bearer token requests must carry (else
    /// WEIR_INGEST_TOKEN, else no token).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Answer 429 (with Retry-After) while the slowest consumer that
    /// committed its position in a stream is more than this many records
    /// behind (default: no bound).
    #[arg(long, value_name = "RECORDS")]
    max_lag: Option<u64>,
    /// Certificate chain (PEM) for HTTPS; needs --tls-key. With both, the
    /// server speaks HTTPS only.
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM: PKCS#8, RSA or EC) for HTTPS; needs --tls-cert.
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most open connections; beyond, new ones wait until one closes.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Most requests being read, checked or appended at once; beyond,
    /// 503 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_in_flight)]
    max_in_flight: usize,
    /// Most memory requests in flight may reserve (bodies, 16 bytes a
    /// record), in bytes; beyond, 503 with Retry-After.
    #[arg(long, default_value_t = Limits::default().max_in_flight_bytes)]
    max_in_flight_bytes: usize,
    /// Time for a request head to arrive, and for the next request on a
    /// kept-alive connection; then the connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Time for a request body to arrive; then 408.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Keys of this many of the newest requests with an Idempotency-Key
    /// are remembered per stream (0: keys are ignored).
    #[arg(long, value_name = "KEYS", default_value_t = IdempotencyConfig::default().keys)]
    idempotency_keys: usize,
    /// How long an Idempotency-Key is remembered.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_duration)]
    idempotency_ttl: Duration,
    /// On SIGTERM or SIGINT the server stops accepting, finishes the
    /// requests in flight and fsyncs the streams (exit 0); if that takes
    /// longer than this, it exits 1 at once. Requests still running after
    /// four fifths of it are cut off. Keep it under Kubernetes'
    /// terminationGracePeriodSeconds (30 s by default).
    #[arg(long, env = "WEIR_STOP_TIMEOUT", value_name = "DURATION", default_value = "25s", value_parser = parse_duration)]
    stop_timeout: Duration,
}

/// Runs the server until the process is stopped.
pub fn run(args: IngestArgs) -> anyhow::Result<()> {
    let fsync = match args.fsync.as_str() {
        "always" => FsyncPolicy::Always,
        "interval" => FsyncPolicy::Interval(Duration::from_millis(args.fsync_interval_ms.max(1))),
        "never" => FsyncPolicy::Never,
        other => bail!("--fsync: unknown policy {other:?} (expected always, interval or never)"),
    };
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_string(),
        ),
        None => std::env::var("WEIR_INGEST_TOKEN").ok(),
    }
    .filter(|t| !t.is_empty());
    let log = Arc::new(
        Log::open(&args.log_dir)
            .with_context(|| format!("cannot open log {}", args.log_dir.display()))?,
    );
    if args.max_in_flight_bytes < args.max_body_bytes {
        bail!(
            "--max-in-flight-bytes ({}) is below --max-body-bytes ({}): a body of the largest size could never be read",
            args.max_in_flight_bytes,
            args.max_body_bytes
        );
    }
    let mut config = weir_ingest::IngestConfig::new(args.listen);
    config.max_body_bytes = args.max_body_bytes;
    config.limits = Limits {
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        max_in_flight_bytes: args.max_in_flight_bytes,
        header_timeout: args.header_timeout,
        body_timeout: args.body_timeout,
        drain_timeout: args.stop_timeout * 4 / 5,
    };
    config.idempotency = IdempotencyConfig {
        keys: args.idempotency_keys,
        ttl: args.idempotency_ttl,
    };
    config.bearer_token = token;
    config.max_lag = args.max_lag;
    config.metrics_listen = args.metrics_address;
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(weir_ingest::TlsConfig { cert, key }),
        (None, None) => None,
        // clap enforces both or neither; keep the message if it ever does not.
        _ => bail!("--tls-cert and --tls-key go together: give both or neither"),
    };
    config.streams = args
        .streams
        .iter()
        .map(|s| {
            (
                s.clone(),
                StreamConfig {
                    fsync,
                    ..Default::default()
                },
            )
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let stop = weir_engine::Stop::new();
    let signals = signals::watch_with(
        stop.clone(),
        args.stop_timeout,
        "weir ingest",
        "finishing the requests in flight, then fsyncing the streams",
    )?;
    let stats = runtime.block_on(async {
        // The lag is only asked for when --max-lag is set.
        let lag = weir_ingest::committed_consumer_lag();
        let server = weir_ingest::bind(config, log, lag)
            .await
            .context("cannot start the ingest server")?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        eprintln!(
            "weir ingest listening on {scheme}://{} (streams: {}; log: {}; max lag: {}; /metrics, /healthz, /readyz{})",
            server.local_addr(),
            args.streams.join(", "),
            args.log_dir.display(),
            args.max_lag
                .map_or_else(|| "none".to_string(), |n| format!("{n} records")),
            server
                .metrics_addr()
                .map_or_else(String::new, |a| format!(" also on {scheme}://{a}")),
        );
        let state = server.state();
        let requested = stop.clone();
        server
            .serve(async move {
                while !requested.requested() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .context("ingest server failed")?;
        anyhow::Ok(state.stats())
    })?;
    drop(signals);
    let took = stop.requested_at().map_or(String::new(), |at| {
        format!(" in {:.1} s", at.elapsed().as_secs_f64())
    });
    eprintln!(
        "weir ingest: stopped{took}: {} requests answered, {} records appended, {} of them for clients that left before their answer; streams fsynced",
        stats.requests, stats.records, stats.unanswered_records
    );
    Ok(())
}
