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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use weir_config::{Pipeline, SinkKind, SourceKind, StepKind};
use weir_connect::{ConnectionState, ConnectorStatus};
use weir_metrics::{labels, Counter, Gauge, Histogram, Registry};

use crate::dead_letter::Rejected;

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
        let registry = Arc::new(Registry::new());
        registry.collect(weir_metrics::process_metrics);
        let health = Arc::new(Health::new(max_lag));
        let h = health.clone();
        let name = pipeline.name.clone();
        registry.collect(move |s| {
            s.gauge(
                "weir_ready",
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
            SOURCE_RECORDS,
            SOURCE_RECORDS_HELP,
            labels(&[
                ("pipeline", &pipeline.name),
                ("source", &pipeline.source.name),
            ]),
        )
    }
}

const SOURCE_RECORDS: &str = "weir_source_records_total";
const SOURCE_RECORDS_HELP: &str = "Records read from the source.";

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

    fn watch_lag(&self, lag: Arc<SourceLag>) {
        *self.lag.lock().unwrap_or_else(|p| p.into_inner()) = Some(lag);
    }
}

/// How far a log source is behind its stream: the reader publishes its
/// next offsets, a scrape reads the stream's ends.
pub(crate) struct SourceLag {
    started: AtomicBool,
    positions: Vec<AtomicU64>,
    readers: Mutex<Vec<weir_log::TailReader>>,
}

impl SourceLag {
    fn new(dir: &Path, stream: &str, partitions: u32) -> SourceLag {
        SourceLag {
            started: AtomicBool::new(false),
            positions: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            readers: Mutex::new(
                (0..partitions)
                    .map(|p| weir_log::TailReader::new(dir, stream, p))
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
    fn records(&self) -> Option<u64> {
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

/// A step's samples for `/tap`.
struct TapSlot {
    active: AtomicBool,
    subscribers: Mutex<Vec<TapSubscriber>>,
}

struct TapSubscriber {
    tx: Sender<String>,
    per_second: u32,
    window: Instant,
    taken: u32,
}

/// Samples of the records passing each step, for debugging. A subscriber
/// gets at most its rate of records per second; records it cannot take
/// at once are dropped, never waited for.
pub struct Taps {
    steps: Vec<String>,
    slots: Vec<TapSlot>,
}

/// Records queued per subscriber before new ones are dropped.
const TAP_QUEUE: usize = 1024;

impl Taps {
    fn new(steps: Vec<String>) -> Taps {
        let slots = steps
            .iter()
            .map(|_| TapSlot {
                active: AtomicBool::new(false),
                subscribers: Mutex::new(Vec::new()),
            })
            .collect();
        Taps { steps, slots }
    }

    /// The steps that can be tapped.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// Starts sampling `step` at up to `per_second` records a second; the
    /// samples (JSON objects) arrive on the receiver until it is dropped.
    /// `None` for an unknown step.
    pub fn subscribe(&self, step: &str, per_second: u32) -> Option<Receiver<String>> {
        let i = self.steps.iter().position(|s| s == step)?;
        let (tx, rx) = crossbeam_channel::bounded(TAP_QUEUE);
        let slot = &self.slots[i];
        slot.subscribers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(TapSubscriber {
                tx,
                per_second: per_second.max(1),
                window: Instant::now(),
                taken: 0,
            });
        slot.active.store(true, Ordering::Release);
        Some(rx)
    }

    /// Whether anyone samples step `i` (one relaxed load per batch).
    #[inline]
    pub(crate) fn tapped(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.active.load(Ordering::Relaxed))
    }

    /// Offers a batch out of step `i` to its subscribers.
    pub(crate) fn offer(&self, i: usize, batch: &RecordBatch) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let mut subs = slot.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let step = &self.steps[i];
        subs.retain_mut(|sub| {
            if now.duration_since(sub.window).as_secs() >= 1 {
                sub.window = now;
                sub.taken = 0;
            }
            let budget = sub.per_second.saturating_sub(sub.taken) as usize;
            let rows = batch.num_rows();
            let take = budget.min(rows);
            if take == 0 {
                // A gone subscriber is noticed at its next sample.
                return true;
            }
            // Spread the sample over the batch rather than its head.
            let stride = rows / take;
            for k in 0..take {
                let mut line = crate::sink::row_json(batch, k * stride);
                // `row_json` gives an object; name the step in it.
                line.insert_str(1, &format!("\"_step\":{},", json_str(step)));
                if line.ends_with(",}") {
                    line.replace_range(line.len() - 2.., "}");
                }
                match sub.tx.try_send(line) {
                    Ok(()) => sub.taken += 1,
                    Err(TrySendError::Full(_)) => break,
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
        if subs.is_empty() {
            slot.active.store(false, Ordering::Release);
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

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
                        "weir_model_inference_seconds",
                        "Time of one model call (one batch), in seconds.",
                        l.clone(),
                        weir_metrics::SECONDS_BUCKETS,
                    ),
                    r.histogram(
                        "weir_model_batch_records",
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
                        "weir_sink_records_total",
                        "Records written by the sink.",
                        l.clone(),
                    ),
                    batch: r.histogram(
                        "weir_sink_batch_records",
                        "Records per batch the sink writes.",
                        l.clone(),
                        weir_metrics::BATCH_BUCKETS,
                    ),
                    ingest_to_sink: r.histogram(
                        "weir_ingest_to_sink_seconds",
                        LATENCY_HELP,
                        l.clone(),
                        weir_metrics::SECONDS_BUCKETS,
                    ),
                    event_time_to_sink: event_time.then(|| {
                        r.histogram(
                            "weir_event_time_to_sink_seconds",
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
                            "weir_window_state_entries",
                            "Entries (key and window) held by the shard's keyed steps.",
                            l.clone(),
                        ),
                        watermark_lag: r.gauge(
                            "weir_watermark_lag_seconds",
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
                "weir_checkpoints_total",
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
                let lag = Arc::new(SourceLag::new(dir, stream, *partitions));
                t.health.watch_lag(lag.clone());
                Some(lag)
            }
            _ => None,
        };
        let m = Arc::new(RunMetrics {
            source_records: t.source_records(p),
            source_batch: r.histogram(
                "weir_source_batch_records",
                "Records per micro-batch read from the source.",
                labels(&[("pipeline", name), ("source", &p.source.name)]),
                weir_metrics::BATCH_BUCKETS,
            ),
            step_in: step_series("weir_step_records_in_total", "Records into the step."),
            step_out: step_series("weir_step_records_out_total", "Records out of the step."),
            models,
            sinks,
            shards,
            watermark_bound_ms,
            checkpoints: p.checkpoint.as_ref().map(|_| CheckpointMetrics {
                duration: r.histogram(
                    "weir_checkpoint_duration_seconds",
                    "Time from barrier injection to the checkpoint being durable, in seconds.",
                    pl.clone(),
                    weir_metrics::SECONDS_BUCKETS,
                ),
                size: r.gauge(
                    "weir_checkpoint_size_bytes",
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
                        "weir_checkpoint_age_seconds",
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
                    "weir_log_size_bytes",
                    "Bytes on disk of a log stream the pipeline reads or writes.",
                    labels(&[("pipeline", &name), ("stream", stream)]),
                    dir_size(&dir.join(stream)) as f64,
                );
            }
            if let (Some(stream), Some(lag)) =
                (&source_stream, lag.as_ref().and_then(|l| l.records()))
            {
                s.gauge(
                    "weir_log_consumer_lag_records",
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
                    "weir_connector_up",
                    "1 when the connector's connection is up, else 0.",
                    l.clone(),
                    if status.state() == ConnectionState::Connected {
                        1.0
                    } else {
                        0.0
                    },
                );
                s.counter(
                    "weir_connector_reconnects_total",
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
                    "weir_dead_letters_total",
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
    pub(crate) fn checkpoint(&self, duration: std::time::Duration, size_bytes: u64) {
        if let Some(c) = &self.checkpoints {
            c.duration.observe(duration.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tap_samples_at_its_rate_and_stops_when_dropped() {
        use arrow_array::UInt64Array;
        use arrow_schema::{DataType, Field, Schema};
        let taps = Taps::new(vec!["decode".into(), "features".into()]);
        assert!(taps.subscribe("nope", 5).is_none());
        assert!(!taps.tapped(1));
        let rx = taps.subscribe("features", 5).expect("known step");
        assert!(taps.tapped(1) && !taps.tapped(0));
        let schema = Arc::new(Schema::new(vec![
            Field::new("card_id", DataType::UInt64, false),
            Field::new("__pos", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from_iter_values(0..100)),
                Arc::new(UInt64Array::from_iter_values(1000..1100)),
            ],
        )
        .expect("batch");
        taps.offer(1, &batch);
        taps.offer(1, &batch);
        let got: Vec<String> = rx.try_iter().collect();
        // Five a second, spread over the batch, hidden columns left out.
        assert_eq!(
            got,
            [0, 20, 40, 60, 80]
                .iter()
                .map(|c| format!("{{\"_step\":\"features\",\"card_id\":{c}}}"))
                .collect::<Vec<_>>()
        );
        drop(rx);
        // The next window notices the subscriber is gone.
        std::thread::sleep(std::time::Duration::from_millis(1010));
        taps.offer(1, &batch);
        assert!(!taps.tapped(1));
    }

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
        let lag = Arc::new(SourceLag::new(dir.path(), "events", 1));
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
}
