//! The Kafka sink against librdkafka's mock cluster: epochs in
//! transactions, a crash between commit and checkpoint replayed without
//! duplicates, torn commits repaired by re-creating the producer, and the
//! idempotent delivery's flush and failures.
//!
//! The mock cluster does not implement transaction markers: a
//! read_committed consumer sees every produced record, aborted or not.
//! What these tests show is therefore the sink's bookkeeping (each id sent
//! once per committed outcome, read-backs and skips), not the broker's
//! transaction isolation.

mod common;

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use weir_config::KafkaDelivery;
use weir_connect::{ConnectError, ConnectionState, SinkConnector};
use weir_test_support::names::unique;
use weir_test_support::rows::Rows;

const PARTITIONS: i32 = 3;

fn epoch_ids(epoch: u64) -> std::ops::RangeInclusive<u64> {
    // Ids spread over the id space, as engine ids (partition << 40 | offset) do.
    (epoch * 10 + 1)..=(epoch * 10 + 10)
}

fn write_epoch(sink: &mut dyn SinkConnector, epoch: u64) {
    let ids: Vec<u64> = epoch_ids(epoch).collect();
    // Two batches per epoch.
    let (a, b) = ids.split_at(4);
    sink.write(epoch, &Rows::new(a.iter().copied()).output())
        .expect("write");
    sink.write(epoch, &Rows::new(b.iter().copied()).output())
        .expect("write");
}

fn all_ids(epochs: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    epochs.flat_map(epoch_ids).collect()
}

#[test]
fn a_crash_between_commit_and_checkpoint_is_replayed_without_duplicates() {
    let topic = unique("sink");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Transactional, &[]);

    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    assert_eq!(sink.status().state(), ConnectionState::Connected);
    let mut parts = Vec::new();
    for epoch in 1..=3 {
        write_epoch(sink.as_mut(), epoch);
        parts.push(sink.prepare(epoch).expect("prepare"));
        if epoch < 3 {
            sink.commit(epoch).expect("commit");
        }
    }
    // Each part: version 1, partition count, offsets.
    assert_eq!(parts[0][..2], [1, PARTITIONS as u8]);
    // The crash: checkpoint 3 never became durable.
    drop(sink);
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(all_ids(1..=3))
    );

    // Restart from checkpoint 2: epoch 3 is replayed, then the run goes on.
    let mut sink = weir_kafka::open_sink("out", &config, true, Some(&parts[1])).expect("reopen");
    write_epoch(sink.as_mut(), 3);
    sink.prepare(3).expect("prepare");
    sink.commit(3).expect("commit");
    write_epoch(sink.as_mut(), 4);
    sink.prepare(4).expect("prepare");
    sink.commit(4).expect("commit");
    sink.finish().expect("finish");
    assert_eq!(sink.status().state(), ConnectionState::Closed);
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(all_ids(1..=4))
    );
}

#[test]
fn a_crash_before_the_first_checkpoint_is_replayed_without_duplicates() {
    let topic = unique("sink-first");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Transactional, &[]);

    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    write_epoch(sink.as_mut(), 1);
    sink.prepare(1).expect("prepare");
    drop(sink);

    // No checkpoint: the engine replays from the start.
    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("reopen");
    write_epoch(sink.as_mut(), 1);
    sink.prepare(1).expect("prepare");
    write_epoch(sink.as_mut(), 2);
    sink.prepare(2).expect("prepare");
    sink.finish().expect("finish");
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(all_ids(1..=2))
    );
}

#[test]
fn without_checkpoints_each_batch_is_committed() {
    let topic = unique("sink-nockpt");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Transactional, &[]);
    let mut sink = weir_kafka::open_sink("out", &config, false, None).expect("open");
    sink.write(0, &Rows::new(1..=5).output()).expect("write");
    // Visible before finish: the batch was its own transaction.
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(1..=5)
    );
    sink.write(0, &Rows::new(6..=9).output()).expect("write");
    sink.finish().expect("finish");
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(1..=9)
    );
}

/// Runs epochs 1..=3 with `errors` injected on EndTxn before epoch 2's
/// commit; returns the sink's reconnect count (producer re-creations).
fn commit_with_endtxn_errors(errors: &[RDKafkaRespErr], properties: &[(&str, &str)]) -> u64 {
    let topic = unique("sink-torn");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Transactional, properties);
    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    write_epoch(sink.as_mut(), 1);
    sink.prepare(1).expect("prepare 1");
    write_epoch(sink.as_mut(), 2);
    cluster.request_errors(RDKafkaApiKey::EndTxn, errors);
    sink.prepare(2)
        .expect("prepare 2 settles its failed commit");
    cluster.clear_request_errors(RDKafkaApiKey::EndTxn);
    write_epoch(sink.as_mut(), 3);
    sink.prepare(3).expect("prepare 3");
    sink.finish().expect("finish");
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(all_ids(1..=3))
    );
    sink.status().reconnects()
}

#[test]
fn a_commit_timing_out_recreates_the_producer_and_sends_each_id_once() {
    // Retried inside librdkafka until the commit's time (the transaction
    // timeout) runs out: the outcome is unknown.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR__TIMED_OUT; 40];
    let recreated = commit_with_endtxn_errors(&errors, &[("transaction.timeout.ms", "2000")]);
    assert_eq!(recreated, 1);
}

#[test]
fn a_retriable_commit_failure_recreates_the_producer_and_sends_each_id_once() {
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS; 40];
    let recreated = commit_with_endtxn_errors(&errors, &[("transaction.timeout.ms", "2000")]);
    assert_eq!(recreated, 1);
}

#[test]
fn an_abortable_commit_failure_aborts_without_recreating() {
    // The broker's own "request timed out" is, for librdkafka, an abortable
    // failure: abort, read back, re-send what is missing.
    let errors = [RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT];
    let recreated = commit_with_endtxn_errors(&errors, &[]);
    assert_eq!(recreated, 0);
}

#[test]
fn a_fenced_producer_is_a_final_error() {
    let topic = unique("sink-fenced");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Transactional, &[]);
    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    write_epoch(sink.as_mut(), 1);
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let err = sink
        .prepare(1)
        .expect_err("a fenced producer cannot commit");
    let ConnectError::Broker { address, message } = err else {
        panic!("expected a broker error, got {err:?}")
    };
    assert_eq!(address, brokers);
    assert!(
        message.contains("epoch 1") && message.contains("fatal"),
        "{message}"
    );
    assert!(message.contains(&config.transactional_id), "{message}");
}

#[test]
fn idempotent_delivery_survives_retriable_produce_errors() {
    let topic = unique("sink-idem");
    let cluster = cluster_with_topic(&topic, PARTITIONS);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Idempotent, &[]);
    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3],
    );
    write_epoch(sink.as_mut(), 1);
    assert_eq!(sink.prepare(1).expect("prepare"), Vec::<u8>::new());
    write_epoch(sink.as_mut(), 2);
    sink.finish().expect("finish");
    assert_eq!(
        by_id(read_topic(&brokers, &topic, PARTITIONS)),
        expected(all_ids(1..=2))
    );
}

#[test]
fn idempotent_delivery_fails_on_a_permanent_produce_error() {
    let topic = unique("sink-idem-fail");
    let cluster = cluster_with_topic(&topic, 1);
    let brokers = cluster.bootstrap_servers();
    let config = sink_config(&brokers, &topic, KafkaDelivery::Idempotent, &[]);
    let mut sink = weir_kafka::open_sink("out", &config, true, None).expect("open");
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    sink.write(1, &Rows::new(1..=3).output()).expect("write");
    let err = sink
        .prepare(1)
        .expect_err("an undelivered record fails the barrier");
    let ConnectError::Broker { message, .. } = err else {
        panic!("expected a broker error, got {err:?}")
    };
    assert!(
        message.contains("3 records")
            && message.contains("not delivered")
            && message.contains("too large"),
        "{message}"
    );
}
