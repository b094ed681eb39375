//! Committed consumer positions: durability across reopen, lag, damaged
//! files, and API errors.

use std::path::PathBuf;

use weir_log::{FsyncPolicy, Log, LogError, StreamConfig};

fn config(partitions: u32) -> StreamConfig {
    StreamConfig {
        partitions,
        fsync: FsyncPolicy::Always,
        ..StreamConfig::default()
    }
}

fn consumer_file(log_dir: &std::path::Path, stream: &str, consumer: &str) -> PathBuf {
    log_dir.join(stream).join("consumers").join(consumer)
}

#[test]
fn commits_are_read_back_sorted_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let s = log.stream("clicks", config(3)).unwrap();
        assert_eq!(s.consumer_offsets().unwrap(), vec![]);
        s.commit_consumer("zeta", &[1, 2, 3]).unwrap();
        s.commit_consumer("alpha", &[0, 0, 0]).unwrap();
        s.commit_consumer("alpha", &[4, 5, 6]).unwrap(); // replaces
        assert_eq!(
            s.consumer_offsets().unwrap(),
            vec![
                ("alpha".to_string(), vec![4, 5, 6]),
                ("zeta".to_string(), vec![1, 2, 3]),
            ]
        );
    }
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(3)).unwrap();
    assert_eq!(
        s.consumer_offsets().unwrap(),
        vec![
            ("alpha".to_string(), vec![4, 5, 6]),
            ("zeta".to_string(), vec![1, 2, 3]),
        ]
    );
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("clicks").join("consumers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Consumers do not disturb the partitions.
    s.partition(0).append(&[b"x"]).unwrap();
    assert_eq!(
        s.partition(0).read(0, 10).unwrap(),
        vec![(0, b"x".to_vec())]
    );
}

#[test]
fn commits_from_another_log_instance_are_seen() {
    // Stands in for another process: a second `Log` over the same
    // directory, with its own in-memory state.
    let dir = tempfile::tempdir().unwrap();
    let ingest = Log::open(dir.path()).unwrap();
    let s = ingest.stream("clicks", config(1)).unwrap();
    s.partition(0).append(&[b"a", b"b", b"c"]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 0);

    let engine = Log::open(dir.path()).unwrap();
    let e = engine.stream("clicks", config(1)).unwrap();
    e.commit_consumer("pipeline", &[1]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 2);
    e.commit_consumer("pipeline", &[3]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 0);
    assert!(e.remove_consumer("pipeline").unwrap());
    assert!(!e.remove_consumer("pipeline").unwrap());
    assert_eq!(s.consumer_offsets().unwrap(), vec![]);
}

#[test]
fn lag_is_the_largest_total_behind_over_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(2)).unwrap();
    // No consumer: no lag, however much is in the stream.
    s.partition(0).append(&[&b"a"[..]; 10]).unwrap();
    s.partition(1).append(&[&b"b"[..]; 4]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 0);

    s.commit_consumer("fast", &[10, 4]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 0);
    s.commit_consumer("slow", &[3, 1]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 7 + 3);

    // Appends raise every consumer's lag.
    s.partition(0).append(&[&b"a"[..]; 5]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 12 + 3);
    s.partition(1).append(&[&b"b"[..]; 2]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 12 + 5);

    // The slow one catches up; the fast one is now the slowest.
    s.commit_consumer("slow", &[15, 6]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 5 + 2);

    // A commit past the end counts as caught up in that partition, not
    // as negative lag elsewhere.
    s.commit_consumer("fast", &[100, 0]).unwrap();
    s.commit_consumer("slow", &[15, 6]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 6);
}

#[test]
fn a_damaged_consumer_file_is_an_error_not_data() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(2)).unwrap();
    s.partition(0).append(&[&b"a"[..]; 10]).unwrap();
    s.commit_consumer("p", &[7, 0]).unwrap();
    let path = consumer_file(dir.path(), "clicks", "p");
    let good = std::fs::read(&path).unwrap();

    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("flipped offset byte", {
            let mut b = good.clone();
            b[16] ^= 0x04;
            b
        }),
        ("torn", good[..good.len() - 3].to_vec()),
        ("empty", Vec::new()),
        ("trailing garbage", {
            let mut b = good.clone();
            b.extend_from_slice(b"xx");
            b
        }),
        ("not ours", b"offsets: 7 0\n".to_vec()),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&path, &bytes).unwrap();
        for err in [
            s.consumer_offsets().map(|_| ()).unwrap_err(),
            s.consumer_lag().map(|_| ()).unwrap_err(),
        ] {
            match &err {
                LogError::CorruptConsumer { path: p, .. } => assert_eq!(p, &path, "{what}"),
                other => panic!("{what}: expected CorruptConsumer, got {other:?}"),
            }
            assert!(
                err.to_string().contains(&path.display().to_string()),
                "{what}: {err}"
            );
        }
    }
    // A new commit replaces the damaged file.
    s.commit_consumer("p", &[9, 0]).unwrap();
    assert_eq!(s.consumer_lag().unwrap(), 1);
}

#[test]
fn leftover_temporary_and_foreign_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(1)).unwrap();
    s.commit_consumer("p", &[0]).unwrap();
    let consumers = dir.path().join("clicks").join("consumers");
    // As left by a crash between creating and renaming a commit.
    std::fs::write(consumers.join(".p.123.0.tmp"), b"half").unwrap();
    std::fs::write(consumers.join("not a consumer"), b"?").unwrap();
    assert_eq!(
        s.consumer_offsets().unwrap(),
        vec![("p".to_string(), vec![0])]
    );
    // Reopening the stream copes with the extra directory.
    drop(s);
    drop(log);
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(1)).unwrap();
    assert_eq!(s.consumer_offsets().unwrap().len(), 1);
}

#[test]
fn bad_consumer_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(1)).unwrap();
    let long = "x".repeat(201);
    for name in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../escape",
        "a b",
        "ü",
        &long,
    ] {
        let err = s.commit_consumer(name, &[0]).unwrap_err();
        assert!(
            matches!(&err, LogError::InvalidConsumer { consumer, .. } if consumer == name),
            "{name:?}: {err:?}"
        );
        assert!(err.to_string().contains("A-Z a-z 0-9 . _ -"), "{err}");
        assert!(s.remove_consumer(name).is_err(), "{name:?}");
    }
    s.commit_consumer(&"x".repeat(200), &[0]).unwrap();
    s.commit_consumer("a.b_c-D9", &[0]).unwrap();
    assert_eq!(s.consumer_offsets().unwrap().len(), 2);
    // Nothing was written outside the consumers directory.
    assert!(!dir.path().join("escape").exists());
}

#[test]
fn wrong_partition_count_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(3)).unwrap();
    for offsets in [&[][..], &[1, 2][..], &[1, 2, 3, 4][..]] {
        let err = s.commit_consumer("p", offsets).unwrap_err();
        assert!(matches!(&err, LogError::InvalidConsumer { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "invalid consumer \"p\": {} offsets committed, but stream \"clicks\" has 3 partitions",
                offsets.len()
            )
        );
    }
    assert_eq!(s.consumer_offsets().unwrap(), vec![]);
}

#[test]
fn a_grown_stream_counts_new_partitions_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path()).unwrap();
        let s = log.stream("clicks", config(1)).unwrap();
        s.partition(0).append(&[&b"a"[..]; 4]).unwrap();
        s.commit_consumer("p", &[4]).unwrap();
    }
    let log = Log::open(dir.path()).unwrap();
    let s = log.stream("clicks", config(2)).unwrap();
    s.partition(1).append(&[&b"b"[..]; 3]).unwrap();
    assert_eq!(
        s.consumer_offsets().unwrap(),
        vec![("p".to_string(), vec![4])]
    );
    assert_eq!(s.consumer_lag().unwrap(), 3);
}
