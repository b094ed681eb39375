//! What the threads of a run send each other.
//!
//! The source deals [`Work`] to workers (micro-batches and barriers, one
//! slot each in a single sequence); each worker sends every shard one
//! [`ShardMsg`] per slot; workers and shards send [`SinkMsg`]s to each sink.
//! A slot's place in the sequence is what keeps the order of records per
//! key, so nothing here carries a sequence number.

use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;

/// A micro-batch of whole records: a range of a shared buffer.
pub(crate) struct Chunk {
    /// Source position of the first record (positions are consecutive).
    pub first_position: u64,
    pub records: usize,
    pub data: Arc<Vec<u8>>,
    pub start: usize,
    pub end: usize,
    /// When the oldest record was created, for inputs that say.
    pub created: Option<Instant>,
    /// When the source handed it over.
    pub arrived: Instant,
}

/// What the source deals to a worker: a micro-batch, or a checkpoint
/// barrier occupying a slot in the batch sequence.
pub(crate) enum Work {
    Chunk(Chunk),
    Barrier { id: u64, last: bool },
}

/// Everything a shard receives for one micro-batch, or a barrier.
pub(crate) struct ShardMsg {
    /// Newest event time of the whole micro-batch (`i64::MIN`: none).
    pub max_time: i64,
    /// The rows of this shard's key groups, per `key_by` step.
    pub batches: Vec<(usize, RecordBatch)>,
    pub created: Option<Instant>,
    pub arrived: Instant,
    /// A barrier `(id, last)` instead of data.
    pub barrier: Option<(u64, bool)>,
}

impl ShardMsg {
    pub fn barrier(id: u64, last: bool) -> ShardMsg {
        ShardMsg {
            max_time: i64::MIN,
            batches: Vec::new(),
            created: None,
            arrived: Instant::now(),
            barrier: Some((id, last)),
        }
    }
}

/// What a sink receives; `producer` numbers workers, then shards.
pub(crate) enum SinkMsg {
    Data {
        batch: RecordBatch,
        created: Option<Instant>,
        /// When the records' micro-batch left the source.
        arrived: Instant,
        /// Newest event time of the micro-batch (`i64::MIN`: none).
        max_time: i64,
        producer: usize,
    },
    Barrier {
        id: u64,
        producer: usize,
        last: bool,
    },
}
