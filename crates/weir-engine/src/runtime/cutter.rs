//! The cutter: turns what a source reads into micro-batches of whole
//! records and deals them, with checkpoint barriers between them, to the
//! workers in one sequence of slots.
//!
//! Batching is natural: the cutter hands over what it was given, up to
//! `batch_rows` records per batch, and never waits to fill one. It only
//! finds record boundaries (`frame`), so the source thread stays cheap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use super::messages::{BarrierKind, Chunk, Work};
use super::stop::{Ended, Stop};
use crate::checkpointing::{CoordMsg, SourcePosition};
use crate::frame::{next_record, Next};
use crate::telemetry::RunMetrics;

/// Barrier injection, as the source thread does it.
pub(crate) struct Barriers {
    pub coord: Sender<CoordMsg>,
    pub interval: Duration,
    pub next_due: Instant,
    pub next_id: u64,
    /// Last completed checkpoint: one checkpoint is in flight at a time.
    pub completed: Arc<AtomicU64>,
}

/// Cuts buffers into micro-batches of at most `batch_rows` whole records.
pub(crate) struct Cutter {
    pub txs: Vec<Sender<Work>>,
    /// Slots dealt so far (batches and barriers).
    seq: u64,
    /// Position of the next record.
    pub position: u64,
    /// Records still to pass over (already covered by the checkpoint).
    skip: u64,
    /// Records handed to workers.
    pub sent: u64,
    framing: weir_config::Framing,
    pub batch_rows: usize,
    pub barriers: Option<Barriers>,
    /// Whether the position is a record count (byte sources), so barriers
    /// can be placed between any two batches.
    count_position: bool,
    pub metrics: Option<Arc<RunMetrics>>,
    /// Looked at between batches.
    stop: Option<Stop>,
}

impl Cutter {
    /// A cutter for records framed as `framing`. `count_position`: the
    /// position is the record count (byte sources), so the cutter places
    /// barriers itself; else the source says where it stands. `skip`
    /// records are passed over first (a restored checkpoint covers them).
    pub fn new(
        txs: Vec<Sender<Work>>,
        framing: weir_config::Framing,
        batch_rows: usize,
        barriers: Option<Barriers>,
        count_position: bool,
        skip: u64,
        metrics: Option<Arc<RunMetrics>>,
    ) -> Cutter {
        Cutter {
            txs,
            seq: 0,
            position: 0,
            skip,
            sent: 0,
            framing,
            batch_rows,
            barriers,
            count_position,
            metrics,
            stop: None,
        }
    }

    /// Makes the cutter stop cutting once `stop` is requested.
    pub fn with_stop(mut self, stop: Option<Stop>) -> Cutter {
        self.stop = stop;
        self
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stop.as_ref().is_some_and(Stop::requested)
    }

    /// Whether the workers are gone (they failed; the run reports why).
    pub fn stopped(&self) -> bool {
        self.txs.is_empty()
    }

    /// Cuts and sends every complete record of `data`; returns false when
    /// the workers are gone.
    pub fn cut(&mut self, data: Arc<Vec<u8>>, at_end: bool, created: Option<Instant>) -> bool {
        let used = self.cut_with(data, at_end, created);
        used != usize::MAX
    }

    /// Like [`cut`](Self::cut) for a buffer that may end inside a record:
    /// returns the bytes used (all of them when the workers are gone).
    pub fn cut_partial(&mut self, data: Arc<Vec<u8>>, at_end: bool) -> usize {
        let len = data.len();
        match self.cut_with(data, at_end, None) {
            usize::MAX => len,
            used => used,
        }
    }

    /// Deals the next slot to its worker; false when the workers are gone.
    fn deal(&mut self, work: Work) -> bool {
        if self.txs.is_empty() {
            return false;
        }
        let worker = (self.seq % self.txs.len() as u64) as usize;
        if self.txs[worker].send(work).is_err() {
            self.txs.clear();
            return false;
        }
        self.seq += 1;
        true
    }

    /// Injects a barrier when one is due and none is in flight. `position`
    /// is where the source stands (`None`: the record count).
    pub fn maybe_barrier(&mut self, position: Option<SourcePosition>) {
        let Some(b) = &self.barriers else { return };
        let now = Instant::now();
        if now < b.next_due || b.completed.load(Ordering::Acquire) + 1 != b.next_id {
            return;
        }
        let position = position.unwrap_or(SourcePosition::Records(self.position));
        self.barrier(position, BarrierKind::Checkpoint);
    }

    fn barrier(&mut self, position: SourcePosition, kind: BarrierKind) {
        let Some(b) = &mut self.barriers else {
            if kind == BarrierKind::Stop {
                // No checkpoint, but the threads must not flush as at the
                // end of the input.
                for _ in 0..self.txs.len() {
                    self.deal(Work::Barrier { id: 0, kind });
                }
            }
            return;
        };
        let id = b.next_id;
        b.next_id += 1;
        b.next_due = Instant::now() + b.interval;
        let _ = b.coord.send(CoordMsg::Begin {
            id,
            source: position,
            at: Instant::now(),
        });
        // Every worker gets a copy, in consecutive slots: each passes it on
        // after what it produced before it, and shards, reading slots in
        // order, meet the copies together.
        for _ in 0..self.txs.len() {
            self.deal(Work::Barrier { id, kind });
        }
    }

    /// At the end of the input: the barrier after which the shards flush
    /// their windows, so the final checkpoint commits everything. After a
    /// stop request: the barrier that takes the last checkpoint without
    /// flushing anything.
    pub fn final_barrier(&mut self, position: SourcePosition, ended: Ended) {
        match ended {
            Ended::Input => self.barrier(position, BarrierKind::EndOfInput),
            Ended::Stopped => self.barrier(position, BarrierKind::Stop),
            Ended::Abandoned => {}
        }
    }

    /// Returns the bytes consumed, or `usize::MAX` when the workers are gone.
    fn cut_with(&mut self, data: Arc<Vec<u8>>, at_end: bool, created: Option<Instant>) -> usize {
        let mut offset = 0;
        while offset < data.len() {
            // A byte source's position is the record count, so it may
            // stop between any two batches; a connector's records are all
            // cut, as its position is already past them.
            if self.count_position && self.stop_requested() {
                return offset;
            }
            // Records a restored checkpoint already covers.
            while self.skip > 0 && offset < data.len() {
                match next_record(self.framing, &data[offset..], at_end) {
                    Next::Record { consumed, .. } | Next::Corrupt { consumed, .. } => {
                        offset += consumed.max(1);
                        self.skip -= 1;
                        self.position += 1;
                    }
                    Next::Incomplete => return offset,
                }
            }
            let start = offset;
            let mut records = 0;
            while records < self.batch_rows && offset < data.len() {
                match next_record(self.framing, &data[offset..], at_end) {
                    Next::Record { consumed, .. } | Next::Corrupt { consumed, .. } => {
                        offset += consumed.max(1);
                        records += 1;
                    }
                    Next::Incomplete => break,
                }
            }
            if records == 0 {
                break;
            }
            let chunk = Chunk {
                first_position: self.position,
                records,
                data: data.clone(),
                start,
                end: offset,
                created,
                arrived: Instant::now(),
            };
            if !self.deal(Work::Chunk(chunk)) {
                return usize::MAX;
            }
            if let Some(m) = &self.metrics {
                m.source_records.add(records as u64);
                m.source_batch.observe(records as f64);
            }
            self.position += records as u64;
            self.sent += records as u64;
            if self.count_position {
                self.maybe_barrier(None);
            }
        }
        offset
    }
}
