//! The contract between the engine and connectors to external systems.
//!
//! The engine runs on plain threads and cuts records into micro-batches; a
//! connector hides its broker's client (async or not) behind two small
//! blocking traits. A [`SourceConnector`] hands over records with their
//! partition and offset, which become the records' positions (and so the
//! deterministic output ids) and, per partition, the source's place in a
//! checkpoint; it is told when a checkpoint covering a place is durable, so
//! it acknowledges to the broker only then and a crash replays instead of
//! losing. A [`SinkConnector`] receives each batch with its output ids and
//! takes part in the checkpoint's two phases: `prepare` at the barrier,
//! `commit` once the checkpoint is durable.
//!
//! Connectors reconnect by themselves with a capped exponential
//! [`Backoff`] and publish their [`ConnectorStatus`] for logs and metrics.

#![deny(missing_docs)]

mod backoff;
mod output;
mod received;
mod status;

use std::time::Duration;

pub use backoff::Backoff;
pub use output::Output;
pub use received::{Received, ReceivedRecord};
pub use status::{ConnectionState, ConnectorStatus};

/// Why a connector failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker or database could not be reached or refused the session.
    #[error("cannot connect to {address}: {message}")]
    Connect {
        /// Where it tried (never with credentials).
        address: String,
        /// The client's or the server's own words.
        message: String,
    },
    /// The broker or database answered an operation with an error.
    #[error("{address}: {message}")]
    Broker {
        /// The server.
        address: String,
        /// What was being done and the server's own words.
        message: String,
    },
    /// The configuration cannot work with what the server has (a missing
    /// stream or table, a topic with another partition count).
    #[error("{0}")]
    Config(String),
    /// The checkpoint's part for this connector cannot be used.
    #[error("{0}")]
    Checkpoint(String),
    /// A local file (a durable buffer) could not be used.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The operating system's words.
        source: std::io::Error,
    },
}

/// What [`SourceConnector::on_checkpoint`] returns: called with the next
/// offset per partition that a durable checkpoint covers.
pub type Acknowledge = Box<dyn FnMut(&[u64]) + Send>;

/// What a [`SourceConnector::poll`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    /// Records were appended (possibly fewer than asked for).
    Records,
    /// Nothing arrived within the wait (or the broker is unreachable and
    /// the connector is reconnecting).
    Idle,
    /// The source will deliver nothing more: when draining, everything the
    /// broker held has been delivered.
    End,
}

/// A source of records in an external system.
///
/// Each record has a partition (`0..partitions()`) and an offset that
/// grows strictly within its partition. The engine records, per partition,
/// the next offset as the source's place in each checkpoint and opens the
/// connector at that place after a restart.
pub trait SourceConnector: Send {
    /// Number of partitions; fixed for the run.
    fn partitions(&self) -> u32;

    /// Waits at most `wait` for records and appends at most `max` of them
    /// to `out`. Connection loss is handled inside (reconnect with
    /// backoff, report [`Polled::Idle`]); an error is final.
    fn poll(
        &mut self,
        out: &mut Received,
        max: usize,
        wait: Duration,
    ) -> Result<Polled, ConnectError>;

    /// The next offset per partition: where delivery stands after the
    /// records handed out so far (before any record: where the connector
    /// started, from `start` or the broker's stored place). The engine
    /// stores this in each checkpoint and passes it back as `start` after
    /// a restart, so it must be valid for every partition, including those
    /// that have delivered nothing yet.
    fn position(&self) -> Vec<u64>;

    /// A function the checkpoint thread calls once a checkpoint covering
    /// every record before `next` (one offset per partition) is durable:
    /// the connector acknowledges or commits those records to the broker.
    /// It must not block for long; failures are logged, not fatal (the
    /// next checkpoint acknowledges again).
    fn on_checkpoint(&mut self) -> Acknowledge;

    /// The connection state, shared with logs and metrics.
    fn status(&self) -> std::sync::Arc<ConnectorStatus>;
}

/// A destination in an external system.
///
/// Without checkpoints only [`write`](SinkConnector::write) and
/// [`finish`](SinkConnector::finish) are called (epoch 0). Under
/// checkpoints, records written with epoch `n` come before barrier `n`;
/// [`prepare`](SinkConnector::prepare)`(n)` makes them durable at the
/// destination or staged, and its bytes are stored in checkpoint `n`;
/// [`commit`](SinkConnector::commit)`(n)` follows once that checkpoint is
/// durable. After a restart the sink is opened with the part stored in the
/// restored checkpoint, and the engine replays from there: a replayed
/// record has the same id as before.
pub trait SinkConnector: Send {
    /// Sends one batch belonging to epoch `epoch`.
    fn write(&mut self, epoch: u64, out: &Output<'_>) -> Result<(), ConnectError>;

    /// At barrier `epoch`: everything written so far is acknowledged by
    /// the destination (or staged there); returns this sink's part of the
    /// checkpoint.
    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>, ConnectError>;

    /// Checkpoint `epoch` is durable: make what was staged for it visible.
    fn commit(&mut self, epoch: u64) -> Result<(), ConnectError>;

    /// The input has ended: wait for everything sent to be acknowledged.
    fn finish(&mut self) -> Result<(), ConnectError>;

    /// The connection state, shared with logs and metrics.
    fn status(&self) -> std::sync::Arc<ConnectorStatus>;
}
