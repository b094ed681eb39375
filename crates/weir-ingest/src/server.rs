//! Accepting connections and serving HTTP/1.1 on them, within limits.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout is off and a
//! client that sends half a request head holds its connection for ever. This
//! loop serves the same router through hyper's HTTP/1.1 connection with a
//! timer: the head of each request, and the wait for the next request on a
//! kept-alive connection, must arrive within the header timeout. At most
//! `max_connections` connections are open (handshakes included); beyond
//! that the loop stops accepting until one closes, and new clients wait in
//! the kernel's backlog. TLS handshakes run in the connection's task with
//! their own timeout.
//!
//! Shutting down stops accepting and closes the port, lets every
//! connection finish the request it is serving (hyper's graceful shutdown:
//! idle connections close at once, busy ones after their answer), and after
//! the drain timeout closes the rest.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::{Limits, TLS_HANDSHAKE_TIMEOUT};

/// Largest buffer hyper keeps per connection for a request head (and reads
/// of the body): request heads must fit in it.
const MAX_BUF_BYTES: usize = 32 * 1024;

/// One listening port and what it serves.
pub(crate) struct Port {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) app: Router,
    /// A permit per open connection, taken before accepting.
    pub(crate) connections: Arc<Semaphore>,
    /// Connections open now.
    pub(crate) open: Arc<AtomicU64>,
}

/// Serves `port` until `shutdown` completes, then calls `stopping` and
/// drains.
pub(crate) async fn run(
    port: Port,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
    stopping: impl FnOnce(),
) {
    let Port {
        listener,
        tls,
        app,
        connections,
        open,
    } = port;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let graceful = GracefulShutdown::new();
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A permit per open connection, taken before accepting.
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            p = connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: give it a moment,
                // as axum does.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let permit = OpenConnection::new(permit, &open);
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        match &tls {
            None => {
                let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), service));
                tasks.spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    drop(permit);
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tasks.spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let conn = http.serve_connection(TokioIo::new(stream), service);
                            if let Err(e) = watcher.watch(conn).await {
                                tracing::debug!(%peer, error = %e, "connection ended with an error");
                            }
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    stopping();
    let open = graceful.count();
    tracing::info!(
        connections = open,
        "stopped accepting; finishing the requests in flight"
    );
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            drain_timeout_s = limits.drain_timeout.as_secs_f64(),
            "connections still open after the drain timeout; closing them"
        );
    }
    tasks.shutdown().await;
}

/// An open connection: its permit, and its count in the gauge.
struct OpenConnection {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicU64>,
}

impl OpenConnection {
    fn new(permit: OwnedSemaphorePermit, open: &Arc<AtomicU64>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            _permit: permit,
            open: open.clone(),
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
