//! The two ways a log source reads its stream, behind one interface.
//!
//! A pipeline's `log` source reads the stream's files without opening the
//! stream: another process (`weir ingest`) owns it and may be appending,
//! and opening it would recover (cut) what looks like a torn tail but is a
//! frame being written. A connector that appends to the stream itself, in
//! this process, reads through the open [`Stream`] instead, which shows
//! only records whose fsync has completed: the pipeline then never
//! processes, and checkpoints past, a record that a power loss could still
//! take away.

use std::sync::Arc;

use weir_log::{LogError, Stream, TailReader};

/// Reads the partitions of one stream that a source reads; `p` below is
/// the index among them.
pub(crate) enum Reader {
    /// Read-only from the files, one reader per partition read.
    Files(Vec<TailReader>),
    /// Through the open stream (fsynced records only), reading its
    /// partitions from `first` on.
    Stream(Arc<Stream>, u32),
}

/// One record: its offset and payload.
pub(crate) type Record = (u64, Vec<u8>);

impl Reader {
    /// The first offset partition `p` still holds (where an empty
    /// partition's first record will go, or 0 when that is not known).
    pub(crate) fn first_offset(&self, p: u32) -> Result<u64, LogError> {
        match self {
            Reader::Files(readers) => readers[p as usize].first_offset(),
            Reader::Stream(stream, first) => Ok(stream.partition(*first + p).first_offset()),
        }
    }

    /// The offset after the last record of partition `p` now stored.
    ///
    /// From the files this scans the partition from where the reader last
    /// stopped; call it after a read at the place reading starts, so it
    /// never scans what is not going to be read (nor from offset 0, which
    /// retention may have removed).
    pub(crate) fn end_offset(&mut self, p: u32) -> Result<u64, LogError> {
        match self {
            Reader::Files(readers) => readers[p as usize].end_offset(),
            Reader::Stream(stream, first) => Ok(stream.partition(*first + p).next_offset()),
        }
    }

    /// Whether partition `p` has had every offset before `next` appended
    /// (`next` is not past its end). From the files this reads the record
    /// at `next - 1` (it is there unless retention removed it, which the
    /// caller has ruled out), not the whole partition.
    pub(crate) fn reaches(&mut self, p: u32, next: u64) -> Result<bool, LogError> {
        match self {
            Reader::Files(readers) => match next.checked_sub(1) {
                None => Ok(true),
                Some(last) => Ok(!readers[p as usize].read(last, 1)?.is_empty()),
            },
            Reader::Stream(stream, first) => Ok(next <= stream.partition(*first + p).next_offset()),
        }
    }

    /// Up to `max` records of partition `p` from offset `from` on (fewer,
    /// or none, when no more are readable yet).
    pub(crate) fn read(&mut self, p: u32, from: u64, max: usize) -> Result<Vec<Record>, LogError> {
        match self {
            Reader::Files(readers) => readers[p as usize].read(from, max),
            Reader::Stream(stream, first) => stream.partition(*first + p).read(from, max),
        }
    }
}
