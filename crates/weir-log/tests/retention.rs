//! Retention by size and by age drops whole sealed segments.

use std::time::{Duration, SystemTime};

use weir_log::{FsyncPolicy, Log, LogError, StreamConfig};

fn config(retention_bytes: Option<u64>, retention_age: Option<Duration>) -> StreamConfig {
    StreamConfig {
        partitions: 1,
        segment_bytes: 200,
        retention_bytes,
        retention_age,
        fsync: FsyncPolicy::Never,
    }
}

fn segment_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).unwrap().count()
}

#[test]
fn retention_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", config(Some(500), None)).unwrap();
    let p = stream.partition(0);
    // Each append is one 29 + 4 + 100 = 133 byte frame: one per segment.
    for i in 0..10u8 {
        p.append(&[&[i; 100]]).unwrap();
    }
    assert_eq!((p.segment_count(), p.size_bytes()), (10, 1330));
    p.enforce_retention(SystemTime::now()).unwrap();
    assert_eq!(
        p.segment_count(),
        3,
        "dropped until at most 500 bytes remain"
    );
    assert!(p.size_bytes() <= 500);
    assert_eq!(segment_files(p.dir()), 3);
    assert_eq!(p.first_offset(), 7);
    match p.read(0, 10) {
        Err(LogError::OffsetOutOfRange {
            requested: 0,
            first: 7,
        }) => {}
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        p.read(7, 10)
            .unwrap()
            .iter()
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        vec![7, 8, 9]
    );
    // Idempotent; appends continue; reopening keeps the first offset.
    p.enforce_retention(SystemTime::now()).unwrap();
    assert_eq!(p.first_offset(), 7);
    assert_eq!(p.append(&[b"more"]).unwrap(), 10..11);
    drop(stream);
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", config(Some(500), None)).unwrap();
    assert_eq!(
        (
            stream.partition(0).first_offset(),
            stream.partition(0).next_offset()
        ),
        (7, 11)
    );
}

#[test]
fn retention_never_drops_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log
        .stream("s", config(Some(1), Some(Duration::from_secs(1))))
        .unwrap();
    let p = stream.partition(0);
    p.append(&[&[1; 150]]).unwrap();
    p.append(&[&[2; 150]]).unwrap();
    p.enforce_retention(SystemTime::now() + Duration::from_secs(3600))
        .unwrap();
    assert_eq!((p.segment_count(), p.first_offset()), (1, 1));
    assert_eq!(p.read(1, 10).unwrap(), vec![(1, vec![2; 150])]);
}

#[test]
fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let hour = Duration::from_secs(3600);
    let stream = log.stream("s", config(None, Some(hour))).unwrap();
    let p = stream.partition(0);
    for i in 0..5u8 {
        p.append(&[&[i; 100]]).unwrap();
    }
    let now = SystemTime::now();
    p.enforce_retention(now).unwrap();
    assert_eq!(
        (p.segment_count(), p.first_offset()),
        (5, 0),
        "nothing is an hour old yet"
    );
    p.enforce_retention(now + hour + Duration::from_secs(1))
        .unwrap();
    assert_eq!((p.segment_count(), p.first_offset()), (1, 4));
    assert_eq!(segment_files(p.dir()), 1);
    assert!(matches!(
        p.read(3, 1),
        Err(LogError::OffsetOutOfRange {
            requested: 3,
            first: 4
        })
    ));
    drop(stream);
    drop(log);

    // After a reopen, sealed segments' age comes from the file's mtime.
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", config(None, Some(hour))).unwrap();
    let p = stream.partition(0);
    for i in 0..3u8 {
        p.append(&[&[i; 150]]).unwrap();
    }
    drop(stream);
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", config(None, Some(hour))).unwrap();
    let p = stream.partition(0);
    assert_eq!(
        (p.segment_count(), p.first_offset(), p.next_offset()),
        (4, 4, 8)
    );
    p.enforce_retention(SystemTime::now()).unwrap();
    assert_eq!(p.segment_count(), 4);
    p.enforce_retention(SystemTime::now() + 2 * hour).unwrap();
    assert_eq!((p.segment_count(), p.first_offset()), (1, 7));
    assert_eq!(p.read(7, 10).unwrap(), vec![(7, vec![2; 150])]);
}
