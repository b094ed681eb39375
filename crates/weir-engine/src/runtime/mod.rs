//! Threads, channels and the order of things.
//!
//! Micro-batch `k` of the source goes to worker `k % W`. A worker decodes it,
//! runs the steps before `key_by`, splits the rows by key group and sends
//! every shard exactly one message for batch `k` (possibly empty). A shard
//! reads its inputs round-robin in batch order — batch `k` from worker
//! `k % W` — so each shard sees its keys' records in source order, whatever
//! the number of shards or threads. That order, plus per-record watermarks,
//! is what makes results independent of the shard count.
//!
//! One file per thread role: [`source`] and its [`cutter`], [`worker`],
//! [`shard`], [`sink_thread`]; what they send each other is in
//! [`messages`], what they share in [`operators`], and the shape of the run
//! (shards, graph, models, operators) in [`plan`]. [`run`] only wires them.

mod cutter;
mod messages;
mod operators;
mod plan;
mod shard;
mod sink_thread;
mod source;
mod stop;
mod summary;
mod threads;
mod worker;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use weir_config::Pipeline;
use weir_connect::{ConnectError, SourceConnector};

use crate::checkpointing::{self, CoordMsg, Coordinator, Recovery, SourcePosition};
use crate::dead_letter::DeadLetterWriter;
use crate::sink::SinkWriter;
use crate::telemetry::{RunMetrics, Telemetry};
use crate::txn_file::EpochPlace;
use crate::EngineError;
use cutter::Barriers;
use messages::{DeadLetterMsg, ShardMsg, SinkMsg, Work};
use operators::{Counters, ThreadCtx};
use plan::Plan;
use sink_thread::{DeadLetterTxn, SinkTxn};
use source::ByteSource;
use stop::Ended;
use threads::Threads;

pub use sink_thread::SinkProbe;
pub use stop::Stop;
pub use summary::{ConnectorReport, RunSummary, StepCount};

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
    /// A connector the embedding program opens, in place of the one the
    /// pipeline file names (a task's Kafka source, which commits through
    /// its process's consumer group member).
    Connector(OpenConnector),
}

/// Opens a connector source at the restored checkpoint's place (`None`:
/// no checkpoint), draining or not.
pub struct OpenConnector(
    #[allow(clippy::type_complexity)]
    pub  Box<
        dyn FnOnce(Option<&[u64]>, bool) -> Result<Box<dyn SourceConnector>, ConnectError> + Send,
    >,
);

impl std::fmt::Debug for OpenConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenConnector(..)")
    }
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
    /// Stops the run gracefully when requested (SIGTERM, SIGINT): the
    /// source stops reading, a final checkpoint is taken, sinks and dead
    /// letters are flushed and committed, and `run` returns the summary.
    pub stop: Option<Stop>,
    /// The owner epoch the checkpoint store is opened with (a task's lease
    /// epoch): a store a newer owner claimed refuses this run, and this
    /// run's claim fences every older owner's writes. 0: no claim.
    pub epoch: u64,
    /// Handed every batch each sink writes, right after it is written
    /// (`weir bench` measures per-record latency with it).
    pub sink_probe: Option<Arc<dyn SinkProbe>>,
}

/// Runs a pipeline to the end of its input, or until a stop is requested.
pub fn run(pipeline: &Pipeline, options: RunOptions) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let plan = Plan::new(pipeline, options.shards)?;
    let metrics = options
        .telemetry
        .as_ref()
        .map(|t| RunMetrics::new(t, pipeline, plan.shards, plan.keyed));
    let counters = Counters::new(pipeline, metrics.clone());

    // Checkpoints: restore the newest valid one before anything opens.
    let recovery = Recovery::open(pipeline, options.epoch)?;
    // The source opens before anything else: a broker that cannot be
    // reached or a missing file fails the run at once, before any output
    // is touched.
    let mut input = options.input;
    let mut connector = match input {
        Input::Configured => open_source(pipeline, &recovery, options.drain, None)?,
        Input::Connector(open) => {
            input = Input::Configured;
            open_source(pipeline, &recovery, options.drain, Some(open))?
        }
        _ => None,
    };
    let bytes = match connector {
        None => Some(ByteSource::open(pipeline, input)?),
        Some(_) => None,
    };
    // Brokers' and databases' connections are reported (metrics,
    // readiness, summary); the embedded log's is always up.
    let mut connectors: Vec<(String, Arc<weir_connect::ConnectorStatus>)> = connector
        .iter()
        .filter(|_| pipeline.source.kind.is_connector())
        .map(|c| (pipeline.source.name.clone(), c.status()))
        .collect();
    let mut writers = open_sinks(pipeline, &recovery, options.epoch, &mut connectors)?;
    let mut dead_letter = open_dead_letters(pipeline, recovery.store.is_some())?;
    // Everything opened: only now are earlier runs' outputs replaced.
    for w in &mut writers {
        w.start()?;
    }
    dead_letter.start()?;

    // The coordinator and the sinks' commit channels.
    let (coord_tx, coord_rx) = unbounded::<CoordMsg>();
    let completed = Arc::new(AtomicU64::new(recovery.next_id - 1));
    let (commit_txs, commit_rxs): (Vec<_>, Vec<_>) =
        pipeline.sinks.iter().map(|_| unbounded::<u64>()).unzip();
    let report = recovery.report();
    let Recovery {
        store,
        restore,
        next_id,
    } = recovery;
    let coordinator = store.map(|store| Coordinator {
        store,
        fingerprint: pipeline.fingerprint(),
        shards: if plan.keyed { plan.shards } else { 0 },
        sinks: pipeline.sinks.iter().map(|s| s.name.clone()).collect(),
        commits: commit_txs,
        completed: completed.clone(),
        on_complete: consumer_commit(connector.as_mut()),
        metrics: metrics.clone(),
    });
    let coord = coordinator.is_some().then(|| coord_tx.clone());

    let channels = Channels::new(pipeline, &plan);
    let on_first_record = options.on_first_record.clone();
    std::thread::scope(|scope| -> Result<RunSummary, EngineError> {
        let mut threads = Threads::new(scope);
        // The source looks at this stop; a checkpoint that cannot be
        // written (a store fenced by a newer owner, a store that fails)
        // requests it, so the run ends — with the checkpoint's error —
        // instead of going on without checkpoints.
        let run_stop = options.stop.clone().unwrap_or_default();
        let checkpoints = match coordinator {
            Some(c) => {
                let stop = run_stop.clone();
                Some(threads.spawn("weir-checkpoint", "checkpoint", move || {
                    let result = c.run(coord_rx, report);
                    if result.is_err() {
                        stop.request();
                    }
                    result
                })?)
            }
            None => None,
        };
        let producers = plan.workers + if plan.keyed { plan.shards } else { 0 };
        let mut sinks = Vec::new();
        for (i, ((writer, rx), commits)) in writers
            .into_iter()
            .zip(channels.sink_rxs)
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
            let metrics = metrics.clone().map(|m| (m, i));
            let probe = options
                .sink_probe
                .clone()
                .map(|p| (pipeline.sinks[i].name.clone(), p));
            sinks.push(threads.spawn("weir-sink", "sink", move || {
                sink_thread::sink_loop(writer, rx, txn, metrics, probe)
            })?);
        }
        let dlq = {
            let (rx, metrics) = (channels.dlq_rx, metrics.clone());
            let txn = coord
                .clone()
                .map(|coord| DeadLetterTxn { coord, producers });
            threads.spawn("weir-dead-letter", "dead-letter", move || {
                sink_thread::dead_letter_loop(dead_letter, rx, txn, metrics)
            })?
        };
        let ctx = |producer: usize| ThreadCtx {
            pipeline,
            plan: &plan,
            sinks: channels.sink_txs.clone(),
            dlq: channels.dlq_tx.clone(),
            counters: &counters,
            producer,
            coord: coord.clone(),
            restore: &restore,
            on_first_record: on_first_record.as_ref(),
        };
        let mut computing = Vec::new();
        for (w, (rx, txs)) in channels
            .work_rxs
            .into_iter()
            .zip(channels.shard_txs)
            .enumerate()
        {
            let ctx = ctx(w);
            computing.push(
                threads.spawn(format!("weir-worker-{w}"), "worker", move || {
                    worker::worker_loop(ctx, rx, txs)
                })?,
            );
        }
        if plan.keyed {
            for (s, rxs) in channels.shard_rxs.into_iter().enumerate() {
                let ctx = ctx(plan.workers + s);
                computing.push(threads.spawn(format!("weir-shard-{s}"), "shard", move || {
                    shard::shard_loop(ctx, rxs, s)
                })?);
            }
        }
        // Only the threads hold these now: a closed channel ends its reader.
        drop((channels.sink_txs, channels.dlq_tx, coord));

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
            m.watch_connectors(&pipeline.source.name, &connectors);
            for (name, status) in &connectors {
                if name == &pipeline.source.name {
                    m.health.watch_source(name, status.clone());
                }
            }
            m.recovered_part();
        }
        let stop = Some(run_stop);
        let read = match (connector.take(), bytes) {
            (Some(c), _) => {
                let cutter =
                    source::connector_cutter(pipeline, channels.work_txs, barriers, &counters);
                source::read_connector(c, pipeline, cutter.with_stop(stop), &counters)
            }
            (None, Some(bytes)) => {
                let cutter =
                    source::byte_cutter(pipeline, channels.work_txs, barriers, &restore, &counters);
                source::read_bytes(pipeline, bytes, cutter.with_stop(stop), &counters)
            }
            (None, None) => Err(EngineError::invariant(
                format!("source {}", pipeline.source.name),
                "neither a connector nor a byte source was opened",
            )),
        };
        let ended = read.as_ref().ok().copied();
        threads.failed(read.err());
        for h in computing {
            threads.join(h);
        }
        let sinks: Vec<_> = sinks.into_iter().map(|h| threads.join(h)).collect();
        let dead_letters = threads.join(dlq).unwrap_or(0);
        let checkpoints = checkpoints
            .and_then(|h| threads.join(h))
            .unwrap_or_default();
        threads.result()?;
        let mut summary = summary::collect(
            pipeline,
            &plan,
            &counters,
            sinks,
            dead_letters,
            checkpoints,
            &connectors,
            started.elapsed(),
        );
        if ended == Some(Ended::Stopped) {
            summary.stopped = options
                .stop
                .as_ref()
                .and_then(Stop::requested_at)
                .map(|at| at.elapsed());
        }
        Ok(summary)
    })
}

/// The channels between the threads of a run.
struct Channels {
    /// Source to worker `w`.
    work_txs: Vec<Sender<Work>>,
    work_rxs: Vec<Receiver<Work>>,
    /// `shard_txs[w][s]`: worker `w` to shard `s`; `shard_rxs[s][w]` its
    /// other end.
    shard_txs: Vec<Vec<Sender<ShardMsg>>>,
    shard_rxs: Vec<Vec<Receiver<ShardMsg>>>,
    /// Workers and shards to each sink.
    sink_txs: Vec<Sender<SinkMsg>>,
    sink_rxs: Vec<Receiver<SinkMsg>>,
    dlq_tx: Sender<DeadLetterMsg>,
    dlq_rx: Receiver<DeadLetterMsg>,
}

impl Channels {
    /// Bounded where data flows (backpressure), unbounded for dead letters
    /// (a bounded queue there could block a worker behind a shard).
    fn new(p: &Pipeline, plan: &Plan) -> Channels {
        let (work_txs, work_rxs) = (0..plan.workers).map(|_| bounded::<Work>(4)).unzip();
        let mut shard_txs: Vec<Vec<Sender<ShardMsg>>> =
            (0..plan.workers).map(|_| Vec::new()).collect();
        let mut shard_rxs: Vec<Vec<Receiver<ShardMsg>>> =
            (0..plan.shards).map(|_| Vec::new()).collect();
        if plan.keyed {
            for txs in shard_txs.iter_mut() {
                for rxs in shard_rxs.iter_mut() {
                    let (tx, rx) = bounded::<ShardMsg>(8);
                    txs.push(tx);
                    rxs.push(rx);
                }
            }
        }
        let (sink_txs, sink_rxs) = p.sinks.iter().map(|_| bounded::<SinkMsg>(64)).unzip();
        let (dlq_tx, dlq_rx) = unbounded::<DeadLetterMsg>();
        Channels {
            work_txs,
            work_rxs,
            shard_txs,
            shard_rxs,
            sink_txs,
            sink_rxs,
            dlq_tx,
            dlq_rx,
        }
    }
}

/// Opens the pipeline's connector source at the restored checkpoint's
/// place, checking the checkpoint has a place for every partition.
fn open_source(
    p: &Pipeline,
    recovery: &Recovery,
    drain: bool,
    open: Option<OpenConnector>,
) -> Result<Option<Box<dyn SourceConnector>>, EngineError> {
    let start = match &recovery.restore.source {
        SourcePosition::Offsets(v) => Some(v.as_slice()),
        _ => None,
    };
    let opened = match open {
        Some(OpenConnector(open)) => {
            Some(open(start, drain).map_err(|e| EngineError::source(&p.source.name, e))?)
        }
        None => crate::connectors::open_source(p, start, drain)?,
    };
    let Some(connector) = opened else {
        return Ok(None);
    };
    if let Some(start) = start {
        if start.len() != connector.partitions() as usize {
            return Err(EngineError::Restore {
                checkpoint: recovery.restore.id,
                problem: format!(
                    "source {}: the checkpoint has positions for {} partitions, the source has {}",
                    p.source.name,
                    start.len(),
                    connector.partitions()
                ),
            });
        }
    }
    Ok(Some(connector))
}

/// Opens every sink with its part of the restored checkpoint; connector
/// sinks add their status to `connectors`.
fn open_sinks(
    p: &Pipeline,
    recovery: &Recovery,
    epoch: u64,
    connectors: &mut Vec<(String, Arc<weir_connect::ConnectorStatus>)>,
) -> Result<Vec<SinkWriter>, EngineError> {
    let checkpointing = recovery.store.is_some();
    let mut writers = Vec::new();
    for s in &p.sinks {
        let part = recovery.restore.sinks.get(&s.name);
        let log_part = checkpointing.then_some(part.map(Vec::as_slice));
        // Under checkpoints a file sink stages each epoch; its place in
        // the restored checkpoint says what to keep.
        let transactional = match (checkpointing, &s.kind) {
            (true, weir_config::SinkKind::File { .. }) => Some(match part {
                Some(part) if !part.is_empty() => Some(EpochPlace::decode(part).ok_or_else(
                    || EngineError::Restore {
                        checkpoint: recovery.restore.id,
                        problem: format!("the part of sink {} cannot be read", s.name),
                    },
                )?),
                _ => None,
            }),
            _ => None,
        };
        let writer = SinkWriter::open(s, transactional, log_part, epoch)?;
        if let Some(status) = writer.connector_status() {
            connectors.push((s.name.clone(), status));
        }
        writers.push(writer);
    }
    Ok(writers)
}

/// The dead-letter destination: a log stream, or a file (appended to under
/// checkpoints, where a restart continues the run).
fn open_dead_letters(p: &Pipeline, checkpointing: bool) -> Result<DeadLetterWriter, EngineError> {
    match &p.dead_letter.log {
        Some((dir, stream)) => DeadLetterWriter::log(dir, stream),
        None if checkpointing => DeadLetterWriter::append(&p.dead_letter.path),
        None => DeadLetterWriter::create(&p.dead_letter.path),
    }
}

/// After each checkpoint, the source acknowledges what it covers: a
/// broker source to its broker, a log source by publishing the pipeline's
/// consumer position (which ingest's lag bound reads).
fn consumer_commit(
    connector: Option<&mut Box<dyn SourceConnector>>,
) -> Option<checkpointing::OnComplete> {
    let mut ack = connector?.on_checkpoint();
    Some(Box::new(move |position: &SourcePosition| {
        if let SourcePosition::Offsets(next) = position {
            ack(next);
        }
    }))
}
