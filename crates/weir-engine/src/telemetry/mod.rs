//! What a pipeline shows while it runs: the metrics `/metrics` renders,
//! the readiness `/readyz` answers from, and record samples for `/tap`.
//!
//! The embedding program makes a [`Telemetry`] and passes it in
//! [`RunOptions`](crate::RunOptions); without one the run updates nothing
//! (the benchmark compares the two). The run registers its series once at
//! start, so threads hold plain handles and pay a relaxed atomic update or
//! two per batch and series: no lookup, lock or allocation on the hot path. Values
//! cheaper to read when asked (log sizes, lag, connector states, the
//! checkpoint's age) come from collectors at scrape time.

mod health;
mod metrics;
pub mod names;
mod taps;

use std::sync::Arc;

use weir_config::Pipeline;
use weir_metrics::{labels, Counter, Registry};

pub use health::Health;
pub(crate) use metrics::RunMetrics;
pub use taps::Taps;

/// Where a run reports to; share it with the HTTP endpoint. One per run.
#[derive(Clone)]
pub struct Telemetry {
    /// The metrics.
    pub registry: Arc<Registry>,
    /// Readiness.
    pub health: Arc<Health>,
    /// Record samples per step.
    pub taps: Arc<Taps>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Telemetry(..)")
    }
}

impl Telemetry {
    /// Telemetry for a run of `pipeline`; `max_lag` bounds the source's
    /// consumer lag (records) under which the run counts as ready.
    pub fn new(pipeline: &Pipeline, max_lag: Option<u64>) -> Telemetry {
        let t = Telemetry::for_task(pipeline, max_lag);
        t.registry.collect(weir_metrics::process_metrics);
        t
    }

    /// [`new`](Self::new) without the process's metrics: for one task's
    /// run among several in a process, whose registry the process's
    /// attaches ([`Registry::attach`]) under a `task` label.
    pub fn for_task(pipeline: &Pipeline, max_lag: Option<u64>) -> Telemetry {
        let registry = Arc::new(Registry::new());
        let health = Arc::new(Health::new(max_lag));
        let h = health.clone();
        let name = pipeline.name.clone();
        registry.collect(move |s| {
            s.gauge(
                names::READY,
                "1 when the pipeline is ready (recovered, sources connected, lag within bound).",
                labels(&[("pipeline", &name)]),
                if h.readiness().is_ok() { 1.0 } else { 0.0 },
            )
        });
        let taps = Arc::new(Taps::new(
            pipeline.steps.iter().map(|s| s.name.clone()).collect(),
        ));
        Telemetry {
            registry,
            health,
            taps,
        }
    }

    /// Records read from the source so far (for progress displays).
    pub fn source_records(&self, pipeline: &Pipeline) -> Arc<Counter> {
        self.registry.counter(
            names::SOURCE_RECORDS_TOTAL,
            "Records read from the source.",
            labels(&[
                ("pipeline", &pipeline.name),
                ("source", &pipeline.source.name),
            ]),
        )
    }
}
