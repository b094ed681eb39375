//! The kill -9 crash test: `weir chaos fraud-v1` feeds events through HTTP
//! ingest, the log, a checkpointed pipeline and a transactional file sink
//! while killing the pipeline process with SIGKILL five times, and `weir
//! ingest` five times with a request in flight (the producer sends it again
//! with its Idempotency-Key); the sink must end with exactly the reference
//! alerts, nothing acknowledged is lost and the log holds nothing twice.

use std::collections::HashMap;
use std::process::Command;

const EVENTS: u64 = 30_000;
const KILLS: u64 = 5;

#[cfg(unix)]
#[test]
fn pipeline_killed_five_times_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("chaos");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "chaos",
            "fraud-v1",
            "--events",
            &EVENTS.to_string(),
            "--kills",
            &KILLS.to_string(),
            "--deadline-s",
            "300",
            "--dir",
        ])
        .arg(&work)
        .output()
        .expect("run weir chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "weir chaos failed\n{context}");

    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default();
    assert!(
        last.starts_with("chaos fraud-v1 "),
        "unexpected last line {last:?}\n{context}"
    );
    let fields = fields_of(last);
    let num = |k: &str| number(&fields, k, last);
    let reference = weir_workloads::fraud_v1::score(EVENTS);
    assert_eq!(num("events"), EVENTS, "{context}");
    assert_eq!(num("kills"), KILLS, "{context}");
    assert_eq!(num("ingest_kills"), KILLS, "{context}");
    assert!(num("retries") > 0, "the kills cut requests\n{context}");
    assert_eq!(num("unacknowledged_log_records"), 0, "{context}");
    assert_eq!(num("lost"), 0, "{context}");
    assert_eq!(num("duplicated"), 0, "{context}");
    assert_eq!(num("alerts"), reference.alerts, "{context}");
    assert_eq!(num("checksum"), reference.checksum, "{context}");
    assert!(
        num("recovery_max_ms") >= num("recovery_p50_ms"),
        "{context}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("kill ") && l.contains(": recovered in "))
            .count() as u64,
        KILLS,
        "{context}"
    );
    // The work directory is removed after a successful run.
    assert!(!work.exists(), "{context}");
}

/// `weir chaos fraud-v1 --workers 3`: the pipeline split into 6 tasks on
/// three `weir run` workers, two of them killed with SIGKILL (each followed
/// by a new worker) while transactions flow: every alert exactly once, no
/// dead letter, and every killed worker's tasks moved to a survivor.
#[cfg(unix)]
#[test]
fn workers_killed_while_sharing_tasks_lose_and_duplicate_nothing() {
    const EVENTS: u64 = 40_000;
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("chaos");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "chaos",
            "fraud-v1",
            "--workers",
            "3",
            "--events",
            &EVENTS.to_string(),
            "--kills",
            "2",
            "--kill-every-ms",
            "1200",
            "--deadline-s",
            "120",
            "--dir",
        ])
        .arg(&work)
        .output()
        .expect("run weir chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(out.status.success(), "weir chaos failed\n{context}");
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("chaos fraud-v1 workers=3 "), "{context}");
    let fields = fields_of(last);
    let num = |k: &str| number(&fields, k, last);
    let reference = weir_workloads::fraud_v1::score(EVENTS);
    assert_eq!(num("tasks"), 6, "{context}");
    assert_eq!(num("kills"), 2, "{context}");
    assert_eq!(num("lost"), 0, "{context}");
    assert_eq!(num("duplicated"), 0, "{context}");
    assert_eq!(num("dead_letters"), 0, "{context}");
    assert_eq!(num("alerts"), reference.alerts, "{context}");
    assert_eq!(fields.get("result"), Some(&"ok"), "{context}");
    // Two kills of a worker holding tasks: at least two moves, timed.
    assert!(num("moves") >= 2, "{context}");
    assert!(num("move_max_ms") >= num("move_p50_ms"), "{context}");
    assert!(num("seconds") >= 3, "{context}");
    assert!(!work.exists(), "{context}");
}

/// The `key=value` fields of a summary line.
fn fields_of(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .collect()
}

/// Field `key` of the summary `line` as a number; panics naming it.
fn number(fields: &HashMap<&str, &str>, key: &str, line: &str) -> u64 {
    fields
        .get(key)
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{key}= is not a number in {line:?}"))
}
