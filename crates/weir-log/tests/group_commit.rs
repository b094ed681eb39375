//! Concurrent appenders with FsyncPolicy::Always share fsyncs.

use std::sync::Arc;

use weir_log::{FsyncPolicy, Log, StreamConfig};

#[test]
fn concurrent_appenders_get_disjoint_offsets_and_share_fsyncs() {
    const THREADS: u64 = 8;
    const APPENDS: u64 = 40;
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let config = StreamConfig {
        partitions: 1,
        segment_bytes: 4096, // rolls during the test too
        retention_bytes: None,
        retention_age: None,
        fsync: FsyncPolicy::Always,
    };
    let stream = log.stream("s", config).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let stream = stream.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let p = stream.partition(0);
                (0..APPENDS)
                    .map(|i| {
                        let a = format!("t{t}-a{i}");
                        let b = format!("t{t}-b{i}");
                        let range = p.append(&[a.as_bytes(), b.as_bytes()]).unwrap();
                        // Acknowledged means readable (and durable).
                        assert_eq!(p.read(range.start, 2).unwrap()[1].1, b.as_bytes());
                        (range, a, b)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    all.sort_by_key(|(r, _, _)| r.start);
    let mut next = 0;
    for (r, _, _) in &all {
        assert_eq!(r.start, next, "ranges are disjoint and leave no gaps");
        assert_eq!(r.end, r.start + 2);
        next = r.end;
    }
    let p = stream.partition(0);
    assert_eq!(p.next_offset(), THREADS * APPENDS * 2);
    let read = p.read(0, usize::MAX).unwrap();
    for (r, a, b) in &all {
        assert_eq!(read[r.start as usize], (r.start, a.clone().into_bytes()));
        assert_eq!(
            read[r.start as usize + 1],
            (r.start + 1, b.clone().into_bytes())
        );
    }
    let appends = THREADS * APPENDS;
    let fsyncs = p.fsync_count();
    println!(
        "group commit: {appends} appends from {THREADS} threads, {fsyncs} fsyncs, {} segments",
        p.segment_count()
    );
    assert!(fsyncs <= appends, "{fsyncs} fsyncs for {appends} appends");
}

#[test]
fn a_single_appender_fsyncs_every_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("s", StreamConfig::default()).unwrap();
    let p = stream.partition(0);
    for i in 0..5u8 {
        p.append(&[&[i]]).unwrap();
        assert_eq!(p.fsync_count(), u64::from(i) + 1);
    }
}
