//! The log source against real log directories: where it starts, how it
//! polls, where it ends, and what it publishes.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use weir_connect::{ConnectError, ConnectionState, Polled, Received, SourceConnector};
use weir_log::{Log, Stream, StreamConfig};

use crate::{open, LogSource, LogSourceConfig, ReadFrom};

const STREAM: &str = "events";
const CONSUMER: &str = "pipe";

/// One poll's records: `(partition, offset, payload)`.
type Records = Vec<(u32, u64, Vec<u8>)>;

fn payload(p: u32, i: u64) -> Vec<u8> {
    format!("p{p}-{i}").into_bytes()
}

fn config(dir: &Path, partitions: u32, follow: bool) -> LogSourceConfig<'_> {
    LogSourceConfig {
        dir,
        stream: STREAM,
        partitions,
        read: None,
        follow,
        consumer: CONSUMER,
    }
}

fn open_stream(log: &Log, partitions: u32) -> Arc<Stream> {
    log.stream(
        STREAM,
        StreamConfig {
            partitions,
            ..StreamConfig::default()
        },
    )
    .unwrap()
}

/// Appends records `from..to` (payloads `p<p>-<i>`) to partition `p`, one
/// record per batch.
fn append(stream: &Stream, p: u32, from: u64, to: u64) {
    for i in from..to {
        let range = stream.partition(p).append(&[&payload(p, i)]).unwrap();
        assert_eq!(range.start, i);
    }
}

/// A log at `dir` whose stream has `counts[p]` records in partition `p`.
fn filled(dir: &Path, counts: &[u64]) {
    let log = Log::open(dir).unwrap();
    let stream = open_stream(&log, counts.len() as u32);
    for (p, &n) in counts.iter().enumerate() {
        append(&stream, p as u32, 0, n);
    }
}

/// The error of an open that must fail.
fn refused(opened: Result<Box<dyn SourceConnector>, ConnectError>) -> ConnectError {
    match opened {
        Ok(_) => panic!("the source opened"),
        Err(e) => e,
    }
}

fn poll(source: &mut dyn SourceConnector, max: usize, wait: Duration) -> (Polled, Records) {
    let mut out = Received::default();
    let polled = source.poll(&mut out, max, wait).unwrap();
    let records = out
        .iter()
        .map(|(r, p)| (r.partition, r.offset, p.to_vec()))
        .collect();
    (polled, records)
}

/// Polls until `End`, returning each poll's records (empty polls left out).
fn read_to_end(source: &mut dyn SourceConnector, max: usize) -> Vec<Records> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut polls = Vec::new();
    loop {
        assert!(Instant::now() < deadline, "no End; got {polls:?}");
        match poll(source, max, Duration::from_millis(10)) {
            (Polled::End, records) => {
                assert!(records.is_empty());
                return polls;
            }
            (Polled::Records, records) => polls.push(records),
            (Polled::Idle, records) => assert!(records.is_empty()),
        }
    }
}

fn numbered(p: u32, offsets: std::ops::Range<u64>) -> Records {
    offsets.map(|i| (p, i, payload(p, i))).collect()
}

/// Runs `f` with tracing output captured; returns its result and the text.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer(Arc::default());
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (result, text)
}

#[test]
fn reads_partitions_round_robin_to_the_end_at_most_max_per_poll() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[5, 3, 0]);
    let mut source = open("in", &config(dir.path(), 3, false), None, false).unwrap();
    assert_eq!(source.partitions(), 3);
    assert_eq!(source.position(), vec![0, 0, 0]);
    assert_eq!(source.status().state(), ConnectionState::Connected);

    let polls = read_to_end(source.as_mut(), 2);
    assert_eq!(
        polls,
        vec![
            numbered(0, 0..2),
            numbered(1, 0..2),
            numbered(0, 2..4),
            numbered(1, 2..3),
            numbered(0, 4..5),
        ]
    );
    assert_eq!(source.position(), vec![5, 3, 0]);
    // At the end it stays at the end.
    assert_eq!(poll(source.as_mut(), 2, Duration::ZERO).0, Polled::End);
}

#[test]
fn without_follow_records_appended_after_open_are_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 1);
    append(&stream, 0, 0, 3);
    let mut source = open("in", &config(dir.path(), 1, false), None, false).unwrap();
    append(&stream, 0, 3, 6);
    assert_eq!(read_to_end(source.as_mut(), 100), vec![numbered(0, 0..3)]);
    assert_eq!(source.position(), vec![3]);
}

#[test]
fn follow_picks_up_appended_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 2);
    append(&stream, 1, 0, 2);
    let mut source = open("in", &config(dir.path(), 2, true), None, false).unwrap();
    assert_eq!(
        poll(source.as_mut(), 100, Duration::ZERO),
        (Polled::Records, numbered(1, 0..2))
    );
    // Nothing new: idle for the wait, not ended.
    let started = Instant::now();
    assert_eq!(
        poll(source.as_mut(), 100, Duration::from_millis(30)),
        (Polled::Idle, vec![])
    );
    assert!(started.elapsed() >= Duration::from_millis(30));

    // Appended while the poll waits: delivered within that poll.
    let writer = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            append(&stream, 0, 0, 3);
        })
    };
    let (polled, records) = poll(source.as_mut(), 100, Duration::from_secs(10));
    writer.join().unwrap();
    assert_eq!(polled, Polled::Records);
    assert!(!records.is_empty() && records.len() <= 3, "{records:?}");
    assert_eq!(records, numbered(0, 0..records.len() as u64));
    append(&stream, 1, 2, 4);
    let mut got: Records = records;
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.len() < 5 {
        assert!(Instant::now() < deadline, "got {got:?}");
        got.extend(poll(source.as_mut(), 100, Duration::from_millis(10)).1);
    }
    got.sort();
    let mut want = numbered(0, 0..3);
    want.extend(numbered(1, 2..4));
    assert_eq!(got, want);
    assert_eq!(source.position(), vec![3, 4]);
}

#[test]
fn drain_ends_a_following_source_at_the_end_it_had_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 2);
    append(&stream, 0, 0, 2);
    append(&stream, 1, 0, 1);
    let mut source = open("in", &config(dir.path(), 2, true), None, true).unwrap();
    append(&stream, 0, 2, 4);
    append(&stream, 1, 1, 3);
    assert_eq!(
        read_to_end(source.as_mut(), 100),
        vec![numbered(0, 0..2), numbered(1, 0..1)]
    );
    assert_eq!(source.position(), vec![2, 1]);
}

#[test]
fn starts_at_the_checkpointed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[6, 4]);
    let mut source = open("in", &config(dir.path(), 2, false), Some(&[3, 4]), false).unwrap();
    assert_eq!(source.position(), vec![3, 4]);
    assert_eq!(read_to_end(source.as_mut(), 100), vec![numbered(0, 3..6)]);
    assert_eq!(source.position(), vec![6, 4]);
}

#[test]
fn a_checkpoint_with_another_partition_count_names_both() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[1, 1]);
    let err = refused(open("in", &config(dir.path(), 2, true), Some(&[1]), false));
    match err {
        ConnectError::Checkpoint(m) => assert_eq!(
            m,
            "the checkpoint has positions for 1 partitions, stream events has 2"
        ),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn a_checkpoint_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[5, 2]);
    for follow in [false, true] {
        let err = refused(open(
            "in",
            &config(dir.path(), 2, follow),
            Some(&[5, 3]),
            false,
        ));
        match err {
            ConnectError::Checkpoint(m) => {
                assert!(m.contains("resumes partition 1 at offset 3"), "{m}");
                assert!(m.contains("ends at 2"), "{m}");
                assert!(m.contains("was the log directory replaced?"), "{m}");
            }
            other => panic!("expected a checkpoint error, got {other:?}"),
        }
    }
    // The same of a partition that holds nothing at all.
    let empty = tempfile::tempdir().unwrap();
    let err = refused(open(
        "in",
        &config(empty.path(), 1, true),
        Some(&[1]),
        false,
    ));
    assert!(matches!(err, ConnectError::Checkpoint(m) if m.contains("ends at 0")));
}

#[test]
fn a_checkpoint_behind_retention_warns_and_resumes_at_the_first_retained_record() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let log = Log::open(dir.path()).unwrap();
        // Tiny segments, a few records each; keep only about the newest.
        let stream = log
            .stream(
                STREAM,
                StreamConfig {
                    segment_bytes: 200,
                    retention_bytes: Some(400),
                    ..StreamConfig::default()
                },
            )
            .unwrap();
        append(&stream, 0, 0, 40);
        stream.enforce_retention(SystemTime::now()).unwrap();
        stream.partition(0).first_offset()
    };
    assert!(first > 2, "retention removed nothing");

    let (source, text) = logged(|| open("in", &config(dir.path(), 1, false), Some(&[2]), false));
    let mut source = source.unwrap();
    assert!(
        text.contains("WARN")
            && text.contains("removed by retention")
            && text.contains("checkpointed=2")
            && text.contains(&format!("first={first}")),
        "{text}"
    );
    assert_eq!(source.position(), vec![first]);
    assert_eq!(
        read_to_end(source.as_mut(), 1000),
        vec![numbered(0, first..40)]
    );

    // Without a checkpoint: from the first retained record to the end.
    let mut source = open("in", &config(dir.path(), 1, false), None, false).unwrap();
    assert_eq!(source.position(), vec![first]);
    assert_eq!(
        read_to_end(source.as_mut(), 1000),
        vec![numbered(0, first..40)]
    );
}

#[test]
fn records_removed_while_reading_are_skipped_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = log
        .stream(
            STREAM,
            StreamConfig {
                segment_bytes: 200,
                retention_bytes: Some(400),
                ..StreamConfig::default()
            },
        )
        .unwrap();
    append(&stream, 0, 0, 2);
    let mut source = open("in", &config(dir.path(), 1, true), None, false).unwrap();
    append(&stream, 0, 2, 40);
    stream.enforce_retention(SystemTime::now()).unwrap();
    let first = stream.partition(0).first_offset();
    assert!(first > 0, "retention removed nothing");

    let ((polled, records), text) = logged(|| poll(source.as_mut(), 1000, Duration::ZERO));
    assert_eq!(polled, Polled::Records);
    assert_eq!(records, numbered(0, first..40));
    assert!(
        text.contains("WARN") && text.contains("removed by retention before they were read"),
        "{text}"
    );
}

#[test]
fn the_checkpointed_position_is_published_as_the_consumer_position() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[3, 3]);
    let mut source = open("in", &config(dir.path(), 2, true), None, false).unwrap();
    let mut acknowledge = source.on_checkpoint();
    acknowledge(&[2, 1]);
    acknowledge(&[3, 2]);
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 2);
    assert_eq!(
        stream.consumer_offsets().unwrap(),
        vec![(CONSUMER.to_string(), vec![3, 2])]
    );
}

#[test]
fn a_share_of_the_partitions_is_read_and_counts_as_its_own_consumer() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[2, 2, 3, 1]);
    let share = LogSourceConfig {
        read: Some(2..4),
        ..config(dir.path(), 4, false)
    };
    let mut source = open("in", &share, None, false).unwrap();
    assert_eq!(source.partitions(), 2);
    // Only partitions 2 and 3, with their own numbers.
    let polls = read_to_end(source.as_mut(), 10);
    assert_eq!(polls, vec![numbered(2, 0..3), numbered(3, 0..1)]);
    assert_eq!(source.position(), vec![3, 1]);
    // Its position counts the partitions others read as caught up.
    let mut acknowledge = source.on_checkpoint();
    acknowledge(&[3, 1]);
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 4);
    assert_eq!(
        stream.consumer_offsets().unwrap(),
        vec![(CONSUMER.to_string(), vec![u64::MAX, u64::MAX, 3, 1])]
    );
    assert_eq!(stream.consumer_lag().unwrap(), 0);
    // A share past the stream's partitions is refused.
    let past = LogSourceConfig {
        read: Some(3..5),
        ..config(dir.path(), 4, false)
    };
    let e = refused(open("in", &past, None, false));
    assert!(e.to_string().contains("cannot read partitions 3..5"), "{e}");
}

#[test]
fn a_consumer_position_that_cannot_be_published_is_logged_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    filled(dir.path(), &[1]);
    let bad = LogSourceConfig {
        consumer: "not/a name",
        ..config(dir.path(), 1, true)
    };
    let mut source = open("in", &bad, None, false).unwrap();
    let mut acknowledge = source.on_checkpoint();
    let ((), text) = logged(|| acknowledge(&[1]));
    assert!(
        text.contains("WARN") && text.contains("cannot publish the consumer position"),
        "{text}"
    );
    // The source reads on.
    assert_eq!(
        poll(source.as_mut(), 10, Duration::ZERO),
        (Polled::Records, numbered(0, 0..1))
    );
}

#[test]
fn through_an_open_stream_it_reads_what_the_stream_shows() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path()).unwrap();
    let stream = open_stream(&log, 2);
    append(&stream, 0, 0, 2);
    append(&stream, 1, 0, 3);
    let mut source = LogSource::open(
        "in",
        &config(dir.path(), 2, true),
        ReadFrom::Stream(stream.clone()),
        Some(&[1, 0]),
        false,
    )
    .unwrap();
    let mut out = Received::default();
    assert!(source.read_available(&mut out, 2).unwrap());
    assert!(source.read_available(&mut out, 2).unwrap());
    assert!(source.read_available(&mut out, 2).unwrap());
    assert!(!source.read_available(&mut out, 2).unwrap());
    let got: Records = out
        .iter()
        .map(|(r, p)| (r.partition, r.offset, p.to_vec()))
        .collect();
    let mut want = numbered(0, 1..2);
    want.extend(numbered(1, 0..3));
    assert_eq!(got, want);
    append(&stream, 0, 2, 3);
    assert_eq!(
        poll(&mut source, 10, Duration::from_secs(10)),
        (Polled::Records, numbered(0, 2..3))
    );
    assert_eq!(source.position(), vec![3, 3]);

    // Past the end of the open stream.
    let err = LogSource::open(
        "in",
        &config(dir.path(), 2, true),
        ReadFrom::Stream(stream.clone()),
        Some(&[4, 0]),
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ConnectError::Checkpoint(m) if m.contains("ends at 3")));
    // A stream that is not the configured one.
    let err = LogSource::open(
        "in",
        &config(dir.path(), 1, true),
        ReadFrom::Stream(stream),
        None,
        false,
    )
    .unwrap_err();
    assert!(matches!(err, ConnectError::Config(m) if m.contains("which has 2")));
}
