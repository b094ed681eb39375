//! Recovery as an operator meets it through `weir run`: a checkpointed
//! pipeline killed with SIGKILL and restarted writes exactly what an
//! uninterrupted run writes (sliding and fixed windows, string and integer
//! keys, a different shard count after the restart); a damaged newest
//! checkpoint is reported and the previous one used; a checkpoint from an
//! incompatible pipeline version is refused without touching anything.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{append, start, weir};
use weir_test_support::fraud::{parse_alert, reference, Alert};
use weir_test_support::pipelines::{
    fraud_text_following_log, replace_once, FRAUD_FILE_SINK, TRANSACTION_FIELDS,
};
use weir_test_support::process::Running;

/// The fraud example reading the log stream, checkpointed every 50 ms.
fn fraud_pipeline(shards: usize) -> String {
    fraud_text_following_log(4096, shards, true)
}

/// Per-country tumbling windows over the same events: fixed-window state
/// with string keys and every kind of accumulator.
fn windows_pipeline(shards: usize) -> String {
    format!(
        r#"name = "country-windows"
[settings]
batch_rows = 500
shards = {shards}

[[sources]]
name = "transactions"
type = "log"
path = "log"
stream = "transactions"
follow = true

[[steps]]
name = "decode"
type = "decode"
input = "transactions"
format = "json"
event_time = "ts"
max_out_of_orderness = "0s"
{fields}

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
aggregates = {{ n = "count(*)", total = "sum(amount_cents)", mean = "avg(amount_cents)", spread = "stddev(amount_cents)", top = "max(amount_cents)", cards = "approx_distinct(card_id)" }}

[[sinks]]
name = "stats"
type = "file"
input = "per_second"
path = "out/stats.jsonl"
columns = ["country", "window_start", "n", "total", "mean", "spread", "top", "cards"]

[dead_letter]
path = "out/dead_letter.jsonl"

[checkpoint]
dir = "checkpoints"
interval = "50ms"
keep = 3
"#,
        fields = TRANSACTION_FIELDS,
    )
}

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

/// Runs `pipeline` over all events without interruption, in its own
/// directory, and returns its output lines.
fn uninterrupted(pipeline: &str, events_total: usize, output: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    append(dir.path(), 0, events_total, &[]);
    std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("write");
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    lines(&dir.path().join(output))
}

fn assert_same_output(got: &[String], want: &[String]) {
    let got_set: BTreeSet<&String> = got.iter().collect();
    assert_eq!(got_set.len(), got.len(), "a record was written twice");
    let want_set: BTreeSet<&String> = want.iter().collect();
    let missing: Vec<_> = want_set.difference(&got_set).take(3).collect();
    let extra: Vec<_> = got_set.difference(&want_set).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, unexpected {extra:?} ({} vs {} records)",
        got.len(),
        want.len()
    );
}

#[test]
fn killed_fraud_pipeline_recovers_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.toml"), fraud_pipeline(2)).expect("write");
    let alerts = dir.path().join("out/alerts.jsonl");
    append(dir.path(), 0, 30_000, &[]);

    // Killed once some output is committed, with more input arriving after.
    let mut run = start(dir.path(), &[]);
    wait_for_lines(&alerts, 50, &mut run);
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");
    let committed = lines(&alerts).len();
    append(dir.path(), 30_000, 60_000, &[]);

    // Restarted on three shards (state moves by key group), killed again.
    std::fs::write(dir.path().join("pipeline.toml"), fraud_pipeline(3)).expect("write");
    let mut run = start(dir.path(), &[]);
    wait_for_lines(&alerts, committed + 50, &mut run);
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");

    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");

    // The pipeline published its position for ingest's lag bound.
    let log = weir_log::Log::open(dir.path().join("log")).expect("log");
    let stream = log
        .stream("transactions", weir_log::StreamConfig::default())
        .expect("stream");
    assert_eq!(
        stream.consumer_offsets().expect("consumers"),
        vec![("fraud-v1".to_string(), vec![60_000])]
    );
    assert_eq!(stream.consumer_lag().expect("lag"), 0);

    // Exactly the reference alerts, each once, with its id.
    let reference = weir_workloads::fraud_v1::alerts(60_000);
    let mut got: Vec<(u64, String)> = lines(&alerts)
        .into_iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(&l).expect("JSON");
            (v["txn_id"].as_u64().expect("txn_id"), l)
        })
        .collect();
    // Shards write in their own order; compare in txn_id order.
    got.sort();
    let got: Vec<String> = got.into_iter().map(|(_, l)| l).collect();
    assert_eq!(got.len(), reference.len(), "{stderr}");
    let mut seen = BTreeSet::new();
    for (line, (txn_id, card_id, score)) in got.iter().zip(&reference) {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(v["txn_id"].as_u64(), Some(*txn_id), "{line}");
        assert_eq!(v["card_id"].as_u64(), Some(*card_id), "{line}");
        assert_eq!(v["score"].as_f64().map(f64::to_bits), Some(score.to_bits()));
        // The id is the event's log offset: the same on every replay.
        assert_eq!(v["_id"].as_u64(), Some(*txn_id), "{line}");
        assert!(seen.insert(*txn_id), "txn_id {txn_id} twice");
    }
}

#[test]
fn killed_window_pipeline_falls_back_past_a_damaged_checkpoint() {
    let want = uninterrupted(&windows_pipeline(1), 40_000, "out/stats.jsonl");
    assert!(want.len() > 500, "{}", want.len());

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.toml"), windows_pipeline(2)).expect("write");
    let stats = dir.path().join("out/stats.jsonl");
    append(dir.path(), 0, 20_000, &[]);
    let mut run = start(dir.path(), &[]);
    wait_for_lines(&stats, 100, &mut run);
    // Let a few more checkpoints complete, so there is an older one.
    std::thread::sleep(Duration::from_millis(300));
    run.kill().expect("SIGKILL");
    run.wait().expect("reaped");
    append(dir.path(), 20_000, 40_000, &[]);

    // Damage the newest committed checkpoint (the kill may also have left
    // a newer file that the manifest does not list yet).
    let store =
        weir_checkpoint::CheckpointStore::open(&dir.path().join("checkpoints"), 3).expect("store");
    let committed = store.list().expect("committed checkpoints");
    assert!(committed.len() >= 2, "{committed:?}");
    let newest = &committed
        .iter()
        .max_by_key(|c| c.id)
        .expect("a checkpoint")
        .path;
    let mut bytes = std::fs::read(newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(newest, bytes).expect("damage");

    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("skipped"), "{stderr}");
    assert_same_output(&lines(&stats), &want);
}

#[test]
fn incompatible_checkpoint_is_refused_and_nothing_is_touched() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.toml"), windows_pipeline(1)).expect("write");
    append(dir.path(), 0, 5_000, &[]);
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshot = |p: &Path| -> Vec<(PathBuf, Vec<u8>)> {
        let mut v: Vec<_> = walk(p)
            .into_iter()
            .map(|f| {
                let b = std::fs::read(&f).expect("read");
                (f, b)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(dir.path());

    // A different window size changes the state's meaning.
    let changed = windows_pipeline(1).replace("size = \"1s\"", "size = \"2s\"");
    std::fs::write(dir.path().join("pipeline.toml"), &changed).expect("write");
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("refusing to restore"), "{stderr}");
    assert!(stderr.contains("country-windows@"), "{stderr}");
    // Put the original pipeline back for the comparison: only it changed.
    std::fs::write(dir.path().join("pipeline.toml"), windows_pipeline(1)).expect("write");
    assert!(before == snapshot(dir.path()), "files changed");

    // A batch size (or a predicate, a path) keeps the state's meaning.
    let compatible = windows_pipeline(1).replace("batch_rows = 500", "batch_rows = 300");
    std::fs::write(dir.path().join("pipeline.toml"), compatible).expect("write");
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn unusable_checkpoint_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("blocker"), b"a file").expect("write");
    let text =
        windows_pipeline(1).replace("dir = \"checkpoints\"", "dir = \"blocker/checkpoints\"");
    std::fs::write(dir.path().join("pipeline.toml"), text).expect("write");
    append(dir.path(), 0, 100, &[]);
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("blocker/checkpoints"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn stream_records(dir: &Path, stream: &str) -> Vec<Vec<u8>> {
    let mut reader = weir_log::TailReader::new(dir, stream, 0);
    let mut from = reader.first_offset().expect("first");
    let mut out = Vec::new();
    loop {
        let got = reader.read(from, 4096).expect("read");
        let Some(&(last, _)) = got.last() else {
            return out;
        };
        from = last + 1;
        out.extend(got.into_iter().map(|(_, r)| r));
    }
}

#[test]
fn killed_pipeline_with_a_log_sink_appends_each_alert_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pipeline = replace_once(
        &fraud_pipeline(2),
        FRAUD_FILE_SINK,
        "type = \"log\"\ninput = \"over_threshold\"\npath = \"outlog\"\nstream = \"alerts\"",
    );
    std::fs::write(dir.path().join("pipeline.toml"), pipeline).expect("write");
    append(dir.path(), 0, 30_000, &[]);
    let out_log = dir.path().join("outlog");
    for round in 0..2 {
        let mut run = start(dir.path(), &[]);
        let deadline = Instant::now() + Duration::from_secs(120);
        let before = stream_records(&out_log, "alerts").len();
        while stream_records(&out_log, "alerts").len() < before + 50 {
            assert!(run.try_wait().expect("poll").is_none(), "exited early");
            assert!(Instant::now() < deadline, "no output in time");
            std::thread::sleep(Duration::from_millis(10));
        }
        run.kill().expect("SIGKILL");
        run.wait().expect("reaped");
        if round == 0 {
            append(dir.path(), 30_000, 60_000, &[]);
        }
    }
    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut got: Vec<Alert> = stream_records(&out_log, "alerts")
        .iter()
        .map(|r| {
            let (alert, id) = parse_alert(r);
            assert_eq!(id, alert.0);
            alert
        })
        .collect();
    got.sort_unstable();
    let before = got.len();
    got.dedup_by_key(|g| g.0);
    assert_eq!(before, got.len(), "an alert was appended twice");
    assert_eq!(got, reference(60_000));
}
