//! A real full disk: the log lives on a 1 MiB tmpfs. Appends fail with an
//! error once it is full, every acknowledged record survives (also across a
//! reopen), and appends work again once space is freed.
//!
//! Mounting needs root: the test is ignored in the plain test command and
//! runs with `--ignored`, as CI (root) does.

use weir_test_support::tmpfs::Tmpfs;

#[test]
#[ignore = "needs root: mounts a tmpfs to fill the disk"]
fn full_disk_keeps_acknowledged_records_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mnt = dir.path().join("small");
    let _tmpfs = Tmpfs::mount(&mnt, "1m");

    // A filler file we can delete later to free space.
    std::fs::write(mnt.join("filler"), vec![0u8; 256 * 1024]).expect("filler");

    let config = weir_log::StreamConfig {
        segment_bytes: 128 * 1024,
        fsync: weir_log::FsyncPolicy::Always,
        ..Default::default()
    };
    let record = vec![b'x'; 1000];
    let mut acknowledged = 0u64;
    let error;
    {
        let log = weir_log::Log::open(mnt.join("log")).expect("open log");
        let stream = log.stream("events", config.clone()).expect("stream");
        loop {
            match stream.partition(0).append(&[&record[..], &record[..]]) {
                Ok(range) => {
                    assert_eq!(range.start, acknowledged);
                    acknowledged = range.end;
                }
                Err(e) => {
                    error = e.to_string();
                    break;
                }
            }
            assert!(acknowledged < 10_000, "the 1 MiB tmpfs never filled up");
        }
    }
    assert!(acknowledged > 100, "only {acknowledged} records fitted");
    assert!(
        error.contains("No space left") || error.contains("space"),
        "{error}"
    );

    // Reopen on the still-full disk: every acknowledged record is there.
    let log = weir_log::Log::open(mnt.join("log")).expect("reopen log");
    let stream = log.stream("events", config.clone()).expect("stream");
    let p = stream.partition(0);
    assert_eq!(p.next_offset(), acknowledged);
    let mut from = 0;
    while from < acknowledged {
        let records = p.read(from, 500).expect("read back");
        for (offset, r) in &records {
            assert_eq!(*offset, from);
            assert_eq!(r, &record);
            from += 1;
        }
    }

    // Free space: appends continue at the next offset.
    std::fs::remove_file(mnt.join("filler")).expect("free space");
    let range = p
        .append(&[&record[..]])
        .expect("append after freeing space");
    assert_eq!(range, acknowledged..acknowledged + 1);
}
