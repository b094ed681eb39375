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

pub mod idempotency;
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

pub use idempotency::IdempotencyConfig;
use idempotency::{Idempotency, Lookup};
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

/// [`bind`] then [`IngestServer::serve`]: opens the configured streams,
/// listens on `config.listen` and serves until `shutdown` completes; then
/// stops accepting connections, finishes the requests in flight (their
/// appends are answered) and fsyncs the streams.
pub async fn serve(
    config: IngestConfig,
    log: Arc<Log>,
    lag: LagFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), IngestError> {
    bind(config, log, lag).await?.serve(shutdown).await
}

/// Loads the TLS certificate and key if configured, opens the configured
/// streams and binds `config.listen`, without serving yet: the address is
/// known (port 0 picks a free one) before the first request.
pub async fn bind(
    config: IngestConfig,
    log: Arc<Log>,
    lag: LagFn,
) -> Result<IngestServer, IngestError> {
    let (state, tls) = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let tls = config.tls.as_ref().map(tls::load).transpose()?;
            Ok::<_, IngestError>((IngestState::new(&config, &log, lag)?, tls))
        })
        .await
        .map_err(|e| IngestError::Serve(std::io::Error::other(e)))??
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| IngestError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(config.listen);
    let (ops_listener, ops_addr) = match config.metrics_listen {
        Some(at) => {
            let l = tokio::net::TcpListener::bind(at)
                .await
                .map_err(|source| IngestError::Bind { addr: at, source })?;
            let a = l.local_addr().unwrap_or(at);
            (Some(l), Some(a))
        }
        None => (None, None),
    };
    Ok(IngestServer {
        state: Arc::new(state),
        listener,
        ops_listener,
        tls,
        addr,
        ops_addr,
    })
}

/// A bound ingest server, made by [`bind`], that serves once
/// [`serve`](IngestServer::serve) is awaited.
pub struct IngestServer {
    state: Arc<IngestState>,
    listener: tokio::net::TcpListener,
    ops_listener: Option<tokio::net::TcpListener>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    addr: SocketAddr,
    ops_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestServer")
            .field("addr", &self.addr)
            .field("ops_addr", &self.ops_addr)
            .field("tls", &self.tls.is_some())
            .field("state", &self.state)
            .finish()
    }
}

impl IngestServer {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the operators' port ([`IngestConfig::metrics_listen`]),
    /// if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops_addr
    }

    /// Whether it speaks HTTPS (else plain HTTP).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The handlers' state: its [`stats`](IngestState::stats) and
    /// [`registry`](IngestState::registry).
    pub fn state(&self) -> Arc<IngestState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes; then stops accepting connections
    /// (the port closes), finishes the requests in flight — each answered
    /// once its append is durable — for at most
    /// [`Limits::drain_timeout`], closes the connections left, waits for
    /// appends already started and fsyncs every stream.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), IngestError> {
        let addr = self.addr;
        let state = self.state;
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(%addr, streams = state.streams.len(), scheme, "weir ingest listening");
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let data = server::run(
            server::Port {
                listener: self.listener,
                tls: self.tls.clone(),
                app: router(state.clone()),
                connections: state.connections.clone(),
                open: state.open_connections.clone(),
            },
            state.limits,
            stopped(stop_rx.clone()),
            || state.begin_stop(),
        );
        let ops = async {
            if let Some(listener) = self.ops_listener {
                server::run(
                    server::Port {
                        listener,
                        tls: self.tls.clone(),
                        app: ops_router(state.clone()),
                        connections: Arc::new(Semaphore::new(OPS_MAX_CONNECTIONS)),
                        open: Arc::new(AtomicU64::new(0)),
                    },
                    state.limits,
                    stopped(stop_rx.clone()),
                    || {},
                )
                .await;
            }
        };
        tokio::join!(data, ops);
        state.idle().await;
        let synced = state.clone();
        tokio::task::spawn_blocking(move || synced.sync())
            .await
            .map_err(|e| IngestError::Serve(std::io::Error::other(e)))??;
        Ok(())
    }
}

#[derive(Serialize)]
struct Accepted<'a> {
    stream: &'a str,
    partition: u32,
    offsets: [u64; 2],
    accepted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<RecordError>,
    #[serde(skip_serializing_if = "is_zero")]
    error_count: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct Rejected {
    errors: Vec<RecordError>,
    error_count: usize,
    accepted: usize,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

fn retry_after(mut r: Response, seconds: &'static str) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    r
}

fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

async fn ingest(
    State(state): State<Arc<IngestState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let stream = state.streams.get(&name).cloned();
    let response = handle(&state, stream.as_ref(), &name, request).await;
    let requests = stream
        .as_ref()
        .map_or(&state.unknown_stream, |s| &s.metrics.requests);
    requests.answered(
        &state.registry,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    state.answered.fetch_add(1, Ordering::Relaxed);
    response
}

/// The checks before the body is read, the read, then the blocking part.
async fn handle(
    state: &Arc<IngestState>,
    st: Option<&Arc<StreamState>>,
    name: &str,
    request: Request,
) -> Response {
    if let Some(token) = &state.bearer_token {
        if !authorized(request.headers(), token) {
            return unauthorized();
        }
    }
    let Some(st) = st else {
        return error(StatusCode::NOT_FOUND, &format!("unknown stream {name:?}"));
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(format) = content_type.and_then(Format::from_content_type) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-ndjson, application/jsonl, application/json or application/x-protobuf",
        );
    };
    let partial = match partial_param(request.uri().query()) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    // The header is ignored when the window is off (no journal to keep).
    let key = match request.headers().get(IDEMPOTENCY_KEY) {
        Some(v) if st.keys => {
            if let Err(message) = idempotency::check_key(v.as_bytes()) {
                return error(StatusCode::BAD_REQUEST, &message);
            }
            Some(idempotency::key_hash(v.as_bytes()))
        }
        _ => None,
    };
    if let Some(max) = state.max_lag {
        let lag = (state.lag)(&st.stream);
        if lag > max {
            state.overload.count(Overload::ConsumerLag);
            return retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "consumer lag of stream {name:?} is {lag} records, above the bound of {max}"
                    ),
                ),
                "1",
            );
        }
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes", state.max_body_bytes),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return too_large();
    }

    // Admission: a request slot, and memory for the body before reading it.
    let overloaded = |reason: Overload, what: &str| {
        state.overload.count(reason);
        retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the server is at its limit of {what}; retry later"),
            ),
            "1",
        )
    };
    let Ok(slot) = state.requests.clone().try_acquire_owned() else {
        return overloaded(Overload::InFlightRequests, "requests in flight");
    };
    let reserve = declared.map_or(state.max_body_bytes, |n| n as usize);
    let Ok(mut memory) = state.memory.clone().try_acquire_many_owned(kib(reserve)) else {
        return overloaded(Overload::InFlightBytes, "memory for requests in flight");
    };
    let read = read_body(request.into_body(), reserve, state.max_body_bytes);
    let body = match tokio::time::timeout(state.limits.body_timeout, read).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s",
                    state.limits.body_timeout.as_secs_f64()
                ),
            )
        }
        Ok(Ok(b)) => b,
        Ok(Err(None)) => return too_large(),
        Ok(Err(Some(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the body: {e}"),
            )
        }
    };
    st.metrics.received_bytes.add(body.len() as u64);
    // An undeclared length reserved the limit: give back what it did not use.
    let used = kib(body.len()) as usize;
    if memory.num_permits() > used {
        drop(memory.split(memory.num_permits() - used));
    }

    // Checking the records and the append are CPU work and blocking I/O
    // (fsync): on the blocking pool, which answers through a channel so
    // that records stored for a client that is gone are counted.
    let job = Job {
        state: state.clone(),
        st: st.clone(),
        format,
        partial,
        key,
        body,
        _slot: slot,
        memory,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let counter = state.clone();
    let stream_name = st.name.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(Outcome::Appended { offsets, .. }) = tx.send(job.run()) {
            let n = offsets.end - offsets.start;
            counter.unanswered.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                stream = %stream_name,
                offsets = ?offsets,
                "records appended for a client that left before the answer"
            );
        }
    });
    let Ok(outcome) = rx.await else {
        tracing::error!(stream = %name, "append task failed");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "append task failed");
    };
    outcome.into_response(state, st)
}

/// Reads a body of at most `max` bytes into one buffer of `expected`
/// bytes (its `Content-Length`), dropping each chunk once copied, so a
/// request holds its body once. `Err(None)` when it is larger than `max`.
async fn read_body(
    mut body: axum::body::Body,
    expected: usize,
    max: usize,
) -> Result<Bytes, Option<axum::Error>> {
    let mut buf = BytesMut::with_capacity(expected.min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The blocking part of a request.
struct Job {
    state: Arc<IngestState>,
    st: Arc<StreamState>,
    format: Format,
    partial: bool,
    key: Option<u128>,
    body: Bytes,
    /// Held until the append is done, also when the client left.
    _slot: OwnedSemaphorePermit,
    memory: OwnedSemaphorePermit,
}

enum Outcome {
    Appended {
        offsets: Range<u64>,
        accepted: usize,
        errors: Vec<RecordError>,
        error_count: usize,
        replayed: bool,
    },
    Invalid {
        errors: Vec<RecordError>,
        error_count: usize,
    },
    Overloaded,
    InFlight,
    Mismatch,
    Failed(LogError),
}

impl Job {
    fn run(mut self) -> Outcome {
        // The batch's slices, 16 bytes a record: reserved like the body,
        // before they are allocated.
        let most = records::max_records(self.format, &self.body);
        match self
            .state
            .memory
            .clone()
            .try_acquire_many_owned(kib(most.saturating_mul(BYTES_PER_RECORD)))
        {
            Ok(more) => self.memory.merge(more),
            Err(_) => return Outcome::Overloaded,
        }
        let split = records::split(self.format, &self.body);
        self.st.metrics.rejected.add(split.error_count as u64);
        if split.error_count > 0 && (split.records.is_empty() || !self.partial) {
            return Outcome::Invalid {
                errors: split.errors,
                error_count: split.error_count,
            };
        }
        let fingerprint = self
            .key
            .map(|_| idempotency::fingerprint(self.format as u8, self.partial, &self.body));
        let st = &self.st;
        let partition = st.stream.partition(0);
        let count = split.records.len();
        let mut guard = lock(&st.append);
        if let (Some(idem), Some(key), Some(fp)) = (guard.as_ref(), self.key, fingerprint) {
            match idem.window.lookup(key, fp, idempotency::now_ms()) {
                Lookup::Absent => {}
                Lookup::InFlight => return Outcome::InFlight,
                Lookup::Mismatch => return Outcome::Mismatch,
                Lookup::Done { first, count } => {
                    st.metrics.replays.add(1);
                    return Outcome::Appended {
                        offsets: first..first + u64::from(count),
                        accepted: count as usize,
                        errors: split.errors,
                        error_count: split.error_count,
                        replayed: true,
                    };
                }
            }
        }
        if count == 0 {
            let end = partition.next_offset();
            return Outcome::Appended {
                offsets: end..end,
                accepted: 0,
                errors: split.errors,
                error_count: split.error_count,
                replayed: false,
            };
        }
        let first = partition.next_offset();
        let mut claimed = None;
        if let Some(idem) = guard.as_mut() {
            if let Err(e) = idem.before_append(first) {
                return Outcome::Failed(e);
            }
            if let (Some(key), Some(fp)) = (self.key, fingerprint) {
                let n = u32::try_from(count).unwrap_or(u32::MAX);
                if let Err(e) = idem.claim(key, fp, first, n, idempotency::now_ms()) {
                    return Outcome::Failed(e);
                }
                claimed = Some(key);
            }
        }
        let t = Instant::now();
        let appended = partition.append(&split.records);
        st.metrics.append.observe(t.elapsed().as_secs_f64());
        let offsets = match appended {
            Ok(o) => o,
            Err(e) => {
                if let (Some(idem), Some(key)) = (guard.as_mut(), claimed) {
                    idem.claim_failed(key);
                }
                return Outcome::Failed(e);
            }
        };
        if offsets.start != first {
            // Only another writer of the stream could do that.
            tracing::error!(
                stream = %st.name,
                expected = first,
                got = offsets.start,
                "the batch got other offsets than the idempotency journal recorded"
            );
        }
        drop(guard);
        if st.sync_each {
            let t = Instant::now();
            let synced = partition.flush();
            st.metrics.fsync.observe(t.elapsed().as_secs_f64());
            if let Err(e) = synced {
                if let (Some(idem), Some(key)) = (lock(&st.append).as_mut(), claimed) {
                    idem.window.abort(key);
                }
                return Outcome::Failed(e);
            }
        }
        if let (Some(idem), Some(key)) = (lock(&st.append).as_mut(), claimed) {
            idem.window.complete(key);
        }
        st.metrics.appended.add(count as u64);
        self.state
            .appended
            .fetch_add(count as u64, Ordering::Relaxed);
        tracing::debug!(stream = %st.name, records = count, ?offsets, "appended");
        Outcome::Appended {
            offsets,
            accepted: count,
            errors: split.errors,
            error_count: split.error_count,
            replayed: false,
        }
    }
}

impl Outcome {
    fn into_response(self, state: &IngestState, st: &StreamState) -> Response {
        match self {
            Outcome::Appended {
                offsets,
                accepted,
                errors,
                error_count,
                replayed,
            } => {
                let mut r = Json(Accepted {
                    stream: &st.name,
                    partition: 0,
                    offsets: [offsets.start, offsets.end],
                    accepted,
                    errors,
                    error_count,
                })
                .into_response();
                if replayed {
                    r.headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                }
                r
            }
            Outcome::Invalid {
                errors,
                error_count,
            } => (
                StatusCode::BAD_REQUEST,
                Json(Rejected {
                    errors,
                    error_count,
                    accepted: 0,
                }),
            )
                .into_response(),
            Outcome::Overloaded => {
                state.overload.count(Overload::InFlightBytes);
                retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is at its limit of memory for requests in flight; retry later",
                    ),
                    "1",
                )
            }
            Outcome::InFlight => retry_after(
                error(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is being appended; retry later",
                ),
                "1",
            ),
            Outcome::Mismatch => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for a different request (another body, Content-Type or partial)",
            ),
            Outcome::Failed(e @ LogError::BatchTooLarge { .. }) => {
                error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
            }
            Outcome::Failed(e) => append_failed(state, st, &e),
        }
    }
}

/// `507` for a full disk, `500` otherwise; logged at most every 10 s per
/// stream. A failed fsync or a partition that refuses appends makes the
/// server not ready.
fn append_failed(state: &IngestState, st: &StreamState, e: &LogError) -> Response {
    let full = storage_full(e);
    if !full
        && matches!(
            e,
            LogError::Failed { .. } | LogError::Io { op: "fsync", .. }
        )
    {
        lock(&st.failed).get_or_insert_with(|| e.to_string());
    }
    if let Some(suppressed) = st.errors.due() {
        tracing::error!(
            stream = %st.name,
            error = %e,
            failures_not_logged = suppressed,
            "append failed"
        );
    }
    if full {
        state.overload.count(Overload::StorageFull);
        retry_after(
            error(
                StatusCode::INSUFFICIENT_STORAGE,
                &format!("the disk is full, nothing was appended: {e}"),
            ),
            STORAGE_FULL_RETRY_AFTER,
        )
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("append failed: {e}"),
        )
    }
}

/// Whether an error, or one it was caused by, is a full disk or quota.
fn storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        next = err.source();
    }
    false
}

async fn metrics_text(State(state): State<Arc<IngestState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.bearer_token {
        if !authorized(&headers, token) {
            return unauthorized();
        }
    }
    // Collectors read files (stream sizes, /proc): off the async threads.
    let registry = state.registry.clone();
    match tokio::task::spawn_blocking(move || registry.render()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    let why = state.readiness();
    if why.is_empty() {
        "ready\n".into_response()
    } else {
        let body: String = why.iter().map(|w| format!("not ready: {w}\n")).collect();
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `partial` from the query string: absent means false.
fn partial_param(query: Option<&str>) -> Result<bool, String> {
    let mut partial = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key == "partial" {
            partial = match value {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("partial must be true or false, not {value:?}")),
            };
        }
    }
    Ok(partial)
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") & constant_time_eq(given, token.as_bytes())
}

/// Compares without an early exit, so the time taken does not tell how
/// many leading bytes matched (it does depend on the lengths).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert!(authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok"),
        );
        assert!(authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer to"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(!authorized(&h, "tok"));
    }

    #[test]
    fn partial_query() {
        assert_eq!(partial_param(None), Ok(false));
        assert_eq!(partial_param(Some("partial=true")), Ok(true));
        assert_eq!(partial_param(Some("x=1&partial=1")), Ok(true));
        assert_eq!(partial_param(Some("partial=false")), Ok(false));
        assert_eq!(partial_param(Some("partial")), Ok(true));
        assert!(partial_param(Some("partial=yes")).is_err());
    }
}
