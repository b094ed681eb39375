//! One partition: a directory of segment files, appended to under a writer
//! lock, fsynced by group commit, read without holding any lock during I/O.

use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::format;
pub(crate) use crate::segment::sync_dir;
use crate::segment::{create_segment, scan, write_all_at, Segment, INDEX_INTERVAL};
use crate::{io_err, FsyncPolicy, LogError, Result, StreamConfig};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One partition of a stream: an ordered, append-only sequence of records.
///
/// All methods take `&self`; a partition may be shared between threads.
#[derive(Debug)]
pub struct Partition {
    id: u32,
    dir: PathBuf,
    segment_bytes: u64,
    retention_bytes: Option<u64>,
    retention_age: Option<Duration>,
    fsync: FsyncPolicy,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    next: AtomicU64,
    first: AtomicU64,
    fsyncs: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<String>>,
    #[cfg(test)]
    fail_next_write_after: Mutex<Option<usize>>,
}

#[derive(Debug)]
struct Writer {
    /// Ordered by base offset; the last one is active. Never empty.
    segments: Vec<Segment>,
    next_offset: u64,
    scratch: Vec<u8>,
}

#[derive(Debug)]
struct SyncState {
    /// Every offset below this is on disk.
    durable: u64,
    /// A thread is running an fsync for the group.
    syncing: bool,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Partition {
    /// Opens the partition in `dir`, recovering its last segment.
    pub(crate) fn open(dir: PathBuf, id: u32, config: &StreamConfig) -> Result<Partition> {
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_err("list directory", &dir))? {
            let entry = entry.map_err(io_err("list directory", &dir))?;
            match entry
                .file_name()
                .to_str()
                .and_then(format::parse_segment_name)
            {
                Some(base) => bases.push(base),
                None => {
                    tracing::debug!(file = %entry.path().display(), "ignoring non-segment file")
                }
            }
        }
        bases.sort_unstable();
        let syncing = config.fsync != FsyncPolicy::Never;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        let next_offset = if bases.is_empty() {
            segments.push(create_segment(&dir, 0)?);
            if syncing {
                sync_dir(&dir)?;
            }
            0
        } else {
            let last = bases.len() - 1;
            for &base in &bases[..last] {
                let path = dir.join(format::segment_name(base));
                let file = File::open(&path).map_err(io_err("open segment", &path))?;
                let len = file
                    .metadata()
                    .map_err(io_err("stat segment", &path))?
                    .len();
                segments.push(Segment {
                    base,
                    path,
                    file: Arc::new(file),
                    len,
                    max_time_ms: None,
                    index: Vec::new(),
                    indexed_to: (0, base),
                });
            }
            let (seg, next) = Self::recover(&dir, bases[last], syncing)?;
            segments.push(seg);
            next
        };
        let first = segments[0].base;
        Ok(Partition {
            id,
            dir,
            segment_bytes: config.segment_bytes,
            retention_bytes: config.retention_bytes,
            retention_age: config.retention_age,
            fsync: config.fsync,
            writer: Mutex::new(Writer {
                segments,
                next_offset,
                scratch: Vec::new(),
            }),
            sync: Mutex::new(SyncState {
                durable: next_offset,
                syncing: false,
            }),
            synced: Condvar::new(),
            next: AtomicU64::new(next_offset),
            first: AtomicU64::new(first),
            fsyncs: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
            #[cfg(test)]
            fail_next_write_after: Mutex::new(None),
        })
    }

    /// Scans the active segment, truncating it after its last good frame.
    fn recover(dir: &Path, base: u64, syncing: bool) -> Result<(Segment, u64)> {
        let path = dir.join(format::segment_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("open segment", &path))?;
        let file_len = file
            .metadata()
            .map_err(io_err("stat segment", &path))?
            .len();
        let mut seg = Segment {
            base,
            path,
            file: Arc::new(file),
            len: 0,
            max_time_ms: None,
            index: Vec::new(),
            indexed_to: (0, base),
        };
        let mut index = Vec::new();
        let mut max_time = None;
        let scan = scan(&seg.file, &seg.path, 0, base, file_len, |pos, h, _| {
            index.push((h.base, pos));
            max_time = Some(h.time_ms.max(max_time.unwrap_or(i64::MIN)));
            true
        })?;
        for (b, p) in index {
            seg.note_frame(b, p);
        }
        seg.max_time_ms = max_time;
        seg.len = scan.pos;
        seg.indexed_to = (scan.pos, scan.next);
        if scan.pos < file_len {
            let reason = scan.stop.as_ref().map_or("", |s| s.reason);
            tracing::warn!(
                segment = %seg.path.display(),
                valid_bytes = scan.pos,
                dropped_bytes = file_len - scan.pos,
                reason,
                "truncating torn or corrupt tail of the last segment"
            );
            seg.file
                .set_len(scan.pos)
                .map_err(io_err("truncate", &seg.path))?;
            seg.file.sync_all().map_err(io_err("fsync", &seg.path))?;
        } else if syncing {
            // What was read back may still be only in the page cache.
            seg.file.sync_data().map_err(io_err("fsync", &seg.path))?;
        }
        Ok((seg, scan.next))
    }

    /// The partition's number within its stream.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The offset the next appended record will get.
    pub fn next_offset(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// The oldest offset still retained (equal to [`next_offset`](Self::next_offset)
    /// when the partition is empty).
    pub fn first_offset(&self) -> u64 {
        self.first.load(Ordering::Acquire)
    }

    /// Number of fsyncs of segment files this partition has issued since it
    /// was opened (for tests of group commit).
    #[doc(hidden)]
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs.load(Ordering::Relaxed)
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        lock(&self.writer).segments.len()
    }

    /// Total bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        lock(&self.writer).segments.iter().map(|s| s.len).sum()
    }

    fn check_failed(&self) -> Result<()> {
        if self.failed.load(Ordering::Acquire) {
            return Err(LogError::Failed {
                path: self.dir.clone(),
                reason: lock(&self.failure).clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    fn fail(&self, reason: String) {
        tracing::error!(partition = %self.dir.display(), %reason, "partition failed");
        let mut f = lock(&self.failure);
        if f.is_none() {
            *f = Some(reason);
        }
        self.failed.store(true, Ordering::Release);
        drop(f);
        // Wake group-commit waiters so they see the failure.
        let _s = lock(&self.sync);
        self.synced.notify_all();
    }

    /// Appends `records` as one batch and returns the offsets they got.
    ///
    /// Returns once the batch is as durable as the stream's [`FsyncPolicy`]
    /// asks (with `Always`: fsynced, possibly by a concurrent appender's
    /// fsync). An empty batch writes nothing and returns an empty range.
    /// Batches whose records (plus 4 bytes each) exceed
    /// [`MAX_BATCH_BYTES`](crate::MAX_BATCH_BYTES) are refused. When the write
    /// fails (e.g. the disk is full) the segment is cut back to the end of
    /// the last whole frame and the error returned; the partition stays
    /// usable.
    pub fn append(&self, records: &[&[u8]]) -> Result<Range<u64>> {
        self.check_failed()?;
        if records.is_empty() {
            let n = self.next_offset();
            return Ok(n..n);
        }
        let payload = format::payload_len(records).ok_or(LogError::BatchTooLarge {
            records: records.len(),
            max: format::MAX_BATCH_BYTES,
        })?;
        let offsets = {
            let mut w = lock(&self.writer);
            self.check_failed()?;
            let base = w.next_offset;
            let time = now_ms();
            let mut buf = std::mem::take(&mut w.scratch);
            format::encode(&mut buf, base, time, records, payload);
            let res = self.write_frame(&mut w, &buf, base, time);
            w.scratch = buf;
            let end = res?;
            w.next_offset = end;
            self.next.store(end, Ordering::Release);
            base..end
        };
        if self.fsync == FsyncPolicy::Always {
            self.sync_until(offsets.end)?;
        }
        Ok(offsets)
    }

    /// Writes one encoded frame to the active segment (rolling first if
    /// needed); returns the offset after it.
    fn write_frame(&self, w: &mut Writer, frame: &[u8], base: u64, time: i64) -> Result<u64> {
        let active = w.segments.last().expect("a partition always has a segment");
        if active.len > 0 && active.len + frame.len() as u64 > self.segment_bytes {
            self.roll(w)?;
        }
        let seg = w
            .segments
            .last_mut()
            .expect("a partition always has a segment");
        let pos = seg.len;
        if let Err(e) = self.write_at(&seg.file, frame, pos) {
            // Whatever part of the frame landed must go, or the next frame
            // would follow garbage.
            if let Err(e2) = seg.file.set_len(pos) {
                self.fail(format!(
                    "write to {} failed ({e}) and cutting it back failed ({e2})",
                    seg.path.display()
                ));
            }
            return Err(LogError::Io {
                op: "write",
                path: seg.path.clone(),
                source: e,
            });
        }
        seg.len = pos + frame.len() as u64;
        seg.note_frame(base, pos);
        let count = u32::from_le_bytes(frame[13..17].try_into().expect("4 bytes"));
        let end = base + u64::from(count);
        seg.indexed_to = (seg.len, end);
        seg.max_time_ms = Some(seg.max_time_ms.map_or(time, |t| t.max(time)));
        Ok(end)
    }

    #[cfg(not(test))]
    fn write_at(&self, file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
        write_all_at(file, buf, pos)
    }

    /// In unit tests a write can be made to fail like a full disk after
    /// writing a prefix of the frame.
    #[cfg(test)]
    fn write_at(&self, file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
        if let Some(n) = lock(&self.fail_next_write_after).take() {
            write_all_at(file, &buf[..n.min(buf.len())], pos)?;
            return Err(std::io::Error::from_raw_os_error(28)); // ENOSPC
        }
        write_all_at(file, buf, pos)
    }

    /// Seals the active segment and starts a new one at the next offset.
    fn roll(&self, w: &mut Writer) -> Result<()> {
        let syncing = self.fsync != FsyncPolicy::Never;
        if syncing {
            // Group commit syncs only the active segment: seal this one on disk.
            let old = w.segments.last().expect("a partition always has a segment");
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = old.file.sync_data() {
                self.fail(format!("fsync of {} failed: {e}", old.path.display()));
                return Err(io_err("fsync", &old.path)(e));
            }
        }
        let seg = create_segment(&self.dir, w.next_offset)?;
        if syncing {
            sync_dir(&self.dir)?;
        }
        w.segments.push(seg);
        if syncing {
            let mut s = lock(&self.sync);
            s.durable = s.durable.max(w.next_offset);
            self.synced.notify_all();
        }
        Ok(())
    }

    /// Waits until every offset below `target` is fsynced, fsyncing for the
    /// whole group when no other thread is.
    fn sync_until(&self, target: u64) -> Result<()> {
        let mut s = lock(&self.sync);
        loop {
            self.check_failed()?;
            if s.durable >= target {
                return Ok(());
            }
            if s.syncing {
                s = self.synced.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            // Become the leader: sync everything written so far.
            s.syncing = true;
            drop(s);
            let (file, path, upto) = {
                let w = lock(&self.writer);
                let active = w.segments.last().expect("a partition always has a segment");
                (active.file.clone(), active.path.clone(), w.next_offset)
            };
            self.fsyncs.fetch_add(1, Ordering::Relaxed);
            let res = file.sync_data();
            s = lock(&self.sync);
            s.syncing = false;
            match res {
                Ok(()) => s.durable = s.durable.max(upto),
                Err(e) => {
                    drop(s);
                    self.fail(format!("fsync of {} failed: {e}", path.display()));
                    return Err(LogError::Io {
                        op: "fsync",
                        path,
                        source: e,
                    });
                }
            }
            self.synced.notify_all();
        }
    }

    /// Fsyncs everything appended so far (whatever the policy).
    pub fn flush(&self) -> Result<()> {
        self.sync_until(self.next_offset())
    }

    /// Whether records were appended that are not fsynced yet.
    pub(crate) fn is_dirty(&self) -> bool {
        lock(&self.sync).durable < self.next_offset()
    }

    /// The end of what readers may see: with `Always`, only durable records.
    fn visible_end(&self) -> u64 {
        match self.fsync {
            FsyncPolicy::Always => lock(&self.sync).durable,
            _ => self.next_offset(),
        }
    }

    /// Reads up to `max_records` records starting at offset `from`, which may
    /// lie inside a batch. Returns `(offset, record)` pairs with contiguous
    /// offsets; an empty vector when nothing is readable at `from` yet.
    ///
    /// Errors: [`LogError::OffsetOutOfRange`] below the first retained
    /// offset, [`LogError::OffsetBeyondEnd`] above the next offset, and
    /// [`LogError::Corrupt`] when the frame holding `from` fails validation.
    /// Records before a corrupt frame are returned first; the next read,
    /// starting at the corrupt frame, gets the error.
    pub fn read(&self, from: u64, max_records: usize) -> Result<Vec<(u64, Vec<u8>)>> {
        let end = self.visible_end();
        let first = self.first_offset();
        if from < first {
            return Err(LogError::OffsetOutOfRange {
                requested: from,
                first,
            });
        }
        let next = self.next_offset();
        if from > next {
            return Err(LogError::OffsetBeyondEnd {
                requested: from,
                next,
            });
        }
        let mut out = Vec::new();
        let mut cur = from;
        while out.len() < max_records && cur < end {
            // Snapshot the segment holding `cur`, then read without the lock.
            let (file, path, base, len, seg_end, (start_pos, start_off), frontier) = {
                let w = lock(&self.writer);
                let i = w.segments.partition_point(|s| s.base <= cur);
                if i == 0 {
                    // Retention removed it meanwhile.
                    let first = w.segments[0].base;
                    if out.is_empty() {
                        return Err(LogError::OffsetOutOfRange {
                            requested: cur,
                            first,
                        });
                    }
                    break;
                }
                let seg = &w.segments[i - 1];
                let seg_end = w.segments.get(i).map_or(w.next_offset, |s| s.base);
                (
                    seg.file.clone(),
                    seg.path.clone(),
                    seg.base,
                    seg.len,
                    seg_end.min(end),
                    seg.seek(cur),
                    seg.indexed_to,
                )
            };
            let mut new_index: Vec<(u64, u64)> = Vec::new();
            let mut last_indexed = None;
            let scan = scan(&file, &path, start_pos, start_off, len, |pos, h, frame| {
                if pos >= frontier.0 && last_indexed.is_none_or(|p| pos >= p + INDEX_INTERVAL) {
                    new_index.push((h.base, pos));
                    last_indexed = Some(pos);
                }
                for (off, rec) in h.offsets().zip(format::records(frame)) {
                    if off >= seg_end || out.len() >= max_records {
                        return false;
                    }
                    if off >= cur {
                        out.push((off, rec.to_vec()));
                    }
                }
                h.offsets().end < seg_end && out.len() < max_records
            })?;
            // Remember the frames of a not yet indexed (sealed, pre-existing)
            // segment for the next reads.
            if start_pos <= frontier.0 && scan.pos > frontier.0 {
                let mut w = lock(&self.writer);
                if let Some(seg) = w.segments.iter_mut().find(|s| s.base == base) {
                    if seg.indexed_to == frontier {
                        for (b, p) in new_index {
                            seg.note_frame(b, p);
                        }
                        seg.indexed_to = (scan.pos, scan.next);
                    }
                }
            }
            if let Some(&(last, _)) = out.last() {
                cur = last + 1;
            }
            if out.len() >= max_records {
                break;
            }
            if scan.next >= seg_end {
                cur = cur.max(seg_end);
                continue;
            }
            // The segment ended, or a frame failed, before `seg_end`.
            let (position, reason) = match scan.stop {
                Some(s) => (s.position, s.reason),
                None => (
                    scan.pos,
                    "segment ends before the next segment's first offset",
                ),
            };
            if out.is_empty() {
                return Err(LogError::Corrupt {
                    segment: path,
                    position,
                    reason,
                });
            }
            tracing::debug!(segment = %path.display(), position, reason, "corrupt frame; returning the records before it");
            break;
        }
        Ok(out)
    }

    /// Drops whole sealed segments, oldest first, while the partition holds
    /// more than `retention_bytes` or while the oldest segment's newest record
    /// is older than `retention_age` at `now`. The active segment is never
    /// dropped. Moves [`first_offset`](Self::first_offset) forward.
    pub fn enforce_retention(&self, now: SystemTime) -> Result<()> {
        if self.retention_bytes.is_none() && self.retention_age.is_none() {
            return Ok(());
        }
        let mut w = lock(&self.writer);
        let mut total: u64 = w.segments.iter().map(|s| s.len).sum();
        while w.segments.len() > 1 {
            let oldest = &w.segments[0];
            let too_big = self.retention_bytes.is_some_and(|max| total > max);
            let too_old = match self.retention_age {
                None => false,
                Some(age) => {
                    let newest = match oldest.max_time_ms {
                        Some(ms) => UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
                        None => oldest
                            .file
                            .metadata()
                            .and_then(|m| m.modified())
                            .map_err(io_err("stat segment", &oldest.path))?,
                    };
                    now.duration_since(newest).is_ok_and(|d| d >= age)
                }
            };
            if !(too_big || too_old) {
                break;
            }
            std::fs::remove_file(&oldest.path).map_err(io_err("remove segment", &oldest.path))?;
            tracing::info!(segment = %oldest.path.display(), bytes = oldest.len, too_big, too_old, "retention dropped segment");
            total -= oldest.len;
            w.segments.remove(0);
            self.first.store(w.segments[0].base, Ordering::Release);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(fsync: FsyncPolicy) -> StreamConfig {
        StreamConfig {
            partitions: 1,
            segment_bytes: 200,
            retention_bytes: None,
            retention_age: None,
            fsync,
        }
    }

    fn read_all(p: &Partition) -> Vec<(u64, Vec<u8>)> {
        p.read(p.first_offset(), usize::MAX).unwrap()
    }

    #[test]
    fn full_disk_leaves_the_partition_consistent() {
        for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p");
            let p = Partition::open(path.clone(), 0, &config(fsync)).unwrap();
            for i in 0..5u8 {
                p.append(&[&[i; 30], &[i; 7]]).unwrap();
            }
            let before = read_all(&p);
            let sizes = p.size_bytes();
            *lock(&p.fail_next_write_after) = Some(17);
            let err = p.append(&[b"this will not fit"]).unwrap_err();
            match &err {
                LogError::Io {
                    op: "write",
                    source,
                    ..
                } => assert_eq!(source.raw_os_error(), Some(28)),
                e => panic!("unexpected error {e}"),
            }
            assert!(
                err.to_string().contains(".log"),
                "error names the file: {err}"
            );
            assert_eq!(p.size_bytes(), sizes);
            let last = lock(&p.writer).segments.last().unwrap().path.clone();
            assert_eq!(
                std::fs::metadata(&last).unwrap().len(),
                lock(&p.writer).segments.last().unwrap().len
            );
            assert_eq!(read_all(&p), before);
            // Space is back: appends continue at the same offset.
            let next = p.next_offset();
            assert_eq!(p.append(&[b"fits now"]).unwrap(), next..next + 1);
            drop(p);
            let p = Partition::open(path, 0, &config(fsync)).unwrap();
            assert_eq!(p.next_offset(), next + 1);
            let mut all = before.clone();
            all.push((next, b"fits now".to_vec()));
            assert_eq!(read_all(&p), all);
        }
    }

    #[test]
    fn failure_right_after_a_roll_keeps_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let p = Partition::open(dir.path().join("p"), 0, &config(FsyncPolicy::Never)).unwrap();
        p.append(&[&[1; 150]]).unwrap();
        *lock(&p.fail_next_write_after) = Some(0);
        assert!(p.append(&[&[2; 150]]).is_err());
        assert_eq!(p.segment_count(), 2);
        assert_eq!(p.append(&[&[3; 150]]).unwrap(), 1..2);
        assert_eq!(read_all(&p), vec![(0, vec![1; 150]), (1, vec![3; 150])]);
    }
}
