//! A sliding window's retained events per key, kept compact and with what
//! changed since the last checkpoint, so that state stays small at
//! millions of entries and a checkpoint writes only what changed.
//!
//! *Layout.* An event is a row of words: its time, then (only in keys that
//! have seen a NULL input) a word of validity bits, one per aggregate, then
//! one value per *slot*: aggregates reading the same column the same way
//! share a slot, and `count(*)` has none. fraud-v1's `count(*)`,
//! `sum(amount)` and `max(amount)` take 2 words (16 bytes) per event.
//!
//! *Buffer.* Events sit oldest first in one `Vec<u64>` from `start` on:
//! eviction moves `start`, and the space before it is reclaimed when the
//! vector fills and that space is at least an eighth of what is live
//! (else the vector grows by an eighth), so every event is copied O(1)
//! times amortised and capacity stays within about 1/8 of the live size,
//! instead of the up to 2x of a doubling buffer.
//!
//! *Changes.* Against the events as the last capture wrote them, a key
//! keeps `dropped` (how many of those left the front since) and `clean`
//! (how many of the current events, from the front, are those captured
//! ones in place). The delta for a key is then: drop `dropped` captured
//! events, keep the next `clean`, append the events after them.

use crate::ops::keyed::Key;
use crate::state::{Damaged, StateReader, StateWriter};

/// Where each aggregate's value sits in an event.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// Per aggregate: its slot, `None` for `count(*)`.
    pub slot_of: Vec<Option<usize>>,
    /// Per slot: an aggregate reading it (its values fill the slot).
    pub slot_source: Vec<usize>,
    /// Validity bits of an event with every input present.
    pub all_valid: u64,
}

impl Layout {
    /// Slots for aggregates reading `inputs` (per aggregate: the column
    /// index and how it is read; `None` for `count(*)`).
    pub fn new<K: PartialEq + Copy>(inputs: &[Option<(usize, K)>]) -> Layout {
        let mut slots: Vec<(usize, K)> = Vec::new();
        let mut slot_source = Vec::new();
        let slot_of = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                let input = (*input)?;
                Some(match slots.iter().position(|s| *s == input) {
                    Some(s) => s,
                    None => {
                        slots.push(input);
                        slot_source.push(i);
                        slots.len() - 1
                    }
                })
            })
            .collect();
        let n = inputs.len();
        let all_valid = if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        Layout {
            slot_of,
            slot_source,
            all_valid,
        }
    }

    /// Words per event, with or without the validity word.
    #[inline]
    pub fn stride(&self, bits: bool) -> usize {
        1 + bits as usize + self.slot_source.len()
    }

    /// Aggregate `i`'s value in event `e` (0 for `count(*)`).
    #[inline]
    pub fn value(&self, e: &[u64], bits: bool, i: usize) -> u64 {
        match self.slot_of[i] {
            Some(s) => e[1 + bits as usize + s],
            None => 0,
        }
    }

    /// Validity bits of event `e`.
    #[inline]
    pub fn bits(&self, e: &[u64], bits: bool) -> u64 {
        if bits {
            e[1]
        } else {
            self.all_valid
        }
    }
}

/// One key's retained events, oldest first (ties in arrival order).
#[derive(Debug, Default)]
pub(super) struct Events {
    words: Vec<u64>,
    /// First live word.
    start: usize,
    /// Whether events carry the validity word.
    pub bits: bool,
    /// Whether the last capture wrote this key.
    captured: bool,
    /// Captured events that left the front since the last capture.
    dropped: usize,
    /// Events from the front that are the captured ones, in place.
    clean: usize,
}

impl Events {
    /// Number of events.
    #[inline]
    pub fn len(&self, layout: &Layout) -> usize {
        (self.words.len() - self.start) / layout.stride(self.bits)
    }

    /// The live words: the events, `stride` words each.
    #[inline]
    pub fn words(&self) -> &[u64] {
        &self.words[self.start..]
    }

    /// Prefetches the oldest and the newest live words (what an event
    /// appended next reads first).
    #[inline]
    pub fn prefetch(&self) {
        let p = self.words.as_ptr();
        crate::prefetch::prefetch(p.wrapping_add(self.start));
        crate::prefetch::prefetch(p.wrapping_add(self.words.len().saturating_sub(1)));
    }

    /// Event `i`'s time.
    #[inline]
    pub fn time(&self, i: usize, stride: usize) -> i64 {
        self.words[self.start + i * stride] as i64
    }

    /// Event `i`.
    #[inline]
    pub fn event(&self, i: usize, stride: usize) -> &[u64] {
        let at = self.start + i * stride;
        &self.words[at..at + stride]
    }

    /// Makes room for `extra` more words at the end (see the module docs).
    #[inline]
    fn reserve(&mut self, extra: usize) {
        if self.words.len() + extra > self.words.capacity() {
            self.make_room(extra);
        }
    }

    /// [`Events::reserve`]'s slow path: reclaim, else grow.
    #[inline(never)]
    fn make_room(&mut self, extra: usize) {
        let live = self.words.len() - self.start;
        // Reclaim the space before `start`: on its own when that frees an
        // eighth of what is live, else before growing (growing copies the
        // live words anyway).
        if self.start > 0 {
            self.words.drain(..self.start);
            self.start = 0;
            if self.words.len() + extra <= self.words.capacity()
                && self.words.capacity() - live >= live / 8
            {
                return;
            }
        }
        self.words.reserve_exact(extra.max(live / 8).max(16));
    }

    /// Appends event `e` (already in this key's layout) as the newest.
    #[inline]
    pub fn push(&mut self, e: &[u64]) {
        self.reserve(e.len());
        // Word by word: an event is a few words, less than a `memcpy` call
        // costs (the capacity is there, so no push reallocates).
        for &w in e {
            self.words.push(w);
        }
    }

    /// Inserts event `e` before event `at`.
    pub fn insert(&mut self, at: usize, e: &[u64]) {
        self.reserve(e.len());
        let pos = self.start + at * e.len();
        self.words.splice(pos..pos, e.iter().copied());
        self.clean = self.clean.min(at);
    }

    /// Drops the `k` oldest events.
    pub fn evict_front(&mut self, k: usize, stride: usize) {
        self.start += k * stride;
        if k <= self.clean {
            self.dropped += k;
            self.clean -= k;
        } else {
            self.clean = 0;
        }
        if self.start == self.words.len() {
            self.words.clear();
            self.start = 0;
        }
    }

    /// Adds the validity word to every event (the key met its first NULL
    /// input). Changes nothing a capture sees: captures write the bits.
    pub fn add_bits(&mut self, layout: &Layout) {
        if self.bits {
            return;
        }
        let narrow = layout.stride(false);
        let live = &self.words[self.start..];
        let mut wide = Vec::with_capacity(live.len() / narrow * (narrow + 1));
        for e in live.chunks_exact(narrow) {
            wide.push(e[0]);
            wide.push(layout.all_valid);
            wide.extend_from_slice(&e[1..]);
        }
        self.words = wide;
        self.start = 0;
        self.bits = true;
    }

    /// Whether anything changed since the last capture.
    pub fn changed(&self, layout: &Layout) -> bool {
        !self.captured || self.dropped > 0 || self.clean != self.len(layout)
    }

    /// Whether the last capture wrote this key.
    pub fn captured(&self) -> bool {
        self.captured
    }

    /// Marks the current events as captured.
    pub fn mark_captured(&mut self, layout: &Layout) {
        self.captured = true;
        self.dropped = 0;
        self.clean = self.len(layout);
    }

    /// Writes the key's full record: key, validity flag, word count, words.
    pub fn write_full(&self, key: &Key, out: &mut Vec<u8>) {
        let mut w = StateWriter(out);
        w.key(key);
        w.u8(self.bits as u8);
        w.words(self.words());
    }

    /// Writes the key's delta record (see the module docs): key, tag 0,
    /// dropped, kept, validity flag, word count, the appended words.
    pub fn write_delta(&self, key: &Key, layout: &Layout, out: &mut Vec<u8>) {
        let mut w = StateWriter(out);
        w.key(key);
        w.u8(DELTA_CHANGED);
        let (dropped, clean) = if self.captured {
            (self.dropped, self.clean)
        } else {
            (0, 0)
        };
        w.u64(dropped as u64);
        w.u64(clean as u64);
        w.u8(self.bits as u8);
        let stride = layout.stride(self.bits);
        w.words(&self.words()[clean * stride..]);
    }

    /// Appends `words` of events with (`bits`) or without the validity
    /// word, widening whichever side lacks it.
    fn append(&mut self, layout: &Layout, words: &[u64], bits: bool) -> Result<(), Damaged> {
        if !words.len().is_multiple_of(layout.stride(bits)) {
            return Err(Damaged);
        }
        if bits && !self.bits {
            self.add_bits(layout);
        }
        if self.bits && !bits {
            for e in words.chunks_exact(layout.stride(false)) {
                self.words.push(e[0]);
                self.words.push(layout.all_valid);
                self.words.extend_from_slice(&e[1..]);
            }
        } else {
            self.words.extend_from_slice(words);
        }
        Ok(())
    }

    /// A key's events from legacy words (every event as time, validity,
    /// one value per aggregate).
    pub fn from_legacy(layout: &Layout, wide: &[u64]) -> Result<Events, Damaged> {
        let n = layout.slot_of.len();
        if !wide.len().is_multiple_of(2 + n) {
            return Err(Damaged);
        }
        let bits = wide
            .chunks_exact(2 + n)
            .any(|e| e[1] & layout.all_valid != layout.all_valid);
        let mut ev = Events {
            bits,
            ..Default::default()
        };
        ev.words
            .reserve_exact(wide.len() / (2 + n) * layout.stride(bits));
        for e in wide.chunks_exact(2 + n) {
            ev.words.push(e[0]);
            if bits {
                ev.words.push(e[1]);
            }
            ev.words
                .extend(layout.slot_source.iter().map(|&agg| e[2 + agg]));
        }
        Ok(ev)
    }
}

/// Delta record tags.
const DELTA_CHANGED: u8 = 0;
const DELTA_REMOVED: u8 = 1;

/// First byte of a part in this format; legacy parts start with a key tag
/// (0, 1 or 2).
pub(super) const COMPACT_PART: u8 = 0x10;

/// Writes a removal record: the key's state is gone.
pub(super) fn write_removed(key: &Key, out: &mut Vec<u8>) {
    let mut w = StateWriter(out);
    w.key(key);
    w.u8(DELTA_REMOVED);
}

/// Reads a full part (compact or legacy) into `into`.
pub(super) fn read_full(
    layout: &Layout,
    data: &[u8],
    into: &mut Vec<(Key, Events)>,
) -> Result<(), Damaged> {
    match data.first() {
        None => Ok(()),
        Some(&COMPACT_PART) => {
            let mut r = StateReader::new(&data[1..]);
            while !r.done() {
                let key = r.key()?;
                let bits = read_flag(&mut r)?;
                let mut ev = Events {
                    bits,
                    ..Default::default()
                };
                let words = r.words()?;
                ev.append(layout, &words, bits)?;
                into.push((key, ev));
            }
            Ok(())
        }
        Some(_) => {
            let mut r = StateReader::new(data);
            while !r.done() {
                let key = r.key()?;
                let n = r.count(8)?;
                let mut wide = Vec::with_capacity(n);
                for _ in 0..n {
                    wide.push(r.i64()? as u64);
                }
                into.push((key, Events::from_legacy(layout, &wide)?));
            }
            Ok(())
        }
    }
}

/// Applies a delta part to the events of its group.
pub(super) fn apply_delta(
    layout: &Layout,
    data: &[u8],
    keys: &mut std::collections::HashMap<Key, Events>,
) -> Result<(), Damaged> {
    let Some((&COMPACT_PART, body)) = data.split_first() else {
        return if data.is_empty() {
            Ok(())
        } else {
            Err(Damaged)
        };
    };
    let mut r = StateReader::new(body);
    while !r.done() {
        let key = r.key()?;
        match r.u8()? {
            DELTA_REMOVED => {
                keys.remove(&key);
            }
            DELTA_CHANGED => {
                let dropped = r.u64()? as usize;
                let kept = r.u64()? as usize;
                let bits = read_flag(&mut r)?;
                let words = r.words()?;
                let old = keys.remove(&key).unwrap_or_default();
                let stride = layout.stride(old.bits);
                let have = old.len(layout);
                if dropped.checked_add(kept).is_none_or(|end| end > have) {
                    return Err(Damaged);
                }
                let mut ev = Events {
                    bits: old.bits,
                    ..Default::default()
                };
                let kept_words = &old.words()[dropped * stride..(dropped + kept) * stride];
                ev.words.extend_from_slice(kept_words);
                ev.append(layout, &words, bits)?;
                keys.insert(key, ev);
            }
            _ => return Err(Damaged),
        }
    }
    Ok(())
}

fn read_flag(r: &mut StateReader<'_>) -> Result<bool, Damaged> {
    match r.u8()? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Damaged),
    }
}

/// Marks restored events as what the restored checkpoint holds.
pub(super) fn restored(layout: &Layout, mut ev: Events) -> Events {
    ev.mark_captured(layout);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        // count(*), sum(col 3), max(col 3), avg(col 4 as float).
        Layout::new(&[None, Some((3, 0u8)), Some((3, 0)), Some((4, 1))])
    }

    #[test]
    fn aggregates_on_one_column_share_a_slot() {
        let l = layout();
        assert_eq!(l.slot_of, vec![None, Some(0), Some(0), Some(1)]);
        assert_eq!(l.slot_source, vec![1, 3]);
        assert_eq!(l.stride(false), 3);
        assert_eq!(l.stride(true), 4);
        assert_eq!(l.all_valid, 0b1111);
        let e = [7, 0b0111, 11, 22];
        assert_eq!(l.value(&e, true, 0), 0);
        assert_eq!(l.value(&e, true, 2), 11);
        assert_eq!(l.value(&e, true, 3), 22);
        assert_eq!(l.bits(&e[..3], false), 0b1111);
    }

    /// The buffer's capacity stays within about an eighth of what is live
    /// while events stream through it.
    #[test]
    fn capacity_stays_near_the_live_size() {
        let l = layout();
        let mut ev = Events::default();
        for t in 0..100_000u64 {
            ev.push(&[t, t, t]);
            if ev.len(&l) > 1000 {
                ev.evict_front(1, 3);
            }
        }
        assert_eq!(ev.len(&l), 1000);
        assert_eq!(ev.time(0, 3), 99_000);
        assert!(
            ev.words.capacity() <= 3000 * 9 / 8 + 64,
            "{}",
            ev.words.capacity()
        );
    }

    fn full_of(ev: &Events, key: &Key) -> Vec<u8> {
        let mut out = vec![COMPACT_PART];
        ev.write_full(key, &mut out);
        out
    }

    /// A delta applied to the last capture gives the events now, through
    /// evictions, appends, out-of-order inserts and a first NULL.
    #[test]
    fn deltas_rebuild_the_current_events() {
        let l = layout();
        let key = Key::Int(5);
        let mut ev = Events::default();
        for t in 0..10u64 {
            ev.push(&[t, t * 10, t as f64 as u64]);
        }
        let full = full_of(&ev, &key);
        ev.mark_captured(&l);
        let mut keys = std::collections::HashMap::new();
        let mut read = Vec::new();
        read_full(&l, &full, &mut read).expect("full");
        keys.extend(read);
        // Evict 3, append 2, insert one behind the newest, add bits.
        ev.evict_front(3, 3);
        ev.push(&[10, 100, 0]);
        ev.push(&[12, 120, 0]);
        ev.insert(6, &[9, 90, 0]);
        ev.add_bits(&l);
        ev.push(&[13, 0b0001, 0, 0]);
        let mut delta = vec![COMPACT_PART];
        ev.write_delta(&key, &l, &mut delta);
        apply_delta(&l, &delta, &mut keys).expect("delta");
        assert_eq!(keys[&key].words(), ev.words());
        assert!(keys[&key].bits);
        // A removal, then the key anew.
        let mut delta = vec![COMPACT_PART];
        write_removed(&key, &mut delta);
        let mut fresh = Events::default();
        fresh.push(&[20, 1, 2]);
        fresh.write_delta(&key, &l, &mut delta);
        apply_delta(&l, &delta, &mut keys).expect("delta");
        assert_eq!(keys[&key].words(), &[20, 1, 2]);
    }

    /// Legacy parts (every event as time, validity, one word per
    /// aggregate) read into the compact layout.
    #[test]
    fn legacy_parts_read_compact() {
        let l = layout();
        let mut part = Vec::new();
        let mut w = StateWriter(&mut part);
        w.key(&Key::Int(1));
        w.u64(12);
        for x in [5u64, 0b1111, 0, 7, 7, 9, 6, 0b1111, 0, 8, 8, 10] {
            w.i64(x as i64);
        }
        let mut read = Vec::new();
        read_full(&l, &part, &mut read).expect("legacy");
        assert_eq!(read.len(), 1);
        let ev = &read[0].1;
        assert!(!ev.bits);
        assert_eq!(ev.words(), &[5, 7, 9, 6, 8, 10]);
        // A truncated legacy part is damaged, not misread.
        assert!(read_full(&l, &part[..part.len() - 3], &mut read).is_err());
    }

    #[test]
    fn a_delta_that_keeps_more_than_there_was_is_damaged() {
        let l = layout();
        let mut keys = std::collections::HashMap::new();
        let mut delta = vec![COMPACT_PART];
        let mut w = StateWriter(&mut delta);
        w.key(&Key::Int(1));
        w.u8(DELTA_CHANGED);
        w.u64(0);
        w.u64(4);
        w.u8(0);
        w.words(&[]);
        assert!(apply_delta(&l, &delta, &mut keys).is_err());
    }
}
