//! Threads, channels and the order of things.
//!
//! Micro-batch `k` of the source goes to worker `k % W`. A worker decodes it,
//! runs the steps before `key_by`, splits the rows by key group and sends
//! every shard exactly one message for batch `k` (possibly empty). A shard
//! reads its inputs round-robin in batch order — batch `k` from worker
//! `k % W` — so each shard sees its keys' records in source order, whatever
//! the number of shards or threads. That order, plus per-record watermarks,
//! is what makes results independent of the shard count.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use hdrhistogram::Histogram;
use weir_config::{Pipeline, SourceKind, StepKind, WindowKind};

use crate::dead_letter::{DeadLetterWriter, Rejected};
use crate::decode::Decoder;
use crate::frame::{next_record, Next};
use crate::ops::keyed::Partitioner;
use crate::ops::model::ModelStep;
use crate::ops::stateless::{Derive, Filter, Route, Select};
use crate::ops::window::{FixedWindows, SlidingWindow};
use crate::ops::{Ctx, Operator, Outputs};
use crate::sink::SinkWriter;
use crate::EngineError;

/// Records handed over by the embedding program, with the time they were
/// created (for latency measurement).
#[derive(Debug)]
pub struct Arrival {
    /// Whole records, framed as the source declares.
    pub bytes: Vec<u8>,
    /// Number of records in `bytes`.
    pub records: usize,
    /// When the oldest of them was created.
    pub created: Instant,
}

/// Where the source's bytes come from.
#[derive(Debug, Default)]
pub enum Input {
    /// As the pipeline file says (file or stdin).
    #[default]
    Configured,
    /// An in-memory buffer of framed records.
    Bytes(Arc<Vec<u8>>),
    /// Arrivals over a channel, until it closes.
    Stream(Receiver<Arrival>),
}

/// How to run a pipeline.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Overrides the pipeline's shard count (0 or `None`: as configured).
    pub shards: Option<usize>,
    /// Input override.
    pub input: Input,
}

/// Records out of one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepCount {
    /// Step or sink name.
    pub name: String,
    /// Records it emitted (sinks: wrote).
    pub records: u64,
}

/// What a run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Records read from the source.
    pub source_records: u64,
    /// Records out of each step, in pipeline order.
    pub steps: Vec<StepCount>,
    /// Records written by each sink.
    pub sinks: Vec<StepCount>,
    /// Records sent to the dead-letter destination.
    pub dead_letters: u64,
    /// Shards used.
    pub shards: usize,
    /// Wall-clock time from start to the last sink flush.
    pub elapsed: Duration,
    /// Creation-to-sink latency per record in microseconds, for inputs that
    /// carry creation times.
    pub latency_us: Option<Histogram<u64>>,
}

/// A micro-batch of whole records.
struct Chunk {
    first_position: u64,
    records: usize,
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    created: Option<Instant>,
}

/// Everything a shard receives for one micro-batch.
struct ShardMsg {
    max_time: i64,
    batches: Vec<(usize, RecordBatch)>,
    created: Option<Instant>,
}

struct SinkMsg {
    batch: RecordBatch,
    created: Option<Instant>,
}

/// Where an operator's output goes.
#[derive(Debug, Clone, Copy)]
enum Target {
    Step(usize),
    Sink(usize),
}

/// The pipeline's steps as a tree of indices.
struct Graph {
    /// Per step, per output port, its consumers.
    children: Vec<Vec<Vec<Target>>>,
    decode: usize,
    /// Steps that shards run (keyed), in pipeline order.
    keyed: Vec<usize>,
    /// Steps that workers run, in pipeline order (decode first).
    unkeyed: Vec<usize>,
}

fn graph(p: &Pipeline) -> Result<Graph, EngineError> {
    let index: HashMap<&str, usize> = p
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let ports = |s: &weir_config::Step| match &s.kind {
        StepKind::Route { routes } => routes.len(),
        _ => 1,
    };
    let mut children: Vec<Vec<Vec<Target>>> =
        p.steps.iter().map(|s| vec![Vec::new(); ports(s)]).collect();
    let port_of = |parent: usize, output: &Option<String>| -> usize {
        match (&p.steps[parent].kind, output) {
            (StepKind::Route { routes }, Some(o)) => {
                routes.iter().position(|(n, _)| n == o).unwrap_or(0)
            }
            _ => 0,
        }
    };
    let mut decode = None;
    for (i, s) in p.steps.iter().enumerate() {
        match index.get(s.input.node.as_str()) {
            Some(&parent) => {
                let port = port_of(parent, &s.input.output);
                children[parent][port].push(Target::Step(i));
            }
            None => decode = Some(i),
        }
    }
    for (i, s) in p.sinks.iter().enumerate() {
        let parent = *index
            .get(s.input.node.as_str())
            .ok_or_else(|| EngineError::build(&s.name, "input is not a step"))?;
        let port = port_of(parent, &s.input.output);
        children[parent][port].push(Target::Sink(i));
    }
    let decode =
        decode.ok_or_else(|| EngineError::build(&p.name, "no decode step reads the source"))?;
    // A key_by runs on the workers (it splits); what follows it on the shards.
    let keyed = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| s.keyed && !matches!(s.kind, StepKind::KeyBy { .. }))
        .map(|(i, _)| i)
        .collect();
    let unkeyed = p
        .steps
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.keyed || matches!(s.kind, StepKind::KeyBy { .. }))
        .map(|(i, _)| i)
        .collect();
    Ok(Graph {
        children,
        decode,
        keyed,
        unkeyed,
    })
}

/// Per-step record counters, bumped once per batch.
struct Counters {
    steps: Vec<AtomicU64>,
    source: AtomicU64,
}

/// Runs a pipeline to the end of its input.
pub fn run(pipeline: &Pipeline, options: RunOptions) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let g = Arc::new(graph(pipeline)?);
    let configured = options
        .shards
        .filter(|&s| s > 0)
        .unwrap_or(pipeline.settings.shards);
    let shards = if configured == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        configured
    };
    let shards = shards.clamp(1, pipeline.settings.key_groups as usize);
    let workers = shards;
    let has_keyed = !g.keyed.is_empty();

    // Models load once and are shared by every thread.
    let mut models = HashMap::new();
    for s in &pipeline.steps {
        if let StepKind::Model(m) = &s.kind {
            let model =
                weir_model::OnnxModel::load(&m.path).map_err(|e| EngineError::build(&s.name, e))?;
            models.insert(s.name.clone(), Arc::new(model));
        }
    }
    let models = Arc::new(models);
    // Build one set of operators up front so configuration errors surface
    // before any thread starts.
    build_ops(pipeline, &g.unkeyed, shards, &models)?;
    build_ops(pipeline, &g.keyed, shards, &models)?;

    let counters = Arc::new(Counters {
        steps: pipeline.steps.iter().map(|_| AtomicU64::new(0)).collect(),
        source: AtomicU64::new(0),
    });

    // Sinks and dead letters.
    let mut sink_txs = Vec::new();
    let mut sink_rxs = Vec::new();
    for _ in &pipeline.sinks {
        let (tx, rx) = bounded::<SinkMsg>(64);
        sink_txs.push(tx);
        sink_rxs.push(rx);
    }
    let mut writers = Vec::new();
    for s in &pipeline.sinks {
        writers.push(SinkWriter::open(s)?);
    }
    let dead_letter = match &pipeline.dead_letter.log {
        Some((dir, stream)) => DeadLetterWriter::log(dir, stream)?,
        None => DeadLetterWriter::create(&pipeline.dead_letter.path)?,
    };
    let (dlq_tx, dlq_rx) = unbounded::<Vec<Rejected>>();

    let mut chunk_txs = Vec::new();
    let mut chunk_rxs = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = bounded::<Chunk>(4);
        chunk_txs.push(tx);
        chunk_rxs.push(rx);
    }
    // shard_rxs[s][w]: messages from worker w to shard s.
    let mut shard_txs: Vec<Vec<Sender<ShardMsg>>> = (0..workers).map(|_| Vec::new()).collect();
    let mut shard_rxs: Vec<Vec<Receiver<ShardMsg>>> = (0..shards).map(|_| Vec::new()).collect();
    if has_keyed {
        for txs in shard_txs.iter_mut() {
            for rxs in shard_rxs.iter_mut() {
                let (tx, rx) = bounded::<ShardMsg>(8);
                txs.push(tx);
                rxs.push(rx);
            }
        }
    }

    let result = std::thread::scope(|scope| -> Result<RunSummary, EngineError> {
        let mut sink_handles = Vec::new();
        for (writer, rx) in writers.into_iter().zip(sink_rxs) {
            sink_handles.push(
                std::thread::Builder::new()
                    .name("weir-sink".into())
                    .spawn_scoped(scope, move || sink_loop(writer, rx))
                    .map_err(|e| EngineError::io("cannot start sink thread", e))?,
            );
        }
        let dlq_handle = std::thread::Builder::new()
            .name("weir-dead-letter".into())
            .spawn_scoped(scope, move || dead_letter_loop(dead_letter, dlq_rx))
            .map_err(|e| EngineError::io("cannot start dead-letter thread", e))?;

        let mut worker_handles = Vec::new();
        for (w, (rx, txs)) in chunk_rxs.into_iter().zip(shard_txs).enumerate() {
            let ctx = WorkerCtx {
                pipeline,
                graph: g.clone(),
                models: models.clone(),
                shards,
                sinks: sink_txs.clone(),
                dlq: dlq_tx.clone(),
                counters: counters.clone(),
            };
            worker_handles.push(
                std::thread::Builder::new()
                    .name(format!("weir-worker-{w}"))
                    .spawn_scoped(scope, move || worker_loop(ctx, rx, txs))
                    .map_err(|e| EngineError::io("cannot start worker thread", e))?,
            );
        }
        let mut shard_handles = Vec::new();
        for (s, rxs) in shard_rxs.into_iter().enumerate() {
            if !has_keyed {
                break;
            }
            let ctx = WorkerCtx {
                pipeline,
                graph: g.clone(),
                models: models.clone(),
                shards,
                sinks: sink_txs.clone(),
                dlq: dlq_tx.clone(),
                counters: counters.clone(),
            };
            shard_handles.push(
                std::thread::Builder::new()
                    .name(format!("weir-shard-{s}"))
                    .spawn_scoped(scope, move || shard_loop(ctx, rxs))
                    .map_err(|e| EngineError::io("cannot start shard thread", e))?,
            );
        }
        drop(sink_txs);
        drop(dlq_tx);

        let source_result = read_source(pipeline, options.input, chunk_txs, &counters);
        let mut first_error = source_result.err();
        let mut keep = |r: std::thread::Result<Result<(), EngineError>>, what: &str| match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => EngineError::keep_first(&mut first_error, e),
            Err(_) => EngineError::keep_first(
                &mut first_error,
                EngineError::Worker(format!("{what} thread panicked")),
            ),
        };
        for h in worker_handles {
            keep(h.join(), "worker");
        }
        for h in shard_handles {
            keep(h.join(), "shard");
        }
        let mut sinks = Vec::new();
        let mut latency: Option<Histogram<u64>> = None;
        for (h, s) in sink_handles.into_iter().zip(&pipeline.sinks) {
            match h.join() {
                Ok(Ok((records, hist))) => {
                    sinks.push(StepCount {
                        name: s.name.clone(),
                        records,
                    });
                    if let Some(hist) = hist {
                        match &mut latency {
                            Some(l) => {
                                let _ = l.add(&hist);
                            }
                            None => latency = Some(hist),
                        }
                    }
                }
                Ok(Err(e)) => EngineError::keep_first(&mut first_error, e),
                Err(_) => EngineError::keep_first(
                    &mut first_error,
                    EngineError::Worker("sink thread panicked".into()),
                ),
            }
        }
        let dead_letters = match dlq_handle.join() {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                EngineError::keep_first(&mut first_error, e);
                0
            }
            Err(_) => {
                EngineError::keep_first(
                    &mut first_error,
                    EngineError::Worker("dead-letter thread panicked".into()),
                );
                0
            }
        };
        if let Some(e) = first_error {
            return Err(e);
        }
        Ok(RunSummary {
            source_records: counters.source.load(Ordering::Relaxed),
            steps: pipeline
                .steps
                .iter()
                .zip(&counters.steps)
                .map(|(s, c)| StepCount {
                    name: s.name.clone(),
                    records: c.load(Ordering::Relaxed),
                })
                .collect(),
            sinks,
            dead_letters,
            shards,
            elapsed: started.elapsed(),
            latency_us: latency,
        })
    })?;
    Ok(result)
}

struct WorkerCtx<'p> {
    pipeline: &'p Pipeline,
    graph: Arc<Graph>,
    models: Arc<HashMap<String, Arc<weir_model::OnnxModel>>>,
    shards: usize,
    sinks: Vec<Sender<SinkMsg>>,
    dlq: Sender<Vec<Rejected>>,
    counters: Arc<Counters>,
}

/// A step as one thread runs it.
enum Op {
    Decode,
    Split(Partitioner),
    Run(Box<dyn Operator>),
    /// Not run on this kind of thread.
    Absent,
}

fn build_ops(
    p: &Pipeline,
    which: &[usize],
    shards: usize,
    models: &HashMap<String, Arc<weir_model::OnnxModel>>,
) -> Result<Vec<Op>, EngineError> {
    let mut ops: Vec<Op> = p.steps.iter().map(|_| Op::Absent).collect();
    for &i in which {
        let s = &p.steps[i];
        ops[i] = match &s.kind {
            StepKind::Decode(_) => Op::Decode,
            StepKind::KeyBy { key } => {
                let idx = s
                    .input_schema
                    .index_of(key)
                    .map_err(|e| EngineError::build(&s.name, e))?;
                Op::Split(Partitioner::new(
                    &s.name,
                    idx,
                    p.settings.key_groups,
                    shards,
                ))
            }
            StepKind::Filter { predicate } => Op::Run(Box::new(Filter {
                step: s.name.clone(),
                predicate: predicate.clone(),
            })),
            StepKind::Derive { columns } => Op::Run(Box::new(Derive::new(
                &s.name,
                columns.iter().map(|(_, e)| e.clone()).collect(),
                &s.input_schema,
                &s.output_schema,
            ))),
            StepKind::Select { .. } => Op::Run(Box::new(Select::new(
                &s.name,
                &s.input_schema,
                &s.output_schema,
            )?)),
            StepKind::Route { routes } => Op::Run(Box::new(Route {
                step: s.name.clone(),
                routes: routes.iter().map(|(_, e)| e.clone()).collect(),
            })),
            StepKind::Window(w) => match w.kind {
                WindowKind::Sliding => Op::Run(Box::new(SlidingWindow::new(
                    &s.name,
                    w,
                    &s.input_schema,
                    &s.output_schema,
                )?)),
                _ => Op::Run(Box::new(FixedWindows::new(
                    &s.name,
                    w,
                    &s.input_schema,
                    &s.output_schema,
                )?)),
            },
            StepKind::Model(m) => {
                let model = models
                    .get(&s.name)
                    .cloned()
                    .ok_or_else(|| EngineError::build(&s.name, "model not loaded"))?;
                Op::Run(Box::new(ModelStep::new(
                    &s.name,
                    m,
                    model,
                    &s.input_schema,
                    &s.output_schema,
                )?))
            }
        };
    }
    Ok(ops)
}

/// Pushes a batch through the operators from `target` on, depth first.
struct Runner<'a, 'p> {
    ctx: &'a WorkerCtx<'p>,
    ops: Vec<Op>,
    /// Per shard, batches leaving through `key_by` steps in this micro-batch.
    exchange: Vec<Vec<(usize, RecordBatch)>>,
    created: Option<Instant>,
}

impl Runner<'_, '_> {
    fn deliver(
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
            // The graph is shared and immutable: hold it, not a copy of
            // the target list, while delivering.
            let graph = Arc::clone(&self.ctx.graph);
            for &t in &graph.children[from][port] {
                match t {
                    Target::Sink(s) => {
                        // A closed sink channel means the sink failed: stop
                        // here; the sink's own error is what the run reports.
                        if self.ctx.sinks[s]
                            .send(SinkMsg {
                                batch: batch.clone(),
                                created: self.created,
                            })
                            .is_err()
                        {
                            let name = &self.ctx.pipeline.sinks[s].name;
                            return Err(EngineError::Stopped(format!("sink {name}")));
                        }
                    }
                    Target::Step(i) => self.push(i, batch.clone(), c)?,
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
                // Counted when the shard takes the parts over (`deliver`).
                let parts = p.split(&batch)?;
                for (s, part) in parts.into_iter().enumerate() {
                    if part.num_rows() > 0 {
                        self.exchange[s].push((step, part));
                    }
                }
                Ok(())
            }
            Op::Run(op) => {
                let mut out = Vec::new();
                op.process(batch, c, &mut out)?;
                self.deliver(step, out, c)
            }
            Op::Decode | Op::Absent => Err(EngineError::Worker(format!(
                "step {} reached on the wrong thread",
                self.ctx.pipeline.steps[step].name
            ))),
        }
    }

    /// Runs a lifecycle hook on every operator, in pipeline order, passing
    /// what it emits downstream.
    fn hook(
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
}

fn worker_loop(
    ctx: WorkerCtx<'_>,
    rx: Receiver<Chunk>,
    shard_txs: Vec<Sender<ShardMsg>>,
) -> Result<(), EngineError> {
    let p = ctx.pipeline;
    let g = ctx.graph.clone();
    let StepKind::Decode(config) = &p.steps[g.decode].kind else {
        return Err(EngineError::build(
            &p.steps[g.decode].name,
            "not a decode step",
        ));
    };
    let mut decoder = Decoder::new(
        &p.steps[g.decode].name,
        config,
        p.steps[g.decode].output_schema.clone(),
        p.source.record_framing(),
    )?;
    let ops = build_ops(p, &g.unkeyed, ctx.shards, &ctx.models)?;
    let mut runner = Runner {
        ctx: &ctx,
        ops,
        exchange: (0..ctx.shards).map(|_| Vec::new()).collect(),
        created: None,
    };
    let mut rejected = Vec::new();
    for chunk in rx {
        runner.created = chunk.created;
        let decoded = decoder.decode(
            &chunk.data[chunk.start..chunk.end],
            chunk.records,
            chunk.first_position,
            &mut rejected,
        );
        let mut c = Ctx {
            rejected: &mut rejected,
            prior_max_time: i64::MIN,
            max_time: decoded.max_event_time,
        };
        runner.deliver(g.decode, vec![(0, decoded.batch)], &mut c)?;
        runner.hook(&g.unkeyed, &mut c, false)?;
        for (s, tx) in shard_txs.iter().enumerate() {
            let batches = std::mem::take(&mut runner.exchange[s]);
            if tx
                .send(ShardMsg {
                    max_time: decoded.max_event_time,
                    batches,
                    created: chunk.created,
                })
                .is_err()
            {
                return Ok(()); // the shard stopped; its error is reported when joined
            }
        }
        if !rejected.is_empty() {
            let _ = ctx.dlq.send(std::mem::take(&mut rejected));
        }
    }
    let mut c = Ctx {
        rejected: &mut rejected,
        prior_max_time: i64::MIN,
        max_time: i64::MIN,
    };
    runner.hook(&g.unkeyed, &mut c, true)?;
    if !rejected.is_empty() {
        let _ = ctx.dlq.send(rejected);
    }
    Ok(())
}

fn shard_loop(ctx: WorkerCtx<'_>, inputs: Vec<Receiver<ShardMsg>>) -> Result<(), EngineError> {
    let g = ctx.graph.clone();
    let ops = build_ops(ctx.pipeline, &g.keyed, ctx.shards, &ctx.models)?;
    let mut runner = Runner {
        ctx: &ctx,
        ops,
        exchange: Vec::new(),
        created: None,
    };
    let mut rejected = Vec::new();
    let mut max_time = i64::MIN;
    let mut seq = 0usize;
    while let Ok(msg) = inputs[seq % inputs.len()].recv() {
        seq += 1;
        let prior = max_time;
        max_time = max_time.max(msg.max_time);
        runner.created = msg.created;
        let mut c = Ctx {
            rejected: &mut rejected,
            prior_max_time: prior,
            max_time,
        };
        for (key_by, batch) in msg.batches {
            runner.deliver(key_by, vec![(0, batch)], &mut c)?;
        }
        runner.hook(&g.keyed, &mut c, false)?;
        if !rejected.is_empty() {
            let _ = ctx.dlq.send(std::mem::take(&mut rejected));
        }
    }
    runner.created = None;
    let mut c = Ctx {
        rejected: &mut rejected,
        prior_max_time: max_time,
        max_time,
    };
    runner.hook(&g.keyed, &mut c, true)?;
    if !rejected.is_empty() {
        let _ = ctx.dlq.send(rejected);
    }
    Ok(())
}

fn sink_loop(
    mut writer: SinkWriter,
    rx: Receiver<SinkMsg>,
) -> Result<(u64, Option<Histogram<u64>>), EngineError> {
    let mut hist: Option<Histogram<u64>> = None;
    for msg in rx {
        writer.write(&msg.batch)?;
        if let Some(created) = msg.created {
            let us = created.elapsed().as_micros().min(u64::MAX as u128) as u64;
            let h = match &mut hist {
                Some(h) => h,
                None => hist.insert(
                    Histogram::new_with_bounds(1, 60_000_000, 3)
                        .map_err(|e| EngineError::Worker(format!("histogram: {e}")))?,
                ),
            };
            let _ = h.record_n(us.max(1), msg.batch.num_rows() as u64);
        }
    }
    Ok((writer.finish()?, hist))
}

fn dead_letter_loop(
    mut writer: DeadLetterWriter,
    rx: Receiver<Vec<Rejected>>,
) -> Result<u64, EngineError> {
    for batch in rx {
        for r in &batch {
            writer.write(r)?;
        }
        writer.commit()?;
    }
    writer.finish()
}

/// Reads the source, cutting micro-batches and dealing them to workers.
fn read_source(
    p: &Pipeline,
    input: Input,
    txs: Vec<Sender<Chunk>>,
    counters: &Counters,
) -> Result<(), EngineError> {
    let mut cutter = Cutter {
        txs,
        seq: 0,
        position: 0,
        framing: p.source.record_framing(),
        batch_rows: p.settings.batch_rows,
    };
    match input {
        Input::Bytes(data) => {
            cutter.cut(data, true, None);
        }
        Input::Stream(rx) => {
            while let Ok(first) = rx.recv() {
                let created = first.created;
                let mut records = first.records;
                let mut bytes = first.bytes;
                // Natural batching: take whatever else has arrived, up to the
                // bound, without waiting.
                while records < cutter.batch_rows {
                    match rx.try_recv() {
                        Ok(more) => {
                            records += more.records;
                            bytes.extend_from_slice(&more.bytes);
                        }
                        Err(_) => break,
                    }
                }
                if !cutter.cut(Arc::new(bytes), true, Some(created)) {
                    break;
                }
            }
        }
        Input::Configured => match &p.source.kind {
            SourceKind::File { path } => {
                let file = std::fs::File::open(path).map_err(|e| {
                    EngineError::io(
                        format!("source {}: cannot open {}", p.source.name, path.display()),
                        e,
                    )
                })?;
                read_stream(file, &mut cutter, &p.source.name, path)?;
            }
            SourceKind::Stdin => read_stream(
                std::io::stdin().lock(),
                &mut cutter,
                &p.source.name,
                Path::new("<stdin>"),
            )?,
            SourceKind::Log {
                dir,
                stream,
                partitions,
            } => read_log(dir, stream, *partitions, &mut cutter, &p.source.name)?,
            SourceKind::Memory => {
                return Err(EngineError::build(&p.source.name, "a memory source needs its input supplied by the embedding program (weir bench, tests or the Rust API)"));
            }
        },
    }
    counters.source.store(cutter.position, Ordering::Relaxed);
    Ok(())
}

/// Reads every partition of a log stream, in partition order, from its
/// first retained offset to the end it had when the run started. Records
/// are passed on length-delimited, `batch_rows` at a time.
fn read_log(
    dir: &Path,
    stream: &str,
    partitions: u32,
    cutter: &mut Cutter,
    source: &str,
) -> Result<(), EngineError> {
    let fail = |e: weir_log::LogError| EngineError::Worker(format!("source {source}: {e}"));
    let log = weir_log::Log::open(dir).map_err(fail)?;
    let config = weir_log::StreamConfig {
        partitions,
        ..Default::default()
    };
    let stream = log.stream(stream, config).map_err(fail)?;
    for partition in stream.partitions() {
        let end = partition.next_offset();
        let mut from = partition.first_offset();
        while from < end {
            let records = partition
                .read(from, cutter.batch_rows.min((end - from) as usize))
                .map_err(fail)?;
            let Some(&(last, _)) = records.last() else {
                break;
            };
            let mut buf = Vec::with_capacity(records.iter().map(|(_, r)| r.len() + 5).sum());
            for (_, r) in &records {
                crate::frame::put_varint(&mut buf, r.len() as u64);
                buf.extend_from_slice(r);
            }
            if !cutter.cut(Arc::new(buf), true, None) {
                return Ok(());
            }
            from = last + 1;
        }
    }
    Ok(())
}

fn read_stream(
    mut r: impl Read,
    cutter: &mut Cutter,
    source: &str,
    path: &Path,
) -> Result<(), EngineError> {
    const BLOCK: usize = 4 << 20;
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let mut buf = Vec::with_capacity(BLOCK + carry.len());
        buf.append(&mut carry);
        let have = buf.len();
        buf.resize(have + BLOCK, 0);
        let n = loop {
            match r.read(&mut buf[have..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EngineError::io(
                        format!("source {source}: cannot read {}", path.display()),
                        e,
                    ))
                }
            }
        };
        buf.truncate(have + n);
        let at_end = n == 0;
        let data = Arc::new(buf);
        let used = cutter.cut_partial(data.clone(), at_end);
        if used < data.len() {
            carry.extend_from_slice(&data[used..]);
        }
        if at_end || cutter.txs.is_empty() {
            return Ok(());
        }
    }
}

/// Cuts buffers into micro-batches of at most `batch_rows` whole records.
struct Cutter {
    txs: Vec<Sender<Chunk>>,
    seq: u64,
    position: u64,
    framing: weir_config::Framing,
    batch_rows: usize,
}

impl Cutter {
    /// Cuts and sends every complete record of `data`; returns false when
    /// the workers are gone.
    fn cut(&mut self, data: Arc<Vec<u8>>, at_end: bool, created: Option<Instant>) -> bool {
        let used = self.cut_with(data, at_end, created);
        used != usize::MAX
    }

    fn cut_partial(&mut self, data: Arc<Vec<u8>>, at_end: bool) -> usize {
        let len = data.len();
        match self.cut_with(data, at_end, None) {
            usize::MAX => len,
            used => used,
        }
    }

    /// Returns the bytes consumed, or `usize::MAX` when the workers are gone.
    fn cut_with(&mut self, data: Arc<Vec<u8>>, at_end: bool, created: Option<Instant>) -> usize {
        let mut offset = 0;
        while offset < data.len() {
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
            };
            let worker = (self.seq % self.txs.len() as u64) as usize;
            if self.txs[worker].send(chunk).is_err() {
                self.txs.clear();
                return usize::MAX;
            }
            self.seq += 1;
            self.position += records as u64;
        }
        offset
    }
}
