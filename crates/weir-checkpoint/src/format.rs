//! The checkpoint file format.
//!
//! Every checkpoint is one file, `cp-<id as 20 decimal digits>.ckpt`, laid
//! out as follows (all integers little-endian):
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 8 | magic `WEIRCKPT` |
//! | 8 | 4 | format version, `u32`: 1, or 2 when the checkpoint has delta parts |
//! | 12 | 4 | header length `H`, `u32` |
//! | 16 | `H` | header, JSON (see below) |
//! | 16 + `H` | 4 | CRC-32 of the header bytes |
//! | 20 + `H` | … | part records, in header order |
//! | len − 12 | 4 | CRC-32 of every byte before it (the whole-checkpoint checksum) |
//! | len − 8 | 8 | end magic `WEIRCEND` |
//!
//! A part record is `name_len: u32`, the UTF-8 name, `data_len: u64`, the
//! data, and a CRC-32 over everything from `name_len` to the end of the data.
//!
//! The header is a JSON object:
//!
//! ```json
//! {"format":1,"id":7,"fingerprint":"fraud-v1@3f2a","created_ms":1718000000000,
//!  "parts":[{"name":"source/positions","offset":0,"len":24,"crc32":305419896}]}
//! ```
//!
//! where `offset` is the record's offset from the start of the part records
//! (byte `20 + H`), `len` is the data length and `crc32` the record's CRC.
//!
//! ## Delta parts (format 2)
//!
//! A part may be a *delta*: operator-defined bytes (the store never
//! interprets them) to apply on top of the part of the same name as it
//! stood at an earlier checkpoint, its *base*, which may itself be a delta:
//! a chain that ends at a full part. A checkpoint with at least one delta
//! part is written as format 2 (in both the prefix and the header's
//! `format`); its header's part entries name their base, and the header
//! carries the checkpoint's `reach`, every checkpoint id that any of its
//! chains passes through, in increasing order:
//!
//! ```json
//! {"format":2,"id":9,"fingerprint":"fraud-v1@3f2a","created_ms":1718000000000,
//!  "parts":[{"name":"source","offset":0,"len":24,"crc32":305419896},
//!           {"name":"state/w/3","offset":48,"len":7,"crc32":19088743,"base":8}],
//!  "reach":[6,7,8]}
//! ```
//!
//! `base` and `reach` are left out when absent, so a checkpoint without
//! delta parts is written byte for byte as in format 1, and both formats
//! are read. Reading format 2 also checks that every base is older than
//! the checkpoint and that `reach` is strictly increasing, older than the
//! checkpoint and includes every base. Whether a chain is complete (every
//! base exists, verifies and holds the part) is checked by the store when
//! restoring, not by [`decode`].
//!
//! Reading verifies, in order: both magics, the version, the whole-checkpoint
//! checksum, the header CRC, the header's id against the file name, then
//! every record's CRC and its agreement with the header, and that the records
//! end exactly at the trailer. CRC-32 detects every error burst of up to 32
//! bits, so any single corrupted byte, and any truncation (which also loses
//! the end magic), is reported rather than returned as data.
//!
//! Next to the checkpoint files the store keeps `MANIFEST`, a JSON object
//! `{"format":1,"ids":[5,6,7],"crc32":N}` naming the committed checkpoints,
//! oldest first, where `crc32` is the CRC-32 of the ids as consecutive
//! little-endian `u64`s. Only checkpoints listed there are ever read. A
//! store opened with an owner epoch (see the crate docs on fencing) also
//! writes `"epoch":E` (E > 0), and the CRC then covers E as a little-endian
//! `u64` after the ids; a manifest without `epoch` has epoch 0.
//!
//! When a listed checkpoint's chains reach checkpoints that are no longer
//! listed, the manifest names those in `"retained":[…]` (strictly
//! increasing, none of them listed) and has `"format":2`; the CRC then also
//! covers the bytes `retained` followed by each retained id as a
//! little-endian `u64`, after the epoch. Retained checkpoints are never
//! pruned, and never restored on their own. A manifest without `retained`
//! (every format 1 manifest) retains nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Checkpoint;

/// First bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"WEIRCKPT";
/// Last bytes of every checkpoint file.
pub const END_MAGIC: &[u8; 8] = b"WEIRCEND";
/// The format version of checkpoints with only full parts, and of
/// manifests that retain nothing; this crate reads it and writes it
/// whenever it can.
pub const FORMAT_VERSION: u32 = 1;
/// The format version of checkpoints with delta parts, and of manifests
/// with retained checkpoints; this crate reads it too.
pub const DELTA_FORMAT_VERSION: u32 = 2;

fn is_supported(version: u32) -> bool {
    version == FORMAT_VERSION || version == DELTA_FORMAT_VERSION
}

const PREFIX_LEN: usize = 16;
/// How many bytes of a checkpoint `list` reads to find its header.
pub(crate) const HEADER_PEEK: usize = 64 * 1024;
const TRAILER_LEN: usize = 12;

/// One part as listed in the header.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PartEntry {
    pub name: String,
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
    /// For a delta part, the id of the checkpoint it applies on top of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<u64>,
}

/// The JSON header of a checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Header {
    pub format: u32,
    pub id: u64,
    pub fingerprint: String,
    pub created_ms: u64,
    pub parts: Vec<PartEntry>,
    /// Every checkpoint id the delta parts' chains pass through,
    /// increasing; empty without delta parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reach: Vec<u64>,
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Bytes of a part's record around its data: name length, name, data
/// length before it; the CRC after it.
fn record_overhead(name: &str) -> usize {
    4 + name.len() + 8 + 4
}

/// The CRC of a part's record (everything before the CRC itself),
/// computed over the pieces: the data is copied once, into the file.
fn record_crc(name: &str, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&(name.len() as u32).to_le_bytes());
    h.update(name.as_bytes());
    h.update(&(data.len() as u64).to_le_bytes());
    h.update(data);
    h.finalize()
}

/// Appends a part's record to `out`.
fn put_record(out: &mut Vec<u8>, name: &str, data: &[u8], crc: u32) {
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Encodes a checkpoint into the bytes of its file.
///
/// The header's `reach` is the checkpoint's direct bases only: the store's
/// [`write`](crate::CheckpointStore::write) computes the whole reach of
/// each chain from the bases' headers.
///
/// Fails (with a reason) when a part name is longer than `u32::MAX` bytes,
/// the header does not fit in `u32::MAX` bytes, a base names a part the
/// checkpoint does not hold, or a base is not older than the checkpoint.
pub fn encode(cp: &Checkpoint) -> Result<Vec<u8>, String> {
    let reach: Vec<u64> = cp
        .bases
        .values()
        .copied()
        .collect::<std::collections::BTreeSet<u64>>()
        .into_iter()
        .collect();
    encode_with_reach(cp, &reach)
}

/// [`encode`] with the header's `reach` given (strictly increasing, and
/// including every base).
pub(crate) fn encode_with_reach(cp: &Checkpoint, reach: &[u64]) -> Result<Vec<u8>, String> {
    for (name, &base) in &cp.bases {
        if !cp.parts.contains_key(name) {
            return Err(format!(
                "part {name:?} has a base (checkpoint {base}) but no data"
            ));
        }
        if base >= cp.id {
            return Err(format!(
                "part {name:?} has base checkpoint {base}, which is not older than the checkpoint"
            ));
        }
    }
    check_reach(cp.id, reach, cp.bases.values().copied())?;
    let version = if cp.bases.is_empty() {
        FORMAT_VERSION
    } else {
        DELTA_FORMAT_VERSION
    };
    let mut parts = Vec::with_capacity(cp.parts.len());
    let mut crcs = Vec::with_capacity(cp.parts.len());
    let mut records_len = 0u64;
    for (name, data) in &cp.parts {
        if u32::try_from(name.len()).is_err() {
            return Err(format!("part name of {} bytes is too long", name.len()));
        }
        let rec_crc = record_crc(name, data);
        crcs.push(rec_crc);
        parts.push(PartEntry {
            name: name.clone(),
            offset: records_len,
            len: data.len() as u64,
            crc32: rec_crc,
            base: cp.bases.get(name).copied(),
        });
        records_len += (record_overhead(name) + data.len()) as u64;
    }
    let header = Header {
        format: version,
        id: cp.id,
        fingerprint: cp.fingerprint.clone(),
        created_ms: cp.created_ms,
        parts,
        reach: if cp.bases.is_empty() {
            Vec::new()
        } else {
            reach.to_vec()
        },
    };
    let header_json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let header_len = u32::try_from(header_json.len())
        .map_err(|_| format!("header of {} bytes is too long", header_json.len()))?;
    // One buffer of the file's exact size, each part's data copied into it
    // once.
    let mut out =
        Vec::with_capacity(PREFIX_LEN + header_json.len() + 4 + records_len as usize + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header_json);
    out.extend_from_slice(&crc(&header_json).to_le_bytes());
    for ((name, data), rec_crc) in cp.parts.iter().zip(crcs) {
        put_record(&mut out, name, data, rec_crc);
    }
    let whole = crc(&out);
    out.extend_from_slice(&whole.to_le_bytes());
    out.extend_from_slice(END_MAGIC);
    Ok(out)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    Some(u64::from_le_bytes(bytes.get(at..end)?.try_into().ok()?))
}

/// Checks that `reach` is strictly increasing, older than checkpoint `id`
/// and includes every base in `bases`.
fn check_reach(id: u64, reach: &[u64], bases: impl Iterator<Item = u64>) -> Result<(), String> {
    if reach.windows(2).any(|w| w[0] >= w[1]) {
        return Err("reach is not strictly increasing".into());
    }
    if reach.last().is_some_and(|&r| r >= id) {
        return Err("reach names a checkpoint that is not older".into());
    }
    for base in bases {
        if reach.binary_search(&base).is_err() {
            return Err(format!("reach does not include base checkpoint {base}"));
        }
    }
    Ok(())
}

/// Checks the fixed prefix and returns the format version and the header
/// length.
fn check_prefix(prefix: &[u8]) -> Result<(u32, usize), String> {
    if prefix.len() < PREFIX_LEN {
        return Err(format!(
            "file is {} bytes, too short for a checkpoint",
            prefix.len()
        ));
    }
    if &prefix[..8] != MAGIC {
        return Err("bad magic (not a checkpoint file)".into());
    }
    let version = u32_at(prefix, 8).expect("checked length");
    if !is_supported(version) {
        return Err(format!(
            "format version {version} is not supported (expected {FORMAT_VERSION} or \
             {DELTA_FORMAT_VERSION})"
        ));
    }
    Ok((
        version,
        u32_at(prefix, 12).expect("checked length") as usize,
    ))
}

/// Parses and checks the header bytes (JSON followed by its CRC).
fn parse_header(
    header_and_crc: &[u8],
    version: u32,
    expected_id: Option<u64>,
) -> Result<Header, String> {
    let h = header_and_crc.len() - 4;
    let json = &header_and_crc[..h];
    let stored = u32_at(header_and_crc, h).expect("4 bytes");
    if crc(json) != stored {
        return Err("header checksum mismatch".into());
    }
    let header: Header =
        serde_json::from_slice(json).map_err(|e| format!("header is not valid: {e}"))?;
    if header.format != version {
        return Err(format!(
            "header format {} does not match the file's format version {version}",
            header.format
        ));
    }
    let bases = header.parts.iter().filter_map(|p| p.base);
    if version == FORMAT_VERSION {
        if bases.clone().next().is_some() || !header.reach.is_empty() {
            return Err(format!(
                "a format {FORMAT_VERSION} header names bases (delta parts need format \
                 {DELTA_FORMAT_VERSION})"
            ));
        }
    } else {
        if let Some(p) = header
            .parts
            .iter()
            .find(|p| p.base.is_some_and(|b| b >= header.id))
        {
            return Err(format!(
                "part {:?} has a base that is not older than the checkpoint",
                p.name
            ));
        }
        check_reach(header.id, &header.reach, bases)?;
    }
    if let Some(id) = expected_id {
        if header.id != id {
            return Err(format!(
                "header names checkpoint {} but the file is {id}",
                header.id
            ));
        }
    }
    Ok(header)
}

/// Reads and checks only the header from the start of a checkpoint file.
pub(crate) fn read_header(
    reader: &mut impl std::io::Read,
    expected_id: Option<u64>,
) -> Result<Header, String> {
    let mut prefix = [0u8; PREFIX_LEN];
    reader
        .read_exact(&mut prefix)
        .map_err(|e| format!("cannot read prefix: {e}"))?;
    let (version, h) = check_prefix(&prefix)?;
    let mut rest = Vec::new();
    use std::io::Read;
    reader
        .take(h as u64 + 4)
        .read_to_end(&mut rest)
        .map_err(|e| format!("cannot read header: {e}"))?;
    if rest.len() != h + 4 {
        return Err("file ends inside the header".into());
    }
    parse_header(&rest, version, expected_id)
}

/// Decodes and fully verifies the bytes of a checkpoint file.
///
/// `expected_id`, when given, must match the id in the header. The error is
/// a human-readable reason the bytes are not a valid checkpoint.
pub fn decode(bytes: &[u8], expected_id: Option<u64>) -> Result<Checkpoint, String> {
    decode_with_reach(bytes, expected_id).map(|(cp, _)| cp)
}

/// [`decode`], also returning the header's `reach`.
pub(crate) fn decode_with_reach(
    bytes: &[u8],
    expected_id: Option<u64>,
) -> Result<(Checkpoint, Vec<u64>), String> {
    let len = bytes.len();
    if len < PREFIX_LEN + 4 + TRAILER_LEN {
        return Err(format!(
            "file is {len} bytes, too short for a checkpoint (truncated?)"
        ));
    }
    let (version, h) = check_prefix(bytes)?;
    if &bytes[len - 8..] != END_MAGIC {
        return Err("end magic missing (truncated or overwritten)".into());
    }
    let body_end = len - TRAILER_LEN;
    let whole = u32_at(bytes, body_end).expect("checked length");
    if crc(&bytes[..body_end]) != whole {
        return Err("whole-checkpoint checksum mismatch".into());
    }
    let records_start = PREFIX_LEN
        .checked_add(h)
        .and_then(|x| x.checked_add(4))
        .filter(|&x| x <= body_end)
        .ok_or("header length runs past the end of the file")?;
    let header = parse_header(&bytes[PREFIX_LEN..records_start], version, expected_id)?;
    let records = &bytes[records_start..body_end];
    let mut at = 0usize;
    let mut parts = BTreeMap::new();
    let mut bases = BTreeMap::new();
    for entry in &header.parts {
        let bad = |what: &str| format!("part {:?}: {what}", entry.name);
        if entry.offset != at as u64 {
            return Err(bad("offset does not match the records"));
        }
        let name_len = u32_at(records, at).ok_or_else(|| bad("truncated"))? as usize;
        let name_end = (at + 4)
            .checked_add(name_len)
            .ok_or_else(|| bad("bad length"))?;
        let name = records
            .get(at + 4..name_end)
            .ok_or_else(|| bad("truncated"))?;
        let data_len = u64_at(records, name_end).ok_or_else(|| bad("truncated"))?;
        let data_start = name_end + 8;
        let data_end = usize::try_from(data_len)
            .ok()
            .and_then(|l| data_start.checked_add(l))
            .ok_or_else(|| bad("bad length"))?;
        let data = records
            .get(data_start..data_end)
            .ok_or_else(|| bad("truncated"))?;
        let stored = u32_at(records, data_end).ok_or_else(|| bad("truncated"))?;
        if crc(&records[at..data_end]) != stored {
            return Err(bad("checksum mismatch"));
        }
        if name != entry.name.as_bytes() || data_len != entry.len || stored != entry.crc32 {
            return Err(bad("record does not match the header"));
        }
        if parts.insert(entry.name.clone(), data.to_vec()).is_some() {
            return Err(bad("listed twice"));
        }
        if let Some(base) = entry.base {
            bases.insert(entry.name.clone(), base);
        }
        at = data_end + 4;
    }
    if at != records.len() {
        return Err(format!(
            "{} unexpected bytes after the last part",
            records.len() - at
        ));
    }
    Ok((
        Checkpoint {
            id: header.id,
            fingerprint: header.fingerprint,
            created_ms: header.created_ms,
            parts,
            bases,
        },
        header.reach,
    ))
}

/// The MANIFEST file's contents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Manifest {
    pub format: u32,
    pub ids: Vec<u64>,
    /// The owner epoch of the last writer; absent (0) when no writer gave
    /// one, so manifests without epochs read and write as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    /// Checkpoints that are not listed but that a listed checkpoint's
    /// chains reach: never pruned. Absent (empty) in format 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retained: Vec<u64>,
    pub crc32: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// CRC-32 of the ids as little-endian `u64`s, followed by the epoch when it
/// is not zero, followed by `retained` and the retained ids when there are
/// any.
fn manifest_crc(ids: &[u64], epoch: u64, retained: &[u64]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for id in ids {
        h.update(&id.to_le_bytes());
    }
    if epoch != 0 {
        h.update(&epoch.to_le_bytes());
    }
    if !retained.is_empty() {
        h.update(b"retained");
        for id in retained {
            h.update(&id.to_le_bytes());
        }
    }
    h.finalize()
}

impl Manifest {
    /// A manifest listing `ids` and retaining `retained` (both strictly
    /// increasing, disjoint).
    pub fn new(ids: Vec<u64>, epoch: u64, retained: Vec<u64>) -> Self {
        Manifest {
            format: if retained.is_empty() {
                FORMAT_VERSION
            } else {
                DELTA_FORMAT_VERSION
            },
            crc32: manifest_crc(&ids, epoch, &retained),
            epoch,
            ids,
            retained,
        }
    }

    /// Whether checkpoint `id` is listed or retained.
    pub fn holds(&self, id: u64) -> bool {
        self.ids.binary_search(&id).is_ok() || self.retained.binary_search(&id).is_ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if !is_supported(m.format) {
            return Err(format!("format {} is not supported", m.format));
        }
        if manifest_crc(&m.ids, m.epoch, &m.retained) != m.crc32 {
            return Err("checksum mismatch".into());
        }
        if m.ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err("ids are not strictly increasing".into());
        }
        if m.format == FORMAT_VERSION && !m.retained.is_empty() {
            return Err(format!(
                "a format {FORMAT_VERSION} manifest retains checkpoints"
            ));
        }
        if m.retained.windows(2).any(|w| w[0] >= w[1]) {
            return Err("retained ids are not strictly increasing".into());
        }
        if m.retained.iter().any(|r| m.ids.binary_search(r).is_ok()) {
            return Err("a retained id is also listed".into());
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_crc(json: &[u8]) -> Vec<u8> {
        let mut v = json.to_vec();
        v.extend_from_slice(&crc(json).to_le_bytes());
        v
    }

    #[test]
    fn full_parts_encode_exactly_as_format_1() {
        let cp = Checkpoint {
            id: 7,
            fingerprint: "fp".into(),
            created_ms: 5,
            parts: [("a".to_string(), vec![1, 2, 3])].into(),
            bases: BTreeMap::new(),
        };
        let bytes = encode(&cp).unwrap();
        // The record, by hand: name length, name, data length, data, CRC.
        let mut rec = vec![1, 0, 0, 0, b'a', 3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        let rec_crc = crc32fast::hash(&rec);
        rec.extend_from_slice(&rec_crc.to_le_bytes());
        let json = format!(
            r#"{{"format":1,"id":7,"fingerprint":"fp","created_ms":5,"parts":[{{"name":"a","offset":0,"len":3,"crc32":{rec_crc}}}]}}"#
        );
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(&bytes[8..12], &1u32.to_le_bytes());
        assert_eq!(&bytes[12..16], &(json.len() as u32).to_le_bytes());
        assert_eq!(&bytes[16..16 + json.len()], json.as_bytes());
        assert_eq!(&bytes[16 + json.len() + 4..bytes.len() - 12], &rec[..]);
    }

    #[test]
    fn delta_parts_encode_as_format_2_with_bases_and_reach() {
        let cp = Checkpoint::new(9, "fp")
            .with_part("a", vec![1])
            .with_delta_part("b", 8, vec![2]);
        let bytes = encode_with_reach(&cp, &[6, 8]).unwrap();
        assert_eq!(&bytes[8..12], &2u32.to_le_bytes());
        let (back, reach) = decode_with_reach(&bytes, Some(9)).unwrap();
        assert_eq!((back, reach), (cp.clone(), vec![6, 8]));
        // A reach without a base, or with a checkpoint not older: refused.
        assert!(encode_with_reach(&cp, &[6]).is_err());
        assert!(encode_with_reach(&cp, &[8, 9]).is_err());
        assert!(encode_with_reach(&cp, &[8, 6]).is_err());
    }

    #[test]
    fn headers_with_inconsistent_bases_are_refused() {
        let v1_with_base = with_crc(
            br#"{"format":1,"id":3,"fingerprint":"f","created_ms":0,"parts":[{"name":"a","offset":0,"len":0,"crc32":0,"base":1}],"reach":[1]}"#,
        );
        let err = parse_header(&v1_with_base, 1, Some(3)).unwrap_err();
        assert!(err.contains("names bases"), "{err}");
        let not_older = with_crc(
            br#"{"format":2,"id":3,"fingerprint":"f","created_ms":0,"parts":[{"name":"a","offset":0,"len":0,"crc32":0,"base":3}],"reach":[3]}"#,
        );
        let err = parse_header(&not_older, 2, Some(3)).unwrap_err();
        assert!(err.contains("not older"), "{err}");
        let unreached = with_crc(
            br#"{"format":2,"id":3,"fingerprint":"f","created_ms":0,"parts":[{"name":"a","offset":0,"len":0,"crc32":0,"base":1}],"reach":[2]}"#,
        );
        let err = parse_header(&unreached, 2, Some(3)).unwrap_err();
        assert!(err.contains("does not include base checkpoint 1"), "{err}");
        // The prefix and the header must agree on the version.
        let err = parse_header(&unreached, 1, Some(3)).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
    }

    #[test]
    fn manifests_without_retained_ids_are_format_1_as_before() {
        let m = Manifest::new(vec![1, 2], 0, Vec::new());
        let mut old_crc = crc32fast::Hasher::new();
        old_crc.update(&1u64.to_le_bytes());
        old_crc.update(&2u64.to_le_bytes());
        let old_crc = old_crc.finalize();
        assert_eq!(
            String::from_utf8(m.encode()).unwrap(),
            format!("{{\"format\":1,\"ids\":[1,2],\"crc32\":{old_crc}}}\n")
        );
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);

        let r = Manifest::new(vec![4, 5], 3, vec![1, 2]);
        let text = String::from_utf8(r.encode()).unwrap();
        assert!(
            text.starts_with(r#"{"format":2,"ids":[4,5],"epoch":3,"retained":[1,2],"crc32":"#),
            "{text}"
        );
        assert_eq!(Manifest::decode(&r.encode()).unwrap(), r);
        assert!(r.holds(1) && r.holds(5) && !r.holds(3));
        // The CRC covers the retained ids.
        let tampered = text.replace("[1,2]", "[1,3]");
        assert_eq!(
            Manifest::decode(tampered.as_bytes()).unwrap_err(),
            "checksum mismatch"
        );
        // Retained ids in a format 1 manifest, or also listed: refused.
        let mut bad = r.clone();
        bad.format = FORMAT_VERSION;
        assert!(Manifest::decode(&bad.encode()).is_err());
        let overlap = Manifest::new(vec![4, 5], 0, vec![4]);
        assert!(Manifest::decode(&overlap.encode()).is_err());
    }
}
