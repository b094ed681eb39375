//! Operators: the steps of a pipeline as they run on a worker or shard.
//!
//! One small trait with hooks that default to nothing. Operators work on
//! whole batches; per-record work happens inside them in tight loops over
//! column slices. Stateless steps run wherever their input is; windows run
//! on the shard that owns the key.

pub(crate) mod aggregate;
pub mod keyed;
pub mod model;
pub mod running;
pub mod stateless;
pub mod window;

use arrow_array::RecordBatch;

use crate::dead_letter::Rejected;
use crate::EngineError;

/// What an operator knows about the stream around the batch it processes.
pub struct Ctx<'a> {
    /// Records rejected while processing.
    pub rejected: &'a mut Vec<Rejected>,
    /// Largest event time of all source records before the current
    /// micro-batch (`i64::MIN` when none).
    pub prior_max_time: i64,
    /// Largest event time of all source records up to and including the
    /// current micro-batch.
    pub max_time: i64,
}

/// Output of an operator: (output port, batch). Ports number routes; other
/// operators use port 0.
pub type Outputs = Vec<(usize, RecordBatch)>;

/// A running step.
pub trait Operator: Send {
    /// Processes one batch.
    fn process(
        &mut self,
        batch: RecordBatch,
        ctx: &mut Ctx<'_>,
        out: &mut Outputs,
    ) -> Result<(), EngineError>;

    /// Called after every micro-batch of the source has been processed
    /// (even when this operator received nothing from it): the watermark
    /// moved, so windows may fire.
    fn end_of_batch(&mut self, _ctx: &mut Ctx<'_>, _out: &mut Outputs) -> Result<(), EngineError> {
        Ok(())
    }

    /// Called once at the end of the input: flush everything.
    fn end_of_input(&mut self, _ctx: &mut Ctx<'_>, _out: &mut Outputs) -> Result<(), EngineError> {
        Ok(())
    }

    /// Writes the operator's keyed state at a checkpoint barrier, one byte
    /// string per key group. Stateless operators write nothing.
    fn snapshot(&self, _key_groups: u32, _parts: &mut crate::state::GroupParts) {}

    /// Entries of keyed state held (keys, or key and window), for metrics.
    fn state_entries(&self) -> usize {
        0
    }

    /// Adds the state of one key group, as [`Operator::snapshot`] wrote it.
    fn restore(&mut self, _group: &[u8]) -> Result<(), crate::state::Damaged> {
        Ok(())
    }

    /// Captures the keyed state for a checkpoint. Groups for which
    /// `full(group)` holds go to `parts` whole, as [`Operator::snapshot`]
    /// writes them; an operator that tracks its changes writes the other
    /// groups' changes since its previous capture to `deltas` (a group
    /// with no change may have no entry) and returns true. The default
    /// writes every group whole and returns false.
    fn capture(
        &mut self,
        key_groups: u32,
        _full: &dyn Fn(u32) -> bool,
        parts: &mut crate::state::GroupParts,
        _deltas: &mut crate::state::GroupParts,
    ) -> bool {
        self.snapshot(key_groups, parts);
        false
    }

    /// Starts a capture whose writing may be spread over the batches
    /// that follow (see `window/capture.rs`): the state it writes is the
    /// state now, whatever the batches change. `full` is as for
    /// [`Operator::capture`]. Returns false for an operator that does not
    /// spread its capture (call [`Operator::capture`] instead).
    fn begin_capture(&mut self, _key_groups: u32, _full: &dyn Fn(u32) -> bool) -> bool {
        false
    }

    /// Writes about `budget` more bytes of the capture begun by
    /// [`Operator::begin_capture`] and returns it once it is complete (as
    /// [`Operator::capture`] would have written it at the barrier).
    fn continue_capture(&mut self, _budget: usize) -> Option<crate::state::Captured> {
        None
    }

    /// Adds the state of one key group from its chain: a part
    /// [`Operator::snapshot`] wrote, then the deltas
    /// [`Operator::capture`] wrote after it, oldest first.
    fn restore_chain(&mut self, links: &[&[u8]]) -> Result<(), crate::state::Damaged> {
        match links {
            [whole] => self.restore(whole),
            _ => Err(crate::state::Damaged),
        }
    }
}

/// Watermark for a record: the largest event time seen before it, minus
/// the out-of-orderness bound.
#[inline]
pub fn watermark(prior_max: i64, bound: i64) -> i64 {
    if prior_max == i64::MIN {
        i64::MIN
    } else {
        prior_max.saturating_sub(bound)
    }
}
