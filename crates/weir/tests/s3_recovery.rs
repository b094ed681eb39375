//! Recovery with the checkpoint store in S3 (moto's server, started by the
//! test; `WEIR_SKIP_S3=1` skips): the fraud example with
//! `[checkpoint] url = "s3://…"`, killed with SIGKILL once output is
//! committed and restarted, writes exactly the reference alerts, each once
//! — what an uninterrupted run writes — and keeps no checkpoint on local
//! disk.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{append, start, weir};
use weir_test_support::moto::Moto;
use weir_test_support::pipelines::{fraud_text_following_log, replace_once};
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

#[test]
fn killed_pipeline_restarts_from_its_checkpoint_in_s3() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    // The weir processes inherit the endpoint and the credentials.
    for (key, value) in moto.env() {
        std::env::set_var(key, value);
    }
    let url = format!("s3://{BUCKET}/fraud/task-0");
    let pipeline = replace_once(
        &fraud_text_following_log(4096, 2, true),
        "dir = \"checkpoints\"",
        &format!("url = \"{url}\""),
    );
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
