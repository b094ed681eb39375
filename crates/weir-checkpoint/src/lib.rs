//! weir's checkpoint store: durable snapshots of pipeline state taken at
//! checkpoint barriers.
//!
//! A [`Checkpoint`] is an increasing id, the fingerprint of the pipeline
//! version that wrote it, its creation time, and named binary parts
//! (`"source/positions"`, `"shard/3/keygroup/17"`, `"sink/alerts"`, …).
//!
//! ```no_run
//! use weir_checkpoint::{Checkpoint, CheckpointStore};
//! # fn main() -> Result<(), weir_checkpoint::CheckpointError> {
//! let store = CheckpointStore::open("data/checkpoints".as_ref(), 3)?;
//! let cp = Checkpoint::new(1, "fraud-v1@3f2a")
//!     .with_part("source/positions", vec![1, 2, 3])
//!     .with_part("sink/alerts", vec![]);
//! let info = store.write(&cp)?; // durable once this returns
//! if let Some(restored) = store.latest_valid("fraud-v1@3f2a")? {
//!     assert_eq!(restored.checkpoint.id, info.id);
//! }
//! # Ok(()) }
//! ```
//!
//! # On disk
//!
//! The store's directory holds one file per checkpoint,
//! `cp-<id, 20 digits>.ckpt` (layout in [`format`](mod@format)), and a
//! `MANIFEST` listing the committed checkpoint ids. Only checkpoints listed
//! in the manifest are ever read.
//!
//! # Crash safety
//!
//! [`CheckpointStore::write`] goes through these steps:
//!
//! 1. write the checkpoint into `.tmp-cp-<id>-<nonce>`, then fsync it;
//! 2. rename it to `cp-<id>.ckpt` and fsync the directory;
//! 3. write `MANIFEST.tmp` listing the last `keep` ids including the new one,
//!    fsync it, rename it over `MANIFEST` and fsync the directory — this is
//!    the commit point;
//! 4. delete checkpoint files no longer listed (pruning).
//!
//! A crash before step 3's rename leaves the old manifest, so the old set of
//! checkpoints is what is restored; after it, the new set. A failed write (a
//! full disk, say) deletes its temporary file and leaves the committed
//! checkpoints untouched.
//!
//! A checkpoint file is deleted only once it is provably superseded: it is
//! not listed in the manifest and a newer id is (pruning, also finishing an
//! interrupted prune in [`CheckpointStore::open`]). A file newer than every
//! listed id — a write that crashed before its commit — stays until a newer
//! checkpoint commits; it is never restored, but ids continue after it
//! ([`CheckpointStore::next_id`]), so it is never overwritten either.
//! `open` deletes temporary files.
//!
//! # A lost manifest
//!
//! If `MANIFEST` is missing but checkpoint files are present (someone
//! deleted it), [`CheckpointStore::open`] does not start over: it verifies
//! every checkpoint file (its checksums and the id in its header), writes a
//! new manifest listing the ones that verify (atomically, as a write does),
//! logs a warning and reports what it did in
//! [`CheckpointStore::manifest_recovery`]. Files that do not verify are kept
//! and reported there, and also in [`Restored::skipped`] when they are
//! newer than the restored checkpoint. The pipeline fingerprint is checked
//! when restoring, as always.
//!
//! # Restoring
//!
//! [`CheckpointStore::latest_valid`] returns the newest listed checkpoint
//! that verifies (per-part CRCs and the whole-checkpoint checksum). Newer
//! ones that fail verification, or whose file is missing, are reported in
//! [`Restored::skipped`] and logged with `tracing::warn!`; nothing is
//! deleted. Ids still continue after the newest listed one, so a run that
//! restored an older checkpoint writes its next one as usual. If the newest
//! valid checkpoint was written by a different pipeline fingerprint the
//! store refuses with [`CheckpointError::Incompatible`] rather than
//! silently falling back further.
#![deny(missing_docs)]

pub mod format;
mod recover;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use format::Manifest;
pub use recover::ManifestRecovery;

/// Name of the manifest file in the store directory.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const TMP_PREFIX: &str = ".tmp-";

/// One checkpoint: its id, the pipeline fingerprint, its creation time and
/// its named parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Checkpoint id; each written checkpoint must have a larger id than the
    /// last committed one.
    pub id: u64,
    /// Identifies the pipeline version that wrote the checkpoint.
    pub fingerprint: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Named binary parts, e.g. `"shard/3/keygroup/17"`.
    pub parts: BTreeMap<String, Vec<u8>>,
}

impl Checkpoint {
    /// An empty checkpoint created now.
    pub fn new(id: u64, fingerprint: impl Into<String>) -> Self {
        Checkpoint {
            id,
            fingerprint: fingerprint.into(),
            created_ms: system_time_ms(SystemTime::now()),
            parts: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a part.
    pub fn with_part(mut self, name: impl Into<String>, data: Vec<u8>) -> Self {
        self.parts.insert(name.into(), data);
        self
    }

    /// The creation time.
    pub fn created(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.created_ms)
    }
}

fn system_time_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Facts about a stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointInfo {
    /// Checkpoint id.
    pub id: u64,
    /// The checkpoint's file.
    pub path: PathBuf,
    /// Size of the file in bytes.
    pub size_bytes: u64,
    /// Creation time from the checkpoint header, or the file's modification
    /// time when the header cannot be read.
    pub created: SystemTime,
    /// Time since `created` (zero if `created` is in the future).
    pub age: Duration,
    /// The pipeline fingerprint, or `None` when the header cannot be read.
    pub fingerprint: Option<String>,
    /// How long the write took (set only by [`CheckpointStore::write`]).
    pub write_duration: Option<Duration>,
}

/// The result of [`CheckpointStore::latest_valid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The newest checkpoint that verified.
    pub checkpoint: Checkpoint,
    /// Its file.
    pub path: PathBuf,
    /// Newer checkpoints that failed verification: `(id, reason)`, newest
    /// first.
    pub skipped: Vec<(u64, String)>,
}

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
    /// `keep` was zero.
    #[error("checkpoint store {}: keep must be at least 1", dir.display())]
    InvalidKeep {
        /// The store directory.
        dir: PathBuf,
    },
    /// A simulated crash from [`CheckpointStore::write_with_fault`].
    #[doc(hidden)]
    #[error("simulated crash at {0:?}")]
    SimulatedCrash(Fault),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CheckpointError {
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

/// A checkpoint store in one directory, keeping the last `keep` checkpoints.
///
/// One process should own a directory; writes from one store are serialized.
#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    keep: usize,
    write_lock: Mutex<()>,
    /// What `open` did when the manifest was missing.
    recovery: Option<ManifestRecovery>,
}

/// The file name of checkpoint `id`.
pub fn checkpoint_file_name(id: u64) -> String {
    format!("cp-{id:020}.ckpt")
}

fn parse_checkpoint_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("cp-")?.strip_suffix(".ckpt")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(io_err("fsync directory", dir))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl CheckpointStore {
    /// Opens (creating if needed) the store in `dir`, keeping the last
    /// `keep` checkpoints.
    ///
    /// Checks that the directory is writable, deletes temporary files and
    /// finishes an interrupted prune (unlisted checkpoint files older than
    /// the newest listed one). Without a manifest but with checkpoint files,
    /// writes a new manifest from the files that verify (see
    /// [`manifest_recovery`](Self::manifest_recovery)).
    pub fn open(dir: &Path, keep: usize) -> Result<Self, CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::InvalidKeep {
                dir: dir.to_path_buf(),
            });
        }
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
        let probe = dir.join(format!("{TMP_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(io_err("write in directory", dir))?;
        fs::remove_file(&probe).map_err(io_err("remove", &probe))?;
        let mut store = CheckpointStore {
            dir: dir.to_path_buf(),
            keep,
            write_lock: Mutex::new(()),
            recovery: None,
        };
        let manifest = match store.try_read_manifest()? {
            Some(manifest) => manifest,
            None => {
                let (manifest, recovery) = store.recover_manifest()?;
                store.recovery = recovery;
                manifest
            }
        };
        store.remove_unlisted(&manifest.ids, true)?;
        Ok(store)
    }

    /// What [`open`](Self::open) did because the manifest was missing
    /// while checkpoint files were present; `None` when it was not.
    pub fn manifest_recovery(&self) -> Option<&ManifestRecovery> {
        self.recovery.as_ref()
    }

    /// The id the next checkpoint should take: one more than the largest
    /// id the manifest lists or any checkpoint file present has. A listed
    /// checkpoint whose file is missing or damaged, and a file left by a
    /// write that crashed before its commit, therefore never have their id
    /// reused.
    pub fn next_id(&self) -> Result<u64, CheckpointError> {
        let listed = self.read_manifest()?.ids.last().copied().unwrap_or(0);
        let present = self.checkpoint_files()?.into_iter().max().unwrap_or(0);
        Ok(listed.max(present).saturating_add(1))
    }

    /// The ids of the checkpoint files in the directory, unsorted.
    fn checkpoint_files(&self) -> Result<Vec<u64>, CheckpointError> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))? {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(parse_checkpoint_file_name)
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of checkpoint `id`'s file.
    pub fn checkpoint_path(&self, id: u64) -> PathBuf {
        self.dir.join(checkpoint_file_name(id))
    }

    fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST)
    }

    /// The manifest, or `None` when there is no manifest file.
    fn try_read_manifest(&self) -> Result<Option<Manifest>, CheckpointError> {
        let path = self.manifest_path();
        match fs::read(&path) {
            Ok(bytes) => Manifest::decode(&bytes)
                .map(Some)
                .map_err(|reason| CheckpointError::CorruptManifest { path, reason }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(CheckpointError::Io {
                op: "read",
                path,
                source,
            }),
        }
    }

    /// The manifest; an empty one when there is no manifest file.
    fn read_manifest(&self) -> Result<Manifest, CheckpointError> {
        Ok(self
            .try_read_manifest()?
            .unwrap_or_else(|| Manifest::new(Vec::new())))
    }

    /// Writes `MANIFEST.tmp` listing `ids`, fsyncs it, renames it over
    /// `MANIFEST` and fsyncs the directory: the commit point of a write.
    fn commit_manifest(
        &self,
        ids: Vec<u64>,
        fault: Option<Fault>,
    ) -> Result<Manifest, CheckpointError> {
        let manifest = Manifest::new(ids);
        let mtmp = self.dir.join(MANIFEST_TMP);
        let mut mfile = File::create(&mtmp).map_err(io_err("create", &mtmp))?;
        mfile
            .write_all(&manifest.encode())
            .and_then(|_| mfile.sync_all())
            .map_err(io_err("write", &mtmp))?;
        drop(mfile);
        if fault == Some(Fault::CrashMidManifest) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashMidManifest));
        }
        let mpath = self.manifest_path();
        fs::rename(&mtmp, &mpath).map_err(io_err("rename into place", &mpath))?;
        sync_dir(&self.dir)?;
        Ok(manifest)
    }

    /// Deletes the checkpoint files that `ids` (a committed manifest)
    /// supersedes — those not in `ids` and older than its newest id — and,
    /// if `temps`, temp files.
    fn remove_unlisted(&self, ids: &[u64], temps: bool) -> Result<(), CheckpointError> {
        let newest = ids.last().copied().unwrap_or(0);
        let mut removed = false;
        let entries = fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            let stale = if let Some(id) = parse_checkpoint_file_name(name) {
                id < newest && !ids.contains(&id)
            } else {
                temps && (name.starts_with(TMP_PREFIX) || name == MANIFEST_TMP)
            };
            if stale {
                tracing::info!(path = %path.display(), "removing uncommitted or pruned checkpoint file");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Writes `cp` durably, commits it, and prunes checkpoints older than
    /// the last `keep`. Returns the new checkpoint's size and write time.
    pub fn write(&self, cp: &Checkpoint) -> Result<CheckpointInfo, CheckpointError> {
        self.write_inner(cp, None)
    }

    /// [`write`](Self::write) with a simulated failure; for tests only.
    #[doc(hidden)]
    pub fn write_with_fault(
        &self,
        cp: &Checkpoint,
        fault: Fault,
    ) -> Result<CheckpointInfo, CheckpointError> {
        self.write_inner(cp, Some(fault))
    }

    fn write_inner(
        &self,
        cp: &Checkpoint,
        fault: Option<Fault>,
    ) -> Result<CheckpointInfo, CheckpointError> {
        let start = Instant::now();
        let _guard = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let manifest = self.read_manifest()?;
        if let Some(&latest) = manifest.ids.last() {
            if cp.id <= latest {
                return Err(CheckpointError::NonIncreasingId {
                    id: cp.id,
                    latest,
                    dir: self.dir.clone(),
                });
            }
        }
        let bytes = format::encode(cp).map_err(|reason| CheckpointError::Encode {
            id: cp.id,
            dir: self.dir.clone(),
            reason,
        })?;

        // 1. temp file, fsynced.
        let nonce = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}cp-{:020}-{nonce}", cp.id));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        let written = match fault {
            Some(Fault::CrashMidFile(n)) => {
                let n = n.min(bytes.len());
                file.write_all(&bytes[..n]).map_err(io_err("write", &tmp))?;
                return Err(CheckpointError::SimulatedCrash(Fault::CrashMidFile(n)));
            }
            Some(Fault::DiskFullAfter(n)) if n < bytes.len() => file
                .write_all(&bytes[..n])
                .and_then(|_| Err(io::Error::other("No space left on device (simulated)"))),
            _ => file.write_all(&bytes),
        }
        .and_then(|_| file.sync_all());
        if let Err(source) = written {
            drop(file);
            if let Err(e) = fs::remove_file(&tmp) {
                tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temp file after failed write");
            }
            return Err(CheckpointError::Io {
                op: "write",
                path: tmp,
                source,
            });
        }
        drop(file);
        if fault == Some(Fault::CrashBeforeRename) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforeRename));
        }

        // 2. rename into place.
        let path = self.checkpoint_path(cp.id);
        fs::rename(&tmp, &path).map_err(io_err("rename into place", &path))?;
        sync_dir(&self.dir)?;
        if fault == Some(Fault::CrashBeforeManifest) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforeManifest));
        }

        // 3. commit: the new manifest.
        let mut ids = manifest.ids;
        ids.push(cp.id);
        let drop_n = ids.len().saturating_sub(self.keep);
        ids.drain(..drop_n);
        let new_manifest = self.commit_manifest(ids, fault)?;
        if fault == Some(Fault::CrashBeforePrune) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforePrune));
        }

        // 4. prune (the new checkpoint is committed; failures only warn).
        if let Err(e) = self.remove_unlisted(&new_manifest.ids, false) {
            tracing::warn!(error = %e, "pruning old checkpoints failed; retried on next write or open");
        }

        let created = cp.created();
        Ok(CheckpointInfo {
            id: cp.id,
            path,
            size_bytes: bytes.len() as u64,
            created,
            age: SystemTime::now()
                .duration_since(created)
                .unwrap_or_default(),
            fingerprint: Some(cp.fingerprint.clone()),
            write_duration: Some(start.elapsed()),
        })
    }

    /// The newest committed checkpoint that verifies, if any.
    ///
    /// Newer checkpoints that fail verification (or are missing) are listed
    /// in [`Restored::skipped`] and logged. If the newest valid checkpoint
    /// has a fingerprint other than `fingerprint`, returns
    /// [`CheckpointError::Incompatible`]; nothing is ever deleted here.
    pub fn latest_valid(&self, fingerprint: &str) -> Result<Option<Restored>, CheckpointError> {
        let manifest = self.read_manifest()?;
        let mut skipped = Vec::new();
        for &id in manifest.ids.iter().rev() {
            let path = self.checkpoint_path(id);
            let verdict = match fs::read(&path) {
                Ok(bytes) => format::decode(&bytes, Some(id)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Err("file is missing".into()),
                Err(source) => {
                    return Err(CheckpointError::Io {
                        op: "read",
                        path,
                        source,
                    })
                }
            };
            match verdict {
                Ok(checkpoint) => {
                    if checkpoint.fingerprint != fingerprint {
                        return Err(CheckpointError::Incompatible {
                            id,
                            found: checkpoint.fingerprint,
                            expected: fingerprint.to_string(),
                            path,
                        });
                    }
                    return Ok(Some(Restored {
                        checkpoint,
                        path,
                        skipped: self.with_unverified(skipped, id),
                    }));
                }
                Err(reason) => {
                    tracing::warn!(
                        id,
                        path = %path.display(),
                        %reason,
                        "skipping corrupt checkpoint; trying the previous one"
                    );
                    skipped.push((id, reason));
                }
            }
        }
        let skipped = self.with_unverified(skipped, 0);
        if !skipped.is_empty() {
            tracing::warn!(
                count = skipped.len(),
                "no valid checkpoint: every committed checkpoint failed verification"
            );
        }
        Ok(None)
    }

    /// The committed checkpoints, oldest first. Reads only each header, so
    /// it does not verify the parts.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        let manifest = self.read_manifest()?;
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(manifest.ids.len());
        for &id in &manifest.ids {
            let path = self.checkpoint_path(id);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(CheckpointError::Io {
                        op: "open",
                        path,
                        source,
                    })
                }
            };
            let meta = file.metadata().map_err(io_err("stat", &path))?;
            let header = format::read_header(&mut file, Some(id)).ok();
            let created = match &header {
                Some(h) => UNIX_EPOCH + Duration::from_millis(h.created_ms),
                None => meta.modified().unwrap_or(UNIX_EPOCH),
            };
            out.push(CheckpointInfo {
                id,
                size_bytes: meta.len(),
                created,
                age: now.duration_since(created).unwrap_or_default(),
                fingerprint: header.map(|h| h.fingerprint),
                write_duration: None,
                path,
            });
        }
        Ok(out)
    }
}
