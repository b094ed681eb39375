//! fraud-v1 end to end through Kafka, against librdkafka's mock cluster:
//! events consumed from a topic, alerts produced transactionally to
//! another, under checkpoints. A read_committed consumer must see exactly
//! the reference alerts; a second run finds nothing left; the group's
//! committed offsets show the pipeline's progress.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weir_config::{Credentials, KafkaDelivery, KafkaSink, KafkaSource, SinkKind, SourceKind};
use weir_engine::{run, RunOptions};
use weir_test_support::fraud::{assert_exact, events, parse_alerts, reference};
use weir_test_support::names::unique;
use weir_test_support::pipelines::fraud_with;

const EVENTS: u64 = 20_000;

fn produce(brokers: &str, topic: &str, n: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("producer");
    for e in events(n) {
        let mut record = BaseRecord::<(), [u8]>::to(topic).payload(&e[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    // Queue full: let deliveries drain.
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
            }
        }
    }
    producer.flush(Duration::from_secs(30)).expect("flush");
}

/// Every committed record of partition 0 of `topic`.
fn read_committed(brokers: &str, topic: &str) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&tpl).expect("assign");
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .expect("watermarks");
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let position = consumer
            .position()
            .ok()
            .and_then(|p| p.find_partition(topic, 0).and_then(|e| e.offset().to_raw()))
            .unwrap_or(0);
        if position >= high || Instant::now() > deadline {
            break;
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            if let Some(p) = m.payload() {
                out.push(p.to_vec());
            }
        }
    }
    out
}

fn committed(brokers: &str, group: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    c.find_partition(topic, 0)
        .and_then(|e| e.offset().to_raw())
        .unwrap_or(-1)
}

#[test]
fn fraud_alerts_through_kafka_are_exact() {
    let cluster = MockCluster::new(3).expect("mock cluster");
    let brokers = cluster.bootstrap_servers();
    // One partition: fraud-v1's reference is defined on one ordered stream.
    cluster.create_topic("transactions", 1, 1).expect("topic");
    cluster.create_topic("alerts", 1, 1).expect("topic");
    produce(&brokers, "transactions", EVENTS);

    let dir = tempfile::tempdir().expect("temp dir");
    let source = SourceKind::Kafka(KafkaSource {
        brokers: brokers.clone(),
        topic: "transactions".into(),
        group_id: "fraud-v1".into(),
        properties: Vec::new(),
        credentials: Credentials::default(),
    });
    let sink = SinkKind::Kafka(KafkaSink {
        brokers: brokers.clone(),
        topic: "alerts".into(),
        delivery: KafkaDelivery::Transactional,
        transactional_id: "fraud-v1-alerts".into(),
        properties: Vec::new(),
        credentials: Credentials::default(),
    });
    let p = fraud_with(dir.path(), source, sink, true);
    let drain = || {
        run(
            &p,
            RunOptions {
                drain: true,
                ..Default::default()
            },
        )
        .expect("pipeline runs")
    };
    let summary = drain();
    assert_eq!(summary.source_records, EVENTS);
    let check = |what: &str| {
        let records = read_committed(&brokers, "alerts");
        let (alerts, mut ids) = parse_alerts(records.iter().map(Vec::as_slice));
        assert_exact(&alerts, &reference(EVENTS), what);
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "{what}: ids are unique");
    };
    check("first run");
    // The checkpointed position was committed to the group for visibility.
    assert_eq!(
        committed(&brokers, "fraud-v1", "transactions"),
        EVENTS as i64
    );

    let again = drain();
    assert_eq!(
        again.source_records, 0,
        "second run re-read committed events"
    );
    check("second run");
}
