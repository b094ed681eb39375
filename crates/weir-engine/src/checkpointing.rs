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
    /// Step name → key group → state.
    pub state: HashMap<String, BTreeMap<u32, Vec<u8>>>,
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
    let cp = restored.checkpoint;
    let id = cp.id;
    if let Some((part, base)) = cp.bases.iter().next() {
        // Incremental parts need the operators to apply deltas, which this
        // version does not do: refuse rather than take a delta for state.
        return Err(EngineError::Restore {
            checkpoint: id,
            problem: format!(
                "its part {part:?} is a delta on checkpoint {base} (an incremental \
                 checkpoint), which this version of weir cannot restore"
            ),
        });
    }
    let mut r = Restore {
        id,
        max_time: i64::MIN,
        skipped: restored.skipped,
        ..Default::default()
    };
    for (name, data) in cp.parts {
        if name == SOURCE_PART {
            r.source =
                SourcePosition::decode(&data).ok_or_else(|| damaged(id, "source position"))?;
        } else if name == WATERMARK_PART {
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
                .insert(group, data);
        } else if let Some(sink) = name.strip_prefix(SINK_PREFIX) {
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
    /// A shard's keyed state at barrier `id`: (step, key group, bytes).
    Shard {
        id: u64,
        state: Vec<(String, u32, Vec<u8>)>,
        max_time: i64,
    },
    /// A sink staged everything before barrier `id`.
    Sink { id: u64, sink: usize, part: Vec<u8> },
    /// Everything rejected before barrier `id` is durable.
    DeadLetters { id: u64 },
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
    /// The last completed checkpoint.
    pub last: Option<CheckpointStat>,
}

#[derive(Default)]
struct Pending {
    begin: Option<(SourcePosition, Instant)>,
    shards: usize,
    max_time: Option<i64>,
    state: Vec<(String, u32, Vec<u8>)>,
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
                } => {
                    let p = pending.entry(id).or_default();
                    p.shards += 1;
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
            for (step, group, data) in p.state {
                cp.parts
                    .insert(format!("{STATE_PREFIX}{step}/{group}"), data);
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
                m.checkpoint(duration, info.size_bytes);
            }
            tracing::info!(
                checkpoint = id,
                duration_ms = duration.as_secs_f64() * 1e3,
                size_bytes = info.size_bytes,
                "checkpoint complete"
            );
            report.completed += 1;
            report.max_duration = report.max_duration.max(duration);
            report.last = Some(CheckpointStat {
                id,
                duration,
                size_bytes: info.size_bytes,
                completed_at: SystemTime::now(),
            });
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint with a delta part (an incremental checkpoint) is
    /// refused, naming the part and its base, rather than restored with
    /// the delta taken for the whole state.
    #[test]
    fn a_checkpoint_with_delta_parts_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = CheckpointStore::open(dir.path(), 3).expect("store");
        store
            .write(&Checkpoint::new(1, "fp").with_part("state/win/3", vec![1, 2]))
            .expect("full");
        store
            .write(&Checkpoint::new(2, "fp").with_delta_part("state/win/3", 1, vec![3]))
            .expect("delta");
        let err = restore(&store, "fp").expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains("checkpoint 2")
                && text.contains("\"state/win/3\" is a delta on checkpoint 1"),
            "{text}"
        );
    }
}
