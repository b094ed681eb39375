//! Event-time windows per key.
//!
//! *Sliding* windows are evaluated per event: each event gets the
//! aggregates of its key's events with time in `(t - size, t]` that arrived
//! before it or with it, and is emitted at once (no waiting). *Tumbling* and
//! *hopping* windows collect per window and fire when the watermark passes
//! the window end.
//!
//! Watermarks are per record: the largest event time among all source
//! records before it, minus the out-of-orderness bound. That makes late
//! decisions independent of batching and of the number of shards. Late
//! records go to the dead-letter destination or, with `late = "update"`,
//! are applied anyway (fixed windows keep fired state for one more window
//! length so late records update them and re-fire).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow_schema::{DataType, SchemaRef};
use weir_config::{LatePolicy, Window, WindowKind, POSITION_COLUMN, PRIOR_MAX_TIME_COLUMN};

use super::aggregate::{input_kind, read_values, Acc, InputKind, ResultColumn};
use super::keyed::{Key, KeyColumn, KeyedMap};
use super::stateless::keep;
use super::{watermark, Ctx, Operator, Outputs};
use crate::dead_letter::Rejected;
use crate::state::{group_of, Damaged, GroupParts, StateReader, StateWriter};
use crate::EngineError;

/// Column indices and value kinds the window reads from its input.
struct Inputs {
    key: usize,
    time: usize,
    position: usize,
    prior_max: usize,
    columns: Vec<Option<usize>>,
    kinds: Vec<InputKind>,
}

impl Inputs {
    fn new(step: &str, w: &Window, schema: &SchemaRef) -> Result<Self, EngineError> {
        let idx = |n: &str| schema.index_of(n).map_err(|e| EngineError::build(step, e));
        let columns: Vec<Option<usize>> = w
            .aggregates
            .iter()
            .map(|a| a.column.as_deref().map(idx).transpose())
            .collect::<Result<_, _>>()?;
        let kinds = w
            .aggregates
            .iter()
            .zip(&columns)
            .map(|(a, c)| input_kind(a, c.map(|i| schema.field(i).data_type())))
            .collect();
        Ok(Inputs {
            key: idx(&w.key_column)?,
            time: idx(&w.time_column)?,
            position: idx(POSITION_COLUMN)?,
            prior_max: idx(PRIOR_MAX_TIME_COLUMN)?,
            columns,
            kinds,
        })
    }
}

/// An integer column widened to i64; event times above `i64::MAX` clamp.
fn int_column(batch: &RecordBatch, i: usize) -> Result<Vec<i64>, String> {
    super::keyed::int_values(batch.column(i), |v| v.min(i64::MAX as u64) as i64)
        .ok_or_else(|| format!("column {i} is not an integer column"))
}

/// Per-batch columns read once.
struct BatchView {
    times: Vec<i64>,
    positions: Vec<u64>,
    prior: Vec<i64>,
    values: Vec<Vec<u64>>,
    valid: Vec<Vec<bool>>,
}

fn view(inputs: &Inputs, batch: &RecordBatch, step: &str) -> Result<BatchView, EngineError> {
    let e = |what: &'static str| move |_| EngineError::invariant(format!("step {step}"), what);
    let times =
        int_column(batch, inputs.time).map_err(e("the time column is not an integer column"))?;
    let positions = batch
        .column(inputs.position)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .map(|a| a.values().to_vec())
        .ok_or_else(|| EngineError::invariant(format!("step {step}"), "bad position column"))?;
    let prior = int_column(batch, inputs.prior_max)
        .map_err(e("the prior-maximum column is not an integer column"))?;
    let mut values = Vec::with_capacity(inputs.columns.len());
    let mut valid = Vec::with_capacity(inputs.columns.len());
    for (c, k) in inputs.columns.iter().zip(&inputs.kinds) {
        let mut v = Vec::new();
        let mut ok = Vec::new();
        match c {
            Some(i) => read_values(batch.column(*i), *k, &mut v, &mut ok),
            None => {
                v.resize(batch.num_rows(), 0);
                ok.resize(batch.num_rows(), true);
            }
        }
        values.push(v);
        valid.push(ok);
    }
    Ok(BatchView {
        times,
        positions,
        prior,
        values,
        valid,
    })
}

fn late_reason(t: i64, wm: i64) -> String {
    format!("late event: event time {t} is behind the watermark {wm}")
}

/// Per-key state of a sliding window: the retained events, oldest first,
/// in one flat buffer so an event's time, validity and values share cache
/// lines. Each event takes `2 + aggregates` words: time, validity bits (bit
/// i = aggregate i's input is non-null), then one value per aggregate.
#[derive(Default)]
struct SlidingState {
    words: VecDeque<u64>,
}

impl SlidingState {
    #[inline]
    fn time(&self, event: usize, stride: usize) -> i64 {
        self.words[event * stride] as i64
    }
}

/// A sliding (per-event) window.
pub struct SlidingWindow {
    step: String,
    config: Window,
    inputs: Inputs,
    output: SchemaRef,
    state: KeyedMap<SlidingState>,
    accs: Vec<Acc>,
    batches_since_sweep: u32,
}

impl SlidingWindow {
    /// Builds the operator.
    pub fn new(
        step: &str,
        config: &Window,
        input: &SchemaRef,
        output: &SchemaRef,
    ) -> Result<Self, EngineError> {
        let inputs = Inputs::new(step, config, input)?;
        let accs = config
            .aggregates
            .iter()
            .zip(&inputs.kinds)
            .map(|(a, k)| Acc::new(a, *k))
            .collect();
        if config.aggregates.len() > 64 {
            return Err(EngineError::build(step, "at most 64 aggregates per window"));
        }
        Ok(SlidingWindow {
            step: step.into(),
            config: config.clone(),
            inputs,
            output: output.clone(),
            state: KeyedMap::default(),
            accs,
            batches_since_sweep: 0,
        })
    }
}

impl SlidingWindow {
    /// Events at or before this time are no longer needed.
    fn horizon(&self, wm: i64) -> i64 {
        let keep = match self.config.late {
            LatePolicy::DeadLetter => self.config.size_ms,
            LatePolicy::Update => self.config.size_ms.saturating_mul(2),
        };
        wm.saturating_sub(keep)
    }
}

impl Operator for SlidingWindow {
    fn state_entries(&self) -> usize {
        self.state.len()
    }

    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError> {
        let rows = batch.num_rows();
        let v = view(&self.inputs, &batch, &self.step)?;
        let keys = KeyColumn::read(batch.column(self.inputs.key)).map_err(|_| {
            EngineError::invariant(
                format!("step {}", self.step),
                "the key column has a type validation refuses",
            )
        })?;
        let mut results: Vec<ResultColumn> = self
            .config
            .aggregates
            .iter()
            .map(|a| ResultColumn::new(&a.data_type, rows))
            .collect();
        let mut kept = Vec::with_capacity(rows);
        let stride = 2 + self.accs.len();
        let size = self.config.size_ms;
        let floats: Vec<bool> = self
            .inputs
            .kinds
            .iter()
            .map(|k| *k == InputKind::Float)
            .collect();
        for row in 0..rows {
            let t = v.times[row];
            let wm = watermark(
                ctx.prior_max_time.max(v.prior[row]),
                self.config.max_out_of_orderness_ms,
            );
            if t < wm && self.config.late == LatePolicy::DeadLetter {
                ctx.rejected.push(Rejected {
                    step: self.step.clone(),
                    position: v.positions[row],
                    reason: late_reason(t, wm),
                    bytes: Vec::new(),
                    record: Some(crate::encode::row_json(&batch, row)),
                });
                kept.push(false);
                continue;
            }
            kept.push(true);
            let horizon = self.horizon(wm);
            let st = self.state.entry(&keys, row, || SlidingState {
                words: VecDeque::with_capacity(8 * stride),
            });
            let events = st.words.len() / stride;
            // Insert in time order, after events with the same time.
            let mut at = events;
            while at > 0 && st.time(at - 1, stride) > t {
                at -= 1;
            }
            let mut bits = 0u64;
            for (i, ok) in v.valid.iter().enumerate() {
                bits |= (ok[row] as u64) << i;
            }
            if at == events {
                st.words.push_back(t as u64);
                st.words.push_back(bits);
                st.words.extend(v.values.iter().map(|vals| vals[row]));
            } else {
                let base = at * stride;
                st.words.insert(base, t as u64);
                st.words.insert(base + 1, bits);
                for (i, vals) in v.values.iter().enumerate() {
                    st.words.insert(base + 2 + i, vals[row]);
                }
            }
            // Evict what no future accepted event can see: on-time events
            // look back `size` from the watermark; with late updates, kept
            // state reaches one window length further.
            let horizon = horizon.min(t.saturating_sub(size));
            let mut evict = 0;
            while evict < at && st.time(evict, stride) <= horizon {
                evict += 1;
            }
            if evict > 0 {
                st.words.drain(..evict * stride);
                at -= evict;
            }
            // The window of this event: (t - size, t], up to its own slot.
            let lo = t.saturating_sub(size);
            let mut first = at;
            while first > 0 && st.time(first - 1, stride) > lo {
                first -= 1;
            }
            for a in &mut self.accs {
                a.reset();
            }
            let words = st.words.make_contiguous();
            let window = &words[first * stride..(at + 1) * stride];
            for (i, a) in self.accs.iter_mut().enumerate() {
                a.add_entries(window, stride, i, floats[i]);
            }
            for (a, r) in self.accs.iter().zip(&mut results) {
                r.push(a.result());
            }
        }
        let kept_all = kept.iter().all(|&k| k);
        let base = if kept_all {
            batch
        } else {
            keep(batch, &BooleanArray::from(kept))
                .map_err(|e| EngineError::compute(&self.step, e))?
        };
        if base.num_rows() == 0 {
            return Ok(());
        }
        // The output schema is the input's columns followed by the aggregates.
        let mut columns: Vec<ArrayRef> = base.columns().to_vec();
        columns.extend(results.into_iter().map(ResultColumn::finish));
        let out_batch = RecordBatch::try_new(self.output.clone(), columns)
            .map_err(|e| EngineError::compute(&self.step, e))?;
        out.push((0, out_batch));
        Ok(())
    }

    fn snapshot(&self, key_groups: u32, parts: &mut GroupParts) {
        // Per key: the key, then its retained events' words.
        for (key, st) in self.state.iter() {
            let buf = parts.entry(group_of(&key, key_groups)).or_default();
            let mut w = StateWriter(buf);
            w.key(&key);
            w.u64(st.words.len() as u64);
            for &x in &st.words {
                w.i64(x as i64);
            }
        }
    }

    fn restore(&mut self, group: &[u8]) -> Result<(), Damaged> {
        let stride = 2 + self.accs.len();
        let mut r = StateReader::new(group);
        while !r.done() {
            let key = r.key()?;
            let n = r.count(8)?;
            if n % stride != 0 {
                return Err(Damaged);
            }
            let mut words = VecDeque::with_capacity(n);
            for _ in 0..n {
                words.push_back(r.i64()? as u64);
            }
            self.state.insert(key, SlidingState { words });
        }
        Ok(())
    }

    fn end_of_batch(&mut self, ctx: &mut Ctx<'_>, _out: &mut Outputs) -> Result<(), EngineError> {
        self.batches_since_sweep += 1;
        if self.batches_since_sweep >= 256 {
            self.batches_since_sweep = 0;
            let horizon =
                self.horizon(watermark(ctx.max_time, self.config.max_out_of_orderness_ms));
            let stride = 2 + self.accs.len();
            self.state.retain(|s| {
                let n = s.words.len() / stride;
                n > 0 && s.time(n - 1, stride) > horizon
            });
        }
        Ok(())
    }
}

/// One fixed (tumbling or hopping) window of one key.
struct FixedWindow {
    start: i64,
    accs: Vec<Acc>,
    last_position: u64,
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
    /// Windows waiting to fire: (end, key, start).
    pending: BTreeSet<(i64, Key, i64)>,
    /// Fired windows kept for late updates: (expiry, key, start).
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

    fn fire(&mut self, until: i64, out: &mut Outputs) -> Result<(), EngineError> {
        let mut keys = Vec::new();
        let mut starts = Vec::new();
        let mut positions = Vec::new();
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
            let (end, key, start) = self.pending.pop_first().expect("pending window");
            let Some(windows) = self.state.get_mut(&key) else {
                continue;
            };
            let Some(w) = windows.iter_mut().find(|w| w.start == start) else {
                continue;
            };
            for (a, r) in w.accs.iter().zip(&mut results) {
                r.push(a.result());
            }
            keys.push(key.clone());
            starts.push(start);
            positions.push(window_id(w.last_position, start));
            if self.config.late == LatePolicy::Update && until != i64::MAX {
                w.fired = true;
                self.retained
                    .insert((end + self.config.size_ms, key, start));
            } else {
                windows.retain(|w| w.start != start);
                if windows.is_empty() {
                    self.state.remove(&key);
                }
            }
        }
        // Expire retained windows.
        while let Some(first) = self.retained.first() {
            if first.0 > until {
                break;
            }
            // unwrap: `first` exists.
            let (_, key, start) = self.retained.pop_first().expect("retained window");
            if let Some(windows) = self.state.get_mut(&key) {
                windows.retain(|w| w.start != start || !w.fired);
                if windows.is_empty() {
                    self.state.remove(&key);
                }
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        let n = keys.len();
        let mut columns: Vec<ArrayRef> = vec![key_array(&keys, &self.key_type)];
        columns.push(Arc::new(Int64Array::from(starts.clone())));
        columns.push(Arc::new(Int64Array::from(
            starts
                .iter()
                .map(|s| s + self.config.size_ms)
                .collect::<Vec<_>>(),
        )));
        columns.extend(results.into_iter().map(ResultColumn::finish));
        columns.push(Arc::new(UInt64Array::from(positions)));
        columns.push(Arc::new(Int64Array::from(vec![i64::MIN; n])));
        let batch = RecordBatch::try_new(self.output.clone(), columns)
            .map_err(|e| EngineError::compute(&self.step, e))?;
        out.push((0, batch));
        Ok(())
    }
}

/// The position column of a window result: the last source position in
/// the window mixed with the window's start, top bit set. Deterministic on
/// replay (it depends on the window's contents, not on when it fired) and
/// distinct for the overlapping windows of hopping steps, so it serves as
/// the result's output id.
fn window_id(last_position: u64, start: i64) -> u64 {
    (1 << 63) | (crate::hash::mix64(last_position ^ crate::hash::mix64(start as u64)) >> 1)
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
        let keys = KeyColumn::read(batch.column(self.inputs.key)).map_err(|_| {
            EngineError::invariant(
                format!("step {}", self.step),
                "the key column has a type validation refuses",
            )
        })?;
        let floats: Vec<bool> = self
            .inputs
            .kinds
            .iter()
            .map(|k| *k == InputKind::Float)
            .collect();
        let size = self.config.size_ms;
        let slide = self.slide;
        for row in 0..batch.num_rows() {
            let t = v.times[row];
            let wm = watermark(
                ctx.prior_max_time.max(v.prior[row]),
                self.config.max_out_of_orderness_ms,
            );
            let late = t < wm;
            if late && self.config.late == LatePolicy::DeadLetter {
                ctx.rejected.push(Rejected {
                    step: self.step.clone(),
                    position: v.positions[row],
                    reason: late_reason(t, wm),
                    bytes: Vec::new(),
                    record: Some(crate::encode::row_json(&batch, row)),
                });
                continue;
            }
            let last_start = t.div_euclid(slide) * slide;
            let template = &self.accs_template;
            let windows = self.state.entry(&keys, row, Vec::new);
            let mut start = last_start;
            let mut owned_key: Option<Key> = None;
            while start > t.saturating_sub(size) {
                let w = match windows.iter_mut().position(|w| w.start == start) {
                    Some(i) => &mut windows[i],
                    None => {
                        windows.push(FixedWindow {
                            start,
                            accs: template.clone(),
                            last_position: 0,
                            fired: false,
                        });
                        let key = owned_key
                            .get_or_insert_with(|| KeyedMap::<()>::key_of(&keys, row))
                            .clone();
                        self.pending.insert((start + size, key, start));
                        // unwrap: pushed just above.
                        windows.last_mut().expect("window just added")
                    }
                };
                for (i, a) in w.accs.iter_mut().enumerate() {
                    a.add(v.values[i][row], v.valid[i][row], floats[i]);
                }
                w.last_position = w.last_position.max(v.positions[row]);
                if w.fired {
                    w.fired = false;
                    let key = owned_key
                        .get_or_insert_with(|| KeyedMap::<()>::key_of(&keys, row))
                        .clone();
                    self.pending.insert((start + size, key, start));
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
        // Per key: the key, then its windows (start, fired, last position,
        // accumulators). Pending and retained sets follow from them.
        for (key, windows) in self.state.iter() {
            let buf = parts.entry(group_of(&key, key_groups)).or_default();
            let mut w = StateWriter(buf);
            w.key(&key);
            w.u64(windows.len() as u64);
            for win in windows {
                w.i64(win.start);
                w.u8(win.fired as u8);
                w.u64(win.last_position);
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
                let last_position = r.u64()?;
                let mut accs = self.accs_template.clone();
                for a in &mut accs {
                    a.load(&mut r)?;
                }
                if fired {
                    self.retained
                        .insert((start + size + size, key.clone(), start));
                } else {
                    self.pending.insert((start + size, key.clone(), start));
                }
                windows.push(FixedWindow {
                    start,
                    accs,
                    last_position,
                    fired,
                });
            }
            self.state.insert(key, windows);
        }
        Ok(())
    }
}
