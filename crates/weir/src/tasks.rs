//! `weir run` of a pipeline split into tasks (`settings.tasks`): this
//! process becomes a member of the pipeline's workers and runs its share
//! of the tasks, each as a pipeline of its own on its own threads (see
//! `weir_tasks`). Membership and ownership are lock files under the
//! checkpoint directory (`<checkpoint dir>/leases`), which every process
//! running the pipeline on this machine shares; leases in a NATS key-value
//! bucket for a NATS source; the consumer group for a Kafka source
//! (`tasks_kafka`).

use std::process::ExitCode;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use weir_config::Pipeline;
use weir_engine::telemetry::Telemetry;
use weir_engine::{EngineError, RunOptions, RunSummary, Stop};
use weir_tasks::{Lease, LocalLeases, Member, MemberOptions, Ownership, TaskEnd, TaskRunner};

use crate::progress;

/// How often a member looks at membership and free tasks: a dead member's
/// tasks are taken over within this (plus the restore).
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// What `weir run` was asked for.
pub struct TaskArgs {
    /// Run only this task (its lease is still taken: a second process
    /// asking for it is refused).
    pub only: Option<u32>,
    /// This member's id; default `<host>-<pid>`.
    pub member_id: Option<String>,
    /// Shard count override.
    pub shards: Option<usize>,
    /// Stop at the end of what the source holds now.
    pub drain: bool,
    /// The process's telemetry (served by `--metrics-address`): each
    /// task's run reports into a registry of its own, attached to it under
    /// `task="N"` while the task runs here.
    pub telemetry: Option<Telemetry>,
    /// The consumer lag bound of each task's readiness.
    pub max_lag: Option<u64>,
}

/// Opens a task's source connector (the task's pipeline, its number).
pub(crate) type TaskSource =
    Arc<dyn Fn(&Pipeline, u32) -> weir_engine::OpenConnector + Send + Sync>;

pub(crate) struct EngineRunner {
    pub(crate) pipeline: Pipeline,
    pub(crate) shards: Option<usize>,
    pub(crate) drain: bool,
    pub(crate) telemetry: Option<Telemetry>,
    pub(crate) max_lag: Option<u64>,
    /// Where a task's source comes from when not from its pipeline file
    /// alone (a Kafka task reads through its process's group member).
    pub(crate) source: Option<TaskSource>,
}

fn task_labels(task: u32) -> weir_metrics::Labels {
    weir_metrics::labels(&[("task", &task.to_string())])
}

impl EngineRunner {
    /// The runner of `p`'s tasks as `weir run` was asked (each task's
    /// source from its pipeline file).
    pub(crate) fn new(p: &Pipeline, args: TaskArgs) -> EngineRunner {
        EngineRunner {
            pipeline: p.clone(),
            shards: args.shards,
            drain: args.drain,
            telemetry: args.telemetry,
            max_lag: args.max_lag,
            source: None,
        }
    }

    fn detach(&self, task: u32) {
        if let Some(t) = &self.telemetry {
            t.registry.detach(&task_labels(task));
        }
    }
}

pub(crate) struct Running {
    task: u32,
    epoch: u64,
    stop: Stop,
    /// `None` once joined.
    thread: Option<JoinHandle<Result<RunSummary, EngineError>>>,
}

fn end_of(joined: std::thread::Result<Result<RunSummary, EngineError>>) -> TaskEnd {
    match joined {
        Ok(Ok(_)) => TaskEnd::Done,
        Ok(Err(e)) if e.is_fenced() => TaskEnd::Fenced(e.to_string()),
        Ok(Err(e)) => TaskEnd::Failed(crate::render_error(&anyhow::Error::new(e))),
        Err(_) => TaskEnd::Failed("its thread panicked".into()),
    }
}

impl TaskRunner for EngineRunner {
    type Running = Running;

    fn start(&mut self, task: u32, epoch: u64) -> Result<Running, String> {
        let p = self
            .pipeline
            .for_task(task)
            .ok_or_else(|| format!("the pipeline has no task {task}"))?;
        let stop = Stop::new();
        let telemetry = self.telemetry.as_ref().map(|process| {
            let t = Telemetry::for_task(&p, self.max_lag);
            process
                .registry
                .attach(task_labels(task), t.registry.clone());
            t
        });
        let input = match &self.source {
            Some(open) => weir_engine::Input::Connector(open(&p, task)),
            None => weir_engine::Input::Configured,
        };
        let options = RunOptions {
            input,
            telemetry,
            // The lease's epoch claims the task's checkpoint store: an
            // owner that lost the task can no longer commit there.
            epoch,
            shards: self.shards,
            drain: self.drain,
            stop: Some(stop.clone()),
            on_first_record: Some(weir_engine::FirstRecord(Arc::new(move |restored| {
                progress::print_line(&match restored {
                    Some(id) => format!(
                        "weir run: task {task} (epoch {epoch}): first record processed (restored checkpoint {id})"
                    ),
                    None => format!(
                        "weir run: task {task} (epoch {epoch}): first record processed (no checkpoint)"
                    ),
                })
            }))),
            sink_probe: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("weir-task-{task}"))
            .spawn(move || weir_engine::run(&p, options))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        Ok(Running {
            task,
            epoch,
            stop,
            thread: Some(thread),
        })
    }

    fn stop(&mut self, running: Running) -> TaskEnd {
        progress::print_line(&format!(
            "weir run: task {} (epoch {}): stopping (last checkpoint, then the task is free)",
            running.task, running.epoch
        ));
        running.stop.request();
        let end = running.thread.map_or(TaskEnd::Done, |t| end_of(t.join()));
        self.detach(running.task);
        end
    }

    fn ended(&mut self, running: &mut Running) -> Option<TaskEnd> {
        if !running.thread.as_ref()?.is_finished() {
            return None;
        }
        // Finished: joining does not wait.
        let end = running.thread.take().map(|t| end_of(t.join()));
        self.detach(running.task);
        end
    }
}

pub(crate) fn default_member_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| {
            h.trim()
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .take(60)
                .collect::<String>()
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".into());
    format!("{host}-{}", std::process::id())
}

/// How long a task's lease in a NATS key-value bucket lasts without
/// renewal (renewed every third of it): a dead member's tasks are free
/// this long after its last renewal.
#[cfg(feature = "nats")]
const NATS_LEASE_TTL: Duration = Duration::from_millis(1500);

/// Runs this process's share of `p`'s tasks until `stop` (a signal), a
/// task's failure, or the end of every task it holds. Ownership lives in a
/// NATS key-value bucket for a NATS source (workers may be on several
/// machines), else in lock files under the checkpoint directory.
pub fn run(p: Pipeline, args: TaskArgs, stop: Stop) -> anyhow::Result<ExitCode> {
    let id = args.member_id.clone().unwrap_or_else(default_member_id);
    #[cfg(feature = "kafka")]
    if let weir_config::SourceKind::Kafka(source) = &p.source.kind {
        let source = source.clone();
        return crate::tasks_kafka::run(p, &source, args, stop, &id);
    }
    #[cfg(feature = "nats")]
    if let weir_config::SourceKind::Nats(source) = &p.source.kind {
        let leases = weir_nats::NatsLeases::join(source, &p.name, &id, NATS_LEASE_TTL)
            .with_context(|| format!("cannot join the workers of pipeline {}", p.name))?;
        progress::print_line(&format!(
            "weir run: pipeline {} has {} tasks; member {id} shares them (leases in NATS bucket {})",
            p.name,
            p.settings.tasks,
            weir_nats::bucket_name(&p.name)
        ));
        return run_member(p, args, stop, leases);
    }
    let checkpoint = p
        .checkpoint
        .as_ref()
        .context("a pipeline split into tasks has a [checkpoint] table (validation ensures it)")?;
    // Beside the checkpoints when they are in a directory; with an object
    // store, beside the log stream the tasks read (the members share this
    // machine either way).
    let root = match (&checkpoint.url, &p.source.kind) {
        (Some(_), weir_config::SourceKind::Log { dir, stream, .. }) => {
            dir.join(stream).join(format!(".leases-{}", p.name))
        }
        _ => checkpoint.dir.join("leases"),
    };
    let leases = LocalLeases::join(&root, &id)
        .with_context(|| format!("cannot join the workers of pipeline {}", p.name))?;
    progress::print_line(&format!(
        "weir run: pipeline {} has {} tasks; member {id} shares them (leases in {})",
        p.name,
        p.settings.tasks,
        root.display()
    ));
    run_member(p, args, stop, leases)
}

fn run_member<O: Ownership>(
    p: Pipeline,
    args: TaskArgs,
    stop: Stop,
    mut leases: O,
) -> anyhow::Result<ExitCode> {
    let tasks = p.settings.tasks;
    if let Some(t) = &args.telemetry {
        // The member is up: its tasks' readiness is each task's own.
        t.health.set_recovered();
    }
    let only = args.only;
    let mut runner = EngineRunner::new(&p, args);
    if let Some(task) = only {
        anyhow::ensure!(
            task < tasks,
            "--task {task}: pipeline {} has tasks 0 to {}",
            p.name,
            tasks - 1
        );
        let Some(mut lease) = leases.try_acquire(task)? else {
            anyhow::bail!(
                "task {task} of pipeline {} is run by member {}",
                p.name,
                leases.holder(task).unwrap_or_else(|| "?".into()),
            );
        };
        let mut running = runner
            .start(task, lease.epoch())
            .map_err(anyhow::Error::msg)?;
        let end = loop {
            if stop.requested() {
                break runner.stop(running);
            }
            if let Some(end) = runner.ended(&mut running) {
                break end;
            }
            if !leases.renew(&mut lease)? {
                let _ = runner.stop(running);
                break TaskEnd::Failed("its lease was lost to another member".into());
            }
            std::thread::sleep(POLL);
        };
        leases.release(lease);
        return match end {
            TaskEnd::Done => Ok(ExitCode::SUCCESS),
            TaskEnd::Failed(reason) => anyhow::bail!("task {task} failed: {reason}"),
            TaskEnd::Fenced(reason) => {
                anyhow::bail!("task {task} was taken over by a newer owner: {reason}")
            }
        };
    }
    let member = Member::new(
        leases,
        runner,
        MemberOptions {
            tasks,
            poll: POLL,
            stop: Arc::new(move || stop.requested()),
        },
    );
    member
        .run()
        .with_context(|| format!("pipeline {} failed", p.name))?;
    Ok(ExitCode::SUCCESS)
}
