//! Window semantics through the whole engine, with exact values.
//!
//! Every case runs a small hand-written JSON input through `weir_engine::run`
//! with 1, 2 and 3 shards (and, where batching could matter, with one record
//! per micro-batch as well as one batch for everything) and checks that the
//! results are identical and equal to values worked out by hand.

mod common;
use common::{run_in_memory, without_id, Ran};

use std::collections::BTreeMap;

use serde_json::Value;
use weir_engine::RunSummary;

const SHARDS: [usize; 3] = [1, 2, 3];

/// What a run left behind.
struct Outcome {
    summary: RunSummary,
    /// Sink lines in the order they were written.
    raw_lines: Vec<String>,
    /// Sink lines, sorted (the order across shards is not defined).
    lines: Vec<String>,
    /// Dead-letter entries, sorted by position.
    dead: Vec<Value>,
}

fn run_pipeline(toml: &str, input: &str, shards: usize) -> Outcome {
    let Ran {
        summary,
        sink_lines,
        dead,
    } = run_in_memory(toml, input.as_bytes().to_vec(), shards);
    assert_eq!(summary.shards, shards);
    let raw_lines: Vec<String> = sink_lines.iter().map(|l| without_id(l)).collect();
    let mut lines = raw_lines.clone();
    lines.sort();
    assert_eq!(
        summary.dead_letters,
        dead.len() as u64,
        "RunSummary.dead_letters vs the file"
    );
    Outcome {
        summary,
        raw_lines,
        lines,
        dead,
    }
}

/// Runs with 1, 2 and 3 shards for each batch size and checks that the
/// sorted sink output and the dead letters are identical; returns the
/// outcomes (one per combination, batch size major).
fn run_all(make: impl Fn(usize) -> String, batch_rows: &[usize], input: &str) -> Vec<Outcome> {
    let mut all: Vec<(String, Outcome)> = Vec::new();
    for &b in batch_rows {
        for shards in SHARDS {
            all.push((
                format!("batch_rows={b} shards={shards}"),
                run_pipeline(&make(b), input, shards),
            ));
        }
    }
    let (first_name, first) = &all[0];
    for (name, o) in &all[1..] {
        assert_eq!(
            o.lines, first.lines,
            "sink output of {name} differs from {first_name}"
        );
        assert_eq!(
            o.dead, first.dead,
            "dead letters of {name} differ from {first_name}"
        );
        assert_eq!(o.summary.dead_letters, first.summary.dead_letters, "{name}");
    }
    all.into_iter().map(|(_, o)| o).collect()
}

/// A keyed pipeline: memory JSON source with `id`, `key`, `v`, `ts`; a
/// `key_by key`; one window step named `win` configured by `window`; a
/// file sink `out.jsonl` reading the window.
fn pipeline(batch_rows: usize, bound: &str, window: &str) -> String {
    format!(
        r#"
name = "windows"

[settings]
batch_rows = {batch_rows}

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
max_out_of_orderness = "{bound}"
fields = [
  {{ name = "id", type = "u64" }},
  {{ name = "key", type = "string" }},
  {{ name = "v", type = "i64" }},
  {{ name = "ts", type = "i64" }},
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
{window}

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"
"#
    )
}

/// (key, ts, v) per event; the id is the index.
fn events_json(events: &[(&str, i64, i64)]) -> String {
    let mut s = String::new();
    for (id, (key, ts, v)) in events.iter().enumerate() {
        s.push_str(&format!(
            "{{\"id\":{id},\"key\":\"{key}\",\"v\":{v},\"ts\":{ts}}}\n"
        ));
    }
    s
}

/// The shared input of the sliding, tumbling and hopping cases: three keys
/// interleaved, two events out of order by less than the 2 s bound (ids 5
/// and 7), events exactly on window boundaries (ids 3, 8, 9, 11).
const EVENTS: [(&str, i64, i64); 13] = [
    ("a", 1000, 4),   // 0
    ("b", 2000, 10),  // 1
    ("a", 3000, 8),   // 2
    ("a", 5000, 4),   // 3
    ("b", 6000, -2),  // 4
    ("a", 4500, 6),   // 5: 1.5 s behind the max (6000), on time
    ("b", 9000, 7),   // 6
    ("c", 8000, 100), // 7: 1 s behind the max (9000), on time
    ("a", 11000, 10), // 8
    ("b", 12000, 5),  // 9
    ("a", 13500, 1),  // 10
    ("b", 16000, 3),  // 11
    ("a", 14999, 4),  // 12: 1.001 s behind the max (16000), on time
];

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("sink line {line:?} is not JSON: {e}"))
}

fn int(row: &Value, col: &str) -> i64 {
    row[col]
        .as_i64()
        .unwrap_or_else(|| panic!("{col} is not an integer in {row}"))
}

fn assert_close(row: &Value, col: &str, want: Option<f64>) {
    match want {
        None => assert!(row[col].is_null(), "{col} should be null in {row}"),
        Some(w) => {
            let got = row[col]
                .as_f64()
                .unwrap_or_else(|| panic!("{col} is not a number in {row}"));
            assert!(
                (got - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{col}: got {got}, want {w} in {row}"
            );
        }
    }
}

/// Which shard each key lands on, so a reader can see that the multi-shard
/// runs really split the keys.
fn shards_of(keys: &[&str], shards: usize) -> Vec<usize> {
    use weir_engine::hash::{hash_bytes, key_group, shard_of};
    keys.iter()
        .map(|k| shard_of(key_group(hash_bytes(k.as_bytes()), 128), 128, shards))
        .collect()
}

#[test]
fn keys_are_spread_over_shards() {
    // The determinism checks below are only meaningful if the keys do not
    // all land on one shard.
    for shards in [2, 3] {
        let placed = shards_of(&["a", "b", "c"], shards);
        assert!(
            placed.iter().any(|&s| s != placed[0]),
            "{shards} shards: all keys on shard {}",
            placed[0]
        );
    }
}

/// One expected sliding-window row.
struct Sliding {
    id: u64,
    n: i64,
    s: i64,
    lo: i64,
    hi: i64,
    mean: f64,
    sd: Option<f64>,
    sdp: f64,
    nd: i64,
}

const SLIDING_ALL: &str = r#"kind = "sliding"
size = "10s"
aggregates = { n = "count(*)", s = "sum(v)", lo = "min(v)", hi = "max(v)", mean = "avg(v)", sd = "stddev(v)", sdp = "stddev_pop(v)", nd = "approx_distinct(v)" }"#;

#[test]
fn sliding_window_per_event() {
    #[rustfmt::skip]
    let want = [
        // a@1000: {4}
        Sliding { id: 0, n: 1, s: 4, lo: 4, hi: 4, mean: 4.0, sd: None, sdp: 0.0, nd: 1 },
        // b@2000: {10}
        Sliding { id: 1, n: 1, s: 10, lo: 10, hi: 10, mean: 10.0, sd: None, sdp: 0.0, nd: 1 },
        // a@3000: {4, 8}
        Sliding { id: 2, n: 2, s: 12, lo: 4, hi: 8, mean: 6.0, sd: Some(2.8284271247461903), sdp: 2.0, nd: 2 },
        // a@5000: {4, 8, 4}
        Sliding { id: 3, n: 3, s: 16, lo: 4, hi: 8, mean: 5.333333333333333, sd: Some(2.309401076758503), sdp: 1.8856180831641267, nd: 2 },
        // b@6000: {10, -2}
        Sliding { id: 4, n: 2, s: 8, lo: -2, hi: 10, mean: 4.0, sd: Some(8.48528137423857), sdp: 6.0, nd: 2 },
        // a@4500 (out of order): events of a with time <= 4500 only: {4, 8, 6}
        Sliding { id: 5, n: 3, s: 18, lo: 4, hi: 8, mean: 6.0, sd: Some(2.0), sdp: 1.632993161855452, nd: 3 },
        // b@9000: {10, -2, 7}
        Sliding { id: 6, n: 3, s: 15, lo: -2, hi: 10, mean: 5.0, sd: Some(6.244997998398398), sdp: 5.0990195135927845, nd: 3 },
        // c@8000: {100}
        Sliding { id: 7, n: 1, s: 100, lo: 100, hi: 100, mean: 100.0, sd: None, sdp: 0.0, nd: 1 },
        // a@11000: (1000, 11000] excludes a@1000: {8, 6, 4, 10}
        Sliding { id: 8, n: 4, s: 28, lo: 4, hi: 10, mean: 7.0, sd: Some(2.581988897471611), sdp: 2.23606797749979, nd: 4 },
        // b@12000: (2000, 12000] excludes b@2000: {-2, 7, 5}
        Sliding { id: 9, n: 3, s: 10, lo: -2, hi: 7, mean: 3.3333333333333335, sd: Some(4.725815626252609), sdp: 3.858612300930075, nd: 3 },
        // a@13500: (3500, 13500]: {6, 4, 10, 1}
        Sliding { id: 10, n: 4, s: 21, lo: 1, hi: 10, mean: 5.25, sd: Some(3.774917217635375), sdp: 3.2691742076555053, nd: 4 },
        // b@16000: (6000, 16000] excludes b@6000: {7, 5, 3}
        Sliding { id: 11, n: 3, s: 15, lo: 3, hi: 7, mean: 5.0, sd: Some(2.0), sdp: 1.632993161855452, nd: 3 },
        // a@14999: (4999, 14999] excludes a@4500: {4, 10, 1, 4}
        Sliding { id: 12, n: 4, s: 19, lo: 1, hi: 10, mean: 4.75, sd: Some(3.774917217635375), sdp: 3.2691742076555053, nd: 3 },
    ];
    let input = events_json(&EVENTS);
    let outcomes = run_all(|b| pipeline(b, "2s", SLIDING_ALL), &[4096, 1, 5], &input);
    let o = &outcomes[0];
    assert!(o.dead.is_empty(), "no event is late: {:?}", o.dead);
    assert_eq!(o.summary.source_records, 13);
    let rows: BTreeMap<u64, Value> = o
        .lines
        .iter()
        .map(|l| parse(l))
        .map(|r| (r["id"].as_u64().expect("id"), r))
        .collect();
    assert_eq!(rows.len(), 13, "one output per event: {:?}", o.lines);
    for w in &want {
        let r = &rows[&w.id];
        let (key, ts, v) = EVENTS[w.id as usize];
        // The input columns pass through unchanged.
        assert_eq!(r["key"], key, "{r}");
        assert_eq!(int(r, "ts"), ts, "{r}");
        assert_eq!(int(r, "v"), v, "{r}");
        assert_eq!(int(r, "n"), w.n, "count in {r}");
        assert_eq!(int(r, "s"), w.s, "sum in {r}");
        assert_eq!(int(r, "lo"), w.lo, "min in {r}");
        assert_eq!(int(r, "hi"), w.hi, "max in {r}");
        assert_close(r, "mean", Some(w.mean));
        assert_close(r, "sd", w.sd);
        assert_close(r, "sdp", Some(w.sdp));
        assert_eq!(int(r, "nd"), w.nd, "approx_distinct in {r}");
    }
    // Columns: the input's visible columns, then the aggregates in order.
    let keys: Vec<&str> = o.raw_lines[0]
        .trim_matches(|c| c == '{' || c == '}')
        .split(',')
        .map(|kv| kv.split(':').next().unwrap_or(""))
        .collect();
    assert_eq!(
        keys,
        [
            "\"id\"", "\"key\"", "\"v\"", "\"ts\"", "\"n\"", "\"s\"", "\"lo\"", "\"hi\"",
            "\"mean\"", "\"sd\"", "\"sdp\"", "\"nd\""
        ]
    );
}

#[test]
fn sliding_window_keeps_each_keys_source_order() {
    // Per key, the output follows source order, whatever the shard count.
    let input = events_json(&EVENTS);
    for o in run_all(|b| pipeline(b, "2s", SLIDING_ALL), &[1], &input) {
        let mut per_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        for l in &o.raw_lines {
            let r = parse(l);
            per_key
                .entry(r["key"].as_str().expect("key").to_string())
                .or_default()
                .push(r["id"].as_u64().expect("id"));
        }
        assert_eq!(per_key["a"], [0, 2, 3, 5, 8, 10, 12]);
        assert_eq!(per_key["b"], [1, 4, 6, 9, 11]);
        assert_eq!(per_key["c"], [7]);
    }
}

#[test]
fn tumbling_window_fires_per_key_per_window() {
    let window = r#"kind = "tumbling"
size = "10s"
aggregates = { n = "count(*)", s = "sum(v)", lo = "min(v)", hi = "max(v)", mean = "avg(v)", nd = "approx_distinct(v)" }"#;
    let mut want = vec![
        // a: {4, 8, 4, 6} and {10, 1, 4}
        r#"{"key":"a","window_start":0,"window_end":10000,"n":4,"s":22,"lo":4,"hi":8,"mean":5.5,"nd":3}"#,
        r#"{"key":"a","window_start":10000,"window_end":20000,"n":3,"s":15,"lo":1,"hi":10,"mean":5.0,"nd":3}"#,
        // b: {10, -2, 7} and {5, 3}
        r#"{"key":"b","window_start":0,"window_end":10000,"n":3,"s":15,"lo":-2,"hi":10,"mean":5.0,"nd":3}"#,
        r#"{"key":"b","window_start":10000,"window_end":20000,"n":2,"s":8,"lo":3,"hi":5,"mean":4.0,"nd":2}"#,
        // c: {100}
        r#"{"key":"c","window_start":0,"window_end":10000,"n":1,"s":100,"lo":100,"hi":100,"mean":100.0,"nd":1}"#,
    ];
    want.sort();
    let input = events_json(&EVENTS);
    let outcomes = run_all(|b| pipeline(b, "2s", window), &[4096, 1, 3], &input);
    for o in &outcomes {
        assert_eq!(o.lines, want);
        assert!(o.dead.is_empty(), "{:?}", o.dead);
    }
    // With one record per batch and one shard, the first windows fire as
    // soon as the watermark (max - 2 s) reaches 10000, i.e. after b@12000,
    // and the [10000, 20000) windows (never passed by the watermark: the
    // last one is 16000 - 2000) only at the end of the input.
    let one_shard_per_record = &outcomes[3];
    let starts: Vec<i64> = one_shard_per_record
        .raw_lines
        .iter()
        .map(|l| int(&parse(l), "window_start"))
        .collect();
    assert_eq!(
        starts,
        [0, 0, 0, 10000, 10000],
        "{:?}",
        one_shard_per_record.raw_lines
    );
}

#[test]
fn hopping_window_counts_each_event_in_two_windows() {
    let window = r#"kind = "hopping"
size = "10s"
slide = "5s"
aggregates = { n = "count(*)", s = "sum(v)" }"#;
    let mut want = vec![
        r#"{"key":"a","window_start":-5000,"window_end":5000,"n":3,"s":18}"#,
        r#"{"key":"a","window_start":0,"window_end":10000,"n":4,"s":22}"#,
        r#"{"key":"a","window_start":5000,"window_end":15000,"n":4,"s":19}"#,
        r#"{"key":"a","window_start":10000,"window_end":20000,"n":3,"s":15}"#,
        r#"{"key":"b","window_start":-5000,"window_end":5000,"n":1,"s":10}"#,
        r#"{"key":"b","window_start":0,"window_end":10000,"n":3,"s":15}"#,
        r#"{"key":"b","window_start":5000,"window_end":15000,"n":3,"s":10}"#,
        r#"{"key":"b","window_start":10000,"window_end":20000,"n":2,"s":8}"#,
        r#"{"key":"b","window_start":15000,"window_end":25000,"n":1,"s":3}"#,
        r#"{"key":"c","window_start":0,"window_end":10000,"n":1,"s":100}"#,
        r#"{"key":"c","window_start":5000,"window_end":15000,"n":1,"s":100}"#,
    ];
    want.sort();
    let input = events_json(&EVENTS);
    for o in run_all(|b| pipeline(b, "2s", window), &[4096, 1], &input) {
        assert_eq!(o.lines, want);
        let total: i64 = o.lines.iter().map(|l| int(&parse(l), "n")).sum();
        assert_eq!(
            total,
            2 * EVENTS.len() as i64,
            "every event is in exactly two windows"
        );
    }
}

// ---------------------------------------------------------------------------
// Watermarks: max_out_of_orderness = 2s.

/// b@4000 (id 3) is 1 s behind the max seen so far (5000): on time.
/// b@1000 (id 5) is 5 s behind the max (6000), the watermark is 4000: late.
const LATE_SLIDING: [(&str, i64, i64); 8] = [
    ("a", 1000, 1),
    ("b", 2000, 2),
    ("a", 5000, 3),
    ("b", 4000, 4),
    ("a", 6000, 5),
    ("b", 1000, 6),
    ("a", 7000, 7),
    ("b", 8000, 8),
];

fn sliding_counts(o: &Outcome) -> BTreeMap<u64, (i64, i64)> {
    o.lines
        .iter()
        .map(|l| parse(l))
        .map(|r| (r["id"].as_u64().expect("id"), (int(&r, "n"), int(&r, "s"))))
        .collect()
}

fn assert_late_dead_letter(o: &Outcome, position: u64, ts: i64) {
    assert_eq!(o.dead.len(), 1, "{:?}", o.dead);
    let d = &o.dead[0];
    assert_eq!(d["step"], "win", "{d}");
    assert_eq!(d["position"], position, "{d}");
    let reason = d["reason"].as_str().expect("reason");
    assert!(reason.contains("late event"), "{reason}");
    assert!(
        reason.contains(&ts.to_string()),
        "the reason names the event time: {reason}"
    );
    // Rejected after decoding: the decoded record travels with it.
    assert_eq!(d["record"]["id"], position, "{d}");
    assert_eq!(d["record"]["ts"], ts, "{d}");
}

#[test]
fn sliding_late_event_goes_to_dead_letter() {
    let window =
        "kind = \"sliding\"\nsize = \"10s\"\naggregates = { n = \"count(*)\", s = \"sum(v)\" }";
    let input = events_json(&LATE_SLIDING);
    let outcomes = run_all(|b| pipeline(b, "2s", window), &[4096, 1], &input);
    let o = &outcomes[0];
    let want: BTreeMap<u64, (i64, i64)> = [
        (0, (1, 1)),  // a {1}
        (1, (1, 2)),  // b {2}
        (2, (2, 4)),  // a {1, 3}
        (3, (2, 6)),  // b {2, 4}: accepted although 1 s out of order
        (4, (3, 9)),  // a {1, 3, 5}
        (6, (4, 16)), // a {1, 3, 5, 7}
        (7, (3, 14)), // b {2, 4, 8}: the late b@1000 is not counted
    ]
    .into_iter()
    .collect();
    assert_eq!(sliding_counts(o), want);
    assert_late_dead_letter(o, 5, 1000);
    assert_eq!(o.summary.source_records, 8);
}

#[test]
fn sliding_late_event_applied_with_late_update() {
    let window = "kind = \"sliding\"\nsize = \"10s\"\nlate = \"update\"\naggregates = { n = \"count(*)\", s = \"sum(v)\" }";
    let input = events_json(&LATE_SLIDING);
    let outcomes = run_all(|b| pipeline(b, "2s", window), &[4096, 1], &input);
    let o = &outcomes[0];
    let want: BTreeMap<u64, (i64, i64)> = [
        (0, (1, 1)),
        (1, (1, 2)),
        (2, (2, 4)),
        (3, (2, 6)),
        (4, (3, 9)),
        (5, (1, 6)), // b@1000: (-9000, 1000] holds only itself
        (6, (4, 16)),
        (7, (4, 20)), // b@8000: {2, 4, 6, 8}, the late event included
    ]
    .into_iter()
    .collect();
    assert_eq!(sliding_counts(o), want);
    assert!(o.dead.is_empty(), "{:?}", o.dead);
}

#[test]

fn sliding_late_update_sees_its_whole_window() {
    // a@20000 makes the watermark 18000; a@9000 is late and, applied
    // anyway, its window (-1000, 9000] holds a@1000 and itself.
    let window = "kind = \"sliding\"\nsize = \"10s\"\nlate = \"update\"\naggregates = { n = \"count(*)\", s = \"sum(v)\" }";
    let input = events_json(&[("a", 1000, 1), ("a", 20000, 2), ("a", 9000, 3)]);
    let outcomes = run_all(|b| pipeline(b, "2s", window), &[4096, 1], &input);
    let want: BTreeMap<u64, (i64, i64)> = [(0, (1, 1)), (1, (1, 2)), (2, (2, 4))]
        .into_iter()
        .collect();
    assert_eq!(sliding_counts(&outcomes[0]), want);
}

/// With one record per batch, the [0, 10000) windows fire after a@12000
/// (watermark 10000); a@11000 (id 4) is 1 s behind and on time; b@7000
/// (id 5) is 5 s behind, behind the watermark 10000, and its window has
/// already fired.
const LATE_TUMBLING: [(&str, i64, i64); 7] = [
    ("a", 1000, 1),
    ("a", 3000, 2),
    ("b", 4000, 10),
    ("a", 12000, 3),
    ("a", 11000, 4),
    ("b", 7000, 20),
    ("a", 13000, 5),
];

const TUMBLING_COUNT_SUM: &str =
    "kind = \"tumbling\"\nsize = \"10s\"\naggregates = { n = \"count(*)\", s = \"sum(v)\" }";

#[test]
fn tumbling_late_event_goes_to_dead_letter() {
    let input = events_json(&LATE_TUMBLING);
    let mut want = vec![
        r#"{"key":"a","window_start":0,"window_end":10000,"n":2,"s":3}"#,
        r#"{"key":"b","window_start":0,"window_end":10000,"n":1,"s":10}"#,
        r#"{"key":"a","window_start":10000,"window_end":20000,"n":3,"s":12}"#,
    ];
    want.sort();
    for o in run_all(
        |b| pipeline(b, "2s", TUMBLING_COUNT_SUM),
        &[4096, 1],
        &input,
    ) {
        assert_eq!(o.lines, want);
        assert_late_dead_letter(&o, 5, 7000);
    }
}

/// The last row written for each (key, window_start): a late update
/// re-emits the window, and a key's rows keep their order in the file.
fn final_windows(o: &Outcome) -> BTreeMap<(String, i64), (i64, i64)> {
    let mut m = BTreeMap::new();
    for l in &o.raw_lines {
        let r = parse(l);
        assert_eq!(
            int(&r, "window_end") - int(&r, "window_start"),
            10000,
            "{r}"
        );
        m.insert(
            (
                r["key"].as_str().expect("key").to_string(),
                int(&r, "window_start"),
            ),
            (int(&r, "n"), int(&r, "s")),
        );
    }
    m
}

#[test]
fn tumbling_late_event_updates_window_with_late_update() {
    let window = "kind = \"tumbling\"\nsize = \"10s\"\nlate = \"update\"\naggregates = { n = \"count(*)\", s = \"sum(v)\" }";
    let input = events_json(&LATE_TUMBLING);
    let final_want: BTreeMap<(String, i64), (i64, i64)> = [
        (("a".to_string(), 0), (2, 3)),
        (("a".to_string(), 10000), (3, 12)),
        (("b".to_string(), 0), (2, 30)), // reflects the late b@7000
    ]
    .into_iter()
    .collect();

    // One batch: nothing fires before the end, so each window is written once.
    for o in run_all(|b| pipeline(b, "2s", window), &[4096], &input) {
        assert!(o.dead.is_empty(), "{:?}", o.dead);
        assert_eq!(final_windows(&o), final_want);
        assert_eq!(o.lines.len(), 3, "{:?}", o.lines);
    }

    // One record per batch: b's window fires with {10}, then again with
    // {10, 20} once the late event has updated it.
    let mut want = vec![
        r#"{"key":"a","window_start":0,"window_end":10000,"n":2,"s":3}"#,
        r#"{"key":"b","window_start":0,"window_end":10000,"n":1,"s":10}"#,
        r#"{"key":"b","window_start":0,"window_end":10000,"n":2,"s":30}"#,
        r#"{"key":"a","window_start":10000,"window_end":20000,"n":3,"s":12}"#,
    ];
    want.sort();
    for o in run_all(|b| pipeline(b, "2s", window), &[1], &input) {
        assert!(o.dead.is_empty(), "{:?}", o.dead);
        assert_eq!(o.lines, want);
        assert_eq!(final_windows(&o), final_want);
    }
}
