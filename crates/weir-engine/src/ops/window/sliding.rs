//! Sliding windows: each event is emitted at once with the aggregates of
//! its key's events in `(t - size, t]` that arrived before it or with it.
//! Kept apart from fixed windows because its state is the events
//! themselves, with running aggregates of the key's front window beside
//! them (`front.rs`): an event that arrives in time order reads its
//! aggregates there in O(1) amortised; one that arrives behind the key's
//! newest event gets a rescan of its own window, which gives the same
//! bits (the aggregates do not depend on the order of their values).

use std::collections::VecDeque;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use weir_config::Window;

use super::super::aggregate::ResultColumn;
use super::super::keyed::KeyedMap;
use super::super::stateless::keep;
use super::super::{watermark, Ctx, Operator, Outputs};
use super::front::FrontWindow;
use super::{view, Inputs};
use crate::state::{group_of, Damaged, GroupParts, StateReader, StateWriter};
use crate::EngineError;

/// Per-key state of a sliding window: the retained events, oldest first,
/// in one flat buffer so an event's time, validity and values share cache
/// lines. Each event takes `2 + aggregates` words: time, validity bits (bit
/// i = aggregate i's input is non-null), then one value per aggregate.
/// Beside them, the running aggregates of the front window: the events
/// from index `front` on (those with time above the newest time less the
/// size).
struct SlidingState {
    words: VecDeque<u64>,
    front: usize,
    /// Arrival number of the next event: orders equal times for extremes.
    seq: u64,
    running: FrontWindow,
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
    /// Accumulators for the rescan of an out-of-order event's window,
    /// reset (not rebuilt) for each.
    scratch: FrontWindow,
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
        let scratch = FrontWindow::new(&config.aggregates, &inputs.kinds);
        if config.aggregates.len() > 64 {
            return Err(EngineError::build(step, "at most 64 aggregates per window"));
        }
        Ok(SlidingWindow {
            step: step.into(),
            config: config.clone(),
            inputs,
            output: output.clone(),
            state: KeyedMap::default(),
            scratch,
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

    fn stride(&self) -> usize {
        2 + self.config.aggregates.len()
    }

    /// A key's state holding `words`, its running aggregates rebuilt from
    /// the front window (at restore).
    fn rebuilt(&self, words: VecDeque<u64>) -> SlidingState {
        let stride = self.stride();
        let mut st = SlidingState {
            words,
            front: 0,
            seq: 0,
            running: FrontWindow::new(&self.config.aggregates, &self.inputs.kinds),
        };
        let n = st.words.len() / stride;
        if n > 0 {
            let lo = st.time(n - 1, stride).saturating_sub(self.config.size_ms);
            while st.front < n && st.time(st.front, stride) <= lo {
                st.front += 1;
            }
            let words = st.words.make_contiguous();
            for (seq, e) in words[st.front * stride..].chunks_exact(stride).enumerate() {
                st.running.add(e, seq as u64, true);
            }
            st.seq = (n - st.front) as u64;
        }
        st
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
        let stride = self.stride();
        let size = self.config.size_ms;
        let (aggregates, kinds) = (&self.config.aggregates, &self.inputs.kinds);
        let mut entry = vec![0u64; stride];
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
                front: 0,
                seq: 0,
                running: FrontWindow::new(aggregates, kinds),
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
            entry[0] = t as u64;
            entry[1] = bits;
            for (i, vals) in v.values.iter().enumerate() {
                entry[2 + i] = vals[row];
            }
            let seq = st.seq;
            st.seq += 1;
            let newest = at == events;
            if newest {
                st.words.extend(entry.iter().copied());
                st.running.add(&entry, seq, true);
                // The front window is now (t - size, t].
                let lo = t.saturating_sub(size);
                let words = st.words.make_contiguous();
                while st.front < at && (words[st.front * stride] as i64) <= lo {
                    let base = st.front * stride;
                    st.running.remove(&words[base..base + stride]);
                    st.front += 1;
                }
                st.running.evict_through(lo);
            } else {
                let base = at * stride;
                for (j, &w) in entry.iter().enumerate() {
                    st.words.insert(base + j, w);
                }
                let newest_time = st.time(events, stride);
                if t > newest_time.saturating_sub(size) {
                    st.running.add(&entry, seq, false);
                } else {
                    // Behind the front window, it pushes the window's
                    // first entry one place on.
                    st.front += 1;
                }
            }
            // Evict what no future accepted event can see (and this one
            // does not need): all of it is before the front window.
            let horizon = horizon.min(t.saturating_sub(size));
            let mut evict = 0;
            while evict < at && st.time(evict, stride) <= horizon {
                evict += 1;
            }
            if evict > 0 {
                st.words.drain(..evict * stride);
                at -= evict;
                st.front -= evict;
            }
            if newest {
                for (a, r) in st.running.aggs.iter().zip(&mut results) {
                    r.push(a.result());
                }
                continue;
            }
            // An out-of-order event: its window (t - size, t], up to its
            // own slot, is not the front window; rescan it.
            let lo = t.saturating_sub(size);
            let mut first = at;
            while first > 0 && st.time(first - 1, stride) > lo {
                first -= 1;
            }
            self.scratch.reset();
            let words = st.words.make_contiguous();
            let window = &words[first * stride..(at + 1) * stride];
            for (i, e) in window.chunks_exact(stride).enumerate() {
                self.scratch.add(e, i as u64, true);
            }
            for (a, r) in self.scratch.aggs.iter().zip(&mut results) {
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
        let stride = self.stride();
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
            let st = self.rebuilt(words);
            self.state.insert(key, st);
        }
        Ok(())
    }

    fn end_of_batch(&mut self, ctx: &mut Ctx<'_>, _out: &mut Outputs) -> Result<(), EngineError> {
        self.batches_since_sweep += 1;
        if self.batches_since_sweep >= 256 {
            self.batches_since_sweep = 0;
            let horizon =
                self.horizon(watermark(ctx.max_time, self.config.max_out_of_orderness_ms));
            let stride = self.stride();
            self.state.retain(|s| {
                let n = s.words.len() / stride;
                n > 0 && s.time(n - 1, stride) > horizon
            });
        }
        Ok(())
    }
}
