//! The blocking HTTP/1.1 client of `weir top`, `weir tap` and `weir chaos`.
//!
//! All three talk plain HTTP to a weir process: the endpoint of `weir run
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    /// Serves each of `responses` (as pieces written with a pause between
    /// them) to one connection, in order; returns the address and the
    /// requests received (their heads).
    pub(crate) fn serve(responses: Vec<Vec<Vec<u8>>>) -> (String, thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            let mut requests = Vec::new();
            for pieces in responses {
                let (mut conn, _) = listener.accept().unwrap();
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                requests.push(String::from_utf8_lossy(&request).into_owned());
                for piece in pieces {
                    if conn.write_all(&piece).is_err() {
                        break;
                    }
                    let _ = conn.flush();
                    thread::sleep(Duration::from_millis(15));
                }
            }
            requests
        });
        (addr, handle)
    }

    fn pieces(parts: &[&[u8]]) -> Vec<Vec<u8>> {
        parts.iter().map(|p| p.to_vec()).collect()
    }

    #[test]
    fn endpoint_parsing() {
        for ok in [
            "127.0.0.1:9464",
            "http://127.0.0.1:9464",
            "HTTP://127.0.0.1:9464/",
            " 127.0.0.1:9464 ",
        ] {
            assert_eq!(Endpoint::parse(ok).unwrap().authority(), "127.0.0.1:9464");
        }
        assert_eq!(
            Endpoint::parse("http://[::1]:80").unwrap().authority(),
            "[::1]:80"
        );
        assert_eq!(
            Endpoint::parse("localhost:9464").unwrap().url("/metrics"),
            "http://localhost:9464/metrics"
        );
        for bad in [
            "",
            "localhost",
            "http://localhost",
            ":9464",
            "https://a:1",
            "a:1/metrics",
            "a:port",
            "a:70000",
            "::1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad:?} accepted");
        }
        let e = Endpoint::parse("https://127.0.0.1:9464").unwrap_err();
        assert!(format!("{e}").contains("https is not supported"), "{e}");
    }

    #[test]
    fn get_over_tcp_content_length_chunked_close_and_errors() {
        let (addr, server) = serve(vec![
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world"]),
            pieces(&[
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-",
                b"Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6\r\n world\r",
                b"\n0\r\n\r\n",
            ]),
            pieces(&[b"HTTP/1.0 200 OK\r\n\r\nuntil ", b"the end"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\nshort"]),
            pieces(&[b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n12345"]),
            pieces(&[b"HTTP/1.1 404 Gone Fishing\r\nContent-Length: 4\r\n\r\nnope"]),
        ]);
        let ep = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let t = Duration::from_secs(5);

        let r = get(&ep, "/metrics", t, 1 << 20).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (200, "OK"));
        assert_eq!(r.body, b"hello world");

        let mut r = get_streaming(&ep, "/tap/x?rate=5", t, None).unwrap();
        assert_eq!(r.status, 200);
        let mut parts = Vec::new();
        while let Some(b) = r.body.next_bytes().unwrap() {
            parts.push(b);
        }
        assert_eq!(parts.concat(), b"hello world");
        assert!(parts.len() >= 2, "streamed as it arrived: {parts:?}");

        let r = get(&ep, "/", t, 1 << 20).unwrap();
        assert_eq!(r.body, b"until the end");

        let e = get(&ep, "/", t, 1 << 20).unwrap_err();
        assert!(
            format!("{e:#}").contains("end of file before message length reached"),
            "{e:#}"
        );

        let e = get(&ep, "/", t, 3).unwrap_err();
        assert!(format!("{e:#}").contains("over 3 bytes"), "{e:#}");

        let r = get(&ep, "/", t, 1 << 20).unwrap();
        assert_eq!((r.status, r.reason.as_str()), (404, "Gone Fishing"));
        assert_eq!(r.body, b"nope");

        let requests = server.join().unwrap();
        let first = requests[0].to_ascii_lowercase();
        assert!(first.starts_with("get /metrics http/1.1\r\n"), "{first}");
        assert!(first.contains(&format!("\r\nhost: {addr}\r\n")), "{first}");
        assert!(first.contains("\r\nuser-agent: weir\r\n"), "{first}");
        assert!(requests[1].starts_with("GET /tap/x?rate=5 HTTP/1.1\r\n"));
    }

    #[test]
    fn post_sends_the_body_with_its_type() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"{\"a\":1}\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            )
            .unwrap();
            String::from_utf8(request).unwrap()
        });
        let ep = Endpoint::parse(&addr).unwrap();
        let r = post(
            &ep,
            "/v1/streams/s/events",
            "application/x-ndjson",
            &[("Idempotency-Key", "k1")],
            Bytes::from_static(b"{\"a\":1}\n"),
            Duration::from_secs(5),
            1024,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /v1/streams/s/events http/1.1\r\n"));
        assert!(request.contains("\r\ncontent-type: application/x-ndjson\r\n"));
        assert!(request.contains("\r\ncontent-length: 8\r\n"));
        assert!(request.contains("\r\nidempotency-key: k1\r\n"));
    }

    #[test]
    fn connection_refused_names_the_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("cannot connect to {addr}")),
            "{text}"
        );
    }

    #[test]
    fn server_closing_without_answer_is_an_error() {
        let (addr, server) = serve(vec![vec![]]);
        let ep = Endpoint::parse(&addr).unwrap();
        let e = get(&ep, "/metrics", Duration::from_secs(2), 1024).unwrap_err();
        assert!(format!("{e:#}").contains("without answering"), "{e:#}");
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ep = Endpoint::parse(&addr).unwrap();
        let started = std::time::Instant::now();
        let e = get(&ep, "/metrics", Duration::from_millis(200), 1024).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = format!("{e:#}");
        assert!(
            text.contains(&format!("GET http://{addr}/metrics"))
                && text.contains("no answer within 0.2 s"),
            "{text}"
        );
        drop(listener);
    }
}
