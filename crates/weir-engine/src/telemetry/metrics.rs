//! The series of a run: registered once at its start, then updated by the
//! threads through plain handles (a relaxed atomic update or two per batch
//! and series), and collectors for what is cheaper to read at scrape time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use weir_config::{Pipeline, SinkKind, SourceKind, StepKind};
use weir_connect::{ConnectionState, ConnectorStatus};
use weir_metrics::{labels, Counter, Gauge, Histogram, Registry};

use super::health::{Health, SourceLag};
use super::names;
use super::taps::Taps;
use super::Telemetry;
use crate::dead_letter::Rejected;

/// A sink's series.
pub(crate) struct SinkMetrics {
    pub records: Arc<Counter>,
    pub batch: Arc<Histogram>,
    pub ingest_to_sink: Arc<Histogram>,
    pub event_time_to_sink: Option<Arc<Histogram>>,
}

/// A shard's series.
pub(crate) struct ShardMetrics {
    pub state_entries: Arc<Gauge>,
    pub watermark_lag: Arc<Gauge>,
}

/// The checkpoint series.
pub(crate) struct CheckpointMetrics {
    duration: Arc<Histogram>,
    stall: Arc<Histogram>,
    size: Arc<Gauge>,
    /// Unix time of the last completion (0: none yet), for the age.
    completed_at: Arc<Gauge>,
    completed: Arc<Counter>,
    pub failed: Arc<Counter>,
}

/// The series of a run, registered at its start.
pub(crate) struct RunMetrics {
    pub source_records: Arc<Counter>,
    pub source_batch: Arc<Histogram>,
    pub step_in: Vec<Arc<Counter>>,
    pub step_out: Vec<Arc<Counter>>,
    /// Per step, for model steps: inference time and batch size.
    pub models: Vec<Option<(Arc<Histogram>, Arc<Histogram>)>>,
    pub sinks: Vec<SinkMetrics>,
    pub shards: Vec<ShardMetrics>,
    /// The decode step's out-of-orderness bound (ms), for watermarks.
    pub watermark_bound_ms: i64,
    /// Registered only for pipelines with checkpoints.
    pub checkpoints: Option<CheckpointMetrics>,
    pub taps: Arc<Taps>,
    pub health: Arc<Health>,
    pub source_lag: Option<Arc<SourceLag>>,
    /// Parts of recovery still running: each shard's state restore, and
    /// the opening of sources and sinks.
    recovering: std::sync::atomic::AtomicUsize,
    registry: Arc<Registry>,
    pipeline: String,
    /// Step name to its dead-letter reason when the reason text does not
    /// decide it.
    step_reasons: BTreeMap<String, &'static str>,
}

const LATENCY_HELP: &str =
    "Time from a record's arrival (ingest, or read from the source) to its sink write, in seconds.";

impl RunMetrics {
    /// Registers the series of a run of `p` with `shards` shards.
    pub(crate) fn new(t: &Telemetry, p: &Pipeline, shards: usize, keyed: bool) -> Arc<RunMetrics> {
        let r = &t.registry;
        let name = p.name.as_str();
        // Each shard restores its key groups on its own thread.
        let restoring = if keyed { shards } else { 0 };
        let step_series = |metric: &str, help: &str| -> Vec<Arc<Counter>> {
            p.steps
                .iter()
                .map(|s| {
                    r.counter(
                        metric,
                        help,
                        labels(&[("pipeline", name), ("step", &s.name)]),
                    )
                })
                .collect()
        };
        let mut event_time = false;
        let mut watermark_bound_ms = 0;
        for s in &p.steps {
            if let StepKind::Decode(d) = &s.kind {
                event_time = d.event_time.is_some();
                watermark_bound_ms = d.max_out_of_orderness_ms;
            }
        }
        let models = p
            .steps
            .iter()
            .map(|s| {
                let StepKind::Model(m) = &s.kind else {
                    return None;
                };
                let model = m
                    .path
                    .file_stem()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let version = file_version(&m.path);
                let l = labels(&[
                    ("pipeline", name),
                    ("step", &s.name),
                    ("model", &model),
                    ("version", &version),
                ]);
                Some((
                    r.histogram(
                        names::MODEL_INFERENCE_SECONDS,
                        "Time of one model call (one batch), in seconds.",
                        l.clone(),
                        weir_metrics::SECONDS_BUCKETS,
                    ),
                    r.histogram(
                        names::MODEL_BATCH_RECORDS,
                        "Records per model call.",
                        l,
                        weir_metrics::BATCH_BUCKETS,
                    ),
                ))
            })
            .collect();
        let sinks = p
            .sinks
            .iter()
            .map(|s| {
                let l = labels(&[("pipeline", name), ("sink", &s.name)]);
                SinkMetrics {
                    records: r.counter(
                        names::SINK_RECORDS_TOTAL,
                        "Records written by the sink.",
                        l.clone(),
                    ),
                    batch: r.histogram(
                        names::SINK_BATCH_RECORDS,
                        "Records per batch the sink writes.",
                        l.clone(),
                        weir_metrics::BATCH_BUCKETS,
                    ),
                    ingest_to_sink: r.histogram(
                        names::INGEST_TO_SINK_SECONDS,
                        LATENCY_HELP,
                        l.clone(),
                        weir_metrics::SECONDS_BUCKETS,
                    ),
                    event_time_to_sink: event_time.then(|| {
                        r.histogram(
                            names::EVENT_TIME_TO_SINK_SECONDS,
                            "Wall clock at the sink write minus the newest event time of the records' micro-batch, in seconds.",
                            l,
                            weir_metrics::LAG_SECONDS_BUCKETS,
                        )
                    }),
                }
            })
            .collect();
        let shards = if keyed {
            (0..shards)
                .map(|s| {
                    let l = labels(&[("pipeline", name), ("shard", &s.to_string())]);
                    ShardMetrics {
                        state_entries: r.gauge(
                            names::WINDOW_STATE_ENTRIES,
                            "Entries (key and window) held by the shard's keyed steps.",
                            l.clone(),
                        ),
                        watermark_lag: r.gauge(
                            names::WATERMARK_LAG_SECONDS,
                            "Wall clock minus the shard's watermark, in seconds.",
                            l,
                        ),
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let pl = labels(&[("pipeline", name)]);
        let outcome = |o: &str| {
            r.counter(
                names::CHECKPOINTS_TOTAL,
                "Checkpoints finished, by outcome.",
                labels(&[("pipeline", name), ("outcome", o)]),
            )
        };
        let step_reasons = p
            .steps
            .iter()
            .map(|s| {
                let reason = match &s.kind {
                    StepKind::Decode(_) => "malformed",
                    StepKind::Window(_) => "late",
                    StepKind::Model(_) => "model_error",
                    _ => "rejected",
                };
                (s.name.clone(), reason)
            })
            .collect();
        let source_lag = match &p.source.kind {
            SourceKind::Log {
                dir,
                stream,
                partitions,
                ..
            } => {
                let read = p.log_partitions().unwrap_or(0..*partitions);
                let lag = Arc::new(SourceLag::new(dir, stream, read));
                t.health.watch_lag(lag.clone());
                Some(lag)
            }
            _ => None,
        };
        let m = Arc::new(RunMetrics {
            source_records: t.source_records(p),
            source_batch: r.histogram(
                names::SOURCE_BATCH_RECORDS,
                "Records per micro-batch read from the source.",
                labels(&[("pipeline", name), ("source", &p.source.name)]),
                weir_metrics::BATCH_BUCKETS,
            ),
            step_in: step_series(names::STEP_RECORDS_IN_TOTAL, "Records into the step."),
            step_out: step_series(names::STEP_RECORDS_OUT_TOTAL, "Records out of the step."),
            models,
            sinks,
            shards,
            watermark_bound_ms,
            checkpoints: p.checkpoint.as_ref().map(|_| CheckpointMetrics {
                duration: r.histogram(
                    names::CHECKPOINT_DURATION_SECONDS,
                    "Time from barrier injection to the checkpoint being durable, in seconds.",
                    pl.clone(),
                    weir_metrics::SECONDS_BUCKETS,
                ),
                stall: r.histogram(
                    names::CHECKPOINT_STALL_SECONDS,
                    "Time a checkpoint held the pipeline up (the longest stretch any shard \
                     spent capturing its state at once), in seconds.",
                    pl.clone(),
                    weir_metrics::SECONDS_BUCKETS,
                ),
                size: r.gauge(
                    names::CHECKPOINT_SIZE_BYTES,
                    "Size of the last completed checkpoint, in bytes.",
                    pl.clone(),
                ),
                completed_at: Arc::new(Gauge::default()),
                completed: outcome("completed"),
                failed: outcome("failed"),
            }),
            taps: t.taps.clone(),
            health: t.health.clone(),
            source_lag,
            recovering: std::sync::atomic::AtomicUsize::new(restoring + 1),
            registry: r.clone(),
            pipeline: name.to_string(),
            step_reasons,
        });
        m.register_collectors(p);
        m
    }

    fn register_collectors(self: &Arc<Self>, p: &Pipeline) {
        if let Some(c) = &self.checkpoints {
            let name = p.name.clone();
            let completed_at = c.completed_at.clone();
            self.registry.collect(move |s| {
                let at = completed_at.get();
                if at > 0.0 {
                    s.gauge(
                        names::CHECKPOINT_AGE_SECONDS,
                        "Seconds since the last completed checkpoint.",
                        labels(&[("pipeline", &name)]),
                        (now_unix() - at).max(0.0),
                    );
                }
            });
        }
        // Every log stream the pipeline reads or writes.
        let mut streams: Vec<(PathBuf, String)> = Vec::new();
        if let SourceKind::Log { dir, stream, .. } = &p.source.kind {
            streams.push((dir.clone(), stream.clone()));
        }
        for s in &p.sinks {
            if let SinkKind::Log { dir, stream } = &s.kind {
                streams.push((dir.clone(), stream.clone()));
            }
        }
        if let Some((dir, stream)) = &p.dead_letter.log {
            streams.push((dir.clone(), stream.clone()));
        }
        let name = p.name.clone();
        let source_stream = match &p.source.kind {
            SourceKind::Log { stream, .. } => Some(stream.clone()),
            _ => None,
        };
        let lag = self.source_lag.clone();
        self.registry.collect(move |s| {
            for (dir, stream) in &streams {
                s.gauge(
                    names::LOG_SIZE_BYTES,
                    "Bytes on disk of a log stream the pipeline reads or writes.",
                    labels(&[("pipeline", &name), ("stream", stream)]),
                    dir_size(&dir.join(stream)) as f64,
                );
            }
            if let (Some(stream), Some(lag)) =
                (&source_stream, lag.as_ref().and_then(|l| l.records()))
            {
                s.gauge(
                    names::LOG_CONSUMER_LAG_RECORDS,
                    "Records in the source stream not yet read by the pipeline.",
                    labels(&[("pipeline", &name), ("stream", stream)]),
                    lag as f64,
                );
            }
        });
    }

    /// One part of recovery is done (a shard restored its state, or the
    /// run opened everything); the last one makes the run ready.
    pub(crate) fn recovered_part(&self) {
        if self.recovering.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.health.set_recovered();
        }
    }

    /// Reports the connectors' states and reconnections at each scrape.
    pub(crate) fn watch_connectors(
        &self,
        source: &str,
        statuses: &[(String, Arc<ConnectorStatus>)],
    ) {
        let name = self.pipeline.clone();
        let statuses: Vec<(String, &'static str, Arc<ConnectorStatus>)> = statuses
            .iter()
            .map(|(n, s)| {
                (
                    n.clone(),
                    if n == source { "source" } else { "sink" },
                    s.clone(),
                )
            })
            .collect();
        self.registry.collect(move |s| {
            for (connector, role, status) in &statuses {
                let l = labels(&[
                    ("pipeline", &name),
                    ("connector", connector),
                    ("role", role),
                ]);
                s.gauge(
                    names::CONNECTOR_UP,
                    "1 when the connector's connection is up, else 0.",
                    l.clone(),
                    if status.state() == ConnectionState::Connected {
                        1.0
                    } else {
                        0.0
                    },
                );
                s.counter(
                    names::CONNECTOR_RECONNECTS_TOTAL,
                    "Reconnections of the connector.",
                    l,
                    status.reconnects() as f64,
                );
            }
        });
    }

    /// Counts a batch of dead letters by step and reason.
    pub(crate) fn dead_letters(&self, batch: &[Rejected]) {
        let mut counts: BTreeMap<(&str, &'static str), u64> = BTreeMap::new();
        for r in batch {
            let reason = if r.reason.contains("is over the limit of") {
                "too_large"
            } else {
                self.step_reasons
                    .get(&r.step)
                    .copied()
                    .unwrap_or("rejected")
            };
            *counts.entry((r.step.as_str(), reason)).or_default() += 1;
        }
        for ((step, reason), n) in counts {
            self.registry
                .counter(
                    names::DEAD_LETTERS_TOTAL,
                    "Records sent to the dead-letter destination, by step and reason.",
                    labels(&[
                        ("pipeline", &self.pipeline),
                        ("step", step),
                        ("reason", reason),
                    ]),
                )
                .add(n);
        }
    }

    /// Counts a batch of `rows` records into step `i`, which took from
    /// `started` to now (timed for model steps).
    pub(crate) fn step_processed(&self, i: usize, rows: usize, started: Instant) {
        self.step_in[i].add(rows as u64);
        if let Some(Some((time, size))) = self.models.get(i) {
            time.observe(started.elapsed().as_secs_f64());
            size.observe(rows as f64);
        }
    }

    /// Records a completed checkpoint.
    pub(crate) fn checkpoint(
        &self,
        duration: std::time::Duration,
        stall: std::time::Duration,
        size_bytes: u64,
    ) {
        if let Some(c) = &self.checkpoints {
            c.duration.observe(duration.as_secs_f64());
            c.stall.observe(stall.as_secs_f64());
            c.size.set(size_bytes as f64);
            c.completed_at.set(now_unix());
            c.completed.add(1);
        }
    }

    /// Records a batch written by sink `i`.
    pub(crate) fn sink_batch(&self, i: usize, rows: usize, arrived: Instant, max_time: i64) {
        let Some(s) = self.sinks.get(i) else { return };
        let n = rows as u64;
        s.records.add(n);
        s.batch.observe(rows as f64);
        s.ingest_to_sink
            .observe_n(arrived.elapsed().as_secs_f64(), n);
        if let (Some(h), true) = (&s.event_time_to_sink, max_time != i64::MIN) {
            let now_ms = now_unix() * 1e3;
            h.observe_n(((now_ms - max_time as f64) / 1e3).max(0.0), n);
        }
    }

    /// Updates a shard's state size and watermark lag.
    pub(crate) fn shard(&self, shard: usize, entries: usize, max_time: i64) {
        let Some(s) = self.shards.get(shard) else {
            return;
        };
        s.state_entries.set(entries as f64);
        if max_time != i64::MIN {
            let watermark = max_time.saturating_sub(self.watermark_bound_ms) as f64;
            s.watermark_lag
                .set(((now_unix() * 1e3 - watermark) / 1e3).max(0.0));
        }
    }
}

/// A model file's version label: a digest of its bytes, so a changed model
/// shows as a new series.
fn file_version(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            // FNV-1a, 64 bits: stable across builds.
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in bytes {
                h ^= b as u64;
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            format!("{:012x}", h >> 16)
        }
        Err(_) => "unknown".to_string(),
    }
}

/// Bytes in the files under `dir`, recursively.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
