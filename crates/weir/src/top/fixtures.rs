//! Two scrapes of a fraud pipeline a couple of seconds apart, and helpers
//! to read the rendered view's tables, for the tests of `weir top`.

pub(super) const PREV: &str = r#"# HELP weir_source_records_total records read from the source
# TYPE weir_source_records_total counter
weir_source_records_total{pipeline="fraud",source="orders"} 1000
# TYPE weir_step_records_in_total counter
weir_step_records_in_total{pipeline="fraud",step="decode"} 1000
weir_step_records_in_total{pipeline="fraud",step="features"} 990
# TYPE weir_step_records_out_total counter
weir_step_records_out_total{pipeline="fraud",step="decode"} 990
weir_step_records_out_total{pipeline="fraud",step="features"} 990
# TYPE weir_sink_records_total counter
weir_sink_records_total{pipeline="fraud",sink="alerts"} 10
weir_sink_records_total{pipeline="fraud",sink="scores"} 990
# TYPE weir_ingest_to_sink_seconds histogram
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.01"} 500
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 990
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 5.0
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="scores"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.01"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.1"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="+Inf"} 10
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="alerts"} 0.05
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="alerts"} 10
# TYPE weir_model_inference_seconds histogram
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.001"} 0
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.01"} 10
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="+Inf"} 10
weir_model_inference_seconds_sum{pipeline="fraud",step="score",model="fraud",version="3"} 0.05
weir_model_inference_seconds_count{pipeline="fraud",step="score",model="fraud",version="3"} 10
# TYPE weir_checkpoint_duration_seconds histogram
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="0.1"} 2
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="+Inf"} 2
weir_checkpoint_duration_seconds_sum{pipeline="fraud"} 0.1
weir_checkpoint_duration_seconds_count{pipeline="fraud"} 2
weir_dead_letters_total{pipeline="fraud",step="decode",reason="malformed"} 3
weir_dead_letters_total{pipeline="fraud",step="features",reason="malformed"} 1
process_cpu_seconds_total 10
"#;

pub(super) const CUR: &str = r#"# HELP weir_source_records_total records read from the source
# TYPE weir_source_records_total counter
weir_source_records_total{pipeline="fraud",source="orders"} 3000
# TYPE weir_step_records_in_total counter
weir_step_records_in_total{pipeline="fraud",step="decode"} 3000
weir_step_records_in_total{pipeline="fraud",step="features"} 2980
# TYPE weir_step_records_out_total counter
weir_step_records_out_total{pipeline="fraud",step="decode"} 2980
weir_step_records_out_total{pipeline="fraud",step="features"} 2980
# TYPE weir_sink_records_total counter
weir_sink_records_total{pipeline="fraud",sink="alerts"} 10
weir_sink_records_total{pipeline="fraud",sink="scores"} 2980
# TYPE weir_ingest_to_sink_seconds histogram
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.01"} 500
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 2980
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 2980
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 1000.0
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="scores"} 2980
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.01"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.1"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="+Inf"} 10
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="alerts"} 0.05
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="alerts"} 10
# TYPE weir_event_time_to_sink_seconds histogram
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 0
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="5"} 2980
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 2980
weir_event_time_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 6000
weir_event_time_to_sink_seconds_count{pipeline="fraud",sink="scores"} 2980
# TYPE weir_model_inference_seconds histogram
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.001"} 0
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.01"} 30
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="+Inf"} 30
weir_model_inference_seconds_sum{pipeline="fraud",step="score",model="fraud",version="3"} 0.15
weir_model_inference_seconds_count{pipeline="fraud",step="score",model="fraud",version="3"} 30
# TYPE weir_window_state_entries gauge
weir_window_state_entries{pipeline="fraud",shard="10"} 7
weir_window_state_entries{pipeline="fraud",shard="2"} 1234567
# TYPE weir_watermark_lag_seconds gauge
weir_watermark_lag_seconds{pipeline="fraud",shard="2"} 2.5
weir_watermark_lag_seconds{pipeline="fraud",shard="10"} 0.25
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="0.1"} 2
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="+Inf"} 3
weir_checkpoint_duration_seconds_sum{pipeline="fraud"} 0.35
weir_checkpoint_duration_seconds_count{pipeline="fraud"} 3
weir_checkpoint_size_bytes{pipeline="fraud"} 1572864
weir_checkpoint_age_seconds{pipeline="fraud"} 0.5
weir_checkpoints_total{pipeline="fraud",outcome="completed"} 3
weir_checkpoints_total{pipeline="fraud",outcome="failed"} 0
weir_log_size_bytes{pipeline="fraud",stream="orders"} 2048
weir_log_consumer_lag_records{pipeline="fraud",stream="orders"} 12345
weir_dead_letters_total{pipeline="fraud",step="decode",reason="malformed"} 5
weir_dead_letters_total{pipeline="fraud",step="features",reason="malformed"} 3
weir_dead_letters_total{pipeline="fraud",step="features",reason="late"} 2
weir_connector_up{pipeline="fraud",connector="orders",role="source"} 1
weir_connector_up{pipeline="fraud",connector="alerts",role="sink"} 0
weir_connector_reconnects_total{pipeline="fraud",connector="orders",role="source"} 0
weir_connector_reconnects_total{pipeline="fraud",connector="alerts",role="sink"} 4
weir_ready{pipeline="fraud"} 0
process_cpu_seconds_total 11.5
process_resident_memory_bytes 2.5e+08
"#;

/// The cells of a line (separated by at least three spaces).
pub(super) fn cells(line: &str) -> Vec<&str> {
    line.split("   ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect()
}

/// The rows of `view` whose first cell is `first`.
pub(super) fn rows<'a>(view: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    view.lines()
        .map(cells)
        .filter(|c| c.first() == Some(&first))
        .collect()
}

/// The first row of `view` whose first cell is `first`.
pub(super) fn row<'a>(view: &'a str, first: &str) -> Vec<&'a str> {
    rows(view, first)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no row {first:?} in\n{view}"))
}
