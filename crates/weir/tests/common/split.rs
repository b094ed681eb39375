//! What the tests of a pipeline split into tasks share: routing a
//! transaction to its card's partition, starting workers with their
//! standard error kept, and reading the alerts of every task.

use std::fs::File;
use std::path::Path;

use weir_test_support::fraud::{alerts_in_file, Alert};
use weir_test_support::process::{start, Running};

/// The partition (task) a producer writes a fraud-v1 transaction to: its
/// card's key group's task. u64 keys hash by their bit pattern, as the
/// engine's key_by does.
pub fn partition_of(event: &[u8], key_groups: u32, tasks: u32) -> u32 {
    let v: serde_json::Value = serde_json::from_slice(event).expect("event JSON");
    let card = v["card_id"].as_u64().expect("card_id");
    let group = weir_engine::hash::key_group(weir_engine::hash::mix64(card), key_groups);
    weir_config::task_of_group(group, key_groups, tasks)
}

/// `weir run pipeline.toml --member-id ID EXTRA` in `dir`, its standard
/// error in `dir/ID.log`.
pub fn worker(dir: &Path, id: &str, extra: &[&str]) -> Running {
    let log = File::create(dir.join(format!("{id}.log"))).expect("log file");
    let mut args = vec!["run", "pipeline.toml", "--member-id", id];
    args.extend_from_slice(extra);
    start(super::WEIR, &args, dir, log)
}

/// The alerts of tasks `0..tasks` (`out/alerts-N.jsonl`), sorted.
pub fn alerts_of_tasks(dir: &Path, tasks: u32) -> Vec<Alert> {
    let mut all = Vec::new();
    for t in 0..tasks {
        let path = dir.join(format!("out/alerts-{t}.jsonl"));
        if path.exists() {
            all.extend(alerts_in_file(&path));
        }
    }
    all.sort_unstable();
    all
}

/// The standard error of workers w1 to w4, one after the other.
pub fn worker_logs(dir: &Path) -> String {
    let mut out = String::new();
    for id in ["w1", "w2", "w3", "w4"] {
        let text = std::fs::read_to_string(dir.join(format!("{id}.log"))).unwrap_or_default();
        out.push_str(&format!("--- {id}\n{text}"));
    }
    out
}

/// Sends `kill SIGNAL` (`-TERM`, `-STOP`, ...) to a worker.
pub fn signal(w: &Running, which: &str) {
    let sent = std::process::Command::new("kill")
        .args([which, &w.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}
