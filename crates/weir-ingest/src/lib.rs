//! HTTP ingest into weir's durable log.
//!
//! The engine reads streams of the embedded log ([`weir_log`]); this crate
//! is how producers that speak HTTP put events into it without linking the
//! log themselves. A request is acknowledged only after its records were
//! appended and are as durable as the stream's
//! [`FsyncPolicy`](weir_log::FsyncPolicy) asks, so a `200` means the data
//! survives a crash (under `always`) and a producer that gets anything else
//! can retry.
//!
//! # Endpoint
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
//! # Responses
//!
//! Checks run in this order; the first that fails decides the answer. Error
//! bodies other than `400` are `{"error":"<message>"}`.
//!
//! * `401` — a bearer token is configured and the `Authorization: Bearer
//!   <token>` header is missing or wrong (compared in constant time). Also
//!   carries `WWW-Authenticate: Bearer`.
//! * `404` — the stream is not one of the configured streams.
//! * `415` — `Content-Type` is missing or not one of the above.
//! * `400` — the query string is not understood (`partial` must be `true`,
//!   `false`, `1` or `0`), as `{"error":...}`.
//! * `429` — a lag bound is configured and the consumer lag reported for
//!   the stream (by the [`LagFn`], usually [`committed_consumer_lag`])
//!   exceeds it; carries `Retry-After: 1`. Nothing is read or appended.
//! * `413` — the body is larger than the configured maximum (default
//!   8 MiB), by its `Content-Length` or while it is read; also when the
//!   batch exceeds the log's [`MAX_BATCH_BYTES`](weir_log::MAX_BATCH_BYTES).
//! * `400` — some records are invalid:
//!   `{"errors":[{"index":i,"reason":"..."}],"accepted":0}` and nothing is
//!   appended (all or nothing). `index` is the record's zero-based position
//!   in the request. A broken frame (JSON array syntax, a Protobuf length
//!   prefix) is reported once, at the first record that could not be cut
//!   out, and makes the rest of the body unreadable.
//!   With `?partial=true` the valid records are appended anyway and the
//!   answer is `200` with `errors` listed (`400` as above only when no
//!   record was valid).
//! * `200` —
//!   `{"stream":"s","partition":0,"offsets":[first,end],"accepted":n}`
//!   (`end` exclusive), sent only after the append returned. With
//!   `?partial=true` and refused records an `"errors":[...]` member
//!   follows; accepted records occupy the offsets in request order. A body
//!   without records is accepted with `accepted` 0 and an empty range.
//! * `500` — the append failed (an I/O error, a failed partition); nothing
//!   from this request was acknowledged and it may be retried.
//!
//! Other methods on the path get `405`, other paths `404`, both without a
//! body.
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
//! is an [`IngestError::Tls`] naming the file. Handshakes run off the
//! accept loop, at most [`TLS_HANDSHAKE_TIMEOUT`] each. A changed
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

pub mod records;
mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Serialize;
use weir_log::{Log, LogError, Stream, StreamConfig};

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
            let mut warned = warned.lock().unwrap_or_else(|e| e.into_inner());
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

/// What the ingest server serves and how.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Address to listen on (used by [`serve`] only).
    pub listen: SocketAddr,
    /// Largest accepted request body; larger ones get `413`.
    pub max_body_bytes: usize,
    /// When set, requests must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// When set, requests to a stream whose lag (from the [`LagFn`]) is
    /// above this get `429`.
    pub max_lag: Option<u64>,
    /// The streams that accept events, opened (and created) in the log with
    /// these configurations. Any other stream name gets `404`.
    pub streams: Vec<(String, StreamConfig)>,
    /// When set, [`serve`] speaks HTTPS only, with this certificate and key.
    pub tls: Option<TlsConfig>,
}

impl IngestConfig {
    /// A configuration listening on `listen` with the defaults: 8 MiB
    /// bodies, no token, no lag bound, no streams, plain HTTP.
    pub fn new(listen: SocketAddr) -> IngestConfig {
        IngestConfig {
            listen,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            bearer_token: None,
            max_lag: None,
            streams: Vec::new(),
            tls: None,
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

/// The shared state of the handlers: the open streams and the limits.
pub struct IngestState {
    streams: HashMap<String, Arc<Stream>>,
    max_body_bytes: usize,
    bearer_token: Option<String>,
    max_lag: Option<u64>,
    lag: LagFn,
}

impl std::fmt::Debug for IngestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestState")
            .field("streams", &self.streams.keys().collect::<Vec<_>>())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("max_lag", &self.max_lag)
            .finish_non_exhaustive()
    }
}

impl IngestState {
    /// Opens every configured stream in `log` for writing (blocking file
    /// I/O: recovery of the streams' partitions) and keeps the limits of
    /// `config`. The server is then the streams' one writer: a stream that
    /// another process has open for writing is
    /// [`LogError::Locked`](weir_log::LogError::Locked), naming it.
    pub fn new(config: &IngestConfig, log: &Log, lag: LagFn) -> Result<IngestState, IngestError> {
        let mut streams = HashMap::new();
        for (name, stream_config) in &config.streams {
            if streams.contains_key(name) {
                return Err(IngestError::DuplicateStream(name.clone()));
            }
            let stream = log.stream(name, stream_config.clone())?;
            streams.insert(name.clone(), stream);
        }
        Ok(IngestState {
            streams,
            max_body_bytes: config.max_body_bytes,
            bearer_token: config.bearer_token.clone(),
            max_lag: config.max_lag,
            lag,
        })
    }
}

/// The ingest routes over `state`, for [`axum::serve()`] or tests.
pub fn router(state: Arc<IngestState>) -> Router {
    // The body limit is enforced by the `Bytes` extraction in the handler,
    // after the cheaper checks; this layer tells it the limit.
    let limit = state.max_body_bytes;
    Router::new()
        .route("/v1/streams/{stream}/events", post(ingest))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// [`bind`] then [`IngestServer::serve`]: opens the configured streams,
/// listens on `config.listen` and serves until `shutdown` completes; then
/// stops accepting connections and waits for requests in flight (their
/// appends finish and are answered).
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
    Ok(IngestServer {
        state: Arc::new(state),
        listener,
        tls,
        addr,
    })
}

/// A bound ingest server, made by [`bind`], that serves once
/// [`serve`](IngestServer::serve) is awaited.
pub struct IngestServer {
    state: Arc<IngestState>,
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    addr: SocketAddr,
}

impl std::fmt::Debug for IngestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestServer")
            .field("addr", &self.addr)
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

    /// Whether it speaks HTTPS (else plain HTTP).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes; then stops accepting connections
    /// and waits for requests in flight (their appends finish and are
    /// answered).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), IngestError> {
        let addr = self.addr;
        let streams = self.state.streams.len();
        let app = router(self.state);
        match self.tls {
            None => {
                tracing::info!(%addr, streams, "weir ingest listening (http)");
                axum::serve(self.listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Some(acceptor) => {
                tracing::info!(%addr, streams, "weir ingest listening (https)");
                axum::serve(tls::TlsListener::new(self.listener, acceptor), app)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
        .map_err(IngestError::Serve)
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
}

#[derive(Serialize)]
struct Rejected {
    errors: Vec<RecordError>,
    accepted: usize,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

async fn ingest(
    State(state): State<Arc<IngestState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    if let Some(token) = &state.bearer_token {
        if !authorized(request.headers(), token) {
            let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
    }
    let Some(stream) = state.streams.get(&name).cloned() else {
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
    if let Some(max) = state.max_lag {
        let lag = (state.lag)(&stream);
        if lag > max {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "consumer lag of stream {name:?} is {lag} records, above the bound of {max}"
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
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
    let body = match Bytes::from_request(request, &()).await {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return too_large()
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the body: {}", rejection.body_text()),
            )
        }
    };

    // Validation and the append are CPU work and blocking I/O (fsync).
    let name2 = name.clone();
    let result = tokio::task::spawn_blocking(move || {
        let split = records::split(format, &body);
        if split.records.is_empty() && !split.errors.is_empty()
            || !split.errors.is_empty() && !partial
        {
            return Ok(Err(split.errors));
        }
        let batch: Vec<&[u8]> = split.records.iter().map(|r| r.1).collect();
        let offsets = stream.partition(0).append(&batch)?;
        tracing::debug!(stream = %name2, records = batch.len(), ?offsets, "appended");
        Ok::<_, LogError>(Ok((offsets, batch.len(), split.errors)))
    })
    .await;

    match result {
        Ok(Ok(Ok((offsets, accepted, errors)))) => Json(Accepted {
            stream: &name,
            partition: 0,
            offsets: [offsets.start, offsets.end],
            accepted,
            errors,
        })
        .into_response(),
        Ok(Ok(Err(errors))) => (
            StatusCode::BAD_REQUEST,
            Json(Rejected {
                errors,
                accepted: 0,
            }),
        )
            .into_response(),
        Ok(Err(e @ LogError::BatchTooLarge { .. })) => {
            error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(stream = %name, error = %e, "append failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("append failed: {e}"),
            )
        }
        Err(e) => {
            tracing::error!(stream = %name, error = %e, "append task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "append task failed")
        }
    }
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
