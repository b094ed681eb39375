//! Binding the ingest server and running it: the streams opened, the
//! ports bound (the address known before the first request), then serving
//! until shutdown, draining the requests in flight and fsyncing.

use super::*;

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
