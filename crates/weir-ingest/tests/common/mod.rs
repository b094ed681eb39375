//! A minimal HTTP/1.1 client for the ingest tests: requests written and
//! responses read whole over any async stream (plain TCP or TLS), and
//! parsed.

#![allow(dead_code)]

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use weir_log::{FsyncPolicy, StreamConfig};

pub const EVENTS: &str = "/v1/streams/clicks/events";

pub fn stream_config() -> StreamConfig {
    StreamConfig {
        fsync: FsyncPolicy::Always,
        ..StreamConfig::default()
    }
}

/// Every record of partition 0 of `stream`, read as a pipeline in another
/// process reads it (without opening the stream for writing).
pub fn read_stream(log_dir: &std::path::Path, stream: &str) -> Vec<(u64, Vec<u8>)> {
    let mut reader = weir_log::TailReader::new(log_dir, stream, 0);
    let mut out = Vec::new();
    loop {
        let got = reader.read(out.len() as u64, 10_000).unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend(got);
    }
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The raw bytes of a `POST` of `body` as JSON lines (`Connection: close`).
pub fn ndjson_post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// Writes `request` and reads until the server closes. Returns the raw
/// bytes; a reset or a TLS stream closed without `close_notify` ends the
/// read like a clean close.
pub async fn exchange_raw(
    mut conn: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> Vec<u8> {
    let _ = conn.write_all(request).await;
    let _ = conn.flush().await;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(30), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer within 30 s"),
        }
    }
    raw
}

/// Parses a whole response, its body cut to `Content-Length` or decoded
/// from `Transfer-Encoding: chunked`.
pub fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    } else if let Some((_, len)) = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        body.truncate(len.parse().unwrap());
    }
    Reply {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Decodes a `Transfer-Encoding: chunked` body.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size_str = std::str::from_utf8(&data[..eol]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One request over plain TCP.
pub async fn http(addr: std::net::SocketAddr, request: &[u8]) -> Reply {
    let tcp = TcpStream::connect(addr).await.unwrap();
    parse(&exchange_raw(tcp, request).await)
}

/// A TLS client that trusts exactly `ca` and uses the ring provider.
pub fn tls_connector(ca: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// One request over TLS to `localhost` at `addr`.
pub async fn https(
    connector: &TlsConnector,
    addr: std::net::SocketAddr,
    request: &[u8],
) -> Result<Reply, std::io::Error> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await?;
    Ok(parse(&exchange_raw(tls, request).await))
}

/// The raw bytes of a `POST` of `body` as JSON lines to `path` with extra
/// `headers` (`Connection: close`).
pub fn post_with(path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/x-ndjson\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body);
    req
}

/// The raw bytes of a `GET path` with extra `headers` (`Connection: close`).
pub fn get_with(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A server serving stream `clicks` on 127.0.0.1 until stopped, over a
/// log in `dir`.
pub struct TestServer {
    pub addr: std::net::SocketAddr,
    /// The operators' port, when `metrics_listen` was set.
    pub ops_addr: Option<std::net::SocketAddr>,
    pub state: Arc<weir_ingest::IngestState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), weir_ingest::IngestError>>>,
}

impl TestServer {
    /// Starts a server over the log in `dir` with the defaults changed by
    /// `edit`.
    pub async fn start(
        dir: &std::path::Path,
        edit: impl FnOnce(&mut weir_ingest::IngestConfig),
    ) -> TestServer {
        let log = Arc::new(weir_log::Log::open(dir).unwrap());
        let mut config = weir_ingest::IngestConfig::new("127.0.0.1:0".parse().unwrap());
        config.streams.push(("clicks".into(), stream_config()));
        edit(&mut config);
        let server = weir_ingest::bind(config, log, Arc::new(|_: &weir_log::Stream| 0))
            .await
            .unwrap();
        let addr = server.local_addr();
        let ops_addr = server.metrics_addr();
        let state = server.state();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            ops_addr,
            state,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Asks the server to stop, without waiting.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the server and waits until it has (the log is closed then).
    pub async fn stop(mut self) {
        self.begin_stop();
        let task = self.task.take().unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await
            .expect("the server stops within 30 s")
            .unwrap()
            .unwrap();
    }

    /// Waits for the server to have stopped.
    pub async fn stopped(mut self) -> Result<(), weir_ingest::IngestError> {
        self.task.take().unwrap().await.unwrap()
    }

    /// `/metrics` as the registry renders it.
    pub fn metrics(&self) -> String {
        self.state.registry().render()
    }
}

/// The value of the series `name{labels}` (labels as rendered, e.g.
/// `stream="clicks",code="200"`) in an exposition.
pub fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().unwrap())
    })
}
