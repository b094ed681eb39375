//! HTTPS: loading the certificate and key. Handshakes run in each
//! connection's task (`server.rs`).

use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::{IngestError, TlsConfig};

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
