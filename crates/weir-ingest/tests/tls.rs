//! HTTPS ingest with a self-signed certificate made at test time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{https, ndjson_post, stream_config, EVENTS};
use tokio_rustls::rustls::pki_types::CertificateDer;
use weir_ingest::{bind, IngestConfig, IngestError, IngestServer, TlsConfig};
use weir_log::{Log, Stream};

/// A certificate for `localhost` and its key, written as PEM files.
struct Cert {
    der: CertificateDer<'static>,
    tls: TlsConfig,
}

fn make_cert(dir: &Path, name: &str) -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
        tls: TlsConfig { cert, key },
    }
}

fn config(tls: Option<TlsConfig>) -> IngestConfig {
    let mut config = IngestConfig::new("127.0.0.1:0".parse().unwrap());
    config.streams.push(("clicks".into(), stream_config()));
    config.tls = tls;
    config
}

async fn bind_tls(log: &Arc<Log>, tls: TlsConfig) -> Result<IngestServer, IngestError> {
    bind(config(Some(tls)), log.clone(), Arc::new(|_: &Stream| 0)).await
}

#[tokio::test]
async fn https_post_is_acknowledged_and_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let log = Arc::new(Log::open(dir.path().join("log")).unwrap());
    let server = bind_tls(&log, cert.tls.clone()).await.unwrap();
    assert!(server.is_tls());
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    tokio::spawn(server.serve(std::future::pending()));

    let client = common::tls_connector(&cert.der);
    let r = https(
        &client,
        addr,
        &ndjson_post(EVENTS, b"{\"a\":1}\n{\"a\":2}\n{\"a\":3}\n"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,3],"accepted":3}"#
    );
    let r = https(
        &client,
        addr,
        &ndjson_post(EVENTS, b"{\"b\":1}\n{\"b\":2}\n"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""offsets":[3,5]"#), "{}", r.body);

    let records: Vec<Vec<u8>> = common::read_stream(log.dir(), "clicks")
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        records,
        [
            &b"{\"a\":1}"[..],
            b"{\"a\":2}",
            b"{\"a\":3}",
            b"{\"b\":1}",
            b"{\"b\":2}"
        ]
    );
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let log = Arc::new(Log::open(dir.path().join("log")).unwrap());
    let server = bind_tls(&log, cert.tls.clone()).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));

    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let raw = common::exchange_raw(tcp, &ndjson_post(EVENTS, b"{\"a\":1}\n")).await;
    assert!(
        !raw.starts_with(b"HTTP/"),
        "plain HTTP got an HTTP answer: {:?}",
        String::from_utf8_lossy(&raw)
    );
    assert!(common::read_stream(log.dir(), "clicks").is_empty());

    // A client that does not trust the certificate cannot connect either.
    let other = make_cert(dir.path(), "other");
    let untrusting = common::tls_connector(&other.der);
    assert!(https(&untrusting, addr, &ndjson_post(EVENTS, b"{}\n"))
        .await
        .is_err());

    // The server is unharmed and still answers HTTPS.
    let client = common::tls_connector(&cert.der);
    let r = https(&client, addr, &ndjson_post(EVENTS, b"{\"a\":1}\n"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(common::read_stream(log.dir(), "clicks").len(), 1);
}

#[tokio::test]
async fn unusable_certificate_or_key_files_are_reported_by_path() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path().join("log")).unwrap());
    let good = make_cert(dir.path(), "good");
    let other = make_cert(dir.path(), "other");
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let missing = dir.path().join("missing.pem");
    let garbage = write("garbage.pem", "this is not PEM\n");
    let broken = write(
        "broken.key",
        "-----BEGIN PRIVATE KEY-----\nnot base64 !!\n-----END PRIVATE KEY-----\n",
    );
    let bad_der = write(
        "bad-der.key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let cases: Vec<(TlsConfig, &PathBuf, &str)> = vec![
        (
            TlsConfig {
                cert: missing.clone(),
                key: good.tls.key.clone(),
            },
            &missing,
            "cannot read",
        ),
        (
            TlsConfig {
                cert: good.tls.cert.clone(),
                key: missing.clone(),
            },
            &missing,
            "cannot read",
        ),
        (
            TlsConfig {
                cert: garbage.clone(),
                key: good.tls.key.clone(),
            },
            &garbage,
            "no CERTIFICATE block",
        ),
        (
            TlsConfig {
                cert: good.tls.cert.clone(),
                key: garbage.clone(),
            },
            &garbage,
            "no private key",
        ),
        (
            // The key where the certificate belongs: no certificate in it.
            TlsConfig {
                cert: good.tls.key.clone(),
                key: good.tls.key.clone(),
            },
            &good.tls.key,
            "certificate file",
        ),
        (
            TlsConfig {
                cert: good.tls.cert.clone(),
                key: broken.clone(),
            },
            &broken,
            "invalid PEM",
        ),
        (
            TlsConfig {
                cert: good.tls.cert.clone(),
                key: bad_der.clone(),
            },
            &bad_der,
            "cannot be used with certificate",
        ),
        (
            TlsConfig {
                cert: good.tls.cert.clone(),
                key: other.tls.key.clone(),
            },
            &other.tls.key,
            "is not the key of certificate",
        ),
    ];
    for (tls, path, expect) in cases {
        let err = bind_tls(&log, tls.clone()).await.unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(&err, IngestError::Tls { path: p, .. } if p == path),
            "{tls:?}: {err:?}"
        );
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(expect),
            "{tls:?}: {msg}"
        );
    }
}

#[tokio::test]
async fn tls_server_shuts_down_and_frees_the_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = make_cert(dir.path(), "server");
    let log = Arc::new(Log::open(dir.path().join("log")).unwrap());
    let server = bind_tls(&log, cert.tls.clone()).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    let client = common::tls_connector(&cert.der);
    let r = https(&client, addr, &ndjson_post(EVENTS, b"{}\n"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), running)
        .await
        .expect("shut down in time")
        .unwrap()
        .unwrap();
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
