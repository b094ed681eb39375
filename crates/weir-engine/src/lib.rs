//! The weir runtime.
//!
//! A validated [`weir_config::Pipeline`] becomes threads: one source thread
//! cuts the input into micro-batches of whole records (natural batching: it
//! hands over what is available, up to `batch_rows`, and never waits to fill
//! one); *workers* decode batches and run the steps before `key_by`;
//! *shards* own key groups and run the keyed steps (windows, models after
//! them) with their state, shared-nothing; each sink and the dead-letter
//! destination has a writer thread. See `docs/ARCHITECTURE.md`.

#![deny(missing_docs)]

mod checkpointing;
pub mod connectors;
pub mod dead_letter;
pub mod decode;
pub mod encode;
mod error;
pub mod frame;
pub mod hash;
pub mod log_sink;
pub mod ops;
pub(crate) mod prefetch;
mod runtime;
pub mod sink;
pub mod state;
pub mod telemetry;
pub mod txn_file;

/// Arrow's arrays and record batches, as a [`SinkProbe`] sees them.
pub use arrow_array;
pub use checkpointing::{CheckpointReport, CheckpointStat};
pub use error::{EngineError, ErrorClass};
pub use runtime::{
    run, Arrival, ConnectorReport, FirstRecord, Input, OpenConnector, RunOptions, RunSummary,
    SinkProbe, StepCount, Stop,
};
