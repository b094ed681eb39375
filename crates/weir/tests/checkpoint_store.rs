//! `weir run` over a checkpoint store whose files were deleted behind its
//! back: the newest checkpoint file (still listed in the manifest), or the
//! manifest itself. Every restart succeeds, restores the newest checkpoint
//! that is there, and leaves the output as an uninterrupted run writes it.

use std::path::Path;
use std::process::{Command, Output};

const PIPELINE: &str = r#"name = "country-windows"
[settings]
batch_rows = 100
shards = 1

[[sources]]
name = "transactions"
type = "file"
path = "transactions.jsonl"
framing = "lines"

[[steps]]
name = "decode"
type = "decode"
input = "transactions"
format = "json"
event_time = "ts"
max_out_of_orderness = "0s"
fields = [
  { name = "txn_id", type = "u64" },
  { name = "card_id", type = "u64" },
  { name = "merchant_id", type = "u32" },
  { name = "amount_cents", type = "i64" },
  { name = "country", type = "string" },
  { name = "ts", type = "i64" },
]

[[steps]]
name = "by_country"
type = "key_by"
input = "decode"
key = "country"

[[steps]]
name = "per_second"
type = "window"
input = "by_country"
kind = "tumbling"
size = "1s"
aggregates = { n = "count(*)", total = "sum(amount_cents)" }

[[sinks]]
name = "stats"
type = "file"
input = "per_second"
path = "out/stats.jsonl"

[checkpoint]
dir = "checkpoints"
interval = "1ms"
keep = 3
"#;

fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pipeline.toml"), PIPELINE).expect("pipeline");
    std::fs::write(
        dir.path().join("transactions.jsonl"),
        weir_workloads::fraud_v1::encode_json(5_000),
    )
    .expect("input");
    dir
}

fn run(dir: &Path) -> String {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "pipeline.toml"])
        .current_dir(dir)
        .output()
        .expect("weir runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

fn output(dir: &Path) -> Vec<String> {
    let mut lines: Vec<String> = std::fs::read_to_string(dir.join("out/stats.jsonl"))
        .expect("output")
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// The committed checkpoint ids, oldest first.
fn committed(dir: &Path) -> Vec<u64> {
    let store = weir_checkpoint::CheckpointStore::open(&dir.join("checkpoints"), 3).expect("store");
    store.list().expect("list").iter().map(|c| c.id).collect()
}

fn checkpoint_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .expect("checkpoints")
        .map(|e| e.expect("entry").file_name().into_string().expect("name"))
        .filter(|n| n.starts_with("cp-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_deleted_newest_checkpoint_is_skipped_at_every_restart_and_ids_go_on() {
    let dir = setup();
    run(dir.path());
    let want = output(dir.path());
    assert!(want.len() > 20, "{want:?}");
    let ids = committed(dir.path());
    let newest = *ids.last().expect("a checkpoint");
    std::fs::remove_file(
        dir.path()
            .join("checkpoints")
            .join(weir_checkpoint::checkpoint_file_name(newest)),
    )
    .expect("delete the newest checkpoint");

    let stderr = run(dir.path());
    assert!(
        stderr.contains(&format!("checkpoint {newest} skipped: file is missing")),
        "{stderr}"
    );
    match ids.len() {
        1 => assert!(stderr.contains("started without a checkpoint"), "{stderr}"),
        n => assert!(
            stderr.contains(&format!("restored from checkpoint {}", ids[n - 2])),
            "{stderr}"
        ),
    }
    assert_eq!(output(dir.path()), want);
    // This run's checkpoints come after the missing one.
    let after = *committed(dir.path()).last().expect("a checkpoint");
    assert!(after > newest, "{after} after {newest}");

    let stderr = run(dir.path());
    assert!(
        stderr.contains(&format!("restored from checkpoint {after}")),
        "{stderr}"
    );
    assert!(!stderr.contains("skipped"), "{stderr}");
    assert_eq!(output(dir.path()), want);
    assert!(*committed(dir.path()).last().expect("a checkpoint") > after);
}

#[test]
fn a_deleted_manifest_is_rebuilt_and_the_newest_checkpoint_restored() {
    let dir = setup();
    run(dir.path());
    let want = output(dir.path());
    let ids = committed(dir.path());
    let files = checkpoint_files(dir.path());
    std::fs::remove_file(dir.path().join("checkpoints/MANIFEST")).expect("delete MANIFEST");

    let stderr = run(dir.path());
    assert!(
        stderr.contains(&format!(
            "restored from checkpoint {}",
            ids.last().expect("a checkpoint")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("manifest was missing"), "{stderr}");
    assert_eq!(output(dir.path()), want);
    // Every file that was there is still there, or provably superseded:
    // older than every checkpoint committed now (keep = 3).
    let listed = committed(dir.path());
    assert!(listed.last() > ids.last(), "{listed:?} after {ids:?}");
    let now = checkpoint_files(dir.path());
    for (id, file) in ids.iter().zip(&files) {
        assert!(now.contains(file) || *id < listed[0], "{file}: {now:?}");
    }
}
