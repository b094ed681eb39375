//! Snapshot encoding of operator state for checkpoints.
//!
//! Keyed state is written per key group, so a checkpoint restores into any
//! number of shards: each shard reads the groups it owns. Each group's bytes
//! are a sequence of entries an operator writes and reads back itself with
//! [`StateWriter`] and [`StateReader`]; the checkpoint store checks every
//! part's CRC, so a reader that finds bytes it does not expect reports the
//! part as damaged rather than guessing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::hash::{hash_bytes, key_group, mix64};
use crate::ops::keyed::Key;

/// Bytes per key group, as operators emit them at a barrier.
pub type GroupParts = BTreeMap<u32, Vec<u8>>;

/// A finished capture of an operator's keyed state.
pub struct Captured {
    /// Groups written whole.
    pub parts: GroupParts,
    /// Groups written as their changes since the previous capture.
    pub deltas: GroupParts,
    /// The longest stretch for which writing them held the operator up.
    pub longest: std::time::Duration,
}

/// Emptied buffers, sorted by capacity, holding at most `limit` bytes.
struct SpareBuffers {
    buffers: Vec<Vec<u8>>,
    kept: usize,
    limit: usize,
}

impl SpareBuffers {
    const fn new(limit: usize) -> Self {
        SpareBuffers {
            buffers: Vec::new(),
            kept: 0,
            limit,
        }
    }

    /// The smallest buffer of at least `bytes`, else the largest, else a
    /// new one; reserved to `bytes`.
    fn take(&mut self, bytes: usize) -> Vec<u8> {
        let at = self.buffers.partition_point(|b| b.capacity() < bytes);
        let mut buf = if at < self.buffers.len() {
            self.buffers.remove(at)
        } else {
            self.buffers.pop().unwrap_or_default()
        };
        self.kept -= buf.capacity();
        buf.reserve_exact(bytes);
        buf
    }

    /// Keeps `buf`, emptied, unless that would pass the limit.
    fn give(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() == 0 || self.kept + buf.capacity() > self.limit {
            return;
        }
        buf.clear();
        self.kept += buf.capacity();
        let at = self
            .buffers
            .partition_point(|b| b.capacity() < buf.capacity());
        self.buffers.insert(at, buf);
    }
}

/// Buffers of written checkpoints' state parts, kept for the next capture
/// (see [`part_buffer`]); at most about a checkpoint's worth of deltas,
/// so recycling costs little memory however large a full snapshot once
/// was.
static SPARE_PARTS: Mutex<SpareBuffers> = Mutex::new(SpareBuffers::new(64 << 20));

/// An empty buffer for a state part of about `bytes`, recycled from a
/// written checkpoint where one is spare.
///
/// A capture runs inside the pipeline's stall: writing into memory that
/// is already mapped avoids a page fault (and the kernel zeroing a page)
/// for every 4 KiB written, which otherwise cost as much as the copying.
pub fn part_buffer(bytes: usize) -> Vec<u8> {
    SPARE_PARTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take(bytes)
}

/// Gives the buffers of written state parts back for later captures.
pub fn recycle_parts(buffers: impl IntoIterator<Item = Vec<u8>>) {
    let mut spare = SPARE_PARTS.lock().unwrap_or_else(|e| e.into_inner());
    for buf in buffers {
        spare.give(buf);
    }
}

/// The key group of an owned key (as `key_by` assigns it).
pub fn group_of(key: &Key, key_groups: u32) -> u32 {
    let hash = match key {
        Key::Null => 0,
        Key::Int(v) => mix64(*v as u64),
        Key::Str(s) => hash_bytes(s.as_bytes()),
    };
    key_group(hash, key_groups)
}

/// Appends little-endian values to a buffer.
pub struct StateWriter<'a>(pub &'a mut Vec<u8>);

impl StateWriter<'_> {
    /// A u64, as a varint.
    pub fn u64(&mut self, v: u64) {
        crate::frame::put_varint(self.0, v);
    }
    /// An i64, fixed width.
    pub fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    /// An f64, bit for bit.
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }
    /// A byte.
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    /// Counted words, fixed width, little-endian (one copy where that is
    /// the machine's order: checkpoints copy millions of words).
    pub fn words(&mut self, words: &[u64]) {
        self.u64(words.len() as u64);
        #[cfg(target_endian = "little")]
        self.0
            .extend_from_slice(arrow_buffer::ToByteSlice::to_byte_slice(words));
        #[cfg(not(target_endian = "little"))]
        for w in words {
            self.0.extend_from_slice(&w.to_le_bytes());
        }
    }
    /// An owned key.
    pub fn key(&mut self, k: &Key) {
        match k {
            Key::Null => self.u8(0),
            Key::Int(v) => {
                self.u8(1);
                self.i64(*v);
            }
            Key::Str(s) => {
                self.u8(2);
                self.bytes(s.as_bytes());
            }
        }
    }
}

/// Reads back what a [`StateWriter`] wrote; every read checks bounds.
pub struct StateReader<'a> {
    data: &'a [u8],
    at: usize,
}

/// Bytes that do not decode as the state an operator wrote.
#[derive(Debug)]
pub struct Damaged;

impl<'a> StateReader<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        StateReader { data, at: 0 }
    }
    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self.at.checked_add(n).ok_or(Damaged)?;
        let s = self.data.get(self.at..end).ok_or(Damaged)?;
        self.at = end;
        Ok(s)
    }
    /// A varint u64.
    pub fn u64(&mut self) -> Result<u64, Damaged> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged)
    }
    /// A fixed-width i64.
    pub fn i64(&mut self) -> Result<i64, Damaged> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_le_bytes(a))
    }
    /// An f64.
    pub fn f64(&mut self) -> Result<f64, Damaged> {
        Ok(f64::from_bits(self.i64()? as u64))
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8, Damaged> {
        Ok(self.take(1)?[0])
    }
    /// A count of items still to read, bounded by the bytes left (each
    /// item takes at least `min_bytes`), so damaged lengths cannot make a
    /// reader allocate without bound.
    pub fn count(&mut self, min_bytes: usize) -> Result<usize, Damaged> {
        let n = self.u64()?;
        let left = (self.data.len() - self.at) as u64;
        if n.saturating_mul(min_bytes.max(1) as u64) > left {
            return Err(Damaged);
        }
        Ok(n as usize)
    }
    /// Words as [`StateWriter::words`] wrote them.
    pub fn words(&mut self) -> Result<Vec<u64>, Damaged> {
        let n = self.count(8)?;
        let raw = self.take(n * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect())
    }
    /// Length-prefixed bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], Damaged> {
        let n = self.count(1)?;
        self.take(n)
    }
    /// An owned key.
    pub fn key(&mut self) -> Result<Key, Damaged> {
        Ok(match self.u8()? {
            0 => Key::Null,
            1 => Key::Int(self.i64()?),
            2 => {
                let s = std::str::from_utf8(self.bytes()?).map_err(|_| Damaged)?;
                Key::Str(Arc::from(s))
            }
            _ => return Err(Damaged),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_buffers_fit_best_and_stay_under_their_limit() {
        let mut spare = SpareBuffers::new(1000);
        for cap in [100, 400, 200] {
            spare.give(Vec::with_capacity(cap));
        }
        // A buffer over what is left of the limit is dropped.
        spare.give(Vec::with_capacity(301));
        assert_eq!(spare.kept, 700);
        // The smallest that fits; it comes back empty.
        let b = spare.take(150);
        assert_eq!((b.capacity(), b.len()), (200, 0));
        assert_eq!(spare.kept, 500);
        // None fits: the largest, grown.
        let b = spare.take(450);
        assert!(b.capacity() >= 450);
        assert_eq!(spare.kept, 100);
        let mut used = spare.take(1);
        assert_eq!(used.capacity(), 100);
        used.extend_from_slice(b"abc");
        spare.give(used);
        assert_eq!(spare.take(0).len(), 0);
        // Empty: a new buffer.
        assert_eq!(spare.kept, 0);
        assert!(spare.take(10).capacity() >= 10);
    }

    #[test]
    fn values_round_trip_and_damage_is_reported() {
        let mut buf = Vec::new();
        let mut w = StateWriter(&mut buf);
        w.u64(300);
        w.i64(-7);
        w.f64(0.1);
        w.key(&Key::Str(Arc::from("card")));
        w.key(&Key::Int(42));
        w.key(&Key::Null);
        let mut r = StateReader::new(&buf);
        assert_eq!(r.u64().unwrap(), 300);
        assert_eq!(r.i64().unwrap(), -7);
        assert_eq!(r.f64().unwrap().to_bits(), 0.1f64.to_bits());
        assert_eq!(r.key().unwrap(), Key::Str(Arc::from("card")));
        assert_eq!(r.key().unwrap(), Key::Int(42));
        assert_eq!(r.key().unwrap(), Key::Null);
        assert!(r.done());
        // Every truncation is an error, never a panic.
        for cut in 0..buf.len() {
            let mut r = StateReader::new(&buf[..cut]);
            let all = (|| -> Result<(), Damaged> {
                r.u64()?;
                r.i64()?;
                r.f64()?;
                r.key()?;
                r.key()?;
                r.key()?;
                Ok(())
            })();
            assert!(all.is_err(), "cut at {cut}");
        }
        // A huge count is refused.
        let mut big = Vec::new();
        StateWriter(&mut big).u64(u64::MAX / 2);
        assert!(StateReader::new(&big).count(1).is_err());
    }
}
