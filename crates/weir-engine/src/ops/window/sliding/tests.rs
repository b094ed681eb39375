//! A capture spread over the batches after its barrier (`capture.rs`)
//! against the state at the barrier.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Int64Array, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use weir_config::{Aggregate, AggregateFunction, LatePolicy, WindowKind};

use super::*;

const KEY_GROUPS: u32 = 4;

/// Key `k`, event time `ts`, value `v` and the hidden columns.
fn input_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new(weir_config::POSITION_COLUMN, DataType::UInt64, false),
        Field::new(weir_config::PRIOR_MAX_TIME_COLUMN, DataType::Int64, false),
    ]))
}

/// A 1 s sliding window: count and sum of `v`, 200 ms of out-of-orderness.
fn operator() -> SlidingWindow {
    let input = input_schema();
    let mut fields: Vec<Field> = input.fields().iter().map(|f| (**f).clone()).collect();
    fields.push(Field::new("n", DataType::Int64, true));
    fields.push(Field::new("total", DataType::Int64, true));
    let config = Window {
        kind: WindowKind::Sliding,
        size_ms: 1000,
        time_column: "ts".into(),
        key_column: "k".into(),
        max_out_of_orderness_ms: 200,
        aggregates: vec![
            Aggregate {
                name: "n".into(),
                function: AggregateFunction::Count,
                column: None,
                data_type: DataType::Int64,
            },
            Aggregate {
                name: "total".into(),
                function: AggregateFunction::Sum,
                column: Some("v".into()),
                data_type: DataType::Int64,
            },
        ],
        late: LatePolicy::DeadLetter,
        allowed_lateness_ms: 0,
        revision_column: None,
    };
    SlidingWindow::new("w", &config, &input, &Arc::new(Schema::new(fields))).expect("operator")
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below
    }
}

/// One batch of random events: keys 0..12 (some going quiet for long
/// stretches, so the sweep removes them), times moving forward with
/// jitter of up to 300 ms (some late).
fn batch(rng: &mut Rng, clock: &mut i64, position: &mut u64) -> (RecordBatch, i64) {
    let rows = 1 + rng.next(12) as usize;
    let (mut k, mut ts, mut v, mut pos) = (vec![], vec![], vec![], vec![]);
    let quiet = (*clock / 5000) % 3;
    for _ in 0..rows {
        *clock += rng.next(40) as i64;
        let key = rng.next(12) as i64;
        k.push(if key % 3 == quiet { key + 100 } else { key });
        ts.push(*clock - rng.next(300) as i64);
        v.push(rng.next(1000) as i64 - 100);
        pos.push(*position);
        *position += 1;
    }
    let max = *ts.iter().max().expect("rows");
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(k)),
        Arc::new(Int64Array::from(ts)),
        Arc::new(Int64Array::from(v)),
        Arc::new(UInt64Array::from(pos)),
        Arc::new(Int64Array::from(vec![i64::MIN; rows])),
    ];
    (
        RecordBatch::try_new(input_schema(), columns).expect("batch"),
        max,
    )
}

/// Every key's retained events: validity flag and words.
type Contents = HashMap<Key, (bool, Vec<u64>)>;

/// An operator's [`Contents`].
fn contents(op: &SlidingWindow) -> Contents {
    op.state
        .iter()
        .map(|(k, st)| (k, (st.events.bits, st.events.words().to_vec())))
        .collect()
}

/// A fresh operator restored from each group's chain.
fn restored(chains: &HashMap<u32, Vec<Vec<u8>>>) -> SlidingWindow {
    let mut op = operator();
    for links in chains.values() {
        let links: Vec<&[u8]> = links.iter().map(Vec::as_slice).collect();
        op.restore_chain(&links).expect("restore");
    }
    op
}

/// Adds a capture to the chains, as a shard does: whole parts start a
/// group's chain afresh, deltas extend it, and a group due whole without
/// a part has no keys left.
fn extend(
    chains: &mut HashMap<u32, Vec<Vec<u8>>>,
    whole: &[bool],
    parts: GroupParts,
    deltas: GroupParts,
) {
    for g in 0..KEY_GROUPS {
        if whole[g as usize] && !parts.contains_key(&g) {
            chains.remove(&g);
        }
    }
    for (g, data) in parts {
        chains.insert(g, vec![data]);
    }
    for (g, data) in deltas {
        chains.get_mut(&g).expect("a delta has a base").push(data);
    }
}

/// A spread capture under way in the test.
struct UnderWay {
    /// The operator's keys at the barrier.
    at_barrier: Contents,
    /// Groups written whole.
    whole: Vec<bool>,
    /// Batches until it is asked to finish at once.
    left: u32,
    /// Whether its walk is left alone until the sweep is overdue.
    stalled: bool,
}

#[test]
fn a_spread_capture_holds_the_state_at_its_barrier() {
    for seed in 0..12 {
        let mut rng = Rng(seed);
        // `sync` captures at each barrier; `spread` begins there and
        // writes a few bytes after each of the batches that follow.
        let (mut sync, mut spread) = (operator(), operator());
        let (mut sync_chains, mut spread_chains) = (HashMap::new(), HashMap::new());
        let (mut clock, mut position, mut max_time) = (0i64, 0u64, i64::MIN);
        let mut id = 0u64;
        let mut under_way: Option<UnderWay> = None;
        let mut overdue_sweeps = 0;
        let mut touched_before_written = 0;
        for step in 0..1500 {
            let (b, max) = batch(&mut rng, &mut clock, &mut position);
            let prior = max_time;
            max_time = max_time.max(max);
            let mut outputs = Vec::new();
            for op in [&mut sync, &mut spread] {
                let (mut rejected, mut out) = (Vec::new(), Vec::new());
                let mut ctx = Ctx {
                    rejected: &mut rejected,
                    prior_max_time: prior,
                    max_time,
                };
                if op
                    .capture
                    .as_ref()
                    .is_some_and(|p| (p.cursor..p.end).any(|s| op.state.peek(s).visited != p.epoch))
                {
                    touched_before_written += 1;
                }
                op.process(b.clone(), &mut ctx, &mut out).expect("process");
                op.end_of_batch(&mut ctx, &mut out).expect("end of batch");
                outputs.push((out, rejected.len()));
            }
            assert!(outputs[0] == outputs[1], "seed {seed}: the same rows");
            if let Some(UnderWay {
                at_barrier,
                whole,
                left,
                stalled,
            }) = under_way.take()
            {
                // A stalled capture's walk makes no progress of its own
                // (only batches write keys) until the sweep is overdue.
                let budget = match (left, stalled) {
                    (0, _) => usize::MAX,
                    (_, true) => 0,
                    _ => 64,
                };
                if stalled && spread.batches_since_sweep == 0 {
                    overdue_sweeps += 1;
                }
                match spread.continue_capture(budget) {
                    Some(done) => {
                        extend(&mut spread_chains, &whole, done.parts, done.deltas);
                        let got = contents(&restored(&spread_chains));
                        assert_eq!(got, at_barrier, "seed {seed}, checkpoint {id}");
                    }
                    None => {
                        assert!(left > 0, "an unbounded budget finishes it");
                        under_way = Some(UnderWay {
                            at_barrier,
                            whole,
                            left: left - 1,
                            stalled,
                        });
                    }
                }
            }
            if step % 17 == 16 && under_way.is_none() {
                id += 1;
                let base = (id > 1).then_some(id - 1);
                // Whole when due, or without a chain to build on (each
                // operator's own: they may differ in emptied groups).
                let whole_in = |chains: &HashMap<u32, Vec<Vec<u8>>>| -> Vec<bool> {
                    (0..KEY_GROUPS)
                        .map(|g| {
                            base.is_none()
                                || !chains.contains_key(&g)
                                || (id + g as u64).is_multiple_of(3)
                        })
                        .collect()
                };
                let (sync_whole, whole) = (whole_in(&sync_chains), whole_in(&spread_chains));
                let (mut parts, mut deltas) = (GroupParts::new(), GroupParts::new());
                let full = |g: u32| sync_whole[g as usize];
                assert!(sync.capture(KEY_GROUPS, &full, &mut parts, &mut deltas));
                assert!(spread.begin_capture(KEY_GROUPS, &|g| whole[g as usize]));
                extend(&mut sync_chains, &sync_whole, parts, deltas);
                assert_eq!(contents(&restored(&sync_chains)), contents(&sync));
                // (The two may differ in expired keys: a sweep waits for
                // a capture under way.)
                let at_barrier = contents(&spread);
                let stalled = id.is_multiple_of(7);
                under_way = Some(UnderWay {
                    at_barrier,
                    whole,
                    left: if stalled { 400 } else { rng.next(4) as u32 },
                    stalled,
                });
            }
        }
        assert!(id > 30, "seed {seed}: {id} checkpoints");
        assert!(overdue_sweeps > 0, "seed {seed}: no sweep was overdue");
        assert!(
            touched_before_written > 0,
            "seed {seed}: no batch came before its capture was written"
        );
    }
}
