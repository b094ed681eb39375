//! Opening against a missing topic or unreachable brokers fails with an
//! error that names them, within a bounded time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use weir_config::KafkaDelivery;
use weir_connect::ConnectError;
use weir_test_support::names::unique;
use weir_test_support::net::free_port;

#[test]
fn a_missing_topic_is_named_by_source_and_sink() {
    let cluster = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    let topic = unique("absent");
    let err = weir_kafka::open_source("s", &source_config(&brokers, &topic, "g"), None, true)
        .err()
        .expect("source on a missing topic must fail");
    let ConnectError::Config(m) = err else {
        panic!("expected a config error, got {err:?}")
    };
    assert_eq!(
        m,
        format!("kafka topic {topic:?} does not exist on brokers {brokers}")
    );

    for delivery in [KafkaDelivery::Transactional, KafkaDelivery::Idempotent] {
        let err = weir_kafka::open_sink(
            "k",
            &sink_config(&brokers, &topic, delivery, &[]),
            true,
            None,
        )
        .err()
        .expect("sink on a missing topic must fail");
        let ConnectError::Config(m) = err else {
            panic!("expected a config error, got {err:?}")
        };
        assert_eq!(
            m,
            format!("kafka topic {topic:?} does not exist on brokers {brokers}")
        );
    }
}

#[test]
fn unreachable_brokers_are_named_within_a_bounded_time() {
    let brokers = format!("127.0.0.1:{}", free_port());
    // Source and sink each wait out the metadata timeout (10 s): in
    // parallel, to keep the test short.
    let sink_brokers = brokers.clone();
    let sink = std::thread::spawn(move || {
        let started = Instant::now();
        let config = sink_config(&sink_brokers, "t", KafkaDelivery::Transactional, &[]);
        let err = weir_kafka::open_sink("k", &config, true, None)
            .err()
            .expect("sink without brokers must fail");
        (started.elapsed(), err)
    });
    let started = Instant::now();
    let err = weir_kafka::open_source("s", &source_config(&brokers, "t", "g"), None, false)
        .err()
        .expect("source without brokers must fail");
    let took = started.elapsed();
    let (sink_took, sink_err) = sink.join().expect("sink thread");
    for (took, err) in [(took, err), (sink_took, sink_err)] {
        assert!(took < Duration::from_secs(15), "took {took:?}");
        let ConnectError::Connect { address, message } = err else {
            panic!("expected a connect error, got {err:?}")
        };
        assert_eq!(address, brokers);
        // librdkafka's own words for the failure.
        assert!(message.contains("Connection refused"), "{message}");
    }
}

#[test]
fn a_corrupt_sink_part_is_a_checkpoint_error() {
    let topic = unique("part");
    let cluster = cluster_with_topic(&topic, 1);
    let config = sink_config(
        &cluster.bootstrap_servers(),
        &topic,
        KafkaDelivery::Transactional,
        &[],
    );
    let err = weir_kafka::open_sink("k", &config, true, Some(&[9, 1, 0]))
        .err()
        .expect("a part with version 9 must be refused");
    let ConnectError::Checkpoint(m) = err else {
        panic!("expected a checkpoint error, got {err:?}")
    };
    assert!(m.contains("version 9, expected 1"), "{m}");
}
