//! Tumbling and hopping windows: one accumulator per key and window, fired
//! when the watermark reaches the window's end, kept for the allowed
//! lateness after that so late events can update it and fire it again.
//!
//! Every firing of one key's window carries the same output id (a hash of
//! the key and the window's start) and, when the step declares a revision
//! column, its revision: 0 for the first firing, one more for each
//! re-firing. An upsert keyed on the id therefore ends with one row per
//! window, holding its final value.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, SchemaRef};
use weir_config::{Window, WindowKind};

use super::super::aggregate::{Acc, ResultColumn};
use super::super::keyed::{Key, KeyedMap};
use super::super::{watermark, Ctx, Operator, Outputs};
use super::{late_reason, view, Inputs};
use crate::hash::{hash_bytes, mix64};
use crate::state::{group_of, Damaged, GroupParts, StateReader, StateWriter};
use crate::EngineError;

/// One fixed window of one key.
struct FixedWindow {
    start: i64,
    accs: Vec<Acc>,
    /// Times it has fired: the revision of its next firing.
    firings: u64,
    /// Whether its content has been emitted (it then waits in `retained`
    /// for late events, else in `pending` for the watermark).
    fired: bool,
}

/// Tumbling and hopping windows.
pub struct FixedWindows {
    step: String,
    config: Window,
    inputs: Inputs,
    output: SchemaRef,
    key_type: DataType,
    slide: i64,
    state: KeyedMap<Vec<FixedWindow>>,
    /// Windows with content not emitted yet: (end, key, start).
    pending: BTreeSet<(i64, Key, i64)>,
    /// Fired windows kept for late events: (end + allowed lateness, key,
    /// start). Disjoint from `pending`.
    retained: BTreeSet<(i64, Key, i64)>,
    accs_template: Vec<Acc>,
}

impl FixedWindows {
    /// Builds the operator.
    pub fn new(
        step: &str,
        config: &Window,
        input: &SchemaRef,
        output: &SchemaRef,
    ) -> Result<Self, EngineError> {
        let inputs = Inputs::new(step, config, input)?;
        let accs_template = config
            .aggregates
            .iter()
            .zip(&inputs.kinds)
            .map(|(a, k)| Acc::new(a, *k))
            .collect();
        let slide = match config.kind {
            WindowKind::Hopping { slide_ms } => slide_ms,
            _ => config.size_ms,
        };
        let key_type = input.field(inputs.key).data_type().clone();
        Ok(FixedWindows {
            step: step.into(),
            config: config.clone(),
            inputs,
            output: output.clone(),
            key_type,
            slide,
            state: KeyedMap::default(),
            pending: BTreeSet::new(),
            retained: BTreeSet::new(),
            accs_template,
        })
    }

    /// When a window starting at `start` stops taking late events.
    fn expiry(&self, start: i64) -> i64 {
        start
            .saturating_add(self.config.size_ms)
            .saturating_add(self.config.allowed_lateness_ms)
    }

    /// Fires the pending windows that end by `until` and drops the fired
    /// ones whose allowed lateness has passed by then (all of them at the
    /// end of input, `until == i64::MAX`).
    fn fire(&mut self, until: i64, out: &mut Outputs) -> Result<(), EngineError> {
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut ids = Vec::new();
        let mut revisions = Vec::new();
        let mut results: Vec<ResultColumn> = self
            .config
            .aggregates
            .iter()
            .map(|a| ResultColumn::new(&a.data_type, 0))
            .collect();
        while let Some(first) = self.pending.first() {
            if first.0 > until {
                break;
            }
            // unwrap: `first` exists.
            let (_, key, start) = self.pending.pop_first().expect("pending window");
            let expiry = self.expiry(start);
            let Some(windows) = self.state.get_mut(&key) else {
                continue;
            };
            let Some(w) = windows.iter_mut().find(|w| w.start == start) else {
                continue;
            };
            for (a, r) in w.accs.iter().zip(&mut results) {
                r.push(a.result());
            }
            ids.push(window_id(&key, start));
            revisions.push(w.firings as i64);
            w.firings += 1;
            w.fired = true;
            if until == i64::MAX || expiry <= until {
                windows.retain(|w| w.start != start);
                if windows.is_empty() {
                    self.state.remove(&key);
                }
            } else {
                self.retained.insert((expiry, key.clone(), start));
            }
            keys.push(key);
            starts.push(start);
        }
        while let Some(first) = self.retained.first() {
            if first.0 > until {
                break;
            }
            // unwrap: `first` exists.
            let (_, key, start) = self.retained.pop_first().expect("retained window");
            if let Some(windows) = self.state.get_mut(&key) {
                windows.retain(|w| w.start != start);
                if windows.is_empty() {
                    self.state.remove(&key);
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let n = keys.len();
        let size = self.config.size_ms;
        let mut columns: Vec<ArrayRef> = vec![key_array(&keys, &self.key_type)];
        columns.push(Arc::new(Int64Array::from_iter_values(
            starts.iter().copied(),
        )));
        columns.push(Arc::new(Int64Array::from_iter_values(
            starts.iter().map(|s| s.saturating_add(size)),
        )));
        columns.extend(results.into_iter().map(ResultColumn::finish));
        if self.config.revision_column.is_some() {
            columns.push(Arc::new(Int64Array::from(revisions)));
        }
        columns.push(Arc::new(UInt64Array::from(ids)));
        columns.push(Arc::new(Int64Array::from(vec![i64::MIN; n])));
        let batch = RecordBatch::try_new(self.output.clone(), columns)
            .map_err(|e| EngineError::compute(&self.step, e))?;
        out.push((0, batch));
        Ok(())
    }
}

/// The output id of a window result: a hash of the key and the window's
/// start, top bit set (source positions have it clear). The same for every
/// firing of one key's window, so a re-firing replaces the earlier row in
/// a sink that upserts by id; deterministic on replay; distinct for the
/// overlapping windows of hopping steps.
fn window_id(key: &Key, start: i64) -> u64 {
    let key_hash = match key {
        Key::Null => 0x6e75_6c6c_6b65_7921,
        Key::Int(v) => mix64(*v as u64),
        Key::Str(s) => hash_bytes(s.as_bytes()),
    };
    // Chained, not xor-ed side by side: an integer key and a start must
    // not swap places without changing the id.
    (1 << 63) | (mix64(mix64(key_hash) ^ start as u64) >> 1)
}

fn key_array(keys: &[Key], dt: &DataType) -> ArrayRef {
    let ints = || {
        keys.iter().map(|k| match k {
            Key::Int(v) => Some(*v),
            _ => None,
        })
    };
    match dt {
        DataType::Utf8 => Arc::new(StringArray::from(
            keys.iter()
                .map(|k| match k {
                    Key::Str(s) => Some(s.as_ref()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
        )),
        DataType::Int32 => Arc::new(arrow_array::Int32Array::from(
            ints().map(|v| v.map(|x| x as i32)).collect::<Vec<_>>(),
        )),
        DataType::UInt32 => Arc::new(arrow_array::UInt32Array::from(
            ints().map(|v| v.map(|x| x as u32)).collect::<Vec<_>>(),
        )),
        DataType::UInt64 => Arc::new(UInt64Array::from(
            ints().map(|v| v.map(|x| x as u64)).collect::<Vec<_>>(),
        )),
        DataType::Boolean => Arc::new(BooleanArray::from(
            ints().map(|v| v.map(|x| x != 0)).collect::<Vec<_>>(),
        )),
        _ => Arc::new(Int64Array::from(ints().collect::<Vec<_>>())),
    }
}

impl Operator for FixedWindows {
    fn state_entries(&self) -> usize {
        self.pending.len() + self.retained.len()
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &mut Ctx<'_>,
        _out: &mut Outputs,
    ) -> Result<(), EngineError> {
        let v = view(&self.inputs, &batch, &self.step)?;
        let keys = self.inputs.keys(&batch, &self.step)?;
        let floats = self.inputs.floats();
        let size = self.config.size_ms;
        let lateness = self.config.allowed_lateness_ms;
        let slide = self.slide;
        for row in 0..batch.num_rows() {
            let t = v.times[row];
            let wm = v.watermark(row, ctx, self.config.max_out_of_orderness_ms);
            // The event's windows start at multiples of the slide in
            // (t - size, t]; those still taking events end after
            // `wm - lateness`, i.e. start after `wm - lateness - size`.
            let last_start = t.div_euclid(slide) * slide;
            let open_after = wm.saturating_sub(lateness).saturating_sub(size);
            let lo = t.saturating_sub(size).max(open_after);
            if last_start <= lo {
                let reason = late_reason(t, last_start.saturating_add(size), wm, lateness);
                v.reject(ctx, &self.step, &batch, row, reason);
                continue;
            }
            let template = &self.accs_template;
            let windows = self.state.entry(&keys, row, Vec::new);
            let mut owned_key: Option<Key> = None;
            let mut start = last_start;
            while start > lo {
                let w = match windows.iter_mut().position(|w| w.start == start) {
                    Some(i) => &mut windows[i],
                    None => {
                        windows.push(FixedWindow {
                            start,
                            accs: template.clone(),
                            firings: 0,
                            fired: false,
                        });
                        let key = owned_key
                            .get_or_insert_with(|| KeyedMap::<()>::key_of(&keys, row))
                            .clone();
                        self.pending
                            .insert((start.saturating_add(size), key, start));
                        // unwrap: pushed just above.
                        windows.last_mut().expect("window just added")
                    }
                };
                for (i, a) in w.accs.iter_mut().enumerate() {
                    a.add(v.values[i][row], v.valid[i][row], floats[i]);
                }
                if w.fired {
                    // A late event within the allowed lateness: the window
                    // fires again at the end of this batch.
                    w.fired = false;
                    let key = owned_key
                        .get_or_insert_with(|| KeyedMap::<()>::key_of(&keys, row))
                        .clone();
                    let end = start.saturating_add(size);
                    self.retained
                        .remove(&(end.saturating_add(lateness), key.clone(), start));
                    self.pending.insert((end, key, start));
                }
                start -= slide;
            }
        }
        Ok(())
    }

    fn end_of_batch(&mut self, ctx: &mut Ctx<'_>, out: &mut Outputs) -> Result<(), EngineError> {
        let wm = watermark(ctx.max_time, self.config.max_out_of_orderness_ms);
        if wm != i64::MIN {
            self.fire(wm, out)?;
        }
        Ok(())
    }

    fn end_of_input(&mut self, _ctx: &mut Ctx<'_>, out: &mut Outputs) -> Result<(), EngineError> {
        self.fire(i64::MAX, out)
    }

    fn snapshot(&self, key_groups: u32, parts: &mut GroupParts) {
        // Per key: the key, then its windows (start, fired, firings,
        // accumulators). Pending and retained sets follow from them.
        for (key, windows) in self.state.iter() {
            let buf = parts.entry(group_of(&key, key_groups)).or_default();
            let mut w = StateWriter(buf);
            w.key(&key);
            w.u64(windows.len() as u64);
            for win in windows {
                w.i64(win.start);
                w.u8(win.fired as u8);
                w.u64(win.firings);
                for a in &win.accs {
                    a.save(&mut w);
                }
            }
        }
    }

    fn restore(&mut self, group: &[u8]) -> Result<(), Damaged> {
        let size = self.config.size_ms;
        let mut r = StateReader::new(group);
        while !r.done() {
            let key = r.key()?;
            let n = r.count(10)?;
            let mut windows = Vec::with_capacity(n);
            for _ in 0..n {
                let start = r.i64()?;
                let fired = r.u8()? != 0;
                let firings = r.u64()?;
                let mut accs = self.accs_template.clone();
                for a in &mut accs {
                    a.load(&mut r)?;
                }
                if fired {
                    self.retained
                        .insert((self.expiry(start), key.clone(), start));
                } else {
                    self.pending
                        .insert((start.saturating_add(size), key.clone(), start));
                }
                windows.push(FixedWindow {
                    start,
                    accs,
                    firings,
                    fired,
                });
            }
            self.state.insert(key, windows);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;
    use arrow_schema::{Field, Schema};
    use weir_config::{Aggregate, AggregateFunction, LatePolicy};

    #[test]
    fn window_ids_tell_keys_and_starts_apart() {
        // An integer key equal to a start, and the swapped pair.
        assert_ne!(
            window_id(&Key::Int(0), 10_000),
            window_id(&Key::Int(10_000), 0)
        );
        assert_ne!(window_id(&Key::Null, 0), window_id(&Key::Int(0), 0));
        assert_ne!(
            window_id(&Key::Str("a".into()), 0),
            window_id(&Key::Str("a".into()), 5000)
        );
        let id = window_id(&Key::Str("a".into()), 0);
        assert_eq!(id, window_id(&Key::Str("a".into()), 0));
        assert_eq!(id >> 63, 1, "source positions have the top bit clear");
    }

    /// Key `k`, event time `ts` and the hidden columns.
    fn input_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("ts", DataType::Int64, false),
            Field::new(weir_config::POSITION_COLUMN, DataType::UInt64, false),
            Field::new(weir_config::PRIOR_MAX_TIME_COLUMN, DataType::Int64, false),
        ]))
    }

    /// A tumbling 10 s count window, no out-of-orderness, 5 s of allowed
    /// lateness, revisions in `rev`.
    fn operator() -> FixedWindows {
        let output = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("window_start", DataType::Int64, false),
            Field::new("window_end", DataType::Int64, false),
            Field::new("n", DataType::Int64, true),
            Field::new("rev", DataType::Int64, false),
            Field::new(weir_config::POSITION_COLUMN, DataType::UInt64, false),
            Field::new(weir_config::PRIOR_MAX_TIME_COLUMN, DataType::Int64, false),
        ]));
        let config = Window {
            kind: WindowKind::Tumbling,
            size_ms: 10_000,
            time_column: "ts".into(),
            key_column: "k".into(),
            max_out_of_orderness_ms: 0,
            aggregates: vec![Aggregate {
                name: "n".into(),
                function: AggregateFunction::Count,
                column: None,
                data_type: DataType::Int64,
            }],
            late: LatePolicy::DeadLetter,
            allowed_lateness_ms: 5000,
            revision_column: Some("rev".into()),
        };
        FixedWindows::new("w", &config, &input_schema(), &output).expect("operator")
    }

    /// Feeds one event at `ts` (source position `pos`) as its own batch
    /// after events up to `max_before`; returns (start, n, rev, id) per
    /// fired row and the number of dead letters.
    fn feed(
        op: &mut FixedWindows,
        ts: i64,
        pos: u64,
        max_before: i64,
    ) -> (Vec<(i64, i64, i64, u64)>, usize) {
        let batch = RecordBatch::try_new(
            input_schema(),
            vec![
                Arc::new(StringArray::from(vec!["a"])),
                Arc::new(Int64Array::from(vec![ts])),
                Arc::new(UInt64Array::from(vec![pos])),
                Arc::new(Int64Array::from(vec![i64::MIN])),
            ],
        )
        .expect("batch");
        let mut rejected = Vec::new();
        let mut out = Vec::new();
        let mut ctx = Ctx {
            rejected: &mut rejected,
            prior_max_time: max_before,
            max_time: max_before.max(ts),
        };
        op.process(batch, &mut ctx, &mut out).expect("process");
        op.end_of_batch(&mut ctx, &mut out).expect("end of batch");
        let col = |b: &RecordBatch, i: usize| {
            b.column(i)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("int column")
                .clone()
        };
        let mut rows = Vec::new();
        for (_, b) in &out {
            let ids = b
                .column(5)
                .as_any()
                .downcast_ref::<UInt64Array>()
                .expect("ids");
            for r in 0..b.num_rows() {
                rows.push((
                    col(b, 1).value(r),
                    col(b, 3).value(r),
                    col(b, 4).value(r),
                    ids.value(r),
                ));
            }
        }
        (rows, rejected.len())
    }

    #[test]
    fn a_restored_window_fires_again_with_the_next_revision() {
        let mut op = operator();
        assert_eq!(feed(&mut op, 1000, 0, i64::MIN).0, []);
        let (fired, _) = feed(&mut op, 12_000, 1, 1000);
        assert_eq!(fired.len(), 1);
        let (start, n, rev, id) = fired[0];
        assert_eq!((start, n, rev), (0, 1, 0));
        assert_eq!(
            op.state_entries(),
            2,
            "[0, 10000) retained, [10000, 20000) pending"
        );

        // Checkpoint, restore into a fresh operator, go on.
        let mut parts = GroupParts::new();
        op.snapshot(128, &mut parts);
        let mut restored = operator();
        for part in parts.values() {
            restored.restore(part).expect("restore");
        }
        assert_eq!(restored.state_entries(), 2);
        for o in [&mut op, &mut restored] {
            // Within the allowed lateness: fires again, same id, revision 1.
            assert_eq!(feed(o, 2000, 2, 12_000), (vec![(0, 2, 1, id)], 0));
            // The watermark reaches 15000: [0, 10000) is dropped, so a
            // later event for it is a dead letter, not a new window.
            assert_eq!(feed(o, 15_000, 3, 12_000), (vec![], 0));
            assert_eq!(feed(o, 3000, 4, 15_000), (vec![], 1));
            assert_eq!(o.state_entries(), 1);
        }
    }
}
