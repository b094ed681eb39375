//! Late events in event-time windows, through the whole engine.
//!
//! The rule (Flink's and Beam's): a record's watermark is the largest event
//! time before it less the out-of-orderness bound; a window `[start, end)`
//! fires when the watermark reaches `end`; an event is late only when every
//! window it belongs to has fired, and a fired window still takes events
//! for its allowed lateness (firing again each time). Generated sensor
//! streams are checked window by window and dead letter by dead letter
//! against a deliberately simple implementation of that rule written here;
//! small hand-made cases pin the boundaries.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;
use weir_engine::{run, Input, RunOptions};

// ---------------------------------------------------------------------------
// Running a pipeline.

/// One window result as written by the sink.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    key: String,
    start: i64,
    end: i64,
    n: i64,
    s: i64,
    revision: Option<i64>,
    id: u64,
}

/// One dead letter: (position, key, event time).
type Dead = (u64, String, i64);

/// What a run wrote: window rows in file order, and dead letters by
/// position with their reasons.
struct Outcome {
    /// Every sink line, parsed.
    lines: Vec<Value>,
    /// The lines as window results (fixed windows only).
    rows: Vec<Row>,
    dead: Vec<Dead>,
    reasons: Vec<String>,
}

/// A pipeline over `{"key", "v", "ts"}` lines: decode with `bound` ms of
/// out-of-orderness, key by `key`, one window step `win` (`window` holds
/// its settings) read by a file sink.
fn pipeline(batch_rows: usize, bound_ms: i64, window: &str) -> String {
    format!(
        r#"
name = "lateness"

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
max_out_of_orderness = "{bound_ms}ms"
fields = [
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
aggregates = {{ n = "count(*)", s = "sum(v)" }}

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"
"#
    )
}

/// (key, event time, value) per event, in arrival order.
type Event = (String, i64, i64);

fn json_lines(events: &[Event]) -> String {
    events
        .iter()
        .map(|(k, t, v)| format!("{{\"key\":\"{k}\",\"v\":{v},\"ts\":{t}}}\n"))
        .collect()
}

fn run_pipeline(toml: &str, events: &[Event], shards: usize) -> Outcome {
    let dir = tempfile::tempdir().expect("temp dir");
    let pipeline = weir_config::parse(toml, dir.path())
        .unwrap_or_else(|p| panic!("invalid test pipeline: {p:#?}"));
    let summary = run(
        &pipeline,
        RunOptions {
            shards: Some(shards),
            input: Input::Bytes(Arc::new(json_lines(events).into_bytes())),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("run with {shards} shards failed: {e}"));
    assert_eq!(summary.source_records, events.len() as u64);
    let int = |r: &Value, c: &str| {
        r[c].as_i64()
            .unwrap_or_else(|| panic!("{c} is not an integer in {r}"))
    };
    let lines: Vec<Value> = std::fs::read_to_string(dir.path().join("out.jsonl"))
        .expect("sink file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("sink line is JSON"))
        .collect();
    let rows = lines
        .iter()
        .filter(|r| r.get("window_start").is_some())
        .map(|r| Row {
            key: r["key"].as_str().expect("key").to_string(),
            start: int(r, "window_start"),
            end: int(r, "window_end"),
            n: int(r, "n"),
            s: int(r, "s"),
            revision: r.get("_revision").map(|_| int(r, "_revision")),
            id: r["_id"].as_u64().expect("_id"),
        })
        .collect();
    let mut dead: Vec<(Dead, String)> =
        std::fs::read_to_string(dir.path().join("dead_letter.jsonl"))
            .expect("dead-letter file")
            .lines()
            .map(|l| {
                let d: Value = serde_json::from_str(l).expect("dead letter is JSON");
                assert_eq!(d["step"], "win", "{d}");
                let record = &d["record"];
                (
                    (
                        d["position"].as_u64().expect("position"),
                        record["key"].as_str().expect("key").to_string(),
                        int(record, "ts"),
                    ),
                    d["reason"].as_str().expect("reason").to_string(),
                )
            })
            .collect();
    dead.sort();
    assert_eq!(summary.dead_letters, dead.len() as u64);
    let (dead, reasons) = dead.into_iter().unzip();
    Outcome {
        lines,
        rows,
        dead,
        reasons,
    }
}

/// The last row of each (key, window start), after checking that every
/// window's rows share one `_id` (no other window has), come with
/// revisions 0, 1, 2, … in file order when the step declares them, and
/// keep the window's bounds.
fn final_rows(rows: &[Row], size: i64) -> BTreeMap<(String, i64), Row> {
    let mut last: BTreeMap<(String, i64), Row> = BTreeMap::new();
    let mut owner: BTreeMap<u64, (String, i64)> = BTreeMap::new();
    for r in rows {
        assert_eq!(r.end - r.start, size, "{r:?}");
        let window = (r.key.clone(), r.start);
        let was = owner.insert(r.id, window.clone());
        assert!(
            was.as_ref().is_none_or(|w| *w == window),
            "_id {} names {was:?} and {window:?}",
            r.id
        );
        let expected_revision = last.get(&window).map_or(0, |p| p.revision.unwrap_or(0) + 1);
        if let Some(rev) = r.revision {
            assert_eq!(rev, expected_revision, "revisions grow by one: {r:?}");
        }
        if let Some(p) = last.get(&window) {
            assert_eq!(p.id, r.id, "a re-firing keeps the window's _id");
        }
        last.insert(window, r.clone());
    }
    last
}

/// What a consumer that upserts by `_id` ends with: per window, (count,
/// sum).
fn upserted(rows: &[Row], size: i64) -> BTreeMap<(String, i64), (i64, i64)> {
    final_rows(rows, size)
        .into_iter()
        .map(|(w, r)| (w, (r.n, r.s)))
        .collect()
}

// ---------------------------------------------------------------------------
// The oracle: the Flink/Beam rule, one event at a time.

struct Expected {
    /// Per (key, window start): count and sum of the events it took.
    windows: BTreeMap<(String, i64), (i64, i64)>,
    /// Late events: (position, key, event time).
    dead: Vec<Dead>,
    /// Events behind their watermark that still went into a window.
    behind_but_counted: usize,
}

fn oracle(events: &[Event], size: i64, slide: i64, bound: i64, lateness: i64) -> Expected {
    let mut windows: BTreeMap<(String, i64), (i64, i64)> = BTreeMap::new();
    let mut dead = Vec::new();
    let mut behind_but_counted = 0;
    let mut max_before: Option<i64> = None;
    for (position, (key, t, v)) in events.iter().enumerate() {
        let watermark = max_before.map(|m| m - bound);
        // Every window [start, start + size) with start a multiple of the
        // slide that holds t.
        let mut starts = Vec::new();
        let mut start = t.div_euclid(slide) * slide;
        while start + size > *t {
            starts.push(start);
            start -= slide;
        }
        // Those whose end plus the allowed lateness the watermark has not
        // reached.
        let open: Vec<i64> = starts
            .into_iter()
            .filter(|s| watermark.is_none_or(|wm| s + size + lateness > wm))
            .collect();
        if open.is_empty() {
            dead.push((position as u64, key.clone(), *t));
        } else {
            if watermark.is_some_and(|wm| *t < wm) {
                behind_but_counted += 1;
            }
            for s in open {
                let w = windows.entry((key.clone(), s)).or_default();
                w.0 += 1;
                w.1 += v;
            }
        }
        max_before = Some(max_before.map_or(*t, |m| m.max(*t)));
    }
    Expected {
        windows,
        dead,
        behind_but_counted,
    }
}

// ---------------------------------------------------------------------------
// Generated sensor streams.

/// SplitMix64: a seeded generator with no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> i64 {
        (self.next() % n) as i64
    }
}

/// `n` readings of five sensors: measured every 0–150 ms, delivered after
/// a delay of up to `jitter` ms (one in 100 up to 30 s: a sensor that
/// reconnects), so arrival order is event order disturbed by a bounded
/// amount, with stragglers.
fn sensor_stream(seed: u64, n: usize, jitter: i64) -> Vec<Event> {
    let mut rng = Rng(seed);
    let mut t = -3000;
    let mut timed: Vec<(i64, usize, Event)> = (0..n)
        .map(|i| {
            t += rng.below(150);
            let delay = if rng.below(100) == 0 {
                rng.below(30_000)
            } else {
                rng.below(jitter as u64 + 1)
            };
            let key = format!("sensor-{}", rng.below(5));
            let v = rng.below(1000) - 500;
            (t + delay, i, (key, t, v))
        })
        .collect();
    timed.sort();
    timed.into_iter().map(|(_, _, e)| e).collect()
}

/// The first position where two lists differ, as (got, expected).
fn first_difference<T: PartialEq + std::fmt::Debug>(got: &[T], want: &[T]) -> String {
    let at = (0..got.len().max(want.len()))
        .find(|&i| got.get(i) != want.get(i))
        .unwrap_or(0);
    format!("at {at}: {:?} vs {:?}", got.get(at), want.get(at))
}

/// One window shape checked against the oracle on three seeded streams,
/// with 1, 7 and 4096 records per batch and 1 and 3 shards.
fn check_against_oracle(kind: &str, size: i64, slide: i64, lateness: i64) {
    let bound = 2000;
    let slide_line = if kind == "hopping" {
        format!("slide = \"{slide}ms\"\n")
    } else {
        String::new()
    };
    let window = format!(
        "kind = \"{kind}\"\nsize = \"{size}ms\"\n{slide_line}allowed_lateness = \"{lateness}ms\"\nrevision_column = \"_revision\""
    );
    let mut refired = 0;
    for seed in [1, 2, 3] {
        let events = sensor_stream(seed, 1500, 3000);
        let want = oracle(&events, size, slide, bound, lateness);
        // The stream exercises the rule: events behind the watermark that
        // their windows still take, and events too late for any.
        assert!(want.behind_but_counted > 20, "seed {seed}: too few");
        assert!(!want.dead.is_empty(), "seed {seed}: no late event");
        for batch_rows in [1, 7, 4096] {
            for shards in [1, 3] {
                let name = format!("{kind} seed={seed} batch_rows={batch_rows} shards={shards}");
                let o = run_pipeline(&pipeline(batch_rows, bound, &window), &events, shards);
                assert!(
                    o.dead == want.dead,
                    "dead letters of {name}: {} instead of {}; first difference: {}",
                    o.dead.len(),
                    want.dead.len(),
                    first_difference(&o.dead, &want.dead)
                );
                let got: Vec<_> = upserted(&o.rows, size).into_iter().collect();
                let expected: Vec<_> = want.windows.clone().into_iter().collect();
                assert!(
                    got == expected,
                    "windows of {name}: {} instead of {}; first difference: {}",
                    got.len(),
                    expected.len(),
                    first_difference(&got, &expected)
                );
                if lateness == 0 {
                    assert_eq!(o.rows.len(), want.windows.len(), "{name} fires each once");
                }
                refired += o.rows.len() - want.windows.len();
            }
        }
    }
    if lateness > 0 {
        assert!(refired > 0, "some window fired again");
    }
}

#[test]
fn tumbling_windows_follow_the_rule() {
    check_against_oracle("tumbling", 10_000, 10_000, 0);
}

#[test]
fn hopping_windows_follow_the_rule() {
    // Starts every 3 s: an event is in three or four windows, some of
    // which may have fired while others are open.
    check_against_oracle("hopping", 10_000, 3000, 0);
}

#[test]
fn tumbling_windows_with_allowed_lateness_follow_the_rule() {
    check_against_oracle("tumbling", 5000, 5000, 4000);
}

#[test]
fn hopping_windows_with_allowed_lateness_follow_the_rule() {
    check_against_oracle("hopping", 10_000, 2500, 1500);
}

// ---------------------------------------------------------------------------
// Hand-made boundaries: tumbling 10 s windows, 2 s out-of-orderness.

fn events(list: &[(&str, i64, i64)]) -> Vec<Event> {
    list.iter()
        .map(|(k, t, v)| (k.to_string(), *t, *v))
        .collect()
}

/// Runs with 1, 4 and 4096 records per batch and 1 and 2 shards; the
/// upserted windows and the dead letters must agree. Returns the outcomes,
/// batch size major.
fn run_all(window: &str, list: &[(&str, i64, i64)]) -> Vec<Outcome> {
    let evs = events(list);
    let mut all = Vec::new();
    for batch_rows in [1, 4, 4096] {
        for shards in [1, 2] {
            all.push(run_pipeline(
                &pipeline(batch_rows, 2000, window),
                &evs,
                shards,
            ));
        }
    }
    for o in &all[1..] {
        assert_eq!(o.dead, all[0].dead);
        assert_eq!(upserted(&o.rows, 10_000), upserted(&all[0].rows, 10_000));
    }
    all
}

/// Windows as (key, start, count, sum).
fn windows_of(list: &[(&str, i64, i64, i64)]) -> BTreeMap<(String, i64), (i64, i64)> {
    list.iter()
        .map(|(k, s, n, sum)| ((k.to_string(), *s), (*n, *sum)))
        .collect()
}

const TUMBLING: &str = "kind = \"tumbling\"\nsize = \"10s\"";

#[test]
fn an_event_behind_the_watermark_counts_while_its_window_is_open() {
    // a@13000 makes the watermark 11000: a@10500 is behind it, but its
    // window [10000, 20000) has not fired; a@9999 is late: its only
    // window [0, 10000) fired when the watermark reached 10000.
    let all = run_all(
        TUMBLING,
        &[
            ("a", 1000, 1),
            ("a", 13000, 2),
            ("a", 10500, 4),
            ("a", 9999, 8),
        ],
    );
    assert_eq!(
        upserted(&all[0].rows, 10_000),
        windows_of(&[("a", 0, 1, 1), ("a", 10000, 2, 6)])
    );
    assert_eq!(all[0].dead, [(3, "a".to_string(), 9999)]);
    assert_eq!(
        all[0].reasons,
        [
            "late event: event time 9999: its windows had fired (the last ends at 10000, \
          the watermark is 11000)"
        ]
    );
}

#[test]
fn an_event_at_the_watermark_or_a_window_end_is_on_time() {
    // a@12000 makes the watermark 10000: [0, 10000) fires. a@10000 is at
    // the watermark and at that window's end, so it belongs to
    // [10000, 20000), which is open. b@9000 comes when the watermark is
    // exactly its window's end: late.
    let all = run_all(
        TUMBLING,
        &[
            ("a", 1000, 1),
            ("a", 12000, 2),
            ("a", 10000, 4),
            ("b", 9000, 8),
        ],
    );
    assert_eq!(
        upserted(&all[0].rows, 10_000),
        windows_of(&[("a", 0, 1, 1), ("a", 10000, 2, 6)])
    );
    assert_eq!(all[0].dead, [(3, "b".to_string(), 9000)]);
}

#[test]
fn allowed_lateness_ends_when_the_watermark_reaches_end_plus_lateness() {
    // allowed_lateness 5 s: [0, 10000) takes events until the watermark
    // reaches 15000. a@16999 makes it 14999: a@2000 still counts and the
    // window fires again; a@17000 makes it 15000: a@3000 is late.
    let window = "kind = \"tumbling\"\nsize = \"10s\"\nallowed_lateness = \"5s\"\nrevision_column = \"_revision\"";
    let all = run_all(
        window,
        &[
            ("a", 1000, 1),
            ("a", 16999, 2),
            ("a", 2000, 4),
            ("a", 17000, 8),
            ("a", 3000, 16),
        ],
    );
    assert_eq!(
        upserted(&all[0].rows, 10_000),
        windows_of(&[("a", 0, 2, 5), ("a", 10000, 2, 10)])
    );
    assert_eq!(all[0].dead, [(4, "a".to_string(), 3000)]);
    assert_eq!(
        all[0].reasons,
        [
            "late event: event time 3000: its windows had fired (the last ends at 10000, \
          the watermark is 15000) and their allowed lateness of 5000 ms had passed"
        ]
    );
    // One record per batch, one shard: [0, 10000) fires at a@16999 with
    // {1}, again with {1, 2000's 4}; same id, revisions 0 and 1.
    let first: Vec<(i64, i64, Option<i64>)> = all[0]
        .rows
        .iter()
        .filter(|r| r.start == 0)
        .map(|r| (r.n, r.s, r.revision))
        .collect();
    assert_eq!(first, [(1, 1, Some(0)), (2, 5, Some(1))]);
    // One batch: it fires once, with both.
    let one_batch: Vec<(i64, i64, Option<i64>)> = all[4]
        .rows
        .iter()
        .filter(|r| r.start == 0)
        .map(|r| (r.n, r.s, r.revision))
        .collect();
    assert_eq!(one_batch, [(2, 5, Some(0))]);
}

#[test]
fn a_hopping_event_goes_into_its_open_windows_only() {
    // Windows of 10 s every 5 s. a@13000 makes the watermark 11000:
    // a@9000 belongs to [0, 10000), which has fired, and [5000, 15000),
    // which has not: it counts there and is no dead letter.
    let window = "kind = \"hopping\"\nsize = \"10s\"\nslide = \"5s\"";
    let all = run_all(window, &[("a", 1000, 1), ("a", 13000, 2), ("a", 9000, 4)]);
    assert!(all[0].dead.is_empty(), "{:?}", all[0].dead);
    assert_eq!(
        upserted(&all[0].rows, 10_000),
        windows_of(&[
            ("a", -5000, 1, 1),
            ("a", 0, 1, 1),
            ("a", 5000, 2, 6),
            ("a", 10000, 1, 2),
        ])
    );
}

// ---------------------------------------------------------------------------
// late = "update" keeps windows for their allowed lateness, never longer.

const REPRODUCTION: [(&str, i64, i64); 4] = [
    ("a", 1000, 1),
    ("a", 3000, 1),
    ("a", 50000, 1),
    ("a", 2000, 1),
];

#[test]
fn late_update_past_the_allowed_lateness_is_a_dead_letter() {
    // late = "update" keeps a window one window length (10 s) past its
    // end; a@50000 makes the watermark 48000, long past 20000: a@2000 is
    // late, whatever the batch size, and [0, 10000) is never re-opened.
    let window = "kind = \"tumbling\"\nsize = \"10s\"\nlate = \"update\"";
    for batch_rows in [1, 4096] {
        let o = run_pipeline(
            &pipeline(batch_rows, 2000, window),
            &events(&REPRODUCTION),
            1,
        );
        let got: Vec<(i64, i64)> = o.rows.iter().map(|r| (r.start, r.n)).collect();
        assert_eq!(got, [(0, 2), (50000, 1)], "batch_rows={batch_rows}");
        assert_eq!(
            o.dead,
            [(3, "a".to_string(), 2000)],
            "batch_rows={batch_rows}"
        );
    }
}

#[test]
fn late_update_within_the_allowed_lateness_fires_the_window_again() {
    // With 60 s of allowed lateness a@2000 counts. One record per batch:
    // [0, 10000) fires with 2 and again with 3, under one _id; in one
    // batch it fires once, with 3. A consumer upserting by _id ends with
    // the same table either way.
    let window = "kind = \"tumbling\"\nsize = \"10s\"\nlate = \"update\"\nallowed_lateness = \"60s\"\nrevision_column = \"_revision\"";
    let per_record = run_pipeline(&pipeline(1, 2000, window), &events(&REPRODUCTION), 1);
    let one_batch = run_pipeline(&pipeline(4096, 2000, window), &events(&REPRODUCTION), 1);
    assert!(per_record.dead.is_empty() && one_batch.dead.is_empty());
    let first: Vec<(i64, Option<i64>)> = per_record
        .rows
        .iter()
        .filter(|r| r.start == 0)
        .map(|r| (r.n, r.revision))
        .collect();
    assert_eq!(first, [(2, Some(0)), (3, Some(1))]);
    let final_per_record = final_rows(&per_record.rows, 10_000);
    let final_one_batch = final_rows(&one_batch.rows, 10_000);
    let ids = |m: &BTreeMap<(String, i64), Row>| m.values().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(
        ids(&final_per_record),
        ids(&final_one_batch),
        "ids do not depend on batching"
    );
    assert_eq!(
        upserted(&per_record.rows, 10_000),
        windows_of(&[("a", 0, 3, 3), ("a", 50000, 1, 1)])
    );
    assert_eq!(
        upserted(&one_batch.rows, 10_000),
        upserted(&per_record.rows, 10_000)
    );
}

// ---------------------------------------------------------------------------
// Sliding windows: an event's window (t - size, t] is [t - size + 1, t + 1),
// evaluated on arrival; it is late once the watermark has passed t + 1 by
// the allowed lateness.

/// (id as position, n, s) of each sliding output, by position.
fn sliding_rows(o: &Outcome) -> Vec<(u64, i64, i64)> {
    let mut rows: Vec<(u64, i64, i64)> = o
        .lines
        .iter()
        .map(|r| {
            (
                r["_id"].as_u64().expect("_id"),
                r["n"].as_i64().expect("n"),
                r["s"].as_i64().expect("s"),
            )
        })
        .collect();
    rows.sort();
    rows
}

#[test]
fn sliding_allowed_lateness_bounds_late_events() {
    // 3 s of allowed lateness. a@20000 makes the watermark 18000:
    // a@15000 is 3 s behind it, not more: evaluated over (5000, 15000],
    // which holds a@9000 (a@1000 is outside and may be evicted). a@14999
    // is 3.001 s behind: late.
    let window = "kind = \"sliding\"\nsize = \"10s\"\nallowed_lateness = \"3s\"";
    for batch_rows in [1, 4096] {
        for shards in [1, 2] {
            let o = run_pipeline(
                &pipeline(batch_rows, 2000, window),
                &events(&[
                    ("a", 1000, 1),
                    ("a", 9000, 2),
                    ("a", 20000, 4),
                    ("a", 15000, 8),
                    ("a", 14999, 16),
                ]),
                shards,
            );
            assert_eq!(
                sliding_rows(&o),
                [(0, 1, 1), (1, 2, 3), (2, 1, 4), (3, 2, 10)],
                "batch_rows={batch_rows} shards={shards}"
            );
            assert_eq!(o.dead, [(4, "a".to_string(), 14999)]);
            assert_eq!(
                o.reasons,
                [
                    "late event: event time 14999 is behind the watermark 18000 by more than \
                  the allowed lateness of 3000 ms"
                ]
            );
        }
    }
}

#[test]
fn sliding_late_update_takes_events_one_window_late_at_most() {
    // late = "update": one window size (10 s) of allowed lateness.
    // a@30000 makes the watermark 28000: a@18000 is 10 s behind and
    // counts (its window holds itself only); a@17000 is 11 s behind: a
    // dead letter, where it used to be applied over a window whose
    // events might already have been evicted.
    let window = "kind = \"sliding\"\nsize = \"10s\"\nlate = \"update\"";
    for batch_rows in [1, 4096] {
        let o = run_pipeline(
            &pipeline(batch_rows, 2000, window),
            &events(&[
                ("a", 1000, 1),
                ("a", 30000, 2),
                ("a", 18000, 4),
                ("a", 17000, 8),
            ]),
            1,
        );
        assert_eq!(sliding_rows(&o), [(0, 1, 1), (1, 1, 2), (2, 1, 4)]);
        assert_eq!(o.dead, [(3, "a".to_string(), 17000)]);
    }
}
