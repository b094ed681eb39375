//! Sliding windows: each event is emitted at once with the aggregates of
//! its key's events in `(t - size, t]` that arrived before it or with it.
//! Kept apart from fixed windows because its state is the events
//! themselves, with running aggregates of the key's front window beside
//! them (`front.rs`): an event that arrives in time order reads its
//! aggregates there in O(1) amortised; one that arrives behind the key's
//! newest event gets a rescan of its own window, which gives the same
//! bits (the aggregates do not depend on the order of their values).

use std::collections::HashMap;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use weir_config::Window;

use super::super::aggregate::{InputKind, ResultColumn};
use super::super::keyed::{Key, KeyedMap};
use super::super::stateless::keep;
use super::super::{watermark, Ctx, Operator, Outputs};
use super::capture::{PartSizes, Pending};
use super::events::{
    apply_delta, read_full, restored, write_removed, Events, Layout, COMPACT_PART,
};
use super::front::FrontWindow;
use super::{view, Inputs};
use crate::prefetch::prefetch;
use crate::state::{group_of, Captured, Damaged, GroupParts};
use crate::EngineError;

/// Per-key state of a sliding window: the retained events, oldest first
/// (`events.rs`: compact rows, changes since the last capture), and the
/// running aggregates of the front window: the events from index `front`
/// on (those with time above the newest time less the size).
struct SlidingState {
    events: Events,
    front: usize,
    /// Arrival number of the next event: orders equal times for extremes.
    seq: u64,
    running: FrontWindow,
    /// The capture that last visited this key (`capture.rs`).
    visited: u32,
}

/// A sliding (per-event) window.
pub struct SlidingWindow {
    step: String,
    config: Window,
    inputs: Inputs,
    layout: Layout,
    output: SchemaRef,
    state: KeyedMap<SlidingState>,
    /// Keys the last capture wrote whose state has gone since.
    removed: Vec<Key>,
    /// Accumulators for the rescan of an out-of-order event's window,
    /// reset (not rebuilt) for each.
    scratch: FrontWindow,
    /// Each row's key slot in the batch at hand (kept for its allocation).
    slots: Vec<u32>,
    batches_since_sweep: u32,
    /// A capture under way (`capture.rs`).
    capture: Option<Pending>,
    /// The stamp of the latest capture begun.
    epoch: u32,
    /// What each part took in the latest capture.
    last_sizes: PartSizes,
}

/// The slot of a late row, which gets no state.
const LATE: u32 = u32::MAX;

/// How many rows ahead a row's state starts to be prefetched: far enough
/// to hide a miss to memory behind the work on the rows between.
const AHEAD: usize = 8;

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
        let reads: Vec<Option<(usize, InputKind)>> = inputs
            .columns
            .iter()
            .zip(&inputs.kinds)
            .map(|(c, k)| c.map(|c| (c, *k)))
            .collect();
        Ok(SlidingWindow {
            step: step.into(),
            config: config.clone(),
            layout: Layout::new(&reads),
            inputs,
            output: output.clone(),
            state: KeyedMap::default(),
            removed: Vec::new(),
            scratch,
            slots: Vec::new(),
            batches_since_sweep: 0,
            capture: None,
            epoch: 0,
            last_sizes: PartSizes::new(),
        })
    }

    /// Events at or before this time are no longer needed: an event
    /// accepted from now on is at `wm - allowed lateness` or later and
    /// looks back `size` from its time.
    fn horizon(&self, wm: i64) -> i64 {
        wm.saturating_sub(self.config.allowed_lateness_ms)
            .saturating_sub(self.config.size_ms)
    }

    /// A key's state holding restored `events`, its running aggregates
    /// rebuilt from the front window.
    fn rebuilt(&self, events: Events) -> SlidingState {
        let layout = &self.layout;
        let (bits, stride) = (events.bits, layout.stride(events.bits));
        let mut st = SlidingState {
            events: restored(layout, events),
            front: 0,
            seq: 0,
            running: FrontWindow::new(&self.config.aggregates, &self.inputs.kinds),
            visited: 0,
        };
        let n = st.events.len(layout);
        if n > 0 {
            let lo = st
                .events
                .time(n - 1, stride)
                .saturating_sub(self.config.size_ms);
            while st.front < n && st.events.time(st.front, stride) <= lo {
                st.front += 1;
            }
            let words = &st.events.words()[st.front * stride..];
            for (seq, e) in words.chunks_exact(stride).enumerate() {
                st.running.add(layout, bits, e, seq as u64, true);
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

    /// Walks a capture's keys on from its cursor, visiting them until
    /// about `budget` bytes' worth is spent or every key is visited.
    fn walk(&mut self, pending: &mut Pending, budget: usize) {
        let began = std::time::Instant::now();
        let mut spent = 0;
        while spent < budget && pending.cursor < pending.end {
            let s = pending.cursor as u32;
            pending.cursor += 1;
            spent += visit(&mut self.state, &self.layout, pending, s);
        }
        pending.held(began);
    }
}

/// Group `g`'s bytes in `parts`, started with the format byte.
fn part(parts: &mut GroupParts, g: u32) -> &mut Vec<u8> {
    let buf = parts.entry(g).or_default();
    if buf.is_empty() {
        buf.push(COMPACT_PART);
    }
    buf
}

/// Visits the key in slot `s` for the capture under way, unless it was
/// visited already: writes it if the checkpoint needs it (whole, or its
/// changes if any, as its group goes) and marks its events captured.
/// Returns about what the visit cost, in bytes.
fn visit(
    state: &mut KeyedMap<SlidingState>,
    layout: &Layout,
    pending: &mut Pending,
    s: u32,
) -> usize {
    let (key, st) = state.entry_at(s as usize);
    if st.visited == pending.epoch {
        return 0;
    }
    st.visited = pending.epoch;
    let g = group_of(key, pending.whole.len() as u32);
    let whole = pending.whole[g as usize];
    if !whole && !st.events.changed(layout) {
        return VISIT_COST;
    }
    let buf = pending.part(whole, g, COMPACT_PART);
    let before = buf.len();
    if whole {
        st.events.write_full(key, buf);
    } else {
        st.events.write_delta(key, layout, buf);
    }
    let written = buf.len() - before;
    st.events.mark_captured(layout);
    VISIT_COST + written
}

/// Batches after which a sweep no longer waits for a capture's walk
/// (fewer in tests, to reach it).
const SWEEP_OVERDUE: u32 = if cfg!(test) { 300 } else { 4096 };

/// What visiting a key costs besides the bytes it writes, in bytes'
/// worth: a walk over many unchanged keys also holds the shard up.
const VISIT_COST: usize = 64;

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
        let size = self.config.size_ms;
        let (aggregates, kinds) = (&self.config.aggregates, &self.inputs.kinds);
        let layout = &self.layout;
        // First every row's key slot (late rows: none), in a tight loop
        // whose hash-table misses the CPU overlaps; then the rows, with
        // the state of the rows ahead prefetched in stages (the state, then
        // what it points to: its events and accumulators, then the
        // extremes' deques), so that each row finds its state in cache.
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
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
                slots.push(LATE);
                continue;
            }
            kept.push(true);
            // A key born during a capture is not part of it.
            let epoch = self.epoch;
            let slot = self.state.slot(&keys, row, || SlidingState {
                events: Events::default(),
                front: 0,
                seq: 0,
                running: FrontWindow::new(aggregates, kinds),
                visited: epoch,
            });
            slots.push(slot as u32);
        }
        // A capture under way writes the keys this batch changes first.
        if let Some(mut pending) = self.capture.take() {
            let began = std::time::Instant::now();
            for &s in &slots {
                if s != LATE {
                    visit(&mut self.state, &self.layout, &mut pending, s);
                }
            }
            pending.held(began);
            self.capture = Some(pending);
        }
        let mut entry: Vec<u64> = Vec::with_capacity(layout.stride(true));
        // Accumulators in line (`front.rs`) are read with the state; ones
        // spilled to the heap take one more stage.
        let spilled = self.scratch.aggs.spilled();
        for row in 0..rows {
            if let Some(&s) = slots.get(row + AHEAD).filter(|&&s| s != LATE) {
                let p = self.state.address(s as usize).cast::<u8>();
                let size = std::mem::size_of::<SlidingState>();
                for line in (0..size).step_by(64) {
                    prefetch(p.wrapping_add(line));
                }
                prefetch(p.wrapping_add(size - 1));
            }
            if let Some(&s) = slots.get(row + AHEAD / 2).filter(|&&s| s != LATE) {
                let st = self.state.peek(s as usize);
                st.events.prefetch();
                if spilled {
                    st.running.prefetch();
                } else {
                    st.running.prefetch_deques();
                }
            }
            if let Some(&s) = slots
                .get(row + AHEAD / 4)
                .filter(|&&s| spilled && s != LATE)
            {
                self.state.peek(s as usize).running.prefetch_deques();
            }
            let slot = slots[row];
            if slot == LATE {
                continue;
            }
            let t = v.times[row];
            let wm = v.watermark(row, ctx, self.config.max_out_of_orderness_ms);
            let horizon = self.horizon(wm);
            let st = self.state.at(slot as usize);
            let mut valid = 0u64;
            for (i, ok) in v.valid.iter().enumerate() {
                valid |= (ok[row] as u64) << i;
            }
            if valid != layout.all_valid {
                st.events.add_bits(layout);
            }
            let bits = st.events.bits;
            let stride = layout.stride(bits);
            entry.clear();
            entry.push(t as u64);
            if bits {
                entry.push(valid);
            }
            entry.extend(layout.slot_source.iter().map(|&a| v.values[a][row]));
            let events = st.events.len(layout);
            // Insert in time order, after events with the same time.
            let mut at = events;
            while at > 0 && st.events.time(at - 1, stride) > t {
                at -= 1;
            }
            let seq = st.seq;
            st.seq += 1;
            let newest = at == events;
            if newest {
                st.events.push(&entry);
                st.running.add(layout, bits, &entry, seq, true);
                // The front window is now (t - size, t].
                let lo = t.saturating_sub(size);
                while st.front < at && st.events.time(st.front, stride) <= lo {
                    st.running
                        .remove(layout, bits, st.events.event(st.front, stride));
                    st.front += 1;
                }
                st.running.evict_through(lo);
            } else {
                st.events.insert(at, &entry);
                let newest_time = st.events.time(events, stride);
                if t > newest_time.saturating_sub(size) {
                    st.running.add(layout, bits, &entry, seq, false);
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
            while evict < at && st.events.time(evict, stride) <= horizon {
                evict += 1;
            }
            if evict > 0 {
                st.events.evict_front(evict, stride);
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
            while first > 0 && st.events.time(first - 1, stride) > lo {
                first -= 1;
            }
            self.scratch.reset();
            let window = &st.events.words()[first * stride..(at + 1) * stride];
            for (i, e) in window.chunks_exact(stride).enumerate() {
                self.scratch.add(layout, bits, e, i as u64, true);
            }
            for (a, r) in self.scratch.aggs.iter().zip(&mut results) {
                r.push(a.result());
            }
        }
        self.slots = slots;
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
        for (key, st) in self.state.iter() {
            st.events
                .write_full(&key, part(parts, group_of(&key, key_groups)));
        }
    }

    fn capture(
        &mut self,
        key_groups: u32,
        full: &dyn Fn(u32) -> bool,
        parts: &mut GroupParts,
        deltas: &mut GroupParts,
    ) -> bool {
        self.begin_capture(key_groups, full);
        if let Some(done) = self.continue_capture(usize::MAX) {
            *parts = done.parts;
            *deltas = done.deltas;
        }
        true
    }

    fn begin_capture(&mut self, key_groups: u32, full: &dyn Fn(u32) -> bool) -> bool {
        debug_assert!(self.capture.is_none(), "one capture at a time");
        self.epoch = self.epoch.wrapping_add(1);
        let whole: Vec<bool> = (0..key_groups).map(full).collect();
        let last = std::mem::take(&mut self.last_sizes);
        let mut pending = Pending::new(self.epoch, whole, self.state.len(), last);
        // Removals first: a key removed and then seen again is both.
        for key in self.removed.drain(..) {
            let g = group_of(&key, key_groups);
            if !pending.whole[g as usize] {
                write_removed(&key, pending.part(false, g, COMPACT_PART));
            }
        }
        self.capture = Some(pending);
        true
    }

    fn continue_capture(&mut self, budget: usize) -> Option<Captured> {
        let mut pending = self.capture.take()?;
        self.walk(&mut pending, budget);
        if pending.cursor < pending.end {
            self.capture = Some(pending);
            return None;
        }
        self.last_sizes = pending.sizes();
        Some(Captured {
            parts: pending.parts,
            deltas: pending.deltas,
            longest: pending.longest,
        })
    }

    fn restore(&mut self, group: &[u8]) -> Result<(), Damaged> {
        self.restore_chain(&[group])
    }

    fn restore_chain(&mut self, links: &[&[u8]]) -> Result<(), Damaged> {
        let (full, deltas) = links.split_first().ok_or(Damaged)?;
        let mut read = Vec::new();
        read_full(&self.layout, full, &mut read)?;
        if !deltas.is_empty() {
            let mut keys: HashMap<Key, Events> = read.drain(..).collect();
            for d in deltas {
                apply_delta(&self.layout, d, &mut keys)?;
            }
            read.extend(keys);
        }
        for (key, events) in read {
            let st = self.rebuilt(events);
            self.state.insert(key, st);
        }
        Ok(())
    }

    fn end_of_batch(&mut self, ctx: &mut Ctx<'_>, _out: &mut Outputs) -> Result<(), EngineError> {
        self.batches_since_sweep += 1;
        // The sweep removes keys, which moves others to new slots: it
        // waits until a capture under way has visited every key, and
        // after a long wait (captures that keep running into the next
        // barrier) finishes the walk itself.
        if self.batches_since_sweep >= SWEEP_OVERDUE {
            if let Some(mut pending) = self.capture.take() {
                self.walk(&mut pending, usize::MAX);
                self.capture = Some(pending);
            }
        }
        let walked = self.capture.as_ref().is_none_or(|p| p.cursor >= p.end);
        if self.batches_since_sweep >= 256 && walked {
            self.batches_since_sweep = 0;
            let horizon =
                self.horizon(watermark(ctx.max_time, self.config.max_out_of_orderness_ms));
            let (layout, removed) = (&self.layout, &mut self.removed);
            self.state.retain_reporting(
                |s| {
                    let n = s.events.len(layout);
                    n > 0 && s.events.time(n - 1, layout.stride(s.events.bits)) > horizon
                },
                |key, s| {
                    if s.events.captured() {
                        removed.push(key);
                    }
                },
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
