//! Shard threads: the keyed steps (windows, and everything after a
//! `key_by`) with the state of the key groups the shard owns.
//!
//! A shard reads batch `k` from worker `k % W`, round-robin, so it sees its
//! keys' records in source order no matter how many threads there are.
//! Nothing is shared between shards: no locks on the data path. At a
//! barrier it snapshots its state for the checkpoint; at start it restores
//! the key groups it owns from the restored one.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use crossbeam_channel::Receiver;

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
    while let Ok(msg) = inputs[seq % inputs.len()].recv() {
        seq += 1;
        if let Some((id, kind)) = msg.barrier {
            // One copy per worker, in consecutive slots: act on the last.
            copies += 1;
            if copies < inputs.len() {
                continue;
            }
            copies = 0;
            if kind == BarrierKind::EndOfInput {
                runner.end_of_input(&g.keyed, &mut rejected)?;
            }
            finished |= kind.is_final();
            if let Some(coord) = &ctx.coord {
                let began = Instant::now();
                let state = capture(&mut runner, id, &mut captures);
                let _ = coord.send(CoordMsg::Shard {
                    id,
                    state,
                    max_time: runner.max_time,
                    stall: began.elapsed(),
                });
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

/// The state of every keyed step, per key group, for checkpoint `id`:
/// whole for groups due (see [`FULL_EVERY`]) or without a part in the
/// last capture, else what changed since it, for operators that track
/// their changes.
fn capture(runner: &mut Runner<'_, '_>, id: u64, captures: &mut Captures) -> Vec<StatePart> {
    let ctx = runner.ctx;
    let base = captures.base;
    let mut state = Vec::new();
    for &i in &ctx.plan.graph.keyed {
        let Op::Run(op) = &mut runner.ops[i] else {
            continue;
        };
        let had = captures.groups.remove(&i).unwrap_or_default();
        let full = |g: u32| {
            base.is_none() || !had.contains(&g) || (id + g as u64).is_multiple_of(FULL_EVERY)
        };
        let mut parts = GroupParts::new();
        let mut deltas = GroupParts::new();
        if op.capture(
            ctx.pipeline.settings.key_groups,
            &full,
            &mut parts,
            &mut deltas,
        ) {
            // A group unchanged since the base still needs a link in
            // this checkpoint's chain.
            for &g in &had {
                if !full(g) {
                    deltas.entry(g).or_default();
                }
            }
        }
        let name = &ctx.pipeline.steps[i].name;
        let groups = captures.groups.entry(i).or_default();
        for (parts, base) in [(parts, None), (deltas, base)] {
            for (group, data) in parts {
                groups.insert(group);
                state.push(StatePart {
                    step: name.clone(),
                    group,
                    data,
                    base,
                });
            }
        }
    }
    captures.base = Some(id);
    state
}
