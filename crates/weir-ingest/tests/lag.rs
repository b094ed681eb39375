//! The lag bound against real committed consumer positions in the log.

mod common;

use std::sync::Arc;

use common::{http, ndjson_post, stream_config, EVENTS};
use weir_ingest::{bind, committed_consumer_lag, IngestConfig};
use weir_log::{FsyncPolicy, Log, StreamConfig};

/// Starts a plain-HTTP server with `max_lag` over a log in `dir`.
async fn start(dir: &std::path::Path, max_lag: u64) -> std::net::SocketAddr {
    let log = Arc::new(Log::open(dir).unwrap());
    let mut config = IngestConfig::new("127.0.0.1:0".parse().unwrap());
    config.streams.push(("clicks".into(), stream_config()));
    config.max_lag = Some(max_lag);
    let server = bind(config, log, committed_consumer_lag()).await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.serve(std::future::pending()));
    addr
}

#[tokio::test]
async fn a_consumer_far_behind_gets_429_and_caught_up_gets_200() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), 5).await;
    // No consumer has committed: no lag, however much is written.
    let ten: Vec<u8> = (0..10)
        .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
        .collect();
    let r = http(addr, &ndjson_post(EVENTS, &ten)).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The pipeline commits as its log source does, without opening the
    // stream (the server is its one writer).
    let commit = |consumer: &str, next: &[u64]| {
        weir_log::commit_consumer_position(dir.path(), "clicks", consumer, next)
    };
    commit("fraud-v1", &[0]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 429, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.body,
        r#"{"error":"consumer lag of stream \"clicks\" is 10 records, above the bound of 5"}"#
    );

    // Within the bound (lag 5 = the bound) is accepted.
    commit("fraud-v1", &[5]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("retry-after"), None);
    assert!(r.body.contains(r#""offsets":[10,11]"#), "{}", r.body);

    // A second, slower consumer decides.
    commit("audit", &[2]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 429, "{r:?}");

    // Caught up: accepted again.
    commit("fraud-v1", &[11]).unwrap();
    commit("audit", &[11]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains(r#""offsets":[11,12]"#), "{}", r.body);
}

#[tokio::test]
async fn unreadable_consumer_positions_do_not_refuse_producers() {
    let dir = tempfile::tempdir().unwrap();
    let addr = start(dir.path(), 0).await;
    let commit = |consumer: &str, next: &[u64]| {
        weir_log::commit_consumer_position(dir.path(), "clicks", consumer, next)
    };
    commit("p", &[0]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 429, "{r:?}");

    // A damaged positions file: the lag counts as 0 (and a warning is
    // logged) instead of every request being refused.
    let file = dir.path().join("clicks").join("consumers").join("p");
    std::fs::write(&file, b"garbage").unwrap();
    // The server's own stream (this process opened it once, as the server
    // does: an `always` stream with a backstop interval) sees the damage.
    let stream = Log::open(dir.path())
        .unwrap()
        .stream(
            "clicks",
            StreamConfig {
                fsync: FsyncPolicy::Interval(std::time::Duration::from_secs(1)),
                ..stream_config()
            },
        )
        .unwrap();
    assert!(stream.consumer_lag().is_err());
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");

    // The consumer's next commit repairs it and the bound holds again.
    commit("p", &[0]).unwrap();
    let r = http(addr, &ndjson_post(EVENTS, b"{}\n")).await;
    assert_eq!(r.status, 429, "{r:?}");
}
