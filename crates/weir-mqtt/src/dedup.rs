//! The deduplication window of the MQTT source.
//!
//! QoS 1 delivers at least once: after a lost connection the broker sends
//! again what we had not acknowledged, and publishers resend what they saw
//! no PUBACK for. When payloads carry unique ids, dropping a message whose
//! topic and payload equal one of the last `dedup_window` kept messages
//! removes those copies.
//!
//! A message is known by a 128-bit SipHash of its topic and payload, so
//! collisions are not a concern (about 2^-64 for billions of messages).
//! The stream of received messages holds only payloads — the records the
//! pipeline reads must be exactly the payloads — so the keys live in a
//! side stream of the same log, `<stream>.dedup-keys`: one record per
//! appended batch, `[first offset: u64 LE][key: u128 LE]...`, appended
//! after the batch itself is durable and not fsynced on its own. On start
//! the window is rebuilt from it, so it survives restarts. Losing its tail
//! in a machine crash only lets a duplicate through; it can never drop a
//! message that was not stored, because a key is written only after its
//! message is durable.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::SystemTime;

use siphasher::sip128::{Hasher128, SipHasher13};
use weir_log::{FsyncPolicy, Log, LogError, Stream, StreamConfig};

/// Fixed SipHash keys: keys are stored and compared across processes.
const SIP_KEYS: (u64, u64) = (0x7765_6972_2d6d_7174, 0x7474_2d64_6564_7570);

/// Segment size of the key stream; retention drops whole segments.
const KEY_SEGMENT_BYTES: u64 = 1024 * 1024;

/// The key of a message: its topic and payload, unambiguously.
pub(crate) fn key(topic: &str, payload: &[u8]) -> u128 {
    let mut h = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
    h.write(&(topic.len() as u64).to_le_bytes());
    h.write(topic.as_bytes());
    h.write(payload);
    h.finish128().as_u128()
}

/// The keys of the last `capacity` kept messages.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    order: VecDeque<u128>,
    /// Key to the number of times it is in `order` (more than once only
    /// when rebuilt from a key stream that recorded a duplicate).
    counts: HashMap<u128, u32>,
}

impl DedupWindow {
    pub(crate) fn new(capacity: usize) -> DedupWindow {
        // Grow on demand: a window of millions should not cost its full
        // size before it has seen that many messages.
        let initial = capacity.min(64 * 1024);
        DedupWindow {
            capacity,
            order: VecDeque::with_capacity(initial),
            counts: HashMap::with_capacity(initial),
        }
    }

    /// Whether `key` is in the window.
    pub(crate) fn contains(&self, key: u128) -> bool {
        self.counts.contains_key(&key)
    }

    /// Adds `key` as the newest kept message, evicting the oldest beyond
    /// the capacity.
    pub(crate) fn push(&mut self, key: u128) {
        if self.capacity == 0 {
            return;
        }
        self.order.push_back(key);
        *self.counts.entry(key).or_insert(0) += 1;
        while self.order.len() > self.capacity {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some(n) = self.counts.get_mut(&old) {
                *n -= 1;
                if *n == 0 {
                    self.counts.remove(&old);
                }
            }
        }
    }

    /// Adds `key` unless it is in the window; whether it was added (the
    /// message is to be kept).
    pub(crate) fn insert(&mut self, key: u128) -> bool {
        if self.contains(key) {
            return false;
        }
        self.push(key);
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

/// The side stream holding the keys of kept messages.
pub(crate) struct KeyStream {
    stream: Arc<Stream>,
    /// Reused encoding buffer: one allocation, not one per batch.
    scratch: Vec<u8>,
    appends_since_retention: u32,
}

impl KeyStream {
    /// The key stream's name for the stream `stream`.
    pub(crate) fn name(stream: &str) -> String {
        format!("{stream}.dedup-keys")
    }

    /// Opens the key stream of `stream` and rebuilds a window of
    /// `capacity` from it, ignoring keys of records at or past
    /// `stream_end` (a stream replaced underneath).
    pub(crate) fn open(
        log: &Log,
        stream: &str,
        capacity: usize,
        stream_end: u64,
    ) -> Result<(KeyStream, DedupWindow), LogError> {
        let config = StreamConfig {
            partitions: 1,
            segment_bytes: KEY_SEGMENT_BYTES,
            // Enough for `capacity` keys even when each batch held one
            // message (16 bytes of key, 8 of offset, 4 of length and the
            // frame header), plus the active segment.
            retention_bytes: Some((capacity as u64).saturating_mul(96) + 2 * KEY_SEGMENT_BYTES),
            retention_age: None,
            // Keys only help; their batch is already durable.
            fsync: FsyncPolicy::Never,
        };
        let stream = log.stream(&KeyStream::name(stream), config)?;
        let partition = stream.partition(0);
        partition.enforce_retention(SystemTime::now())?;
        let mut window = DedupWindow::new(capacity);
        let mut next = partition.first_offset();
        loop {
            let records = partition.read(next, 1024)?;
            let Some(&(last, _)) = records.last() else {
                break;
            };
            for (offset, record) in &records {
                let Some((first, keys)) = decode(record) else {
                    tracing::warn!(
                        stream = stream.name(),
                        offset,
                        "skipping a malformed key record"
                    );
                    continue;
                };
                let kept = (keys.len() / 16) as u64;
                if first.saturating_add(kept) > stream_end {
                    continue;
                }
                for k in keys.chunks_exact(16) {
                    // `chunks_exact(16)` yields 16-byte slices: the
                    // conversion cannot fail.
                    let k: [u8; 16] = k.try_into().unwrap_or([0; 16]);
                    window.push(u128::from_le_bytes(k));
                }
            }
            next = last + 1;
        }
        Ok((
            KeyStream {
                stream,
                scratch: Vec::new(),
                appends_since_retention: 0,
            },
            window,
        ))
    }

    /// Records the keys of the messages stored at `first..`.
    pub(crate) fn append(&mut self, first: u64, keys: &[u128]) -> Result<(), LogError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&first.to_le_bytes());
        for k in keys {
            self.scratch.extend_from_slice(&k.to_le_bytes());
        }
        let partition = self.stream.partition(0);
        partition.append(&[&self.scratch])?;
        self.appends_since_retention += 1;
        if self.appends_since_retention >= 1024 {
            self.appends_since_retention = 0;
            partition.enforce_retention(SystemTime::now())?;
        }
        Ok(())
    }
}

impl Drop for KeyStream {
    fn drop(&mut self) {
        // Best effort: the keys help the next run, they guard nothing.
        if let Err(e) = self.stream.flush() {
            tracing::debug!(error = %e, "cannot fsync the dedup key stream");
        }
    }
}

fn decode(record: &[u8]) -> Option<(u64, &[u8])> {
    let (first, keys) = record.split_first_chunk::<8>()?;
    (keys.len() % 16 == 0).then(|| (u64::from_le_bytes(*first), keys))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_topic_from_payload() {
        assert_ne!(key("ab", b"c"), key("a", b"bc"));
        assert_eq!(key("t", b"x"), key("t", b"x"));
        assert_ne!(key("t", b"x"), key("u", b"x"));
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut w = DedupWindow::new(2);
        assert!(w.insert(1));
        assert!(w.insert(2));
        assert!(!w.insert(1));
        assert!(w.insert(3)); // evicts 1
        assert!(w.insert(1));
        assert!(!w.insert(3));
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn window_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path()).unwrap();
            let (mut ks, mut w) = KeyStream::open(&log, "s", 3, 0).unwrap();
            assert!(w.insert(10) && w.insert(11));
            ks.append(0, &[10, 11]).unwrap();
            ks.append(2, &[12, 13]).unwrap();
        }
        let log = Log::open(dir.path()).unwrap();
        // The stream holds 4 records: every key counts, the oldest is
        // evicted by the capacity of 3.
        let (_ks, w) = KeyStream::open(&log, "s", 3, 4).unwrap();
        assert_eq!(
            (
                w.contains(10),
                w.contains(11),
                w.contains(12),
                w.contains(13)
            ),
            (false, true, true, true)
        );
        drop(_ks);
        drop(log);
        // Keys of records the stream does not hold are ignored.
        let log = Log::open(dir.path()).unwrap();
        let (_ks, w) = KeyStream::open(&log, "s", 3, 2).unwrap();
        assert_eq!(
            (w.contains(10), w.contains(11), w.contains(12)),
            (true, true, false)
        );
    }
}
