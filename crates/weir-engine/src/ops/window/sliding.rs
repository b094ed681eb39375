//! Sliding windows: each event is emitted at once with the aggregates of
//! its key's events in `(t - size, t]` that arrived before it or with it.
//! Kept apart from fixed windows because its state is the events
//! themselves, not accumulators.

use std::collections::VecDeque;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use weir_config::Window;

use super::super::aggregate::{Acc, ResultColumn};
use super::super::keyed::KeyedMap;
use super::super::stateless::keep;
use super::super::{watermark, Ctx, Operator, Outputs};
use super::{view, Inputs};
use crate::state::{group_of, Damaged, GroupParts, StateReader, StateWriter};
use crate::EngineError;

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

    /// Events at or before this time are no longer needed: an event
    /// accepted from now on is at `wm - allowed lateness` or later and
    /// looks back `size` from its time.
    fn horizon(&self, wm: i64) -> i64 {
        wm.saturating_sub(self.config.allowed_lateness_ms)
            .saturating_sub(self.config.size_ms)
    }

    /// Whether an event at `t` is late under watermark `wm`: its window
    /// `[t - size + 1, t + 1)` ended at least the allowed lateness before
    /// the watermark.
    #[inline]
    fn is_late(&self, t: i64, wm: i64) -> bool {
        t.saturating_add(1)
            .saturating_add(self.config.allowed_lateness_ms)
            <= wm
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
        let keys = self.inputs.keys(&batch, &self.step)?;
        let mut results: Vec<ResultColumn> = self
            .config
            .aggregates
            .iter()
            .map(|a| ResultColumn::new(&a.data_type, rows))
            .collect();
        let mut kept = Vec::with_capacity(rows);
        let stride = 2 + self.accs.len();
        let size = self.config.size_ms;
        let floats = self.inputs.floats();
        for row in 0..rows {
            let t = v.times[row];
            let wm = v.watermark(row, ctx, self.config.max_out_of_orderness_ms);
            if self.is_late(t, wm) {
                let reason = match self.config.allowed_lateness_ms {
                    0 => format!("late event: event time {t} is behind the watermark {wm}"),
                    l => format!(
                        "late event: event time {t} is behind the watermark {wm} by more than \
                         the allowed lateness of {l} ms"
                    ),
                };
                v.reject(ctx, &self.step, &batch, row, reason);
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
            // Evict what no future accepted event can see (and this one
            // does not need).
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
