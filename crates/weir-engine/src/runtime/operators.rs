//! Running operators on a thread: what workers and shards share.
//!
//! A [`ThreadCtx`] is what a worker or shard thread knows of the run; a
//! [`Runner`] pushes a batch through that thread's operators depth first,
//! counting records per step and handing batches to sinks and (on workers)
//! to the key split.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use crossbeam_channel::Sender;
use weir_config::Pipeline;

use super::messages::{BarrierKind, DeadLetterMsg, SinkMsg};
use super::plan::{Consumer, Op, Plan};
use super::FirstRecord;
use crate::checkpointing::{CoordMsg, Restore};
use crate::dead_letter::Rejected;
use crate::ops::{Ctx, Outputs};
use crate::telemetry::RunMetrics;
use crate::EngineError;

/// Per-step record counters, bumped once per batch.
pub(crate) struct Counters {
    pub steps: Vec<AtomicU64>,
    pub source: AtomicU64,
    pub first_record: AtomicBool,
    /// The run's series (none without telemetry).
    pub metrics: Option<Arc<RunMetrics>>,
}

impl Counters {
    pub fn new(p: &Pipeline, metrics: Option<Arc<RunMetrics>>) -> Counters {
        Counters {
            steps: p.steps.iter().map(|_| AtomicU64::new(0)).collect(),
            source: AtomicU64::new(0),
            first_record: AtomicBool::new(false),
            metrics,
        }
    }
}

/// What a worker or shard thread knows of the run.
pub(crate) struct ThreadCtx<'p> {
    pub pipeline: &'p Pipeline,
    pub plan: &'p Plan,
    pub sinks: Vec<Sender<SinkMsg>>,
    pub dlq: Sender<DeadLetterMsg>,
    pub counters: &'p Counters,
    /// This thread's number among the sinks' producers.
    pub producer: usize,
    /// The checkpoint coordinator, when checkpointing.
    pub coord: Option<Sender<CoordMsg>>,
    pub restore: &'p Restore,
    pub on_first_record: Option<&'p FirstRecord>,
}

impl ThreadCtx<'_> {
    /// Sends barrier `id` to every sink and to the dead letters, after
    /// everything this thread produced and rejected before it.
    pub fn barrier_downstream(&self, id: u64, kind: BarrierKind) -> Result<(), EngineError> {
        for (s, tx) in self.sinks.iter().enumerate() {
            let msg = SinkMsg::Barrier {
                id,
                producer: self.producer,
                kind,
            };
            if tx.send(msg).is_err() {
                return Err(self.sink_stopped(s));
            }
        }
        if self.dlq.send(DeadLetterMsg::Barrier { id }).is_err() {
            return Err(EngineError::stopped("the dead-letter writer"));
        }
        Ok(())
    }

    /// A closed sink channel means the sink failed; its own error is what
    /// the run reports.
    fn sink_stopped(&self, sink: usize) -> EngineError {
        EngineError::stopped(format!("sink {}", self.pipeline.sinks[sink].name))
    }

    /// Hands rejected records to the dead-letter thread.
    pub fn reject(&self, rejected: &mut Vec<Rejected>) {
        if !rejected.is_empty() {
            // A closed channel means the dead-letter thread failed; it
            // reports why.
            let _ = self
                .dlq
                .send(DeadLetterMsg::Rejected(std::mem::take(rejected)));
        }
    }
}

/// Pushes batches through one thread's operators.
pub(crate) struct Runner<'a, 'p> {
    pub ctx: &'a ThreadCtx<'p>,
    pub ops: Vec<Op>,
    /// Per shard, batches leaving through `key_by` steps in this micro-batch.
    pub exchange: Vec<Vec<(usize, RecordBatch)>>,
    pub created: Option<Instant>,
    /// When the current micro-batch left the source.
    pub arrived: Instant,
    /// Largest event time seen (shards; workers leave it at the minimum).
    pub max_time: i64,
}

impl<'a, 'p> Runner<'a, 'p> {
    pub fn new(ctx: &'a ThreadCtx<'p>, ops: Vec<Op>, max_time: i64) -> Self {
        Runner {
            ctx,
            ops,
            exchange: Vec::new(),
            created: None,
            arrived: Instant::now(),
            max_time,
        }
    }

    /// Passes the outputs of step `from` to its consumers.
    pub fn deliver(
        &mut self,
        from: usize,
        outputs: Outputs,
        c: &mut Ctx<'_>,
    ) -> Result<(), EngineError> {
        for (port, batch) in outputs {
            if batch.num_rows() == 0 {
                continue;
            }
            self.ctx.counters.steps[from].fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            if let Some(m) = &self.ctx.counters.metrics {
                m.step_out[from].add(batch.num_rows() as u64);
                if m.taps.tapped(from) {
                    m.taps.offer(from, &batch);
                }
            }
            // The plan outlives the runner: its consumer lists are
            // borrowed apart from `self`.
            let plan: &'p Plan = self.ctx.plan;
            for &t in &plan.graph.children[from][port] {
                match t {
                    Consumer::Sink(s) => {
                        let msg = SinkMsg::Data {
                            batch: batch.clone(),
                            created: self.created,
                            arrived: self.arrived,
                            max_time: c.max_time,
                            producer: self.ctx.producer,
                        };
                        if self.ctx.sinks[s].send(msg).is_err() {
                            return Err(self.ctx.sink_stopped(s));
                        }
                    }
                    Consumer::Step(i) => self.push(i, batch.clone(), c)?,
                }
            }
        }
        Ok(())
    }

    fn push(
        &mut self,
        step: usize,
        batch: RecordBatch,
        c: &mut Ctx<'_>,
    ) -> Result<(), EngineError> {
        match &mut self.ops[step] {
            Op::Split(p) => {
                if let Some(m) = &self.ctx.counters.metrics {
                    m.step_in[step].add(batch.num_rows() as u64);
                }
                // Counted when the shard takes the parts over (`deliver`).
                let parts = p.split(&batch, c.rejected)?;
                for (s, part) in parts.into_iter().enumerate() {
                    if part.num_rows() > 0 {
                        self.exchange[s].push((step, part));
                    }
                }
                Ok(())
            }
            Op::Run(op) => {
                let mut out = Vec::new();
                let started = self
                    .ctx
                    .counters
                    .metrics
                    .as_ref()
                    .map(|_| (batch.num_rows(), Instant::now()));
                op.process(batch, c, &mut out)?;
                if let (Some(m), Some((rows, at))) = (&self.ctx.counters.metrics, started) {
                    m.step_processed(step, rows, at);
                }
                self.deliver(step, out, c)
            }
            Op::Decode | Op::Absent => Err(EngineError::invariant(
                format!("step {}", self.ctx.pipeline.steps[step].name),
                "reached on a thread that does not run it",
            )),
        }
    }

    /// Runs a lifecycle hook on every operator, in pipeline order, passing
    /// what it emits downstream.
    pub fn hook(
        &mut self,
        order: &[usize],
        c: &mut Ctx<'_>,
        end_of_input: bool,
    ) -> Result<(), EngineError> {
        for &i in order {
            let mut out = Vec::new();
            if let Op::Run(op) = &mut self.ops[i] {
                if end_of_input {
                    op.end_of_input(c, &mut out)?;
                } else {
                    op.end_of_batch(c, &mut out)?;
                }
            }
            self.deliver(i, out, c)?;
        }
        Ok(())
    }

    /// Runs the end-of-input hooks and hands over what they rejected.
    pub fn end_of_input(
        &mut self,
        order: &[usize],
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), EngineError> {
        let max_time = self.max_time;
        let mut c = Ctx {
            rejected,
            prior_max_time: max_time,
            max_time,
        };
        self.created = None;
        self.hook(order, &mut c, true)?;
        self.ctx.reject(rejected);
        Ok(())
    }
}
