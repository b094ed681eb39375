//! The store's logic over an `object_store` backend: object_store's
//! `InMemory`, which implements the same conditional puts as S3
//! (create-if-absent, update-if-ETag-matches). Two stores on one prefix
//! stand for two owners of one task.

use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use proptest::prelude::*;
use weir_checkpoint::{checkpoint_file_name, Checkpoint, CheckpointError, CheckpointStore, Fault};

const FP: &str = "fraud-v1@abc";
const PREFIX: &str = "state/task-3";

fn cp(id: u64) -> Checkpoint {
    Checkpoint::new(id, FP)
        .with_part("source/positions", id.to_le_bytes().to_vec())
        .with_part("shard/0/keygroup/1", vec![id as u8; 300])
}

fn open(mem: &Arc<InMemory>, keep: usize, epoch: u64) -> Result<CheckpointStore, CheckpointError> {
    CheckpointStore::open_object_store(mem.clone(), "memory:///state/task-3", PREFIX, keep, epoch)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The object names under the prefix, sorted.
fn names(mem: &Arc<InMemory>) -> Vec<String> {
    let listed = rt()
        .block_on(mem.list_with_delimiter(Some(&ObjectPath::from(PREFIX))))
        .unwrap();
    let mut v: Vec<String> = listed
        .objects
        .iter()
        .map(|m| m.location.filename().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn expected(ids: &[u64]) -> Vec<String> {
    let mut v = vec!["MANIFEST".to_string()];
    v.extend(ids.iter().map(|&id| checkpoint_file_name(id)));
    v
}

fn get(mem: &Arc<InMemory>, name: &str) -> Vec<u8> {
    let path = ObjectPath::from(PREFIX).join(name);
    rt().block_on(async {
        mem.get(&path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec()
    })
}

fn put(mem: &Arc<InMemory>, name: &str, bytes: Vec<u8>) {
    let path = ObjectPath::from(PREFIX).join(name);
    rt().block_on(mem.put(&path, PutPayload::from(bytes)))
        .unwrap();
}

fn manifest(mem: &Arc<InMemory>) -> String {
    String::from_utf8(get(mem, "MANIFEST")).unwrap()
}

#[test]
fn round_trip_and_reopen() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 3, 0).unwrap();
    assert!(store.latest_valid(FP).unwrap().is_none());
    assert_eq!(store.next_id().unwrap(), 1);
    let c = cp(1).with_part("x", (0..=255u8).collect());
    let info = store.write(&c).unwrap();
    assert_eq!(info.id, 1);
    assert_eq!(
        info.path.to_str().unwrap(),
        "memory:///state/task-3/cp-00000000000000000001.ckpt"
    );
    assert_eq!(
        info.size_bytes,
        get(&mem, &checkpoint_file_name(1)).len() as u64
    );
    drop(store);
    let store = open(&mem, 3, 0).unwrap();
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint, c);
    assert!(r.skipped.is_empty());
    assert_eq!(store.next_id().unwrap(), 2);
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].fingerprint.as_deref(), Some(FP));
    assert_eq!(listed[0].size_bytes, info.size_bytes);
    assert_eq!(names(&mem), expected(&[1]));
}

#[test]
fn a_stale_writer_is_fenced_and_the_newer_checkpoint_stays() {
    let mem = Arc::new(InMemory::new());
    let old = open(&mem, 3, 0).unwrap();
    old.write(&cp(1)).unwrap();
    // A second owner opens the same prefix and commits checkpoint 2.
    let new = open(&mem, 3, 0).unwrap();
    new.write(&cp(2)).unwrap();
    let before = manifest(&mem);

    let err = old.write(&cp(3)).unwrap_err();
    match &err {
        CheckpointError::Fenced { store, epoch, what } => {
            assert_eq!(store, "memory:///state/task-3");
            assert_eq!(*epoch, 0);
            assert_eq!(
                what,
                "its manifest was changed by another writer since this store last read it \
                 (it now lists checkpoints [1, 2], owner epoch 0)"
            );
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(err.to_string().contains("fenced out"), "{err}");
    // Nothing written, nothing deleted, the manifest untouched.
    assert_eq!(names(&mem), expected(&[1, 2]));
    assert_eq!(manifest(&mem), before);
    // The newer owner goes on; a fresh reader restores its checkpoint.
    new.write(&cp(3)).unwrap();
    let reader = open(&mem, 3, 0).unwrap();
    let restored = reader.latest_valid(FP).unwrap().unwrap().checkpoint;
    assert_eq!(restored.id, 3);
    assert_eq!(restored.parts, cp(3).parts);
    assert_eq!(names(&mem), expected(&[1, 2, 3]));
    // Once fenced, always fenced.
    assert!(matches!(
        old.write(&cp(9)),
        Err(CheckpointError::Fenced { .. })
    ));
}

#[test]
fn a_checkpoint_object_of_another_writer_is_never_overwritten() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 3, 0).unwrap();
    store.write(&cp(1)).unwrap();
    // Another writer's checkpoint 2, put but not (yet) committed.
    put(&mem, &checkpoint_file_name(2), b"theirs".to_vec());
    let err = store.write(&cp(2)).unwrap_err();
    match &err {
        CheckpointError::Fenced { what, .. } => assert_eq!(
            what,
            "checkpoint object cp-00000000000000000002.ckpt already exists, written by another \
             writer (it is not listed in the manifest)"
        ),
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(get(&mem, &checkpoint_file_name(2)), b"theirs");
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
    // Ids continue after the foreign object.
    assert_eq!(store.next_id().unwrap(), 3);
}

#[test]
fn a_lower_epoch_is_refused() {
    let mem = Arc::new(InMemory::new());
    let owner = open(&mem, 3, 7).unwrap();
    owner.write(&cp(1)).unwrap();
    assert!(manifest(&mem).contains("\"epoch\":7"), "{}", manifest(&mem));

    let err = open(&mem, 3, 6).unwrap_err();
    match &err {
        CheckpointError::Fenced { epoch, what, .. } => {
            assert_eq!(*epoch, 6);
            assert_eq!(
                what,
                "its manifest holds owner epoch 7, higher than this writer's"
            );
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    // A store without an epoch is epoch 0: refused as well.
    assert!(matches!(
        open(&mem, 3, 0),
        Err(CheckpointError::Fenced { .. })
    ));
    // The same epoch reopens (a restart of the owner).
    let again = open(&mem, 3, 7).unwrap();
    again.write(&cp(2)).unwrap();
    assert_eq!(names(&mem), expected(&[1, 2]));
}

#[test]
fn a_higher_epoch_claims_the_store_and_fences_the_old_owner_at_once() {
    let mem = Arc::new(InMemory::new());
    let old = open(&mem, 3, 1).unwrap();
    old.write(&cp(1)).unwrap();
    // The new owner only opens: that alone claims the store.
    let new = open(&mem, 3, 2).unwrap();
    assert!(manifest(&mem).contains("\"epoch\":2"), "{}", manifest(&mem));
    assert_eq!(new.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
    assert!(matches!(
        old.write(&cp(2)),
        Err(CheckpointError::Fenced { .. })
    ));
    assert_eq!(names(&mem), expected(&[1]));
    new.write(&cp(2)).unwrap();
    assert_eq!(names(&mem), expected(&[1, 2]));
}

#[test]
fn pruning_keeps_the_last_keep_checkpoints() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 2, 0).unwrap();
    for id in 1..=5 {
        store.write(&cp(id)).unwrap();
    }
    assert_eq!(names(&mem), expected(&[4, 5]));
    let ids: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![4, 5]);
}

fn flip(mem: &Arc<InMemory>, id: u64, at: usize) {
    let mut bytes = get(mem, &checkpoint_file_name(id));
    bytes[at] ^= 0x40;
    put(mem, &checkpoint_file_name(id), bytes);
}

#[test]
fn a_damaged_checkpoint_object_is_skipped() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 3, 0).unwrap();
    store.write(&cp(1)).unwrap();
    store.write(&cp(2)).unwrap();
    flip(&mem, 2, 100);
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 1);
    assert_eq!(
        r.skipped,
        vec![(2, "whole-checkpoint checksum mismatch".to_string())]
    );
    // Nothing deleted; ids continue after the damaged one.
    assert_eq!(names(&mem), expected(&[1, 2]));
    assert_eq!(store.next_id().unwrap(), 3);
}

#[test]
fn a_crash_before_the_commit_leaves_the_old_set() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 3, 0).unwrap();
    store.write(&cp(1)).unwrap();
    let err = store
        .write_with_fault(&cp(2), Fault::CrashBeforeManifest)
        .unwrap_err();
    assert!(matches!(err, CheckpointError::SimulatedCrash(_)));
    drop(store);
    let store = open(&mem, 3, 0).unwrap();
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
    // The uncommitted object is kept and its id never reused.
    assert_eq!(store.next_id().unwrap(), 3);
    store.write(&cp(3)).unwrap();
    // Committing 3 supersedes the unlisted 2, which is pruned.
    assert_eq!(names(&mem), expected(&[1, 3]));
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 3);
}

#[test]
fn a_lost_manifest_is_rebuilt_from_the_objects() {
    let mem = Arc::new(InMemory::new());
    let store = open(&mem, 3, 0).unwrap();
    for id in 1..=3 {
        store.write(&cp(id)).unwrap();
    }
    drop(store);
    rt().block_on(mem.delete(&ObjectPath::from(PREFIX).join("MANIFEST")))
        .unwrap();
    let store = open(&mem, 3, 0).unwrap();
    assert_eq!(store.manifest_recovery().unwrap().listed, vec![1, 2, 3]);
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 3);
}

/// Checkpoint `id` with a full `source` and `state` a delta on `base`
/// (full without one).
fn delta_cp(id: u64, base: Option<u64>) -> Checkpoint {
    let c = Checkpoint::new(id, FP).with_part("source", id.to_le_bytes().to_vec());
    match base {
        Some(b) => c.with_delta_part("state", b, vec![id as u8; 10]),
        None => c.with_part("state", vec![id as u8; 100]),
    }
}

#[test]
fn delta_chains_are_retained_restored_and_kept_by_a_claiming_owner() {
    let mem = Arc::new(InMemory::new());
    let old = open(&mem, 1, 1).unwrap();
    old.write(&delta_cp(1, None)).unwrap();
    old.write(&delta_cp(2, Some(1))).unwrap();
    old.write(&delta_cp(3, Some(2))).unwrap();
    assert_eq!(names(&mem), expected(&[1, 2, 3]));
    assert!(
        manifest(&mem).contains(r#""ids":[3],"epoch":1,"retained":[1,2]"#),
        "{}",
        manifest(&mem)
    );
    // A new owner claims the store: the retained set stays, so does every
    // object.
    let new = open(&mem, 1, 2).unwrap();
    assert!(
        manifest(&mem).contains(r#""ids":[3],"epoch":2,"retained":[1,2]"#),
        "{}",
        manifest(&mem)
    );
    assert_eq!(names(&mem), expected(&[1, 2, 3]));
    let r = new.latest_valid(FP).unwrap().unwrap();
    let ids: Vec<u64> = r.chain("state").unwrap().iter().map(|l| l.0).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(r.chain("state").unwrap()[0].1, &[1u8; 100][..]);
    assert!(matches!(
        old.write(&delta_cp(4, Some(3))),
        Err(CheckpointError::Fenced { .. })
    ));
    // A damaged base: the chain's checkpoints are skipped, naming it.
    flip(&mem, 1, 60);
    let r = new.latest_valid(FP).unwrap();
    assert!(r.is_none());
    flip(&mem, 1, 60); // repaired
                       // A new full supersedes the chain: everything older is pruned.
    new.write(&delta_cp(4, Some(3))).unwrap();
    assert_eq!(names(&mem), expected(&[1, 2, 3, 4]));
    new.write(&delta_cp(5, None)).unwrap();
    assert_eq!(names(&mem), expected(&[5]));
    assert_eq!(new.latest_valid(FP).unwrap().unwrap().checkpoint.id, 5);
}

#[test]
fn a_memory_url_opens_a_store() {
    let store = CheckpointStore::open_url("memory:///cp", 2, 0).unwrap();
    store.write(&cp(1)).unwrap();
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
    assert_eq!(store.describe(), "memory:///cp");
}

#[test]
fn unsupported_urls_are_clear_errors() {
    let err = CheckpointStore::open_url("ftp://host/cp", 2, 0).unwrap_err();
    assert!(matches!(err, CheckpointError::Location { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with("checkpoint store ftp://host/cp: "),
        "{err}"
    );
    // Credentials in a URL never reach a message.
    let err = CheckpointStore::open_url("ftp://user:secret@host/cp?token=abc", 2, 0).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(!err.to_string().contains("abc"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Whatever the interleaving of two owners, every write after the
    /// other owner's commit is fenced, nothing a commit listed is ever
    /// deleted while it is listed, and a reader restores the newest
    /// committed checkpoint.
    #[test]
    fn two_owners_never_lose_a_committed_checkpoint(
        turns in proptest::collection::vec(any::<bool>(), 1..12),
        keep in 1usize..4,
    ) {
        let mem = Arc::new(InMemory::new());
        let stores = [open(&mem, keep, 0).unwrap(), open(&mem, keep, 0).unwrap()];
        let mut fenced = [false, false];
        let mut committed: Vec<u64> = Vec::new();
        let mut last_writer: Option<usize> = None;
        for (next, who) in (1u64..).zip(turns.into_iter().map(usize::from)) {
            let result = stores[who].write(&cp(next));
            // A store may write while no other store committed since it
            // last read: first-come wins, the other is stale for good.
            let allowed = !fenced[who] && last_writer.is_none_or(|w| w == who);
            if allowed {
                prop_assert!(result.is_ok(), "{:?}", result);
                committed.push(next);
                last_writer = Some(who);
            } else {
                prop_assert!(matches!(result, Err(CheckpointError::Fenced { .. })), "{:?}", result);
                fenced[who] = true;
            }
        }
        let kept: Vec<u64> = committed.iter().rev().take(keep).rev().copied().collect();
        prop_assert_eq!(names(&mem), if kept.is_empty() { Vec::new() } else { expected(&kept) });
        let reader = open(&mem, keep, 0).unwrap();
        prop_assert_eq!(
            reader.latest_valid(FP).unwrap().map(|r| r.checkpoint.id),
            committed.last().copied()
        );
    }
}
