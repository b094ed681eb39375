//! `weir run` of a pipeline split into tasks over a Kafka topic: the
//! process joins the source's consumer group, and the group's cooperative
//! rebalancing decides which tasks it runs (see `weir_kafka::KafkaGroup`).
//! A task the group assigns is started with the assignment's generation as
//! its fencing epoch; a task the group revokes is stopped (a last
//! checkpoint) before the revocation returns, so its next owner starts
//! from that checkpoint.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context;
use weir_config::{KafkaSource, Pipeline};
use weir_engine::{OpenConnector, Stop};
use weir_kafka::KafkaGroup;
use weir_tasks::{TaskEnd, TaskRunner};

use crate::progress;
use crate::tasks::{EngineRunner, Running, TaskArgs, POLL};

/// The tasks running here, shared by the member's loop and the group's
/// revocation callback (which runs inside the loop's poll, never while the
/// loop holds these).
#[derive(Clone)]
struct Shared {
    runner: Arc<Mutex<EngineRunner>>,
    running: Arc<Mutex<BTreeMap<u32, Running>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Stops `tasks` gracefully, one after the other.
    fn stop(&self, tasks: &[u32]) {
        for task in tasks {
            let Some(running) = lock(&self.running).remove(task) else {
                continue;
            };
            match lock(&self.runner).stop(running) {
                TaskEnd::Done => {}
                // A member woken after its session expired: the new owner
                // had already claimed the task.
                TaskEnd::Fenced(reason) => {
                    tracing::warn!(task, %reason, "a newer owner had taken the task over")
                }
                TaskEnd::Failed(reason) => {
                    tracing::error!(task, %reason, "the task failed while stopping")
                }
            }
        }
    }
}

/// Runs this process's share of `p`'s tasks, as the consumer group of
/// `source` assigns them, until `stop`, a task's failure, or (draining)
/// the end of every task it ran.
pub fn run(
    p: Pipeline,
    source: &KafkaSource,
    args: TaskArgs,
    stop: Stop,
    id: &str,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.only.is_none(),
        "--task: the tasks of a pipeline reading kafka are assigned by its consumer group \
         {:?}; start workers without --task",
        source.group_id
    );
    if let Some(t) = &args.telemetry {
        t.health.set_recovered();
    }
    let drain = args.drain;
    let shared = Shared {
        runner: Arc::new(Mutex::new(EngineRunner::new(&p, args))),
        running: Arc::new(Mutex::new(BTreeMap::new())),
    };
    let on_revoke = {
        let shared = shared.clone();
        Box::new(move |tasks: &[u32]| shared.stop(tasks))
    };
    let group = KafkaGroup::join(&p.source.name, source, p.settings.tasks, id, on_revoke)
        .with_context(|| format!("cannot join the workers of pipeline {}", p.name))?;
    {
        let group = group.clone();
        let config = source.clone();
        lock(&shared.runner).source = Some(Arc::new(move |task_pipeline: &Pipeline, task| {
            let group = group.clone();
            let config = config.clone();
            let name = task_pipeline.source.name.clone();
            OpenConnector(Box::new(move |start, drain| {
                weir_kafka::open_task_source(&name, &config, task, &group, start, drain)
            }))
        }));
    }
    progress::print_line(&format!(
        "weir run: pipeline {} has {} tasks; member {id} shares them (kafka consumer group {}, cooperative rebalancing)",
        p.name,
        p.settings.tasks,
        group.group_id()
    ));
    let result = member_loop(&shared, &group, &stop, drain);
    // Stop what still runs, then leave: the others take the tasks over
    // without waiting for this member's session to expire.
    let tasks: Vec<u32> = lock(&shared.running).keys().copied().collect();
    shared.stop(&tasks);
    // The runner's source opener holds the group, whose callback holds the
    // runner: dropped here, the member's consumer closes with `group`.
    lock(&shared.runner).source = None;
    group.leave();
    result.with_context(|| format!("pipeline {} failed", p.name))?;
    Ok(ExitCode::SUCCESS)
}

fn member_loop(
    shared: &Shared,
    group: &KafkaGroup,
    stop: &Stop,
    drain: bool,
) -> anyhow::Result<()> {
    let mut ran_any = false;
    while !stop.requested() {
        // Revocations stop their tasks inside this call.
        for assigned in group.poll(POLL) {
            let task = assigned.task;
            if lock(&shared.running).contains_key(&task) {
                continue;
            }
            tracing::info!(task, epoch = assigned.epoch, "took a task");
            let running = lock(&shared.runner)
                .start(task, assigned.epoch)
                .map_err(|reason| anyhow::anyhow!("task {task} failed: {reason}"))?;
            lock(&shared.running).insert(task, running);
            ran_any = true;
        }
        let tasks: Vec<u32> = lock(&shared.running).keys().copied().collect();
        for task in tasks {
            let ended = {
                let mut running = lock(&shared.running);
                let Some(r) = running.get_mut(&task) else {
                    continue;
                };
                let ended = lock(&shared.runner).ended(r);
                if ended.is_some() {
                    running.remove(&task);
                }
                ended
            };
            match ended {
                None => {}
                Some(TaskEnd::Done) => tracing::info!(task, "task ended: its input ended"),
                // Still assigned here: the store was claimed at a higher
                // epoch than this assignment's generation.
                Some(TaskEnd::Fenced(reason)) if group.owns(task) => tracing::error!(
                    task,
                    %reason,
                    "the task's checkpoint store holds a newer epoch than this assignment's group \
                     generation: another member still runs it (the group will move it), or the \
                     consumer group was deleted and its generations restarted (then use a new \
                     checkpoint location or group id); letting the task go"
                ),
                Some(TaskEnd::Fenced(reason)) => {
                    tracing::error!(task, %reason, "a newer owner took the task; letting it go")
                }
                // A task that failed after the group took it away lost a
                // race with its revocation: the new owner runs it.
                Some(TaskEnd::Failed(reason)) if !group.owns(task) => {
                    tracing::error!(task, %reason, "a task the group took away ended with an error")
                }
                Some(TaskEnd::Failed(reason)) => anyhow::bail!("task {task} failed: {reason}"),
            }
        }
        if drain && ran_any && lock(&shared.running).is_empty() {
            tracing::info!("every task this member ran has ended");
            break;
        }
    }
    Ok(())
}
