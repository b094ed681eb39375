//! Recovery with the checkpoint store in S3 (moto's server, started by the
//! test; `WEIR_SKIP_S3=1` skips): the fraud example with
//! `[checkpoint] url = "s3://…"`, killed with SIGKILL once output is
//! committed and restarted, writes exactly the reference alerts, each once
//! — what an uninterrupted run writes — and keeps no checkpoint on local
//! disk. A second run on the same prefix (a new owner) fences the first,
//! which stops with an external error (exit 75) naming the store.
//!
//! One test, in phases: the `AWS_*` environment the runs inherit is
//! process-wide, so one moto server serves both.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{append, start, weir};
use weir_test_support::moto::Moto;
use weir_test_support::pipelines::{fraud_text_following_log, replace_once, FRAUD_FILE_SINK};
use weir_test_support::process::Running;

const BUCKET: &str = "weir-e2e";

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits until `path` holds at least `n` lines (committed output).
fn wait_for_lines(path: &Path, n: usize, child: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(path).len() < n {
        assert!(
            child.try_wait().expect("poll child").is_none(),
            "the pipeline exited early"
        );
        assert!(Instant::now() < deadline, "no committed output in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The fraud example following the log, checkpointed every 50 ms to `url`.
fn pipeline(url: &str) -> String {
    replace_once(
        &fraud_text_following_log(4096, 2, true),
        "dir = \"checkpoints\"",
        &format!("url = \"{url}\""),
    )
}

#[test]
fn checkpoints_in_s3_recover_a_killed_run_and_fence_a_stale_owner() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    // The weir processes inherit the endpoint and the credentials.
    for (key, value) in moto.env() {
        std::env::set_var(key, value);
    }
    killed_pipeline_restarts_from_its_checkpoint_in_s3();
    a_second_owner_fences_the_first();
}

fn killed_pipeline_restarts_from_its_checkpoint_in_s3() {
    let url = format!("s3://{BUCKET}/fraud/task-0");
    let pipeline = pipeline(&url);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.toml"), &pipeline).expect("write");
    let alerts = dir.path().join("out/alerts.jsonl");
    append(dir.path(), 0, 30_000, &[]);

    let mut run = start(dir.path(), &[]);
    wait_for_lines(&alerts, 50, &mut run);
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");
    let stderr = std::fs::read_to_string(dir.path().join("weir.stderr")).unwrap_or_default();
    assert!(!lines(&alerts).is_empty(), "{stderr}");
    append(dir.path(), 30_000, 60_000, &[]);

    // The checkpoints are in S3, not on local disk.
    let store = weir_checkpoint::CheckpointStore::open_url(&url, 3, 0).expect("open the store");
    let committed = store.list().expect("list");
    assert!(
        !committed.is_empty(),
        "no checkpoint in S3; weir said: {stderr}"
    );
    drop(store);
    assert!(!dir.path().join("checkpoints").exists());

    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");

    // Exactly the reference alerts (what an uninterrupted run writes), each
    // once.
    let reference = weir_workloads::fraud_v1::alerts(60_000);
    let mut got: Vec<(u64, String)> = lines(&alerts)
        .into_iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).expect("JSON");
            (v["txn_id"].as_u64().expect("txn_id"), l)
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), reference.len(), "{stderr}");
    let mut seen = BTreeSet::new();
    for ((txn, line), (txn_id, card_id, score)) in got.iter().zip(&reference) {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(txn, txn_id, "{line}");
        assert_eq!(v["card_id"].as_u64(), Some(*card_id), "{line}");
        assert_eq!(v["score"].as_f64().map(f64::to_bits), Some(score.to_bits()));
        assert!(seen.insert(*txn_id), "txn_id {txn_id} twice");
    }

    // The restarted run went on from the restored checkpoint in S3.
    let store = weir_checkpoint::CheckpointStore::open_url(&url, 3, 0).expect("reopen the store");
    let after = store.list().expect("list");
    assert!(
        after.last().map(|i| i.id) > committed.last().map(|i| i.id),
        "no newer checkpoint after the restart: {committed:?} then {after:?}"
    );
}

/// Waits until `child` exits; its exit code.
fn wait_exit(child: &mut Running, what: &str) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "{what} did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn a_second_owner_fences_the_first() {
    let url = format!("s3://{BUCKET}/fraud/task-1");
    let first = tempfile::tempdir().expect("tempdir");
    let second = tempfile::tempdir().expect("tempdir");
    // A sink without local state (a file sink stages output in its own
    // directory, which a new owner on another machine would not have).
    let text = replace_once(
        &pipeline(&url),
        FRAUD_FILE_SINK,
        "type = \"stdout\"\ninput = \"over_threshold\"",
    );
    for dir in [&first, &second] {
        std::fs::write(dir.path().join("pipeline.toml"), &text).expect("write");
        append(dir.path(), 0, 20_000, &[]);
    }
    let mut old = start(first.path(), &[]);
    let store = weir_checkpoint::CheckpointStore::open_url(&url, 3, 0).expect("open the store");
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.list().expect("list").is_empty() {
        assert!(
            old.try_wait().expect("poll").is_none(),
            "the first owner stopped"
        );
        assert!(Instant::now() < deadline, "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A new owner of the same task: it restores the old owner's
    // checkpoint and commits its own.
    // Both take a checkpoint every 50 ms: whichever commits second after
    // the new owner read the manifest is the stale one and must stop.
    let mut new = start(second.path(), &[]);
    append(first.path(), 20_000, 30_000, &[]);
    append(second.path(), 20_000, 30_000, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (fenced, dir, other) = loop {
        if old.try_wait().expect("poll").is_some() {
            break (&mut old, &first, &mut new);
        }
        if new.try_wait().expect("poll").is_some() {
            // Equally valid: the new owner read the manifest just before
            // the old one committed again, so the new one is the stale one.
            break (&mut new, &second, &mut old);
        }
        assert!(
            Instant::now() < deadline,
            "neither owner was fenced; the store lists {:?}; the first said: {}; the second said: {}",
            store.list().expect("list").iter().map(|i| i.id).collect::<Vec<_>>(),
            std::fs::read_to_string(first.path().join("weir.stderr")).unwrap_or_default(),
            std::fs::read_to_string(second.path().join("weir.stderr")).unwrap_or_default(),
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let code = wait_exit(fenced, "the fenced run");
    let stderr = std::fs::read_to_string(dir.path().join("weir.stderr")).unwrap_or_default();
    assert_eq!(code, Some(75), "{stderr}");
    assert!(
        stderr.contains("checkpoint store s3://weir-e2e/fraud/task-1 is owned by another writer"),
        "{stderr}"
    );
    // The other owner keeps running and committing.
    let before = store.list().expect("list").last().map(|i| i.id);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        other.try_wait().expect("poll").is_none(),
        "both owners stopped"
    );
    let after = store.list().expect("list").last().map(|i| i.id);
    assert!(
        after > before,
        "the remaining owner committed nothing: {before:?} then {after:?}"
    );
}
