//! Readiness: whether a run can be relied on yet, and why not.
//!
//! `/readyz` answers from [`Health`]: the run has restored its checkpoint
//! and opened everything, its source is connected, and its consumer lag
//! (log sources, through [`SourceLag`]) is within `--max-lag`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use weir_connect::{ConnectionState, ConnectorStatus};

/// Whether the run is ready to be relied on: recovered from its
/// checkpoint, its source connected, its lag within the bound.
pub struct Health {
    max_lag: Option<u64>,
    recovered: AtomicBool,
    sources: Mutex<Vec<(String, Arc<ConnectorStatus>)>>,
    lag: Mutex<Option<Arc<SourceLag>>>,
}

impl Health {
    /// Not ready until the run says it has recovered.
    pub fn new(max_lag: Option<u64>) -> Health {
        Health {
            max_lag,
            recovered: AtomicBool::new(false),
            sources: Mutex::new(Vec::new()),
            lag: Mutex::new(None),
        }
    }

    /// Ready, or the reasons why not (one line each).
    pub fn readiness(&self) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        if !self.recovered.load(Ordering::Acquire) {
            why.push("recovering".to_string());
        }
        for (name, status) in self
            .sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let state = status.state();
            if state != ConnectionState::Connected {
                why.push(format!("source {name} is {}", state.as_str()));
            }
        }
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(max), Some(lag)) = (self.max_lag, lag.and_then(|l| l.records())) {
            if lag > max {
                why.push(format!(
                    "consumer lag {lag} records is over the bound {max}"
                ));
            }
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }

    /// The consumer lag of the source, in records, where it is known.
    pub fn lag(&self) -> Option<u64> {
        let lag = self.lag.lock().unwrap_or_else(|p| p.into_inner()).clone();
        lag.and_then(|l| l.records())
    }

    /// Marks recovery complete: state restored, connections open.
    pub fn set_recovered(&self) {
        self.recovered.store(true, Ordering::Release);
    }

    /// Makes a source's connection part of readiness.
    pub fn watch_source(&self, name: &str, status: Arc<ConnectorStatus>) {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), status));
    }

    pub(crate) fn watch_lag(&self, lag: Arc<SourceLag>) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = Some(lag);
    }
}

/// How far a log source is behind its stream: the reader publishes its
/// next offsets, a scrape reads the ends of the partitions it reads (a
/// task's own partition only: the others are other tasks' lag).
pub(crate) struct SourceLag {
    started: AtomicBool,
    /// The next offset of each partition read, in the order of `readers`
    /// (the source's positions: one per partition it reads).
    positions: Vec<AtomicU64>,
    readers: Mutex<Vec<weir_log::TailReader>>,
}

impl SourceLag {
    /// The lag of a source reading partitions `read` of `stream`.
    pub(crate) fn new(dir: &Path, stream: &str, read: std::ops::Range<u32>) -> SourceLag {
        SourceLag {
            started: AtomicBool::new(false),
            positions: read.clone().map(|_| AtomicU64::new(0)).collect(),
            readers: Mutex::new(
                read.map(|p| weir_log::TailReader::new(dir, stream, p))
                    .collect(),
            ),
        }
    }

    /// Publishes the reader's next offset per partition.
    pub(crate) fn publish(&self, next: &[u64]) {
        for (a, &n) in self.positions.iter().zip(next) {
            a.store(n, Ordering::Relaxed);
        }
        self.started.store(true, Ordering::Release);
    }

    /// Records appended but not yet read; `None` before reading starts or
    /// when the stream cannot be read.
    pub(crate) fn records(&self) -> Option<u64> {
        if !self.started.load(Ordering::Acquire) {
            return None;
        }
        let mut readers = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        let mut lag = 0u64;
        for (reader, position) in readers.iter_mut().zip(&self.positions) {
            let end = reader.end_offset().ok()?;
            lag = lag.saturating_add(end.saturating_sub(position.load(Ordering::Relaxed)));
        }
        Some(lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_names_each_reason() {
        let h = Health::new(Some(10));
        assert_eq!(h.readiness(), Err(vec!["recovering".to_string()]));
        h.set_recovered();
        assert_eq!(h.readiness(), Ok(()));
        let status = Arc::new(ConnectorStatus::default());
        h.watch_source("orders", status.clone());
        assert_eq!(
            h.readiness(),
            Err(vec!["source orders is connecting".to_string()])
        );
        status.set(ConnectionState::Connected);
        assert_eq!(h.readiness(), Ok(()));
        status.set(ConnectionState::Reconnecting);
        assert_eq!(
            h.readiness(),
            Err(vec!["source orders is reconnecting".to_string()])
        );
    }

    #[test]
    fn readiness_bounds_the_lag_of_a_log_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = weir_log::Log::open(dir.path()).expect("log");
        let stream = log
            .stream("events", weir_log::StreamConfig::default())
            .expect("stream");
        let records: Vec<&[u8]> = vec![b"x"; 25];
        stream.partition(0).append(&records).expect("append");
        stream.flush().expect("flush");
        let h = Health::new(Some(10));
        h.set_recovered();
        let lag = Arc::new(SourceLag::new(dir.path(), "events", 0..1));
        h.watch_lag(lag.clone());
        // Not reading yet: the lag is unknown, not a reason.
        assert_eq!(h.readiness(), Ok(()));
        lag.publish(&[5]);
        assert_eq!(h.lag(), Some(20));
        assert_eq!(
            h.readiness(),
            Err(vec![
                "consumer lag 20 records is over the bound 10".to_string()
            ])
        );
        lag.publish(&[20]);
        assert_eq!(h.readiness(), Ok(()));
    }

    #[test]
    fn a_tasks_lag_is_its_own_partitions() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = weir_log::Log::open(dir.path()).expect("log");
        let stream = log
            .stream(
                "events",
                weir_log::StreamConfig {
                    partitions: 3,
                    ..Default::default()
                },
            )
            .expect("stream");
        for (p, n) in [(0u32, 7usize), (1, 11), (2, 13)] {
            let records: Vec<&[u8]> = vec![b"x"; n];
            stream.partition(p).append(&records).expect("append");
        }
        stream.flush().expect("flush");
        // Task 1 of 3 reads partition 1: its source's one position.
        let task = SourceLag::new(dir.path(), "events", 1..2);
        task.publish(&[4]);
        assert_eq!(task.records(), Some(7));
        let all = SourceLag::new(dir.path(), "events", 0..3);
        all.publish(&[2, 4, 3]);
        assert_eq!(all.records(), Some(5 + 7 + 10));
    }
}
