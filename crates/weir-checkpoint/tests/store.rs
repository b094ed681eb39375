use std::fs;
use std::path::Path;

use proptest::prelude::*;
use weir_checkpoint::{format, Checkpoint, CheckpointError, CheckpointStore, Fault};

const FP: &str = "fraud-v1@abc";

fn cp(id: u64) -> Checkpoint {
    Checkpoint::new(id, FP)
        .with_part("source/positions", id.to_le_bytes().to_vec())
        .with_part("shard/3/keygroup/17", vec![id as u8; 1000])
        .with_part("sink/alerts", Vec::new())
}

fn file_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_several_parts() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert!(store.latest_valid(FP).unwrap().is_none());
    let c = cp(1).with_part("x", (0..=255u8).collect());
    let info = store.write(&c).unwrap();
    assert_eq!(info.id, 1);
    assert_eq!(info.size_bytes, fs::metadata(&info.path).unwrap().len());
    assert!(info.write_duration.is_some());
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint, c);
    assert!(r.skipped.is_empty());
    // Survives reopening.
    drop(store);
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint, c);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].fingerprint.as_deref(), Some(FP));
    assert_eq!(list[0].created, c.created());
}

#[test]
fn keeps_last_k() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    for id in [3, 5, 8, 9] {
        store.write(&cp(id)).unwrap();
    }
    let ids: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
    assert_eq!(ids, vec![8, 9]);
    assert_eq!(
        file_names(dir.path()),
        vec![
            "MANIFEST".to_string(),
            "cp-00000000000000000008.ckpt".into(),
            "cp-00000000000000000009.ckpt".into()
        ]
    );
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 9);
}

#[test]
fn rejects_non_increasing_id_and_zero_keep() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        CheckpointStore::open(dir.path(), 0),
        Err(CheckpointError::InvalidKeep { .. })
    ));
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    store.write(&cp(5)).unwrap();
    let err = store.write(&cp(5)).unwrap_err();
    assert!(matches!(
        err,
        CheckpointError::NonIncreasingId {
            id: 5,
            latest: 5,
            ..
        }
    ));
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

#[test]
fn corrupt_newest_falls_back_to_previous() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(&cp(1)).unwrap();
    let info = store.write(&cp(2)).unwrap();
    // Flip a byte in the middle of a part's data.
    flip_byte(&info.path, info.size_bytes as usize / 2);
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.parts, cp(1).parts);
    assert_eq!(r.checkpoint.id, 1);
    assert_eq!(r.skipped.len(), 1);
    assert_eq!(r.skipped[0].0, 2);
    // Nothing deleted.
    assert!(info.path.exists());
    // list still shows it.
    assert_eq!(store.list().unwrap().len(), 2);
}

#[test]
fn truncated_or_missing_newest_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(&cp(1)).unwrap();
    let two = store.write(&cp(2)).unwrap();
    let three = store.write(&cp(3)).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(&three.path)
        .unwrap();
    f.set_len(three.size_bytes - 5).unwrap();
    drop(f);
    fs::remove_file(&two.path).unwrap();
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 1);
    let skipped: Vec<u64> = r.skipped.iter().map(|s| s.0).collect();
    assert_eq!(skipped, vec![3, 2]);
    assert!(r.skipped[1].1.contains("missing"));
}

#[test]
fn all_corrupt_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    let info = store.write(&cp(1)).unwrap();
    flip_byte(&info.path, 3);
    assert!(store.latest_valid(FP).unwrap().is_none());
}

#[test]
fn fingerprint_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(&cp(1)).unwrap();
    let err = store.latest_valid("fraud-v2@def").unwrap_err();
    match &err {
        CheckpointError::Incompatible {
            id,
            found,
            expected,
            ..
        } => {
            assert_eq!(*id, 1);
            assert_eq!(found, FP);
            assert_eq!(expected, "fraud-v2@def");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(FP) && msg.contains("fraud-v2@def"), "{msg}");
    // Nothing deleted; the right fingerprint still restores.
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
}

#[test]
fn simulated_crashes_leave_old_set() {
    for fault in [
        Fault::CrashMidFile(10),
        Fault::CrashMidFile(usize::MAX),
        Fault::CrashBeforeRename,
        Fault::CrashBeforeManifest,
        Fault::CrashMidManifest,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        store.write(&cp(1)).unwrap();
        let before = file_names(dir.path());
        let err = store.write_with_fault(&cp(2), fault).unwrap_err();
        assert!(matches!(err, CheckpointError::SimulatedCrash(_)));
        drop(store);
        // "Restart".
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        // A complete but uncommitted file stays until a newer one commits.
        let mut expected = before.clone();
        if matches!(fault, Fault::CrashBeforeManifest | Fault::CrashMidManifest) {
            expected.push("cp-00000000000000000002.ckpt".into());
        }
        assert_eq!(file_names(dir.path()), expected, "{fault:?}");
        let r = store.latest_valid(FP).unwrap().unwrap();
        assert_eq!(r.checkpoint.id, 1, "{fault:?}");
        assert!(r.skipped.is_empty());
        // The store keeps working, also with the same id.
        store.write(&cp(2)).unwrap();
        assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 2);
    }
}

#[test]
fn crash_after_commit_before_prune_keeps_new_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 1).unwrap();
    store.write(&cp(1)).unwrap();
    store
        .write_with_fault(&cp(2), Fault::CrashBeforePrune)
        .unwrap_err();
    assert_eq!(file_names(dir.path()).len(), 3);
    drop(store);
    let store = CheckpointStore::open(dir.path(), 1).unwrap();
    assert_eq!(
        file_names(dir.path()),
        vec![
            "MANIFEST".to_string(),
            "cp-00000000000000000002.ckpt".into()
        ]
    );
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 2);
}

#[test]
fn full_disk_leaves_previous_intact() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(&cp(1)).unwrap();
    let before = file_names(dir.path());
    let err = store
        .write_with_fault(&cp(2), Fault::DiskFullAfter(100))
        .unwrap_err();
    match &err {
        CheckpointError::Io { path, .. } => assert!(path.starts_with(dir.path())),
        other => panic!("unexpected {other:?}"),
    }
    assert!(err.to_string().contains("No space left"), "{err}");
    // No temp file left behind, old set intact, without reopening.
    assert_eq!(file_names(dir.path()), before);
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 1);
    store.write(&cp(2)).unwrap();
    assert_eq!(store.latest_valid(FP).unwrap().unwrap().checkpoint.id, 2);
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"x").unwrap();
    let err = CheckpointStore::open(&file.join("cps"), 2).unwrap_err();
    assert!(matches!(err, CheckpointError::Io { .. }));
    assert!(err.to_string().contains("not-a-dir"), "{err}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let ro = dir.path().join("ro");
        fs::create_dir(&ro).unwrap();
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o555)).unwrap();
        // Root ignores permissions; only check where they apply.
        if fs::write(ro.join("probe"), b"x").is_err() {
            let err = CheckpointStore::open(&ro, 2).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("write in directory") && msg.contains("ro"),
                "{msg}"
            );
        }
        fs::set_permissions(&ro, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn corrupt_manifest_is_reported_with_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 3).unwrap();
    store.write(&cp(1)).unwrap();
    fs::write(
        dir.path().join("MANIFEST"),
        b"{\"format\":1,\"ids\":[2],\"crc32\":0}",
    )
    .unwrap();
    let err = store.latest_valid(FP).unwrap_err();
    assert!(matches!(err, CheckpointError::CorruptManifest { .. }));
    assert!(err.to_string().contains("MANIFEST"));
}

#[test]
fn every_single_byte_corruption_is_detected() {
    let c = cp(7).with_part("a", vec![1, 2, 3]);
    let bytes = format::encode(&c).unwrap();
    assert_eq!(format::decode(&bytes, Some(7)).unwrap(), c);
    for at in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[at] ^= mask;
            assert!(
                format::decode(&b, Some(7)).is_err(),
                "byte {at} ^ {mask:#x}"
            );
        }
    }
    for len in 0..bytes.len() {
        assert!(
            format::decode(&bytes[..len], Some(7)).is_err(),
            "truncated to {len}"
        );
    }
    assert!(format::decode(&bytes, Some(8)).is_err());
}

fn parts_strategy() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        (
            "[a-z0-9/]{0,24}",
            prop::collection::vec(any::<u8>(), 0..512),
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_parts_round_trip(parts in parts_strategy(), id in 1u64..u64::MAX, fp in ".{0,40}") {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 2).unwrap();
        let mut c = Checkpoint::new(id, fp.clone());
        for (n, d) in parts {
            c = c.with_part(n, d);
        }
        store.write(&c).unwrap();
        let r = store.latest_valid(&fp).unwrap().unwrap();
        prop_assert_eq!(r.checkpoint, c);
    }

    #[test]
    fn any_single_byte_corruption_is_never_returned(
        parts in parts_strategy(),
        pos in any::<prop::sample::Index>(),
        mask in 1u8..=255,
        truncate in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 3).unwrap();
        let old = cp(1);
        store.write(&old).unwrap();
        let mut c = Checkpoint::new(2, FP);
        for (n, d) in parts {
            c = c.with_part(n, d);
        }
        let info = store.write(&c).unwrap();
        let mut bytes = fs::read(&info.path).unwrap();
        let at = pos.index(bytes.len());
        if truncate {
            bytes.truncate(at);
        } else {
            bytes[at] ^= mask;
        }
        fs::write(&info.path, &bytes).unwrap();
        let r = store.latest_valid(FP).unwrap().unwrap();
        prop_assert_eq!(r.checkpoint.id, 1);
        prop_assert_eq!(&r.checkpoint.parts, &old.parts);
        prop_assert_eq!(r.skipped.len(), 1);
        prop_assert_eq!(r.skipped[0].0, 2);
    }
}
