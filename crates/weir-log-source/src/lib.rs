//! A stream of weir's embedded durable log (`weir-log`) read as a source
//! connector, like the brokers' sources.
//!
//! The log is weir's own broker: `weir ingest` appends what it receives
//! over HTTP, the MQTT source's receiver appends what it receives from the
//! broker. Reading a stream back is the same job in both cases, and the
//! same as reading a broker: records with a partition and an offset, a
//! place per partition that a checkpoint stores and a restart resumes
//! from, and an acknowledgement once a checkpoint is durable (here: the
//! pipeline's consumer position, which ingest's lag bound reads). So it is
//! one [`SourceConnector`], [`LogSource`], reading either the stream's
//! files read-only ([`open`], for a pipeline's `log` source) or a stream
//! open in this process ([`ReadFrom::Stream`], for a connector that
//! appends to it itself).
//!
//! * Reading starts at the checkpointed next offsets, else at each
//!   partition's first retained offset; a checkpointed offset that
//!   retention has removed resumes at the first retained one (with a
//!   warning), one past the end is an error.
//! * Each poll hands over up to `max` consecutive records of one partition,
//!   partitions taken round-robin.
//! * Without `follow` (or when draining) the source ends once every
//!   partition has reached the end it had at open; with `follow` it waits
//!   for appends, looking at the stream every millisecond.

#![deny(missing_docs)]

mod reader;
mod source;

#[cfg(test)]
mod tests;

use std::path::Path;

use weir_connect::{ConnectError, SourceConnector};

pub use source::{LogSource, ReadFrom};

/// Which stream a [`LogSource`] reads, and how.
#[derive(Debug, Clone)]
pub struct LogSourceConfig<'a> {
    /// The log's directory.
    pub dir: &'a Path,
    /// The stream's name in it.
    pub stream: &'a str,
    /// Number of partitions of the stream.
    pub partitions: u32,
    /// The partitions this source reads (one task's share of the stream);
    /// `None`: all of them. Offsets in positions and checkpoints are per
    /// partition read, in order; records carry their real partition.
    pub read: Option<std::ops::Range<u32>>,
    /// Keep reading as records are appended, instead of ending at the end
    /// the stream had at open.
    pub follow: bool,
    /// The name under which the position is published after each durable
    /// checkpoint (a pipeline's name; 1 to 200 of `A-Z a-z 0-9 . _ -`).
    pub consumer: &'a str,
}

/// Opens source `name` over the stream's files, read-only (another process
/// may be appending), at `start` (the next offset per partition, from the
/// restored checkpoint); with `drain` it ends at the end the stream has
/// now even when following. See [`LogSource::open`] for the errors.
pub fn open(
    name: &str,
    config: &LogSourceConfig<'_>,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    Ok(Box::new(LogSource::open(
        name,
        config,
        ReadFrom::Files,
        start,
        drain,
    )?))
}
