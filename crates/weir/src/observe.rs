//! The HTTP endpoint of a running pipeline (`weir run --metrics-address`):
//! `/metrics` for Prometheus, `/healthz` and `/readyz` for Kubernetes
//! probes, and `/tap/{step}` for sampling the records passing a step.
//!
//! It runs on a small runtime of its own, so a slow scrape never holds up
//! the pipeline's threads and the pipeline's load never starves a probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use weir_engine::telemetry::Telemetry;

/// Records per second a tap sends unless asked otherwise, and at most.
const TAP_DEFAULT_RATE: u32 = 10;
const TAP_MAX_RATE: u32 = 1000;

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

/// Binds `addr` at once (so a taken port is an error before the pipeline
/// starts) and serves `telemetry` on a thread of its own.
pub fn serve(addr: &str, telemetry: Telemetry) -> anyhow::Result<Endpoint> {
    let listener = std::net::TcpListener::bind(addr)
        .with_context(|| format!("--metrics-address {addr}: cannot listen"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("weir-http")
        .enable_all()
        .build()
        .context("cannot start the metrics endpoint's runtime")?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(Arc::new(telemetry));
    let thread = std::thread::Builder::new()
        .name("weir-http".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "metrics endpoint cannot listen");
                        return;
                    }
                };
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "metrics endpoint failed");
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

/// The endpoint's routes over `telemetry`.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/tap/{step}", get(tap))
        .with_state(telemetry)
}

async fn metrics(State(t): State<Arc<Telemetry>>) -> Response {
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

async fn readyz(State(t): State<Arc<Telemetry>>) -> Response {
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
    State(t): State<Arc<Telemetry>>,
    Path(step): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let (rate, limit) = match tap_query(query.as_deref()) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Some(samples) = t.taps.subscribe(&step, rate) else {
        let body = format!(
            "unknown step {step:?}; steps: {}\n",
            t.taps.steps().join(", ")
        );
        return (StatusCode::NOT_FOUND, body).into_response();
    };
    // The pipeline's threads never wait for the client: the sampler drops
    // what its queue cannot hold. A thread moves samples from that queue
    // to the response and ends when the client goes or the limit is met.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let spawned = std::thread::Builder::new()
        .name("weir-tap".into())
        .spawn(move || {
            let mut sent = 0u64;
            while limit.is_none_or(|l| sent < l) {
                match samples.recv_timeout(Duration::from_millis(250)) {
                    Ok(mut line) => {
                        line.push('\n');
                        if tx.blocking_send(Bytes::from(line)).is_err() {
                            return;
                        }
                        sent += 1;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) if tx.is_closed() => return,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                }
            }
        });
    if let Err(e) = spawned {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response();
    }
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx)
            .map(|b| b.map(Ok::<Bytes, std::convert::Infallible>))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::tap_query;

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
}
