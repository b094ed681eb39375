//! HTTP ingest into weir's durable log.
//!
//! The engine reads streams of the embedded log ([`weir_log`]); this crate
//! is how producers that speak HTTP put events into it without linking the
//! log themselves. A request is acknowledged only after its records were
//! appended and are as durable as the stream's
//! [`FsyncPolicy`] asks, so a `200` means the data
//! survives a crash (under `always`) and a producer that gets anything else
//! can retry — safely, with an `Idempotency-Key`.
//!
//! # Endpoints
//!
//! `POST /v1/streams/{stream}/events[?partial=true]`, records go to
//! partition 0 of the stream. The body format comes from `Content-Type`:
//!
//! | `Content-Type` | body | one record is |
//! |---|---|---|
//! | `application/x-ndjson`, `application/jsonl` | JSON lines | a non-blank line, which must be a JSON object (a trailing `\r` is dropped) |
//! | `application/json` | a JSON array | an element, which must be an object; appended as its exact bytes from the body |
//! | `application/x-protobuf` | length-delimited messages | a message after its varint length prefix; only the framing is checked |
//!
//! All records of a request are appended as one batch, so they get
//! contiguous offsets and concurrent requests never interleave.
//!
//! Beside it, for operators: `GET /metrics` (Prometheus text format, the
//! series of [`names`]; it needs the bearer token when one is configured,
//! as it names streams and counts their traffic), `GET /healthz` (`200
//! ok` while the process serves) and `GET /readyz` (`200 ready`, or `503`
//! with `not ready: <reason>` lines while stopping or after a partition
//! failed and needs a restart), the last two without a token: they tell
//! nothing about the data.
//!
//! # Responses
//!
//! Checks run in this order; the first that fails decides the answer. Error
//! bodies other than `400` for invalid records are `{"error":"<message>"}`.
//!
//! * `401` — a bearer token is configured and the `Authorization: Bearer
//!   <token>` header is missing or wrong (compared in constant time). Also
//!   carries `WWW-Authenticate: Bearer`.
//! * `404` — the stream is not one of the configured streams.
//! * `415` — `Content-Type` is missing or not one of the above.
//! * `400` — the query string is not understood (`partial` must be `true`,
//!   `false`, `1` or `0`), or the `Idempotency-Key` is not 1 to 255
//!   visible ASCII characters.
//! * `429` — a lag bound is configured and the consumer lag reported for
//!   the stream (by the [`LagFn`], usually [`committed_consumer_lag`])
//!   exceeds it; carries `Retry-After: 1`. Nothing is read or appended.
//! * `413` — the body is larger than the configured maximum (default
//!   8 MiB), by its `Content-Length` or while it is read; also when the
//!   batch exceeds the log's [`MAX_BATCH_BYTES`](weir_log::MAX_BATCH_BYTES).
//! * `503` with `Retry-After: 1` — the server is at its limit of requests
//!   in flight ([`Limits::max_in_flight`]) or of memory they reserve
//!   ([`Limits::max_in_flight_bytes`]: the body's `Content-Length`, or the
//!   body limit when it is not declared, before the body is read; 16 bytes
//!   per record after it is cut into records). Nothing is appended.
//! * `408` — the body did not arrive within [`Limits::body_timeout`].
//! * `400` — some records are invalid:
//!   `{"errors":[{"index":i,"reason":"..."}],"error_count":n,"accepted":0}`
//!   and nothing is appended (all or nothing). `index` is the record's
//!   zero-based position in the request; `errors` lists the first
//!   [`MAX_REPORTED_ERRORS`](records::MAX_REPORTED_ERRORS) (100) invalid
//!   records and `error_count` counts them all. A broken frame (JSON array
//!   syntax, a Protobuf length prefix) is reported once, as the last error,
//!   at the first record that could not be cut out, and makes the rest of
//!   the body unreadable. With `?partial=true` the valid records are
//!   appended anyway and the answer is `200` with `errors` and
//!   `error_count` (`400` as above only when no record was valid).
//! * `409` with `Retry-After: 1` — a request with the same
//!   `Idempotency-Key` is being appended now.
//! * `422` — the `Idempotency-Key` was used for a different request (another
//!   body, format or `partial`).
//! * `200` —
//!   `{"stream":"s","partition":0,"offsets":[first,end],"accepted":n}`
//!   (`end` exclusive), sent only after the append is durable. With
//!   `?partial=true` and refused records `"errors":[...]` and
//!   `"error_count":n` follow; accepted records occupy the offsets in
//!   request order. A body without records is accepted with `accepted` 0
//!   and an empty range. A retry of a request whose `Idempotency-Key` is
//!   remembered gets the same status and body as the original, with
//!   `Idempotent-Replayed: true`, and appends nothing.
//! * `507` with `Retry-After: 10` — the disk is full (or over quota);
//!   nothing from this request was appended. Logged at most every 10 s per
//!   stream, with the number of failures in between.
//! * `500` — the append failed otherwise (an I/O error, a failed
//!   partition); nothing from this request was acknowledged and it may be
//!   retried. Logged like `507`.
//!
//! Other methods on a path get `405`, other paths `404`, both without a
//! body.
//!
//! # Idempotency keys
//!
//! A request may carry `Idempotency-Key: <key>` (1 to 255 visible ASCII
//! characters, unique per request, as in the IETF draft of that name).
//! The server remembers, per stream, the keys of the last
//! [`IdempotencyConfig::keys`] appended requests younger than
//! [`IdempotencyConfig::ttl`] with the offsets their records got, in a
//! journal beside the stream (`<stream>.idempotency`) that survives
//! restarts, kill -9 included; see [`idempotency`] for how. A retry with a
//! remembered key is answered as the original was and appends nothing, so
//! a producer that lost an answer retries without storing twice.
//!
//! # Limits
//!
//! [`Limits`] bound what clients can hold: open connections (beyond them
//! the server stops accepting until one closes), the time to send a
//! request head or to start the next request on a kept-alive connection
//! (hyper's header read timeout), the time to send a body, the requests in
//! flight and the memory they reserve. Shutting down stops accepting and
//! closes the port, finishes the requests in flight (each answered once
//! durable), waits at most [`Limits::drain_timeout`] for them, then fsyncs
//! the streams.
//!
//! # Consumer lag
//!
//! With [`IngestConfig::max_lag`] set, every request asks the [`LagFn`] for
//! the stream's lag first. [`committed_consumer_lag`] is the real one: the
//! records the slowest consumer that committed its position in the log
//! ([`Stream::commit_consumer`], done by pipelines in other processes) has
//! yet to read. If the positions cannot be read (a damaged file), the lag
//! counts as 0 and a warning is logged: a broken bookkeeping file must not
//! turn into refusing every producer, and the next commit replaces it.
//!
//! # TLS
//!
//! With [`IngestConfig::tls`] set the server speaks HTTPS only (rustls,
//! TLS 1.2 and 1.3, `ring` provider, ALPN `http/1.1`); a plain HTTP request
//! on the port fails its handshake and gets no HTTP answer. The
//! certificate chain and key are read from PEM files at start; a missing,
//! unreadable or invalid file, or a key that does not fit the certificate,
//! is an [`IngestError::Tls`] naming the file. Handshakes run in each
//! connection's task, at most [`TLS_HANDSHAKE_TIMEOUT`] each. A changed
//! certificate is picked up on restart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), weir_ingest::IngestError> {
//! use std::sync::Arc;
//! use weir_ingest::{bind, committed_consumer_lag, IngestConfig, TlsConfig};
//! use weir_log::{Log, StreamConfig};
//!
//! let log = Arc::new(Log::open("data/log")?);
//! let mut config = IngestConfig::new("127.0.0.1:8443".parse().unwrap());
//! config.streams.push(("clicks".into(), StreamConfig::default()));
//! config.max_lag = Some(1_000_000);
//! config.tls = Some(TlsConfig {
//!     cert: "tls/cert.pem".into(),
//!     key: "tls/key.pem".into(),
//! });
//! let server = bind(config, log, committed_consumer_lag()).await?;
//! println!("listening on https://{}", server.local_addr());
//! let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! server
//!     .serve(async {
//!         let _ = stopped.await; // drop or send on `_stop` to shut down
//!     })
//!     .await
//! # }
//! ```
#![deny(missing_docs)]

mod handler;
pub mod idempotency;
mod lifecycle;
mod metrics;
pub mod names;
pub mod records;
mod server;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::BytesMut;
use http_body_util::BodyExt as _;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_log::{FsyncPolicy, Log, LogError, Stream, StreamConfig};
use weir_metrics::{labels, Registry};

use handler::*;
pub use idempotency::IdempotencyConfig;
use idempotency::{Idempotency, Lookup};
pub use lifecycle::{bind, serve, IngestServer};
use metrics::{Overload, OverloadMetrics, RequestMetrics, StreamMetrics};
use records::{Format, RecordError};

/// The default [`IngestConfig::max_body_bytes`]: 8 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Reports the consumer lag of a stream, in records. Called once per
/// request when [`IngestConfig::max_lag`] is set, on the async worker
/// thread; it should be cheap and must not block for long.
pub type LagFn = Arc<dyn Fn(&Stream) -> u64 + Send + Sync>;

/// The most one TLS handshake may take before its connection is dropped.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a failure to read a stream's consumer positions is logged.
const LAG_WARN_EVERY: Duration = Duration::from_secs(10);

/// How often a failing append is logged, per stream.
const APPEND_ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

/// What `Retry-After` says to a request refused for a full disk.
const STORAGE_FULL_RETRY_AFTER: &str = "10";

/// With [`FsyncPolicy::Always`] the server fsyncs after each append itself
/// (see [`IngestConfig::streams`]); the log's own background sync runs
/// this often as a backstop.
const BACKSTOP_FSYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Connections the operators' port keeps open at most.
const OPS_MAX_CONNECTIONS: usize = 64;

/// Memory reserved per record of a request: its slice in the batch.
const BYTES_PER_RECORD: usize = 16;

/// The request header carrying an idempotency key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header marking an answer replayed for a remembered key.
pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// A [`LagFn`] reporting the lag of the slowest consumer that committed its
/// position in the stream ([`Stream::consumer_lag`]); 0 while no consumer
/// has committed.
///
/// The positions are read from the log's files on every call (a few
/// microseconds), so commits from other processes count at once. When they
/// cannot be read (a damaged file, an I/O error) the lag counts as 0 and a
/// `tracing` warning is logged, at most once per 10 seconds per stream:
/// failing open keeps producers running while the bookkeeping is repaired
/// (the consumer's next commit replaces the file), whereas failing closed
/// would refuse every request for a fault the producers cannot fix.
pub fn committed_consumer_lag() -> LagFn {
    let warned: Mutex<HashMap<String, Instant>> = Mutex::new(HashMap::new());
    Arc::new(move |stream: &Stream| match stream.consumer_lag() {
        Ok(lag) => lag,
        Err(e) => {
            let mut warned = lock(&warned);
            let now = Instant::now();
            let due = warned
                .get(stream.name())
                .is_none_or(|last| now.duration_since(*last) >= LAG_WARN_EVERY);
            if due {
                warned.insert(stream.name().to_string(), now);
                tracing::warn!(
                    stream = stream.name(),
                    error = %e,
                    "cannot read consumer positions; not enforcing the lag bound until they can be read"
                );
            }
            0
        }
    })
}

/// Certificate and key files (PEM) for serving HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain: one or more `CERTIFICATE` blocks, the
    /// server's own certificate first.
    pub cert: PathBuf,
    /// The private key: a `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or
    /// `EC PRIVATE KEY` block.
    pub key: PathBuf,
}

/// What clients may hold of the server, and how long a stop waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections; beyond, the server stops accepting until one
    /// closes (clients wait in the kernel's backlog). Default 1024.
    pub max_connections: usize,
    /// Requests past their head checks at once (reading the body,
    /// checking records, appending); beyond, `503`. Default 64.
    pub max_in_flight: usize,
    /// Memory the requests in flight may reserve, in bytes: each its body
    /// (its `Content-Length`, or the body limit when not declared) and 16
    /// bytes per record; beyond, `503`. At least the body limit. Default
    /// 128 MiB.
    pub max_in_flight_bytes: usize,
    /// Time for a request head to arrive, and for the next request to
    /// start on a kept-alive connection; then the connection is closed.
    /// Default 10 s.
    pub header_timeout: Duration,
    /// Time for a request body to arrive once its head did; then `408`.
    /// Default 30 s.
    pub body_timeout: Duration,
    /// On shutdown, how long requests in flight may take before their
    /// connections are closed. Default 20 s.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_in_flight: 64,
            max_in_flight_bytes: 128 * 1024 * 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(20),
        }
    }
}

/// What the ingest server serves and how.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Address to listen on (used by [`serve`] only).
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get `413`.
    pub max_body_bytes: usize,
    /// When set, requests to the events endpoint and to `/metrics` must
    /// carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// When set, requests to a stream whose lag (from the [`LagFn`]) is
    /// above this get `429`.
    pub max_lag: Option<u64>,
    /// The streams that accept events, opened (and created) in the log with
    /// these configurations. Any other stream name gets `404`.
    ///
    /// A stream with [`FsyncPolicy::Always`] is opened with
    /// `FsyncPolicy::Interval(1 s)` and the server fsyncs after each
    /// append itself (concurrent requests share the fsync, as the log's
    /// group commit does), answering only after it: the same durability,
    /// with the write and the fsync timed apart, and the idempotency
    /// journal written with the batch while the fsync is shared.
    pub streams: Vec<(String, StreamConfig)>,
    /// When set, [`serve`] speaks HTTPS only, with this certificate and key
    /// (on both ports).
    pub tls: Option<TlsConfig>,
    /// When set, `/metrics`, `/healthz` and `/readyz` are also served on
    /// this address, with a connection limit of their own (64), so that
    /// scrapes and probes get through while the events port is at its
    /// connection limit. `/metrics` needs the bearer token here too.
    pub metrics_listen: Option<SocketAddr>,
    /// Connections, requests in flight, timeouts.
    pub limits: Limits,
    /// The idempotency window of each stream.
    pub idempotency: IdempotencyConfig,
}

impl IngestConfig {
    /// A configuration listening on `listen` with the defaults: 8 MiB
    /// bodies, no token, no lag bound, no streams, plain HTTP, the default
    /// [`Limits`] and [`IdempotencyConfig`].
    pub fn new(listen: SocketAddr) -> IngestConfig {
        IngestConfig {
            listen,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bearer_token: None,
            max_lag: None,
            streams: Vec::new(),
            tls: None,
            metrics_listen: None,
            limits: Limits::default(),
            idempotency: IdempotencyConfig::default(),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// A configured stream could not be opened.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A stream name appears twice in [`IngestConfig::streams`].
    #[error("stream {0:?} is configured twice")]
    DuplicateStream(String),
    /// The limits contradict each other.
    #[error("invalid limits: {0}")]
    Limits(String),
    /// The listen address could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// The server failed while running.
    #[error("serve: {0}")]
    Serve(#[source] std::io::Error),
    /// A TLS certificate or key file cannot be used.
    #[error("TLS {what} {}: {reason}", path.display())]
    Tls {
        /// `"certificate file"` or `"key file"`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Logs a recurring error at most once per period, with the number of
/// occurrences it did not log.
#[derive(Debug)]
struct RateLimited {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimited {
    fn new(every: Duration) -> RateLimited {
        RateLimited {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(occurrences not logged since the last time)` when this one is
    /// to be logged.
    fn due(&self) -> Option<u64> {
        let mut s = lock(&self.state);
        let now = Instant::now();
        if s.0
            .is_some_and(|last| now.duration_since(last) < self.every)
        {
            s.1 += 1;
            return None;
        }
        let suppressed = s.1;
        *s = (Some(now), 0);
        Some(suppressed)
    }
}

/// One configured stream.
struct StreamState {
    name: String,
    stream: Arc<Stream>,
    /// Fsync after each append (the configured policy is `Always`).
    sync_each: bool,
    /// Held from the idempotency check to the batch's write: keeps a key
    /// and its batch together, and the batch's offsets predictable.
    append: Mutex<Option<Idempotency>>,
    /// Whether `append` holds a window (keys are on).
    keys: bool,
    metrics: StreamMetrics,
    /// Why the stream stopped accepting appends, once it has.
    failed: Mutex<Option<String>>,
    errors: RateLimited,
}

/// Counts of what the server did, for a summary at the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests to the events endpoint that were answered.
    pub requests: u64,
    /// Records appended.
    pub records: u64,
    /// Records appended for requests whose client was gone before the
    /// answer (a retry with the same `Idempotency-Key` gets their offsets).
    pub unanswered_records: u64,
}

/// The shared state of the handlers: the open streams, the limits and the
/// metrics.
pub struct IngestState {
    streams: HashMap<String, Arc<StreamState>>,
    max_body_bytes: usize,
    bearer_token: Option<String>,
    max_lag: Option<u64>,
    lag: LagFn,
    limits: Limits,
    /// A permit per open connection (and one while waiting to accept).
    connections: Arc<Semaphore>,
    /// Connections open now.
    open_connections: Arc<AtomicU64>,
    /// A permit per request in flight.
    requests: Arc<Semaphore>,
    /// A permit per KiB reserved by requests in flight.
    memory: Arc<Semaphore>,
    memory_kib: usize,
    registry: Arc<Registry>,
    unknown_stream: RequestMetrics,
    overload: OverloadMetrics,
    stopping: Arc<AtomicBool>,
    answered: AtomicU64,
    appended: AtomicU64,
    unanswered: AtomicU64,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("max_lag", &self.max_lag)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn kib(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl IngestState {
    /// Opens every configured stream in `log` for writing and its
    /// idempotency journal (blocking file I/O: recovery of the streams'
    /// partitions, rebuilding the windows), keeps the limits of `config`
    /// and registers the metrics. The server is then the streams' one
    /// writer: a stream that another process has open for writing is
    /// [`LogError::Locked`](weir_log::LogError::Locked), naming it.
    pub fn new(config: &IngestConfig, log: &Log, lag: LagFn) -> Result<IngestState, IngestError> {
        let limits = config.limits;
        if limits.max_connections == 0 || limits.max_in_flight == 0 {
            return Err(IngestError::Limits(
                "max_connections and max_in_flight must be at least 1".into(),
            ));
        }
        if limits.max_in_flight_bytes < config.max_body_bytes {
            return Err(IngestError::Limits(format!(
                "max_in_flight_bytes ({}) is below the body limit ({}): a request of the largest size could never be read",
                limits.max_in_flight_bytes, config.max_body_bytes
            )));
        }
        let registry = Arc::new(Registry::new());
        let mut streams = HashMap::new();
        for (name, stream_config) in &config.streams {
            if streams.contains_key(name) {
                return Err(IngestError::DuplicateStream(name.clone()));
            }
            let sync_each = stream_config.fsync == FsyncPolicy::Always;
            let open_config = if sync_each {
                StreamConfig {
                    fsync: FsyncPolicy::Interval(BACKSTOP_FSYNC_INTERVAL),
                    ..stream_config.clone()
                }
            } else {
                stream_config.clone()
            };
            let stream = log.stream(name, open_config)?;
            let keys = config.idempotency.keys > 0;
            let idempotency = if keys {
                let end = stream.partition(0).next_offset();
                Some(Idempotency::open(log, name, config.idempotency, end)?)
            } else {
                None
            };
            streams.insert(
                name.clone(),
                Arc::new(StreamState {
                    name: name.clone(),
                    stream,
                    sync_each,
                    append: Mutex::new(idempotency),
                    keys,
                    metrics: StreamMetrics::new(&registry, name),
                    failed: Mutex::new(None),
                    errors: RateLimited::new(APPEND_ERROR_LOG_EVERY),
                }),
            );
        }
        let memory_kib = kib(limits.max_in_flight_bytes) as usize;
        let state = IngestState {
            max_body_bytes: config.max_body_bytes,
            bearer_token: config.bearer_token.clone(),
            max_lag: config.max_lag,
            lag,
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            open_connections: Arc::new(AtomicU64::new(0)),
            requests: Arc::new(Semaphore::new(limits.max_in_flight)),
            memory: Arc::new(Semaphore::new(memory_kib)),
            memory_kib,
            unknown_stream: RequestMetrics::new(&registry, names::UNKNOWN_STREAM),
            overload: OverloadMetrics::new(&registry),
            registry,
            streams,
            stopping: Arc::new(AtomicBool::new(false)),
            answered: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            unanswered: AtomicU64::new(0),
        };
        state.register_collectors();
        Ok(state)
    }

    /// Values read at scrape time: sizes on disk, what is in flight.
    fn register_collectors(&self) {
        let registry = &self.registry;
        registry.collect(weir_metrics::process_metrics);
        let streams: Vec<Arc<StreamState>> = self.streams.values().cloned().collect();
        let stopping = self.stopping.clone();
        registry.collect(move |s| {
            let failed = streams.iter().any(|st| lock(&st.failed).is_some());
            let ready = !stopping.load(Ordering::Acquire) && !failed;
            s.gauge(
                names::READY,
                "1 while the server is ready for requests (not stopping, no stream failed).",
                vec![],
                if ready { 1.0 } else { 0.0 },
            );
            for st in &streams {
                let size: u64 = st.stream.partitions().iter().map(|p| p.size_bytes()).sum();
                s.gauge(
                    names::STREAM_SIZE_BYTES,
                    "Bytes on disk of a stream, all partitions.",
                    labels(&[("stream", &st.name)]),
                    size as f64,
                );
                let keys = lock(&st.append).as_ref().map_or(0, |i| i.window.len());
                s.gauge(
                    names::IDEMPOTENCY_KEYS,
                    "Keys held in the stream's idempotency window.",
                    labels(&[("stream", &st.name)]),
                    keys as f64,
                );
            }
        });
        let (requests, memory, connections) = (
            self.requests.clone(),
            self.memory.clone(),
            self.open_connections.clone(),
        );
        let (max_requests, max_kib) = (self.limits.max_in_flight, self.memory_kib);
        registry.collect(move |s| {
            s.gauge(
                names::IN_FLIGHT_REQUESTS,
                "Requests being read, checked or appended now.",
                vec![],
                max_requests.saturating_sub(requests.available_permits()) as f64,
            );
            s.gauge(
                names::IN_FLIGHT_BYTES,
                "Memory reserved by requests in flight: bodies and record indexes.",
                vec![],
                (max_kib.saturating_sub(memory.available_permits()) * 1024) as f64,
            );
            s.gauge(
                names::CONNECTIONS,
                "Open client connections.",
                vec![],
                connections.load(Ordering::Relaxed) as f64,
            );
        });
    }

    /// The registry behind `/metrics`.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Why the server is not ready; empty when it is.
    pub fn readiness(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.stopping.load(Ordering::Acquire) {
            why.push("stopping".to_string());
        }
        let mut names: Vec<&String> = self.streams.keys().collect();
        names.sort();
        for name in names {
            // The error itself is in the log: probes need no credentials.
            if lock(&self.streams[name].failed).is_some() {
                why.push(format!("stream {name:?} failed and needs a restart"));
            }
        }
        why
    }

    fn begin_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// What was done so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.answered.load(Ordering::Relaxed),
            records: self.appended.load(Ordering::Relaxed),
            unanswered_records: self.unanswered.load(Ordering::Relaxed),
        }
    }

    /// Fsyncs every stream and idempotency journal (blocking).
    pub fn sync(&self) -> Result<(), LogError> {
        for st in self.streams.values() {
            st.stream.flush()?;
            if let Some(i) = lock(&st.append).as_ref() {
                i.flush()?;
            }
        }
        Ok(())
    }

    /// Waits until no request is in flight (their appends done).
    async fn idle(&self) {
        let all = u32::try_from(self.limits.max_in_flight).unwrap_or(u32::MAX);
        if let Ok(permits) = self.requests.acquire_many(all).await {
            drop(permits);
        }
    }
}

/// The routes over `state`: the events endpoint, `/metrics`, `/healthz`
/// and `/readyz`. [`IngestServer::serve`] serves them within the
/// [`Limits`]; tests may also hand them to [`axum::serve()`].
pub fn router(state: Arc<IngestState>) -> Router {
    // The handler reads the body itself, after the cheaper checks and
    // within the body limit.
    Router::new()
        .route("/v1/streams/{stream}/events", post(ingest))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// `/metrics`, `/healthz` and `/readyz` alone, for
/// [`IngestConfig::metrics_listen`].
fn ops_router(state: Arc<IngestState>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// A lock whose holder panicked still guards intact data here.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
