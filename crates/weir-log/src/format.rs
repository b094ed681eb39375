//! The on-disk format of a partition: segment files made of batch frames.
//!
//! # Directory layout
//!
//! ```text
//! <log dir>/<stream name>/<partition number>/<base offset, 20 digits>.log
//! e.g.  data/clicks/0/00000000000000000000.log
//!       data/clicks/0/00000000000000004096.log
//! ```
//!
//! A partition is a directory of segment files. A segment is named by the
//! offset of its first record, zero-padded to 20 decimal digits so that the
//! names sort in offset order. The segment with the highest base offset is the
//! *active* segment: the only one appended to. Every other segment is
//! *sealed*; it holds exactly the offsets from its base up to the next
//! segment's base. Files in the directory with other names are ignored.
//!
//! # Batch frame
//!
//! A segment is a sequence of frames with no gaps, padding or file header.
//! One [`append`](crate::Partition::append) writes one frame. All integers
//! are little-endian.
//!
//! | bytes  | field        | meaning |
//! |--------|--------------|---------|
//! | 0      | magic        | `0xA1`: format version 1 |
//! | 1..5   | length (u32) | length of the whole frame in bytes, header included |
//! | 5..13  | base (u64)   | offset of the first record of the batch |
//! | 13..17 | count (u32)  | number of records, at least 1 |
//! | 17..25 | time (i64)   | append time, milliseconds since the Unix epoch |
//! | 25..29 | crc (u32)    | CRC-32 (IEEE, `crc32fast`) over bytes 0..25, then over the records section |
//! | 29..   | records      | `count` times: length (u32) followed by that many bytes |
//!
//! The records section may be at most [`MAX_BATCH_BYTES`] (64 MiB) long,
//! length prefixes included; larger batches are refused by `append`.
//!
//! A frame is *valid* when its magic is right, its length is within bounds,
//! the whole frame is present in the file, the CRC matches, and the records
//! section holds exactly `count` records that fill it. Inside a segment the
//! first frame's base equals the segment's base offset and each following
//! frame's base equals the previous frame's base plus its count.
//!
//! # Recovery and validation
//!
//! On open only the active segment is scanned: the scan stops at the first
//! frame that is incomplete, invalid or out of sequence, and the file is
//! truncated there (and synced), with a `tracing` warning giving the number
//! of bytes dropped. Sealed segments are checked frame by frame as they are
//! read: a bad frame is reported as [`LogError::Corrupt`](crate::LogError)
//! and its contents are never returned.

use std::ops::Range;

/// Magic byte and format version of a frame.
pub(crate) const MAGIC: u8 = 0xA1;
/// Size of the fixed frame header in bytes.
pub(crate) const HEADER_LEN: usize = 29;
/// Largest records section (length prefixes included) a batch may have: 64 MiB.
pub const MAX_BATCH_BYTES: usize = 64 * 1024 * 1024;

const CRC_AT: usize = 25;

/// The parsed fixed header of a frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    /// Whole frame length, header included.
    pub len: u32,
    pub base: u64,
    pub count: u32,
    pub time_ms: i64,
    crc: u32,
}

impl Header {
    /// The offsets this frame holds.
    pub fn offsets(&self) -> Range<u64> {
        self.base..self.base + u64::from(self.count)
    }
}

/// Size of the records section for `records`, or `None` when it exceeds
/// [`MAX_BATCH_BYTES`].
pub(crate) fn payload_len(records: &[&[u8]]) -> Option<usize> {
    let mut total = 0usize;
    for r in records {
        total = total.checked_add(4 + r.len())?;
        if total > MAX_BATCH_BYTES {
            return None;
        }
    }
    Some(total)
}

/// Encodes one frame into `buf` (cleared first). `payload` must come from
/// [`payload_len`] for the same records.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    base: u64,
    time_ms: i64,
    records: &[&[u8]],
    payload: usize,
) {
    buf.clear();
    let len = HEADER_LEN + payload;
    buf.reserve(len);
    buf.push(MAGIC);
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&base.to_le_bytes());
    buf.extend_from_slice(&(records.len() as u32).to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    for r in records {
        buf.extend_from_slice(&(r.len() as u32).to_le_bytes());
        buf.extend_from_slice(r);
    }
    let mut h = crc32fast::Hasher::new();
    h.update(&buf[..CRC_AT]);
    h.update(&buf[HEADER_LEN..]);
    let crc = h.finalize();
    buf[CRC_AT..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
}

/// Parses and bounds-checks a fixed header (`bytes` holds at least
/// [`HEADER_LEN`] bytes). The CRC is checked later by [`verify`].
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header, &'static str> {
    let b = &bytes[..HEADER_LEN];
    if b[0] != MAGIC {
        return Err("bad magic byte");
    }
    let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let h = Header {
        len: u32_at(1),
        base: u64_at(5),
        count: u32_at(13),
        time_ms: u64_at(17) as i64,
        crc: u32_at(CRC_AT),
    };
    let len = h.len as usize;
    if len < HEADER_LEN || len - HEADER_LEN > MAX_BATCH_BYTES {
        return Err("frame length out of bounds");
    }
    if h.count == 0 || (h.count as usize).saturating_mul(4) > len - HEADER_LEN {
        return Err("record count out of bounds");
    }
    if h.base.checked_add(u64::from(h.count)).is_none() {
        return Err("offset overflow");
    }
    Ok(h)
}

/// Checks the CRC and the record structure of a whole frame (`frame` is
/// exactly `header.len` bytes).
pub(crate) fn verify(header: &Header, frame: &[u8]) -> Result<(), &'static str> {
    debug_assert_eq!(frame.len(), header.len as usize);
    let mut h = crc32fast::Hasher::new();
    h.update(&frame[..CRC_AT]);
    h.update(&frame[HEADER_LEN..]);
    if h.finalize() != header.crc {
        return Err("CRC mismatch");
    }
    let mut rest = &frame[HEADER_LEN..];
    for _ in 0..header.count {
        if rest.len() < 4 {
            return Err("record section too short");
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if rest.len() - 4 < n {
            return Err("record overruns its frame");
        }
        rest = &rest[4 + n..];
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the last record");
    }
    Ok(())
}

/// The records of a frame that passed [`verify`].
pub(crate) fn records(frame: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = &frame[HEADER_LEN..];
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        let r = &rest[4..4 + n];
        rest = &rest[4 + n..];
        Some(r)
    })
}

/// File name of the segment starting at `base`.
pub(crate) fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// Base offset encoded in a segment file name, if it is one.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_verify_round_trip() {
        let recs: [&[u8]; 3] = [b"a", b"", b"hello"];
        let payload = payload_len(&recs).unwrap();
        let mut buf = Vec::new();
        encode(&mut buf, 42, 1234, &recs, payload);
        assert_eq!(buf.len(), HEADER_LEN + 4 * 3 + 6);
        let h = parse_header(&buf).unwrap();
        assert_eq!(
            (h.base, h.count, h.time_ms, h.len as usize),
            (42, 3, 1234, buf.len())
        );
        verify(&h, &buf).unwrap();
        assert_eq!(records(&buf).collect::<Vec<_>>(), recs.to_vec());
        for i in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[i] ^= 1 << bit;
                let ok = parse_header(&bad)
                    .ok()
                    .filter(|h| h.len as usize == bad.len())
                    .map(|h| verify(&h, &bad).is_ok());
                assert_ne!(
                    ok,
                    Some(true),
                    "flip of bit {bit} in byte {i} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(4096), "00000000000000004096.log");
        assert_eq!(parse_segment_name("00000000000000004096.log"), Some(4096));
        assert_eq!(parse_segment_name("4096.log"), None);
        assert_eq!(parse_segment_name("0000000000000000409x.log"), None);
    }

    #[test]
    fn too_large_batches_are_refused() {
        let big = vec![0u8; MAX_BATCH_BYTES - 4];
        assert_eq!(payload_len(&[&big]), Some(MAX_BATCH_BYTES));
        assert_eq!(payload_len(&[&big, b""]), None);
    }
}
