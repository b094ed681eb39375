//! The transactional file sink: records become visible in the sink's file
//! only when the checkpoint covering them completes.
//!
//! Records between two barriers (an *epoch*, named by the id of the
//! barrier that closes it) are written to a staging file beside the sink's
//! file, in `<file>.staging/`. When every producer's barrier has arrived
//! the staging file is fsynced (*prepare*) and its place in the sink file
//! — the length before it and its own length — goes into the checkpoint.
//! Once the checkpoint is durable the coordinator says *commit*: the staged
//! bytes are appended to the sink file, which is fsynced, and the staging
//! file removed.
//!
//! On restart from checkpoint `c`, the sink file is cut back to what `c`
//! covers: if `c`'s epoch was appended (the file is at least that long) the
//! file is truncated to its end; otherwise to its start, and the staged
//! epoch is appended again. Output after `c` is then produced again by the
//! replay, with the same ids. Restore and commit hold an exclusive lock on
//! the file, and a commit appends only where this writer left the file's
//! end: a stale owner of a task, woken after a newer owner restored and
//! wrote, is refused instead of writing over that output.
//!
//! Each writer (one opening of the sink) stages its epochs under names of
//! its own, `<epoch id>.<writer token>`, and the checkpoint records the
//! token with the epoch's place, so a restore reads exactly the staged
//! file its checkpoint covers. A stale owner that keeps staging epochs
//! after its successor restored therefore never shares a staged file with
//! the successor (its files were unlinked by the restore, or are named
//! apart).
//!
//! A task's owner also claims the sink file with its owner epoch (the
//! task's lease epoch or group generation): `<file>.staging/owner` holds
//! the highest epoch that has opened the file, read and written under the
//! file's lock. An opening with a lower epoch is refused before it cuts
//! anything back (a stale owner frozen between its checkpoint restore and
//! opening its sinks would otherwise truncate its successor's output), and
//! a commit appends only while the claim is still this writer's. Epoch 0
//! (a run that is not a task) claims nothing.
//!
//! Readers of the file never see a record that a later restart takes
//! back, unless a newer checkpoint is lost (corrupt) and an older one
//! restored: then the file is cut back to the older one and the same
//! records are written again.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::state::{StateReader, StateWriter};
use crate::EngineError;

/// Where one epoch sits in the sink file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlace {
    /// Checkpoint (barrier) id closing the epoch.
    pub id: u64,
    /// Length of the sink file before the epoch.
    pub before: u64,
    /// Bytes in the epoch.
    pub len: u64,
    /// Token of the writer that staged the epoch; it names the staged
    /// file. 0 for checkpoints written before staged files carried one.
    pub writer: u64,
}

impl EpochPlace {
    /// Encoding stored in the checkpoint.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StateWriter(&mut out);
        w.u64(self.id);
        w.u64(self.before);
        w.u64(self.len);
        w.u64(self.writer);
        out
    }

    /// Reads [`EpochPlace::encode`]'s bytes.
    pub fn decode(data: &[u8]) -> Option<EpochPlace> {
        let mut r = StateReader::new(data);
        let p = EpochPlace {
            id: r.u64().ok()?,
            before: r.u64().ok()?,
            len: r.u64().ok()?,
            writer: 0,
        };
        // Older checkpoints end here; newer ones name the writer.
        let p = if r.done() {
            p
        } else {
            EpochPlace {
                writer: r.u64().ok()?,
                ..p
            }
        };
        r.done().then_some(p)
    }

    /// Name of the staged file holding this epoch.
    fn staged_name(&self) -> String {
        staged_name(self.id, self.writer)
    }
}

/// A file sink under checkpoints.
pub struct TxnFile {
    sink: String,
    path: PathBuf,
    /// Owner epoch this writer claimed the file with (0: no claim).
    epoch: u64,
    staging: PathBuf,
    /// Names this writer's staged files apart from any other writer's.
    writer: u64,
    file: File,
    /// Sink file length once everything prepared so far is committed.
    logical_len: u64,
    open: BTreeMap<u64, (BufWriter<File>, u64)>,
    prepared: BTreeMap<u64, EpochPlace>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> EngineError {
    move |e| EngineError::io(context, e)
}

impl TxnFile {
    /// Opens the sink file and brings it back to what `restored` (the
    /// sink's part of the restored checkpoint) covers; with no checkpoint,
    /// to empty. `epoch` is the task owner's epoch (0 for a run that is
    /// not a task): a file a higher epoch has opened is refused.
    pub fn open(
        sink: &str,
        path: &Path,
        restored: Option<EpochPlace>,
        epoch: u64,
    ) -> Result<Self, EngineError> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sink".into());
        let staging = path.with_file_name(format!("{name}.staging"));
        std::fs::create_dir_all(&staging).map_err(io(format!(
            "sink {sink}: cannot create staging directory {}",
            staging.display()
        )))?;
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(io(format!("sink {sink}: cannot open {}", path.display())))?;
        // Exclusive while the file is cut back and mended: a stale owner
        // of the task (a process frozen past its lease, on this machine)
        // commits under the same lock and checks the file's length first.
        file.lock()
            .map_err(io(format!("sink {sink}: cannot lock {}", path.display())))?;
        if epoch > 0 {
            let owner = read_owner(&staging).map_err(io(format!(
                "sink {sink}: cannot read the owner of {}",
                path.display()
            )))?;
            if owner > epoch {
                return Err(EngineError::SinkFenced {
                    sink: sink.to_string(),
                    path: path.display().to_string(),
                    epoch,
                    owner,
                });
            }
            write_owner(&staging, epoch).map_err(io(format!(
                "sink {sink}: cannot claim {} for epoch {epoch}",
                path.display()
            )))?;
        }
        let have = file
            .metadata()
            .map_err(io(format!("sink {sink}: cannot stat {}", path.display())))?
            .len();
        let keep = match restored {
            None => 0,
            Some(p) if have >= p.before + p.len => p.before + p.len,
            Some(p) => {
                // The epoch was staged and covered but not (fully) appended.
                let staged = staging.join(p.staged_name());
                let mut from = File::open(&staged).map_err(io(format!(
                    "sink {sink}: checkpoint {} covers staged output {} that cannot be read",
                    p.id,
                    staged.display()
                )))?;
                let len = from.metadata().map(|m| m.len()).unwrap_or(0);
                if len != p.len {
                    return Err(EngineError::Staged {
                        sink: sink.to_string(),
                        problem: format!(
                            "staged output {} holds {len} bytes, checkpoint {} says {}",
                            staged.display(),
                            p.id,
                            p.len
                        ),
                    });
                }
                file.set_len(p.before).map_err(io(format!(
                    "sink {sink}: cannot truncate {}",
                    path.display()
                )))?;
                file.seek(SeekFrom::End(0))
                    .and_then(|_| std::io::copy(&mut from, &mut file))
                    .map_err(io(format!(
                        "sink {sink}: cannot append to {}",
                        path.display()
                    )))?;
                p.before + p.len
            }
        };
        file.set_len(keep)
            .and_then(|_| file.seek(SeekFrom::End(0)).map(|_| ()))
            .and_then(|_| file.sync_all())
            .and_then(|_| file.unlock())
            .map_err(io(format!(
                "sink {sink}: cannot truncate {}",
                path.display()
            )))?;
        // Staged epochs not covered by the checkpoint are produced again.
        if let Ok(entries) = std::fs::read_dir(&staging) {
            for e in entries.flatten() {
                if e.file_name() != OWNER {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(TxnFile {
            sink: sink.to_string(),
            path: path.to_path_buf(),
            epoch,
            staging,
            writer: writer_token(),
            file,
            logical_len: keep,
            open: BTreeMap::new(),
            prepared: BTreeMap::new(),
        })
    }

    /// The sink file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends encoded records to epoch `id`.
    pub fn write(&mut self, id: u64, bytes: &[u8]) -> std::io::Result<()> {
        let (w, n) = match self.open.entry(id) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => {
                // create_new: a staged file is this writer's alone.
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(self.staging.join(staged_name(id, self.writer)))?;
                v.insert((BufWriter::with_capacity(1 << 16, f), 0))
            }
        };
        w.write_all(bytes)?;
        *n += bytes.len() as u64;
        Ok(())
    }

    /// Makes epoch `id` durable in staging; returns its place.
    pub fn prepare(&mut self, id: u64) -> std::io::Result<EpochPlace> {
        let len = match self.open.remove(&id) {
            Some((w, n)) => {
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_data()?;
                n
            }
            None => 0,
        };
        let place = EpochPlace {
            id,
            before: self.logical_len,
            len,
            writer: self.writer,
        };
        self.logical_len += len;
        self.prepared.insert(id, place);
        Ok(place)
    }

    /// Appends every prepared epoch up to `id` to the sink file.
    pub fn commit(&mut self, id: u64) -> Result<(), EngineError> {
        while let Some((&first, _)) = self.prepared.first_key_value() {
            if first > id {
                break;
            }
            // unwrap: the entry was just seen.
            let (_, place) = self.prepared.pop_first().expect("prepared epoch");
            if place.len == 0 {
                continue;
            }
            let staged = self.staging.join(place.staged_name());
            self.file.lock().map_err(|e| self.commit_failed(e))?;
            let appended = self.append_at(place, &staged);
            self.file.unlock().map_err(|e| self.commit_failed(e))?;
            appended?;
        }
        Ok(())
    }

    /// Appends the staged epoch `place`, if the file still ends where this
    /// writer left it: otherwise another writer (a newer owner of the
    /// task, which cut the file back at its restore) has written since,
    /// and appending at this writer's place would overwrite its output or
    /// leave a hole. Called under the file's lock.
    fn append_at(&mut self, place: EpochPlace, staged: &Path) -> Result<(), EngineError> {
        if self.epoch > 0 {
            let owner = read_owner(&self.staging).map_err(|e| self.commit_failed(e))?;
            if owner != self.epoch {
                return Err(EngineError::SinkFenced {
                    sink: self.sink.clone(),
                    path: self.path.display().to_string(),
                    epoch: self.epoch,
                    owner,
                });
            }
        }
        let have = self
            .file
            .metadata()
            .map_err(|e| self.commit_failed(e))?
            .len();
        if have != place.before {
            return Err(self.commit_failed(std::io::Error::other(format!(
                "it is {have} bytes long where this writer left it at {}: another writer \
                     (a newer owner of the task) has written to it; epoch {} not appended",
                place.before, place.id
            ))));
        }
        let appended = File::open(staged).and_then(|mut from| {
            self.file.seek(SeekFrom::End(0))?;
            std::io::copy(&mut from, &mut self.file)?;
            self.file.sync_data()?;
            std::fs::remove_file(staged)
        });
        appended.map_err(|e| self.commit_failed(e))
    }

    fn commit_failed(&self, e: std::io::Error) -> EngineError {
        EngineError::io(
            format!(
                "sink {}: cannot commit output to {}",
                self.sink,
                self.path.display()
            ),
            e,
        )
    }
}

/// The file in the staging directory holding the owner epoch's claim.
const OWNER: &str = "owner";

/// The epoch that last claimed the file; 0 if none has.
fn read_owner(staging: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(staging.join(OWNER)) {
        Ok(text) => text.trim().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} does not hold an epoch: {text:?}",
                    staging.join(OWNER).display()
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Claims the file for `epoch`: written beside and renamed over, so a
/// crash leaves the old claim or the new one, never a torn one.
fn write_owner(staging: &Path, epoch: u64) -> std::io::Result<()> {
    let tmp = staging.join(format!("{OWNER}.tmp"));
    let mut f = File::create(&tmp)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, staging.join(OWNER))?;
    File::open(staging)?.sync_all()
}

fn staged_name(id: u64, writer: u64) -> String {
    if writer == 0 {
        format!("{id:020}")
    } else {
        format!("{id:020}.{writer:016x}")
    }
}

/// A token no other writer of the same file holds: the process id and the
/// time, mixed with a per-process counter, never 0.
fn writer_token() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static OPENED: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = OPENED.fetch_add(1, Ordering::Relaxed);
    let mixed = nanos ^ (u64::from(std::process::id()) << 40) ^ n.rotate_right(8);
    mixed.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stale owner (frozen with an epoch prepared, woken after a newer
    /// owner restored and wrote) must not append at its old place: that
    /// would overwrite the newer owner's output or leave a hole of zeros.
    #[test]
    fn a_stale_writer_does_not_append_over_a_newer_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        let mut old = TxnFile::open("s", &path, None, 0).expect("old owner");
        old.write(1, b"a1\n").expect("write");
        let p1 = old.prepare(1).expect("prepare 1");
        old.commit(1).expect("commit 1");
        old.write(2, b"a2-stale\n").expect("write");
        let p2 = old.prepare(2).expect("prepare 2");
        assert_eq!((p1.before, p2.before), (0, 3));
        // The newer owner restores checkpoint 1 and writes more than the
        // stale epoch's place.
        let mut new = TxnFile::open("s", &path, Some(p1), 0).expect("new owner");
        new.write(2, b"b2-newer-output\n").expect("write");
        new.prepare(2).expect("prepare");
        new.commit(2).expect("commit");
        let err = old.commit(2).expect_err("the stale owner is refused");
        assert!(err.to_string().contains("another writer"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "a1\nb2-newer-output\n"
        );
    }

    /// The race the SIGSTOP tests found: a stale owner starts staging an
    /// epoch after its successor's restore cleared staging, and the
    /// successor then stages the same epoch id. Their staged files must be
    /// apart, so the successor commits exactly its own bytes.
    #[test]
    fn a_stale_writer_staging_the_same_epoch_does_not_touch_the_successors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        let mut old = TxnFile::open("s", &path, None, 0).expect("old owner");
        old.write(1, b"a1\n").expect("write");
        let p1 = old.prepare(1).expect("prepare 1");
        old.commit(1).expect("commit 1");
        let mut new = TxnFile::open("s", &path, Some(p1), 0).expect("new owner");
        // The stale owner wakes and stages epoch 2 first, with more bytes.
        old.write(2, b"stale-stale-stale-stale\n")
            .expect("stale write");
        new.write(2, b"b2\n").expect("write");
        old.write(2, b"more-stale\n").expect("stale write");
        let p2 = new.prepare(2).expect("prepare");
        old.prepare(2).expect("stale prepare");
        new.commit(2).expect("commit");
        assert!(old.commit(2).is_err(), "the stale owner is refused");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a1\nb2\n");
        // A third owner restoring checkpoint 2 before its commit reached
        // the file finds the successor's staged bytes, not the stale ones.
        new.write(3, b"b3\n").expect("write");
        let p3 = new.prepare(3).expect("prepare 3");
        let third = TxnFile::open("s", &path, Some(p3), 0).expect("third owner");
        drop(third);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "a1\nb2\nb3\n"
        );
        assert_eq!(p2.len, 3);
    }

    /// Checkpoints written before staged files carried a writer token
    /// decode with token 0, which names the staged file as before.
    #[test]
    fn an_epoch_place_without_a_writer_decodes_as_before() {
        let mut old = Vec::new();
        let mut w = StateWriter(&mut old);
        w.u64(7);
        w.u64(100);
        w.u64(20);
        let p = EpochPlace::decode(&old).expect("decodes");
        assert_eq!((p.id, p.before, p.len, p.writer), (7, 100, 20, 0));
        assert_eq!(p.staged_name(), "00000000000000000007");
        let q = EpochPlace { writer: 0xab, ..p };
        assert_eq!(EpochPlace::decode(&q.encode()), Some(q));
        assert_eq!(q.staged_name(), "00000000000000000007.00000000000000ab");
    }

    /// The race the Kafka SIGSTOP test found: a stale owner (epoch 2),
    /// frozen after restoring "no checkpoint" but before opening its sink,
    /// wakes after its successor (epoch 3) has written and committed. Its
    /// opening must be refused before it truncates anything, and so must
    /// a commit of an epoch it prepared before the successor's claim.
    #[test]
    fn a_stale_owner_cannot_open_or_commit_after_a_newer_epoch_claimed_the_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("out.jsonl");
        let mut old = TxnFile::open("s", &path, None, 2).expect("old owner");
        old.write(1, b"a1\n").expect("write");
        old.prepare(1).expect("prepare 1");
        let mut new = TxnFile::open("s", &path, None, 3).expect("new owner");
        new.write(1, b"b1\n").expect("write");
        new.prepare(1).expect("prepare");
        new.write(2, b"b2\n").expect("write");
        let p2 = new.prepare(2).expect("prepare");
        new.commit(1).expect("commit");
        let err = old.commit(1).expect_err("the stale commit is refused");
        assert!(err.is_fenced(), "{err}");
        let err = TxnFile::open("s", &path, None, 2)
            .err()
            .expect("the stale opening is refused");
        assert!(err.is_fenced(), "{err}");
        assert!(err.to_string().contains("epoch 3"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "b1\n");
        // The owner after it restores checkpoint 2 and finds its output.
        drop(TxnFile::open("s", &path, Some(p2), 4).expect("next owner"));
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "b1\nb2\n");
        let err = new.commit(2).expect_err("fenced");
        assert!(err.is_fenced(), "{err}");
    }
}
