//! The ingest endpoint over real HTTP/1.1 on a local socket.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::{parse, stream_config, Reply};
use tokio::net::TcpListener;
use weir_ingest::{router, serve, IngestConfig, IngestState, LagFn};
use weir_log::{Log, Stream, TailReader};
use weir_test_support::net::free_port;

/// Sends one request (`Connection: close`) and reads the whole response,
/// on a blocking thread over a std socket.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let request = build_request(method, path, headers, body);
    tokio::task::spawn_blocking(move || exchange(addr, &request))
        .await
        .unwrap()
}

/// Writes raw request bytes and reads the response (blocking).
fn exchange(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    // A server may answer and close before reading everything (413).
    let _ = conn.write_all(request);
    read_reply(conn)
}

fn build_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"))
    {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    req
}

fn read_reply(mut conn: TcpStream) -> Reply {
    let mut raw = Vec::new();
    // A server may close early (e.g. 413): keep what arrived before a reset.
    let mut buf = [0u8; 8192];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse(&raw)
}

/// A server on 127.0.0.1:0 over a fresh log.
struct Server {
    addr: SocketAddr,
    log: Arc<Log>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The stream as a pipeline reads it (read-only, like another process).
    fn read_all(&self, stream: &str) -> Vec<(u64, Vec<u8>)> {
        common::read_stream(self.log.dir(), stream)
    }

    fn next_offset(&self, stream: &str) -> u64 {
        TailReader::new(self.log.dir(), stream, 0)
            .end_offset()
            .unwrap()
    }

    async fn post(&self, path: &str, content_type: &str, body: &[u8]) -> Reply {
        send(
            self.addr,
            "POST",
            path,
            &[("Content-Type", content_type)],
            body,
        )
        .await
    }
}

async fn start_with(edit: impl FnOnce(&mut IngestConfig), lag: LagFn) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    let mut config = IngestConfig::new("127.0.0.1:0".parse().unwrap());
    config.streams.push(("clicks".into(), stream_config()));
    config.streams.push(("other".into(), stream_config()));
    edit(&mut config);
    let state = Arc::new(IngestState::new(&config, &log, lag).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router(state)).await.unwrap();
    });
    Server {
        addr,
        log,
        _dir: dir,
    }
}

async fn start() -> Server {
    start_with(|_| {}, Arc::new(|_: &Stream| 0)).await
}

const EVENTS: &str = "/v1/streams/clicks/events";
const NDJSON: &str = "application/x-ndjson";

#[tokio::test]
async fn ndjson_is_acknowledged_and_read_back() {
    let s = start().await;
    let body = b"{\"user\":1,\"amount\":2.5}\n{\"user\":2}\r\n\n{\"user\":3,\"tags\":[\"a\"]}\n";
    let r = s.post(EVENTS, NDJSON, body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,3],"accepted":3}"#
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let records = s.read_all("clicks");
    let data: Vec<&[u8]> = records.iter().map(|r| r.1.as_slice()).collect();
    assert_eq!(
        data,
        vec![
            &b"{\"user\":1,\"amount\":2.5}"[..],
            b"{\"user\":2}",
            b"{\"user\":3,\"tags\":[\"a\"]}"
        ]
    );
    assert_eq!(s.next_offset("other"), 0);
}

#[tokio::test]
async fn jsonl_content_type_with_parameters() {
    let s = start().await;
    let r = s
        .post(EVENTS, "application/jsonl; charset=utf-8", b"{\"a\":1}")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,1],"accepted":1}"#
    );
    assert_eq!(s.read_all("clicks")[0].1, b"{\"a\":1}");
}

#[tokio::test]
async fn offsets_are_contiguous_across_requests() {
    let s = start().await;
    let r1 = s.post(EVENTS, NDJSON, b"{\"a\":1}\n{\"a\":2}\n").await;
    assert_eq!(
        r1.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,2],"accepted":2}"#
    );
    let r2 = s
        .post(
            EVENTS,
            "application/json",
            b"[{\"a\":3},{\"a\":4},{\"a\":5}]",
        )
        .await;
    assert_eq!(
        r2.body,
        r#"{"stream":"clicks","partition":0,"offsets":[2,5],"accepted":3}"#
    );
    let offsets: Vec<u64> = s.read_all("clicks").iter().map(|r| r.0).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn json_array_elements_are_appended_as_sent() {
    let s = start().await;
    let body =
        b"[\n  {\"a\": 1, \"b\": {\"c\": [1, 2]}},\n  {\"big\": 12345678901234567890123}\n]\n";
    let r = s.post(EVENTS, "application/json", body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,2],"accepted":2}"#
    );
    let records = s.read_all("clicks");
    assert_eq!(records[0].1, b"{\"a\": 1, \"b\": {\"c\": [1, 2]}}");
    assert_eq!(records[1].1, b"{\"big\": 12345678901234567890123}");
}

#[tokio::test]
async fn delimited_protobuf_is_appended_message_by_message() {
    let s = start().await;
    let messages: Vec<Vec<u8>> = vec![
        vec![0x08, 0x96, 0x01],
        vec![],
        (0..200u32).map(|i| i as u8).collect(),
    ];
    let mut body = Vec::new();
    for m in &messages {
        let mut n = m.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                body.push(b);
                break;
            }
            body.push(b | 0x80);
        }
        body.extend_from_slice(m);
    }
    let r = s.post(EVENTS, "application/x-protobuf", &body).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,3],"accepted":3}"#
    );
    let got: Vec<Vec<u8>> = s.read_all("clicks").into_iter().map(|r| r.1).collect();
    assert_eq!(got, messages);
}

#[tokio::test]
async fn broken_protobuf_framing_is_400() {
    let s = start().await;
    let r = s
        .post(EVENTS, "application/x-protobuf", &[2, 1, 2, 9, 1])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"errors":[{"index":1,"reason":"length prefix at byte 3 says 9 bytes but only 1 remain"}],"error_count":1,"accepted":0}"#
    );
    assert_eq!(s.next_offset("clicks"), 0);
}

#[tokio::test]
async fn invalid_records_reject_the_whole_request() {
    let s = start().await;
    s.post(EVENTS, NDJSON, b"{\"seed\":0}\n").await;
    let r = s
        .post(EVENTS, NDJSON, b"{\"ok\":1}\n[1,2]\n{\"ok\":2}\n\"str\"\n")
        .await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"errors":[{"index":1,"reason":"expected a JSON object, found an array"},{"index":3,"reason":"expected a JSON object, found a string"}],"error_count":2,"accepted":0}"#
    );
    assert_eq!(s.next_offset("clicks"), 1, "nothing appended");

    let r = s.post(EVENTS, NDJSON, b"{\"ok\":1}\n{\"broken\":\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"errors":[{"index":1,"reason":"invalid JSON: EOF while parsing a value at line 1 column 10"}],"error_count":1,"accepted":0}"#
    );

    let r = s.post(EVENTS, "application/json", b"[{},7]").await;
    assert_eq!(
        r.body,
        r#"{"errors":[{"index":1,"reason":"expected a JSON object, found a number"}],"error_count":1,"accepted":0}"#
    );
    let r = s.post(EVENTS, "application/json", b"{\"a\":1}").await;
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .starts_with(r#"{"errors":[{"index":0,"reason":"expected a JSON array of objects"#),
        "{}",
        r.body
    );
    assert_eq!(s.next_offset("clicks"), 1, "nothing appended");
}

#[tokio::test]
async fn partial_appends_the_valid_records() {
    let s = start().await;
    let path = "/v1/streams/clicks/events?partial=true";
    let r = s
        .post(path, NDJSON, b"{\"ok\":1}\n[1,2]\n{\"ok\":2}\nnull\n")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,2],"accepted":2,"errors":[{"index":1,"reason":"expected a JSON object, found an array"},{"index":3,"reason":"expected a JSON object, found null"}],"error_count":2}"#
    );
    let data: Vec<Vec<u8>> = s.read_all("clicks").into_iter().map(|r| r.1).collect();
    assert_eq!(data, vec![b"{\"ok\":1}".to_vec(), b"{\"ok\":2}".to_vec()]);

    // All valid: no errors member.
    let r = s.post(path, NDJSON, b"{\"ok\":3}").await;
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[2,3],"accepted":1}"#
    );
    // Nothing valid: 400 as without partial.
    let r = s.post(path, NDJSON, b"1\n").await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"errors":[{"index":0,"reason":"expected a JSON object, found a number"}],"error_count":1,"accepted":0}"#
    );
    // A broken JSON array keeps the elements before the break.
    let r = s
        .post(path, "application/json", b"[{\"x\":1}, 5, {\"y\":")
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.starts_with(
            r#"{"stream":"clicks","partition":0,"offsets":[3,4],"accepted":1,"errors":[{"index":1,"reason":"expected a JSON object, found a number"},{"index":2,"reason":"invalid JSON, the rest of the body is unreadable: "#
        ),
        "{}",
        r.body
    );
    assert_eq!(s.read_all("clicks")[3].1, b"{\"x\":1}");
    // Bad value for partial.
    let r = s
        .post("/v1/streams/clicks/events?partial=maybe", NDJSON, b"{}")
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body,
        r#"{"error":"partial must be true or false, not \"maybe\""}"#
    );
    assert_eq!(s.next_offset("clicks"), 4);
}

#[tokio::test]
async fn empty_body_accepts_nothing() {
    let s = start().await;
    let r = s.post(EVENTS, NDJSON, b"\n\n").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,0],"accepted":0}"#
    );
    let r = s.post(EVENTS, "application/json", b"[]").await;
    assert_eq!(r.status, 200);
    assert_eq!(s.next_offset("clicks"), 0);
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = start_with(|c| c.max_body_bytes = 1024, Arc::new(|_: &Stream| 0)).await;
    let line = b"{\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}\n";
    let big: Vec<u8> = line.iter().copied().cycle().take(line.len() * 20).collect();
    assert!(big.len() > 1024);
    let r = s.post(EVENTS, NDJSON, &big).await;
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body, r#"{"error":"body larger than 1024 bytes"}"#);

    // Without Content-Length (chunked), the limit applies while reading.
    let mut chunked = Vec::new();
    for piece in big.chunks(100) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut req = format!(
        "POST {EVENTS} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: {NDJSON}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    req.extend_from_slice(&chunked);
    let addr = s.addr;
    let r = tokio::task::spawn_blocking(move || exchange(addr, &req))
        .await
        .unwrap();
    assert_eq!(r.status, 413, "{r:?}");
    assert_eq!(r.body, r#"{"error":"body larger than 1024 bytes"}"#);

    // Exactly at the limit is fine.
    let mut ok = b"{\"pad\":\"".to_vec();
    ok.resize(1024 - 2, b'y');
    ok.extend_from_slice(b"\"}");
    assert_eq!(ok.len(), 1024);
    let r = s.post(EVENTS, NDJSON, &ok).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(s.next_offset("clicks"), 1);
}

#[tokio::test]
async fn lag_above_the_bound_is_429() {
    let lag = Arc::new(AtomicU64::new(500));
    let l2 = lag.clone();
    let lag_fn: LagFn = Arc::new(move |stream: &Stream| {
        if stream.name() == "clicks" {
            l2.load(Ordering::SeqCst)
        } else {
            0
        }
    });
    let s = start_with(|c| c.max_lag = Some(100), lag_fn).await;
    let r = s.post(EVENTS, NDJSON, b"{}").await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.body,
        r#"{"error":"consumer lag of stream \"clicks\" is 500 records, above the bound of 100"}"#
    );
    assert_eq!(s.next_offset("clicks"), 0);
    // Other streams are not held back.
    let r = s.post("/v1/streams/other/events", NDJSON, b"{}").await;
    assert_eq!(r.status, 200);
    // At the bound is fine.
    lag.store(100, Ordering::SeqCst);
    let r = s.post(EVENTS, NDJSON, b"{}").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("retry-after"), None);
}

#[tokio::test]
async fn bearer_token_is_required_when_configured() {
    let s = start_with(
        |c| c.bearer_token = Some("s3cret".into()),
        Arc::new(|_: &Stream| 0),
    )
    .await;
    let expected = r#"{"error":"missing or invalid bearer token"}"#;
    let r = s.post(EVENTS, NDJSON, b"{}").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body, expected);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    for auth in ["Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"] {
        let r = send(
            s.addr,
            "POST",
            EVENTS,
            &[("Content-Type", NDJSON), ("Authorization", auth)],
            b"{}",
        )
        .await;
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(r.body, expected);
    }
    // 401 comes before 404: unknown streams are not revealed.
    let r = s.post("/v1/streams/nope/events", NDJSON, b"{}").await;
    assert_eq!(r.status, 401);
    assert_eq!(s.next_offset("clicks"), 0);
    let r = send(
        s.addr,
        "POST",
        EVENTS,
        &[("Content-Type", NDJSON), ("Authorization", "Bearer s3cret")],
        b"{}",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.body,
        r#"{"stream":"clicks","partition":0,"offsets":[0,1],"accepted":1}"#
    );
}

#[tokio::test]
async fn unknown_stream_is_404() {
    let s = start().await;
    let r = s.post("/v1/streams/nope/events", NDJSON, b"{}").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, r#"{"error":"unknown stream \"nope\""}"#);
    // Not opened in the log either.
    assert!(!s.log.dir().join("nope").exists());
}

#[tokio::test]
async fn other_content_types_are_415() {
    let s = start().await;
    let expected = r#"{"error":"Content-Type must be application/x-ndjson, application/jsonl, application/json or application/x-protobuf"}"#;
    let r = s.post(EVENTS, "text/plain", b"{}").await;
    assert_eq!(r.status, 415);
    assert_eq!(r.body, expected);
    let r = send(s.addr, "POST", EVENTS, &[], b"{}").await;
    assert_eq!(r.status, 415);
    assert_eq!(r.body, expected);
    assert_eq!(s.next_offset("clicks"), 0);
}

#[tokio::test]
async fn other_methods_are_405() {
    let s = start().await;
    let r = send(s.addr, "GET", EVENTS, &[], b"").await;
    assert_eq!(r.status, 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_get_disjoint_offsets() {
    let s = Arc::new(start().await);
    const TASKS: usize = 8;
    const REQUESTS: usize = 20;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let s = s.clone();
        handles.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for i in 0..REQUESTS {
                let n = 1 + (t + i) % 3;
                let body: String = (0..n)
                    .map(|k| format!("{{\"t\":{t},\"i\":{i},\"k\":{k}}}\n"))
                    .collect();
                let r = s.post(EVENTS, NDJSON, body.as_bytes()).await;
                assert_eq!(r.status, 200, "{r:?}");
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let first = v["offsets"][0].as_u64().unwrap();
                let end = v["offsets"][1].as_u64().unwrap();
                assert_eq!(end - first, n as u64);
                assert_eq!(v["accepted"], n);
                got.push((first, end, body));
            }
            got
        }));
    }
    let mut ranges = Vec::new();
    for h in handles {
        ranges.extend(h.await.unwrap());
    }
    ranges.sort();
    let records = s.read_all("clicks");
    let total: u64 = ranges.iter().map(|r| r.1 - r.0).sum();
    assert_eq!(records.len() as u64, total);
    let mut expect = 0;
    let mut seen = HashSet::new();
    for (first, end, body) in &ranges {
        assert_eq!(*first, expect, "ranges are disjoint and leave no gaps");
        expect = *end;
        let lines: Vec<&str> = body.lines().collect();
        for (k, off) in (*first..*end).enumerate() {
            assert_eq!(records[off as usize].0, off);
            assert_eq!(records[off as usize].1, lines[k].as_bytes());
            assert!(seen.insert(lines[k].to_string()));
        }
    }
    assert_eq!(seen.len() as u64, total);
}

#[tokio::test]
async fn serve_binds_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path()).unwrap());
    // Find a free port (serve binds it itself).
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = IngestConfig::new(addr);
    config.streams.push(("clicks".into(), stream_config()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        config,
        log.clone(),
        Arc::new(|_: &Stream| 0),
        async {
            let _ = stopped.await;
        },
    ));
    let mut reply = None;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            reply = Some(
                send(
                    addr,
                    "POST",
                    EVENTS,
                    &[("Content-Type", NDJSON)],
                    b"{\"a\":1}",
                )
                .await,
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let reply = reply.expect("server came up");
    assert_eq!(reply.status, 200, "{reply:?}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    assert_eq!(
        common::read_stream(log.dir(), "clicks"),
        vec![(0, b"{\"a\":1}".to_vec())]
    );
}

#[tokio::test]
async fn duplicate_streams_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let mut config = IngestConfig::new("127.0.0.1:0".parse().unwrap());
    config.streams.push(("a".into(), stream_config()));
    config.streams.push(("a".into(), stream_config()));
    let err = IngestState::new(&config, &log, Arc::new(|_: &Stream| 0)).unwrap_err();
    assert_eq!(err.to_string(), "stream \"a\" is configured twice");
}
