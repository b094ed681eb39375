//! A test of the receiver's order "durable, then acknowledged" that needs
//! the crate's internal hook, so it lives here rather than in `tests/`.
//!
//! The hook makes the receiver's append fail exactly as a full disk would
//! (before anything reaches the log). The receiver has then received the
//! publish from a real broker but could not make it durable: it must not
//! acknowledge it. We check that at the broker: a new receiver with the
//! same client id (the same persistent session) gets the message
//! redelivered — a broker redelivers only what was never acknowledged —
//! and, once it is durable and acknowledged, a third session gets nothing.

use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_connect::{ConnectError, Polled, Received};

use crate::source::{self, Hooks};

fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("weir-{what}-{}-{nanos}", std::process::id())
}

/// Publishes `payload` to `topic` with QoS 1 and waits for the PUBACK.
fn publish(topic: &str, payload: &[u8]) {
    let (client, mut connection) =
        Client::new(MqttOptions::new(unique("pub"), "127.0.0.1", 1883), 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .expect("queue the publish");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no PUBACK within 10 s");
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
            Ok(Err(e)) => panic!("publisher: {e}"),
            _ => {}
        }
    }
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
}

#[test]
#[ignore = "integration: needs Mosquitto on 127.0.0.1:1883"]
fn a_message_that_is_not_durable_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("not-durable");
    let config = weir_config::MqttSource {
        host: "127.0.0.1".into(),
        port: 1883,
        topics: vec![topic.clone()],
        qos: 1,
        client_id: unique("src"),
        log_dir: dir.path().to_path_buf(),
        stream: "in".into(),
        dedup_window: 0,
        credentials: Default::default(),
    };
    let wait = Duration::from_millis(100);
    let mut out = Received::default();

    // 1. The append fails: poll reports it, nothing is stored.
    let mut failing = source::open("in", &config, None, false, Hooks { fail_appends: true })
        .expect("open the failing source");
    publish(&topic, b"precious");
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        assert!(
            Instant::now() < deadline,
            "the failed append was not reported"
        );
        match failing.poll(&mut out, 10, wait) {
            Err(e) => break e,
            Ok(Polled::Idle) => {}
            Ok(other) => panic!("unexpected {other:?} with {} records", out.len()),
        }
    };
    match &err {
        ConnectError::Io { context, source } => {
            assert!(
                context.contains("durable in log stream \"in\""),
                "{context}"
            );
            assert!(
                source.to_string().contains("injected: no space left"),
                "{source}"
            );
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    drop(failing);

    // 2. Same session, appends work: the broker redelivers the message,
    //    so it was never acknowledged. It lands at offset 0.
    let mut source =
        source::open("in", &config, None, true, Hooks::default()).expect("reopen the source");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no End; got {got:?}");
        out.clear();
        match source.poll(&mut out, 10, wait).unwrap() {
            Polled::Records => {
                got.extend(out.iter().map(|(r, p)| (r.partition, r.offset, p.to_vec())))
            }
            Polled::Idle => {}
            Polled::End => break,
        }
    }
    assert_eq!(got, vec![(0, 0, b"precious".to_vec())]);
    drop(source);

    // 3. Now it was acknowledged after the fsync: a third session gets no
    //    redelivery, and the stream still holds the one record.
    let mut source = source::open("in", &config, Some(&[1]), true, Hooks::default())
        .expect("reopen the source again");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(Instant::now() < deadline, "no End");
        out.clear();
        match source.poll(&mut out, 10, wait).unwrap() {
            Polled::Records => panic!("redelivered after its acknowledgement: {out:?}"),
            Polled::Idle => {}
            Polled::End => break,
        }
    }
    assert_eq!(source.position(), vec![1]);
}
