//! Stopping a run on request, and what a run may touch before it is known
//! to start.
//!
//! A stopped run takes a last checkpoint and commits its sinks and dead
//! letters, without firing anything as if the input had ended, so a
//! restart from that checkpoint ends with exactly the output of a run that
//! was never stopped. A run that cannot open its input leaves the output
//! of earlier runs alone.

mod common;
use common::feed_lines;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_config::{CheckpointSettings, Pipeline, SourceKind};
use weir_engine::{run, Arrival, Input, RunOptions, Stop};
use weir_test_support::{fraud, pipelines};

const EVENTS: u64 = 20_000;
/// Lines (0-based positions) before which a malformed record is put.
const MALFORMED_AT: [u64; 3] = [1_000, 9_000, 15_000];

/// The fraud example writing into `dir`, with checkpoints every 20 ms
/// when asked.
fn pipeline(dir: &Path, checkpoints: bool) -> Pipeline {
    let mut p = pipelines::load_example("pipeline.toml", dir);
    p.checkpoint = checkpoints.then(|| CheckpointSettings {
        dir: dir.join("checkpoints"),
        url: None,
        interval_ms: 20,
        keep: 3,
    });
    p
}

/// fraud-v1's events as lines, with a malformed record at each of
/// `MALFORMED_AT`; returns the lines and the malformed records' positions.
fn input() -> (Vec<Vec<u8>>, Vec<u64>) {
    let mut lines: Vec<Vec<u8>> = fraud::events(EVENTS)
        .into_iter()
        .map(|mut l| {
            l.push(b'\n');
            l
        })
        .collect();
    let mut positions = Vec::new();
    for (k, &at) in MALFORMED_AT.iter().enumerate() {
        let at = at as usize + k;
        lines.insert(at, format!("{{\"txn_id\": broken {k}\n").into_bytes());
        positions.push(at as u64);
    }
    (lines, positions)
}

/// Positions in the dead-letter file, in file order.
fn dead_letter_positions(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .expect("dead-letter file")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
            v["position"].as_u64().expect("position")
        })
        .collect()
}

#[test]
fn a_stopped_run_resumes_to_exactly_the_output_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(dir.path(), true);
    let (lines, malformed) = input();
    let all: Vec<u8> = lines.concat();

    let stop = Stop::new();
    let first = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Stream(feed_lines(lines.clone(), 250, stop.clone(), 10_000)),
            stop: Some(stop),
            ..Default::default()
        },
    )
    .expect("the stopped run succeeds");
    assert!(first.stopped.is_some(), "the summary says it was stopped");
    assert!(
        first.source_records > 2_000 && first.source_records < lines.len() as u64,
        "stopped mid-way: {} of {} records read",
        first.source_records,
        lines.len()
    );
    let last = first.checkpoints.last.as_ref().expect("a final checkpoint");
    // What the first run committed is only what its records produced.
    let committed = fraud::alerts_in_file(&dir.path().join("alerts.jsonl"));
    let expected = fraud::reference(EVENTS);
    assert!(committed.len() < expected.len());
    assert!(committed.iter().all(|a| expected.binary_search(a).is_ok()));
    // Every dead letter before the stop is in the file already.
    let before: Vec<u64> = malformed
        .iter()
        .copied()
        .filter(|&m| m < first.source_records)
        .collect();
    assert_eq!(
        dead_letter_positions(&dir.path().join("dead_letter.jsonl")),
        before
    );

    let second = run(
        &p,
        RunOptions {
            shards: Some(3),
            input: Input::Bytes(Arc::new(all)),
            ..Default::default()
        },
    )
    .expect("the resumed run succeeds");
    assert_eq!(second.checkpoints.restored, Some(last.id));
    assert_eq!(second.stopped, None);
    assert_eq!(
        first.source_records + second.source_records,
        lines.len() as u64,
        "the restart reads exactly what the stop left"
    );
    let got = fraud::alerts_in_file(&dir.path().join("alerts.jsonl"));
    fraud::assert_exact(&got, &expected, "stopped and resumed");
    assert_eq!(
        dead_letter_positions(&dir.path().join("dead_letter.jsonl")),
        malformed
    );
}

#[test]
fn a_stop_without_checkpoints_ends_promptly_with_whole_output() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = pipeline(dir.path(), false);
    let (lines, malformed) = input();
    let stop = Stop::new();
    let (tx, rx) = crossbeam_channel::bounded(4);
    // A source that never ends by itself.
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            for (i, chunk) in lines.chunks(250).cycle().enumerate() {
                if i == 40 {
                    stop.request();
                }
                let arrival = Arrival {
                    bytes: chunk.concat(),
                    records: chunk.len(),
                    created: Instant::now(),
                };
                if tx.send(arrival).is_err() {
                    return;
                }
            }
        })
    };
    let started = Instant::now();
    let summary = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Stream(rx),
            stop: Some(stop),
            ..Default::default()
        },
    )
    .expect("the stopped run succeeds");
    feeder.join().expect("feeder");
    assert!(started.elapsed() < Duration::from_secs(30));
    let stopped = summary.stopped.expect("stopped on request");
    assert!(stopped < Duration::from_secs(5), "took {stopped:?}");
    // Whole lines only, every alert one the reference has, and each dead
    // letter counted in the summary is in the file.
    let got = fraud::alerts_in_file(&dir.path().join("alerts.jsonl"));
    assert_eq!(got.len() as u64, summary.sinks[0].records);
    let expected = fraud::reference(EVENTS);
    assert!(got.iter().all(|a| expected.binary_search(a).is_ok()));
    let dead = dead_letter_positions(&dir.path().join("dead_letter.jsonl"));
    assert_eq!(dead.len() as u64, summary.dead_letters);
    assert!(dead.iter().all(|p| malformed.contains(p)));
}

#[test]
fn a_run_that_cannot_open_its_input_leaves_earlier_output_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = pipeline(dir.path(), false);
    let (lines, _) = input();
    std::fs::write(dir.path().join("transactions.jsonl"), lines.concat()).expect("input");
    p.source.kind = SourceKind::File {
        path: dir.path().join("transactions.jsonl"),
    };
    run(&p, RunOptions::default()).expect("the first run succeeds");
    let alerts_before = std::fs::read(dir.path().join("alerts.jsonl")).expect("alerts");
    let dead_before = std::fs::read(dir.path().join("dead_letter.jsonl")).expect("dead letters");
    assert!(!alerts_before.is_empty() && !dead_before.is_empty());

    p.source.kind = SourceKind::File {
        path: dir.path().join("missing.jsonl"),
    };
    let e = run(&p, RunOptions::default()).expect_err("no input to read");
    assert!(e.to_string().contains("missing.jsonl"), "{e}");
    assert_eq!(e.class(), weir_engine::ErrorClass::Config);
    assert_eq!(
        std::fs::read(dir.path().join("alerts.jsonl")).expect("alerts"),
        alerts_before
    );
    assert_eq!(
        std::fs::read(dir.path().join("dead_letter.jsonl")).expect("dead letters"),
        dead_before
    );
}

/// Tumbling counts per key over events a second apart, five keys.
const WINDOWS: &str = r#"
name = "counts"

# The input is handed over by the test; a file source can be checkpointed.
[[sources]]
name = "events"
type = "file"
path = "events.jsonl"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
event_time = "ts"
max_out_of_orderness = "0s"
fields = [{ name = "key", type = "string" }, { name = "ts", type = "i64" }]

[[steps]]
name = "by_key"
type = "key_by"
input = "decode"
key = "key"

[[steps]]
name = "win"
type = "window"
input = "by_key"
kind = "tumbling"
size = "10s"
aggregates = { n = "count(*)" }

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"

[dead_letter]
path = "dead_letter.jsonl"

[checkpoint]
dir = "checkpoints"
interval = "20ms"
"#;

/// Window results as (key, start, count), sorted.
fn windows(path: &Path) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = std::fs::read_to_string(path)
        .expect("sink file")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
            (
                v["key"].as_str().expect("key").to_string(),
                v["window_start"].as_i64().expect("start"),
                v["n"].as_i64().expect("n"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_stop_fires_no_window_early() {
    let lines: Vec<Vec<u8>> = (0..20_000i64)
        .map(|i| format!("{{\"key\":\"k{}\",\"ts\":{}}}\n", i % 5, i * 200).into_bytes())
        .collect();
    let all = Arc::new(lines.concat());
    let whole = tempfile::tempdir().expect("temp dir");
    let p = weir_config::parse(WINDOWS, whole.path()).expect("valid pipeline");
    run(
        &p,
        RunOptions {
            input: Input::Bytes(all.clone()),
            ..Default::default()
        },
    )
    .expect("uninterrupted run");
    let expected = windows(&whole.path().join("out.jsonl"));
    // 20,000 events 200 ms apart: 400 windows of 10 s, in each 10 events
    // of each of the five keys.
    assert_eq!(expected.len(), 2_000);
    assert!(expected.iter().all(|w| w.2 == 10));

    let dir = tempfile::tempdir().expect("temp dir");
    let p = weir_config::parse(WINDOWS, dir.path()).expect("valid pipeline");
    let stop = Stop::new();
    let first = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Stream(feed_lines(lines, 250, stop.clone(), 7_000)),
            stop: Some(stop),
            ..Default::default()
        },
    )
    .expect("stopped run");
    assert!(first.stopped.is_some());
    // Only windows the watermark closed were emitted: all complete.
    let early = windows(&dir.path().join("out.jsonl"));
    assert!(
        early.len() < 2_000 && early.iter().all(|w| w.2 == 10),
        "{early:?}"
    );
    run(
        &p,
        RunOptions {
            shards: Some(1),
            input: Input::Bytes(all),
            ..Default::default()
        },
    )
    .expect("resumed run");
    assert_eq!(windows(&dir.path().join("out.jsonl")), expected);
}
