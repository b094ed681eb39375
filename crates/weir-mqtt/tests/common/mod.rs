//! What the MQTT tests need beyond weir-test-support: a source config on
//! the shared broker, a QoS 1 publisher that waits for every PUBACK and
//! reading a source to its end.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_connect::{Polled, Received, SourceConnector};
use weir_test_support::names::unique;

/// A source config on the shared broker (127.0.0.1:1883).
pub fn source_config(
    topics: &[&str],
    log_dir: &Path,
    dedup_window: usize,
) -> weir_config::MqttSource {
    weir_config::MqttSource {
        host: "127.0.0.1".into(),
        port: 1883,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        qos: 1,
        client_id: unique("src"),
        log_dir: log_dir.to_path_buf(),
        stream: "mqtt_in".into(),
        dedup_window,
        credentials: Default::default(),
    }
}

/// Publishes each `(topic, payload)` with QoS 1 to `port`, in order, and
/// returns once the broker has acknowledged all of them.
pub fn publish(port: u16, messages: &[(&str, &[u8])]) {
    let (client, mut connection) =
        Client::new(MqttOptions::new(unique("pub"), "127.0.0.1", port), 16);
    let owned: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    let publisher = client.clone();
    // Publishing blocks when the request queue is full: do it beside the
    // loop that drives the connection.
    let feeder = std::thread::spawn(move || {
        for (t, p) in owned {
            publisher
                .publish(t, QoS::AtLeastOnce, false, p)
                .expect("queue a publish");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < messages.len() {
        assert!(
            Instant::now() < deadline,
            "only {acked} of {} PUBACKs within 20 s",
            messages.len()
        );
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Err(e)) => panic!("publisher: {e}"),
            _ => {}
        }
    }
    feeder.join().unwrap();
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
}

/// Polls `source` until it ends, returning `(offset, payload)` of every
/// record (all in partition 0).
pub fn read_to_end(source: &mut dyn SourceConnector, limit: Duration) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut out = Received::default();
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no End within {limit:?}; got {} records",
            got.len()
        );
        out.clear();
        match source
            .poll(&mut out, 100, Duration::from_millis(200))
            .expect("poll")
        {
            Polled::Records => {
                for (r, p) in out.iter() {
                    assert_eq!(r.partition, 0);
                    got.push((r.offset, p.to_vec()));
                }
            }
            Polled::Idle => {}
            Polled::End => return got,
        }
    }
}

/// `(offset, payload)` pairs from `first` on.
pub fn numbered(first: u64, payloads: &[&[u8]]) -> Vec<(u64, Vec<u8>)> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (first + i as u64, p.to_vec()))
        .collect()
}
