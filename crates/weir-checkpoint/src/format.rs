//! The checkpoint file format.
//!
//! Every checkpoint is one file, `cp-<id as 20 decimal digits>.ckpt`, laid
//! out as follows (all integers little-endian):
//!
//! | offset | size | contents |
//! |---|---|---|
//! | 0 | 8 | magic `WEIRCKPT` |
//! | 8 | 4 | format version, `u32` (currently 1) |
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

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Checkpoint;

/// First bytes of every checkpoint file.
pub const MAGIC: &[u8; 8] = b"WEIRCKPT";
/// Last bytes of every checkpoint file.
pub const END_MAGIC: &[u8; 8] = b"WEIRCEND";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u32 = 1;

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
}

/// The JSON header of a checkpoint file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Header {
    pub format: u32,
    pub id: u64,
    pub fingerprint: String,
    pub created_ms: u64,
    pub parts: Vec<PartEntry>,
}

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn encode_record(name: &str, data: &[u8]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(4 + name.len() + 8 + data.len() + 4);
    rec.extend_from_slice(&(name.len() as u32).to_le_bytes());
    rec.extend_from_slice(name.as_bytes());
    rec.extend_from_slice(&(data.len() as u64).to_le_bytes());
    rec.extend_from_slice(data);
    let c = crc(&rec);
    rec.extend_from_slice(&c.to_le_bytes());
    rec
}

/// Encodes a checkpoint into the bytes of its file.
///
/// Fails (with a reason) only when a part name is longer than `u32::MAX`
/// bytes or the header does not fit in `u32::MAX` bytes.
pub fn encode(cp: &Checkpoint) -> Result<Vec<u8>, String> {
    let mut records = Vec::new();
    let mut parts = Vec::with_capacity(cp.parts.len());
    for (name, data) in &cp.parts {
        if u32::try_from(name.len()).is_err() {
            return Err(format!("part name of {} bytes is too long", name.len()));
        }
        let rec = encode_record(name, data);
        let rec_crc = u32::from_le_bytes(rec[rec.len() - 4..].try_into().expect("4 bytes"));
        parts.push(PartEntry {
            name: name.clone(),
            offset: records.len() as u64,
            len: data.len() as u64,
            crc32: rec_crc,
        });
        records.extend_from_slice(&rec);
    }
    let header = Header {
        format: FORMAT_VERSION,
        id: cp.id,
        fingerprint: cp.fingerprint.clone(),
        created_ms: cp.created_ms,
        parts,
    };
    let header_json = serde_json::to_vec(&header).map_err(|e| e.to_string())?;
    let header_len = u32::try_from(header_json.len())
        .map_err(|_| format!("header of {} bytes is too long", header_json.len()))?;
    let mut out =
        Vec::with_capacity(PREFIX_LEN + header_json.len() + 4 + records.len() + TRAILER_LEN);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&header_len.to_le_bytes());
    out.extend_from_slice(&header_json);
    out.extend_from_slice(&crc(&header_json).to_le_bytes());
    out.extend_from_slice(&records);
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

/// Checks the fixed prefix and returns the header length.
fn check_prefix(prefix: &[u8]) -> Result<usize, String> {
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
    if version != FORMAT_VERSION {
        return Err(format!(
            "format version {version} is not supported (expected {FORMAT_VERSION})"
        ));
    }
    Ok(u32_at(prefix, 12).expect("checked length") as usize)
}

/// Parses and checks the header bytes (JSON followed by its CRC).
fn parse_header(header_and_crc: &[u8], expected_id: Option<u64>) -> Result<Header, String> {
    let h = header_and_crc.len() - 4;
    let json = &header_and_crc[..h];
    let stored = u32_at(header_and_crc, h).expect("4 bytes");
    if crc(json) != stored {
        return Err("header checksum mismatch".into());
    }
    let header: Header =
        serde_json::from_slice(json).map_err(|e| format!("header is not valid: {e}"))?;
    if header.format != FORMAT_VERSION {
        return Err(format!("header format {} is not supported", header.format));
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
    let h = check_prefix(&prefix)?;
    let mut rest = Vec::new();
    use std::io::Read;
    reader
        .take(h as u64 + 4)
        .read_to_end(&mut rest)
        .map_err(|e| format!("cannot read header: {e}"))?;
    if rest.len() != h + 4 {
        return Err("file ends inside the header".into());
    }
    parse_header(&rest, expected_id)
}

/// Decodes and fully verifies the bytes of a checkpoint file.
///
/// `expected_id`, when given, must match the id in the header. The error is
/// a human-readable reason the bytes are not a valid checkpoint.
pub fn decode(bytes: &[u8], expected_id: Option<u64>) -> Result<Checkpoint, String> {
    let len = bytes.len();
    if len < PREFIX_LEN + 4 + TRAILER_LEN {
        return Err(format!(
            "file is {len} bytes, too short for a checkpoint (truncated?)"
        ));
    }
    let h = check_prefix(bytes)?;
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
    let header = parse_header(&bytes[PREFIX_LEN..records_start], expected_id)?;
    let records = &bytes[records_start..body_end];
    let mut at = 0usize;
    let mut parts = BTreeMap::new();
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
        at = data_end + 4;
    }
    if at != records.len() {
        return Err(format!(
            "{} unexpected bytes after the last part",
            records.len() - at
        ));
    }
    Ok(Checkpoint {
        id: header.id,
        fingerprint: header.fingerprint,
        created_ms: header.created_ms,
        parts,
    })
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
    pub crc32: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// CRC-32 of the ids as little-endian `u64`s, followed by the epoch when it
/// is not zero.
fn manifest_crc(ids: &[u64], epoch: u64) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for id in ids {
        h.update(&id.to_le_bytes());
    }
    if epoch != 0 {
        h.update(&epoch.to_le_bytes());
    }
    h.finalize()
}

impl Manifest {
    pub fn new(ids: Vec<u64>, epoch: u64) -> Self {
        Manifest {
            format: FORMAT_VERSION,
            crc32: manifest_crc(&ids, epoch),
            epoch,
            ids,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format != FORMAT_VERSION {
            return Err(format!("format {} is not supported", m.format));
        }
        if manifest_crc(&m.ids, m.epoch) != m.crc32 {
            return Err("checksum mismatch".into());
        }
        if m.ids.windows(2).any(|w| w[0] >= w[1]) {
            return Err("ids are not strictly increasing".into());
        }
        Ok(m)
    }
}
