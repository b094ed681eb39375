//! Idempotency keys: a retried request gets the answer of the original.
//!
//! A producer that lost an answer (a timeout, a reset, a server killed
//! mid-request) cannot know whether its records were stored; sending the
//! request again with the same `Idempotency-Key` header makes the retry
//! safe. The server keeps, per stream, the keys of the last
//! [`IdempotencyConfig::keys`] appended requests (younger than
//! [`IdempotencyConfig::ttl`]) with a fingerprint of each request and the
//! offsets its records got; a request whose key is known is answered with
//! those offsets and appends nothing.
//!
//! The idea is the MQTT source's deduplication window (`weir-mqtt`'s
//! `dedup.rs`): 128-bit SipHash keys in memory, and a side stream of the
//! same log, `<stream>.idempotency`, from which the window is rebuilt on
//! start, so it survives restarts. What differs is the order: the MQTT
//! source writes a batch's keys after the batch, so a crash between the two
//! forgets them; here a key is journalled *before* its batch, with the
//! offsets the batch will get, and both writes happen under one lock, so a
//! process that dies at any point after writing a batch (kill -9 included)
//! has its key on record. The fsync that makes the batch durable comes
//! after that lock, shared by concurrent requests as before.
//!
//! # The journal
//!
//! One record per appended request that carried a key, all integers
//! little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0 | `1`: an intent |
//! | 1..17 | key (SipHash-1-3, 128 bits, of the header's value) |
//! | 17..33 | fingerprint (of the format, `partial` and the body) |
//! | 33..41 | first offset the batch gets |
//! | 41..45 | number of records |
//! | 45..53 | time, milliseconds since the Unix epoch |
//!
//! and, rarely, a marker `[2][offset: u64]`: "no intent before this claims
//! offsets at or after `offset`". An intent whose batch was never written
//! (the append failed, or the process died between the two writes) claims
//! offsets that later batches take; rebuilding walks the journal in order
//! and drops every earlier claim that reaches past a later record's first
//! offset, then every claim past the stream's end. After dropping claims
//! past the end, and before the first append after a failed one, a marker
//! is written and fsynced, so the dropped claim cannot come back once
//! other batches fill those offsets.
//!
//! Intents are not fsynced on their own (like the MQTT keys): after a
//! crash of the machine (not of the process) the newest keys may be lost
//! while their batches survived, and a retry of one of those is appended
//! again. A key never answers for offsets that another request filled.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use siphasher::sip128::{Hasher128, SipHasher13};
use weir_log::{FsyncPolicy, Log, LogError, Stream, StreamConfig};

/// Fixed SipHash keys: keys and fingerprints are compared across restarts.
const SIP_KEYS: (u64, u64) = (0x7765_6972_2d69_6e67, 0x6573_742d_6964_656d);

/// Segment size of the journal; retention drops whole segments.
const JOURNAL_SEGMENT_BYTES: u64 = 1024 * 1024;

/// Bytes of an intent record.
const INTENT_LEN: usize = 53;
const INTENT: u8 = 1;
const MARKER: u8 = 2;

/// Longest `Idempotency-Key` accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// How many keys a stream remembers, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdempotencyConfig {
    /// Keys of this many of the newest appended requests are kept per
    /// stream (about 100 bytes of memory each); 0 turns keys off (the
    /// header is then ignored and nothing is journalled).
    pub keys: usize,
    /// A key older than this is forgotten (a retry after it appends again).
    pub ttl: Duration,
}

impl Default for IdempotencyConfig {
    /// 100 000 keys per stream, for 24 hours.
    fn default() -> Self {
        IdempotencyConfig {
            keys: 100_000,
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// The journal stream's name for the stream `stream`.
pub fn journal_name(stream: &str) -> String {
    format!("{stream}.idempotency")
}

/// The key of an `Idempotency-Key` value.
pub(crate) fn key_hash(value: &[u8]) -> u128 {
    let mut h = SipHasher13::new_with_keys(SIP_KEYS.0, SIP_KEYS.1);
    h.write(value);
    h.finish128().as_u128()
}

/// What a request is, for telling a retry from a different request that
/// reuses its key: the body format, `partial` and the body.
pub(crate) fn fingerprint(format: u8, partial: bool, body: &[u8]) -> u128 {
    let mut h = SipHasher13::new_with_keys(SIP_KEYS.1, SIP_KEYS.0);
    h.write(&[format, u8::from(partial)]);
    h.write(body);
    h.finish128().as_u128()
}

/// Checks an `Idempotency-Key` value: 1 to [`MAX_KEY_BYTES`] visible ASCII
/// characters (quotes, as in `"abc"`, are part of the key).
pub(crate) fn check_key(value: &[u8]) -> Result<(), String> {
    if value.is_empty() || value.len() > MAX_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} characters, not {}",
            value.len()
        ));
    }
    if !value.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err("Idempotency-Key must be visible ASCII characters without spaces".into());
    }
    Ok(())
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// What the window knows of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Not known (or expired): append.
    Absent,
    /// The request with this key is being appended now.
    InFlight,
    /// Appended at `first..first + count` by the same request.
    Done { first: u64, count: u32 },
    /// Known, but for a different request.
    Mismatch,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    fingerprint: u128,
    first: u64,
    count: u32,
    time_ms: i64,
    done: bool,
}

/// The remembered keys of one stream, newest last.
#[derive(Debug)]
pub(crate) struct Window {
    capacity: usize,
    ttl_ms: i64,
    /// Keys with the end of their claimed offsets, in offset order.
    order: VecDeque<(u128, u64)>,
    entries: HashMap<u128, Entry>,
}

impl Window {
    pub(crate) fn new(config: IdempotencyConfig) -> Window {
        let initial = config.keys.min(16 * 1024);
        Window {
            capacity: config.keys,
            ttl_ms: i64::try_from(config.ttl.as_millis()).unwrap_or(i64::MAX),
            order: VecDeque::with_capacity(initial),
            entries: HashMap::with_capacity(initial),
        }
    }

    pub(crate) fn lookup(&self, key: u128, fingerprint: u128, now_ms: i64) -> Lookup {
        match self.entries.get(&key) {
            None => Lookup::Absent,
            Some(e) if now_ms.saturating_sub(e.time_ms) > self.ttl_ms => Lookup::Absent,
            Some(e) if e.fingerprint != fingerprint => Lookup::Mismatch,
            Some(e) if !e.done => Lookup::InFlight,
            Some(e) => Lookup::Done {
                first: e.first,
                count: e.count,
            },
        }
    }

    /// Keys held (expired ones not yet evicted included).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn push(&mut self, key: u128, entry: Entry) {
        if self.capacity == 0 {
            return;
        }
        let end = entry.first + u64::from(entry.count);
        self.order.push_back((key, end));
        self.entries.insert(key, entry);
        while self.order.len() > self.capacity {
            let Some((old, old_end)) = self.order.pop_front() else {
                break;
            };
            self.remove_if(old, old_end);
        }
    }

    /// Removes `key` if its entry still ends at `end` (a key re-used after
    /// it was dropped has a newer entry).
    fn remove_if(&mut self, key: u128, end: u64) {
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.first + u64::from(e.count) == end)
        {
            self.entries.remove(&key);
        }
    }

    /// Drops every claim reaching past `offset` (they are the newest);
    /// whether any was dropped.
    fn void_from(&mut self, offset: u64) -> bool {
        let mut dropped = false;
        while let Some(&(key, end)) = self.order.back() {
            if end <= offset {
                break;
            }
            self.order.pop_back();
            self.remove_if(key, end);
            dropped = true;
        }
        dropped
    }

    /// Marks the in-flight `key` appended.
    pub(crate) fn complete(&mut self, key: u128) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.done = true;
        }
    }

    /// Forgets the in-flight `key` whose append failed.
    pub(crate) fn abort(&mut self, key: u128) {
        if self.entries.get(&key).is_some_and(|e| !e.done) {
            self.entries.remove(&key);
        }
    }
}

/// A stream's window and its journal. All of it is used under the
/// stream's append lock.
pub(crate) struct Idempotency {
    pub(crate) window: Window,
    journal: Arc<Stream>,
    /// A claim was written whose batch was not: write a marker before the
    /// next batch.
    needs_marker: bool,
    scratch: Vec<u8>,
    appends_since_retention: u32,
}

impl std::fmt::Debug for Idempotency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idempotency")
            .field("keys", &self.window.len())
            .field("needs_marker", &self.needs_marker)
            .finish_non_exhaustive()
    }
}

impl Idempotency {
    /// Opens the journal of `stream` in `log` and rebuilds the window from
    /// it, given the stream's end (its next offset). Blocking file I/O.
    pub(crate) fn open(
        log: &Log,
        stream: &str,
        config: IdempotencyConfig,
        stream_end: u64,
    ) -> Result<Idempotency, LogError> {
        let journal_config = StreamConfig {
            partitions: 1,
            segment_bytes: JOURNAL_SEGMENT_BYTES,
            // `keys` intents (53 bytes, a 4-byte length and a 29-byte
            // frame header each) plus the active segment and one spare.
            retention_bytes: Some(
                (config.keys as u64).saturating_mul(96) + 2 * JOURNAL_SEGMENT_BYTES,
            ),
            retention_age: Some(config.ttl),
            // Intents are written before their batch and reach the disk
            // with the OS; markers are fsynced explicitly.
            fsync: FsyncPolicy::Never,
        };
        let journal = log.stream(&journal_name(stream), journal_config)?;
        let partition = journal.partition(0);
        partition.enforce_retention(SystemTime::now())?;
        let mut window = Window::new(config);
        let mut next = partition.first_offset();
        loop {
            let records = partition.read(next, 4096)?;
            let Some(&(last, _)) = records.last() else {
                break;
            };
            for (offset, record) in &records {
                match decode(record) {
                    Some(Record::Intent { key, entry }) => {
                        window.void_from(entry.first);
                        window.push(key, entry);
                    }
                    Some(Record::Marker { offset }) => {
                        window.void_from(offset);
                    }
                    None => tracing::warn!(
                        stream = journal.name(),
                        offset,
                        "skipping a malformed idempotency record"
                    ),
                }
            }
            next = last + 1;
        }
        let mut this = Idempotency {
            window,
            journal,
            needs_marker: false,
            scratch: Vec::with_capacity(INTENT_LEN),
            appends_since_retention: 0,
        };
        if this.window.void_from(stream_end) {
            // Claims of batches that never made it: record that before
            // anything else fills their offsets.
            this.write_marker(stream_end)?;
        }
        Ok(this)
    }

    fn write_marker(&mut self, offset: u64) -> Result<(), LogError> {
        self.scratch.clear();
        self.scratch.push(MARKER);
        self.scratch.extend_from_slice(&offset.to_le_bytes());
        let partition = self.journal.partition(0);
        partition.append(&[&self.scratch])?;
        partition.flush()
    }

    /// Before a batch is appended at `first`: the marker owed since a
    /// failed append, if any.
    pub(crate) fn before_append(&mut self, first: u64) -> Result<(), LogError> {
        if self.needs_marker {
            self.write_marker(first)?;
            self.needs_marker = false;
        }
        Ok(())
    }

    /// Journals `key` for the batch of `count` records about to be
    /// appended at `first`, and holds it in the window as in flight.
    pub(crate) fn claim(
        &mut self,
        key: u128,
        fingerprint: u128,
        first: u64,
        count: u32,
        time_ms: i64,
    ) -> Result<(), LogError> {
        let entry = Entry {
            fingerprint,
            first,
            count,
            time_ms,
            done: false,
        };
        self.scratch.clear();
        encode_intent(&mut self.scratch, key, &entry);
        let partition = self.journal.partition(0);
        partition.append(&[&self.scratch])?;
        self.window.push(key, entry);
        self.appends_since_retention += 1;
        if self.appends_since_retention >= 1024 {
            self.appends_since_retention = 0;
            if let Err(e) = partition.enforce_retention(SystemTime::now()) {
                tracing::warn!(stream = self.journal.name(), error = %e, "cannot apply retention to the idempotency journal");
            }
        }
        Ok(())
    }

    /// The batch of the claim for `key` was not written.
    pub(crate) fn claim_failed(&mut self, key: u128) {
        self.window.abort(key);
        self.needs_marker = true;
    }

    /// Fsyncs the journal (at shutdown).
    pub(crate) fn flush(&self) -> Result<(), LogError> {
        self.journal.flush()
    }
}

enum Record {
    Intent { key: u128, entry: Entry },
    Marker { offset: u64 },
}

fn encode_intent(out: &mut Vec<u8>, key: u128, e: &Entry) {
    out.push(INTENT);
    out.extend_from_slice(&key.to_le_bytes());
    out.extend_from_slice(&e.fingerprint.to_le_bytes());
    out.extend_from_slice(&e.first.to_le_bytes());
    out.extend_from_slice(&e.count.to_le_bytes());
    out.extend_from_slice(&e.time_ms.to_le_bytes());
}

fn decode(record: &[u8]) -> Option<Record> {
    let (&kind, rest) = record.split_first()?;
    match kind {
        INTENT if record.len() == INTENT_LEN => {
            let key = u128::from_le_bytes(rest[0..16].try_into().ok()?);
            let fingerprint = u128::from_le_bytes(rest[16..32].try_into().ok()?);
            let first = u64::from_le_bytes(rest[32..40].try_into().ok()?);
            let count = u32::from_le_bytes(rest[40..44].try_into().ok()?);
            let time_ms = i64::from_le_bytes(rest[44..52].try_into().ok()?);
            Some(Record::Intent {
                key,
                entry: Entry {
                    fingerprint,
                    first,
                    count,
                    time_ms,
                    done: true,
                },
            })
        }
        MARKER if rest.len() == 8 => Some(Record::Marker {
            offset: u64::from_le_bytes(rest.try_into().ok()?),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keys: usize) -> IdempotencyConfig {
        IdempotencyConfig {
            keys,
            ttl: Duration::from_secs(3600),
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key(b"abc-123_x:y").is_ok());
        assert!(check_key(b"\"quoted\"").is_ok());
        assert!(check_key(b"").is_err());
        assert!(check_key(b"a b").is_err());
        assert!(check_key(&[b'a'; 255]).is_ok());
        assert!(check_key(&[b'a'; 256]).is_err());
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        assert_ne!(fingerprint(0, false, b"x"), fingerprint(0, true, b"x"));
        assert_ne!(fingerprint(0, false, b"x"), fingerprint(1, false, b"x"));
    }

    #[test]
    fn window_answers_and_forgets_the_oldest() {
        let mut w = Window::new(config(2));
        let e = |first, done| Entry {
            fingerprint: 7,
            first,
            count: 2,
            time_ms: 1000,
            done,
        };
        w.push(1, e(0, false));
        assert_eq!(w.lookup(1, 7, 1000), Lookup::InFlight);
        assert_eq!(w.lookup(1, 8, 1000), Lookup::Mismatch);
        w.complete(1);
        assert_eq!(w.lookup(1, 7, 1000), Lookup::Done { first: 0, count: 2 });
        // Older than the TTL: forgotten.
        assert_eq!(w.lookup(1, 7, 1000 + 3_600_001), Lookup::Absent);
        w.push(2, e(2, true));
        w.push(3, e(4, true));
        assert_eq!(w.lookup(1, 7, 1000), Lookup::Absent);
        assert_eq!(w.len(), 2);
        // A failed append forgets its key; a finished one is kept.
        w.push(4, e(6, false));
        w.abort(4);
        w.abort(3);
        assert_eq!(w.lookup(4, 7, 1000), Lookup::Absent);
        assert_eq!(w.lookup(3, 7, 1000), Lookup::Done { first: 4, count: 2 });
    }

    fn journal_records(log: &Log, stream: &str) -> Vec<Vec<u8>> {
        let j = log
            .stream(
                &journal_name(stream),
                StreamConfig {
                    partitions: 1,
                    segment_bytes: JOURNAL_SEGMENT_BYTES,
                    retention_bytes: Some(10 * 96 + 2 * JOURNAL_SEGMENT_BYTES),
                    retention_age: Some(Duration::from_secs(3600)),
                    fsync: FsyncPolicy::Never,
                },
            )
            .unwrap();
        j.partition(0)
            .read(0, 100)
            .unwrap()
            .into_iter()
            .map(|r| r.1)
            .collect()
    }

    #[test]
    fn rebuild_keeps_written_claims_and_drops_the_others() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path()).unwrap();
            let mut i = Idempotency::open(&log, "s", config(10), 0).unwrap();
            // Key 1: 3 records at 0 (written). Key 2: 2 records at 3, whose
            // append failed. Key 3: 1 record at 3 (written, after the
            // marker the failure owes).
            i.claim(1, 11, 0, 3, 5).unwrap();
            i.window.complete(1);
            i.before_append(3).unwrap();
            i.claim(2, 22, 3, 2, 5).unwrap();
            i.claim_failed(2);
            i.before_append(3).unwrap();
            i.claim(3, 33, 3, 1, 5).unwrap();
            i.window.complete(3);
            // Key 4: claimed at 4, then the process died before its batch.
            i.before_append(4).unwrap();
            i.claim(4, 44, 4, 5, 5).unwrap();
            assert_eq!(journal_records(&log, "s").len(), 5, "4 intents, 1 marker");
        }
        for round in 0..2 {
            // The stream holds 4 records (0..3 of key 1, 3 of key 3); the
            // second round sees the stream grown by an append without a
            // key, which must not revive key 4.
            let end = if round == 0 { 4 } else { 20 };
            let log = Log::open(dir.path()).unwrap();
            let i = Idempotency::open(&log, "s", config(10), end).unwrap();
            let w = &i.window;
            assert_eq!(w.lookup(1, 11, 5), Lookup::Done { first: 0, count: 3 });
            assert_eq!(w.lookup(2, 22, 5), Lookup::Absent);
            assert_eq!(w.lookup(3, 33, 5), Lookup::Done { first: 3, count: 1 });
            assert_eq!(w.lookup(4, 44, 5), Lookup::Absent, "round {round}");
            // The first open wrote a marker at 4 for key 4's lost batch.
            assert_eq!(journal_records(&log, "s").len(), 6);
        }
    }

    #[test]
    fn the_journal_keeps_the_newest_keys() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = Log::open(dir.path()).unwrap();
            let mut i = Idempotency::open(&log, "s", config(3), 0).unwrap();
            for k in 0..5u128 {
                i.claim(k, k, k as u64, 1, 5).unwrap();
                i.window.complete(k);
            }
        }
        let log = Log::open(dir.path()).unwrap();
        let i = Idempotency::open(&log, "s", config(3), 5).unwrap();
        let known: Vec<u128> = (0..5u128)
            .filter(|&k| i.window.lookup(k, k, 5) != Lookup::Absent)
            .collect();
        assert_eq!(known, vec![2, 3, 4]);
    }
}
