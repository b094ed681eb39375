//! Worker threads: decode a micro-batch, run the steps before `key_by`,
//! and split the rows by key group into one message per shard.
//!
//! Micro-batch `k` of the source goes to worker `k % W`; the worker sends
//! every shard exactly one message for it (possibly empty), so that shards,
//! reading workers round-robin, meet every batch in source order.

use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};
use weir_config::StepKind;

use super::messages::{BarrierKind, ShardMsg, Work};
use super::operators::{Runner, ThreadCtx};
use crate::decode::Decoder;
use crate::ops::Ctx;
use crate::EngineError;

pub(crate) fn worker_loop(
    ctx: ThreadCtx<'_>,
    rx: Receiver<Work>,
    shard_txs: Vec<Sender<ShardMsg>>,
) -> Result<(), EngineError> {
    let p = ctx.pipeline;
    let g = &ctx.plan.graph;
    let decode = &p.steps[g.decode];
    let StepKind::Decode(config) = &decode.kind else {
        return Err(EngineError::invariant(
            format!("step {}", decode.name),
            "the graph's decode step is not a decode step",
        ));
    };
    let mut decoder = Decoder::new(
        &decode.name,
        config,
        decode.output_schema.clone(),
        p.source.record_framing(),
    )?;
    let ops = ctx.plan.build_ops(p, &g.unkeyed)?;
    let mut runner = Runner::new(&ctx, ops, i64::MIN);
    runner.exchange = (0..ctx.plan.shards).map(|_| Vec::new()).collect();
    let mut rejected = Vec::new();
    let mut finished = false;
    for work in rx {
        let chunk = match work {
            Work::Chunk(chunk) => chunk,
            Work::Barrier { id, kind } => {
                for tx in &shard_txs {
                    if tx.send(ShardMsg::barrier(id, kind)).is_err() {
                        return Ok(()); // the shard stopped; its error is reported when joined
                    }
                }
                if kind == BarrierKind::EndOfInput {
                    runner.end_of_input(&g.unkeyed, &mut rejected)?;
                }
                finished |= kind.is_final();
                ctx.barrier_downstream(id, kind)?;
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
            let msg = ShardMsg {
                max_time: decoded.max_event_time,
                batches: std::mem::take(&mut runner.exchange[s]),
                created: chunk.created,
                arrived: chunk.arrived,
                barrier: None,
            };
            if tx.send(msg).is_err() {
                return Ok(()); // the shard stopped; its error is reported when joined
            }
        }
        ctx.reject(&mut rejected);
        if !ctx.counters.first_record.swap(true, Ordering::AcqRel) {
            if let Some(f) = &ctx.on_first_record {
                (f.0)((ctx.restore.id > 0).then_some(ctx.restore.id));
            }
        }
    }
    if !finished {
        runner.end_of_input(&g.unkeyed, &mut rejected)?;
    }
    Ok(())
}
