//! Shared by the engine's test files: running a pipeline text over an
//! in-memory input and reading back what it wrote, and what the connector
//! end-to-end tests check of a run.

#![allow(dead_code)] // each test file uses its own subset

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weir_engine::{run, Arrival, Input, RunOptions, RunSummary, Stop};

/// A sink line less its last field, the output id `_id` (checked to be
/// there): these tests compare the rest; tests/sinks.rs and the recovery
/// tests check the ids themselves.
pub fn without_id(line: &str) -> String {
    let at = line
        .rfind(",\"_id\":")
        .or_else(|| line.rfind("\"_id\":"))
        .unwrap_or_else(|| panic!("sink record without _id: {line}"));
    format!("{}}}", &line[..at])
}

/// Appends `v` as a Protobuf varint (length prefixes, tags, integers).
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// What a run over an in-memory input left behind.
pub struct Ran {
    pub summary: RunSummary,
    /// The lines of the sink file `out.jsonl`, as written.
    pub sink_lines: Vec<String>,
    /// Dead-letter entries (`dead_letter.jsonl`), sorted by position.
    pub dead: Vec<Value>,
}

/// Runs the pipeline text `toml` (a `memory` source, a file sink writing
/// `out.jsonl`, the default dead-letter file) over `input` on `shards`
/// shards, in a directory of its own.
pub fn run_in_memory(toml: &str, input: Vec<u8>, shards: usize) -> Ran {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = weir_config::parse(toml, dir.path())
        .unwrap_or_else(|p| panic!("invalid test pipeline: {p:#?}"));
    let summary = run(
        &pipeline,
        RunOptions {
            shards: Some(shards),
            input: Input::Bytes(Arc::new(input)),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("run with {shards} shards failed: {e}"));
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("sink file");
    let dead_text =
        std::fs::read_to_string(dir.path().join("dead_letter.jsonl")).expect("dead-letter file");
    let mut dead: Vec<Value> = dead_text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("dead letter {l:?} is not JSON: {e}"))
        })
        .collect();
    dead.sort_by_key(|d| d["position"].as_u64());
    Ran {
        summary,
        sink_lines: text.lines().map(str::to_string).collect(),
        dead,
    }
}

/// Asserts that both connectors of a fraud run through a broker, the
/// source `transactions` and the sink `alerts`, lost the broker and came
/// back, and say so.
pub fn assert_both_reconnected(summary: &RunSummary) {
    let names: Vec<&str> = summary.connectors.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["transactions", "alerts"]);
    for c in &summary.connectors {
        assert!(
            c.reconnects >= 1,
            "{} did not report its reconnection: {c:?}",
            c.name
        );
    }
}

/// Feeds `lines` `chunk` at a time, a millisecond apart, as a run's input
/// stream, and requests `stop` once `stop_after` lines are sent; keeps
/// feeding until the run stops taking them.
pub fn feed_lines(
    lines: Vec<Vec<u8>>,
    chunk: usize,
    stop: Stop,
    stop_after: usize,
) -> crossbeam_channel::Receiver<Arrival> {
    let (tx, rx) = crossbeam_channel::bounded(4);
    std::thread::spawn(move || {
        for (i, part) in lines.chunks(chunk).enumerate() {
            if i * chunk >= stop_after {
                stop.request();
            }
            let arrival = Arrival {
                bytes: part.concat(),
                records: part.len(),
                created: Instant::now(),
            };
            if tx.send(arrival).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    rx
}
