//! Append and read throughput of one partition with 100-byte records, for
//! each fsync policy and a few batch sizes and appender thread counts.
//!
//! ```text
//! cargo run --release -p weir-log --example log_bench [-- DIR]
//! ```
//!
//! DIR (default: a temporary directory) decides which disk is measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_log::{FsyncPolicy, Log, StreamConfig};

const RECORD: usize = 100;
/// Each case appends for about this long (or until `MAX_RECORDS`).
const APPEND_TIME: Duration = Duration::from_secs(2);
const MAX_RECORDS: u64 = 5_000_000;

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let root = std::env::args()
        .nth(1)
        .map_or_else(|| tmp.path().to_path_buf(), Into::into);
    println!(
        "dir {}; {RECORD}-byte records, one partition, 64 MiB segments",
        root.display()
    );
    println!(
        "{:<14} {:>6} {:>8} {:>14} {:>10} {:>10} {:>14} {:>10}",
        "fsync", "batch", "threads", "append rec/s", "MB/s", "fsyncs", "read rec/s", "MB/s"
    );
    let policies = [
        ("always", FsyncPolicy::Always),
        (
            "interval 10ms",
            FsyncPolicy::Interval(Duration::from_millis(10)),
        ),
        ("never", FsyncPolicy::Never),
    ];
    let mut case = 0;
    for (name, fsync) in policies {
        for (batch, threads) in [(1, 1), (1, 8), (100, 1)] {
            case += 1;
            let log = Log::open(root.join(format!("case{case}"))).unwrap();
            let config = StreamConfig {
                fsync,
                ..StreamConfig::default()
            };
            let stream = log.stream("bench", config).unwrap();
            let start = Instant::now();
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let stream = Arc::clone(&stream);
                    std::thread::spawn(move || {
                        let record = [0x5au8; RECORD];
                        let batch_refs: Vec<&[u8]> = vec![&record[..]; batch];
                        let p = stream.partition(0);
                        let mut n = 0u64;
                        while start.elapsed() < APPEND_TIME && n < MAX_RECORDS / threads as u64 {
                            p.append(&batch_refs).unwrap();
                            n += batch as u64;
                        }
                        n
                    })
                })
                .collect();
            let appended: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
            let append_s = start.elapsed().as_secs_f64();
            let p = stream.partition(0);
            let fsyncs = p.fsync_count();

            let start = Instant::now();
            let (mut from, mut read) = (0u64, 0u64);
            loop {
                let v = p.read(from, 10_000).unwrap();
                let Some(last) = v.last() else { break };
                from = last.0 + 1;
                read += v.len() as u64;
            }
            let read_s = start.elapsed().as_secs_f64();
            assert_eq!(read, appended);
            let mb = |n: u64, s: f64| n as f64 * RECORD as f64 / s / 1e6;
            println!(
                "{:<14} {:>6} {:>8} {:>14.0} {:>10.1} {:>10} {:>14.0} {:>10.1}",
                name,
                batch,
                threads,
                appended as f64 / append_s,
                mb(appended, append_s),
                fsyncs,
                read as f64 / read_s,
                mb(read, read_s)
            );
        }
    }
}
