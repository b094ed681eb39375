//! The blocking HTTP/1.1 client of `weir top`, `weir tap`, `weir chaos`
//! and the scaler (feature `client`).
//!
//! All of them talk plain HTTP to a weir process: the endpoint of `weir run
//! --metrics-address`, or `weir ingest`, with a bearer token where the
//! endpoint has one. The client is
//! hyper's (`hyper::client::conn::http1`) over a tokio TCP stream: hyper is
//! already built for the servers (axum), and its client half costs about a
//! second of compile time (docs/ARCHITECTURE.md has the comparison). Each
//! request runs on a current-thread runtime of its own, owned by the
//! response until its body is read, so the commands stay blocking and a
//! dropped response closes its connection.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::runtime::Runtime;

/// Where the server listens: `host:port`, from `host:port` or
/// `http://host:port[/]`; and the bearer token requests carry, if any.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    authority: String,
    token: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("authority", &self.authority)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl Endpoint {
    /// Parses an address given on the command line.
    pub fn parse(address: &str) -> anyhow::Result<Endpoint> {
        let a = address.trim();
        let has_scheme = |scheme: &str| {
            a.get(..scheme.len())
                .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
        };
        if has_scheme("https://") {
            bail!("address {address:?}: https is not supported (the metrics endpoint speaks plain HTTP)");
        }
        let a = if has_scheme("http://") { &a[7..] } else { a };
        let a = a.strip_suffix('/').unwrap_or(a);
        let port = match a.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && !host.ends_with(':') => port,
            _ => bail!("address {address:?} needs a host and a port, e.g. 127.0.0.1:9464"),
        };
        if a.contains('/') || a.contains('?') || a.contains('#') || a.contains('@') {
            bail!("address {address:?} must be host:port or http://host:port, without a path");
        }
        if port.parse::<u16>().is_err() {
            bail!("address {address:?}: port {port:?} is not a number from 0 to 65535");
        }
        Ok(Endpoint {
            authority: a.to_string(),
            token: None,
        })
    }

    /// The same endpoint, its requests carrying `Authorization: Bearer
    /// <token>` when `token` is set.
    pub fn with_token(self, token: Option<String>) -> Endpoint {
        Endpoint { token, ..self }
    }

    /// `host:port`, as connected to and sent in the `Host` header.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The URL of `path` (which starts with `/`) on this endpoint, for
    /// messages.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.authority, path)
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The reason phrase the server sent, else the status code's usual one.
    pub reason: String,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

/// A response whose body is read as it arrives.
pub struct Streaming {
    pub status: u16,
    pub reason: String,
    pub headers: hyper::HeaderMap,
    pub body: BodyStream,
}

/// GETs `path` and reads the whole body (at most `max_body` bytes).
/// `timeout` bounds the connect, the wait for the head and each read of the
/// body.
pub fn get(
    endpoint: &Endpoint,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> anyhow::Result<Response> {
    whole(endpoint, Method::GET, path, &[], None, timeout, max_body)
}

/// POSTs `body` (of type `content_type`, with more request `headers`) to
/// `path` and reads the whole answer (at most `max_body` bytes); `timeout`
/// as for [`get`].
pub fn post(
    endpoint: &Endpoint,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> anyhow::Result<Response> {
    let body = Some((content_type, body));
    whole(
        endpoint,
        Method::POST,
        path,
        headers,
        body,
        timeout,
        max_body,
    )
}

/// GETs `path` and returns once the head has arrived, with the body to read
/// as it comes. `timeout` bounds the connect and the wait for the head;
/// `body_timeout` each read of the body (`None`: wait for ever, as a tap of
/// a quiet step does).
pub fn get_streaming(
    endpoint: &Endpoint,
    path: &str,
    timeout: Duration,
    body_timeout: Option<Duration>,
) -> anyhow::Result<Streaming> {
    send(
        endpoint,
        Method::GET,
        path,
        &[],
        None,
        timeout,
        body_timeout,
    )
}

/// Sends a request and reads the whole answer.
fn whole(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Bytes)>,
    timeout: Duration,
    max_body: usize,
) -> anyhow::Result<Response> {
    let what = format!("{method} {}", endpoint.url(path));
    let mut r = send(
        endpoint,
        method,
        path,
        headers,
        body,
        timeout,
        Some(timeout),
    )?;
    let body = r
        .body
        .read_all(max_body)
        .with_context(|| format!("{what}: reading the body"))?;
    Ok(Response {
        status: r.status,
        reason: r.reason,
        headers: r.headers,
        body,
    })
}

/// Connects, sends `method path` (with `body` and its content type, if
/// any) and waits for the response head.
fn send(
    endpoint: &Endpoint,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Bytes)>,
    timeout: Duration,
    body_timeout: Option<Duration>,
) -> anyhow::Result<Streaming> {
    let what = format!("{method} {}", endpoint.url(path));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(HOST, endpoint.authority())
        .header(USER_AGENT, "weir");
    if let Some(token) = &endpoint.token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some((content_type, bytes)) => {
            request = request.header(CONTENT_TYPE, content_type);
            bytes
        }
        None => Bytes::new(),
    };
    let request = request
        .body(Full::new(body))
        .with_context(|| format!("{what}: invalid request"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the HTTP client's runtime")?;
    let response = runtime.block_on(async {
        let stream = connect(endpoint, timeout).await?;
        let answer = async {
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            // The connection runs beside the request; its errors come back
            // through the response or the body.
            tokio::spawn(connection);
            sender.send_request(request).await
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_incomplete_message() => Err(anyhow!(
                "the server closed the connection without answering"
            ))
            .with_context(|| what.clone()),
            Ok(Err(e)) => Err(anyhow::Error::new(e).context(what.clone())),
            Err(_) => Err(anyhow!("no answer within {} s", timeout.as_secs_f64()))
                .with_context(|| what.clone()),
        }
    })?;
    let status = response.status();
    let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
        Some(phrase) => String::from_utf8_lossy(phrase.as_bytes()).into_owned(),
        None => status.canonical_reason().unwrap_or_default().to_string(),
    };
    Ok(Streaming {
        status: status.as_u16(),
        reason,
        headers: response.headers().clone(),
        body: BodyStream {
            runtime,
            body: response.into_body(),
            timeout: body_timeout,
        },
    })
}

/// Opens a TCP connection to the first of the endpoint's addresses that
/// accepts within `timeout`.
async fn connect(endpoint: &Endpoint, timeout: Duration) -> anyhow::Result<TcpStream> {
    let authority = endpoint.authority();
    let addrs = tokio::time::timeout(timeout, tokio::net::lookup_host(authority))
        .await
        .map_err(|_| anyhow!("cannot resolve {authority}: timed out"))?
        .with_context(|| format!("cannot resolve {authority}"))?;
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Requests are small and answered at once: no Nagle delay.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(anyhow::Error::new(e)),
            Err(_) => last = Some(anyhow!("no connection within {} s", timeout.as_secs_f64())),
        }
    }
    match last {
        Some(e) => Err(e.context(format!("cannot connect to {authority}"))),
        None => bail!("cannot connect to {authority}: it resolves to no address"),
    }
}

/// The body of a response, read as it arrives.
pub struct BodyStream {
    /// Drives the connection; dropping it closes the connection.
    runtime: Runtime,
    body: Incoming,
    timeout: Option<Duration>,
}

impl BodyStream {
    /// The next body bytes, as soon as some arrive; `None` at the end of
    /// the body. A connection closed before the framing says the body ends
    /// is an error.
    pub fn next_bytes(&mut self) -> anyhow::Result<Option<Bytes>> {
        let (body, timeout) = (&mut self.body, self.timeout);
        self.runtime.block_on(async {
            loop {
                let frame = match timeout {
                    Some(t) => tokio::time::timeout(t, body.frame()).await.map_err(|_| {
                        anyhow!("no data from the server within {} s", t.as_secs_f64())
                    })?,
                    None => body.frame().await,
                };
                match frame {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(anyhow::Error::new(e)),
                    // Trailers and empty chunks carry nothing to hand out.
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) if !data.is_empty() => return Ok(Some(data)),
                        _ => {}
                    },
                }
            }
        })
    }

    /// Reads the rest of the body; more than `max` bytes is an error.
    pub fn read_all(&mut self, max: usize) -> anyhow::Result<Vec<u8>> {
        let mut body = Vec::new();
        while let Some(bytes) = self.next_bytes()? {
            if body.len() + bytes.len() > max {
                bail!("the body is over {max} bytes");
            }
            body.extend_from_slice(&bytes);
        }
        Ok(body)
    }
}
