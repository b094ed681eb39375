//! The transactional sink's part of a checkpoint: per partition of the
//! topic, an offset from which a read-back after a restart must start to
//! see every record this sink committed after that checkpoint.
//!
//! Layout: a version byte (1), the partition count as a LEB128 varint, then
//! each offset as a varint: a few bytes per partition, so a checkpoint of a
//! sink on a 100-partition topic stays well under a kilobyte.

use weir_connect::ConnectError;

const VERSION: u8 = 1;

/// Encodes the offsets (each `>= 0`).
pub(crate) fn encode(offsets: &[i64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + offsets.len() * 4);
    out.push(VERSION);
    put_varint(&mut out, offsets.len() as u64);
    for &offset in offsets {
        // Offsets below zero never reach here (they are clamped where
        // tracked); `max(0)` keeps the encoding total anyway.
        put_varint(&mut out, offset.max(0) as u64);
    }
    out
}

/// Decodes what [`encode`] wrote.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<i64>, ConnectError> {
    let bad = |why: &str| {
        ConnectError::Checkpoint(format!(
            "kafka sink checkpoint part ({} bytes) is unusable: {why}",
            bytes.len()
        ))
    };
    let (&version, mut rest) = bytes.split_first().ok_or_else(|| bad("empty"))?;
    if version != VERSION {
        return Err(bad(&format!("version {version}, expected {VERSION}")));
    }
    let count = take_varint(&mut rest).ok_or_else(|| bad("truncated partition count"))?;
    // Each offset takes at least one byte: a count beyond the bytes left is
    // corrupt, and checking first keeps a bad count from allocating.
    if count > rest.len() as u64 {
        return Err(bad(&format!("{count} partitions in {} bytes", rest.len())));
    }
    let mut offsets = Vec::with_capacity(count as usize);
    for partition in 0..count {
        let offset = take_varint(&mut rest)
            .ok_or_else(|| bad(&format!("truncated at partition {partition}")))?;
        let offset =
            i64::try_from(offset).map_err(|_| bad(&format!("offset {offset} out of range")))?;
        offsets.push(offset);
    }
    if !rest.is_empty() {
        return Err(bad(&format!("{} trailing bytes", rest.len())));
    }
    Ok(offsets)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_round_trip_compactly() {
        let offsets = vec![0, 127, 128, 1 << 40, i64::MAX];
        let bytes = encode(&offsets);
        // version + count + 1 + 1 + 2 + 6 + 9 bytes.
        assert_eq!(bytes.len(), 1 + 1 + 1 + 1 + 2 + 6 + 9);
        assert_eq!(bytes[0], 1);
        assert_eq!(decode(&bytes).unwrap(), offsets);
        assert_eq!(decode(&encode(&[])).unwrap(), Vec::<i64>::new());
    }

    #[test]
    fn corrupt_parts_are_refused_with_reasons() {
        let good = encode(&[5, 300]);
        let msg = |b: &[u8]| decode(b).unwrap_err().to_string();
        assert!(msg(&[]).ends_with("empty"), "{}", msg(&[]));
        assert!(msg(&[2, 0]).contains("version 2, expected 1"));
        assert!(msg(&good[..good.len() - 1]).contains("truncated at partition 1"));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(msg(&trailing).contains("1 trailing bytes"));
        // A count far beyond the bytes present.
        assert!(msg(&[1, 0xff, 0xff, 0x03]).contains("partitions in 0 bytes"));
    }
}
