//! What the Kafka tests need beyond weir-test-support: configs, a plain
//! producer, a read_committed reader and the group's committed offsets,
//! all against librdkafka's mock cluster (in-process, loopback only).

#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use weir_config::{Credentials, KafkaDelivery, KafkaSink, KafkaSource};
use weir_test_support::names::unique;
use weir_test_support::rows::row_json;

pub type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// A mock cluster of one broker with `topic` of `partitions` partitions.
pub fn cluster_with_topic(topic: &str, partitions: i32) -> Mock {
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic(topic, partitions, 1)
        .expect("create topic");
    cluster
}

pub fn source_config(brokers: &str, topic: &str, group: &str) -> KafkaSource {
    KafkaSource {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        group_id: group.to_string(),
        properties: Vec::new(),
        credentials: Credentials::default(),
    }
}

pub fn sink_config(
    brokers: &str,
    topic: &str,
    delivery: KafkaDelivery,
    properties: &[(&str, &str)],
) -> KafkaSink {
    KafkaSink {
        brokers: brokers.to_string(),
        topic: topic.to_string(),
        delivery,
        transactional_id: unique("txn"),
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        credentials: Credentials::default(),
    }
}

/// Produces `(partition, payload)` records and waits for their delivery.
pub fn produce(brokers: &str, topic: &str, records: &[(i32, String)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for (partition, payload) in records {
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(*partition)
                    .payload(payload.as_str()),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");
}

/// Every record of `topic` as a read_committed consumer sees it:
/// `(key as big-endian u64, value)` in partition and offset order.
pub fn read_topic(brokers: &str, topic: &str, partitions: i32) -> Vec<(u64, String)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut eof = vec![false; partitions as usize];
    let mut rows: Vec<(i32, i64, u64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while eof.iter().any(|e| !e) {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let key = m.key().expect("record without key");
                let key = u64::from_be_bytes(key.try_into().expect("8-byte key"));
                let value = String::from_utf8(m.payload().unwrap_or_default().to_vec()).unwrap();
                rows.push((m.partition(), m.offset(), key, value));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => eof[p as usize] = true,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    rows.sort();
    rows.into_iter().map(|(_, _, k, v)| (k, v)).collect()
}

/// The committed offsets of `group` on `topic`, `None` where none.
pub fn committed(brokers: &str, topic: &str, group: &str, partitions: i32) -> Vec<Option<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .collect()
}

/// `(id, row_json(id))` for each id, sorted: what a topic should hold.
pub fn expected(ids: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    let mut v: Vec<(u64, String)> = ids.into_iter().map(|id| (id, row_json(id))).collect();
    v.sort();
    v
}

/// Sorts by id: the sink's records spread over partitions.
pub fn by_id(mut rows: Vec<(u64, String)>) -> Vec<(u64, String)> {
    rows.sort();
    rows
}
