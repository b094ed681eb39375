//! HTTPS: loading the certificate and key, and a listener that hands axum
//! connections whose TLS handshake is done.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::{IngestError, TlsConfig, TLS_HANDSHAKE_TIMEOUT};

/// Reads the PEM files of `tls` into an acceptor (blocking file I/O).
pub(crate) fn load(tls: &TlsConfig) -> Result<TlsAcceptor, IngestError> {
    let cert_err = |reason: String| IngestError::Tls {
        what: "certificate file",
        path: tls.cert.clone(),
        reason,
    };
    let key_err = |reason: String| IngestError::Tls {
        what: "key file",
        path: tls.key.clone(),
        reason,
    };

    let cert_pem = std::fs::read(&tls.cert).map_err(|e| cert_err(format!("cannot read: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(format!("invalid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE block in it".into()));
    }

    let key_pem = std::fs::read(&tls.key).map_err(|e| key_err(format!("cannot read: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        match e {
        pem::Error::NoItemsFound => key_err(
            "no private key in it (expected a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)"
                .into(),
        ),
        e => key_err(format!("invalid PEM: {e}")),
    }
    })?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_err(format!("no usable TLS protocol version: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            key_err(match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    format!("is not the key of certificate {}", tls.cert.display())
                }
                e => format!(
                    "cannot be used with certificate {}: {e}",
                    tls.cert.display()
                ),
            })
        })?;
    // axum is built with HTTP/1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

type Accepted = (TlsStream<TcpStream>, SocketAddr);

/// An [`axum::serve::Listener`] yielding connections after their TLS
/// handshake. A task accepts TCP connections and runs each handshake in
/// its own task (with [`TLS_HANDSHAKE_TIMEOUT`]), so a slow or silent
/// client does not hold up others. Dropping the listener (axum does when
/// shutting down) stops accepting and closes the port.
pub(crate) struct TlsListener {
    accepted: mpsc::Receiver<Accepted>,
    addr: SocketAddr,
    acceptor_task: JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> TlsListener {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (tx, accepted) = mpsc::channel(64);
        let acceptor_task = tokio::spawn(accept_loop(listener, acceptor, tx));
        TlsListener {
            accepted,
            addr,
            acceptor_task,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(conn) => conn,
            // Only after the accept task ended, which it does not while the
            // receiver lives; wait for shutdown instead of spinning.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, tx: mpsc::Sender<Accepted>) {
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: give it a moment,
                // as axum does for plain TCP.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server is shutting down.
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}
