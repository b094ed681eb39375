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
//! in the manifest are ever restored.
//!
//! ## Delta parts and chains
//!
//! A part is either full or a *delta*
//! ([`Checkpoint::with_delta_part`]): bytes the store does not interpret,
//! to be applied on top of the part of the same name as it stood at an
//! earlier checkpoint, its base ([`Checkpoint::bases`]). That part may be
//! a delta too, so each part has a *chain* of checkpoints ending at a full
//! part; the engine writes a part in full now and then to keep chains
//! short. A checkpoint file with delta parts is format 2, and its header
//! names each delta's base and the checkpoint's *reach*: every checkpoint
//! id its chains pass through ([`format`](mod@format)). Without delta
//! parts a file is written exactly as in format 1.
//!
//! ```
//! use weir_checkpoint::{Checkpoint, CheckpointStore};
//! # fn main() -> Result<(), weir_checkpoint::CheckpointError> {
//! # let dir = tempfile::tempdir().unwrap();
//! let store = CheckpointStore::open(dir.path(), 2)?;
//! store.write(&Checkpoint::new(1, "fp").with_part("state/w/0", b"full".to_vec()))?;
//! store.write(&Checkpoint::new(2, "fp").with_delta_part("state/w/0", 1, b"+2".to_vec()))?;
//! store.write(&Checkpoint::new(3, "fp").with_delta_part("state/w/0", 2, b"+3".to_vec()))?;
//! // Only 2 and 3 are listed (keep = 2), but 1 is retained: 3 needs it.
//! let restored = store.latest_valid("fp")?.expect("a checkpoint");
//! let chain = restored.chain("state/w/0").expect("the part");
//! assert_eq!(chain, vec![(1, &b"full"[..]), (2, &b"+2"[..]), (3, &b"+3"[..])]);
//! # Ok(()) }
//! ```
//!
//! [`CheckpointStore::write`] refuses a delta
//! ([`CheckpointError::InvalidBase`]) whose base is not older than the
//! checkpoint, is not listed or retained by the manifest (so a chain never
//! points at a pruned checkpoint), cannot be read, was written by another
//! pipeline fingerprint, or does not hold the part — checking each step of
//! the chain from the headers, and computing the new checkpoint's reach.
//!
//! ## Retention
//!
//! The manifest lists the last `keep` checkpoints and also *retains* the
//! ids that a listed checkpoint reaches but that are no longer listed
//! (`"retained"`, absent when empty, so older manifests read unchanged).
//! Each write computes it as the union of the listed checkpoints' reaches
//! (read once from their headers, then remembered) minus the listed ids,
//! and commits it in the same manifest swap. Retained checkpoints are
//! never pruned and never restored on their own; once a newer full part
//! supersedes a chain and the checkpoints that needed it leave the list,
//! the next write prunes them.
//!
//! # Crash safety
//!
//! [`CheckpointStore::write`] goes through these steps:
//!
//! 1. write the checkpoint into `.tmp-cp-<id>-<nonce>`, then fsync it;
//! 2. rename it to `cp-<id>.ckpt` and fsync the directory;
//! 3. write `MANIFEST.tmp` listing the last `keep` ids including the new one
//!    (and retaining what their chains reach), fsync it, rename it over
//!    `MANIFEST` and fsync the directory — this is the commit point;
//! 4. delete checkpoint files neither listed nor retained (pruning).
//!
//! A crash before step 3's rename leaves the old manifest, so the old set of
//! checkpoints is what is restored; after it, the new set. A failed write (a
//! full disk, say) deletes its temporary file and leaves the committed
//! checkpoints untouched.
//!
//! The new checkpoint's bases are checked, and the manifest's retained set
//! computed, before step 1, so a refused or failed write leaves nothing
//! behind either; a crash anywhere leaves the old or the new manifest, each
//! with the chains of its listed checkpoints complete on disk.
//!
//! A checkpoint file is deleted only once it is provably superseded: it is
//! neither listed nor retained in the manifest and a newer id is listed
//! (pruning, also finishing an interrupted prune in
//! [`CheckpointStore::open`]). A file newer than every
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
//! new manifest listing the ones that verify (atomically, as a write does)
//! and retaining every other file (those that do not verify, and the ones
//! the listed chains reach as their headers say), so nothing is deleted;
//! logs a warning and reports what it did in
//! [`CheckpointStore::manifest_recovery`]. Files that do not verify are kept
//! and reported there, and also in [`Restored::skipped`] when they are
//! newer than the restored checkpoint. The pipeline fingerprint is checked
//! when restoring, as always.
//!
//! # Object storage
//!
//! With the `object-store` feature, [`CheckpointStore::open_url`] opens a
//! store in S3 (`s3://bucket/prefix`), GCS (`gs://`), Azure (`az://`) or
//! memory (`memory:///`), configured from the standard environment
//! variables. The same objects (`cp-<id>.ckpt`, `MANIFEST`) live under the
//! prefix; a put is atomic, so there are no temporary objects, and step 3's
//! commit is a conditional put. The store logic is the same for both
//! backends; the backends are in `backend.rs`, `local.rs` and `object.rs`.
//!
//! # Fencing
//!
//! A store remembers the manifest version it read at open or last
//! committed, and commits only over that version (the directory compares a
//! checksum of the manifest's bytes before its rename; an object store
//! uses If-Match / create-if-absent). A store whose manifest was changed by
//! another writer gets [`CheckpointError::Fenced`] and writes, overwrites
//! and deletes nothing. In an object store a checkpoint object is put only
//! if absent, so two writers never overwrite one id. An owner epoch
//! ([`CheckpointStore::open_with_epoch`]) is recorded in the manifest:
//! opening with a higher epoch claims the store, fencing every earlier
//! owner at once; opening or writing with a lower one is refused.
//!
//! # Restoring
//!
//! [`CheckpointStore::latest_valid`] returns the newest listed checkpoint
//! that is valid: it verifies (per-part CRCs and the whole-checkpoint
//! checksum), and so does every checkpoint its chains reach, each with the
//! same fingerprint and holding the part (full where the chain starts, a
//! delta after). With it come the chains: [`Restored::base_links`] holds,
//! for each delta part, the full part the chain starts from and the deltas
//! up to the restored one's base, oldest first; [`Restored::chain`] and
//! [`Restored::into_chains`] give every part's whole chain (one link for a
//! full part), in the order to apply them. Newer checkpoints that fail
//! verification, whose file is missing, or whose chains are incomplete
//! (the reason names the part and the base) are reported in
//! [`Restored::skipped`] and logged with `tracing::warn!`, and the
//! previous listed one is tried; nothing is deleted. Ids still continue after the newest listed one, so a run that
//! restored an older checkpoint writes its next one as usual. If the newest
//! valid checkpoint was written by a different pipeline fingerprint the
//! store refuses with [`CheckpointError::Incompatible`] rather than
//! silently falling back further.
#![deny(missing_docs)]

mod backend;
mod chains;
mod error;
pub mod format;
mod local;
#[cfg(feature = "object-store")]
mod object;
mod recover;
mod restore;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backend::{Backend, PutNew, Swap, Version};
use chains::Known;
pub use error::{CheckpointError, Fault};
use format::{Header, Manifest};
pub use recover::ManifestRecovery;
pub use restore::Restored;

/// Name of the manifest file (or object) in the store.
pub const MANIFEST: &str = "MANIFEST";
const MANIFEST_TMP: &str = "MANIFEST.tmp";
const TMP_PREFIX: &str = ".tmp-";
/// How many times `open` retries claiming the manifest for a higher epoch
/// when a stale writer commits at the same moment.
const CLAIM_ATTEMPTS: usize = 5;

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
    /// Named binary parts, e.g. `"shard/3/keygroup/17"`: the full part,
    /// or for a part named in [`bases`](Self::bases) a delta.
    pub parts: BTreeMap<String, Vec<u8>>,
    /// The delta parts: for each, the id of the earlier checkpoint whose
    /// part of the same name the delta applies on top of (its base; that
    /// part may itself be a delta: a chain). Parts not named here are full.
    /// Every name here must also be in [`parts`](Self::parts).
    pub bases: BTreeMap<String, u64>,
}

impl Checkpoint {
    /// An empty checkpoint created now.
    pub fn new(id: u64, fingerprint: impl Into<String>) -> Self {
        Checkpoint {
            id,
            fingerprint: fingerprint.into(),
            created_ms: system_time_ms(SystemTime::now()),
            parts: BTreeMap::new(),
            bases: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) a full part.
    pub fn with_part(mut self, name: impl Into<String>, data: Vec<u8>) -> Self {
        let name = name.into();
        self.bases.remove(&name);
        self.parts.insert(name, data);
        self
    }

    /// Adds (or replaces) a delta part: `data` (bytes the store does not
    /// interpret) applies on top of part `name` as it stood at checkpoint
    /// `base`, which must be older than this one and still kept by the
    /// store (listed in its manifest or retained), or
    /// [`CheckpointStore::write`] refuses the checkpoint with
    /// [`CheckpointError::InvalidBase`].
    pub fn with_delta_part(mut self, name: impl Into<String>, base: u64, data: Vec<u8>) -> Self {
        let name = name.into();
        self.bases.insert(name.clone(), base);
        self.parts.insert(name, data);
        self
    }

    /// The base of part `name` when it is a delta part.
    pub fn base_of(&self, name: &str) -> Option<u64> {
        self.bases.get(name).copied()
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

/// A checkpoint store in one directory or object-store prefix, keeping
/// the last `keep` checkpoints.
///
/// One writer should own a store; writes from one `CheckpointStore` are
/// serialized, and a second writer on the same location fences out the
/// first ([`CheckpointError::Fenced`]).
#[derive(Debug)]
pub struct CheckpointStore {
    backend: Box<dyn Backend>,
    /// The directory, or the URL as a path.
    location: PathBuf,
    keep: usize,
    epoch: u64,
    /// The manifest version this store last read at open or committed,
    /// and the headers it knows; also serializes writes.
    writer: Mutex<WriterState>,
    /// What `open` did when the manifest was missing.
    recovery: Option<ManifestRecovery>,
}

/// What a store remembers between writes.
#[derive(Debug, Default)]
struct WriterState {
    /// The manifest version this store last read at open or committed.
    seen: Option<Version>,
    /// The headers of listed or retained checkpoints this store has read
    /// or written, by id (a committed checkpoint's file never changes).
    known: BTreeMap<u64, Known>,
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

impl CheckpointStore {
    /// Opens (creating if needed) the store in `dir`, keeping the last
    /// `keep` checkpoints, with owner epoch 0.
    ///
    /// Checks that the directory is writable, deletes temporary files and
    /// finishes an interrupted prune (unlisted checkpoint files older than
    /// the newest listed one). Without a manifest but with checkpoint files,
    /// writes a new manifest from the files that verify (see
    /// [`manifest_recovery`](Self::manifest_recovery)).
    pub fn open(dir: &Path, keep: usize) -> Result<Self, CheckpointError> {
        Self::open_with_epoch(dir, keep, 0)
    }

    /// [`open`](Self::open) for the owner `epoch`: refused with
    /// [`CheckpointError::Fenced`] when the manifest holds a higher epoch;
    /// when it holds a lower one, `open` commits the manifest again with
    /// `epoch`, which fences out every writer that opened before.
    pub fn open_with_epoch(dir: &Path, keep: usize, epoch: u64) -> Result<Self, CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::InvalidKeep {
                dir: dir.to_path_buf(),
            });
        }
        let backend = local::DirBackend::open(dir)?;
        let location = backend.dir().to_path_buf();
        Self::open_backend(Box::new(backend), location, keep, epoch)
    }

    /// Opens the store at `url`: `file:///abs/dir` (the directory store),
    /// or with the `object-store` feature `s3://bucket/prefix`,
    /// `gs://bucket/prefix`, `az://container/prefix` (also the https forms
    /// `object_store` understands) and `memory:///` (a new in-memory store,
    /// for tests). Credentials, region and endpoint come from the standard
    /// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, `GOOGLE_*`,
    /// `AZURE_*`); see `object_store`'s `from_env` builders. Otherwise as
    /// [`open_with_epoch`](Self::open_with_epoch).
    pub fn open_url(url: &str, keep: usize, epoch: u64) -> Result<Self, CheckpointError> {
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(CheckpointError::Location {
                    location: url.to_string(),
                    reason: "a file URL needs an absolute path (file:///abs/dir)".into(),
                });
            }
            return Self::open_with_epoch(Path::new(path), keep, epoch);
        }
        #[cfg(feature = "object-store")]
        {
            if keep == 0 {
                return Err(CheckpointError::InvalidKeep { dir: url.into() });
            }
            let backend = object::ObjectBackend::from_url(url)?;
            let location = PathBuf::from(backend.describe());
            Self::open_backend(Box::new(backend), location, keep, epoch)
        }
        #[cfg(not(feature = "object-store"))]
        Err(CheckpointError::Location {
            location: object_url_for_messages(url),
            reason: "this weir was built without the `object-store` feature; \
                     only a directory (or file:// URL) can hold checkpoints"
                .into(),
        })
    }

    /// Opens a store under `prefix` in an `object_store` backend the
    /// caller built (tests share one `InMemory` between two stores this
    /// way); `name` identifies it in messages. Otherwise as
    /// [`open_with_epoch`](Self::open_with_epoch).
    #[cfg(feature = "object-store")]
    pub fn open_object_store(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        name: &str,
        prefix: &str,
        keep: usize,
        epoch: u64,
    ) -> Result<Self, CheckpointError> {
        if keep == 0 {
            return Err(CheckpointError::InvalidKeep { dir: name.into() });
        }
        let backend = object::ObjectBackend::new(store, name, prefix)?;
        let location = PathBuf::from(backend.describe());
        Self::open_backend(Box::new(backend), location, keep, epoch)
    }

    fn open_backend(
        backend: Box<dyn Backend>,
        location: PathBuf,
        keep: usize,
        epoch: u64,
    ) -> Result<Self, CheckpointError> {
        let mut store = CheckpointStore {
            backend,
            location,
            keep,
            epoch,
            writer: Mutex::new(WriterState::default()),
            recovery: None,
        };
        let (mut manifest, mut version) = match store.try_read_manifest()? {
            Some(read) => read,
            None => {
                let (manifest, version, recovery) = store.recover_manifest()?;
                store.recovery = recovery;
                (manifest, version)
            }
        };
        let mut attempts = 0;
        while manifest.epoch != epoch {
            if manifest.epoch > epoch {
                return Err(store.fenced(format!(
                    "its manifest holds owner epoch {}, higher than this writer's",
                    manifest.epoch
                )));
            }
            // Claim: commit the same ids under our epoch, so that any
            // writer that opened before us is refused at its next write.
            let claimed = Manifest::new(manifest.ids.clone(), epoch, manifest.retained.clone());
            match store
                .backend
                .swap_manifest(&claimed.encode(), version.as_ref(), None)?
            {
                Swap::Done(v) => {
                    tracing::info!(store = %store.describe(), epoch, previous = manifest.epoch, "claimed the checkpoint store for a new owner epoch");
                    manifest = claimed;
                    version = Some(v);
                }
                Swap::Conflict => {
                    attempts += 1;
                    if attempts >= CLAIM_ATTEMPTS {
                        return Err(store.fenced(
                            "its manifest kept changing while this writer claimed it".into(),
                        ));
                    }
                    (manifest, version) = store.read_manifest()?;
                }
            }
        }
        store
            .writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .seen = version;
        store.remove_unlisted(&manifest, true)?;
        Ok(store)
    }

    /// What [`open`](Self::open) did because the manifest was missing
    /// while checkpoint files were present; `None` when it was not.
    pub fn manifest_recovery(&self) -> Option<&ManifestRecovery> {
        self.recovery.as_ref()
    }

    /// The owner epoch this store was opened with (0 unless given).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The id the next checkpoint should take: one more than the largest
    /// id the manifest lists or any checkpoint file present has. A listed
    /// checkpoint whose file is missing or damaged, and a file left by a
    /// write that crashed before its commit, therefore never have their id
    /// reused.
    pub fn next_id(&self) -> Result<u64, CheckpointError> {
        let listed = self.read_manifest()?.0.ids.last().copied().unwrap_or(0);
        let present = self.checkpoint_files()?.into_iter().max().unwrap_or(0);
        Ok(listed.max(present).saturating_add(1))
    }

    /// The ids of the checkpoint files in the store, unsorted.
    fn checkpoint_files(&self) -> Result<Vec<u64>, CheckpointError> {
        Ok(self
            .backend
            .list()?
            .iter()
            .filter_map(|n| parse_checkpoint_file_name(n))
            .collect())
    }

    /// The store directory; for an object store, its URL as a path.
    pub fn dir(&self) -> &Path {
        &self.location
    }

    /// The store's location for messages: a directory or a URL (never
    /// with credentials).
    pub fn describe(&self) -> String {
        self.backend.describe()
    }

    /// The path of checkpoint `id`'s file (for an object store, its URL as
    /// a path).
    pub fn checkpoint_path(&self, id: u64) -> PathBuf {
        self.backend.path(&checkpoint_file_name(id))
    }

    fn fenced(&self, what: String) -> CheckpointError {
        let err = CheckpointError::Fenced {
            store: self.describe(),
            epoch: self.epoch,
            what,
        };
        tracing::error!(error = %err, "checkpoint store fenced");
        err
    }

    /// The manifest and its version, or `None` when there is no manifest.
    fn try_read_manifest(&self) -> Result<Option<(Manifest, Option<Version>)>, CheckpointError> {
        match self.backend.get(MANIFEST)? {
            Some((bytes, version)) => Manifest::decode(&bytes)
                .map(|m| Some((m, Some(version))))
                .map_err(|reason| CheckpointError::CorruptManifest {
                    path: self.backend.path(MANIFEST),
                    reason,
                }),
            None => Ok(None),
        }
    }

    /// The manifest (an empty one when there is none) and its version.
    fn read_manifest(&self) -> Result<(Manifest, Option<Version>), CheckpointError> {
        Ok(self
            .try_read_manifest()?
            .unwrap_or_else(|| (Manifest::new(Vec::new(), 0, Vec::new()), None)))
    }

    /// The header of checkpoint `id`'s file with the file's start, or
    /// `None` when there is no file; the header is `Err` (a reason) when it
    /// does not verify.
    #[allow(clippy::type_complexity)]
    fn header_of(
        &self,
        id: u64,
    ) -> Result<Option<(backend::Head, Result<Header, String>)>, CheckpointError> {
        let name = checkpoint_file_name(id);
        let Some(head) = self.backend.head(&name, format::HEADER_PEEK)? else {
            return Ok(None);
        };
        let mut header = format::read_header(&mut head.bytes.as_slice(), Some(id));
        if header.is_err() && head.bytes.len() == format::HEADER_PEEK {
            // A header longer than the peek: read the whole object.
            if let Some((bytes, _)) = self.backend.get(&name)? {
                header = format::read_header(&mut bytes.as_slice(), Some(id));
            }
        }
        Ok(Some((head, header)))
    }

    /// Deletes the checkpoint files that `manifest` (a committed one)
    /// supersedes — those neither listed nor retained and older than its
    /// newest listed id — and, if `temps`, temp files.
    fn remove_unlisted(&self, manifest: &Manifest, temps: bool) -> Result<(), CheckpointError> {
        let newest = manifest.ids.last().copied().unwrap_or(0);
        let stale: Vec<String> = self
            .backend
            .list()?
            .into_iter()
            .filter(|name| {
                if let Some(id) = parse_checkpoint_file_name(name) {
                    id < newest && !manifest.holds(id)
                } else {
                    temps && (name.starts_with(TMP_PREFIX) || name == MANIFEST_TMP)
                }
            })
            .collect();
        for name in &stale {
            tracing::info!(path = %self.backend.path(name).display(), "removing uncommitted or pruned checkpoint file");
        }
        self.backend.delete(&stale)
    }

    /// Writes `cp` durably, commits it, and prunes checkpoints older than
    /// the last `keep`. Returns the new checkpoint's size and write time.
    ///
    /// Refused with [`CheckpointError::Fenced`] when another writer
    /// changed the manifest since this store opened or last wrote, holds a
    /// higher epoch, or already wrote a checkpoint object with this id;
    /// nothing is then written or deleted.
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
        let mut state = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let state = &mut *state;
        let (manifest, version) = self.read_manifest()?;
        if version != state.seen {
            return Err(self.fenced(match &version {
                Some(_) => format!(
                    "its manifest was changed by another writer since this store last read it \
                     (it now lists checkpoints {:?}, owner epoch {})",
                    manifest.ids, manifest.epoch
                ),
                None => "its manifest was deleted since this store last read it".into(),
            }));
        }
        if manifest.epoch > self.epoch {
            return Err(self.fenced(format!(
                "its manifest holds owner epoch {}, higher than this writer's",
                manifest.epoch
            )));
        }
        if let Some(&latest) = manifest.ids.last() {
            if cp.id <= latest {
                return Err(CheckpointError::NonIncreasingId {
                    id: cp.id,
                    latest,
                    dir: self.location.clone(),
                });
            }
        }
        let reach = self.check_bases(cp, &manifest, &mut state.known)?;

        // What the new manifest lists and retains: the last `keep` ids, and
        // every other checkpoint their chains reach.
        let mut ids = manifest.ids.clone();
        ids.push(cp.id);
        let drop_n = ids.len().saturating_sub(self.keep);
        ids.drain(..drop_n);
        let mut reached: BTreeSet<u64> = reach.iter().copied().collect();
        for &listed in &ids[..ids.len() - 1] {
            match self.load_known(&mut state.known, listed)? {
                Ok(()) => reached.extend(&state.known[&listed].reach),
                Err(reason) => {
                    // Missing or damaged: it can never be restored, so
                    // what its chains would reach need not be kept for it.
                    tracing::warn!(
                        id = listed,
                        %reason,
                        "a listed checkpoint cannot be read; it retains nothing"
                    );
                }
            }
        }
        let retained: Vec<u64> = reached
            .into_iter()
            .filter(|r| ids.binary_search(r).is_err())
            .collect();

        let bytes =
            format::encode_with_reach(cp, &reach).map_err(|reason| CheckpointError::Encode {
                id: cp.id,
                dir: self.location.clone(),
                reason,
            })?;

        // 1-2. the checkpoint under its final name.
        let name = checkpoint_file_name(cp.id);
        if self.backend.put_new(&name, &bytes, fault)? == PutNew::Exists {
            return Err(self.fenced(format!(
                "checkpoint object {name} already exists, written by another writer \
                 (it is not listed in the manifest)"
            )));
        }
        if fault == Some(Fault::CrashBeforeManifest) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforeManifest));
        }

        // 3. commit: the new manifest, only over the version read above.
        let new_manifest = Manifest::new(ids, self.epoch, retained);
        match self
            .backend
            .swap_manifest(&new_manifest.encode(), version.as_ref(), fault)?
        {
            Swap::Done(v) => {
                state.seen = Some(v);
                state.known.insert(
                    cp.id,
                    Known {
                        fingerprint: cp.fingerprint.clone(),
                        parts: cp
                            .parts
                            .keys()
                            .map(|n| (n.clone(), cp.bases.get(n).copied()))
                            .collect(),
                        reach,
                    },
                );
                state.known.retain(|&id, _| new_manifest.holds(id));
            }
            Swap::Conflict => {
                return Err(self.fenced(format!(
                    "its manifest was changed by another writer while checkpoint {} was \
                     committed (the object {name} stays, unlisted)",
                    cp.id
                )))
            }
        }
        if fault == Some(Fault::CrashBeforePrune) {
            return Err(CheckpointError::SimulatedCrash(Fault::CrashBeforePrune));
        }

        // 4. prune (the new checkpoint is committed; failures only warn).
        if let Err(e) = self.remove_unlisted(&new_manifest, false) {
            tracing::warn!(error = %e, "pruning old checkpoints failed; retried on next write or open");
        }

        let created = cp.created();
        Ok(CheckpointInfo {
            id: cp.id,
            path: self.backend.path(&name),
            size_bytes: bytes.len() as u64,
            created,
            age: SystemTime::now()
                .duration_since(created)
                .unwrap_or_default(),
            fingerprint: Some(cp.fingerprint.clone()),
            write_duration: Some(start.elapsed()),
        })
    }

    /// The committed checkpoints, oldest first. Reads only each header, so
    /// it does not verify the parts.
    pub fn list(&self) -> Result<Vec<CheckpointInfo>, CheckpointError> {
        let (manifest, _) = self.read_manifest()?;
        let now = SystemTime::now();
        let mut out = Vec::with_capacity(manifest.ids.len());
        for &id in &manifest.ids {
            let Some((head, header)) = self.header_of(id)? else {
                continue;
            };
            let header = header.ok();
            let created = match &header {
                Some(h) => UNIX_EPOCH + Duration::from_millis(h.created_ms),
                None => head.modified.unwrap_or(UNIX_EPOCH),
            };
            out.push(CheckpointInfo {
                id,
                size_bytes: head.size,
                created,
                age: now.duration_since(created).unwrap_or_default(),
                fingerprint: header.map(|h| h.fingerprint),
                write_duration: None,
                path: self.checkpoint_path(id),
            });
        }
        Ok(out)
    }
}

/// `url` without a query string or user info, for messages.
pub(crate) fn object_url_for_messages(url: &str) -> String {
    let no_query = url.split(['?', '#']).next().unwrap_or(url);
    match no_query.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('/') {
            Some((authority, path)) => {
                let host = authority.rsplit('@').next().unwrap_or(authority);
                format!("{scheme}://{host}/{path}")
            }
            None => format!("{scheme}://{}", rest.rsplit('@').next().unwrap_or(rest)),
        },
        None => no_query.to_string(),
    }
}
