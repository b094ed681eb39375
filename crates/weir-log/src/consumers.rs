//! Committed consumer positions of a stream (like Kafka's committed
//! offsets): for each named consumer, the next offset it will read in each
//! partition.
//!
//! # Layout
//!
//! ```text
//! <log dir>/<stream>/consumers/<consumer>
//! ```
//!
//! One small file per consumer, so that consumers in different processes
//! commit without coordinating. A commit writes a temporary file
//! (`.<consumer>.<pid>.<n>.tmp`, names starting with `.` are never
//! consumers), fsyncs it, renames it over the consumer's file and fsyncs the
//! directory: a reader sees the old positions or the new ones, never a mix,
//! and a crash leaves one of the two. Commits are fsynced whatever the
//! stream's [`FsyncPolicy`](crate::FsyncPolicy): they are rare, and a
//! consumer relies on them surviving.
//!
//! Nothing is cached: every read lists the directory and reads the files, so
//! a commit made by another process is seen by the next read. That costs a
//! few microseconds for a handful of consumers.
//!
//! # File format
//!
//! All integers are little-endian.
//!
//! | bytes      | field          | meaning |
//! |------------|----------------|---------|
//! | 0..8       | magic          | `WEIRCONS` |
//! | 8..12      | version (u32)  | `1` |
//! | 12..16     | count (u32)    | number of partitions `n` |
//! | 16..16+8n  | offsets (u64)  | next offset to read, per partition in order |
//! | 16+8n..+4  | crc (u32)      | CRC-32 (IEEE, `crc32fast`) over all bytes before it |
//!
//! A file of any other length, or with a wrong magic, version or CRC, is
//! reported as [`LogError::CorruptConsumer`] and its contents are never
//! returned.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::partition::sync_dir;
use crate::{io_err, LogError, Result};

/// Name of the directory holding a stream's consumer files.
pub(crate) const DIR: &str = "consumers";

const MAGIC: &[u8; 8] = b"WEIRCONS";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 16;
/// Largest partition count a file may declare (keeps a corrupt count from
/// asking for a huge read).
const MAX_PARTITIONS: u64 = 1 << 20;

/// Distinguishes temporary files of concurrent commits in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Whether `name` is an acceptable consumer name: 1 to 200 characters from
/// `A-Z a-z 0-9 . _ -`, not starting with `.` (those are temporary files,
/// and `.` and `..` are not file names).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(LogError::InvalidConsumer {
            consumer: name.to_string(),
            reason: "names are 1 to 200 of A-Z a-z 0-9 . _ -, not starting with '.'".into(),
        })
    }
}

fn encode(offsets: &[u64]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + 8 * offsets.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&(offsets.len() as u32).to_le_bytes());
    for o in offsets {
        buf.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(path: &Path, data: &[u8]) -> Result<Vec<u64>> {
    let corrupt = |reason| LogError::CorruptConsumer {
        path: path.to_path_buf(),
        reason,
    };
    if data.len() < HEADER_LEN + 4 {
        return Err(corrupt("file too short"));
    }
    if &data[..8] != MAGIC {
        return Err(corrupt("bad magic"));
    }
    let u32_at = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    if u32_at(8) != VERSION {
        return Err(corrupt("unknown version"));
    }
    let count = u32_at(12) as usize;
    if data.len() != HEADER_LEN + 8 * count + 4 {
        return Err(corrupt("length does not match the partition count"));
    }
    let body = data.len() - 4;
    if crc32fast::hash(&data[..body]) != u32_at(body) {
        return Err(corrupt("checksum mismatch"));
    }
    Ok(data[HEADER_LEN..body]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
        .collect())
}

/// Writes `offsets` as `consumer`'s file in `dir` (the stream's consumers
/// directory, below `stream_dir`), atomically and durably.
pub(crate) fn commit(stream_dir: &Path, consumer: &str, offsets: &[u64]) -> Result<()> {
    let dir = stream_dir.join(DIR);
    match std::fs::create_dir(&dir) {
        // The new directory entry must survive a crash too.
        Ok(()) => sync_dir(stream_dir)?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create directory", &dir)(e)),
    }
    let tmp = dir.join(format!(
        ".{consumer}.{}.{}.tmp",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let path = dir.join(consumer);
    let written = write_file(&tmp, &encode(offsets))
        .and_then(|()| std::fs::rename(&tmp, &path).map_err(io_err("rename", &tmp)));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(&dir)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(data).map_err(io_err("write", path))?;
    f.sync_all().map_err(io_err("fsync", path))
}

/// Removes `consumer`'s file; whether there was one.
pub(crate) fn remove(stream_dir: &Path, consumer: &str) -> Result<bool> {
    let dir = stream_dir.join(DIR);
    let path = dir.join(consumer);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            sync_dir(&dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", &path)(e)),
    }
}

/// Reads one consumer file; `None` when it does not exist (any more).
fn read_one(path: &Path) -> Result<Option<Vec<u64>>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let max = HEADER_LEN as u64 + 8 * MAX_PARTITIONS + 4;
    let mut data = Vec::with_capacity(64);
    (&mut f)
        .take(max + 1)
        .read_to_end(&mut data)
        .map_err(io_err("read", path))?;
    if data.len() as u64 > max {
        return Err(LogError::CorruptConsumer {
            path: path.to_path_buf(),
            reason: "file too long",
        });
    }
    decode(path, &data).map(Some)
}

/// Every committed consumer of the stream in `stream_dir`, sorted by name.
pub(crate) fn read_all(stream_dir: &Path) -> Result<Vec<(String, Vec<u64>)>> {
    let dir: PathBuf = stream_dir.join(DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list directory", &dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", &dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| valid_name(n)) else {
            // Temporary files of commits in progress, or foreign files.
            continue;
        };
        let path = entry.path();
        // Gone between the listing and the read: removed meanwhile.
        if let Some(offsets) = read_one(&path)? {
            out.push((name.to_string(), offsets));
        }
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let p = Path::new("x");
        for offsets in [vec![], vec![0], vec![1, u64::MAX, 42]] {
            assert_eq!(decode(p, &encode(&offsets)).unwrap(), offsets);
        }
    }

    #[test]
    fn every_damage_is_detected() {
        let p = Path::new("x");
        let good = encode(&[7, 8, 9]);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode(p, &bad).is_err(), "flip at byte {i}");
        }
        for n in 0..good.len() {
            assert!(decode(p, &good[..n]).is_err(), "cut at {n}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(decode(p, &longer).is_err());
    }

    #[test]
    fn names() {
        for ok in ["a", "pipeline-1", "a.b_c-D9", &"x".repeat(200)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            "é",
            "a\0",
            &"x".repeat(201),
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
