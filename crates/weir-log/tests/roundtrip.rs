//! Appends and reads across segment rolls, reopening, and API errors.

use std::time::Duration;

use weir_log::{FsyncPolicy, Log, LogError, StreamConfig};

fn config(fsync: FsyncPolicy, segment_bytes: u64) -> StreamConfig {
    StreamConfig {
        partitions: 2,
        segment_bytes,
        retention_bytes: None,
        retention_age: None,
        fsync,
    }
}

/// Record `i` of the test data: a few bytes that encode `i` and vary in length.
fn record(i: u64) -> Vec<u8> {
    let mut r = format!("record-{i}-").into_bytes();
    r.resize(r.len() + (i as usize * 7) % 23, b'a' + (i % 26) as u8);
    r
}

#[test]
fn round_trip_across_segment_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::Interval(Duration::from_millis(5)),
    ] {
        let log = Log::open(dir.path().join(format!("{fsync:?}"))).unwrap();
        let stream = log.stream("events", config(fsync, 256)).unwrap();
        let p = stream.partition(1);
        assert_eq!((p.first_offset(), p.next_offset()), (0, 0));
        expected.clear();
        let mut i = 0u64;
        for batch in 0..60u64 {
            let n = 1 + batch % 5;
            let recs: Vec<Vec<u8>> = (i..i + n).map(record).collect();
            let refs: Vec<&[u8]> = recs.iter().map(Vec::as_slice).collect();
            assert_eq!(p.append(&refs).unwrap(), i..i + n, "offsets are contiguous");
            expected.extend(recs.into_iter().enumerate().map(|(k, r)| (i + k as u64, r)));
            i += n;
        }
        assert!(
            p.segment_count() > 5,
            "segments rolled: {}",
            p.segment_count()
        );
        assert_eq!(
            stream.partition(0).next_offset(),
            0,
            "partitions are independent"
        );
        // Read all, then from every offset (most inside a batch) with various limits.
        assert_eq!(p.read(0, usize::MAX).unwrap(), expected);
        for from in 0..i {
            for max in [1, 3, 17, 1000] {
                let got = p.read(from, max).unwrap();
                let want: Vec<_> = expected[from as usize..]
                    .iter()
                    .take(max)
                    .cloned()
                    .collect();
                assert_eq!(got, want, "read({from}, {max})");
            }
        }
        assert_eq!(p.read(i, 10).unwrap(), vec![]);
        assert!(
            matches!(p.read(i + 1, 10), Err(LogError::OffsetBeyondEnd { requested, next }) if requested == i + 1 && next == i)
        );
        let segments = p.segment_count();
        drop(stream);
        drop(log);

        // Reopen: same contents, appends continue at the right offset.
        let log = Log::open(dir.path().join(format!("{fsync:?}"))).unwrap();
        let stream = log.stream("events", config(fsync, 256)).unwrap();
        let p = stream.partition(1);
        assert_eq!(p.next_offset(), i);
        assert_eq!(p.segment_count(), segments);
        // Reading a reopened log scans (and indexes) sealed segments lazily.
        for from in [i / 2, 0, i - 1, 3] {
            assert_eq!(
                p.read(from, 5).unwrap(),
                expected[from as usize..]
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
            );
        }
        assert_eq!(p.append(&[&record(i), &record(i + 1)]).unwrap(), i..i + 2);
        expected.push((i, record(i)));
        expected.push((i + 1, record(i + 1)));
        assert_eq!(p.read(0, usize::MAX).unwrap(), expected);
        assert_eq!(
            p.read(i - 2, 3).unwrap(),
            expected[i as usize - 2..i as usize + 1].to_vec()
        );
    }
}

#[test]
fn segment_files_are_named_by_base_offset() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", config(FsyncPolicy::Never, 100)).unwrap();
    let p = stream.partition(0);
    for _ in 0..3 {
        p.append(&[&[7u8; 40], &[8u8; 40]]).unwrap(); // one frame per segment
    }
    let mut names: Vec<String> = std::fs::read_dir(dir.path().join("s/0"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "00000000000000000000.log",
            "00000000000000000002.log",
            "00000000000000000004.log"
        ]
    );
    // Frame = 29-byte header + (4 + 40) * 2.
    assert_eq!(
        std::fs::metadata(dir.path().join("s/0").join(&names[0]))
            .unwrap()
            .len(),
        29 + 88
    );
}

#[test]
fn empty_and_oversized_batches() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log
        .stream("s", config(FsyncPolicy::Always, 1 << 20))
        .unwrap();
    let p = stream.partition(0);
    assert_eq!(p.append(&[]).unwrap(), 0..0);
    assert_eq!(p.append(&[b""]).unwrap(), 0..1, "empty records are fine");
    let big = vec![0u8; weir_log::MAX_BATCH_BYTES - 4];
    let err = p.append(&[&big, b"x"]).unwrap_err();
    assert!(
        matches!(err, LogError::BatchTooLarge { records: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("67108864"), "{err}");
    assert_eq!(p.next_offset(), 1);
    assert_eq!(p.read(0, 10).unwrap(), vec![(0, vec![])]);
}

#[test]
fn stream_names_and_configs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    for bad in ["", ".hidden", "a/b", "..", "sp ace"] {
        assert!(
            matches!(
                log.stream(bad, StreamConfig::default()),
                Err(LogError::InvalidConfig { .. })
            ),
            "{bad:?}"
        );
    }
    let bad = StreamConfig {
        partitions: 0,
        ..StreamConfig::default()
    };
    assert!(log.stream("ok", bad).is_err());
    let a = log.stream("ok", config(FsyncPolicy::Never, 1000)).unwrap();
    let b = log.stream("ok", config(FsyncPolicy::Never, 1000)).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b), "the same stream is shared");
    assert!(log.stream("ok", config(FsyncPolicy::Always, 1000)).is_err());
    drop((a, b));
    drop(log);
    // Partitions may grow between opens but not shrink.
    let log = Log::open(dir.path()).unwrap();
    let fewer = StreamConfig {
        partitions: 1,
        ..config(FsyncPolicy::Never, 1000)
    };
    assert!(matches!(
        log.stream("ok", fewer),
        Err(LogError::InvalidConfig { .. })
    ));
    let more = StreamConfig {
        partitions: 3,
        ..config(FsyncPolicy::Never, 1000)
    };
    assert_eq!(log.stream("ok", more).unwrap().partitions().len(), 3);
}

#[test]
fn interval_policy_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log
        .stream(
            "s",
            config(FsyncPolicy::Interval(Duration::from_millis(20)), 1 << 20),
        )
        .unwrap();
    let p = stream.partition(0);
    for _ in 0..10 {
        p.append(&[b"x"]).unwrap();
    }
    assert_eq!(p.fsync_count(), 0, "appends do not wait for fsync");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while p.fsync_count() == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(p.fsync_count() >= 1, "the background thread fsynced");
    let n = p.fsync_count();
    std::thread::sleep(Duration::from_millis(80));
    assert_eq!(p.fsync_count(), n, "a clean partition is not fsynced again");
}
