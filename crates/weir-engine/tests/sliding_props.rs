//! The sliding window against a simple oracle on random streams: events
//! of a few keys, out of order within a bound and beyond it, with and
//! without allowed lateness under `late = "update"`, at batch sizes 1 and
//! 4096 and 1 or 2 shards. The oracle follows the documented semantics
//! directly: an accepted event's row holds the aggregates of its key's
//! accepted events with time in `(t - size, t]` that arrived before it or
//! with it; it is late (a dead letter) when `t + 1 + lateness <=
//! watermark`, the watermark being the largest earlier event time less
//! the out-of-orderness bound. Values are integers, so every aggregate
//! has one exact answer: the engine's running (incremental) aggregates
//! and its rescans of out-of-order events must both give it, bit for bit.

mod common;
use common::run_in_memory;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::Value;

/// (key, time, value) per event; the id is the index.
type Event = (u8, i64, Option<i64>);

fn pipeline(batch_rows: usize, bound_ms: i64, size_ms: i64, lateness_ms: i64) -> String {
    let late = if lateness_ms > 0 {
        format!("allowed_lateness = \"{lateness_ms}ms\"\nlate = \"update\"")
    } else {
        String::new()
    };
    format!(
        r#"
name = "sliding-props"

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
  {{ name = "id", type = "u64" }},
  {{ name = "key", type = "string" }},
  {{ name = "v", type = "i64", optional = true }},
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
kind = "sliding"
size = "{size_ms}ms"
{late}
aggregates = {{ n = "count(*)", nv = "count(v)", s = "sum(v)", lo = "min(v)", hi = "max(v)", mean = "avg(v)", sd = "stddev(v)", sdp = "stddev_pop(v)", nd = "approx_distinct(v)" }}

[[sinks]]
name = "out"
type = "file"
input = "win"
path = "out.jsonl"
"#
    )
}

fn input(events: &[Event]) -> Vec<u8> {
    let mut s = String::new();
    for (id, (key, ts, v)) in events.iter().enumerate() {
        let v = v.map_or(String::new(), |v| format!(",\"v\":{v}"));
        s.push_str(&format!(
            "{{\"id\":{id},\"key\":\"k{key}\",\"ts\":{ts}{v}}}\n"
        ));
    }
    s.into_bytes()
}

/// The expected row of each accepted event, by id, as JSON values.
fn oracle(
    events: &[Event],
    bound_ms: i64,
    size_ms: i64,
    lateness_ms: i64,
) -> BTreeMap<u64, BTreeMap<&'static str, Value>> {
    let mut rows = BTreeMap::new();
    let mut accepted: Vec<Event> = Vec::new();
    let mut max_time = i64::MIN;
    for (id, &(key, t, v)) in events.iter().enumerate() {
        let wm = if max_time == i64::MIN {
            i64::MIN
        } else {
            max_time.saturating_sub(bound_ms)
        };
        max_time = max_time.max(t);
        if t.saturating_add(1).saturating_add(lateness_ms) <= wm {
            continue;
        }
        accepted.push((key, t, v));
        let window: Vec<&Event> = accepted
            .iter()
            .filter(|(k, u, _)| *k == key && *u > t - size_ms && *u <= t)
            .collect();
        let values: Vec<i64> = window.iter().filter_map(|(_, _, v)| *v).collect();
        let n = values.len() as i128;
        let sum: i128 = values.iter().map(|&x| x as i128).sum();
        let squares: i128 = values.iter().map(|&x| x as i128 * x as i128).sum();
        let d = (n * squares - sum * sum) as f64;
        let mut distinct = values.clone();
        distinct.sort();
        distinct.dedup();
        let float = |x: Option<f64>| x.map_or(Value::Null, Value::from);
        let mut row = BTreeMap::new();
        row.insert("n", Value::from(window.len()));
        row.insert("nv", Value::from(values.len()));
        row.insert(
            "s",
            if n > 0 {
                Value::from(sum as i64)
            } else {
                Value::Null
            },
        );
        row.insert("lo", values.iter().min().map_or(Value::Null, |&x| x.into()));
        row.insert("hi", values.iter().max().map_or(Value::Null, |&x| x.into()));
        row.insert("mean", float((n > 0).then(|| sum as f64 / n as f64)));
        row.insert(
            "sd",
            float((n > 1).then(|| (d / (n * (n - 1)) as f64).sqrt())),
        );
        row.insert("sdp", float((n > 0).then(|| (d / (n * n) as f64).sqrt())));
        row.insert("nd", Value::from(distinct.len()));
        rows.insert(id as u64, row);
    }
    rows
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    // Times mostly rising, some jumping back (out of order, sometimes
    // beyond the bound), values from a small range so that they repeat.
    proptest::collection::vec(
        (
            0u8..3,
            -3_000i64..6_000,
            proptest::option::weighted(0.9, -50i64..50),
        ),
        1..120,
    )
    .prop_map(|steps| {
        let mut t = 100_000i64;
        steps
            .into_iter()
            .map(|(key, dt, v)| {
                let ts = if dt >= 0 {
                    t += dt / 3;
                    t
                } else {
                    t + dt
                };
                (key, ts, v)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn sliding_window_rows_equal_the_oracle(
        events in events(),
        bound_ms in prop_oneof![Just(0i64), Just(1_000), Just(5_000)],
        size_ms in prop_oneof![Just(1i64), Just(2_000), Just(10_000)],
        lateness_ms in prop_oneof![Just(0i64), Just(2_000)],
    ) {
        let want = oracle(&events, bound_ms, size_ms, lateness_ms);
        for (batch_rows, shards) in [(4096, 1), (1, 2), (7, 2)] {
            let ran = run_in_memory(
                &pipeline(batch_rows, bound_ms, size_ms, lateness_ms),
                input(&events),
                shards,
            );
            prop_assert_eq!(ran.dead.len() + want.len(), events.len());
            let mut got = BTreeMap::new();
            for line in &ran.sink_lines {
                let row: Value = serde_json::from_str(line).expect("JSON row");
                let id = row["id"].as_u64().expect("id");
                let fields: BTreeMap<&'static str, Value> =
                    ["n", "nv", "s", "lo", "hi", "mean", "sd", "sdp", "nd"]
                        .into_iter()
                        .map(|f| (f, row.get(f).cloned().unwrap_or(Value::Null)))
                        .collect();
                got.insert(id, fields);
            }
            prop_assert_eq!(&got, &want, "batch_rows={} shards={}", batch_rows, shards);
        }
    }
}
