//! The HTTP endpoint of a running pipeline (`weir run --metrics-address`):
//! `/metrics` for Prometheus, `/healthz` and `/readyz` for Kubernetes
//! probes, and `/tap/{step}` for sampling the records passing a step.
//!
//! It runs on a small runtime of its own, so a slow scrape never holds up
//! the pipeline's threads and the pipeline's load never starves a probe.
//!
//! Taps show live records, so they need the endpoint's bearer token
//! (`--endpoint-token-file` or `WEIR_ENDPOINT_TOKEN`, sent as
//! `Authorization: Bearer <token>`, the scheme of `weir ingest`); without
//! a token taps are off. With a token `/metrics` needs it too; the probes
//! never do. What a client can hold is bounded: connections (beyond the
//! limit a new one gets `503` and is closed), taps open at once (`503`
//! beyond), the time to send a request head and to stay idle between
//! requests (hyper's header read timeout), the time a write may wait for
//! a client that does not read, and the bytes buffered per connection.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::future::Future as _;

use anyhow::{bail, Context as _};
use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_engine::telemetry::Telemetry;

/// Records per second a tap sends unless asked otherwise, and at most.
const TAP_DEFAULT_RATE: u32 = 10;
const TAP_MAX_RATE: u32 = 1000;

/// The environment variable holding the endpoint's token, read by `weir
/// run` (unless `--endpoint-token-file` is given) and by its clients `weir
/// tap` and `weir top` (unless `--token-file` is given).
pub const TOKEN_ENV: &str = "WEIR_ENDPOINT_TOKEN";

/// The endpoint's token: the contents of `file` (trimmed; an empty or
/// unreadable file is an error), else `WEIR_ENDPOINT_TOKEN` when set and
/// not empty, else none. Never taken from the command line, where `ps`
/// would show it.
pub fn load_token(file: Option<&Path>) -> anyhow::Result<Option<String>> {
    match file {
        Some(path) => {
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read token file {}", path.display()))?
                .trim()
                .to_string();
            if token.is_empty() {
                bail!("token file {} is empty", path.display());
            }
            Ok(Some(token))
        }
        None => Ok(std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())),
    }
}

/// What the endpoint serves and how much it lets clients hold.
#[derive(Clone)]
pub struct EndpointConfig {
    /// When set, `/metrics` and `/tap` need `Authorization: Bearer
    /// <token>`; when not, `/metrics` is open and taps are off.
    pub token: Option<String>,
    /// Connections served at once; a connection beyond gets `503` and is
    /// closed.
    pub max_connections: usize,
    /// Taps streaming at once; a tap beyond gets `503`.
    pub max_taps: usize,
    /// Longest time to receive a request head, and to wait idle for the
    /// next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// Longest time a write may wait for a client that does not read.
    pub write_timeout: Duration,
    /// A quiet tap sends an empty line this often, so a client that went
    /// away is noticed and proxies keep the stream open.
    pub tap_heartbeat: Duration,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_connections", &self.max_connections)
            .field("max_taps", &self.max_taps)
            .field("header_timeout", &self.header_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("tap_heartbeat", &self.tap_heartbeat)
            .finish()
    }
}

impl EndpointConfig {
    /// The defaults, with `token`.
    pub fn new(token: Option<String>) -> EndpointConfig {
        EndpointConfig {
            token,
            max_connections: 64,
            max_taps: 4,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            tap_heartbeat: Duration::from_secs(15),
        }
    }
}

/// Bytes hyper buffers per connection for reading (a request head larger
/// than this is refused) and, besides queued body chunks, for writing.
const CONNECTION_BUFFER: usize = 16 * 1024;
/// Threads rendering `/metrics` and `/readyz` at most.
const BLOCKING_THREADS: usize = 4;

/// A running endpoint; dropping it stops serving.
pub struct Endpoint {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Endpoint {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The endpoint of `weir run --metrics-address addr`, with the token from
/// `token_file` or the environment; says on standard error what it serves.
pub fn start(
    addr: &str,
    token_file: Option<&Path>,
    telemetry: Telemetry,
) -> anyhow::Result<Endpoint> {
    let token = load_token(token_file)?;
    let guarded = token.is_some();
    let endpoint = serve(addr, telemetry, EndpointConfig::new(token))?;
    let at = endpoint.addr();
    if guarded {
        eprintln!(
            "weir run: serving http://{at}/metrics and /tap/STEP (bearer token required), /healthz, /readyz"
        );
    } else {
        eprintln!(
            "weir run: serving http://{at}/metrics, /healthz, /readyz; /tap/STEP is off without a token (--endpoint-token-file or {TOKEN_ENV})"
        );
        if !at.ip().is_loopback() {
            tracing::warn!(
                address = %at,
                "the metrics endpoint listens beyond loopback without a token: anyone who can reach it reads /metrics"
            );
        }
    }
    Ok(endpoint)
}

/// Binds `addr` at once (so a taken port is an error before the pipeline
/// starts) and serves `telemetry` on a thread of its own.
pub fn serve(addr: &str, telemetry: Telemetry, config: EndpointConfig) -> anyhow::Result<Endpoint> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics-address {addr}: cannot listen"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_name("weir-http")
        .enable_all()
        .build()
        .context("cannot start the metrics endpoint's runtime")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("weir-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_loop(listener, telemetry, config, stopped).await,
                    Err(e) => tracing::error!(error = %e, "metrics endpoint cannot listen"),
                }
            });
            // Open taps hold streaming responses: do not wait for them.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })
        .context("cannot start the metrics endpoint's thread")?;
    Ok(Endpoint {
        addr: local,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Accepts connections until `stopped`, each served by hyper's HTTP/1.1
/// server on a task of its own while the connection limit allows.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    telemetry: Telemetry,
    config: EndpointConfig,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let http = http1(&config);
    let service = TowerToHyperService::new(router(Arc::new(telemetry), &config));
    loop {
        let accepted = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            // The client gave up before it was accepted.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                continue
            }
            // Out of file descriptors, most likely: wait for some to close.
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refuse(&stream, config.max_connections);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = serve_connection(&http, service.clone(), stream, config.write_timeout);
        tokio::spawn(async move {
            // Errors are the client's doing (a timeout, a reset, a bad
            // request, which hyper has answered): nothing to report.
            let _ = connection.await;
            drop(permit);
        });
    }
}

/// hyper's HTTP/1.1 server as the endpoint configures it: the header
/// read timeout (which also closes a kept-alive connection left idle that
/// long) and the per-connection buffer.
fn http1(config: &EndpointConfig) -> hyper::server::conn::http1::Builder {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout)
        .max_buf_size(CONNECTION_BUFFER);
    http
}

type Service = TowerToHyperService<Router>;

/// Serves one connection; a write that waits longer than `write_timeout`
/// for the client to read ends it.
fn serve_connection<IO>(
    http: &hyper::server::conn::http1::Builder,
    service: Service,
    io: IO,
    write_timeout: Duration,
) -> impl std::future::Future<Output = Result<(), hyper::Error>> + Send
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let mut io = tokio_io_timeout::TimeoutStream::new(io);
    io.set_write_timeout(Some(write_timeout));
    http.serve_connection(TokioIo::new(Box::pin(io)), service)
}

/// Answers a connection over the limit with `503` (best effort, without
/// waiting) and closes it.
fn refuse(stream: &tokio::net::TcpStream, max: usize) {
    let body = format!(
        "too many connections: this endpoint serves at most {max} at once; try again later\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

/// What the routes share.
struct EndpointState {
    telemetry: Arc<Telemetry>,
    token: Option<String>,
    taps: Arc<Semaphore>,
    max_taps: usize,
    tap_heartbeat: Duration,
}

/// The endpoint's routes over `telemetry`.
pub fn router(telemetry: Arc<Telemetry>, config: &EndpointConfig) -> Router {
    let state = Arc::new(EndpointState {
        telemetry,
        token: config.token.clone(),
        taps: Arc::new(Semaphore::new(config.max_taps)),
        max_taps: config.max_taps,
        tap_heartbeat: config.tap_heartbeat,
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/tap/{step}", get(tap))
        .with_state(state)
}

/// `401` unless a token is configured and `headers` carry it, or no token
/// is configured and `open_without_token`.
fn check_token(
    state: &EndpointState,
    headers: &HeaderMap,
    open_without_token: bool,
) -> Option<Response> {
    let Some(token) = &state.token else {
        return (!open_without_token).then(|| {
            (
                StatusCode::FORBIDDEN,
                format!(
                    "taps are off: they show live records, so they need a token; start weir run \
                     with --endpoint-token-file FILE or {TOKEN_ENV}\n"
                ),
            )
                .into_response()
        });
    };
    if authorized(headers, token) {
        return None;
    }
    let mut r = (
        StatusCode::UNAUTHORIZED,
        "missing or invalid bearer token\n",
    )
        .into_response();
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(r)
}

/// Whether `headers` carry `Authorization: Bearer <token>`, compared in
/// constant time.
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") & bool::from(given.ct_eq(token.as_bytes()))
}

async fn metrics(State(state): State<Arc<EndpointState>>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_token(&state, &headers, true) {
        return refused;
    }
    let t = state.telemetry.clone();
    // Collectors read files (log sizes, /proc): off the async threads.
    match tokio::task::spawn_blocking(move || t.registry.render()).await {
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

async fn readyz(State(state): State<Arc<EndpointState>>) -> Response {
    let t = state.telemetry.clone();
    match tokio::task::spawn_blocking(move || t.health.readiness()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(why)) => {
            let body: String = why.iter().map(|w| format!("not ready: {w}\n")).collect();
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// `rate` and `limit` from a query string.
fn tap_query(query: Option<&str>) -> Result<(u32, Option<u64>), String> {
    let mut rate = TAP_DEFAULT_RATE;
    let mut limit = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "rate" => {
                rate = v
                    .parse::<u32>()
                    .ok()
                    .filter(|r| (1..=TAP_MAX_RATE).contains(r))
                    .ok_or_else(|| {
                        format!("rate must be 1 to {TAP_MAX_RATE} records a second, not {v:?}")
                    })?
            }
            "limit" => {
                limit = Some(
                    v.parse::<u64>()
                        .ok()
                        .filter(|&l| l > 0)
                        .ok_or_else(|| format!("limit must be a positive count, not {v:?}"))?,
                )
            }
            _ => return Err(format!("unknown parameter {k:?}; use rate and limit")),
        }
    }
    Ok((rate, limit))
}

async fn tap(
    State(state): State<Arc<EndpointState>>,
    UrlPath(step): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_token(&state, &headers, false) {
        return refused;
    }
    let (rate, limit) = match tap_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let taps = &state.telemetry.taps;
    if !taps.steps().contains(&step) {
        let body = format!(
            "unknown step {step:?}; steps: {}\n",
            taps.steps().join(", ")
        );
        return (StatusCode::NOT_FOUND, body).into_response();
    }
    let Ok(permit) = state.taps.clone().try_acquire_owned() else {
        let body = format!(
            "too many taps: this endpoint streams at most {} at once; try again when one ends\n",
            state.max_taps
        );
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, body).into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    };
    let Some(samples) = taps.subscribe(&step, rate) else {
        return (StatusCode::NOT_FOUND, format!("unknown step {step:?}\n")).into_response();
    };
    let stream = tap_stream(samples, limit, state.tap_heartbeat, permit);
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

/// A tap's body: its samples as lines, up to `limit`, with an empty line
/// after each `heartbeat` without one. It holds the tap's `permit`; the
/// pipeline's threads never wait for it (the sampler drops what the queue
/// cannot hold), and it ends when the client goes or the limit is met.
fn tap_stream(
    mut samples: tokio::sync::mpsc::Receiver<String>,
    limit: Option<u64>,
    heartbeat: Duration,
    permit: OwnedSemaphorePermit,
) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
    let mut left = limit;
    let mut quiet = Box::pin(tokio::time::sleep(heartbeat));
    futures_util::stream::poll_fn(move |cx| {
        let _held = &permit;
        if left == Some(0) {
            return std::task::Poll::Ready(None);
        }
        match samples.poll_recv(cx) {
            std::task::Poll::Ready(Some(mut line)) => {
                line.push('\n');
                left = left.map(|l| l - 1);
                quiet
                    .as_mut()
                    .reset(tokio::time::Instant::now() + heartbeat);
                std::task::Poll::Ready(Some(Ok(Bytes::from(line))))
            }
            std::task::Poll::Ready(None) => std::task::Poll::Ready(None),
            std::task::Poll::Pending => match quiet.as_mut().poll(cx) {
                std::task::Poll::Ready(()) => {
                    quiet
                        .as_mut()
                        .reset(tokio::time::Instant::now() + heartbeat);
                    std::task::Poll::Ready(Some(Ok(Bytes::from_static(b"\n"))))
                }
                std::task::Poll::Pending => std::task::Poll::Pending,
            },
        }
    })
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Instant;

    use super::*;

    #[test]
    fn tap_parameters_are_checked() {
        assert_eq!(tap_query(None), Ok((10, None)));
        assert_eq!(tap_query(Some("rate=5&limit=3")), Ok((5, Some(3))));
        assert!(tap_query(Some("rate=0"))
            .unwrap_err()
            .contains("rate must be"));
        assert!(tap_query(Some("rate=5000")).is_err());
        assert!(tap_query(Some("limit=x")).unwrap_err().contains("limit"));
        assert!(tap_query(Some("speed=1"))
            .unwrap_err()
            .contains("unknown parameter"));
    }

    #[test]
    fn defaults() {
        let c = EndpointConfig::new(None);
        assert_eq!(
            (
                c.max_connections,
                c.max_taps,
                c.header_timeout,
                c.write_timeout,
                c.tap_heartbeat
            ),
            (
                64,
                4,
                Duration::from_secs(10),
                Duration::from_secs(30),
                Duration::from_secs(15)
            )
        );
    }

    #[test]
    fn the_token_comes_from_a_file_trimmed_and_an_empty_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  s3cret\n").unwrap();
        assert_eq!(load_token(Some(&file)).unwrap().as_deref(), Some("s3cret"));
        std::fs::write(&file, "\n").unwrap();
        let e = load_token(Some(&file)).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            format!("token file {} is empty", file.display())
        );
        let gone = dir.path().join("gone");
        let e = load_token(Some(&gone)).unwrap_err();
        assert!(
            format!("{e:#}").starts_with(&format!("cannot read token file {}:", gone.display())),
            "{e:#}"
        );
    }

    fn telemetry() -> Telemetry {
        let text = r#"
name = "endpoint-test"

[[sources]]
name = "in"
type = "memory"

[[steps]]
name = "parse"
type = "decode"
input = "in"
format = "json"
fields = [{ name = "id", type = "u64" }]

[[sinks]]
name = "out"
type = "discard"
input = "parse"
"#;
        let p = weir_config::parse(text, Path::new(".")).expect("pipeline");
        Telemetry::new(&p, None)
    }

    fn start(config: EndpointConfig) -> Endpoint {
        serve("127.0.0.1:0", telemetry(), config).expect("endpoint")
    }

    fn config(token: Option<&str>) -> EndpointConfig {
        EndpointConfig::new(token.map(str::to_string))
    }

    fn connect(ep: &Endpoint) -> TcpStream {
        let s = TcpStream::connect(ep.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// A response read to its end: status, head (lower case), body.
    fn request(ep: &Endpoint, path: &str, headers: &str) -> (u16, String, String) {
        let mut s = connect(ep);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
        )
        .unwrap();
        read_response(&mut s)
    }

    /// Reads to the end of the connection, for at most 10 s.
    fn read_response(s: &mut TcpStream) -> (u16, String, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).expect("response") {
                0 => break,
                n => raw.extend_from_slice(&buf[..n]),
            }
            let now = Instant::now();
            assert!(now < deadline, "no end of the response within 10 s");
            s.set_read_timeout(Some(deadline - now)).unwrap();
        }
        let raw = String::from_utf8(raw).expect("UTF-8");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a head");
        let status = head[9..12].parse().expect("status");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    /// Sends a tap request and reads its head (up to the blank line).
    fn open_tap(ep: &Endpoint, path: &str, token: &str) -> (TcpStream, String) {
        let mut s = connect(ep);
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).expect("a head");
            head.push(byte[0]);
        }
        (s, String::from_utf8(head).unwrap().to_ascii_lowercase())
    }

    /// Whether the server closes `s` within `within` (EOF or reset),
    /// discarding what it sends first.
    fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        s.set_read_timeout(Some(within)).unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) if started.elapsed() < within => {}
                Ok(_) => return false,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }

    #[test]
    fn with_a_token_metrics_and_taps_need_it_and_the_probes_do_not() {
        let ep = start(config(Some("s3cret")));
        assert_eq!(request(&ep, "/healthz", "").0, 200);
        // Not ready (nothing runs), but answered.
        assert_eq!(request(&ep, "/readyz", "").0, 503);
        for (path, headers) in [
            ("/metrics", ""),
            ("/metrics", "Authorization: Bearer s3cre\r\n"),
            ("/metrics", "Authorization: Bearer s3cret2\r\n"),
            ("/metrics", "Authorization: Basic s3cret\r\n"),
            ("/metrics", "Authorization: s3cret\r\n"),
            ("/tap/parse", ""),
            ("/tap/parse", "Authorization: Bearer wrong\r\n"),
            ("/tap/nope", ""),
        ] {
            let (status, head, body) = request(&ep, path, headers);
            assert_eq!(
                (status, body.as_str()),
                (401, "missing or invalid bearer token\n"),
                "{path} {headers:?}"
            );
            assert!(head.contains("\r\nwww-authenticate: bearer\r\n"), "{head}");
        }
        let (status, _, body) = request(&ep, "/metrics", "Authorization: bearer s3cret\r\n");
        assert_eq!(status, 200);
        assert!(
            body.contains("weir_ready{pipeline=\"endpoint-test\"} 0"),
            "{body}"
        );
        let (tap, head) = open_tap(&ep, "/tap/parse", "s3cret");
        assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: application/x-ndjson\r\n"),
            "{head}"
        );
        drop(tap);
    }

    #[test]
    fn without_a_token_metrics_are_open_and_taps_off() {
        let ep = start(config(None));
        let (status, _, body) = request(&ep, "/metrics", "");
        assert_eq!(status, 200);
        assert!(body.contains("weir_ready"), "{body}");
        assert_eq!(request(&ep, "/healthz", "").0, 200);
        let (status, _, body) = request(&ep, "/tap/parse", "Authorization: Bearer x\r\n");
        assert_eq!(
            (status, body.as_str()),
            (
                403,
                "taps are off: they show live records, so they need a token; start weir run \
                 with --endpoint-token-file FILE or WEIR_ENDPOINT_TOKEN\n"
            )
        );
    }

    #[test]
    fn taps_beyond_the_cap_are_refused_while_the_others_stream() {
        let ep = start(EndpointConfig {
            max_taps: 2,
            tap_heartbeat: Duration::from_millis(100),
            ..config(Some("t"))
        });
        let (mut first, _) = open_tap(&ep, "/tap/parse?rate=5", "t");
        let (mut second, _) = open_tap(&ep, "/tap/parse", "t");
        let (status, head, body) = request(&ep, "/tap/parse", "Authorization: Bearer t\r\n");
        assert_eq!(
            (status, body.as_str()),
            (
                503,
                "too many taps: this endpoint streams at most 2 at once; try again when one ends\n"
            )
        );
        assert!(head.contains("\r\nretry-after: 5\r\n"), "{head}");
        // Unknown steps and bad parameters are told as such, not as full.
        assert_eq!(
            request(&ep, "/tap/nope", "Authorization: Bearer t\r\n").0,
            404
        );
        assert_eq!(
            request(&ep, "/tap/parse?rate=0", "Authorization: Bearer t\r\n").0,
            400
        );
        // The open taps go on: a quiet step sends a heartbeat, an empty
        // line (chunk `1\r\n\n\r\n`), every 100 ms.
        for tap in [&mut first, &mut second] {
            let mut chunk = [0u8; 12];
            tap.read_exact(&mut chunk).expect("heartbeats");
            assert_eq!(&chunk, b"1\r\n\n\r\n1\r\n\n\r\n");
        }
        // A tap that ends frees its place.
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        let third = loop {
            let (tap, head) = open_tap(&ep, "/tap/parse", "t");
            if head.starts_with("http/1.1 200 ") {
                break tap;
            }
            assert!(Instant::now() < deadline, "no place freed: {head}");
            std::thread::sleep(Duration::from_millis(50));
        };
        drop((second, third));
    }

    #[test]
    fn slow_and_idle_connections_are_closed_and_the_endpoint_keeps_serving() {
        let ep = start(EndpointConfig {
            header_timeout: Duration::from_millis(300),
            ..config(None)
        });
        let started = Instant::now();
        // Ten clients that never finish their request head.
        let mut slow: Vec<TcpStream> = (0..10)
            .map(|_| {
                let mut s = connect(&ep);
                s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                    .unwrap();
                s
            })
            .collect();
        // Meanwhile others are served.
        assert_eq!(request(&ep, "/healthz", "").0, 200);
        for s in &mut slow {
            assert!(
                closed_within(s, Duration::from_secs(5)),
                "a slow head kept open"
            );
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "closed after {took:?}");
        // A kept-alive connection left idle is closed as well.
        let mut idle = connect(&ep);
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = [0u8; 17];
        idle.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK\r\n");
        assert!(
            closed_within(&mut idle, Duration::from_secs(5)),
            "an idle connection kept open"
        );
        assert_eq!(request(&ep, "/healthz", "").0, 200);
    }

    #[test]
    fn a_request_head_over_the_buffer_is_refused() {
        let ep = start(config(None));
        let big = format!("X-Big: {}\r\n", "a".repeat(CONNECTION_BUFFER));
        let (status, _, _) = request(&ep, "/healthz", &big);
        assert_eq!(status, 431);
        assert_eq!(request(&ep, "/healthz", "").0, 200);
    }

    #[test]
    fn connections_beyond_the_limit_are_refused_and_healthz_answers_once_they_go() {
        let ep = start(EndpointConfig {
            max_connections: 4,
            ..config(None)
        });
        let held: Vec<TcpStream> = (0..4).map(|_| connect(&ep)).collect();
        // The server takes them in order: once one beyond is refused, all
        // four are held.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut extra = connect(&ep);
            let mut raw = Vec::new();
            let _ = extra.read_to_end(&mut raw);
            if !raw.is_empty() {
                assert_eq!(
                    String::from_utf8_lossy(&raw),
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     retry-after: 1\r\nconnection: close\r\ncontent-length: 78\r\n\r\n\
                     too many connections: this endpoint serves at most 4 at once; try again later\n"
                );
                break;
            }
            assert!(Instant::now() < deadline, "no connection refused");
        }
        // Many more are refused at once, and none is kept.
        for _ in 0..50 {
            let mut extra = connect(&ep);
            assert!(closed_within(&mut extra, Duration::from_secs(2)));
        }
        drop(held);
        let deadline = Instant::now() + Duration::from_secs(5);
        while request_ok(&ep) != Some(200) {
            assert!(Instant::now() < deadline, "/healthz does not answer");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The status of `/healthz`, or `None` if the connection was refused.
    fn request_ok(ep: &Endpoint) -> Option<u16> {
        let mut s = connect(ep);
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        std::str::from_utf8(raw.get(9..12)?).ok()?.parse().ok()
    }

    /// A client that sends one request and then never reads.
    struct NeverReads {
        request: Option<&'static [u8]>,
    }

    impl tokio::io::AsyncRead for NeverReads {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            match self.request.take() {
                Some(r) => {
                    buf.put_slice(r);
                    Poll::Ready(Ok(()))
                }
                None => Poll::Pending,
            }
        }
    }

    impl tokio::io::AsyncWrite for NeverReads {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Pending
        }
    }

    #[test]
    fn a_client_that_does_not_read_is_cut_after_the_write_timeout() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = config(None);
        let service = TowerToHyperService::new(router(Arc::new(telemetry()), &config));
        let client = NeverReads {
            request: Some(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
        };
        let started = Instant::now();
        let served = runtime.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(10),
                serve_connection(&http1(&config), service, client, Duration::from_millis(200)),
            )
            .await
        });
        let took = started.elapsed();
        let e = served.expect("ended by itself").expect_err("a timeout");
        let io = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .map(std::io::Error::kind);
        assert_eq!(io, Some(std::io::ErrorKind::TimedOut), "{e:?}");
        assert!(took >= Duration::from_millis(200), "after {took:?}");
    }
}
