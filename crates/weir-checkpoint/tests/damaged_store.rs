//! A store whose files were damaged or deleted behind its back: a missing
//! or truncated newest checkpoint, a deleted MANIFEST, and a writer killed
//! with SIGKILL in the middle of its writes. Each restart restores the
//! newest checkpoint that verifies, keeps every file that is not provably
//! superseded, and continues with an id no file has used.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_checkpoint::{
    checkpoint_file_name, Checkpoint, CheckpointError, CheckpointStore, ManifestRecovery, MANIFEST,
};

const FP: &str = "fraud-v1@abc";

fn cp(id: u64) -> Checkpoint {
    Checkpoint::new(id, FP)
        .with_part("source", id.to_le_bytes().to_vec())
        .with_part("state/w/3", vec![id as u8; 500])
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn expected(ids: &[u64], manifest: bool) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|&id| checkpoint_file_name(id)).collect();
    if manifest {
        v.insert(0, MANIFEST.to_string());
    }
    v
}

/// What a run does with the store: open, restore, and write its next
/// checkpoint. Returns the restored id and the skipped ids.
fn run(dir: &Path) -> (Option<u64>, Vec<u64>, u64) {
    let store = CheckpointStore::open(dir, 3).unwrap();
    let restored = store.latest_valid(FP).unwrap();
    let next = store.next_id().unwrap();
    store.write(&cp(next)).unwrap();
    (
        restored.as_ref().map(|r| r.checkpoint.id),
        restored
            .map(|r| r.skipped.iter().map(|s| s.0).collect())
            .unwrap_or_default(),
        next,
    )
}

fn write_ids(dir: &Path, ids: std::ops::RangeInclusive<u64>) {
    let store = CheckpointStore::open(dir, 3).unwrap();
    for id in ids {
        store.write(&cp(id)).unwrap();
    }
}

fn truncate(path: &Path, by: u64) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len - by).unwrap();
}

#[test]
fn a_deleted_newest_file_is_skipped_and_ids_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=3);
    fs::remove_file(dir.path().join(checkpoint_file_name(3))).unwrap();

    // The first restart restores 2, reports 3 as skipped, and writes 4.
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert_eq!(store.next_id().unwrap(), 4);
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 2);
    assert_eq!(r.skipped, vec![(3, "file is missing".to_string())]);
    store.write(&cp(4)).unwrap();
    drop(store);
    // 1 is superseded by the committed 4; 3 is listed until it is pruned.
    assert_eq!(names(dir.path()), expected(&[2, 4], true));

    // The second restart restores 4 and continues with 5.
    assert_eq!(run(dir.path()), (Some(4), vec![], 5));
    assert_eq!(names(dir.path()), expected(&[4, 5], true));
    assert_eq!(run(dir.path()), (Some(5), vec![], 6));
}

#[test]
fn a_run_that_writes_nothing_after_a_missing_file_leaves_the_next_id_alone() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=3);
    fs::remove_file(dir.path().join(checkpoint_file_name(3))).unwrap();
    for _ in 0..2 {
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let r = store.latest_valid(FP).unwrap().unwrap();
        assert_eq!((r.checkpoint.id, r.skipped.len()), (2, 1));
        assert_eq!(store.next_id().unwrap(), 4);
    }
    assert_eq!(names(dir.path()), expected(&[1, 2], true));
}

#[test]
fn a_truncated_newest_file_is_skipped_and_kept_until_superseded() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=3);
    truncate(&dir.path().join(checkpoint_file_name(3)), 7);
    assert_eq!(run(dir.path()), (Some(2), vec![3], 4));
    assert_eq!(names(dir.path()), expected(&[2, 3, 4], true));
    assert_eq!(run(dir.path()), (Some(4), vec![], 5));
    assert_eq!(names(dir.path()), expected(&[3, 4, 5], true));
}

#[test]
fn a_deleted_manifest_is_rebuilt_from_the_files_and_nothing_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=3);
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();

    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert_eq!(
        store.manifest_recovery(),
        Some(&ManifestRecovery {
            listed: vec![1, 2, 3],
            unverified: vec![],
        })
    );
    assert_eq!(names(dir.path()), expected(&[1, 2, 3], true));
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint, {
        let mut c = cp(3);
        c.created_ms = r.checkpoint.created_ms;
        c
    });
    assert!(r.skipped.is_empty());
    assert_eq!(store.next_id().unwrap(), 4);
    drop(store);

    // The rebuilt manifest is a committed one: the next open uses it.
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert_eq!(store.manifest_recovery(), None);
    assert_eq!(store.list().unwrap().len(), 3);
    drop(store);
    assert_eq!(run(dir.path()), (Some(3), vec![], 4));
    assert_eq!(names(dir.path()), expected(&[2, 3, 4], true));
}

#[test]
fn a_deleted_manifest_with_a_damaged_newest_file_keeps_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=3);
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    truncate(&dir.path().join(checkpoint_file_name(3)), 1);

    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    let recovery = store.manifest_recovery().unwrap().clone();
    assert_eq!(recovery.listed, vec![1, 2]);
    assert_eq!(recovery.unverified.len(), 1);
    assert_eq!(recovery.unverified[0].0, 3);
    assert_eq!(names(dir.path()), expected(&[1, 2, 3], true));
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 2);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].0, 3);
    assert!(
        r.skipped[0].1.starts_with(&recovery.unverified[0].1)
            && r.skipped[0]
                .1
                .ends_with("(left out of the manifest rebuilt at open)"),
        "{:?}",
        r.skipped
    );
    // The damaged file's id is not reused; once 4 commits, 3 is superseded.
    assert_eq!(store.next_id().unwrap(), 4);
    store.write(&cp(4)).unwrap();
    assert_eq!(names(dir.path()), expected(&[1, 2, 4], true));
}

#[test]
fn a_deleted_manifest_of_another_pipeline_version_is_rebuilt_but_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_ids(dir.path(), 1..=2);
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    match store.latest_valid("fraud-v2@def").unwrap_err() {
        CheckpointError::Incompatible { id, found, .. } => {
            assert_eq!((id, found.as_str()), (2, FP))
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(names(dir.path()), expected(&[1, 2], true));
}

#[test]
fn a_store_without_files_starts_empty_without_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert_eq!(store.manifest_recovery(), None);
    assert_eq!(store.next_id().unwrap(), 1);
    assert!(names(dir.path()).is_empty());
}

const CHILD_DIR: &str = "WEIR_CHECKPOINT_TEST_WRITER_DIR";

/// Not a test of its own: the child process of
/// `a_writer_killed_at_any_moment_leaves_a_store_that_restores`, which
/// writes checkpoints into the directory it is given until it is killed,
/// printing each id once its write returned.
#[test]
#[ignore = "run as a child process by another test"]
fn checkpoint_writer_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let store = CheckpointStore::open(Path::new(&dir), 2).unwrap();
    loop {
        let id = store.next_id().unwrap();
        let big = Checkpoint::new(id, FP).with_part("state", vec![id as u8; 256 * 1024]);
        store.write(&big).unwrap();
        println!("committed {id}");
    }
}

/// A child process, killed and reaped when dropped (also when a test fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_writer_killed_at_any_moment_leaves_a_store_that_restores() {
    let dir = tempfile::tempdir().unwrap();
    let mut last_committed = 0;
    for round in 0..6u64 {
        let mut child = Killed(
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "checkpoint_writer_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                ])
                .env(CHILD_DIR, dir.path())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        // Wait for a few commits, then kill it at some moment of a write.
        let mut seen = 0;
        while seen < 3 {
            let line = lines.next().expect("the child writes").unwrap();
            if let Some(id) = line.strip_prefix("committed ") {
                last_committed = id.parse().unwrap();
                seen += 1;
            }
        }
        std::thread::sleep(Duration::from_micros(700 * round));
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
        for line in lines {
            if let Some(id) = line.unwrap().strip_prefix("committed ") {
                last_committed = id.parse().unwrap();
            }
        }

        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        assert_eq!(store.manifest_recovery(), None, "round {round}");
        let r = store.latest_valid(FP).unwrap().expect("a checkpoint");
        assert!(r.skipped.is_empty(), "round {round}: {:?}", r.skipped);
        // What the child saw committed is restored, or the one it committed
        // after that before the kill reached it.
        assert!(
            r.checkpoint.id == last_committed || r.checkpoint.id == last_committed + 1,
            "round {round}: restored {} after {last_committed}",
            r.checkpoint.id
        );
        assert_eq!(
            r.checkpoint.parts["state"],
            vec![r.checkpoint.id as u8; 256 * 1024]
        );
        assert!(store.next_id().unwrap() > r.checkpoint.id);
        // No temporary file survives the open.
        assert!(
            names(dir.path()).iter().all(|n| !n.starts_with('.')),
            "round {round}: {:?}",
            names(dir.path())
        );
    }
}
