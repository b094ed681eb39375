//! weir's embedded durable log: named streams split into partitions, each
//! partition an append-only sequence of records with monotonically
//! increasing offsets, stored as segmented files of CRC-checked batch frames
//! (see [`format`](mod@format) for the layout on disk).
//!
//! ```no_run
//! use weir_log::{FsyncPolicy, Log, StreamConfig};
//! # fn main() -> Result<(), weir_log::LogError> {
//! let log = Log::open("data/log")?;
//! let stream = log.stream("clicks", StreamConfig { partitions: 4, ..StreamConfig::default() })?;
//! let offsets = stream.partition(0).append(&[b"first", b"second"])?; // 0..2, durable now
//! let records = stream.partition(0).read(offsets.start, 100)?;      // [(0, "first"), (1, "second")]
//! # let _ = (records, FsyncPolicy::Never); Ok(()) }
//! ```
//!
//! * **Appends** write one frame per batch and return the batch's offsets
//!   once it is as durable as the stream's [`FsyncPolicy`] asks. With
//!   [`FsyncPolicy::Always`] concurrent appenders on one partition share
//!   fsyncs (group commit).
//! * **Reads** start at any retained offset, also in the middle of a batch.
//!   With `Always`, readers see only records whose append was made durable.
//! * **Recovery**: opening a partition truncates a torn or corrupt tail of
//!   its last segment and keeps every record whose append was acknowledged
//!   (under `Always`; under the other policies, what reached the disk).
//! * **Retention** drops whole sealed segments, oldest first, by total size
//!   and by age, when [`Partition::enforce_retention`] is called.
//! * **Consumer positions**: a consumer records the next offset it will
//!   read in each partition with [`Stream::commit_consumer`] (atomically,
//!   durably, one CRC-checked file per consumer, visible to other
//!   processes); [`Stream::consumer_lag`] tells how far the slowest one is
//!   behind.
//! * **Errors** never leave a partition inconsistent: a failed write (a full
//!   disk, say) is cut back to the last whole frame, so a later append works
//!   once the cause is gone. A failed fsync marks the partition failed
//!   ([`LogError::Failed`]): what it wrote can no longer be trusted to be
//!   durable, and it must be reopened.
//!
//! * **One writer per stream**: [`Log::stream`] takes an OS lock on the
//!   stream (see [`writer`](mod@writer)) that the returned [`Stream`] holds
//!   until it is dropped or the process ends; another process opening the
//!   stream for writing meanwhile gets [`LogError::Locked`] naming the
//!   holder. Within one process, every [`Log`] opening a stream gets the
//!   same [`Stream`]. Readers in other processes use [`TailReader`], which
//!   takes no lock.
#![deny(missing_docs)]

pub mod consumers;
pub mod format;
mod partition;
mod segment;
mod tail;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

pub use format::MAX_BATCH_BYTES;
pub use partition::Partition;
pub use tail::{commit_consumer_position, TailReader};
pub use writer::Holder;

/// When appended data is forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `append` returns only after its frame is fsynced. Concurrent appenders
    /// on a partition share one fsync.
    Always,
    /// `append` returns once the frame is written to the OS; a background
    /// thread of the stream fsyncs dirty partitions at this interval (and
    /// when the stream is dropped). A crash of the machine can lose about
    /// that much acknowledged data.
    Interval(Duration),
    /// The log never fsyncs on its own (only [`Partition::flush`] does);
    /// the OS writes data back when it likes.
    Never,
}

/// How a stream is laid out and kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Number of partitions, at least 1. May grow between opens, never shrink.
    pub partitions: u32,
    /// A new segment is started when a frame would take the active segment
    /// past this many bytes (a frame bigger than this gets a segment of its
    /// own).
    pub segment_bytes: u64,
    /// Drop the oldest sealed segments while a partition holds more than
    /// this many bytes.
    pub retention_bytes: Option<u64>,
    /// Drop sealed segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// When appends are forced to disk.
    pub fsync: FsyncPolicy,
}

impl Default for StreamConfig {
    /// One partition, 64 MiB segments, no retention, [`FsyncPolicy::Always`].
    fn default() -> Self {
        StreamConfig {
            partitions: 1,
            segment_bytes: 64 * 1024 * 1024,
            retention_bytes: None,
            retention_age: None,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed on `path`.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done ("write", "fsync", ...).
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: std::io::Error,
    },
    /// A frame in `segment` starting at byte `position` failed validation.
    #[error("corrupt segment {} at byte {position}: {reason}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad frame in the file.
        position: u64,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A read asked for an offset that retention has already dropped.
    #[error("offset {requested} is no longer retained; the first retained offset is {first}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: u64,
        /// The first offset the partition still holds.
        first: u64,
    },
    /// A read asked for an offset past the end of the partition.
    #[error("offset {requested} is past the end of the partition (next offset {next})")]
    OffsetBeyondEnd {
        /// The offset asked for.
        requested: u64,
        /// The offset the next append will get.
        next: u64,
    },
    /// An append's records section would exceed [`MAX_BATCH_BYTES`].
    #[error("batch of {records} records is larger than the {max} byte limit")]
    BatchTooLarge {
        /// Number of records in the refused batch.
        records: usize,
        /// The limit, [`MAX_BATCH_BYTES`].
        max: usize,
    },
    /// A stream name or configuration is not acceptable.
    #[error("invalid configuration for stream {stream:?}: {reason}")]
    InvalidConfig {
        /// The stream.
        stream: String,
        /// What is wrong.
        reason: String,
    },
    /// A consumer name, or the offsets committed for it, are not acceptable.
    #[error("invalid consumer {consumer:?}: {reason}")]
    InvalidConsumer {
        /// The consumer.
        consumer: String,
        /// What is wrong.
        reason: String,
    },
    /// A consumer's committed-offsets file failed validation (torn, damaged
    /// or not written by this crate); its contents are not used.
    #[error("corrupt consumer offsets file {}: {reason}", path.display())]
    CorruptConsumer {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// Another process has the stream open for writing
    /// ([`Log::stream`]); it stays refused until that process drops the
    /// stream or ends.
    #[error(
        "stream {stream:?} in {} is being written by {}; stop it or write through it",
        dir.display(),
        writer::describe(holder)
    )]
    Locked {
        /// The stream.
        stream: String,
        /// The log directory.
        dir: PathBuf,
        /// The process holding the stream, as it recorded itself (`None`
        /// if it has not yet).
        holder: Option<Holder>,
    },
    /// The partition stopped accepting appends after an error that may have
    /// lost acknowledged-looking data (a failed fsync, or a failed write that
    /// could not be cut back). Reopen the log to recover.
    #[error("partition {} has failed and must be reopened: {reason}", path.display())]
    Failed {
        /// The partition directory.
        path: PathBuf,
        /// The first error.
        reason: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = LogError> = std::result::Result<T, E>;

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A log directory holding named streams.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    streams: Mutex<HashMap<String, Arc<Stream>>>,
}

impl Log {
    /// Opens (creating if needed) the log in `dir`. Streams are opened, and
    /// recovered, by [`Log::stream`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Log> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        Ok(Log {
            dir,
            streams: Mutex::new(HashMap::new()),
        })
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Opens (creating if needed) the stream `name` with `config`, for
    /// writing: the stream's writer lock is taken before anything on disk is
    /// read or repaired, and held until the last handle to the returned
    /// stream is dropped. If another process holds it, this fails with
    /// [`LogError::Locked`] naming that process.
    ///
    /// Names are 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting
    /// with `.`. Opening a stream that this process already has open (through
    /// this or another `Log` on the same directory) returns the same stream
    /// if the configuration is equal and an error if not.
    pub fn stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        let invalid = |reason: &str| LogError::InvalidConfig {
            stream: name.to_string(),
            reason: reason.to_string(),
        };
        let name_ok = !name.is_empty()
            && name.len() <= 200
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !name_ok {
            return Err(invalid(
                "names are 1 to 200 of A-Z a-z 0-9 . _ -, not starting with '.'",
            ));
        }
        if config.partitions == 0 {
            return Err(invalid("partitions must be at least 1"));
        }
        if config.segment_bytes == 0 {
            return Err(invalid("segment_bytes must be at least 1"));
        }
        if config.fsync == FsyncPolicy::Interval(Duration::ZERO) {
            return Err(invalid("the fsync interval must not be zero"));
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = streams.get(name) {
            if s.config != config {
                return Err(invalid("already open with a different configuration"));
            }
            return Ok(s.clone());
        }
        let dir = self.dir.join(name);
        let stream = writer::open_shared(&dir, name, &config, || {
            Stream::open(dir.clone(), name, config.clone())
        })?;
        streams.insert(name.to_string(), stream.clone());
        Ok(stream)
    }
}

/// A named stream: a fixed set of partitions sharing one configuration.
#[derive(Debug)]
pub struct Stream {
    name: String,
    dir: PathBuf,
    config: StreamConfig,
    partitions: Arc<[Partition]>,
    flusher: Option<Flusher>,
    // Dropped last, in this order: the lock once the partitions are closed,
    // then the entry in the process's table of open streams.
    _lock: writer::WriterLock,
    registration: Option<writer::Registration>,
}

#[derive(Debug)]
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    fn open(dir: PathBuf, name: &str, config: StreamConfig) -> Result<Stream> {
        std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
        let lock = writer::WriterLock::acquire(&dir, name)?;
        for entry in std::fs::read_dir(&dir).map_err(io_err("list directory", &dir))? {
            let entry = entry.map_err(io_err("list directory", &dir))?;
            let p = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok());
            if p.is_some_and(|p| p >= config.partitions) {
                return Err(LogError::InvalidConfig {
                    stream: name.to_string(),
                    reason: format!(
                        "partition directory {} exists but the stream is configured with {} partitions",
                        entry.path().display(),
                        config.partitions
                    ),
                });
            }
        }
        let partitions = (0..config.partitions)
            .map(|p| Partition::open(dir.join(p.to_string()), p, &config))
            .collect::<Result<Vec<_>>>()?;
        if config.fsync != FsyncPolicy::Never {
            partition::sync_dir(&dir)?;
        }
        let partitions: Arc<[Partition]> = partitions.into();
        let flusher = match config.fsync {
            FsyncPolicy::Interval(every) => Some(Flusher::start(partitions.clone(), every)),
            _ => None,
        };
        Ok(Stream {
            name: name.to_string(),
            dir,
            config,
            partitions,
            flusher,
            _lock: lock,
            registration: None,
        })
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stream's configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// Partition `p`.
    ///
    /// # Panics
    /// If `p` is not below the configured number of partitions.
    pub fn partition(&self, p: u32) -> &Partition {
        &self.partitions[p as usize]
    }

    /// All partitions, in order.
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    /// Applies retention to every partition (see
    /// [`Partition::enforce_retention`]).
    pub fn enforce_retention(&self, now: SystemTime) -> Result<()> {
        self.partitions
            .iter()
            .try_for_each(|p| p.enforce_retention(now))
    }

    /// Fsyncs everything appended so far to every partition.
    pub fn flush(&self) -> Result<()> {
        self.partitions.iter().try_for_each(Partition::flush)
    }

    /// Records that `consumer` will next read offset `next_offsets[p]` of
    /// each partition `p` (everything before it is consumed).
    ///
    /// `next_offsets` must have one entry per partition. Consumer names
    /// are 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with
    /// `.`. The commit replaces the consumer's previous one atomically and is
    /// fsynced before this returns, whatever the stream's [`FsyncPolicy`];
    /// other processes with the stream open see it on their next read. The
    /// offsets are not checked against the partitions' ends.
    pub fn commit_consumer(&self, consumer: &str, next_offsets: &[u64]) -> Result<()> {
        consumers::check_name(consumer)?;
        if next_offsets.len() != self.partitions.len() {
            return Err(LogError::InvalidConsumer {
                consumer: consumer.to_string(),
                reason: format!(
                    "{} offsets committed, but stream {:?} has {} partitions",
                    next_offsets.len(),
                    self.name,
                    self.partitions.len()
                ),
            });
        }
        consumers::commit(&self.dir, consumer, next_offsets)
    }

    /// Every consumer that has committed, with its committed next offsets
    /// (one per partition, as committed), sorted by name. Read from disk on
    /// every call, so commits made by other processes are included. A
    /// damaged file is an error ([`LogError::CorruptConsumer`]).
    pub fn consumer_offsets(&self) -> Result<Vec<(String, Vec<u64>)>> {
        consumers::read_all(&self.dir)
    }

    /// Forgets `consumer`'s committed offsets (it no longer counts towards
    /// [`consumer_lag`](Self::consumer_lag)); whether it had any.
    pub fn remove_consumer(&self, consumer: &str) -> Result<bool> {
        consumers::check_name(consumer)?;
        consumers::remove(&self.dir, consumer)
    }

    /// How far the slowest committed consumer is behind, in records: the
    /// largest, over consumers, of the sum over partitions of
    /// `next_offset - committed` (0 where the commit is at or past the
    /// end). A partition missing from a commit (the stream has grown since)
    /// counts as committed at 0. Returns 0 when no consumer has committed.
    ///
    /// Reads the consumers' files (see [`consumer_offsets`](Self::consumer_offsets)):
    /// a few microseconds for a few consumers.
    pub fn consumer_lag(&self) -> Result<u64> {
        Ok(self
            .consumer_offsets()?
            .iter()
            .map(|(_, committed)| {
                self.partitions
                    .iter()
                    .enumerate()
                    .map(|(p, part)| {
                        let c = committed.get(p).copied().unwrap_or(0);
                        part.next_offset().saturating_sub(c)
                    })
                    .fold(0u64, u64::saturating_add)
            })
            .max()
            .unwrap_or(0))
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(f) = &mut self.flusher {
            *f.stop.0.lock().unwrap_or_else(|e| e.into_inner()) = true;
            f.stop.1.notify_all();
            if let Some(t) = f.thread.take() {
                let _ = t.join();
            }
            // Interval promises that acknowledged data reaches the disk soon;
            // do not leave the last interval behind.
            for p in self.partitions.iter() {
                if let Err(e) = p.flush() {
                    tracing::error!(partition = %p.dir().display(), error = %e, "final fsync failed");
                }
            }
        }
    }
}

impl Flusher {
    fn start(partitions: Arc<[Partition]>, every: Duration) -> Flusher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-log-fsync".into())
            .spawn(move || {
                let (lock, cv) = &*stop2;
                let mut stopped = lock.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    let (s, _) = cv.wait_timeout(stopped, every).unwrap_or_else(|e| e.into_inner());
                    stopped = s;
                    if *stopped {
                        return;
                    }
                    for p in partitions.iter() {
                        if p.is_dirty() {
                            if let Err(e) = p.flush() {
                                tracing::error!(partition = %p.dir().display(), error = %e, "interval fsync failed");
                            }
                        }
                    }
                }
            })
            .expect("spawn the fsync thread");
        Flusher {
            stop,
            thread: Some(thread),
        }
    }
}
