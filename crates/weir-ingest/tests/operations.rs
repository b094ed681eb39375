//! What operators see and do: `/metrics`, `/healthz`, `/readyz`, and a
//! graceful stop.

mod common;

use std::time::{Duration, Instant};

use common::{get_with, http, parse, post_with, read_stream, sample, TestServer, EVENTS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_ingest::names;

const TOKEN: (&str, &str) = ("Authorization", "Bearer s3cret");

type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn metrics_need_the_token_and_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| c.bearer_token = Some("s3cret".into())).await;

    let r = http(s.addr, &get_with("/metrics", &[])).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for path in ["/healthz", "/readyz"] {
        let r = http(s.addr, &get_with(path, &[])).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(
            r.body,
            if path == "/healthz" {
                "ok\n"
            } else {
                "ready\n"
            }
        );
    }

    let posts: [(Headers, &str, &[u8], u16); 5] = [
        (&[TOKEN], EVENTS, b"{\"a\":1}\n{\"a\":1}\n{\"a\":1}\n", 200),
        (&[TOKEN], EVENTS, b"{\"b\":22}\n{\"b\":22}\n", 200),
        (&[TOKEN], EVENTS, b"[1]\n", 400),
        (&[], EVENTS, b"{}\n", 401),
        (&[TOKEN], "/v1/streams/nope/events", b"{}\n", 404),
    ];
    for (headers, path, body, status) in posts {
        let r = http(s.addr, &post_with(path, headers, body)).await;
        assert_eq!(r.status, status, "{r:?}");
    }

    let r = http(s.addr, &get_with("/metrics", &[TOKEN])).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let m = r.body;
    let expect = [
        (
            r#"weir_ingest_requests_total{stream="clicks",code="200"}"#,
            2.0,
        ),
        (
            r#"weir_ingest_requests_total{stream="clicks",code="400"}"#,
            1.0,
        ),
        (
            r#"weir_ingest_requests_total{stream="clicks",code="401"}"#,
            1.0,
        ),
        (
            r#"weir_ingest_requests_total{stream="clicks",code="503"}"#,
            0.0,
        ),
        (r#"weir_ingest_requests_total{stream="-",code="404"}"#, 1.0),
        (
            r#"weir_ingest_request_duration_seconds_count{stream="clicks"}"#,
            4.0,
        ),
        // 24 + 18 + 4 bytes of bodies read (the 401 and 404 were not).
        (r#"weir_ingest_received_bytes_total{stream="clicks"}"#, 46.0),
        (
            r#"weir_ingest_records_appended_total{stream="clicks"}"#,
            5.0,
        ),
        (
            r#"weir_ingest_records_rejected_total{stream="clicks"}"#,
            1.0,
        ),
        (
            r#"weir_ingest_append_duration_seconds_count{stream="clicks"}"#,
            2.0,
        ),
        (
            r#"weir_ingest_fsync_duration_seconds_count{stream="clicks"}"#,
            2.0,
        ),
        // Two frames: 29 bytes of header each, 4 + length per record.
        (r#"weir_ingest_stream_size_bytes{stream="clicks"}"#, 115.0),
        (r#"weir_ingest_idempotency_keys{stream="clicks"}"#, 0.0),
        ("weir_ingest_in_flight_requests", 0.0),
        ("weir_ingest_in_flight_bytes", 0.0),
        // This scrape's own connection.
        ("weir_ingest_connections", 1.0),
        ("weir_ingest_ready", 1.0),
    ];
    for (series, value) in expect {
        assert_eq!(sample(&m, series), Some(value), "{series} in\n{m}");
    }
    // Every family of the spec is exposed, with its type.
    for (name, kind) in names::FAMILIES {
        assert!(
            m.contains(&format!("# TYPE {name} {kind}\n")),
            "{name} ({kind}) missing from\n{m}"
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn the_operators_port_answers_while_the_events_port_is_full() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.bearer_token = Some("s3cret".into());
        c.limits.max_connections = 2;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let ops = s.ops_addr.expect("an operators' port");
    // Two stalled clients take every connection of the events port.
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(b"POST /v1/streams/clicks/events HTTP/1.1\r\n")
            .await
            .unwrap();
        stalled.push(c);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = http(ops, &get_with("/metrics", &[TOKEN])).await;
    assert_eq!(r.status, 200);
    assert_eq!(sample(&r.body, "weir_ingest_connections"), Some(2.0));
    assert_eq!(http(ops, &get_with("/metrics", &[])).await.status, 401);
    assert_eq!(http(ops, &get_with("/healthz", &[])).await.body, "ok\n");
    assert_eq!(http(ops, &get_with("/readyz", &[])).await.body, "ready\n");
    // Events go to the events port only.
    let r = http(ops, &post_with(EVENTS, &[TOKEN], b"{}\n")).await;
    assert_eq!(r.status, 404);
    drop(stalled);
    s.stop().await;
}

/// A request whose body is sent up to its last byte, held open.
async fn hold(addr: std::net::SocketAddr, body: &[u8]) -> (TcpStream, u8) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let request = post_with(EVENTS, &[], body);
    c.write_all(&request[..request.len() - 1]).await.unwrap();
    (c, request[request.len() - 1])
}

async fn read_all(c: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut raw))
        .await
        .expect("closed within 10 s")
        .ok();
    raw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_requests_in_flight_and_takes_no_new_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path(), |_| {}).await;
    // A kept-alive connection, idle after one request.
    let mut idle = TcpStream::connect(s.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(idle.read(&mut buf).await.unwrap() > 0);
    let (mut held, last) = hold(s.addr, b"{\"a\":1}\n{\"a\":2}\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let stop_at = Instant::now();
    s.begin_stop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.state.readiness(), ["stopping"]);
    assert!(
        TcpStream::connect(s.addr).await.is_err(),
        "the port is closed"
    );
    // The idle connection is closed at once (the header timeout is 10 s).
    assert_eq!(read_all(&mut idle).await, b"");
    assert!(stop_at.elapsed() < Duration::from_secs(2));
    // The request in flight is finished and answered.
    held.write_all(&[last]).await.unwrap();
    let r = parse(&read_all(&mut held).await);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,2],"accepted":2}"#
    );
    let state = s.state.clone();
    s.stopped().await.unwrap();
    assert_eq!(read_stream(dir.path(), "clicks").len(), 2);
    let stats = state.stats();
    assert_eq!(
        (stats.requests, stats.records, stats.unanswered_records),
        (1, 2, 0)
    );
}

#[tokio::test]
async fn a_stop_cuts_requests_that_outlast_the_drain_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = TestServer::start(dir.path(), |c| {
        c.limits.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let (mut held, _) = hold(s.addr, b"{\"a\":1}\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    s.begin_stop();
    s.stopped().await.unwrap();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(read_all(&mut held).await, b"", "closed without an answer");
    assert!(read_stream(dir.path(), "clicks").is_empty());
}
