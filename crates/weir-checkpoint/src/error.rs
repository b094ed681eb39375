//! The store's errors, in one place so that every backend reports the
//! same way: each variant names the file, object or store involved.

use std::io;
use std::path::{Path, PathBuf};

/// Errors from the checkpoint store. Every variant names the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// An I/O operation failed.
    #[error("checkpoint store: cannot {op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An object-storage request failed (network, credentials, missing
    /// bucket, …).
    #[error("checkpoint store {store}: cannot {op} {object}: {reason}")]
    Object {
        /// What was being done.
        op: &'static str,
        /// The store's URL (without credentials).
        store: String,
        /// The object's name in the store.
        object: String,
        /// The object store's message.
        reason: String,
    },
    /// The store location cannot be used (an unknown URL scheme, a build
    /// without object storage, a bad URL).
    #[error("checkpoint store {location}: {reason}")]
    Location {
        /// The location as given (without credentials).
        location: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// Another writer changed the store since this one last read it, or
    /// holds a higher owner epoch: this store is stale and must stop
    /// writing. Nothing was deleted or overwritten.
    #[error(
        "checkpoint store {store} is owned by another writer: {what}; this writer \
         (epoch {epoch}) is fenced out and wrote, overwrote and deleted nothing"
    )]
    Fenced {
        /// The store (directory or URL).
        store: String,
        /// This store's owner epoch.
        epoch: u64,
        /// What was found.
        what: String,
    },
    /// The newest valid checkpoint was written by another pipeline version.
    #[error(
        "checkpoint {id} in {} was written by pipeline fingerprint {found:?}, \
         but the running pipeline's fingerprint is {expected:?}; refusing to restore \
         (nothing was deleted)",
        path.display()
    )]
    Incompatible {
        /// The checkpoint's id.
        id: u64,
        /// Fingerprint stored in the checkpoint.
        found: String,
        /// Fingerprint the caller expected.
        expected: String,
        /// The checkpoint's file.
        path: PathBuf,
    },
    /// The MANIFEST file exists but cannot be understood.
    #[error("checkpoint manifest {} is corrupt: {reason}", path.display())]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// Why it was rejected.
        reason: String,
    },
    /// A checkpoint id not newer than the latest committed one.
    #[error(
        "checkpoint id {id} is not newer than the latest checkpoint {latest} in {}",
        dir.display()
    )]
    NonIncreasingId {
        /// The rejected id.
        id: u64,
        /// The latest committed id.
        latest: u64,
        /// The store directory.
        dir: PathBuf,
    },
    /// The checkpoint cannot be encoded (a name or header too large).
    #[error("checkpoint {id} cannot be written to {}: {reason}", dir.display())]
    Encode {
        /// The checkpoint id.
        id: u64,
        /// The store directory.
        dir: PathBuf,
        /// Why.
        reason: String,
    },
    /// A delta part's base cannot be used: it is not older than the
    /// checkpoint, not listed or retained in the store, cannot be read, was
    /// written by another pipeline fingerprint, or does not hold the part
    /// (also further down its chain). Nothing was written.
    #[error(
        "checkpoint {id} cannot be written to {}: part {part:?} is a delta on checkpoint \
         {base}, which {reason}",
        dir.display()
    )]
    InvalidBase {
        /// The checkpoint id.
        id: u64,
        /// The delta part.
        part: String,
        /// The base it names.
        base: u64,
        /// The store directory.
        dir: PathBuf,
        /// What is wrong with the base.
        reason: String,
    },
    /// `keep` was zero.
    #[error("checkpoint store {}: keep must be at least 1", dir.display())]
    InvalidKeep {
        /// The store directory.
        dir: PathBuf,
    },
    /// A simulated crash from [`CheckpointStore::write_with_fault`](crate::CheckpointStore::write_with_fault).
    #[doc(hidden)]
    #[error("simulated crash at {0:?}")]
    SimulatedCrash(Fault),
}

pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
    let path = path.to_path_buf();
    move |source| CheckpointError::Io { op, path, source }
}

/// Fault injection for tests of crash safety; not part of the stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writing the checkpoint file fails with "no space left" after this
    /// many bytes.
    DiskFullAfter(usize),
    /// Stop after writing `n` bytes of the temp file, without cleanup, as a
    /// crash would.
    CrashMidFile(usize),
    /// Stop after the temp file is written and synced, before its rename.
    CrashBeforeRename,
    /// Stop after the rename, before the manifest is written.
    CrashBeforeManifest,
    /// Stop after writing (but not renaming) `MANIFEST.tmp`.
    CrashMidManifest,
    /// Stop after the manifest commit, before pruning.
    CrashBeforePrune,
}
