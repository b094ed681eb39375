//! Threads, channels and the order of things.
//!
//! Micro-batch `k` of the source goes to worker `k % W`. A worker decodes it,
//! runs the steps before `key_by`, splits the rows by key group and sends
//! every shard exactly one message for batch `k` (possibly empty). A shard
//! reads its inputs round-robin in batch order — batch `k` from worker
//! `k % W` — so each shard sees its keys' records in source order, whatever
//! the number of shards or threads. That order, plus per-record watermarks,
//! is what makes results independent of the shard count.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use hdrhistogram::Histogram;
use weir_config::{Pipeline, SourceKind, StepKind, WindowKind};
use weir_connect::SourceConnector;

use crate::checkpointing::{
    self, CheckpointReport, CoordMsg, Coordinator, Restore, SourcePosition,
};
use crate::dead_letter::{DeadLetterWriter, Rejected};
use crate::decode::Decoder;
use crate::frame::{next_record, Next};
use crate::hash::shard_of;
use crate::ops::keyed::Partitioner;
use crate::ops::model::ModelStep;
use crate::ops::stateless::{Derive, Filter, Route, Select};
use crate::ops::window::{FixedWindows, SlidingWindow};
use crate::ops::{Ctx, Operator, Outputs};
use crate::sink::SinkWriter;
use crate::state::GroupParts;
use crate::telemetry::{RunMetrics, Telemetry};
use crate::txn_file::EpochPlace;
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

/// Called once, when the first record has been processed, with the id of
/// the checkpoint the run restored (recovery time is measured to here).
#[derive(Clone)]
pub struct FirstRecord(pub Arc<dyn Fn(Option<u64>) + Send + Sync>);

impl std::fmt::Debug for FirstRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstRecord(..)")
    }
}

/// How to run a pipeline.
#[derive(Debug, Default)]
pub struct RunOptions {
    /// Overrides the pipeline's shard count (0 or `None`: as configured).
    pub shards: Option<usize>,
    /// Input override.
    pub input: Input,
    /// Stop at the end of what a following log source holds at start.
    pub drain: bool,
    /// Notified when the first record has been processed.
    pub on_first_record: Option<FirstRecord>,
    /// Where the run reports metrics, readiness and samples (none: it
    /// reports nothing).
    pub telemetry: Option<Telemetry>,
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
    /// Checkpoints restored and taken (empty without `[checkpoint]`).
    pub checkpoints: CheckpointReport,
    /// The source and sinks that are connectors, with their state at the
    /// end of the run.
    pub connectors: Vec<ConnectorReport>,
}

/// A connector's state and reconnections over a run.
#[derive(Debug, Clone)]
pub struct ConnectorReport {
    /// The source's or sink's name.
    pub name: String,
    /// Its state when the run ended.
    pub state: weir_connect::ConnectionState,
    /// Reconnections during the run.
    pub reconnects: u64,
}

/// A micro-batch of whole records.
struct Chunk {
    first_position: u64,
    records: usize,
    data: Arc<Vec<u8>>,
    start: usize,
    end: usize,
    created: Option<Instant>,
    /// When the source handed it over.
    arrived: Instant,
}

/// What the source deals to a worker: a micro-batch, or a checkpoint
/// barrier occupying a slot in the batch sequence.
enum Work {
    Chunk(Chunk),
    Barrier { id: u64, last: bool },
}

/// Everything a shard receives for one micro-batch, or a barrier.
struct ShardMsg {
    max_time: i64,
    batches: Vec<(usize, RecordBatch)>,
    created: Option<Instant>,
    arrived: Instant,
    barrier: Option<(u64, bool)>,
}

/// What a sink receives; `producer` numbers workers, then shards.
enum SinkMsg {
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

/// For a log source: after each checkpoint, publish the checkpointed
/// offsets as the pipeline's consumer position, which ingest's lag bound
/// reads. A failure is logged; it costs only the lag signal.
fn consumer_commit(
    p: &Pipeline,
    connector: Option<&mut Box<dyn SourceConnector>>,
) -> Option<checkpointing::OnComplete> {
    if let Some(c) = connector {
        // An external source acknowledges to its broker only what a
        // durable checkpoint covers.
        let mut ack = c.on_checkpoint();
        return Some(Box::new(move |position: &SourcePosition| {
            if let SourcePosition::Offsets(next) = position {
                ack(next);
            }
        }));
    }
    let SourceKind::Log { dir, stream, .. } = &p.source.kind else {
        return None;
    };
    let (dir, stream, consumer) = (dir.clone(), stream.clone(), p.name.clone());
    Some(Box::new(move |position: &SourcePosition| {
        if let SourcePosition::Offsets(next) = position {
            if let Err(e) = weir_log::commit_consumer_position(&dir, &stream, &consumer, next) {
                tracing::warn!(stream = %stream, error = %e, "cannot publish the consumer position");
            }
        }
    }))
}

/// Per-step record counters, bumped once per batch.
struct Counters {
    steps: Vec<AtomicU64>,
    source: AtomicU64,
    first_record: AtomicBool,
    /// The run's series (none without telemetry).
    metrics: Option<Arc<RunMetrics>>,
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

    let metrics = options
        .telemetry
        .as_ref()
        .map(|t| RunMetrics::new(t, pipeline, shards, has_keyed));

    let counters = Arc::new(Counters {
        steps: pipeline.steps.iter().map(|_| AtomicU64::new(0)).collect(),
        source: AtomicU64::new(0),
        first_record: AtomicBool::new(false),
        metrics: metrics.clone(),
    });

    // Checkpoints: restore the newest valid one before anything opens.
    let store = match &pipeline.checkpoint {
        Some(c) => Some(
            weir_checkpoint::CheckpointStore::open(&c.dir, c.keep)
                .map_err(|e| EngineError::Checkpoint(e.to_string()))?,
        ),
        None => None,
    };
    let restore = match &store {
        Some(store) => checkpointing::restore(store, &pipeline.fingerprint())?,
        None => Restore {
            max_time: i64::MIN,
            ..Default::default()
        },
    };
    // Barrier ids continue after every id the store lists, including
    // damaged ones that were skipped.
    let next_id = match &store {
        Some(store) => {
            store
                .list()
                .map_err(|e| EngineError::Checkpoint(e.to_string()))?
                .iter()
                .map(|c| c.id)
                .max()
                .unwrap_or(0)
                .max(restore.id)
                + 1
        }
        None => 1,
    };
    let restore = Arc::new(restore);
    let report = CheckpointReport {
        restored: (restore.id > 0).then_some(restore.id),
        skipped: restore.skipped.clone(),
        ..Default::default()
    };
    if restore.id > 0 {
        tracing::info!(checkpoint = restore.id, "restored checkpoint");
    }

    // An external source connects before any thread starts, so a broker
    // that cannot be reached is reported at once.
    let mut connector = match &options.input {
        Input::Configured => open_source_connector(pipeline, &restore, options.drain)?,
        _ => None,
    };
    let mut statuses: Vec<(String, Arc<weir_connect::ConnectorStatus>)> = connector
        .iter()
        .map(|c| (pipeline.source.name.clone(), c.status()))
        .collect();

    // Sinks and dead letters.
    let producers = workers + if has_keyed { shards } else { 0 };
    let mut sink_txs = Vec::new();
    let mut sink_rxs = Vec::new();
    for _ in &pipeline.sinks {
        let (tx, rx) = bounded::<SinkMsg>(64);
        sink_txs.push(tx);
        sink_rxs.push(rx);
    }
    let mut writers = Vec::new();
    for s in &pipeline.sinks {
        let part = restore.sinks.get(&s.name).map(Vec::as_slice);
        let log_part = store.as_ref().map(|_| part);
        let transactional = match &store {
            None => None,
            Some(_) if !matches!(s.kind, weir_config::SinkKind::File { .. }) => None,
            Some(_) => Some(match restore.sinks.get(&s.name) {
                Some(part) if !part.is_empty() => {
                    Some(EpochPlace::decode(part).ok_or_else(|| {
                        EngineError::Checkpoint(format!(
                            "checkpoint {}: the part of sink {} cannot be read",
                            restore.id, s.name
                        ))
                    })?)
                }
                _ => None,
            }),
        };
        let writer = SinkWriter::open(s, transactional, log_part)?;
        if let Some(status) = writer.connector_status() {
            statuses.push((s.name.clone(), status));
        }
        writers.push(writer);
    }
    let dead_letter = match &pipeline.dead_letter.log {
        Some((dir, stream)) => DeadLetterWriter::log(dir, stream)?,
        None if store.is_some() => DeadLetterWriter::append(&pipeline.dead_letter.path)?,
        None => DeadLetterWriter::create(&pipeline.dead_letter.path)?,
    };
    let (dlq_tx, dlq_rx) = unbounded::<Vec<Rejected>>();

    // The coordinator and the sinks' commit channels.
    let (coord_tx, coord_rx) = unbounded::<CoordMsg>();
    let completed = Arc::new(AtomicU64::new(next_id - 1));
    let mut commit_txs = Vec::new();
    let mut commit_rxs = Vec::new();
    for _ in &pipeline.sinks {
        let (tx, rx) = unbounded::<u64>();
        commit_txs.push(tx);
        commit_rxs.push(rx);
    }
    let coordinator = store.map(|store| Coordinator {
        store,
        fingerprint: pipeline.fingerprint(),
        shards: if has_keyed { shards } else { 0 },
        sinks: pipeline.sinks.iter().map(|s| s.name.clone()).collect(),
        commits: commit_txs,
        completed: completed.clone(),
        on_complete: consumer_commit(pipeline, connector.as_mut()),
        metrics: metrics.clone(),
    });
    let checkpointing = coordinator.is_some();
    let coord = checkpointing.then(|| coord_tx.clone());

    let mut chunk_txs = Vec::new();
    let mut chunk_rxs = Vec::new();
    for _ in 0..workers {
        let (tx, rx) = bounded::<Work>(4);
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
        let coord_handle = match coordinator {
            Some(c) => Some(
                std::thread::Builder::new()
                    .name("weir-checkpoint".into())
                    .spawn_scoped(scope, move || c.run(coord_rx, report))
                    .map_err(|e| EngineError::io("cannot start checkpoint thread", e))?,
            ),
            None => {
                drop(coord_rx);
                None
            }
        };
        let mut sink_handles = Vec::new();
        for (i, ((writer, rx), commits)) in writers
            .into_iter()
            .zip(sink_rxs)
            .zip(commit_rxs)
            .enumerate()
        {
            let txn = coord.clone().map(|coord| SinkTxn {
                coord,
                commits,
                sink: i,
                producers,
                first_epoch: next_id,
            });
            sink_handles.push(
                std::thread::Builder::new()
                    .name("weir-sink".into())
                    .spawn_scoped(scope, {
                        let metrics = metrics.clone().map(|m| (m, i));
                        move || sink_loop(writer, rx, txn, metrics)
                    })
                    .map_err(|e| EngineError::io("cannot start sink thread", e))?,
            );
        }
        let dlq_handle = std::thread::Builder::new()
            .name("weir-dead-letter".into())
            .spawn_scoped(scope, {
                let metrics = metrics.clone();
                move || dead_letter_loop(dead_letter, dlq_rx, metrics)
            })
            .map_err(|e| EngineError::io("cannot start dead-letter thread", e))?;

        let ctx = |producer: usize| WorkerCtx {
            pipeline,
            graph: g.clone(),
            models: models.clone(),
            shards,
            sinks: sink_txs.clone(),
            dlq: dlq_tx.clone(),
            counters: counters.clone(),
            producer,
            coord: coord.clone(),
            restore: restore.clone(),
            on_first_record: options.on_first_record.clone(),
        };
        let mut worker_handles = Vec::new();
        for (w, (rx, txs)) in chunk_rxs.into_iter().zip(shard_txs).enumerate() {
            let ctx = ctx(w);
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
            let ctx = ctx(workers + s);
            shard_handles.push(
                std::thread::Builder::new()
                    .name(format!("weir-shard-{s}"))
                    .spawn_scoped(scope, move || shard_loop(ctx, rxs, s))
                    .map_err(|e| EngineError::io("cannot start shard thread", e))?,
            );
        }
        drop(sink_txs);
        drop(dlq_tx);
        drop(coord);

        // `checkpointing` holds exactly when the pipeline has the setting.
        let barriers = pipeline.checkpoint.as_ref().map(|c| Barriers {
            coord: coord_tx.clone(),
            interval: Duration::from_millis(c.interval_ms),
            next_due: Instant::now(),
            next_id,
            completed: completed.clone(),
        });
        drop(coord_tx);
        // Connections are open and every thread runs (shards report their
        // state restored themselves).
        if let Some(m) = &metrics {
            m.watch_connectors(&pipeline.source.name, &statuses);
            for (name, status) in &statuses {
                if name == &pipeline.source.name {
                    m.health.watch_source(name, status.clone());
                }
            }
            m.recovered_part();
        }
        let source_result = match connector.take() {
            Some(c) => read_connector(
                c,
                &pipeline.source.name,
                chunk_txs,
                pipeline,
                barriers,
                &counters,
            ),
            None => read_source(
                pipeline,
                options.input,
                options.drain,
                chunk_txs,
                barriers,
                &restore,
                &counters,
            ),
        };
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
        let checkpoints = match coord_handle.map(|h| h.join()) {
            None => CheckpointReport::default(),
            Some(Ok(Ok(r))) => r,
            Some(Ok(Err(e))) => {
                EngineError::keep_first(&mut first_error, e);
                CheckpointReport::default()
            }
            Some(Err(_)) => {
                EngineError::keep_first(
                    &mut first_error,
                    EngineError::Worker("checkpoint thread panicked".into()),
                );
                CheckpointReport::default()
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
            checkpoints,
            connectors: statuses
                .iter()
                .map(|(name, status)| ConnectorReport {
                    name: name.clone(),
                    state: status.state(),
                    reconnects: status.reconnects(),
                })
                .collect(),
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
    /// This thread's number among the sinks' producers.
    producer: usize,
    /// The checkpoint coordinator, when checkpointing.
    coord: Option<Sender<CoordMsg>>,
    restore: Arc<Restore>,
    on_first_record: Option<FirstRecord>,
}

impl WorkerCtx<'_> {
    /// Sends barrier `id` to every sink, after everything this thread
    /// produced before it.
    fn barrier_to_sinks(&self, id: u64, last: bool) -> Result<(), EngineError> {
        for (s, tx) in self.sinks.iter().enumerate() {
            let msg = SinkMsg::Barrier {
                id,
                producer: self.producer,
                last,
            };
            if tx.send(msg).is_err() {
                let name = &self.pipeline.sinks[s].name;
                return Err(EngineError::Stopped(format!("sink {name}")));
            }
        }
        Ok(())
    }
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
    /// When the current micro-batch left the source.
    arrived: Instant,
    /// Largest event time seen (shards; workers leave it at the minimum).
    max_time: i64,
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
            if let Some(m) = &self.ctx.counters.metrics {
                m.step_out[from].add(batch.num_rows() as u64);
                if m.taps.tapped(from) {
                    m.taps.offer(from, &batch);
                }
            }
            // The graph is shared and immutable: hold it, not a copy of
            // the target list, while delivering.
            let graph = Arc::clone(&self.ctx.graph);
            for &t in &graph.children[from][port] {
                match t {
                    Target::Sink(s) => {
                        // A closed sink channel means the sink failed: stop
                        // here; the sink's own error is what the run reports.
                        if self.ctx.sinks[s]
                            .send(SinkMsg::Data {
                                batch: batch.clone(),
                                created: self.created,
                                arrived: self.arrived,
                                max_time: c.max_time,
                                producer: self.ctx.producer,
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
                if let Some(m) = &self.ctx.counters.metrics {
                    m.step_in[step].add(batch.num_rows() as u64);
                }
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
    rx: Receiver<Work>,
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
        arrived: Instant::now(),
        max_time: i64::MIN,
    };
    let mut rejected = Vec::new();
    let mut finished = false;
    for work in rx {
        let chunk = match work {
            Work::Chunk(chunk) => chunk,
            Work::Barrier { id, last } => {
                for tx in &shard_txs {
                    let msg = ShardMsg {
                        max_time: i64::MIN,
                        batches: Vec::new(),
                        created: None,
                        arrived: Instant::now(),
                        barrier: Some((id, last)),
                    };
                    if tx.send(msg).is_err() {
                        return Ok(()); // the shard stopped; its error is reported when joined
                    }
                }
                if last {
                    end_of_input(&mut runner, &g.unkeyed, &mut rejected)?;
                    finished = true;
                }
                ctx.barrier_to_sinks(id, last)?;
                continue;
            }
        };
        runner.created = chunk.created;
        runner.arrived = chunk.arrived;
        if let Some(m) = &ctx.counters.metrics {
            m.step_in[g.decode].add(chunk.records as u64);
        }
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
                    arrived: chunk.arrived,
                    barrier: None,
                })
                .is_err()
            {
                return Ok(()); // the shard stopped; its error is reported when joined
            }
        }
        if !rejected.is_empty() {
            let _ = ctx.dlq.send(std::mem::take(&mut rejected));
        }
        if !ctx.counters.first_record.swap(true, Ordering::AcqRel) {
            if let Some(f) = &ctx.on_first_record {
                (f.0)((ctx.restore.id > 0).then_some(ctx.restore.id));
            }
        }
    }
    if !finished {
        end_of_input(&mut runner, &g.unkeyed, &mut rejected)?;
    }
    Ok(())
}

/// Runs the end-of-input hooks and hands over what they rejected.
fn end_of_input(
    runner: &mut Runner<'_, '_>,
    order: &[usize],
    rejected: &mut Vec<Rejected>,
) -> Result<(), EngineError> {
    let max_time = runner.max_time;
    let mut c = Ctx {
        rejected,
        prior_max_time: max_time,
        max_time,
    };
    runner.created = None;
    runner.hook(order, &mut c, true)?;
    if !rejected.is_empty() {
        let _ = runner.ctx.dlq.send(std::mem::take(rejected));
    }
    Ok(())
}

fn shard_loop(
    ctx: WorkerCtx<'_>,
    inputs: Vec<Receiver<ShardMsg>>,
    shard: usize,
) -> Result<(), EngineError> {
    let g = ctx.graph.clone();
    let key_groups = ctx.pipeline.settings.key_groups;
    let mut ops = build_ops(ctx.pipeline, &g.keyed, ctx.shards, &ctx.models)?;
    // Restored state: the key groups this shard owns.
    for &i in &g.keyed {
        let name = &ctx.pipeline.steps[i].name;
        if let (Op::Run(op), Some(groups)) = (&mut ops[i], ctx.restore.state.get(name)) {
            for (&group, data) in groups {
                if shard_of(group, key_groups, ctx.shards) != shard {
                    continue;
                }
                op.restore(data).map_err(|_| {
                    EngineError::Checkpoint(format!(
                        "checkpoint {}: the state of step {name} for key group {group} cannot be read",
                        ctx.restore.id
                    ))
                })?;
            }
        }
    }
    if let Some(m) = &ctx.counters.metrics {
        m.recovered_part();
    }
    let mut runner = Runner {
        ctx: &ctx,
        ops,
        exchange: Vec::new(),
        created: None,
        arrived: Instant::now(),
        max_time: ctx.restore.max_time,
    };
    let mut rejected = Vec::new();
    let mut seq = 0usize;
    let mut finished = false;
    let mut copies = 0;
    while let Ok(msg) = inputs[seq % inputs.len()].recv() {
        seq += 1;
        if let Some((id, last)) = msg.barrier {
            // One copy per worker, in consecutive slots: act on the last.
            copies += 1;
            if copies < inputs.len() {
                continue;
            }
            copies = 0;
            if last {
                end_of_input(&mut runner, &g.keyed, &mut rejected)?;
                finished = true;
            }
            if let Some(coord) = &ctx.coord {
                let mut state = Vec::new();
                for &i in &g.keyed {
                    if let Op::Run(op) = &runner.ops[i] {
                        let mut parts = GroupParts::new();
                        op.snapshot(key_groups, &mut parts);
                        let name = &ctx.pipeline.steps[i].name;
                        state.extend(parts.into_iter().map(|(k, v)| (name.clone(), k, v)));
                    }
                }
                let _ = coord.send(CoordMsg::Shard {
                    id,
                    state,
                    max_time: runner.max_time,
                });
            }
            ctx.barrier_to_sinks(id, last)?;
            continue;
        }
        let prior = runner.max_time;
        runner.max_time = runner.max_time.max(msg.max_time);
        runner.created = msg.created;
        runner.arrived = msg.arrived;
        let mut c = Ctx {
            rejected: &mut rejected,
            prior_max_time: prior,
            max_time: runner.max_time,
        };
        for (key_by, batch) in msg.batches {
            runner.deliver(key_by, vec![(0, batch)], &mut c)?;
        }
        runner.hook(&g.keyed, &mut c, false)?;
        if !rejected.is_empty() {
            let _ = ctx.dlq.send(std::mem::take(&mut rejected));
        }
        if let Some(m) = &ctx.counters.metrics {
            let entries = g
                .keyed
                .iter()
                .map(|&i| match &runner.ops[i] {
                    Op::Run(op) => op.state_entries(),
                    _ => 0,
                })
                .sum();
            m.shard(shard, entries, runner.max_time);
        }
    }
    if !finished {
        end_of_input(&mut runner, &g.keyed, &mut rejected)?;
    }
    Ok(())
}

/// A sink's part in checkpoints.
struct SinkTxn {
    coord: Sender<CoordMsg>,
    commits: Receiver<u64>,
    sink: usize,
    producers: usize,
    first_epoch: u64,
}

fn sink_loop(
    mut writer: SinkWriter,
    rx: Receiver<SinkMsg>,
    txn: Option<SinkTxn>,
    metrics: Option<(Arc<RunMetrics>, usize)>,
) -> Result<(u64, Option<Histogram<u64>>), EngineError> {
    let observe = |rows: usize, arrived: Instant, max_time: i64| {
        if let Some((m, i)) = &metrics {
            m.sink_batch(*i, rows, arrived, max_time);
        }
    };
    let mut hist: Option<Histogram<u64>> = None;
    let mut record = |created: Option<Instant>, rows: usize| -> Result<(), EngineError> {
        if let Some(created) = created {
            let us = created.elapsed().as_micros().min(u64::MAX as u128) as u64;
            let h = match &mut hist {
                Some(h) => h,
                None => hist.insert(
                    Histogram::new_with_bounds(1, 60_000_000, 3)
                        .map_err(|e| EngineError::Worker(format!("histogram: {e}")))?,
                ),
            };
            let _ = h.record_n(us.max(1), rows as u64);
        }
        Ok(())
    };
    let Some(txn) = txn else {
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
                record(created, batch.num_rows())?;
                observe(batch.num_rows(), arrived, max_time);
            }
        }
        return Ok((writer.finish()?, hist));
    };
    // Under checkpoints: data from a producer belongs to the epoch closed by
    // the next barrier from that producer; an epoch is staged once every
    // producer's barrier is in, and committed when the coordinator says so.
    let mut epoch = vec![txn.first_epoch; txn.producers];
    let mut arrived: BTreeMap<u64, usize> = BTreeMap::new();
    let mut last_staged: Option<u64> = None;
    let never = crossbeam_channel::never();
    let mut data_open = true;
    loop {
        let data = if data_open { &rx } else { &never };
        crossbeam_channel::select! {
            recv(data) -> msg => match msg {
                Ok(SinkMsg::Data { batch, created, arrived, max_time, producer }) => {
                    writer.write_epoch(epoch[producer], &batch)?;
                    record(created, batch.num_rows())?;
                    observe(batch.num_rows(), arrived, max_time);
                }
                Ok(SinkMsg::Barrier { id, producer, last }) => {
                    epoch[producer] = id + 1;
                    let n = arrived.entry(id).or_insert(0);
                    *n += 1;
                    if *n == txn.producers {
                        arrived.remove(&id);
                        let part = writer.prepare(id)?;
                        let _ = txn.coord.send(CoordMsg::Sink { id, sink: txn.sink, part });
                        if last {
                            last_staged = Some(id);
                        }
                    }
                }
                Err(_) => {
                    data_open = false;
                    if last_staged.is_none() {
                        break; // stopped early: nothing more will be committed
                    }
                }
            },
            recv(txn.commits) -> id => match id {
                Ok(id) => {
                    writer.commit(id)?;
                    if last_staged == Some(id) {
                        break;
                    }
                }
                Err(_) => break, // the coordinator stopped; it reports why
            },
        }
    }
    Ok((writer.finish()?, hist))
}

fn dead_letter_loop(
    mut writer: DeadLetterWriter,
    rx: Receiver<Vec<Rejected>>,
    metrics: Option<Arc<RunMetrics>>,
) -> Result<u64, EngineError> {
    for batch in rx {
        if let Some(m) = &metrics {
            m.dead_letters(&batch);
        }
        for r in &batch {
            writer.write(r)?;
        }
        writer.commit()?;
    }
    writer.finish()
}

/// Barrier injection, as the source thread does it.
struct Barriers {
    coord: Sender<CoordMsg>,
    interval: Duration,
    next_due: Instant,
    next_id: u64,
    /// Last completed checkpoint: one checkpoint is in flight at a time.
    completed: Arc<AtomicU64>,
}

/// Reads the source, cutting micro-batches and dealing them to workers.
fn read_source(
    p: &Pipeline,
    input: Input,
    drain: bool,
    txs: Vec<Sender<Work>>,
    barriers: Option<Barriers>,
    restore: &Restore,
    counters: &Counters,
) -> Result<(), EngineError> {
    let skip = match &restore.source {
        SourcePosition::Records(n) => *n,
        _ => 0,
    };
    let mut cutter = Cutter {
        txs,
        seq: 0,
        position: 0,
        skip,
        sent: 0,
        framing: p.source.record_framing(),
        batch_rows: p.settings.batch_rows,
        barriers,
        count_position: true,
        metrics: counters.metrics.clone(),
    };
    match input {
        Input::Bytes(data) => {
            cutter.cut(data, true, None);
        }
        Input::Stream(rx) => loop {
            let first = match cutter.barriers.as_ref() {
                // Wake up for barriers while no input arrives.
                Some(b) => match rx.recv_timeout(b.interval) {
                    Ok(a) => a,
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                        cutter.maybe_barrier(None);
                        continue;
                    }
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(a) => a,
                    Err(_) => break,
                },
            };
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
        },
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
                follow,
            } => {
                cutter.count_position = false;
                let start = match &restore.source {
                    SourcePosition::Offsets(v) => Some(v.clone()),
                    _ => None,
                };
                let position = read_log(
                    LogRead {
                        dir,
                        stream,
                        partitions: *partitions,
                        follow: *follow && !drain,
                        start,
                        source: &p.source.name,
                    },
                    &mut cutter,
                )?;
                counters.source.store(cutter.sent, Ordering::Relaxed);
                cutter.final_barrier(SourcePosition::Offsets(position));
                return Ok(());
            }
            SourceKind::Memory => {
                return Err(EngineError::build(&p.source.name, "a memory source needs its input supplied by the embedding program (weir bench, tests or the Rust API)"));
            }
            SourceKind::Nats(_) | SourceKind::Mqtt(_) | SourceKind::Kafka(_) => {
                // Opened in `run` and read by `read_connector`.
                return Err(EngineError::build(
                    &p.source.name,
                    "a connector source is read through its connector",
                ));
            }
        },
    }
    counters.source.store(cutter.sent, Ordering::Relaxed);
    let position = SourcePosition::Records(cutter.position);
    cutter.final_barrier(position);
    Ok(())
}

/// Opens the pipeline's external source, if it has one, at the restored
/// checkpoint's place.
fn open_source_connector(
    p: &Pipeline,
    restore: &Restore,
    drain: bool,
) -> Result<Option<Box<dyn SourceConnector>>, EngineError> {
    let start = match &restore.source {
        SourcePosition::Offsets(v) => Some(v.as_slice()),
        _ => None,
    };
    let name = p.source.name.as_str();
    let opened = match &p.source.kind {
        SourceKind::Nats(c) => weir_nats::open_source(name, c, start, drain),
        SourceKind::Mqtt(c) => weir_mqtt::open_source(name, c, start, drain),
        SourceKind::Kafka(c) => weir_kafka::open_source(name, c, start, drain),
        _ => return Ok(None),
    };
    let connector = opened.map_err(|e| EngineError::Worker(format!("source {name}: {e}")))?;
    if let Some(start) = start {
        if start.len() != connector.partitions() as usize {
            return Err(EngineError::Checkpoint(format!(
                "source {name}: the checkpoint has positions for {} partitions, the source has {}",
                start.len(),
                connector.partitions()
            )));
        }
    }
    Ok(Some(connector))
}

/// Reads an external source until it ends (drained) or the workers stop.
/// Records are cut into chunks of consecutive offsets within a partition
/// (a chunk's positions are consecutive); barriers go between polls, at
/// the place the connector reports.
fn read_connector(
    mut conn: Box<dyn SourceConnector>,
    source: &str,
    txs: Vec<Sender<Work>>,
    p: &Pipeline,
    barriers: Option<Barriers>,
    counters: &Counters,
) -> Result<(), EngineError> {
    let mut cutter = Cutter {
        txs,
        seq: 0,
        position: 0,
        skip: 0,
        sent: 0,
        framing: weir_config::Framing::LengthDelimited,
        batch_rows: p.settings.batch_rows,
        barriers,
        count_position: false,
        metrics: counters.metrics.clone(),
    };
    // Wake up for barriers while nothing arrives.
    let wait = cutter
        .barriers
        .as_ref()
        .map_or(Duration::from_millis(100), |b| {
            b.interval.min(Duration::from_millis(100))
        });
    let mut received = weir_connect::Received::default();
    let mut buf: Vec<u8> = Vec::new();
    let fail = |e: weir_connect::ConnectError| EngineError::Worker(format!("source {source}: {e}"));
    loop {
        received.clear();
        let polled = conn
            .poll(&mut received, cutter.batch_rows, wait)
            .map_err(fail)?;
        // Runs of consecutive offsets in one partition become one chunk.
        let mut run: Option<(u32, u64, u64)> = None; // partition, first, next
        buf.clear();
        for (r, payload) in received.iter() {
            let continues =
                matches!(run, Some((p, _, next)) if p == r.partition && next == r.offset);
            if !continues {
                if let Some((p, first, _)) = run.take() {
                    if !send_run(&mut cutter, &mut buf, p, first) {
                        return Ok(());
                    }
                }
                run = Some((r.partition, r.offset, r.offset));
            }
            if let Some(run) = &mut run {
                run.2 = r.offset + 1;
            }
            crate::frame::put_varint(&mut buf, payload.len() as u64);
            buf.extend_from_slice(payload);
        }
        if let Some((p, first, _)) = run {
            if !send_run(&mut cutter, &mut buf, p, first) {
                return Ok(());
            }
        }
        counters.source.store(cutter.sent, Ordering::Relaxed);
        if polled == weir_connect::Polled::End {
            break;
        }
        if cutter.txs.is_empty() {
            return Ok(());
        }
        cutter.maybe_barrier(Some(SourcePosition::Offsets(conn.position())));
    }
    counters.source.store(cutter.sent, Ordering::Relaxed);
    cutter.final_barrier(SourcePosition::Offsets(conn.position()));
    Ok(())
}

/// Sends one run of consecutive records of a partition, framed in `buf`;
/// false when the workers are gone.
fn send_run(cutter: &mut Cutter, buf: &mut Vec<u8>, partition: u32, first: u64) -> bool {
    cutter.position = ((partition as u64) << OFFSET_BITS) | first;

    cutter.cut(Arc::new(std::mem::take(buf)), true, None)
}

/// What to read from a log stream.
struct LogRead<'a> {
    dir: &'a Path,
    stream: &'a str,
    partitions: u32,
    follow: bool,
    /// Next offset per partition from a checkpoint.
    start: Option<Vec<u64>>,
    source: &'a str,
}

/// Bits of a record's position holding its offset; the partition number
/// goes above them, so positions are unique across partitions.
const OFFSET_BITS: u32 = 40;

/// Reads the partitions of a log stream round-robin, `batch_rows` records
/// at a time, from the checkpointed offsets (else the first retained ones)
/// to the end they had when the run started — or on and on with
/// `follow`. Returns the next offset per partition.
fn read_log(r: LogRead<'_>, cutter: &mut Cutter) -> Result<Vec<u64>, EngineError> {
    let source = r.source;
    let fail = |e: weir_log::LogError| EngineError::Worker(format!("source {source}: {e}"));
    // Read-only: another process (`weir ingest`) may be appending.
    let mut readers: Vec<weir_log::TailReader> = (0..r.partitions)
        .map(|p| weir_log::TailReader::new(r.dir, r.stream, p))
        .collect();
    let mut next = Vec::with_capacity(readers.len());
    for reader in &readers {
        next.push(reader.first_offset().map_err(fail)?);
    }
    if let Some(start) = r.start {
        if start.len() != next.len() {
            return Err(EngineError::Checkpoint(format!(
                "source {source}: the checkpoint has positions for {} partitions, stream {} has {}",
                start.len(),
                r.stream,
                next.len()
            )));
        }
        for (p, (n, s)) in next.iter_mut().zip(start).enumerate() {
            if s < *n {
                tracing::warn!(partition = p, checkpointed = s, first = *n, "records after the checkpoint were removed by retention; resuming at the first retained one");
            } else {
                *n = s;
            }
        }
    }
    if let Some(lag) = cutter.metrics.as_ref().and_then(|m| m.source_lag.as_ref()) {
        lag.publish(&next);
    }
    let mut end = Vec::with_capacity(readers.len());
    for reader in &mut readers {
        end.push(if r.follow {
            u64::MAX
        } else {
            reader.end_offset().map_err(fail)?
        });
    }
    loop {
        let mut got = false;
        for (p, reader) in readers.iter_mut().enumerate() {
            if next[p] >= end[p] {
                continue;
            }
            let want = cutter
                .batch_rows
                .min((end[p] - next[p]).min(usize::MAX as u64) as usize);
            let records = reader.read(next[p], want).map_err(fail)?;
            let Some(&(last, _)) = records.last() else {
                continue;
            };
            got = true;
            let mut buf = Vec::with_capacity(records.iter().map(|(_, r)| r.len() + 5).sum());
            for (_, rec) in &records {
                crate::frame::put_varint(&mut buf, rec.len() as u64);
                buf.extend_from_slice(rec);
            }
            cutter.position = ((p as u64) << OFFSET_BITS) | records[0].0;
            if !cutter.cut(Arc::new(buf), true, None) {
                return Ok(next);
            }
            next[p] = last + 1;
            if let Some(lag) = cutter.metrics.as_ref().and_then(|m| m.source_lag.as_ref()) {
                lag.publish(&next);
            }
            cutter.maybe_barrier(Some(SourcePosition::Offsets(next.clone())));
        }
        if !got {
            if !r.follow || cutter.txs.is_empty() {
                return Ok(next);
            }
            cutter.maybe_barrier(Some(SourcePosition::Offsets(next.clone())));
            std::thread::sleep(Duration::from_millis(1));
        }
    }
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
    txs: Vec<Sender<Work>>,
    /// Slots dealt so far (batches and barriers).
    seq: u64,
    /// Position of the next record.
    position: u64,
    /// Records still to pass over (already covered by the checkpoint).
    skip: u64,
    /// Records handed to workers.
    sent: u64,
    framing: weir_config::Framing,
    batch_rows: usize,
    barriers: Option<Barriers>,
    /// Whether the position is a record count (byte sources), so barriers
    /// can be placed between any two batches.
    count_position: bool,
    metrics: Option<Arc<RunMetrics>>,
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
    fn maybe_barrier(&mut self, position: Option<SourcePosition>) {
        let Some(b) = &self.barriers else { return };
        let now = Instant::now();
        if now < b.next_due || b.completed.load(Ordering::Acquire) + 1 != b.next_id {
            return;
        }
        let position = position.unwrap_or(SourcePosition::Records(self.position));
        self.barrier(position, false);
    }

    fn barrier(&mut self, position: SourcePosition, last: bool) {
        let Some(b) = &mut self.barriers else { return };
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
            self.deal(Work::Barrier { id, last });
        }
    }

    /// At the end of the input: the barrier after which the shards flush
    /// their windows, so the final checkpoint commits everything.
    fn final_barrier(&mut self, position: SourcePosition) {
        self.barrier(position, true);
    }

    /// Returns the bytes consumed, or `usize::MAX` when the workers are gone.
    fn cut_with(&mut self, data: Arc<Vec<u8>>, at_end: bool, created: Option<Instant>) -> usize {
        let mut offset = 0;
        while offset < data.len() {
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
