//! The Kafka source against librdkafka's mock cluster: exact positions and
//! payloads, offsets committed to the group only when told, exact resume
//! from a checkpoint, drain, and refused checkpoints.

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_connect::{ConnectError, ConnectionState, Polled, Received, SourceConnector};
use weir_test_support::names::unique;

/// Polls until `End` (bounded), returning `(partition, offset, payload)`
/// sorted by position.
fn drain_all(source: &mut dyn SourceConnector) -> Vec<(u32, u64, String)> {
    let mut got = Vec::new();
    let mut buf = Received::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "source did not end");
        buf.clear();
        let polled = source
            .poll(&mut buf, 5, Duration::from_millis(200))
            .expect("poll");
        assert!(
            buf.len() <= 5,
            "poll returned {} records for max 5",
            buf.len()
        );
        for (r, payload) in buf.iter() {
            got.push((
                r.partition,
                r.offset,
                String::from_utf8(payload.to_vec()).unwrap(),
            ));
        }
        if polled == Polled::End {
            break;
        }
    }
    got.sort();
    got
}

fn messages(per_partition: &[u64]) -> Vec<(i32, String)> {
    let mut v = Vec::new();
    for (p, &n) in per_partition.iter().enumerate() {
        for i in 0..n {
            v.push((p as i32, format!("p{p}-m{i}")));
        }
    }
    v
}

fn positions(from: &[u64], to: &[u64]) -> Vec<(u32, u64, String)> {
    let mut v = Vec::new();
    for p in 0..from.len() {
        for i in from[p]..to[p] {
            v.push((p as u32, i, format!("p{p}-m{i}")));
        }
    }
    v
}

#[test]
fn reads_commits_resumes_and_drains_exactly() {
    let topic = unique("src");
    let group = unique("group");
    let cluster = cluster_with_topic(&topic, 3);
    let brokers = cluster.bootstrap_servers();
    let counts = [4u64, 6, 3];
    produce(&brokers, &topic, &messages(&counts));
    let config = source_config(&brokers, &topic, &group);

    // Everything, with exact positions and payloads.
    let mut source = weir_kafka::open_source("orders", &config, None, true).expect("open");
    assert_eq!(source.partitions(), 3);
    assert_eq!(source.status().state(), ConnectionState::Connected);
    assert_eq!(drain_all(source.as_mut()), positions(&[0, 0, 0], &counts));
    // Ended stays ended.
    let mut buf = Received::default();
    assert_eq!(
        source
            .poll(&mut buf, 10, Duration::from_millis(10))
            .unwrap(),
        Polled::End
    );

    // Nothing is committed to the group until a checkpoint says so.
    assert_eq!(
        committed(&brokers, &topic, &group, 3),
        vec![None, None, None]
    );
    let checkpoint = [2u64, 6, 1];
    let mut commit = source.on_checkpoint();
    commit(&checkpoint);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = committed(&brokers, &topic, &group, 3);
        if now == vec![Some(2), Some(6), Some(1)] {
            break;
        }
        assert!(Instant::now() < deadline, "committed offsets stay {now:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(commit);
    drop(source);

    // From the checkpoint: exactly the rest.
    let mut source =
        weir_kafka::open_source("orders", &config, Some(&checkpoint), true).expect("reopen");
    assert_eq!(drain_all(source.as_mut()), positions(&checkpoint, &counts));
    drop(source);

    // Without a checkpoint: from the group's committed offsets.
    let mut source = weir_kafka::open_source("orders", &config, None, true).expect("reopen");
    assert_eq!(drain_all(source.as_mut()), positions(&checkpoint, &counts));
    drop(source);

    // A checkpoint at the end drains at once.
    let mut source =
        weir_kafka::open_source("orders", &config, Some(&counts), true).expect("reopen");
    assert_eq!(
        source
            .poll(&mut buf, 10, Duration::from_millis(10))
            .unwrap(),
        Polled::End
    );
}

#[test]
fn without_drain_it_idles_then_delivers_new_records() {
    let topic = unique("src-live");
    let cluster = cluster_with_topic(&topic, 2);
    let brokers = cluster.bootstrap_servers();
    let config = source_config(&brokers, &topic, &unique("group"));
    let mut source = weir_kafka::open_source("live", &config, None, false).expect("open");
    let mut buf = Received::default();
    let started = Instant::now();
    assert_eq!(
        source
            .poll(&mut buf, 10, Duration::from_millis(300))
            .unwrap(),
        Polled::Idle
    );
    // It waited (no spinning) but not much past the wait.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    produce(&brokers, &topic, &[(1, "late".to_string())]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "new record not delivered");
        buf.clear();
        match source
            .poll(&mut buf, 10, Duration::from_millis(200))
            .unwrap()
        {
            Polled::Records => break,
            Polled::Idle => {}
            Polled::End => panic!("a source without drain ended"),
        }
    }
    let got: Vec<(u32, u64, Vec<u8>)> = buf
        .iter()
        .map(|(r, p)| (r.partition, r.offset, p.to_vec()))
        .collect();
    assert_eq!(got, vec![(1, 0, b"late".to_vec())]);
}

#[test]
fn a_checkpoint_for_another_partition_count_is_refused() {
    let topic = unique("src-mismatch");
    let cluster = cluster_with_topic(&topic, 3);
    let config = source_config(&cluster.bootstrap_servers(), &topic, &unique("group"));
    let err = weir_kafka::open_source("orders", &config, Some(&[1, 2]), true)
        .err()
        .expect("a 2-offset checkpoint on a 3-partition topic must fail");
    match err {
        ConnectError::Checkpoint(m) => {
            assert!(
                m.contains("2 partitions") && m.contains(&topic) && m.contains("has 3"),
                "{m}"
            )
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn a_lost_broker_is_reported_and_its_return_noticed() {
    let topic = unique("src-down");
    let cluster = cluster_with_topic(&topic, 1);
    let brokers = cluster.bootstrap_servers();
    let config = source_config(&brokers, &topic, &unique("group"));
    let mut source = weir_kafka::open_source("flaky", &config, None, false).expect("open");
    let status = source.status();
    let mut buf = Received::default();
    let wait_for = |source: &mut Box<dyn SourceConnector>, buf: &mut Received, want| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while status.state() != want {
            assert!(
                Instant::now() < deadline,
                "state stays {:?}, want {want:?}",
                status.state()
            );
            let started = Instant::now();
            let polled = source
                .poll(buf, 10, Duration::from_millis(200))
                .expect("poll");
            // While the broker is away, polls wait instead of spinning.
            if polled == Polled::Idle {
                assert!(
                    started.elapsed() >= Duration::from_millis(150),
                    "{:?}",
                    started.elapsed()
                );
            }
        }
    };
    cluster.broker_down(1).expect("broker down");
    wait_for(&mut source, &mut buf, ConnectionState::Reconnecting);
    cluster.broker_up(1).expect("broker up");
    wait_for(&mut source, &mut buf, ConnectionState::Connected);
    assert_eq!(status.reconnects(), 1);
}
