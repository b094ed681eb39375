//! What a run did: records per component, latencies, checkpoints and
//! connectors, gathered once every thread has ended.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use weir_config::Pipeline;

use super::operators::Counters;
use super::plan::Plan;
use super::sink_thread::SinkResult;
use crate::checkpointing::CheckpointReport;

/// Records out of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCount {
    /// Step or sink name.
    pub name: String,
    /// Records it emitted (sinks: wrote).
    pub records: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Records read from the source.
    pub source_records: u64,
    /// Records out of each step, in pipeline order.
    pub steps: Vec<StepCount>,
    /// Records written by each sink.
    pub sinks: Vec<StepCount>,
    /// Records sent to the dead-letter destination.
    pub dead_letters: u64,
    /// Shards used.
    pub shards: usize,
    /// Wall-clock time from start to the last sink flush.
    pub elapsed: Duration,
    /// Creation-to-sink latency per record in microseconds, for inputs that
    /// carry creation times.
    pub latency_us: Option<Histogram<u64>>,
    /// Checkpoints restored and taken (empty without `[checkpoint]`).
    pub checkpoints: CheckpointReport,
    /// The source and sinks that are connectors, with their state at the
    /// end of the run.
    pub connectors: Vec<ConnectorReport>,
    /// When the run ended because a stop was requested: the time from the
    /// request to the end (final checkpoint taken, sinks committed).
    pub stopped: Option<Duration>,
}

/// A connector's state and reconnections over a run.
#[derive(Debug, Clone)]
pub struct ConnectorReport {
    /// The source's or sink's name.
    pub name: String,
    /// Its state when the run ended.
    pub state: weir_connect::ConnectionState,
    /// Reconnections during the run.
    pub reconnects: u64,
}

/// Builds the summary from the joined threads' results (`None` for a
/// sink whose thread failed; the run reports the failure instead).
#[allow(clippy::too_many_arguments)]
pub(crate) fn collect(
    p: &Pipeline,
    plan: &Plan,
    counters: &Counters,
    sinks: Vec<Option<SinkResult>>,
    dead_letters: u64,
    checkpoints: CheckpointReport,
    connectors: &[(String, Arc<weir_connect::ConnectorStatus>)],
    elapsed: Duration,
) -> RunSummary {
    let mut latency: Option<Histogram<u64>> = None;
    let mut sink_counts = Vec::new();
    for (s, result) in p.sinks.iter().zip(sinks) {
        let Some((records, hist)) = result else {
            continue;
        };
        sink_counts.push(StepCount {
            name: s.name.clone(),
            records,
        });
        match (&mut latency, hist) {
            (Some(l), Some(h)) => {
                let _ = l.add(&h);
            }
            (None, h) => latency = h,
            (Some(_), None) => {}
        }
    }
    RunSummary {
        source_records: counters.source.load(Ordering::Relaxed),
        steps: p
            .steps
            .iter()
            .zip(&counters.steps)
            .map(|(s, c)| StepCount {
                name: s.name.clone(),
                records: c.load(Ordering::Relaxed),
            })
            .collect(),
        sinks: sink_counts,
        dead_letters,
        shards: plan.shards,
        elapsed,
        latency_us: latency,
        checkpoints,
        connectors: connectors
            .iter()
            .map(|(name, status)| ConnectorReport {
                name: name.clone(),
                state: status.state(),
                reconnects: status.reconnects(),
            })
            .collect(),
        stopped: None,
    }
}
