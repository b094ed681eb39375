//! Incremental checkpoints restore exactly: a sliding window's state is
//! written per key group as the changes since the previous checkpoint
//! (with a full part every few checkpoints), and a run stopped and resumed
//! several times, on a different number of shards each time, from
//! checkpoints whose parts are chains of deltas, ends with exactly the
//! rows of a run that was never stopped. The stream has what makes deltas
//! hard: events out of order (inserted behind a key's newest), late
//! updates, NULL inputs met for the first time mid-stream, and keys that
//! go quiet and are dropped (their removal is part of a delta).

mod common;
use common::{feed_lines, run_in_memory};

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use weir_config::CheckpointSettings;
use weir_engine::{run, Input, RunOptions, RunSummary, Stop};

const EVENTS: usize = 6_000;

fn pipeline_text() -> &'static str {
    r#"
name = "incremental"

[settings]
batch_rows = 64
key_groups = 16

[[sources]]
name = "events"
type = "memory"
framing = "lines"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
event_time = "ts"
max_out_of_orderness = "300ms"
fields = [
  { name = "id", type = "u64" },
  { name = "key", type = "string" },
  { name = "v", type = "i64", optional = true },
  { name = "f", type = "f64", optional = true },
  { name = "ts", type = "i64" },
]

[[steps]]
name = "by_key"
type = "key_by"
input = "decode"
key = "key"

[[steps]]
name = "win"
type = "window"
input = "by_key"
kind = "sliding"
size = "2s"
allowed_lateness = "500ms"
late = "update"
aggregates = { n = "count(*)", nv = "count(v)", s = "sum(v)", hi = "max(v)", lo = "min(f)", mean = "avg(f)", nd = "approx_distinct(v)" }

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"
"#
}

/// Events as JSON lines: times rising about 10 ms an event with some
/// jumping back (most within the bound, some beyond it and late), keys
/// from a set that moves on every 1,000 events (older keys go quiet),
/// `v` NULL now and then from event 2,500 on.
fn lines() -> Vec<Vec<u8>> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut t = 1_000_000i64;
    (0..EVENTS)
        .map(|id| {
            let r = next();
            t += (r % 20) as i64;
            let ts = match r % 17 {
                0 => t - 250,
                1 => t - 900,
                _ => t,
            };
            let key = (id / 1_000) * 7 + (r >> 8) as usize % 12;
            let v = if id >= 2_500 && r % 9 == 0 {
                String::new()
            } else {
                format!(",\"v\":{}", (r >> 16) % 40)
            };
            let f = (r >> 24) % 1000;
            format!("{{\"id\":{id},\"key\":\"k{key}\",\"ts\":{ts}{v},\"f\":{f}.25}}\n").into_bytes()
        })
        .collect()
}

/// Rows by id, for comparison.
fn rows(text: &str) -> BTreeMap<u64, String> {
    let mut rows = BTreeMap::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON row");
        let id = v["id"].as_u64().expect("id");
        assert!(
            rows.insert(id, line.to_string()).is_none(),
            "row {id} twice"
        );
    }
    rows
}

fn run_part(dir: &Path, lines: &[Vec<u8>], shards: usize, stop_after: Option<usize>) -> RunSummary {
    let mut p = weir_config::parse(pipeline_text(), dir).expect("pipeline");
    p.checkpoint = Some(CheckpointSettings {
        dir: dir.join("checkpoints"),
        url: None,
        interval_ms: 5,
        keep: 2,
    });
    let (input, stop) = match stop_after {
        Some(n) => {
            let stop = Stop::new();
            (
                Input::Stream(feed_lines(lines.to_vec(), 20, stop.clone(), n)),
                Some(stop),
            )
        }
        None => (Input::Bytes(Arc::new(lines.concat())), None),
    };
    run(
        &p,
        RunOptions {
            shards: Some(shards),
            input,
            stop,
            ..Default::default()
        },
    )
    .expect("run")
}

#[test]
fn stopped_and_resumed_runs_on_delta_chains_give_the_uninterrupted_rows() {
    let lines = lines();
    let want = rows(
        &run_in_memory(pipeline_text(), lines.concat(), 2)
            .sink_lines
            .join("\n"),
    );
    assert!(want.len() > EVENTS * 9 / 10, "most events are accepted");

    let dir = tempfile::tempdir().expect("temp dir");
    let mut restored_from_chain = 0;
    let mut previous: Option<RunSummary> = None;
    for (shards, stop_after) in [
        (2, Some(1_500)),
        (3, Some(3_000)),
        (1, Some(4_500)),
        (2, None),
    ] {
        let ran = run_part(dir.path(), &lines, shards, stop_after);
        if let Some(prev) = &previous {
            let last = prev.checkpoints.last.as_ref().expect("a checkpoint");
            assert_eq!(ran.checkpoints.restored, Some(last.id));
            if last.delta_parts > 0 {
                restored_from_chain += 1;
            }
        }
        let c = &ran.checkpoints;
        if stop_after.is_some() {
            assert!(c.completed >= 3, "checkpoints taken: {}", c.completed);
            assert!(
                c.recent
                    .iter()
                    .any(|s| s.delta_parts > 0 && s.full_parts > 0),
                "checkpoints mix full parts and deltas: {:?}",
                c.recent
                    .iter()
                    .map(|s| (s.full_parts, s.delta_parts))
                    .collect::<Vec<_>>()
            );
        }
        previous = Some(ran);
    }
    assert!(
        restored_from_chain >= 2,
        "runs restored from checkpoints with deltas: {restored_from_chain}"
    );
    let text = std::fs::read_to_string(dir.path().join("out.jsonl")).expect("sink file");
    let got = rows(&text);
    assert_eq!(got.len(), want.len());
    for (id, row) in &want {
        assert_eq!(got.get(id), Some(row), "row of event {id}");
    }
}
