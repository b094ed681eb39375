//! The names of the series a run exposes, defined once: the engine
//! registers them, `weir top` reads them and the dashboard test checks the
//! Grafana dashboard queries only these.

use weir_metrics::process;

/// Records read from the source (counter; `pipeline`, `source`).
pub const SOURCE_RECORDS_TOTAL: &str = "weir_source_records_total";
/// Records per micro-batch read from the source (histogram).
pub const SOURCE_BATCH_RECORDS: &str = "weir_source_batch_records";
/// Records into a step (counter; `step`).
pub const STEP_RECORDS_IN_TOTAL: &str = "weir_step_records_in_total";
/// Records out of a step (counter; `step`).
pub const STEP_RECORDS_OUT_TOTAL: &str = "weir_step_records_out_total";
/// Records written by a sink (counter; `sink`).
pub const SINK_RECORDS_TOTAL: &str = "weir_sink_records_total";
/// Records per batch a sink writes (histogram; `sink`).
pub const SINK_BATCH_RECORDS: &str = "weir_sink_batch_records";
/// Arrival to sink write (histogram; `sink`).
pub const INGEST_TO_SINK_SECONDS: &str = "weir_ingest_to_sink_seconds";
/// Wall clock at the sink write minus the newest event time (histogram;
/// `sink`; pipelines with event time only).
pub const EVENT_TIME_TO_SINK_SECONDS: &str = "weir_event_time_to_sink_seconds";
/// Time of one model call (histogram; `step`, `model`, `version`).
pub const MODEL_INFERENCE_SECONDS: &str = "weir_model_inference_seconds";
/// Records per model call (histogram; `step`, `model`, `version`).
pub const MODEL_BATCH_RECORDS: &str = "weir_model_batch_records";
/// Entries held by a shard's keyed steps (gauge; `shard`).
pub const WINDOW_STATE_ENTRIES: &str = "weir_window_state_entries";
/// Wall clock minus a shard's watermark (gauge; `shard`).
pub const WATERMARK_LAG_SECONDS: &str = "weir_watermark_lag_seconds";
/// Barrier to durable checkpoint (histogram).
pub const CHECKPOINT_DURATION_SECONDS: &str = "weir_checkpoint_duration_seconds";
/// Time a checkpoint held the pipeline up: the longest any shard spent
/// capturing its state (histogram).
pub const CHECKPOINT_STALL_SECONDS: &str = "weir_checkpoint_stall_seconds";
/// Size of the last completed checkpoint (gauge).
pub const CHECKPOINT_SIZE_BYTES: &str = "weir_checkpoint_size_bytes";
/// Seconds since the last completed checkpoint (gauge).
pub const CHECKPOINT_AGE_SECONDS: &str = "weir_checkpoint_age_seconds";
/// Checkpoints finished (counter; `outcome`: `completed`, `failed`).
pub const CHECKPOINTS_TOTAL: &str = "weir_checkpoints_total";
/// Bytes on disk of a log stream the pipeline uses (gauge; `stream`).
pub const LOG_SIZE_BYTES: &str = "weir_log_size_bytes";
/// Records of the source stream not yet read (gauge; `stream`).
pub const LOG_CONSUMER_LAG_RECORDS: &str = "weir_log_consumer_lag_records";
/// Dead letters (counter; `step`, `reason`).
pub const DEAD_LETTERS_TOTAL: &str = "weir_dead_letters_total";
/// 1 when a connector's connection is up (gauge; `connector`, `role`).
pub const CONNECTOR_UP: &str = "weir_connector_up";
/// Reconnections of a connector (counter; `connector`, `role`).
pub const CONNECTOR_RECONNECTS_TOTAL: &str = "weir_connector_reconnects_total";
/// 1 when the pipeline is ready (gauge).
pub const READY: &str = "weir_ready";

/// A series family's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
}

impl Kind {
    /// The type as the exposition's `# TYPE` line writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Every family a run of `weir run` may expose, with its type.
pub const FAMILIES: &[(&str, Kind)] = &[
    (SOURCE_RECORDS_TOTAL, Kind::Counter),
    (SOURCE_BATCH_RECORDS, Kind::Histogram),
    (STEP_RECORDS_IN_TOTAL, Kind::Counter),
    (STEP_RECORDS_OUT_TOTAL, Kind::Counter),
    (SINK_RECORDS_TOTAL, Kind::Counter),
    (SINK_BATCH_RECORDS, Kind::Histogram),
    (INGEST_TO_SINK_SECONDS, Kind::Histogram),
    (EVENT_TIME_TO_SINK_SECONDS, Kind::Histogram),
    (MODEL_INFERENCE_SECONDS, Kind::Histogram),
    (MODEL_BATCH_RECORDS, Kind::Histogram),
    (WINDOW_STATE_ENTRIES, Kind::Gauge),
    (WATERMARK_LAG_SECONDS, Kind::Gauge),
    (CHECKPOINT_DURATION_SECONDS, Kind::Histogram),
    (CHECKPOINT_STALL_SECONDS, Kind::Histogram),
    (CHECKPOINT_SIZE_BYTES, Kind::Gauge),
    (CHECKPOINT_AGE_SECONDS, Kind::Gauge),
    (CHECKPOINTS_TOTAL, Kind::Counter),
    (LOG_SIZE_BYTES, Kind::Gauge),
    (LOG_CONSUMER_LAG_RECORDS, Kind::Gauge),
    (DEAD_LETTERS_TOTAL, Kind::Counter),
    (CONNECTOR_UP, Kind::Gauge),
    (CONNECTOR_RECONNECTS_TOTAL, Kind::Counter),
    (READY, Kind::Gauge),
    (process::PROCESS_CPU_SECONDS_TOTAL, Kind::Counter),
    (process::PROCESS_RESIDENT_MEMORY_BYTES, Kind::Gauge),
    (process::PROCESS_VIRTUAL_MEMORY_BYTES, Kind::Gauge),
    (process::PROCESS_OPEN_FDS, Kind::Gauge),
    (process::PROCESS_START_TIME_SECONDS, Kind::Gauge),
    (process::PROCESS_THREADS, Kind::Gauge),
];
