//! Shard threads: the keyed steps (windows, and everything after a
//! `key_by`) with the state of the key groups the shard owns.
//!
//! A shard reads batch `k` from worker `k % W`, round-robin, so it sees its
//! keys' records in source order no matter how many threads there are.
//! Nothing is shared between shards: no locks on the data path. At a
//! barrier it snapshots its state for the checkpoint; at start it restores
//! the key groups it owns from the restored one.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError};

use super::messages::{BarrierKind, ShardMsg};
use super::operators::{Runner, ThreadCtx};
use super::plan::Op;
use crate::checkpointing::{CoordMsg, StatePart, FULL_EVERY};
use crate::hash::shard_of;
use crate::ops::Ctx;
use crate::state::GroupParts;
use crate::EngineError;

pub(crate) fn shard_loop(
    ctx: ThreadCtx<'_>,
    inputs: Vec<Receiver<ShardMsg>>,
    shard: usize,
) -> Result<(), EngineError> {
    let g = &ctx.plan.graph;
    let mut ops = ctx.plan.build_ops(ctx.pipeline, &g.keyed)?;
    let mut captures = restore_state(&ctx, &mut ops, shard)?;
    if let Some(m) = &ctx.counters.metrics {
        m.recovered_part();
    }
    let mut runner = Runner::new(&ctx, ops, ctx.restore.max_time);
    let mut rejected = Vec::new();
    let mut seq = 0usize;
    let mut finished = false;
    let mut copies = 0;
    // A checkpoint's capture still being written (see `capture`).
    let mut flight: Option<InFlight> = None;
    loop {
        let input = &inputs[seq % inputs.len()];
        let msg = match &mut flight {
            // While a capture is being written, an idle moment writes more.
            Some(f) => match input.try_recv() {
                Ok(msg) => msg,
                Err(TryRecvError::Empty) => {
                    if advance(&mut runner, f, &mut captures, CAPTURE_BUDGET) {
                        send(&ctx, flight.take());
                    }
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            },
            None => match input.recv() {
                Ok(msg) => msg,
                Err(_) => break,
            },
        };
        seq += 1;
        if let Some((id, kind)) = msg.barrier {
            // One copy per worker, in consecutive slots: act on the last.
            copies += 1;
            if copies < inputs.len() {
                continue;
            }
            copies = 0;
            // One capture at a time: the previous one is finished first.
            if let Some(mut f) = flight.take() {
                advance(&mut runner, &mut f, &mut captures, usize::MAX);
                send(&ctx, Some(f));
            }
            if kind == BarrierKind::EndOfInput {
                runner.end_of_input(&g.keyed, &mut rejected)?;
            }
            finished |= kind.is_final();
            if ctx.coord.is_some() {
                let mut f = begin(&mut runner, id, &mut captures);
                // Nothing follows a final barrier: finish at once.
                let budget = if kind.is_final() { usize::MAX } else { 0 };
                if advance(&mut runner, &mut f, &mut captures, budget) {
                    send(&ctx, Some(f));
                } else {
                    flight = Some(f);
                }
            }
            ctx.barrier_downstream(id, kind)?;
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
        ctx.reject(&mut rejected);
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
        if let Some(f) = &mut flight {
            if advance(&mut runner, f, &mut captures, CAPTURE_BUDGET) {
                send(&ctx, flight.take());
            }
        }
    }
    if let Some(mut f) = flight.take() {
        advance(&mut runner, &mut f, &mut captures, usize::MAX);
        send(&ctx, Some(f));
    }
    if !finished {
        runner.end_of_input(&g.keyed, &mut rejected)?;
    }
    Ok(())
}

/// What the shard's last capture (or the restored checkpoint) wrote, so
/// the next capture can write deltas on it.
#[derive(Default)]
struct Captures {
    /// The checkpoint those parts are in.
    base: Option<u64>,
    /// Per keyed step (by index): the key groups it has a part for there.
    groups: HashMap<usize, BTreeSet<u32>>,
}

/// Loads the restored state of the key groups this shard owns: each
/// group's chain (a full part and the deltas on it).
fn restore_state(
    ctx: &ThreadCtx<'_>,
    ops: &mut [Op],
    shard: usize,
) -> Result<Captures, EngineError> {
    let key_groups = ctx.pipeline.settings.key_groups;
    let mut captures = Captures {
        base: (ctx.restore.id > 0).then_some(ctx.restore.id),
        groups: HashMap::new(),
    };
    for &i in &ctx.plan.graph.keyed {
        let name = &ctx.pipeline.steps[i].name;
        let (Op::Run(op), Some(groups)) = (&mut ops[i], ctx.restore.state.get(name)) else {
            continue;
        };
        for (&group, chain) in groups {
            if shard_of(group, key_groups, ctx.plan.shards) != shard {
                continue;
            }
            let links: Vec<&[u8]> = chain.iter().map(Vec::as_slice).collect();
            op.restore_chain(&links).map_err(|_| EngineError::Restore {
                checkpoint: ctx.restore.id,
                problem: format!("the state of step {name} for key group {group} cannot be read"),
            })?;
            captures.groups.entry(i).or_default().insert(group);
        }
    }
    Ok(captures)
}

/// Bytes of a capture written between two batches: a few tens of
/// microseconds of copying.
const CAPTURE_BUDGET: usize = 128 << 10;

/// A checkpoint's capture in this shard, from its barrier until every
/// keyed step has written its state.
struct InFlight {
    id: u64,
    /// Largest event time at the barrier.
    max_time: i64,
    /// The longest stretch the capture held the shard up at once.
    stall: Duration,
    state: Vec<StatePart>,
    /// Steps still writing (by index), with the groups they had a part
    /// for in the previous capture.
    writing: Vec<(usize, BTreeSet<u32>)>,
    /// The checkpoint the previous capture went to.
    base: Option<u64>,
}

/// Whether key group `g` is written whole in checkpoint `id`: when due
/// (see [`FULL_EVERY`]), or without a part in the last capture to build
/// on.
fn is_full(base: Option<u64>, had: &BTreeSet<u32>, id: u64, g: u32) -> bool {
    base.is_none() || !had.contains(&g) || (id + g as u64).is_multiple_of(FULL_EVERY)
}

/// Takes checkpoint `id`'s capture at its barrier: every keyed step's
/// state per key group, whole for groups due or as what changed since the
/// last capture, for operators that track their changes. Steps that can
/// write their capture over the batches that follow (sliding windows)
/// only begin it here; the rest write it at once.
fn begin(runner: &mut Runner<'_, '_>, id: u64, captures: &mut Captures) -> InFlight {
    let ctx = runner.ctx;
    let key_groups = ctx.pipeline.settings.key_groups;
    let since = Instant::now();
    let mut f = InFlight {
        id,
        max_time: runner.max_time,
        stall: Duration::ZERO,
        state: Vec::new(),
        writing: Vec::new(),
        base: captures.base,
    };
    for &i in &ctx.plan.graph.keyed {
        let Op::Run(op) = &mut runner.ops[i] else {
            continue;
        };
        let had = captures.groups.remove(&i).unwrap_or_default();
        let full = |g: u32| is_full(f.base, &had, id, g);
        if op.begin_capture(key_groups, &full) {
            f.writing.push((i, had));
            continue;
        }
        let mut parts = GroupParts::new();
        let mut deltas = GroupParts::new();
        let tracked = op.capture(key_groups, &full, &mut parts, &mut deltas);
        collect(
            ctx,
            captures,
            &mut f,
            i,
            &had,
            tracked.then_some(deltas),
            parts,
        );
    }
    captures.base = Some(id);
    f.stall = since.elapsed();
    f
}

/// Writes about `budget` more bytes of each step's capture; true once
/// every step has written all of it.
fn advance(
    runner: &mut Runner<'_, '_>,
    f: &mut InFlight,
    captures: &mut Captures,
    budget: usize,
) -> bool {
    let since = Instant::now();
    let mut k = 0;
    while k < f.writing.len() {
        let i = f.writing[k].0;
        let done = match &mut runner.ops[i] {
            Op::Run(op) => op.continue_capture(budget),
            _ => None,
        };
        match done {
            Some(done) => {
                let (i, had) = f.writing.swap_remove(k);
                f.stall = f.stall.max(done.longest);
                collect(
                    runner.ctx,
                    captures,
                    f,
                    i,
                    &had,
                    Some(done.deltas),
                    done.parts,
                );
            }
            None => k += 1,
        }
    }
    if budget > 0 {
        f.stall = f.stall.max(since.elapsed());
    }
    f.writing.is_empty()
}

/// Adds step `i`'s finished capture to the checkpoint's parts: whole
/// `parts`, and `deltas` for a step that tracks its changes (with an empty
/// delta for each group it had and left unchanged, which still needs a
/// link in this checkpoint's chain).
fn collect(
    ctx: &ThreadCtx<'_>,
    captures: &mut Captures,
    f: &mut InFlight,
    i: usize,
    had: &BTreeSet<u32>,
    deltas: Option<GroupParts>,
    parts: GroupParts,
) {
    let name = &ctx.pipeline.steps[i].name;
    let groups = captures.groups.entry(i).or_default();
    let deltas = deltas.map(|mut deltas| {
        for &g in had {
            if !is_full(f.base, had, f.id, g) {
                deltas.entry(g).or_default();
            }
        }
        deltas
    });
    let base = f.base;
    for (parts, base) in [(parts, None), (deltas.unwrap_or_default(), base)] {
        for (group, data) in parts {
            groups.insert(group);
            f.state.push(StatePart {
                step: name.clone(),
                group,
                data,
                base,
            });
        }
    }
}

/// Sends a finished capture to the checkpoint coordinator.
fn send(ctx: &ThreadCtx<'_>, f: Option<InFlight>) {
    let (Some(f), Some(coord)) = (f, &ctx.coord) else {
        return;
    };
    debug_assert!(f.writing.is_empty());
    let _ = coord.send(CoordMsg::Shard {
        id: f.id,
        state: f.state,
        max_time: f.max_time,
        stall: f.stall,
    });
}
