//! fraud-v1 split into 3 tasks over NATS JetStream: producers publish each
//! transaction to `tx.<task of its card>`, task N reads `tx.N` through its
//! own durable consumer, and the workers share the tasks through leases
//! in a key-value bucket of the same (private, nats-server 2.9) server.
//! Workers are killed with SIGKILL and new ones join while transactions
//! flow; the alerts of all tasks equal the reference exactly.

#![cfg(feature = "nats")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::split::{alerts_of_tasks, signal, worker_logs as logs};
use weir_test_support::brokers::Broker;
use weir_test_support::fraud::{assert_exact, events, reference};
use weir_test_support::pipelines::{fraud_text, replace_once, FRAUD_FILE_SOURCE};
use weir_test_support::process::Running;

const EVENTS: u64 = 40_000;
const TASKS: u32 = 3;
const KEY_GROUPS: u32 = 128;

fn partition_of(event: &[u8]) -> u32 {
    common::split::partition_of(event, KEY_GROUPS, TASKS)
}

fn pipeline_text(port: u16) -> String {
    let text = replace_once(
        &fraud_text(),
        FRAUD_FILE_SOURCE,
        &format!(
            "type = \"nats\"\nurl = \"nats://127.0.0.1:{port}\"\nstream = \"TX\"\nsubject = \"tx.{{task}}\""
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

#[test]
fn workers_sharing_tasks_through_a_nats_bucket_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (_server, rt, js) = start_nats(dir);
    // About 3 s of traffic.
    let producer = produce(&rt, &js, 35);

    let mut w1 = worker(dir, "w1");
    let mut w2 = worker(dir, "w2");
    let mut w3 = worker(dir, "w3");
    std::thread::sleep(Duration::from_millis(1200));
    w2.kill().expect("kill w2");
    std::thread::sleep(Duration::from_millis(700));
    let mut w4 = worker(dir, "w4");
    std::thread::sleep(Duration::from_millis(600));
    w1.kill().expect("kill w1");
    producer.join().expect("producer");

    let expected = reference(EVENTS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts_of_tasks(dir, TASKS).len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(&w3, "-TERM");
    signal(&w4, "-TERM");
    for (id, w) in [("w3", &mut w3), ("w4", &mut w4)] {
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
        logs.contains("leases in NATS bucket weir_tasks_fraud-v1"),
        "{logs}"
    );
    for t in 0..TASKS {
        assert!(
            logs.contains(&format!("task {t} (epoch")),
            "task {t} never ran:\n{logs}"
        );
    }
    // The killed workers' tasks were taken over (restored from a checkpoint).
    assert!(
        logs.contains("(restored checkpoint"),
        "no task moved:\n{logs}"
    );
    eprintln!("{logs}");
}

/// A worker frozen (SIGSTOP) past its leases' time loses its tasks to the
/// other worker, which claims their checkpoint stores with a higher epoch;
/// thawed (SIGCONT), the stale owner must not commit anything: its
/// renewals are refused and its checkpoints fenced. The alerts still equal
/// the reference exactly.
#[test]
fn a_frozen_owner_is_fenced_when_it_wakes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    let (_server, rt, js) = start_nats(dir);
    let producer = produce(&rt, &js, 60);

    let mut w1 = worker(dir, "w1");
    std::thread::sleep(Duration::from_millis(1500));
    let mut w2 = worker(dir, "w2");
    std::thread::sleep(Duration::from_millis(1000));
    signal(&w1, "-STOP");
    std::thread::sleep(Duration::from_millis(3500));
    signal(&w1, "-CONT");
    producer.join().expect("producer");

    let expected = reference(EVENTS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts_of_tasks(dir, TASKS).len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
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
    // w2 took tasks over while w1 was frozen, and w1 learnt it on waking:
    // from its lease renewal, or first from a fenced checkpoint or sink.
    assert!(
        logs.contains("(restored checkpoint"),
        "no task moved:\n{logs}"
    );
    assert!(
        logs.contains("lost the lease of a running task") || logs.contains("is fenced out"),
        "{logs}"
    );
    eprintln!("{logs}");
}

/// A private nats-server storing in `dir/nats`, a runtime for the test's
/// client, and its JetStream context with stream TX; the pipeline written
/// to `dir/pipeline.toml`.
fn start_nats(
    dir: &Path,
) -> (
    Broker,
    tokio::runtime::Runtime,
    async_nats::jetstream::Context,
) {
    std::fs::create_dir_all(dir.join("nats")).expect("nats dir");
    let server = Broker::nats_server(&dir.join("nats"));
    let port = server.port();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let js = setup(&rt, port);
    std::fs::write(dir.join("pipeline.toml"), pipeline_text(port)).expect("pipeline");
    (server, rt, js)
}

/// The JetStream context of the private server on `port`, with stream TX
/// capturing tx.*.
fn setup(rt: &tokio::runtime::Runtime, port: u16) -> async_nats::jetstream::Context {
    let url = format!("nats://127.0.0.1:{port}");
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let js = loop {
            match async_nats::connect(&url).await {
                Ok(c) => break async_nats::jetstream::new(c),
                Err(e) if Instant::now() > deadline => panic!("cannot connect to {url}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        loop {
            let made = js
                .create_stream(async_nats::jetstream::stream::Config {
                    name: "TX".into(),
                    subjects: vec!["tx.*".into()],
                    storage: async_nats::jetstream::stream::StorageType::File,
                    ..Default::default()
                })
                .await;
            match made {
                Ok(_) => break js,
                Err(e) if Instant::now() > deadline => panic!("cannot create stream TX: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    })
}

/// Publishes the fraud-v1 events, 500 at a time every `pause_ms`, each to
/// its card's task subject.
fn produce(
    rt: &tokio::runtime::Runtime,
    js: &async_nats::jetstream::Context,
    pause_ms: u64,
) -> std::thread::JoinHandle<()> {
    let records = events(EVENTS);
    let js = js.clone();
    let handle = rt.handle().clone();
    std::thread::spawn(move || {
        for chunk in records.chunks(500) {
            handle.block_on(async {
                let mut acks = Vec::with_capacity(chunk.len());
                for e in chunk {
                    let subject = format!("tx.{}", partition_of(e));
                    acks.push(
                        js.publish(subject, e.clone().into())
                            .await
                            .expect("publish"),
                    );
                }
                for a in acks {
                    a.await.expect("publish ack");
                }
            });
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
    })
}
