//! Kafka source and sink for weir, over librdkafka (rdkafka's blocking
//! clients; no async runtime).
//!
//! - The source ([`open_source`]) assigns itself every partition of one
//!   topic and reads it `read_committed`; positions are Kafka partitions and
//!   offsets, so replays from a checkpoint are exact. Offsets are committed
//!   to the consumer group once a checkpoint holding them is durable.
//! - A pipeline split into tasks (`settings.tasks`) shares them among
//!   processes through the consumer group ([`KafkaGroup`], cooperative
//!   rebalancing): task N reads partition N through its own consumer
//!   ([`open_task_source`]).
//! - The sink ([`open_sink`]) writes each output row as a record keyed by
//!   its output id (8 bytes, big-endian) with the row's JSON object as
//!   value, either in one transaction per epoch with a read-back that keeps
//!   replays out of the topic (exactly once for `read_committed` readers)
//!   or with the idempotent producer (at least once).
//!
//! librdkafka reconnects by itself; the connectors map its errors to their
//! [`weir_connect::ConnectorStatus`] and log losses and recoveries.

use weir_connect::{ConnectError, SinkConnector, SourceConnector};

pub use group::{Assigned, KafkaGroup, OnRevoke};

mod client;
mod group;
mod part;
mod readback;
mod sink;
mod source;

/// Opens the source at `start` (next offset per partition, from the
/// restored checkpoint) or, without one, where the broker keeps the
/// consumer's place; with `drain` it ends once caught up.
pub fn open_source(
    name: &str,
    config: &weir_config::KafkaSource,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    Ok(Box::new(source::open(
        name,
        config,
        start,
        drain,
        source::Scope::default(),
    )?))
}

/// Opens task `task`'s source for a member of `group`: partition `task`
/// only, at `start` (the task's checkpoint) or the group's committed
/// offset, committing through `group` (see [`KafkaGroup`]).
pub fn open_task_source(
    name: &str,
    config: &weir_config::KafkaSource,
    task: u32,
    group: &KafkaGroup,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    let scope = source::Scope {
        task: Some(task),
        group: Some(group.clone()),
    };
    Ok(Box::new(source::open(name, config, start, drain, scope)?))
}

/// Opens the sink; `checkpointing` tells whether checkpoints run, and
/// `restored` is its part of the restored checkpoint.
pub fn open_sink(
    name: &str,
    config: &weir_config::KafkaSink,
    checkpointing: bool,
    restored: Option<&[u8]>,
) -> Result<Box<dyn SinkConnector>, ConnectError> {
    Ok(Box::new(sink::open(name, config, checkpointing, restored)?))
}
