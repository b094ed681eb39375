//! Reading a partition that another process writes.
//!
//! [`Log::open`](crate::Log::open) is for the one process that appends: it
//! recovers the last segment, truncating a torn tail. A pipeline reading a
//! stream that `weir ingest` appends to must never do that — the "torn
//! tail" may be a frame the writer is in the middle of. A [`TailReader`]
//! only reads: it scans segment files from where its last read ended, takes
//! a frame that does not verify at the very end of the newest segment for
//! one still being written (and reads it again next time), and reports one
//! anywhere else as corruption.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::format;
use crate::segment::scan;
use crate::{LogError, Result};

/// Reads one partition of a stream, read-only, following its growth.
#[derive(Debug)]
pub struct TailReader {
    dir: PathBuf,
    /// Where the last read stopped: segment base, file position, and the
    /// offset of the frame there.
    at: Option<(u64, u64, u64)>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> LogError {
    let path = path.to_path_buf();
    move |source| LogError::Io { op, path, source }
}

/// Records, for a consumer reading stream `stream` of the log at `log_dir`
/// from another process, the next offset it will read in each partition —
/// what [`Stream::commit_consumer`](crate::Stream::commit_consumer) does,
/// without opening the stream for writing. Ingest's lag bound reads it.
pub fn commit_consumer_position(
    log_dir: &Path,
    stream: &str,
    consumer: &str,
    next_offsets: &[u64],
) -> Result<()> {
    crate::consumers::check_name(consumer)?;
    crate::consumers::commit(&log_dir.join(stream), consumer, next_offsets)
}

impl TailReader {
    /// A reader of partition `partition` of `stream` in the log at `log_dir`.
    /// The partition need not exist yet.
    pub fn new(log_dir: &Path, stream: &str, partition: u32) -> TailReader {
        TailReader {
            dir: log_dir.join(stream).join(partition.to_string()),
            at: None,
        }
    }

    fn bases(&self) -> Result<Vec<u64>> {
        let mut bases = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(bases),
            Err(e) => return Err(io_err("list directory", &self.dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list directory", &self.dir))?;
            if let Some(base) = entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_name)
            {
                bases.push(base);
            }
        }
        bases.sort_unstable();
        Ok(bases)
    }

    /// The first offset still on disk (0 for an empty partition).
    pub fn first_offset(&self) -> Result<u64> {
        Ok(self.bases()?.first().copied().unwrap_or(0))
    }

    /// The offset after the last complete record now on disk.
    pub fn end_offset(&mut self) -> Result<u64> {
        // From where the last read stopped, else from the first retained
        // record (retention may have removed offset 0).
        let first = self.first_offset()?;
        let from = self.at.map_or(first, |a| a.2).max(first);
        let mut end = from;
        self.visit(from, |off, _| {
            end = off + 1;
            true
        })?;
        Ok(end.max(self.at.map_or(0, |a| a.2)))
    }

    /// Up to `max_records` records from offset `from` on, as `(offset,
    /// record)`; empty when nothing complete is there yet. `from` below the
    /// first retained offset is [`LogError::OffsetOutOfRange`].
    pub fn read(&mut self, from: u64, max_records: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if max_records == 0 {
            return Ok(out);
        }
        self.visit(from, |off, rec| {
            out.push((off, rec.to_vec()));
            out.len() < max_records
        })?;
        Ok(out)
    }

    /// Calls `visit` with each record at or after `from`, in order, until it
    /// returns false or the complete records end.
    fn visit(&mut self, from: u64, mut visit: impl FnMut(u64, &[u8]) -> bool) -> Result<()> {
        let bases = self.bases()?;
        let Some(&first) = bases.first() else {
            return Ok(());
        };
        if from < first {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                first,
            });
        }
        // Resume where the last read stopped when it is at or before `from`
        // in the same segment; else scan the segment holding `from`.
        let seg_index = bases.partition_point(|&b| b <= from) - 1;
        let (mut pos, mut next) = match self.at {
            Some((base, pos, next)) if base == bases[seg_index] && next <= from => (pos, next),
            _ => (0, bases[seg_index]),
        };
        let mut i = seg_index;
        loop {
            let base = bases[i];
            let path = self.dir.join(format::segment_name(base));
            let file = File::open(&path).map_err(io_err("open segment", &path))?;
            let len = file
                .metadata()
                .map_err(io_err("stat segment", &path))?
                .len();
            let mut more = true;
            let mut frame_start = (pos, next);
            let result = scan(&file, &path, pos, next, len, |p, h, frame| {
                frame_start = (p, h.base);
                for (off, rec) in h.offsets().zip(format::records(frame)) {
                    if off >= from && !visit(off, rec) {
                        more = false;
                        return false;
                    }
                }
                true
            })?;
            if !more {
                // Stopped inside the frame that starts at `frame_start`.
                self.at = Some((base, frame_start.0, frame_start.1));
                return Ok(());
            }
            pos = result.pos;
            next = result.next;
            self.at = Some((base, pos, next));
            let last = i + 1 == bases.len();
            if let Some(stop) = result.stop {
                if last {
                    // A frame still being written, or a torn tail the
                    // writer will cut on its next open: not visible yet.
                    return Ok(());
                }
                return Err(LogError::Corrupt {
                    segment: path,
                    position: stop.position,
                    reason: stop.reason,
                });
            }
            if last {
                return Ok(());
            }
            i += 1;
            pos = 0;
            next = bases[i];
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use crate::{FsyncPolicy, Log, StreamConfig};

    #[test]
    fn the_end_is_found_after_retention_removed_the_first_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Log::open(dir.path()).expect("log");
        let config = StreamConfig {
            partitions: 1,
            segment_bytes: 200,
            retention_bytes: Some(500),
            retention_age: None,
            fsync: FsyncPolicy::Never,
        };
        let stream = log.stream("s", config).expect("stream");
        let p = stream.partition(0);
        // One 133-byte frame per segment; retention keeps the last three.
        for i in 0..10u8 {
            p.append(&[&[i; 100]]).expect("append");
        }
        p.enforce_retention(SystemTime::now()).expect("retention");
        assert_eq!(p.first_offset(), 7);
        let mut reader = super::TailReader::new(dir.path(), "s", 0);
        assert_eq!(reader.first_offset().expect("first"), 7);
        assert_eq!(reader.end_offset().expect("end"), 10);
        assert_eq!(reader.read(9, 5).expect("read").len(), 1);
        assert_eq!(reader.end_offset().expect("end"), 10);
    }

    /// A writer that reopens a partition cuts the torn tail a kill left,
    /// while a reader in another process may hold the longer length: the
    /// reader stops at the cut instead of failing ("failed to fill whole
    /// buffer" before the fix).
    #[test]
    fn a_segment_cut_after_its_length_was_taken_ends_the_scan() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = Log::open(dir.path()).expect("log");
        let config = StreamConfig {
            partitions: 1,
            segment_bytes: 1 << 20,
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::Never,
        };
        let stream = log.stream("s", config).expect("stream");
        for i in 0..3u8 {
            stream.partition(0).append(&[&[i; 50]]).expect("append");
        }
        let path = dir.path().join("s/0").join(crate::format::segment_name(0));
        let good = std::fs::metadata(&path).expect("stat").len();
        // A torn frame, as a kill mid-write leaves it.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        crate::segment::write_all_at(&file, &[7u8; 40], good).expect("write");
        let stale_len = good + 40;
        // The writer's recovery cuts it before the reader reads.
        file.set_len(good).expect("truncate");
        let mut offsets = Vec::new();
        let scan = crate::segment::scan(&file, &path, 0, 0, stale_len, |_, h, _| {
            offsets.extend(h.offsets());
            true
        })
        .expect("a cut tail is not an error");
        assert_eq!(offsets, vec![0, 1, 2]);
        assert_eq!(scan.pos, good);
        assert_eq!(scan.next, 3);
        assert_eq!(
            scan.stop.map(|s| (s.position, s.reason)),
            Some((good, crate::segment::SHRANK))
        );
        // And the tail reader sees the three records and nothing else.
        let mut reader = super::TailReader::new(dir.path(), "s", 0);
        assert_eq!(reader.read(0, 10).expect("read").len(), 3);
    }
}
