//! fraud-v1 split into 3 tasks, run by several `weir run` processes that
//! share them through the lock files under the checkpoint directory. While
//! transactions flow into the 3 partitions of a log stream, workers are
//! killed with SIGKILL and new ones join; the alerts of all tasks together
//! equal the reference exactly (nothing lost, nothing twice), and no
//! record is a dead letter (each task read only its own keys, in order).

mod common;

use std::time::{Duration, Instant};

use common::split::{alerts_of_tasks, signal, worker, worker_logs as logs};
use weir_test_support::fraud::{assert_exact, events, reference};
use weir_test_support::pipelines::{fraud_text_following_log, replace_once};

const EVENTS: u64 = 60_000;
const TASKS: u32 = 3;
const KEY_GROUPS: u32 = 128;

/// The partition a producer writes a transaction to: its card's task.
fn partition_of(event: &[u8]) -> u32 {
    common::split::partition_of(event, KEY_GROUPS, TASKS)
}

fn pipeline_text() -> String {
    let text = fraud_text_following_log(256, 1, true);
    let text = replace_once(
        &text,
        "key_groups = 128",
        &format!("key_groups = {KEY_GROUPS}\ntasks = {TASKS}"),
    );
    let text = replace_once(
        &text,
        "stream = \"transactions\"\nfollow = true",
        &format!("stream = \"transactions\"\nfollow = true\npartitions = {TASKS}"),
    );
    let text = replace_once(&text, "out/alerts.jsonl", "out/alerts-{task}.jsonl");
    replace_once(
        &text,
        "out/dead_letter.jsonl",
        "out/dead_letter-{task}.jsonl",
    )
}

#[test]
fn workers_killed_and_added_share_the_tasks_without_loss_or_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("pipeline.toml"), pipeline_text()).expect("pipeline");
    let log = weir_log::Log::open(dir.join("log")).expect("log");
    let stream = log
        .stream(
            "transactions",
            weir_log::StreamConfig {
                partitions: TASKS,
                fsync: weir_log::FsyncPolicy::Never,
                ..Default::default()
            },
        )
        .expect("stream");
    let records = events(EVENTS);
    let producer = std::thread::spawn(move || {
        // About 3 s of traffic: 120 requests of 500 transactions, each
        // written to the partition of its card.
        for chunk in records.chunks(500) {
            let mut by_partition: Vec<Vec<&[u8]>> = vec![Vec::new(); TASKS as usize];
            for e in chunk {
                by_partition[partition_of(e) as usize].push(e);
            }
            for (p, recs) in by_partition.iter().enumerate() {
                if !recs.is_empty() {
                    stream.partition(p as u32).append(recs).expect("append");
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    });

    let port = weir_test_support::net::free_port();
    let address = format!("127.0.0.1:{port}");
    let mut w1 = worker(dir, "w1", &[]);
    let mut w2 = worker(dir, "w2", &[]);
    let mut w3 = worker(dir, "w3", &["--metrics-address", &address]);
    std::thread::sleep(Duration::from_millis(900));
    w2.kill().expect("kill w2");
    std::thread::sleep(Duration::from_millis(500));
    let mut w4 = worker(dir, "w4", &[]);
    std::thread::sleep(Duration::from_millis(600));
    w1.kill().expect("kill w1");
    producer.join().expect("producer");

    let expected = reference(EVENTS);
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts_of_tasks(dir, TASKS).len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    // w3's endpoint: ready, and the series of each task it runs labelled
    // with the task.
    let ready = common::get(port, "/readyz").expect("readyz");
    assert_eq!(ready, (200, "ready\n".to_string()));
    let (status, metrics) = common::get(port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let held: Vec<u32> = (0..TASKS)
        .filter(|t| metrics.contains(&format!("weir_source_records_total{{task=\"{t}\",")))
        .collect();
    assert!(!held.is_empty(), "w3 reports no task:\n{metrics}");
    // Everything was read: each task's lag, its own partition's, is 0.
    let scrape = weir_metrics::exposition::Scrape::parse(&metrics);
    for t in &held {
        let lag = scrape.value("weir_log_consumer_lag_records", &[("task", &t.to_string())]);
        assert_eq!(lag, Some(0.0), "task {t}:\n{metrics}");
    }
    assert_eq!(
        metrics.matches("# TYPE weir_source_records_total ").count(),
        1
    );
    assert!(
        metrics.contains("process_resident_memory_bytes"),
        "{metrics}"
    );
    // SIGTERM: a graceful stop, a last checkpoint.
    signal(&w3, "-TERM");
    signal(&w4, "-TERM");
    for (id, w) in [("w3", &mut w3), ("w4", &mut w4)] {
        let status = w.wait().expect("wait");
        assert!(status.success(), "{id} exited with {status}\n{}", logs(dir));
    }
    let got = alerts_of_tasks(dir, TASKS);
    if got != expected {
        eprintln!("{}", logs(dir));
    }
    assert_exact(&got, &expected, "alerts of all tasks");
    for t in 0..TASKS {
        let dl = dir.join(format!("out/dead_letter-{t}.jsonl"));
        let text = std::fs::read_to_string(&dl).unwrap_or_default();
        assert!(
            text.is_empty(),
            "task {t} dead letters:\n{}",
            &text[..text.len().min(2000)]
        );
    }
    // Every task ran, and the survivors took over the killed ones' tasks.
    let logs = logs(dir);
    for t in 0..TASKS {
        assert!(
            logs.contains(&format!("task {t} (epoch")),
            "task {t} never ran:\n{logs}"
        );
    }
    assert!(logs.contains("(epoch 2)"), "no task moved:\n{logs}");
    eprintln!("{logs}");
}

/// `--task N` pins one task to a process: a second process asking for the
/// same task is refused naming the holder, a task the pipeline lacks is
/// refused, and `--task` on a pipeline that is not split is refused.
#[test]
fn a_pinned_task_has_one_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let dir = dir.path();
    std::fs::write(dir.join("pipeline.toml"), pipeline_text()).expect("pipeline");
    let log = weir_log::Log::open(dir.join("log")).expect("log");
    log.stream(
        "transactions",
        weir_log::StreamConfig {
            partitions: TASKS,
            ..Default::default()
        },
    )
    .expect("stream");
    let mut first = worker(dir, "p1", &["--task", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let lock = dir.join("checkpoints/leases/tasks/task-1.lock");
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("owner=p1")) {
        assert!(
            Instant::now() < deadline,
            "p1 never took task 1\n{}",
            logs(dir)
        );
        assert!(
            first.try_wait().expect("wait").is_none(),
            "p1 exited\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let weir = common::WEIR;
    let second = weir_test_support::process::run(
        weir,
        &["run", "pipeline.toml", "--task", "1", "--member-id", "p2"],
        dir,
    );
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains("task 1 of pipeline fraud-v1 is run by member p1"),
        "{stderr}"
    );
    let missing =
        weir_test_support::process::run(weir, &["run", "pipeline.toml", "--task", "3"], dir);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("--task 3: pipeline fraud-v1 has tasks 0 to 2"),
        "{stderr}"
    );
    let unsplit = replace_once(&pipeline_text(), &format!("tasks = {TASKS}"), "tasks = 1");
    std::fs::write(dir.join("one.toml"), unsplit).expect("pipeline");
    let one = weir_test_support::process::run(weir, &["run", "one.toml", "--task", "0"], dir);
    let stderr = String::from_utf8_lossy(&one.stderr);
    assert!(
        stderr.contains("--task and --member-id are for a pipeline split into tasks"),
        "{stderr}"
    );
    first.kill().expect("kill");
}
