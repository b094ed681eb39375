//! The shape of the records a producer writes, learned from one record and
//! replayed on the next: producers write every record of a stream with the
//! same keys in the same order and the same spacing, so the next record's
//! keys can be matched as whole byte strings (`"card_id":` in one or two
//! word compares) instead of being scanned, unescaped and looked up.
//!
//! The replay is only a shortcut: any difference from the learned shape
//! (another key, other spacing, a value the declared type rejects) gives
//! up, and the record is parsed the general way from its first byte, which
//! also learns its shape. A record the replay accepts is one the general
//! parser accepts with the same values: the keys are the same bytes with
//! the same spacing, so they name the same fields in the same order, and
//! the values go through the same code.

use std::ops::Range;

use super::{skip_value, Cursor, JsonParser, Reason};
use crate::decode::columns::Slot;

/// One key of a learned shape.
#[derive(Debug, Clone)]
struct Key {
    /// Its bytes in [`Shape::bytes`]: from its opening quote through the
    /// colon after it.
    token: Range<usize>,
    /// The declared field it names (`None`: undeclared, skipped).
    field: Option<usize>,
}

/// The learned shape, and how the replay has been doing.
#[derive(Debug, Default)]
pub(super) struct Shape {
    keys: Vec<Key>,
    bytes: Vec<u8>,
    /// The shape being learned from the record at hand.
    learning: Vec<Key>,
    learning_bytes: Vec<u8>,
    /// Replays that gave up in a row, and records left to parse before the
    /// next try: a stream whose records differ in shape costs a failed
    /// replay now and then, not one per record.
    misses: u32,
    pause: u32,
}

/// The longest wait between replays after misses, in records.
const LONGEST_PAUSE: u32 = 1024;

impl Shape {
    /// Whether to try the replay on this record.
    #[inline]
    pub(super) fn ready(&mut self) -> bool {
        if self.keys.is_empty() {
            return false;
        }
        if self.pause > 0 {
            self.pause -= 1;
            return false;
        }
        true
    }

    /// The replay gave up.
    pub(super) fn missed(&mut self) {
        self.misses = self.misses.saturating_add(1);
        self.pause = (1u32 << self.misses.min(10)).min(LONGEST_PAUSE);
    }

    /// The replay parsed the record.
    #[inline]
    pub(super) fn hit(&mut self) {
        self.misses = 0;
    }

    /// Replays that gave up in a row.
    #[cfg(test)]
    pub(super) fn misses(&self) -> u32 {
        self.misses
    }

    /// Starts learning from a record parsed the general way.
    pub(super) fn begin(&mut self) {
        self.learning.clear();
        self.learning_bytes.clear();
    }

    /// The record's next key: `token` from its opening quote through the
    /// colon.
    pub(super) fn key(&mut self, token: &[u8], field: Option<usize>) {
        let start = self.learning_bytes.len();
        self.learning_bytes.extend_from_slice(token);
        self.learning.push(Key {
            token: start..self.learning_bytes.len(),
            field,
        });
    }

    /// The record parsed: its shape is the one to replay.
    pub(super) fn learned(&mut self) {
        std::mem::swap(&mut self.keys, &mut self.learning);
        std::mem::swap(&mut self.bytes, &mut self.learning_bytes);
    }
}

impl JsonParser {
    /// Parses `record` by replaying the learned shape: true when it parsed
    /// (slots and strings hold its values), false when it differs from the
    /// shape somewhere (slots and strings are then partly written; the
    /// caller starts over).
    pub(super) fn replay(&mut self, record: &[u8], slots: &mut [Slot]) -> bool {
        if record.first() != Some(&b'{') {
            return false;
        }
        let mut c = Cursor { b: record, i: 1 };
        let keys = std::mem::take(&mut self.shape.keys);
        let last = keys.len().wrapping_sub(1);
        let mut ok = true;
        for (k, key) in keys.iter().enumerate() {
            let token = &self.shape.bytes[key.token.clone()];
            if !has_prefix(&record[c.i..], token) {
                ok = false;
                break;
            }
            c.i += token.len();
            c.ws();
            let parsed: Result<(), Reason> = match key.field {
                Some(f) => self.value(&mut c, f, &mut slots[f]),
                None => skip_value(&mut c),
            };
            let end = if k == last { b'}' } else { b',' };
            if parsed.is_err() || c.peek() != Some(end) {
                ok = false;
                break;
            }
            c.i += 1;
        }
        self.shape.keys = keys;
        ok && c.i == record.len()
    }
}

/// Whether `rest` starts with `token`, comparing eight bytes at a time
/// (a call to `memcmp` costs more than the comparison of a key).
#[inline]
fn has_prefix(rest: &[u8], token: &[u8]) -> bool {
    let n = token.len();
    if rest.len() < n {
        return false;
    }
    if n < 8 {
        if n < 4 {
            return rest[..n].iter().zip(token).all(|(a, b)| a == b);
        }
        // Two four-byte compares, overlapping.
        let word =
            |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
        return word(rest, 0) == word(token, 0) && word(rest, n - 4) == word(token, n - 4);
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let mut at = 0;
    while at + 8 <= n {
        if word(rest, at) != word(token, at) {
            return false;
        }
        at += 8;
    }
    // The tail: the last eight bytes, overlapping what was compared.
    at == n || word(rest, n - 8) == word(token, n - 8)
}

#[cfg(test)]
mod tests {
    use super::has_prefix;

    #[test]
    fn prefixes_of_every_length() {
        let text = b"\"merchant_id\":12345,\"amount_cents\":";
        for n in 0..=text.len() {
            assert!(has_prefix(text, &text[..n]), "{n}");
            let mut other = text[..n].to_vec();
            if let Some(b) = other.last_mut() {
                *b ^= 1;
                assert!(!has_prefix(text, &other), "{n}");
            }
            assert!(!has_prefix(&text[..n], text) || n == text.len());
        }
    }
}
