//! What a client can hold of the server: connections, time, requests in
//! flight and their memory; and how much an answer may say.

mod common;

use std::time::{Duration, Instant};

use common::{http, parse, post_with, read_stream, sample, TestServer, EVENTS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; what arrived, or `None`
/// when it stays open past `limit`.
async fn read_to_close(conn: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, conn.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(raw),
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn slow_request_heads_are_cut_and_connections_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.limits.header_timeout = Duration::from_millis(500);
        c.limits.max_connections = 8;
    })
    .await;
    // 40 clients each send half a request head and stall.
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..40 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /v1/streams/clicks/events HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        conns.push(c);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = s.metrics();
    assert_eq!(sample(&m, "weir_ingest_connections"), Some(8.0), "{m}");
    // Each round of 8 is cut after 0.5 s: five rounds.
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move { read_to_close(&mut c, Duration::from_secs(10)).await })
        })
        .collect();
    for t in tasks {
        let got = t.await.unwrap().expect("closed by the server");
        // hyper closes without an answer, or answers 408.
        assert!(
            got.is_empty() || got.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(2000), "{took:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    // The server still serves.
    let r = http(s.addr, &post_with(EVENTS, &[], b"{}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    s.stop().await;
}

#[tokio::test]
async fn idle_kept_alive_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.limits.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let got = read_to_close(&mut c, Duration::from_secs(5))
        .await
        .expect("the idle connection is closed");
    assert!(got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    s.stop().await;
}

#[tokio::test]
async fn a_body_that_does_not_arrive_gets_408() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.limits.body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"POST /v1/streams/clicks/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nContent-Length: 100\r\n\r\n{\"a\":",
    )
    .await
    .unwrap();
    let got = read_to_close(&mut c, Duration::from_secs(5))
        .await
        .expect("answered and closed");
    let r = parse(&got);
    assert_eq!(r.status, 408);
    assert_eq!(
        r.body,
        r#"{"error":"the body did not arrive within 0.3 s"}"#
    );
    assert!(read_stream(dir.path(), "clicks").is_empty());
    s.stop().await;
}

/// A request whose body is sent up to its last byte, held open.
async fn hold(addr: std::net::SocketAddr, body: &[u8]) -> (TcpStream, u8) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let request = post_with(EVENTS, &[], body);
    c.write_all(&request[..request.len() - 1]).await.unwrap();
    (c, request[request.len() - 1])
}

#[tokio::test]
async fn requests_beyond_the_limits_in_flight_get_503() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.max_body_bytes = 64 * 1024;
        c.limits.max_in_flight = 2;
        c.limits.max_in_flight_bytes = 100 * 1024;
    })
    .await;
    let big: Vec<u8> =
        b"{\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n".repeat(1000);
    assert_eq!(big.len(), 59_000);

    // One big body in flight reserves 58 KiB: a second does not fit.
    let (mut held, last) = hold(s.addr, &big).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = http(s.addr, &post_with(EVENTS, &[], &big)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.body,
        r#"{"error":"the server is at its limit of memory for requests in flight; retry later"}"#
    );
    // A small one does, but then the slots are taken.
    let (mut small, small_last) = hold(s.addr, b"{}\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = http(s.addr, &post_with(EVENTS, &[], b"{}\n")).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"error":"the server is at its limit of requests in flight; retry later"}"#
    );
    let m = s.metrics();
    assert_eq!(sample(&m, "weir_ingest_in_flight_requests"), Some(2.0));
    // Reservations are in KiB: 58 for the big body, 1 for the small one.
    assert_eq!(
        sample(&m, "weir_ingest_in_flight_bytes"),
        Some(59.0 * 1024.0)
    );

    // Once they are done, the same requests go through.
    for (c, last) in [(&mut held, last), (&mut small, small_last)] {
        c.write_all(&[last]).await.unwrap();
        let r = parse(&read_to_close(c, Duration::from_secs(10)).await.unwrap());
        assert_eq!(r.status, 200, "{r:?}");
    }
    let r = http(s.addr, &post_with(EVENTS, &[], &big)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // Many tiny records need more for their index than their bytes: 16
    // bytes each beside the 3 of `{}\n`.
    let tiny = b"{}\n".repeat(20_000);
    let r = http(s.addr, &post_with(EVENTS, &[], &tiny)).await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"error":"the server is at its limit of memory for requests in flight; retry later"}"#
    );
    let m = s.metrics();
    assert_eq!(sample(&m, "weir_ingest_in_flight_requests"), Some(0.0));
    assert_eq!(sample(&m, "weir_ingest_in_flight_bytes"), Some(0.0));
    for (reason, n) in [("in_flight_bytes", 2.0), ("in_flight_requests", 1.0)] {
        assert_eq!(
            sample(
                &m,
                &format!("weir_ingest_overload_rejections_total{{reason=\"{reason}\"}}")
            ),
            Some(n)
        );
    }
    assert_eq!(read_stream(dir.path(), "clicks").len(), 2001);
    s.stop().await;
}

#[tokio::test]
async fn an_error_list_names_the_first_hundred() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).await;
    let body = b"x\n".repeat(200_000);
    let r = http(s.addr, &post_with(EVENTS, &[], &body)).await;
    assert_eq!(r.status, 400);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["errors"].as_array().unwrap().len(), 100);
    assert_eq!(v["errors"][99]["index"], 99);
    assert_eq!(v["error_count"], 200_000);
    assert_eq!(v["accepted"], 0);
    assert!(r.body.len() < 10_000, "{} bytes", r.body.len());
    assert_eq!(
        sample(
            &s.metrics(),
            r#"weir_ingest_records_rejected_total{stream="clicks"}"#
        ),
        Some(200_000.0)
    );
    s.stop().await;
}
