//! The names of the series `/metrics` of the ingest server exposes,
//! defined once: the server registers them and the dashboard test checks
//! that the Grafana dashboard queries only these.
//!
//! Per-stream series carry a `stream` label: a configured stream, or `-`
//! for requests naming a stream the server does not have.

/// Requests to the events endpoint, by answer (counter; `stream`, `code`).
pub const REQUESTS_TOTAL: &str = "weir_ingest_requests_total";
/// Time from the request's head to its answer (histogram; `stream`).
pub const REQUEST_DURATION_SECONDS: &str = "weir_ingest_request_duration_seconds";
/// Request body bytes read (counter; `stream`).
pub const RECEIVED_BYTES_TOTAL: &str = "weir_ingest_received_bytes_total";
/// Records appended to the log (counter; `stream`).
pub const RECORDS_APPENDED_TOTAL: &str = "weir_ingest_records_appended_total";
/// Invalid records refused (counter; `stream`).
pub const RECORDS_REJECTED_TOTAL: &str = "weir_ingest_records_rejected_total";
/// Writing one request's batch to the log, without the fsync (histogram;
/// `stream`).
pub const APPEND_DURATION_SECONDS: &str = "weir_ingest_append_duration_seconds";
/// Waiting for the fsync that makes a batch durable, shared by concurrent
/// requests (histogram; `stream`; `--fsync always` only).
pub const FSYNC_DURATION_SECONDS: &str = "weir_ingest_fsync_duration_seconds";
/// Bytes on disk of a stream, all partitions (gauge; `stream`).
pub const STREAM_SIZE_BYTES: &str = "weir_ingest_stream_size_bytes";
/// Requests being read, checked or appended now (gauge).
pub const IN_FLIGHT_REQUESTS: &str = "weir_ingest_in_flight_requests";
/// Memory reserved by requests in flight: their bodies and record
/// indexes (gauge).
pub const IN_FLIGHT_BYTES: &str = "weir_ingest_in_flight_bytes";
/// Open client connections (gauge).
pub const CONNECTIONS: &str = "weir_ingest_connections";
/// Requests refused to protect the server or its readers (counter;
/// `reason`: `in_flight_requests`, `in_flight_bytes`, `consumer_lag`,
/// `storage_full`).
pub const OVERLOAD_REJECTIONS_TOTAL: &str = "weir_ingest_overload_rejections_total";
/// Requests answered from the idempotency window without appending
/// (counter; `stream`).
pub const IDEMPOTENT_REPLAYS_TOTAL: &str = "weir_ingest_idempotent_replays_total";
/// Keys held in a stream's idempotency window (gauge; `stream`).
pub const IDEMPOTENCY_KEYS: &str = "weir_ingest_idempotency_keys";
/// 1 while the server is ready for requests (gauge).
pub const READY: &str = "weir_ingest_ready";

/// The label value of [`REQUESTS_TOTAL`] and others for a stream the
/// server does not have.
pub const UNKNOWN_STREAM: &str = "-";

/// Every family the ingest server exposes, with its Prometheus type, the
/// standard `process_*` metrics included.
pub const FAMILIES: &[(&str, &str)] = &[
    (REQUESTS_TOTAL, "counter"),
    (REQUEST_DURATION_SECONDS, "histogram"),
    (RECEIVED_BYTES_TOTAL, "counter"),
    (RECORDS_APPENDED_TOTAL, "counter"),
    (RECORDS_REJECTED_TOTAL, "counter"),
    (APPEND_DURATION_SECONDS, "histogram"),
    (FSYNC_DURATION_SECONDS, "histogram"),
    (STREAM_SIZE_BYTES, "gauge"),
    (IN_FLIGHT_REQUESTS, "gauge"),
    (IN_FLIGHT_BYTES, "gauge"),
    (CONNECTIONS, "gauge"),
    (OVERLOAD_REJECTIONS_TOTAL, "counter"),
    (IDEMPOTENT_REPLAYS_TOTAL, "counter"),
    (IDEMPOTENCY_KEYS, "gauge"),
    (READY, "gauge"),
    (weir_metrics::process::PROCESS_CPU_SECONDS_TOTAL, "counter"),
    (
        weir_metrics::process::PROCESS_RESIDENT_MEMORY_BYTES,
        "gauge",
    ),
    (weir_metrics::process::PROCESS_VIRTUAL_MEMORY_BYTES, "gauge"),
    (weir_metrics::process::PROCESS_OPEN_FDS, "gauge"),
    (weir_metrics::process::PROCESS_START_TIME_SECONDS, "gauge"),
    (weir_metrics::process::PROCESS_THREADS, "gauge"),
];
