//! Shard threads: the keyed steps (windows, and everything after a
//! `key_by`) with the state of the key groups the shard owns.
//!
//! A shard reads batch `k` from worker `k % W`, round-robin, so it sees its
//! keys' records in source order no matter how many threads there are.
//! Nothing is shared between shards: no locks on the data path. At a
//! barrier it snapshots its state for the checkpoint; at start it restores
//! the key groups it owns from the restored one.

use crossbeam_channel::Receiver;

use super::messages::{BarrierKind, ShardMsg};
use super::operators::{Runner, ThreadCtx};
use super::plan::Op;
use crate::checkpointing::CoordMsg;
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
    restore_state(&ctx, &mut ops, shard)?;
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
                let _ = coord.send(CoordMsg::Shard {
                    id,
                    state: snapshot(&runner),
                    max_time: runner.max_time,
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

/// Loads the restored state of the key groups this shard owns.
fn restore_state(ctx: &ThreadCtx<'_>, ops: &mut [Op], shard: usize) -> Result<(), EngineError> {
    let key_groups = ctx.pipeline.settings.key_groups;
    for &i in &ctx.plan.graph.keyed {
        let name = &ctx.pipeline.steps[i].name;
        let (Op::Run(op), Some(groups)) = (&mut ops[i], ctx.restore.state.get(name)) else {
            continue;
        };
        for (&group, data) in groups {
            if shard_of(group, key_groups, ctx.plan.shards) != shard {
                continue;
            }
            op.restore(data).map_err(|_| EngineError::Restore {
                checkpoint: ctx.restore.id,
                problem: format!("the state of step {name} for key group {group} cannot be read"),
            })?;
        }
    }
    Ok(())
}

/// The state of every keyed step, per key group, for a checkpoint.
fn snapshot(runner: &Runner<'_, '_>) -> Vec<(String, u32, Vec<u8>)> {
    let ctx = runner.ctx;
    let mut state = Vec::new();
    for &i in &ctx.plan.graph.keyed {
        if let Op::Run(op) = &runner.ops[i] {
            let mut parts = GroupParts::new();
            op.snapshot(ctx.pipeline.settings.key_groups, &mut parts);
            let name = &ctx.pipeline.steps[i].name;
            state.extend(parts.into_iter().map(|(k, v)| (name.clone(), k, v)));
        }
    }
    state
}
