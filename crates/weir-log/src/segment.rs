//! Segment files: their in-memory description (length, newest record time,
//! a sparse index of frame positions), creating them, scanning their
//! frames, and positional I/O on them.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::format::{self, Header, HEADER_LEN};
use crate::{io_err, Result};

/// A sparse index entry is kept for a frame at least this many bytes after
/// the previous entry.
pub(crate) const INDEX_INTERVAL: u64 = 32 * 1024;
/// Reads fetch segment data in chunks of this size.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    /// Bytes of whole, written frames.
    pub(crate) len: u64,
    /// Time of the newest record, when known (else the file's mtime is used).
    pub(crate) max_time_ms: Option<i64>,
    /// Sparse (offset, byte position) of frame starts.
    pub(crate) index: Vec<(u64, u64)>,
    /// (position, offset): every frame before `position` is indexed.
    pub(crate) indexed_to: (u64, u64),
}

impl Segment {
    /// Where to start scanning for `offset`: (byte position, frame base).
    pub(crate) fn seek(&self, offset: u64) -> (u64, u64) {
        if offset >= self.indexed_to.1 {
            return self.indexed_to;
        }
        match self.index.partition_point(|&(o, _)| o <= offset) {
            0 => (0, self.base),
            i => (self.index[i - 1].1, self.index[i - 1].0),
        }
    }

    pub(crate) fn note_frame(&mut self, base: u64, pos: u64) {
        if self
            .index
            .last()
            .is_none_or(|&(_, p)| pos >= p + INDEX_INTERVAL)
        {
            self.index.push((base, pos));
        }
    }
}

/// Why a scan of a segment stopped early.
pub(crate) struct Stop {
    pub(crate) position: u64,
    pub(crate) reason: &'static str,
}

/// Result of scanning frames in one segment.
pub(crate) struct Scan {
    /// Position after the last good frame.
    pub(crate) pos: u64,
    /// Offset after the last good frame.
    pub(crate) next: u64,
    pub(crate) stop: Option<Stop>,
}

/// Positional reads in large chunks.
struct ChunkReader<'a> {
    file: &'a File,
    path: &'a Path,
    buf: Vec<u8>,
    start: u64,
    limit: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(file: &'a File, path: &'a Path, limit: u64) -> Self {
        ChunkReader {
            file,
            path,
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// `n` bytes at `pos`; the caller ensures `pos + n <= limit`. `None`
    /// when the file now ends before `pos + n`: its writer cut a torn tail
    /// after the caller took its length (another process may recover the
    /// segment while this one reads it).
    fn get(&mut self, pos: u64, n: usize) -> Result<Option<&[u8]>> {
        let end = pos + n as u64;
        if pos < self.start || end > self.start + self.buf.len() as u64 {
            let want = n.max(READ_CHUNK).min((self.limit - pos) as usize);
            self.buf.resize(want, 0);
            let got =
                read_up_to(self.file, &mut self.buf, pos).map_err(io_err("read", self.path))?;
            self.buf.truncate(got);
            self.start = pos;
            if got < n {
                return Ok(None);
            }
        }
        let at = (pos - self.start) as usize;
        Ok(Some(&self.buf[at..at + n]))
    }
}

/// Why a scan stops when a segment is shorter than the length it was given.
pub(crate) const SHRANK: &str =
    "segment shorter than when its length was taken (its writer cut a torn tail)";

/// Scans frames from `pos` (a frame start holding offset `next`) up to byte
/// `limit`, or until `visit` returns false. Every frame is fully verified
/// before `visit` sees it.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    mut pos: u64,
    mut next: u64,
    limit: u64,
    mut visit: impl FnMut(u64, &Header, &[u8]) -> bool,
) -> Result<Scan> {
    let mut r = ChunkReader::new(file, path, limit);
    let stop = |position, reason| Some(Stop { position, reason });
    while pos < limit {
        if limit - pos < HEADER_LEN as u64 {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, "incomplete frame header"),
            });
        }
        let Some(bytes) = r.get(pos, HEADER_LEN)? else {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, SHRANK),
            });
        };
        let header = match format::parse_header(bytes) {
            Ok(h) => h,
            Err(reason) => {
                return Ok(Scan {
                    pos,
                    next,
                    stop: stop(pos, reason),
                })
            }
        };
        if header.base != next {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, "frame out of offset sequence"),
            });
        }
        if limit - pos < u64::from(header.len) {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, "incomplete frame"),
            });
        }
        let Some(frame) = r.get(pos, header.len as usize)? else {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, SHRANK),
            });
        };
        if let Err(reason) = format::verify(&header, frame) {
            return Ok(Scan {
                pos,
                next,
                stop: stop(pos, reason),
            });
        }
        let go_on = visit(pos, &header, frame);
        pos += u64::from(header.len);
        next = header.offsets().end;
        if !go_on {
            break;
        }
    }
    Ok(Scan {
        pos,
        next,
        stop: None,
    })
}

/// Fills `buf` from `pos` until it is full or the file ends; the number of
/// bytes read.
fn read_up_to(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match read_at(file, &mut buf[got..], pos + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, pos)
}

#[cfg(unix)]
pub(crate) fn write_all_at(file: &File, buf: &[u8], pos: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, pos)
}

#[cfg(windows)]
fn read_at(file: &File, buf: &mut [u8], pos: u64) -> std::io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, buf, pos)
}

#[cfg(windows)]
pub(crate) fn write_all_at(file: &File, mut buf: &[u8], mut pos: u64) -> std::io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_write(buf, pos)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => {
                buf = &buf[n..];
                pos += n as u64;
            }
        }
    }
    Ok(())
}

/// Fsyncs a directory so that files created in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

pub(crate) fn create_segment(dir: &Path, base: u64) -> Result<Segment> {
    let path = dir.join(format::segment_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io_err("create segment", &path))?;
    Ok(Segment {
        base,
        path,
        file: Arc::new(file),
        len: 0,
        max_time_ms: None,
        index: Vec::new(),
        indexed_to: (0, base),
    })
}
