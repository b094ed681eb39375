//! Sink threads, one per sink, and the dead-letter thread.
//!
//! Every worker and shard sends a sink its batches over a bounded channel;
//! the sink writes each with one buffered write. Under checkpoints the
//! sink also takes part in the barrier protocol: data from a producer
//! belongs to the epoch its next barrier closes; once every producer's
//! barrier is in, the sink stages the epoch and reports its part to the
//! coordinator, and it commits when the coordinator says the checkpoint is
//! durable.
//!
//! An embedding program can watch what the sinks write through a
//! [`SinkProbe`] (`RunOptions::sink_probe`): the sink thread hands it each
//! batch right after writing it. This is how `weir bench` measures the
//! latency of every output record from its own creation time, which the
//! engine does not know (it only carries one creation time per
//! micro-batch): the probe reads the record's id and looks its creation
//! up. The engine knows nothing of what a probe does with the batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use crossbeam_channel::{Receiver, Sender};
use hdrhistogram::Histogram;

use super::messages::{DeadLetterMsg, SinkMsg};
use crate::checkpointing::CoordMsg;
use crate::dead_letter::DeadLetterWriter;
use crate::sink::SinkWriter;
use crate::telemetry::RunMetrics;
use crate::EngineError;

/// A sink's part in checkpoints.
pub(crate) struct SinkTxn {
    pub coord: Sender<CoordMsg>,
    pub commits: Receiver<u64>,
    pub sink: usize,
    /// Threads that send the sink data and barriers.
    pub producers: usize,
    /// The epoch data belongs to until a producer's first barrier.
    pub first_epoch: u64,
}

/// Records written and, for inputs that carry creation times, their
/// creation-to-sink latency in microseconds.
pub(crate) type SinkResult = (u64, Option<Histogram<u64>>);

/// Sees every batch a sink writes, right after the sink thread wrote it.
///
/// Called once per batch (not per record) on the sink's thread, with the
/// sink's name and the batch as the sink received it: every column of its
/// input, before the sink keeps only its `columns` (hidden columns
/// included). Under checkpoints "written" means handed to the sink: a
/// transactional sink (a file) has only staged it, and its output becomes
/// visible when the checkpoint covering it commits. A probe must be cheap:
/// the sink thread waits for it, so a slow one holds back the pipeline.
pub trait SinkProbe: Send + Sync {
    /// `batch` was written by the sink `sink`.
    fn written(&self, sink: &str, batch: &RecordBatch);
}

impl std::fmt::Debug for dyn SinkProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SinkProbe(..)")
    }
}

/// The sink's name and the probe to call after each batch.
pub(crate) type Probe = (String, Arc<dyn SinkProbe>);

/// Creation-to-sink latencies, the sink's series and the embedding
/// program's probe.
struct Observer {
    hist: Option<Histogram<u64>>,
    metrics: Option<(Arc<RunMetrics>, usize)>,
    probe: Option<Probe>,
}

impl Observer {
    fn written(
        &mut self,
        batch: &RecordBatch,
        created: Option<Instant>,
        arrived: Instant,
        max_time: i64,
    ) {
        let rows = batch.num_rows();
        if let Some((name, probe)) = &self.probe {
            probe.written(name, batch);
        }
        if let Some((m, i)) = &self.metrics {
            m.sink_batch(*i, rows, arrived, max_time);
        }
        let Some(created) = created else { return };
        let us = created.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let h = self.hist.get_or_insert_with(|| {
            // Bounds 1 µs to 60 s at 3 significant figures are valid.
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
        });
        let _ = h.record_n(us.max(1), rows as u64);
    }
}

pub(crate) fn sink_loop(
    mut writer: SinkWriter,
    rx: Receiver<SinkMsg>,
    txn: Option<SinkTxn>,
    metrics: Option<(Arc<RunMetrics>, usize)>,
    probe: Option<Probe>,
) -> Result<SinkResult, EngineError> {
    let mut seen = Observer {
        hist: None,
        metrics,
        probe,
    };
    match txn {
        None => {
            for msg in rx {
                if let SinkMsg::Data {
                    batch,
                    created,
                    arrived,
                    max_time,
                    ..
                } = msg
                {
                    writer.write(&batch)?;
                    seen.written(&batch, created, arrived, max_time);
                }
            }
        }
        Some(txn) => transactional(&mut writer, rx, txn, &mut seen)?,
    }
    Ok((writer.finish()?, seen.hist))
}

/// The sink loop under checkpoints.
fn transactional(
    writer: &mut SinkWriter,
    rx: Receiver<SinkMsg>,
    txn: SinkTxn,
    seen: &mut Observer,
) -> Result<(), EngineError> {
    let mut epoch = vec![txn.first_epoch; txn.producers];
    let mut barriers_in: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_staged: Option<u64> = None;
    let never = crossbeam_channel::never();
    let mut data_open = true;
    loop {
        let data = if data_open { &rx } else { &never };
        crossbeam_channel::select! {
            recv(data) -> msg => match msg {
                Ok(SinkMsg::Data { batch, created, arrived, max_time, producer }) => {
                    writer.write_epoch(epoch[producer], &batch)?;
                    seen.written(&batch, created, arrived, max_time);
                }
                Ok(SinkMsg::Barrier { id, producer, kind }) => {
                    epoch[producer] = id + 1;
                    let n = barriers_in.entry(id).or_insert(0);
                    *n += 1;
                    if *n == txn.producers {
                        barriers_in.remove(&id);
                        let part = writer.prepare(id)?;
                        let _ = txn.coord.send(CoordMsg::Sink { id, sink: txn.sink, part });
                        if kind.is_final() {
                            last_staged = Some(id);
                        }
                    }
                }
                Err(_) => {
                    data_open = false;
                    if last_staged.is_none() {
                        return Ok(()); // stopped early: nothing more will be committed
                    }
                }
            },
            recv(txn.commits) -> id => match id {
                Ok(id) => {
                    writer.commit(id)?;
                    if last_staged == Some(id) {
                        return Ok(());
                    }
                }
                Err(_) => return Ok(()), // the coordinator stopped; it reports why
            },
        }
    }
}

/// The dead letters' part in checkpoints: once every producer's barrier
/// is in, everything rejected before it is durable, and the coordinator
/// may complete the checkpoint.
pub(crate) struct DeadLetterTxn {
    pub coord: Sender<CoordMsg>,
    pub producers: usize,
}

/// Writes rejected records as they come; returns how many. Under
/// checkpoints, syncs them at each barrier before the checkpoint that
/// covers their input can complete, so a restart never skips a record
/// whose dead letter was lost.
pub(crate) fn dead_letter_loop(
    mut writer: DeadLetterWriter,
    rx: Receiver<DeadLetterMsg>,
    txn: Option<DeadLetterTxn>,
    metrics: Option<Arc<RunMetrics>>,
) -> Result<u64, EngineError> {
    let mut barriers_in: BTreeMap<u64, usize> = BTreeMap::new();
    for msg in rx {
        match msg {
            DeadLetterMsg::Rejected(batch) => {
                if let Some(m) = &metrics {
                    m.dead_letters(&batch);
                }
                for r in &batch {
                    writer.write(r)?;
                }
                writer.commit()?;
            }
            DeadLetterMsg::Barrier { id } => {
                let Some(txn) = &txn else { continue };
                let n = barriers_in.entry(id).or_insert(0);
                *n += 1;
                if *n == txn.producers {
                    barriers_in.remove(&id);
                    writer.sync()?;
                    let _ = txn.coord.send(CoordMsg::DeadLetters { id });
                }
            }
        }
    }
    writer.finish()
}
