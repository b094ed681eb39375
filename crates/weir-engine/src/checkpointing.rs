//! Aligned checkpoints: what a barrier collects and where it goes.
//!
//! The source thread injects a barrier into its sequence of micro-batches
//! and tells the coordinator where the source stood ([`CoordMsg::Begin`]).
//! Barriers travel the same channels as data, in the same order: a worker
//! forwards it to every shard and sink; a shard, which reads its inputs in
//! batch order, meets it exactly between the batches before and after it —
//! aligned without buffering — and sends its keyed state, per key group
//! ([`CoordMsg::Shard`]); a sink, once the barrier came from every
//! producer, stages what came before it ([`CoordMsg::Sink`]); the
//! dead-letter writer, once the barrier came from every producer, syncs
//! what was rejected before it ([`CoordMsg::DeadLetters`]). With every
//! part in, the coordinator writes the checkpoint to the store (atomic:
//! temporary file, fsync, rename, manifest) and tells the sinks to commit.
//! One checkpoint is in flight at a time.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use weir_checkpoint::{Checkpoint, CheckpointStore};

use crate::state::{StateReader, StateWriter};
use crate::EngineError;

/// Where the source stood at a barrier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum SourcePosition {
    /// Nothing read yet.
    #[default]
    Start,
    /// Records consumed from a byte source (file, stdin, memory).
    Records(u64),
    /// Next offset per partition of a log stream.
    Offsets(Vec<u64>),
}

impl SourcePosition {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = StateWriter(&mut out);
        match self {
            SourcePosition::Start => w.u8(0),
            SourcePosition::Records(n) => {
                w.u8(1);
                w.u64(*n);
            }
            SourcePosition::Offsets(v) => {
                w.u8(2);
                w.u64(v.len() as u64);
                for o in v {
                    w.u64(*o);
                }
            }
        }
        out
    }

    fn decode(data: &[u8]) -> Option<SourcePosition> {
        let mut r = StateReader::new(data);
        let p = match r.u8().ok()? {
            0 => SourcePosition::Start,
            1 => SourcePosition::Records(r.u64().ok()?),
            2 => {
                let n = r.count(1).ok()?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.u64().ok()?);
                }
                SourcePosition::Offsets(v)
            }
            _ => return None,
        };
        r.done().then_some(p)
    }
}

/// What a run starts from.
#[derive(Debug, Default)]
pub(crate) struct Restore {
    /// Id of the restored checkpoint, 0 for none.
    pub id: u64,
    pub source: SourcePosition,
    /// Largest event time before the checkpoint (`i64::MIN` for none).
    pub max_time: i64,
    /// Step name → key group → its state's chain: a full part, then the
    /// deltas of later checkpoints on it, oldest first.
    pub state: HashMap<String, BTreeMap<u32, Vec<Vec<u8>>>>,
    /// Sink name → its part.
    pub sinks: HashMap<String, Vec<u8>>,
    /// Newer checkpoints that did not verify: (id, reason).
    pub skipped: Vec<(u64, String)>,
}

const SOURCE_PART: &str = "source";
const WATERMARK_PART: &str = "watermark";
const STATE_PREFIX: &str = "state/";
const SINK_PREFIX: &str = "sink/";

fn damaged(id: u64, what: &str) -> EngineError {
    EngineError::Restore {
        checkpoint: id,
        problem: format!(
            "its {what} cannot be read although its checksum holds (written by an incompatible weir version?)"
        ),
    }
}

/// A run's checkpoint store (with `[checkpoint]`), what it restored and
/// the id its first barrier takes.
pub(crate) struct Recovery {
    pub store: Option<CheckpointStore>,
    pub restore: Restore,
    pub next_id: u64,
}

impl Recovery {
    /// Opens the store and restores the newest valid checkpoint, before
    /// anything else opens.
    pub(crate) fn open(p: &weir_config::Pipeline, epoch: u64) -> Result<Recovery, EngineError> {
        let Some(c) = &p.checkpoint else {
            return Ok(Recovery {
                store: None,
                restore: Restore {
                    max_time: i64::MIN,
                    ..Default::default()
                },
                next_id: 1,
            });
        };
        let store = match &c.url {
            Some(url) => CheckpointStore::open_url(url, c.keep, epoch)?,
            None => CheckpointStore::open_with_epoch(&c.dir, c.keep, epoch)?,
        };
        let restore = restore(&store, &p.fingerprint())?;
        // Barrier ids continue after every id the store lists or has a file
        // for, including skipped ones (damaged, or listed with the file
        // missing).
        let next_id = store.next_id()?.max(restore.id + 1);
        if restore.id > 0 {
            tracing::info!(checkpoint = restore.id, "restored checkpoint");
        }
        Ok(Recovery {
            store: Some(store),
            restore,
            next_id,
        })
    }

    /// The report a run starts with.
    pub(crate) fn report(&self) -> CheckpointReport {
        CheckpointReport {
            restored: (self.restore.id > 0).then_some(self.restore.id),
            skipped: self.restore.skipped.clone(),
            ..Default::default()
        }
    }
}

/// Reads the newest valid checkpoint for this pipeline version.
pub(crate) fn restore(store: &CheckpointStore, fingerprint: &str) -> Result<Restore, EngineError> {
    let Some(restored) = store.latest_valid(fingerprint)? else {
        return Ok(Restore {
            max_time: i64::MIN,
            ..Default::default()
        });
    };
    for (id, reason) in &restored.skipped {
        tracing::warn!(checkpoint = id, %reason, "skipping a damaged checkpoint; restoring an older one");
    }
    let id = restored.checkpoint.id;
    let mut r = Restore {
        id,
        max_time: i64::MIN,
        skipped: restored.skipped.clone(),
        ..Default::default()
    };
    for (name, mut chain) in restored.into_chains() {
        let whole = |chain: &mut Vec<(u64, Vec<u8>)>| match chain.len() {
            1 => chain.pop().map(|(_, data)| data),
            _ => None,
        };
        if name == SOURCE_PART {
            let data = whole(&mut chain).ok_or_else(|| damaged(id, "source position"))?;
            r.source =
                SourcePosition::decode(&data).ok_or_else(|| damaged(id, "source position"))?;
        } else if name == WATERMARK_PART {
            let data = whole(&mut chain).ok_or_else(|| damaged(id, "watermark"))?;
            let mut rd = StateReader::new(&data);
            r.max_time = rd.i64().map_err(|_| damaged(id, "watermark"))?;
        } else if let Some(rest) = name.strip_prefix(STATE_PREFIX) {
            let (step, group) = rest
                .rsplit_once('/')
                .and_then(|(s, g)| Some((s, g.parse::<u32>().ok()?)))
                .ok_or_else(|| damaged(id, &format!("part {name:?}")))?;
            r.state
                .entry(step.to_string())
                .or_default()
                .insert(group, chain.into_iter().map(|(_, data)| data).collect());
        } else if let Some(sink) = name.strip_prefix(SINK_PREFIX) {
            let data = whole(&mut chain).ok_or_else(|| damaged(id, &format!("part {name:?}")))?;
            r.sinks.insert(sink.to_string(), data);
        }
    }
    Ok(r)
}

/// Messages to the coordinator.
pub(crate) enum CoordMsg {
    /// The source injected barrier `id` at this position.
    Begin {
        id: u64,
        source: SourcePosition,
        at: Instant,
    },
    /// A shard's keyed state at barrier `id`, and the longest stretch
    /// for which capturing it held the shard up at once.
    Shard {
        id: u64,
        state: Vec<StatePart>,
        max_time: i64,
        stall: Duration,
    },
    /// A sink staged everything before barrier `id`.
    Sink { id: u64, sink: usize, part: Vec<u8> },
    /// Everything rejected before barrier `id` is durable.
    DeadLetters { id: u64 },
}

/// A checkpoint is written whole for key group `g` when `(id + g) %
/// FULL_EVERY == 0` (and when the group has no part to build on), and as
/// the changes since the previous checkpoint otherwise: each group's chain
/// of deltas stays under this length, and the full writes are spread over
/// the checkpoints instead of all falling on one.
pub(crate) const FULL_EVERY: u64 = 64;

/// One key group's state of one step, for a checkpoint.
pub(crate) struct StatePart {
    pub step: String,
    pub group: u32,
    pub data: Vec<u8>,
    /// For a delta: the checkpoint it applies on.
    pub base: Option<u64>,
}

/// One completed checkpoint, for the run's report.
#[derive(Debug, Clone)]
pub struct CheckpointStat {
    /// Checkpoint id.
    pub id: u64,
    /// From barrier injection to the checkpoint being durable.
    pub duration: Duration,
    /// Size of the checkpoint file.
    pub size_bytes: u64,
    /// How long capturing the state held the pipeline up: the longest
    /// stretch any shard spent on it at once (at the barrier, or writing
    /// a share of it between batches).
    pub stall: Duration,
    /// Key-group parts written whole, and as deltas.
    pub full_parts: usize,
    /// Key-group parts written as the changes since the last checkpoint.
    pub delta_parts: usize,
    /// When it completed.
    pub completed_at: SystemTime,
}

/// What checkpointing did in a run.
#[derive(Debug, Clone, Default)]
pub struct CheckpointReport {
    /// The checkpoint the run started from.
    pub restored: Option<u64>,
    /// Newer checkpoints skipped because they did not verify: (id, reason).
    pub skipped: Vec<(u64, String)>,
    /// Checkpoints completed by this run.
    pub completed: u64,
    /// Longest checkpoint duration in this run.
    pub max_duration: Duration,
    /// Longest stall of the pipeline for a checkpoint in this run.
    pub max_stall: Duration,
    /// Bytes of every checkpoint this run wrote.
    pub total_bytes: u64,
    /// The most recent completed checkpoints, oldest first (at most
    /// [`CheckpointReport::RECENT`]).
    pub recent: Vec<CheckpointStat>,
    /// The last completed checkpoint.
    pub last: Option<CheckpointStat>,
}

impl CheckpointReport {
    /// How many recent checkpoints the report keeps.
    pub const RECENT: usize = 1024;
}

#[derive(Default)]
struct Pending {
    begin: Option<(SourcePosition, Instant)>,
    shards: usize,
    max_time: Option<i64>,
    stall: Duration,
    state: Vec<StatePart>,
    sinks: BTreeMap<usize, Vec<u8>>,
    dead_letters: bool,
}

/// Called with the source position of each completed checkpoint (log
/// sources publish it as their consumer position).
pub(crate) type OnComplete = Box<dyn FnMut(&SourcePosition) + Send>;

pub(crate) struct Coordinator {
    pub store: CheckpointStore,
    pub fingerprint: String,
    pub shards: usize,
    pub sinks: Vec<String>,
    pub commits: Vec<Sender<u64>>,
    /// Last completed checkpoint id, read by the source before injecting.
    pub completed: Arc<AtomicU64>,
    pub on_complete: Option<OnComplete>,
    pub metrics: Option<Arc<crate::telemetry::RunMetrics>>,
}

impl Coordinator {
    pub(crate) fn run(
        mut self,
        rx: Receiver<CoordMsg>,
        mut report: CheckpointReport,
    ) -> Result<CheckpointReport, EngineError> {
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        for msg in rx {
            let id = match msg {
                CoordMsg::Begin { id, source, at } => {
                    pending.entry(id).or_default().begin = Some((source, at));
                    id
                }
                CoordMsg::Shard {
                    id,
                    state,
                    max_time,
                    stall,
                } => {
                    let p = pending.entry(id).or_default();
                    p.shards += 1;
                    p.stall = p.stall.max(stall);
                    p.max_time = Some(p.max_time.unwrap_or(i64::MIN).max(max_time));
                    p.state.extend(state);
                    id
                }
                CoordMsg::Sink { id, sink, part } => {
                    pending.entry(id).or_default().sinks.insert(sink, part);
                    id
                }
                CoordMsg::DeadLetters { id } => {
                    pending.entry(id).or_default().dead_letters = true;
                    id
                }
            };
            let ready = pending.get(&id).is_some_and(|p| {
                p.begin.is_some()
                    && p.shards == self.shards
                    && p.sinks.len() == self.sinks.len()
                    && p.dead_letters
            });
            if !ready {
                continue;
            }
            // unwrap: checked just above.
            let p = pending.remove(&id).expect("pending checkpoint");
            let (source, at) = p.begin.expect("checked begin");
            let mut cp = Checkpoint::new(id, self.fingerprint.clone())
                .with_part(SOURCE_PART, source.encode());
            if let Some(t) = p.max_time {
                cp = cp.with_part(WATERMARK_PART, t.to_le_bytes().to_vec());
            }
            let (mut full_parts, mut delta_parts) = (0, 0);
            for part in p.state {
                let name = format!("{STATE_PREFIX}{}/{}", part.step, part.group);
                match part.base {
                    Some(base) => {
                        delta_parts += 1;
                        cp = cp.with_delta_part(name, base, part.data);
                    }
                    None => {
                        full_parts += 1;
                        cp.parts.insert(name, part.data);
                    }
                }
            }
            for (sink, part) in p.sinks {
                cp.parts
                    .insert(format!("{SINK_PREFIX}{}", self.sinks[sink]), part);
            }
            let info = match self.store.write(&cp) {
                Ok(info) => info,
                Err(e) => {
                    if let Some(c) = self.metrics.as_ref().and_then(|m| m.checkpoints.as_ref()) {
                        c.failed.add(1);
                    }
                    return Err(EngineError::Store(e));
                }
            };
            crate::state::recycle_parts(
                std::mem::take(&mut cp.parts)
                    .into_iter()
                    .filter(|(name, _)| name.starts_with(STATE_PREFIX))
                    .map(|(_, data)| data),
            );
            for tx in &self.commits {
                // A sink that stopped reports its own error.
                let _ = tx.send(id);
            }
            self.completed.store(id, Ordering::Release);
            if let Some(f) = &mut self.on_complete {
                f(&source);
            }
            let duration = at.elapsed();
            if let Some(m) = &self.metrics {
                m.checkpoint(duration, p.stall, info.size_bytes);
            }
            tracing::info!(
                checkpoint = id,
                duration_ms = duration.as_secs_f64() * 1e3,
                stall_ms = p.stall.as_secs_f64() * 1e3,
                size_bytes = info.size_bytes,
                full_parts,
                delta_parts,
                "checkpoint complete"
            );
            report.completed += 1;
            report.max_duration = report.max_duration.max(duration);
            report.max_stall = report.max_stall.max(p.stall);
            report.total_bytes += info.size_bytes;
            let stat = CheckpointStat {
                id,
                duration,
                size_bytes: info.size_bytes,
                stall: p.stall,
                full_parts,
                delta_parts,
                completed_at: SystemTime::now(),
            };
            if report.recent.len() == CheckpointReport::RECENT {
                report.recent.remove(0);
            }
            report.recent.push(stat.clone());
            report.last = Some(stat);
        }
        Ok(report)
    }
}
