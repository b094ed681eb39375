//! fraud-v1 split into 3 tasks over a Kafka topic of 3 partitions, on
//! librdkafka's mock cluster (a broker this test process runs on a
//! loopback port): producers write each transaction to the partition of
//! its card's task, and the workers share the tasks through the source's
//! consumer group under cooperative rebalancing. Workers are killed with
//! SIGKILL (the group notices when the session expires), stopped with
//! SIGTERM (they leave the group at once) and added while transactions
//! flow; the alerts of all tasks equal the reference exactly.

#![cfg(feature = "kafka")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::split::{alerts_of_tasks, signal, worker_logs as logs};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use weir_test_support::fraud::{assert_exact, events, reference};
use weir_test_support::pipelines::{fraud_text, replace_once, FRAUD_FILE_SOURCE};
use weir_test_support::process::Running;

const EVENTS: u64 = 40_000;
const TASKS: u32 = 3;
const KEY_GROUPS: u32 = 128;

fn pipeline_text(brokers: &str) -> String {
    // A shorter session than the default 6 s, so that a killed worker's
    // tasks move sooner; longer than the mock broker's initial rebalance
    // delay (3 s), during which it expects no heartbeat from a joining
    // member but still times its session out.
    let text = replace_once(
        &fraud_text(),
        FRAUD_FILE_SOURCE,
        &format!(
            "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"tx\"\ngroup_id = \"fraud\"\nproperties = {{ \"session.timeout.ms\" = 4000, \"heartbeat.interval.ms\" = 500 }}"
        ),
    );
    let text = replace_once(
        &text,
        "batch_rows = 4096",
        &format!("batch_rows = 256\ntasks = {TASKS}"),
    );
    let text = replace_once(&text, "out/alerts.jsonl", "out/alerts-{task}.jsonl");
    let text = replace_once(
        &text,
        "out/dead_letter.jsonl",
        "out/dead_letter-{task}.jsonl",
    );
    format!("{text}\n[checkpoint]\ndir = \"checkpoints\"\ninterval = \"100ms\"\n")
}

fn worker(dir: &Path, id: &str) -> Running {
    common::split::worker(dir, id, &[])
}

/// Writes the fraud-v1 events, 500 at a time every `pause_ms`, each to
/// its card's task's partition.
fn produce(brokers: String, pause_ms: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for chunk in events(EVENTS).chunks(500) {
            for e in chunk {
                let partition = common::split::partition_of(e, KEY_GROUPS, TASKS) as i32;
                let mut record = BaseRecord::<(), _>::to("tx")
                    .partition(partition)
                    .payload(e);
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        // The local queue is full: let deliveries drain.
                        Err((_, back)) => {
                            producer.poll(Duration::from_millis(10));
                            record = back;
                        }
                    }
                }
            }
            producer.flush(Duration::from_secs(10)).expect("flush");
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
    })
}

/// Waits until every one of `workers` runs a task (the group's first
/// assignment comes after the broker's initial rebalance delay).
fn wait_until_running(dir: &Path, workers: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let running = |id: &str| {
        std::fs::read_to_string(dir.join(format!("{id}.log")))
            .unwrap_or_default()
            .contains("first record processed")
    };
    while !workers.iter().all(|id| running(id)) {
        assert!(
            Instant::now() < deadline,
            "not every worker of {workers:?} got a task:\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_for_alerts(dir: &Path, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while alerts_of_tasks(dir, TASKS).len() < want && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn workers_sharing_tasks_through_a_consumer_group_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("tx", TASKS as i32, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    std::fs::write(dir.join("pipeline.toml"), pipeline_text(&brokers)).expect("pipeline");
    // About 12 s of traffic.
    let producer = produce(brokers, 150);

    let mut w1 = worker(dir, "w1");
    let mut w2 = worker(dir, "w2");
    let mut w3 = worker(dir, "w3");
    wait_until_running(dir, &["w1", "w2", "w3"]);
    w2.kill().expect("kill w2");
    std::thread::sleep(Duration::from_millis(1500));
    let mut w4 = worker(dir, "w4");
    std::thread::sleep(Duration::from_millis(1500));
    // A graceful leave: w1's tasks are revoked (last checkpoint) and move.
    signal(&w1, "-TERM");
    producer.join().expect("producer");

    let expected = reference(EVENTS);
    wait_for_alerts(dir, expected.len());
    signal(&w3, "-TERM");
    signal(&w4, "-TERM");
    for (id, w) in [("w1", &mut w1), ("w3", &mut w3), ("w4", &mut w4)] {
        let status = w.wait().expect("wait");
        assert!(status.success(), "{id} exited with {status}\n{}", logs(dir));
    }
    let got = alerts_of_tasks(dir, TASKS);
    let logs = logs(dir);
    if got != expected {
        eprintln!("{logs}");
    }
    assert_exact(&got, &expected, "alerts of all tasks");
    for t in 0..TASKS {
        let text = std::fs::read_to_string(dir.join(format!("out/dead_letter-{t}.jsonl")))
            .unwrap_or_default();
        assert!(
            text.is_empty(),
            "task {t} dead letters:\n{}",
            &text[..text.len().min(2000)]
        );
    }
    assert!(
        logs.contains("kafka consumer group fraud, cooperative rebalancing"),
        "{logs}"
    );
    for t in 0..TASKS {
        assert!(
            logs.contains(&format!("task {t} (epoch")),
            "task {t} never ran:\n{logs}"
        );
    }
    // Tasks moved: restored from a checkpoint by their next owner.
    assert!(
        logs.contains("(restored checkpoint"),
        "no task moved:\n{logs}"
    );
    eprintln!("{logs}");
}

/// A worker frozen (SIGSTOP) past its session loses its tasks to the
/// other worker, whose assignment comes with a higher group generation
/// that claims the tasks' checkpoint stores; thawed (SIGCONT), the stale
/// owner must not commit anything. The alerts still equal the reference.
#[test]
fn a_frozen_member_is_fenced_when_it_wakes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic("tx", TASKS as i32, 1).expect("topic");
    let brokers = cluster.bootstrap_servers();
    std::fs::write(dir.join("pipeline.toml"), pipeline_text(&brokers)).expect("pipeline");
    // About 16 s of traffic.
    let producer = produce(brokers, 200);

    let mut w1 = worker(dir, "w1");
    let mut w2 = worker(dir, "w2");
    wait_until_running(dir, &["w1", "w2"]);
    signal(&w1, "-STOP");
    // The session expires (4 s), the mock broker notices (within 1 s) and
    // waits up to 3 s for the members to rejoin.
    std::thread::sleep(Duration::from_millis(9000));
    signal(&w1, "-CONT");
    producer.join().expect("producer");

    let expected = reference(EVENTS);
    wait_for_alerts(dir, expected.len());
    signal(&w1, "-TERM");
    signal(&w2, "-TERM");
    let _ = w1.wait();
    let status = w2.wait().expect("wait");
    let logs = logs(dir);
    assert!(status.success(), "w2 exited with {status}\n{logs}");
    let got = alerts_of_tasks(dir, TASKS);
    if got != expected {
        eprintln!("{logs}");
    }
    assert_exact(&got, &expected, "alerts of all tasks");
    assert!(
        logs.contains("(restored checkpoint"),
        "no task moved:\n{logs}"
    );
    // w1 learnt on waking that the group had taken its tasks.
    assert!(
        logs.contains("the consumer group took these tasks from this member"),
        "{logs}"
    );
    eprintln!("{logs}");
}
