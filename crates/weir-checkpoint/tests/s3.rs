//! The checkpoint store against a real S3 API: moto's server, started by
//! the test on a free port (see `weir-test-support/src/moto.rs` for where
//! `moto_server` is looked up, and `WEIR_SKIP_S3=1`). The store is opened
//! from an `s3://` URL with the endpoint and credentials in the standard
//! `AWS_*` environment variables, as a deployment would.
//!
//! One test, three scenarios in turn, each under its own prefix: the
//! environment is process-wide, so one server serves them all.

#[path = "../../weir-test-support/src/moto.rs"]
#[allow(dead_code)]
mod moto;

use weir_checkpoint::{Checkpoint, CheckpointError, CheckpointStore};

const FP: &str = "fraud-v1@abc";
const BUCKET: &str = "weir-checkpoints";

fn cp(id: u64) -> Checkpoint {
    Checkpoint::new(id, FP)
        .with_part("source/positions", id.to_le_bytes().to_vec())
        .with_part("shard/0/keygroup/1", vec![id as u8; 70_000])
}

fn url(prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}")
}

fn round_trip() {
    let store = CheckpointStore::open_url(&url("round-trip/task-0"), 2, 0).expect("open");
    assert!(store.latest_valid(FP).expect("read").is_none());
    for id in 1..=3 {
        store.write(&cp(id)).expect("write");
    }
    drop(store);
    let store = CheckpointStore::open_url(&url("round-trip/task-0"), 2, 0).expect("reopen");
    let restored = store.latest_valid(FP).expect("read").expect("a checkpoint");
    assert_eq!(restored.checkpoint.id, 3);
    assert_eq!(restored.checkpoint.parts, cp(3).parts);
    assert!(restored.skipped.is_empty());
    let ids: Vec<u64> = store.list().expect("list").iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![2, 3], "keep = 2 pruned checkpoint 1");
    assert_eq!(store.next_id().expect("next id"), 4);
    assert_eq!(
        store.checkpoint_path(3).to_str(),
        Some("s3://weir-checkpoints/round-trip/task-0/cp-00000000000000000003.ckpt")
    );
}

fn fencing_between_two_writers() {
    let u = url("fencing/task-1");
    let old = CheckpointStore::open_url(&u, 3, 0).expect("open old");
    old.write(&cp(1)).expect("old writes 1");
    let new = CheckpointStore::open_url(&u, 3, 0).expect("open new");
    new.write(&cp(2)).expect("new writes 2");
    match old.write(&cp(3)) {
        Err(CheckpointError::Fenced { store, what, .. }) => {
            assert_eq!(store, "s3://weir-checkpoints/fencing/task-1");
            assert_eq!(
                what,
                "its manifest was changed by another writer since this store last read it \
                 (it now lists checkpoints [1, 2], owner epoch 0)"
            );
        }
        other => panic!("the stale writer was not fenced: {other:?}"),
    }
    // A second owner that opened before either wrote: its first commit
    // (create-if-absent on a manifest that exists now) is refused by S3.
    let racer = CheckpointStore::open_url(&url("fencing/task-2"), 3, 0).expect("open racer");
    let winner = CheckpointStore::open_url(&url("fencing/task-2"), 3, 0).expect("open winner");
    winner.write(&cp(1)).expect("winner writes 1");
    assert!(
        matches!(racer.write(&cp(5)), Err(CheckpointError::Fenced { .. })),
        "the racer was not fenced"
    );
    let reader = CheckpointStore::open_url(&u, 3, 0).expect("reader");
    assert_eq!(
        reader
            .latest_valid(FP)
            .expect("read")
            .map(|r| r.checkpoint.id),
        Some(2)
    );
    assert_eq!(
        reader.next_id().expect("next id"),
        3,
        "the stale writer wrote no object"
    );
}

fn lower_epoch_refused() {
    let u = url("epochs/task-3");
    let first = CheckpointStore::open_url(&u, 3, 4).expect("open epoch 4");
    first.write(&cp(1)).expect("epoch 4 writes");
    let second = CheckpointStore::open_url(&u, 3, 5).expect("open epoch 5");
    // Opening with epoch 5 claimed the store: epoch 4 is fenced at once.
    assert!(matches!(
        first.write(&cp(2)),
        Err(CheckpointError::Fenced { .. })
    ));
    second.write(&cp(2)).expect("epoch 5 writes");
    match CheckpointStore::open_url(&u, 3, 4) {
        Err(CheckpointError::Fenced { epoch, what, .. }) => {
            assert_eq!(epoch, 4);
            assert_eq!(
                what,
                "its manifest holds owner epoch 5, higher than this writer's"
            );
        }
        other => panic!("epoch 4 was not refused: {other:?}"),
    }
    let reader = CheckpointStore::open_url(&u, 3, 5).expect("reopen epoch 5");
    assert_eq!(
        reader
            .latest_valid(FP)
            .expect("read")
            .map(|r| r.checkpoint.id),
        Some(2)
    );
}

#[test]
fn s3_round_trip_fencing_and_epochs_against_moto() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    moto.create_bucket(BUCKET);
    for (key, value) in moto.env() {
        std::env::set_var(key, value);
    }
    round_trip();
    fencing_between_two_writers();
    lower_epoch_refused();
}
