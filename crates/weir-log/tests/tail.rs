//! A read-only reader following a partition that a writer appends to: it
//! sees every complete record in order, across segment rolls, never
//! returns or cuts an incomplete frame at the tail, and reports damage in
//! a sealed segment.

use std::io::Write;

use weir_log::{Log, StreamConfig, TailReader};

fn config() -> StreamConfig {
    StreamConfig {
        segment_bytes: 4096,
        ..Default::default()
    }
}

fn record(i: u64) -> Vec<u8> {
    format!("record-{i:06}-{}", "x".repeat((i % 50) as usize)).into_bytes()
}

fn read_all(r: &mut TailReader, from: &mut u64, out: &mut Vec<(u64, Vec<u8>)>) {
    loop {
        let got = r.read(*from, 37).expect("read");
        let Some(&(last, _)) = got.last() else { return };
        *from = last + 1;
        out.extend(got);
    }
}

#[test]
fn follows_appends_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path()).expect("open");
    let stream = log.stream("s", config()).expect("stream");
    let mut reader = TailReader::new(dir.path(), "s", 0);
    let mut from = 0;
    let mut seen = Vec::new();
    let mut written = 0u64;
    for round in 0..20u64 {
        let batch: Vec<Vec<u8>> = (written..written + round + 1).map(record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        stream.partition(0).append(&refs).expect("append");
        written += round + 1;
        read_all(&mut reader, &mut from, &mut seen);
        assert_eq!(seen.len() as u64, written);
        assert_eq!(reader.end_offset().expect("end"), written);
    }
    assert!(stream.partition(0).segment_count() > 1, "rolled");
    for (i, (off, rec)) in seen.iter().enumerate() {
        assert_eq!(*off, i as u64);
        assert_eq!(rec, &record(i as u64));
    }
    // A fresh reader starting in the middle.
    let mut r2 = TailReader::new(dir.path(), "s", 0);
    let got = r2.read(100, 5).expect("read");
    assert_eq!(got.first().map(|g| g.0), Some(100));
    assert_eq!(got.len(), 5);
}

#[test]
fn an_incomplete_tail_is_not_visible_and_not_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path()).expect("open");
        let stream = log.stream("s", StreamConfig::default()).expect("stream");
        let batch: Vec<Vec<u8>> = (0..10).map(record).collect();
        let refs: Vec<&[u8]> = batch.iter().map(Vec::as_slice).collect();
        stream.partition(0).append(&refs).expect("append");
    }
    let seg_dir = dir.path().join("s").join("0");
    let seg = std::fs::read_dir(&seg_dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.is_file())
        .expect("segment");
    // A frame being written: its first bytes only.
    let good_len = std::fs::metadata(&seg).expect("stat").len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .expect("open");
    f.write_all(&[0x57, 0x4c, 0x00, 0x01, 0x02]).expect("write");
    drop(f);
    let mut reader = TailReader::new(dir.path(), "s", 0);
    let got = reader.read(0, 100).expect("read");
    assert_eq!(got.len(), 10);
    assert!(reader.read(10, 100).expect("read").is_empty());
    assert_eq!(reader.end_offset().expect("end"), 10);
    assert_eq!(
        std::fs::metadata(&seg).expect("stat").len(),
        good_len + 5,
        "reader wrote"
    );
}

#[test]
fn damage_in_a_sealed_segment_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let log = Log::open(dir.path()).expect("open");
        let stream = log.stream("s", config()).expect("stream");
        for i in 0..200 {
            stream.partition(0).append(&[&record(i)]).expect("append");
        }
        assert!(stream.partition(0).segment_count() > 2);
    }
    let seg_dir = dir.path().join("s").join("0");
    let mut segs: Vec<_> = std::fs::read_dir(&seg_dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .collect();
    segs.sort();
    let mut bytes = std::fs::read(&segs[0]).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&segs[0], bytes).expect("write");
    let mut reader = TailReader::new(dir.path(), "s", 0);
    let mut from = 0;
    let err = loop {
        match reader.read(from, 10) {
            Ok(got) if got.is_empty() => panic!("damage not reported"),
            Ok(got) => from = got.last().expect("some").0 + 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, weir_log::LogError::Corrupt { .. }), "{err}");
}
