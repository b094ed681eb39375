//! Idempotency keys over HTTP: a retry gets the original answer and
//! appends nothing, across restarts, within the window's size and age.

mod common;

use std::time::Duration;

use common::{http, post_with, read_stream, sample, TestServer, EVENTS};
use weir_ingest::IdempotencyConfig;

const PARTIAL: &str = "/v1/streams/clicks/events?partial=true";

fn records(dir: &std::path::Path) -> Vec<Vec<u8>> {
    read_stream(dir, "clicks")
        .into_iter()
        .map(|r| r.1)
        .collect()
}

#[tokio::test]
async fn a_retry_gets_the_original_answer_and_appends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).await;
    let r = http(s.addr, &post_with(EVENTS, &[], b"{\"seed\":0}\n")).await;
    assert_eq!(r.status, 200, "{r:?}");

    let request = post_with(
        EVENTS,
        &[("Idempotency-Key", "order-17")],
        b"{\"a\":2}\n{\"a\":3}\n",
    );
    let first = http(s.addr, &request).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(
        first.body,
        r#"{"stream":"clicks","partition":0,"offsets":[1,3],"accepted":2}"#
    );
    assert_eq!(first.header("idempotent-replayed"), None);
    for _ in 0..2 {
        let again = http(s.addr, &request).await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(again.body, first.body);
        assert_eq!(again.header("idempotent-replayed"), Some("true"));
    }
    assert_eq!(records(dir.path()).len(), 3, "the retries appended nothing");

    // A partial request replays its errors as well.
    let request = post_with(
        PARTIAL,
        &[("Idempotency-Key", "order-18")],
        b"{\"a\":4}\n[5]\n",
    );
    let first = http(s.addr, &request).await;
    let again = http(s.addr, &request).await;
    assert_eq!(
        first.body,
        r#"{"stream":"clicks","partition":0,"offsets":[3,4],"accepted":1,"errors":[{"index":1,"reason":"expected a JSON object, found an array"}],"error_count":1}"#
    );
    assert_eq!((again.status, again.body), (200, first.body));
    assert_eq!(records(dir.path()).len(), 4);

    // The same key for another body, or for the same body with another
    // `partial`: 422.
    for request in [
        post_with(EVENTS, &[("Idempotency-Key", "order-17")], b"{\"a\":9}\n"),
        post_with(
            PARTIAL,
            &[("Idempotency-Key", "order-17")],
            b"{\"a\":2}\n{\"a\":3}\n",
        ),
    ] {
        let r = http(s.addr, &request).await;
        assert_eq!(r.status, 422, "{r:?}");
        assert_eq!(
            r.body,
            r#"{"error":"this Idempotency-Key was used for a different request (another body, Content-Type or partial)"}"#
        );
    }
    // Keys are 1 to 255 visible characters.
    let long = "k".repeat(256);
    for bad in ["", "a b", long.as_str()] {
        let r = http(
            s.addr,
            &post_with(EVENTS, &[("Idempotency-Key", bad)], b"{}\n"),
        )
        .await;
        assert_eq!(r.status, 400, "{bad:?}: {r:?}");
    }
    assert_eq!(records(dir.path()).len(), 4);
    let m = s.metrics();
    assert_eq!(
        sample(
            &m,
            r#"weir_ingest_idempotent_replays_total{stream="clicks"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&m, r#"weir_ingest_idempotency_keys{stream="clicks"}"#),
        Some(2.0)
    );
    s.stop().await;
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let request = post_with(
        EVENTS,
        &[("Idempotency-Key", "k1")],
        b"{\"a\":1}\n{\"a\":2}\n",
    );
    let s = TestServer::start(dir.path(), |_| {}).await;
    let first = http(s.addr, &request).await;
    assert_eq!(first.status, 200, "{first:?}");
    s.stop().await;

    let s = TestServer::start(dir.path(), |_| {}).await;
    let again = http(s.addr, &request).await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let other = http(
        s.addr,
        &post_with(EVENTS, &[("Idempotency-Key", "k2")], b"{\"a\":3}\n"),
    )
    .await;
    assert_eq!(
        other.body,
        r#"{"stream":"clicks","partition":0,"offsets":[2,3],"accepted":1}"#
    );
    s.stop().await;
    assert_eq!(
        records(dir.path()),
        [&b"{\"a\":1}"[..], b"{\"a\":2}", b"{\"a\":3}"]
    );
}

#[tokio::test]
async fn the_window_keeps_the_newest_keys_and_forgets_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| {
        c.idempotency = IdempotencyConfig {
            keys: 2,
            ttl: Duration::from_secs(3600),
        };
    })
    .await;
    let post = |key: &str| post_with(EVENTS, &[("Idempotency-Key", key)], b"{}\n");
    for key in ["k1", "k2", "k3"] {
        assert_eq!(http(s.addr, &post(key)).await.status, 200);
    }
    // k1 is beyond the window of 2: appended again, at a new offset.
    let r = http(s.addr, &post("k1")).await;
    assert_eq!(r.header("idempotent-replayed"), None);
    assert!(r.body.contains(r#""offsets":[3,4]"#), "{}", r.body);
    let r = http(s.addr, &post("k1")).await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    assert!(r.body.contains(r#""offsets":[3,4]"#), "{}", r.body);
    s.stop().await;

    // A key older than the TTL is forgotten too.
    let s = TestServer::start(dir.path(), |c| {
        c.idempotency = IdempotencyConfig {
            keys: 100,
            ttl: Duration::from_millis(300),
        };
    })
    .await;
    let r = http(s.addr, &post("k1")).await;
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = http(s.addr, &post("k1")).await;
    assert_eq!(r.header("idempotent-replayed"), None);
    assert!(r.body.contains(r#""offsets":[4,5]"#), "{}", r.body);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_append_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |_| {}).await;
    let body: Vec<u8> = (0..2000)
        .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
        .collect();
    let request = post_with(EVENTS, &[("Idempotency-Key", "same")], &body);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (addr, request) = (s.addr, request.clone());
            tokio::spawn(async move { http(addr, &request).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    let ok: Vec<&common::Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let conflicts = replies.iter().filter(|r| r.status == 409).count();
    assert_eq!(ok.len() + conflicts, 16, "{replies:?}");
    assert!(!ok.is_empty());
    for r in &ok {
        assert_eq!(
            r.body,
            r#"{"stream":"clicks","partition":0,"offsets":[0,2000],"accepted":2000}"#
        );
    }
    for r in replies.iter().filter(|r| r.status == 409) {
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert_eq!(records(dir.path()).len(), 2000);
    s.stop().await;
}

#[tokio::test]
async fn a_window_of_zero_ignores_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = TestServer::start(dir.path(), |c| c.idempotency.keys = 0).await;
    let request = post_with(EVENTS, &[("Idempotency-Key", "k")], b"{}\n");
    assert_eq!(http(s.addr, &request).await.status, 200);
    assert_eq!(http(s.addr, &request).await.status, 200);
    assert_eq!(records(dir.path()).len(), 2);
    assert!(!dir.path().join("clicks.idempotency").exists());
    s.stop().await;
}
