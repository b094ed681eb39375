//! Delta parts: chains of deltas on earlier checkpoints, restoring them,
//! retaining what the listed checkpoints' chains reach, refusing bases the
//! store cannot vouch for, and crash safety with chains.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use proptest::prelude::*;
use weir_checkpoint::{
    checkpoint_file_name, format, Checkpoint, CheckpointError, CheckpointStore, Fault, MANIFEST,
};

const FP: &str = "fraud-v1@abc";

type Chains = BTreeMap<String, Vec<(u64, Vec<u8>)>>;

fn data(id: u64, name: &str, delta: bool) -> Vec<u8> {
    format!("{}{id}:{name}", if delta { "delta " } else { "full " }).into_bytes()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn files(ids: &[u64]) -> Vec<String> {
    let mut v = vec![MANIFEST.to_string()];
    v.extend(ids.iter().map(|&id| checkpoint_file_name(id)));
    v
}

fn manifest(dir: &Path) -> String {
    fs::read_to_string(dir.join(MANIFEST)).unwrap()
}

fn chain(links: &[(u64, bool)], name: &str) -> Vec<(u64, Vec<u8>)> {
    links
        .iter()
        .map(|&(id, delta)| (id, data(id, name, delta)))
        .collect()
}

fn owned(links: Option<Vec<(u64, &[u8])>>) -> Vec<(u64, Vec<u8>)> {
    links
        .expect("part")
        .into_iter()
        .map(|(id, d)| (id, d.to_vec()))
        .collect()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    fs::write(path, bytes).unwrap();
}

/// Checkpoint `id` with every part in `full` full and every `(name, base)`
/// in `deltas` a delta.
fn cp(id: u64, full: &[&str], deltas: &[(&str, u64)]) -> Checkpoint {
    let mut c = Checkpoint::new(id, FP);
    for name in full {
        c = c.with_part(*name, data(id, name, false));
    }
    for (name, base) in deltas {
        c = c.with_delta_part(*name, *base, data(id, name, true));
    }
    c
}

#[test]
fn full_then_deltas_then_a_new_full_restores_each_parts_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 10).unwrap();
    let one = store.write(&cp(1, &["a", "b", "c"], &[])).unwrap();
    store.write(&cp(2, &["c"], &[("a", 1), ("b", 1)])).unwrap();
    let c3 = cp(3, &["b"], &[("a", 2), ("c", 2)]);
    let three = store.write(&c3).unwrap();

    // Format 1 without deltas, 2 with; the header names bases and reach.
    let v = |p: &Path| u32::from_le_bytes(fs::read(p).unwrap()[8..12].try_into().unwrap());
    assert_eq!(v(&one.path), format::FORMAT_VERSION);
    assert_eq!(v(&three.path), format::DELTA_FORMAT_VERSION);
    let raw = String::from_utf8_lossy(&fs::read(&three.path).unwrap()).into_owned();
    assert!(
        raw.contains(r#""base":2"#) && raw.contains(r#""reach":[1,2]"#),
        "{raw}"
    );
    let raw_one = String::from_utf8_lossy(&fs::read(&one.path).unwrap()).into_owned();
    assert!(
        !raw_one.contains("base") && !raw_one.contains("reach"),
        "{raw_one}"
    );

    let reopened = CheckpointStore::open(dir.path(), 10).unwrap();
    for store in [&store, &reopened] {
        let r = store.latest_valid(FP).unwrap().unwrap();
        assert_eq!(r.checkpoint, c3);
        assert!(r.skipped.is_empty());
        assert_eq!(r.checkpoint.base_of("a"), Some(2));
        assert_eq!(r.checkpoint.base_of("b"), None);
        let a = chain(&[(1, false), (2, true), (3, true)], "a");
        let b = chain(&[(3, false)], "b");
        let c = chain(&[(2, false), (3, true)], "c");
        assert_eq!(owned(r.chain("a")), a);
        assert_eq!(owned(r.chain("b")), b);
        assert_eq!(owned(r.chain("c")), c);
        assert!(r.chain("d").is_none());
        assert_eq!(
            r.base_links.keys().collect::<Vec<_>>(),
            vec!["a", "c"],
            "full parts have no base links"
        );
        assert_eq!(r.base_links["a"], a[..2].to_vec());
        let expected: Chains = [("a".into(), a), ("b".into(), b), ("c".into(), c)].into();
        assert_eq!(r.into_chains(), expected);
    }
    assert_eq!(names(dir.path()), files(&[1, 2, 3]));
}

#[test]
fn a_store_without_deltas_writes_format_1_and_retains_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    for id in 1..=4 {
        store.write(&cp(id, &["a", "b"], &[])).unwrap();
    }
    let m = manifest(dir.path());
    assert!(m.starts_with(r#"{"format":1,"ids":[3,4],"crc32":"#), "{m}");
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert!(r.base_links.is_empty());
    assert_eq!(owned(r.chain("a")), chain(&[(4, false)], "a"));
    assert_eq!(names(dir.path()), files(&[3, 4]));
}

#[test]
fn keep_two_retains_a_chain_of_five_until_a_new_full_supersedes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    store.write(&cp(1, &["state", "source"], &[])).unwrap();
    for id in 2..=5 {
        store
            .write(&cp(id, &["source"], &[("state", id - 1)]))
            .unwrap();
        // Every base of the chain stays, whatever keep says.
        let ids: Vec<u64> = (1..=id).collect();
        assert_eq!(names(dir.path()), files(&ids), "after {id}");
        let r = store.latest_valid(FP).unwrap().unwrap();
        let links: Vec<(u64, bool)> = (1..=id).map(|i| (i, i > 1)).collect();
        assert_eq!(owned(r.chain("state")), chain(&links, "state"));
        assert_eq!(owned(r.chain("source")), chain(&[(id, false)], "source"));
    }
    let listed: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
    assert_eq!(listed, vec![4, 5]);
    let m = manifest(dir.path());
    assert!(
        m.starts_with(r#"{"format":2,"ids":[4,5],"retained":[1,2,3],"crc32":"#),
        "{m}"
    );

    // A reopened store (nothing remembered) keeps the chain too, and its
    // open does not prune what the manifest retains.
    drop(store);
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4, 5]));

    // A new full: 5 is still listed and needs 1..4.
    store.write(&cp(6, &["state", "source"], &[])).unwrap();
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4, 5, 6]));
    assert!(manifest(dir.path()).contains(r#""retained":[1,2,3,4]"#));
    // 5 leaves the list: nothing needs the old chain any more.
    store.write(&cp(7, &["source"], &[("state", 6)])).unwrap();
    assert_eq!(names(dir.path()), files(&[6, 7]));
    let m = manifest(dir.path());
    assert!(m.starts_with(r#"{"format":1,"ids":[6,7],"crc32":"#), "{m}");
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(
        owned(r.chain("state")),
        chain(&[(6, false), (7, true)], "state")
    );
}

#[test]
fn a_corrupt_base_skips_the_checkpoints_whose_chains_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 5).unwrap();
    store.write(&cp(1, &["a", "b"], &[])).unwrap();
    let two = store.write(&cp(2, &["a", "b"], &[])).unwrap();
    store.write(&cp(3, &["b"], &[("a", 2)])).unwrap();
    store.write(&cp(4, &[], &[("a", 3), ("b", 3)])).unwrap();
    flip_byte(&two.path, two.size_bytes as usize / 2);

    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 1);
    assert_eq!(owned(r.chain("a")), chain(&[(1, false)], "a"));
    let ids: Vec<u64> = r.skipped.iter().map(|s| s.0).collect();
    assert_eq!(ids, vec![4, 3, 2]);
    assert_eq!(
        r.skipped[0].1,
        "part \"a\" needs base checkpoint 2 (through checkpoint 3), which cannot be used: \
         whole-checkpoint checksum mismatch"
    );
    assert_eq!(
        r.skipped[1].1,
        "part \"a\" needs base checkpoint 2, which cannot be used: \
         whole-checkpoint checksum mismatch"
    );
    assert_eq!(r.skipped[2].1, "whole-checkpoint checksum mismatch");
    // Nothing deleted.
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4]));

    // A missing base, and no older checkpoint to fall back on: none.
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 5).unwrap();
    let one = store.write(&cp(1, &["a"], &[])).unwrap();
    store.write(&cp(2, &[], &[("a", 1)])).unwrap();
    store.write(&cp(3, &[], &[("a", 2)])).unwrap();
    fs::remove_file(&one.path).unwrap();
    let store = CheckpointStore::open(dir.path(), 5).unwrap();
    assert!(store.latest_valid(FP).unwrap().is_none());
    // The files the missing one's chains need are still there.
    assert_eq!(names(dir.path()), files(&[2, 3]));
}

#[test]
fn a_corrupt_retained_base_is_reported_by_the_listed_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 1).unwrap();
    let one = store.write(&cp(1, &["a"], &[])).unwrap();
    store.write(&cp(2, &[], &[("a", 1)])).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&one.path).unwrap();
    f.set_len(one.size_bytes - 3).unwrap();
    drop(f);
    let r = CheckpointStore::open(dir.path(), 1)
        .unwrap()
        .latest_valid(FP)
        .unwrap();
    assert!(r.is_none());
    // No listed checkpoint is left to restore, but the next write works
    // (in full) and prunes both.
    let store = CheckpointStore::open(dir.path(), 1).unwrap();
    store.write(&cp(3, &["a"], &[])).unwrap();
    assert_eq!(names(dir.path()), files(&[3]));
}

#[test]
fn writes_refuse_bases_the_store_cannot_vouch_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    store.write(&cp(1, &["a", "b"], &[])).unwrap();
    store.write(&cp(2, &["a", "b"], &[])).unwrap();
    store.write(&cp(3, &["a"], &[("b", 2)])).unwrap();
    let before = names(dir.path());
    assert_eq!(before, files(&[2, 3]));

    let refuse = |c: Checkpoint, base: u64, reason: &str| {
        let err = store.write(&c).unwrap_err();
        match &err {
            CheckpointError::InvalidBase {
                id,
                part,
                base: b,
                reason: r,
                ..
            } => {
                assert_eq!((*id, part.as_str(), *b), (c.id, "a", base), "{err}");
                assert!(r.contains(reason), "{err}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("part \"a\" is a delta on checkpoint {base}")),
            "{msg}"
        );
        assert_eq!(names(dir.path()), before, "nothing written: {msg}");
    };
    // Not older.
    refuse(cp(4, &[], &[("a", 4)]), 4, "is not older");
    refuse(cp(4, &[], &[("a", 9)]), 9, "is not older");
    // Pruned, or never committed.
    refuse(
        cp(4, &[], &[("a", 1)]),
        1,
        "no longer keeps or never committed",
    );
    refuse(
        cp(4, &[], &[("a", 0)]),
        0,
        "no longer keeps or never committed",
    );
    // Without the part.
    let store_c = Checkpoint::new(4, FP).with_delta_part("zz", 3, vec![1]);
    match store.write(&store_c).unwrap_err() {
        CheckpointError::InvalidBase { reason, .. } => {
            assert_eq!(reason, "does not hold that part")
        }
        other => panic!("unexpected {other:?}"),
    }
    // Another pipeline version wrote the base.
    let other = Checkpoint::new(4, "fraud-v2@def").with_delta_part("a", 3, vec![1]);
    match store.write(&other).unwrap_err() {
        CheckpointError::InvalidBase { reason, .. } => {
            assert!(reason.contains("fingerprint \"fraud-v1@abc\""), "{reason}")
        }
        other => panic!("unexpected {other:?}"),
    }
    // A base whose file vanished.
    fs::remove_file(dir.path().join(checkpoint_file_name(2))).unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    match store.write(&cp(4, &[], &[("b", 3)])).unwrap_err() {
        CheckpointError::InvalidBase { reason, base, .. } => {
            assert_eq!(base, 3);
            assert_eq!(
                reason,
                "chains to checkpoint 2, which cannot be read: file is missing"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // A name in `bases` without data is refused too.
    let mut broken = cp(4, &["a"], &[]);
    broken.bases.insert("nope".into(), 3);
    assert!(matches!(
        store.write(&broken).unwrap_err(),
        CheckpointError::InvalidBase { .. }
    ));
    // The store keeps working.
    store.write(&cp(4, &["a", "b"], &[])).unwrap();
}

#[test]
fn a_delta_on_a_retained_checkpoint_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 1).unwrap();
    store.write(&cp(1, &["a", "b"], &[])).unwrap();
    store.write(&cp(2, &["b"], &[("a", 1)])).unwrap();
    // 1 is no longer listed but retained (2's chain for "a" needs it).
    assert!(manifest(dir.path()).contains(r#""ids":[2],"retained":[1]"#));
    store.write(&cp(3, &[], &[("a", 2), ("b", 1)])).unwrap();
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(
        owned(r.chain("a")),
        chain(&[(1, false), (2, true), (3, true)], "a")
    );
    assert_eq!(owned(r.chain("b")), chain(&[(1, false), (3, true)], "b"));
    assert_eq!(names(dir.path()), files(&[1, 2, 3]));
}

#[test]
fn crashes_with_chains_leave_complete_chains() {
    for fault in [
        Fault::DiskFullAfter(40),
        Fault::CrashMidFile(30),
        Fault::CrashBeforeRename,
        Fault::CrashBeforeManifest,
        Fault::CrashMidManifest,
        Fault::CrashBeforePrune,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), 1).unwrap();
        store.write(&cp(1, &["a", "b"], &[])).unwrap();
        store.write(&cp(2, &["b"], &[("a", 1)])).unwrap();
        // 3: a new full "a" (1 no longer needed once 3 commits), "b" on 2.
        let err = store
            .write_with_fault(&cp(3, &["a"], &[("b", 2)]), fault)
            .unwrap_err();
        let committed = fault == Fault::CrashBeforePrune;
        drop(store);
        let store = CheckpointStore::open(dir.path(), 1).unwrap();
        let r = store.latest_valid(FP).unwrap().unwrap();
        assert!(r.skipped.is_empty(), "{fault:?}: {err}");
        if committed {
            assert_eq!(r.checkpoint.id, 3);
            assert_eq!(owned(r.chain("a")), chain(&[(3, false)], "a"));
            assert_eq!(owned(r.chain("b")), chain(&[(2, false), (3, true)], "b"));
            // The interrupted prune finished at open: 1 is gone, 2 stays.
            assert_eq!(names(dir.path()), files(&[2, 3]), "{fault:?}");
        } else {
            assert_eq!(r.checkpoint.id, 2, "{fault:?}");
            assert_eq!(owned(r.chain("a")), chain(&[(1, false), (2, true)], "a"));
            let mut expected = files(&[1, 2]);
            if matches!(fault, Fault::CrashBeforeManifest | Fault::CrashMidManifest) {
                expected.push(checkpoint_file_name(3));
            }
            assert_eq!(names(dir.path()), expected, "{fault:?}");
        }
        // The store goes on with a delta on what it restored.
        let next = store.next_id().unwrap();
        let restored = r.checkpoint.id;
        store
            .write(&cp(next, &[], &[("a", restored), ("b", restored)]))
            .unwrap();
        let r = store.latest_valid(FP).unwrap().unwrap();
        assert_eq!(r.checkpoint.id, next);
        let a = owned(r.chain("a"));
        assert_eq!(a.last().unwrap().0, next);
        assert!(!a[0].1.starts_with(b"delta"), "{fault:?}: {a:?}");
    }
}

#[test]
fn a_lost_manifest_is_rebuilt_retaining_the_chains() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    store.write(&cp(1, &["a"], &[])).unwrap();
    for id in 2..=4 {
        store.write(&cp(id, &[], &[("a", id - 1)])).unwrap();
    }
    drop(store);
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    assert_eq!(store.manifest_recovery().unwrap().listed, vec![1, 2, 3, 4]);
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4]));
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 4);
    assert_eq!(r.chain("a").unwrap().len(), 4);
    // The next write lists 4 and 5 and retains the rest of the chain.
    store.write(&cp(5, &[], &[("a", 4)])).unwrap();
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4, 5]));
    assert!(manifest(dir.path()).contains(r#""ids":[4,5],"retained":[1,2,3]"#));

    // With a damaged middle file, the rebuilt manifest keeps it too.
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    flip_byte(&dir.path().join(checkpoint_file_name(2)), 40);
    let store = CheckpointStore::open(dir.path(), 2).unwrap();
    let rec = store.manifest_recovery().unwrap();
    assert_eq!(rec.listed, vec![1, 3, 4, 5]);
    assert_eq!(rec.unverified.len(), 1);
    assert_eq!(names(dir.path()), files(&[1, 2, 3, 4, 5]));
    let r = store.latest_valid(FP).unwrap().unwrap();
    assert_eq!(r.checkpoint.id, 1);
    assert_eq!(
        r.skipped.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![5, 4, 3, 2]
    );
    assert!(r.skipped[2].1.contains("needs base checkpoint 2"));
}

#[test]
fn every_single_byte_corruption_of_a_delta_checkpoint_is_detected() {
    let c = cp(7, &["x"], &[("a", 5), ("b", 3)]);
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
        assert!(format::decode(&bytes[..len], Some(7)).is_err());
    }
    // A base not older is refused by the format too.
    assert!(format::encode(&cp(3, &[], &[("a", 3)])).is_err());
}

/// One step of the property test: for each part, full or a delta on the
/// previous committed checkpoint; a fault or none; reopen afterwards.
#[derive(Debug, Clone)]
struct Step {
    delta: [bool; 3],
    fault: Option<Fault>,
    reopen: bool,
    size: usize,
}

fn fault_strategy() -> impl Strategy<Value = Option<Fault>> {
    prop_oneof![
        6 => Just(None),
        1 => (0usize..200).prop_map(|n| Some(Fault::DiskFullAfter(n))),
        1 => (0usize..200).prop_map(|n| Some(Fault::CrashMidFile(n))),
        1 => Just(Some(Fault::CrashBeforeRename)),
        1 => Just(Some(Fault::CrashBeforeManifest)),
        1 => Just(Some(Fault::CrashMidManifest)),
        1 => Just(Some(Fault::CrashBeforePrune)),
    ]
}

fn step_strategy() -> impl Strategy<Value = Step> {
    (
        [any::<bool>(), any::<bool>(), any::<bool>()],
        fault_strategy(),
        prop::bool::weighted(0.2),
        0usize..64,
    )
        .prop_map(|(delta, fault, reopen, size)| Step {
            delta,
            fault,
            reopen,
            size,
        })
}

const PARTS: [&str; 3] = ["source", "state/w/0", "state/w/1"];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_chains_restore_as_the_model_says(
        keep in 1usize..4,
        steps in prop::collection::vec(step_strategy(), 1..14),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CheckpointStore::open(dir.path(), keep).unwrap();
        // The model: every committed checkpoint's chains, oldest first.
        // The first checkpoint commits cleanly: a crash before the very
        // first manifest leaves a file that `open` takes for a store whose
        // manifest was lost, and lists.
        let first = cp(1, &PARTS, &[]);
        store.write(&first).unwrap();
        let mut committed: Vec<(u64, Chains)> = vec![(1, PARTS
            .iter()
            .map(|n| (n.to_string(), vec![(1, data(1, n, false))]))
            .collect())];
        for step in steps {
            let id = store.next_id().unwrap();
            let prev = committed.last().cloned();
            let mut c = Checkpoint::new(id, FP);
            let mut chains = Chains::new();
            for (i, name) in PARTS.iter().enumerate() {
                let mut bytes = data(id, name, step.delta[i] && prev.is_some());
                bytes.resize(bytes.len() + step.size * (i + 1), i as u8);
                match &prev {
                    Some((base, prev_chains)) if step.delta[i] => {
                        c = c.with_delta_part(*name, *base, bytes.clone());
                        let mut ch = prev_chains[*name].clone();
                        ch.push((id, bytes));
                        chains.insert(name.to_string(), ch);
                    }
                    _ => {
                        c = c.with_part(*name, bytes.clone());
                        chains.insert(name.to_string(), vec![(id, bytes)]);
                    }
                }
            }
            let result = match step.fault {
                Some(f) => store.write_with_fault(&c, f),
                None => store.write(&c),
            };
            let crashed = match result {
                Ok(_) => {
                    committed.push((id, chains));
                    false
                }
                Err(CheckpointError::SimulatedCrash(Fault::CrashBeforePrune)) => {
                    committed.push((id, chains));
                    true
                }
                Err(CheckpointError::SimulatedCrash(_)) => true,
                Err(CheckpointError::Io { .. }) => {
                    prop_assert!(matches!(step.fault, Some(Fault::DiskFullAfter(_))));
                    false
                }
                Err(e) => panic!("unexpected {e:?}"),
            };
            if crashed || step.reopen {
                drop(store);
                store = CheckpointStore::open(dir.path(), keep).unwrap();
            }

            // Listed: the last `keep` committed; restored: the newest, with
            // the model's chains.
            let listed: Vec<u64> = committed
                .iter()
                .rev()
                .take(keep)
                .rev()
                .map(|(id, _)| *id)
                .collect();
            let got: Vec<u64> = store.list().unwrap().iter().map(|i| i.id).collect();
            prop_assert_eq!(&got, &listed);
            let restored = store.latest_valid(FP).unwrap();
            match committed.last() {
                None => prop_assert!(restored.is_none()),
                Some((id, chains)) => {
                    let r = restored.unwrap();
                    prop_assert!(r.skipped.is_empty(), "{:?}", r.skipped);
                    prop_assert_eq!(r.checkpoint.id, *id);
                    prop_assert_eq!(&r.into_chains(), chains);
                }
            }
            // Every file a listed checkpoint reaches is there; after a
            // clean write, nothing else older is.
            let present = names(dir.path());
            let mut needed = std::collections::BTreeSet::new();
            for (id, chains) in committed.iter().filter(|(id, _)| listed.contains(id)) {
                needed.insert(*id);
                for ch in chains.values() {
                    needed.extend(ch.iter().map(|l| l.0));
                }
            }
            for id in &needed {
                prop_assert!(
                    present.contains(&checkpoint_file_name(*id)),
                    "{} missing: {:?}", id, present
                );
            }
            if step.fault.is_none() {
                let ids: Vec<u64> = needed.into_iter().collect();
                prop_assert_eq!(&present, &files(&ids));
            }
        }
    }
}
