//! MQTT for weir: a source that makes every message durable in weir's own
//! log before acknowledging it to the broker, and a sink that publishes
//! each output row as JSON.
//!
//! **Source.** MQTT has no offsets a consumer could resume from, so the
//! source gives the pipeline some: a receiver thread subscribes with a
//! persistent session (`clean_session = false`, the configured client id)
//! and manual acknowledgements, appends each batch of received publishes
//! to a one-partition stream of a weir log (`log_dir`, stream `stream`),
//! fsyncs it, and only then sends the PUBACKs. The pipeline reads that
//! stream through weir's log source (`weir-log-source`, over the open
//! stream): a record's position is its offset there, and after a crash the
//! source resumes at the checkpointed offset. Guarantees and caveats:
//!
//! * Nothing is acknowledged before it is durable. A crash (or a lost
//!   connection) after the fsync and before the PUBACK makes the broker
//!   redeliver, so the stream holds every QoS 1 message **at least once**;
//!   `dedup_window` removes such copies (module `dedup`). QoS 0 messages
//!   are at most once, as MQTT defines them.
//! * Records are exactly the payloads; topics are not kept (the
//!   deduplication keys, which cover the topic, live in a side stream
//!   `<stream>.dedup-keys`).
//! * Without a checkpoint the source reads the stream from its first
//!   record, including records a previous run stored: like weir's log
//!   source, the stream is the input.
//! * `on_checkpoint` publishes the checkpointed offset as the position of
//!   consumer `client_id` (characters the log does not accept become
//!   `_`), so `weir log` tooling shows the pipeline's lag.
//! * With `drain`, the source ends once it has been connected and
//!   subscribed for a second with nothing arriving and the pipeline has
//!   read the whole stream: MQTT has no "end", so quiet is the best a
//!   drain can mean.
//! * The stream has no retention: it grows until removed by other means.
//! * Messages larger than 32 MiB are refused by the client, which drops
//!   the connection; the broker then redelivers them forever.
//!
//! **Sink.** (module `sink`) QoS 1 publishes are all acknowledged
//! at each checkpoint and at the end; rows may arrive twice after a
//! reconnect or a replay, with the same `_id`.
//!
//! Both reconnect by themselves with [`weir_connect::Backoff::reconnect`],
//! report [`weir_connect::ConnectorStatus`] and log each loss (warn) and
//! reconnection (info) with the broker's address. Failing to connect at
//! open is a [`ConnectError::Connect`] naming `host:port` and the reason.

mod client;
mod dedup;
mod receiver;
mod sink;
mod source;

#[cfg(test)]
mod tests;

use weir_connect::{ConnectError, SinkConnector, SourceConnector};

/// Opens the source at `start` (next offset per partition, from the
/// restored checkpoint); with `drain` it ends once caught up.
pub fn open_source(
    name: &str,
    config: &weir_config::MqttSource,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    source::open(name, config, start, drain, source::Hooks::default())
}

/// Opens the sink.
///
/// The sink stages nothing, so `checkpointing` changes nothing and
/// `restored` (always empty) is ignored.
pub fn open_sink(
    name: &str,
    config: &weir_config::MqttSink,
    _checkpointing: bool,
    _restored: Option<&[u8]>,
) -> Result<Box<dyn SinkConnector>, ConnectError> {
    sink::open(name, config)
}
