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

/// What a barrier does besides taking a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarrierKind {
    /// A checkpoint while the input goes on.
    Checkpoint,
    /// The input ended: keyed steps flush (windows fire) before it, and the
    /// checkpoint it takes commits everything.
    EndOfInput,
    /// A stop was requested: nothing is flushed (a restart resumes from
    /// the checkpoint it takes); everything after it ends.
    Stop,
}

impl BarrierKind {
    /// Whether nothing follows the barrier.
    pub fn is_final(self) -> bool {
        self != BarrierKind::Checkpoint
    }
}

/// What the source deals to a worker: a micro-batch, or a checkpoint
/// barrier occupying a slot in the batch sequence. Without checkpoints
/// only a stop sends a barrier (id 0), so that nothing is flushed.
pub(crate) enum Work {
    Chunk(Chunk),
    Barrier { id: u64, kind: BarrierKind },
}

/// Everything a shard receives for one micro-batch, or a barrier.
pub(crate) struct ShardMsg {
    /// Newest event time of the whole micro-batch (`i64::MIN`: none).
    pub max_time: i64,
    /// The rows of this shard's key groups, per `key_by` step.
    pub batches: Vec<(usize, RecordBatch)>,
    pub created: Option<Instant>,
    pub arrived: Instant,
    /// A barrier instead of data.
    pub barrier: Option<(u64, BarrierKind)>,
}

impl ShardMsg {
    pub fn barrier(id: u64, kind: BarrierKind) -> ShardMsg {
        ShardMsg {
            max_time: i64::MIN,
            batches: Vec::new(),
            created: None,
            arrived: Instant::now(),
            barrier: Some((id, kind)),
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
        kind: BarrierKind,
    },
}

/// What the dead-letter thread receives: rejected records, and barriers
/// from every producer (workers, then shards) after the records each
/// rejected before them.
pub(crate) enum DeadLetterMsg {
    Rejected(Vec<crate::dead_letter::Rejected>),
    Barrier { id: u64 },
}
