//! The loop a member runs: hold as many tasks as its target, no more.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::{targets, Lease, LeaseError, Ownership};

/// How a task's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEnd {
    /// It stopped as asked, or its input ended.
    Done,
    /// It failed, in these words.
    Failed(String),
    /// A newer owner claimed it (its checkpoint store refused this run's
    /// writes): the task is another member's now, not a failure.
    Fenced(String),
}

/// Starts and stops the runs of tasks (the engine, in `weir run`).
pub trait TaskRunner {
    /// A running task.
    type Running;
    /// Starts task `task`, owned under fencing epoch `epoch`.
    fn start(&mut self, task: u32, epoch: u64) -> Result<Self::Running, String>;
    /// Asks a running task to stop gracefully (a last checkpoint, outputs
    /// committed) and waits until it has.
    fn stop(&mut self, running: Self::Running) -> TaskEnd;
    /// How it ended, when it ended by itself; does not wait.
    fn ended(&mut self, running: &mut Self::Running) -> Option<TaskEnd>;
}

/// Settings of a [`Member`].
#[derive(Clone)]
pub struct MemberOptions {
    /// The pipeline's number of tasks.
    pub tasks: u32,
    /// How often membership and free tasks are looked at.
    pub poll: Duration,
    /// True once the member is to stop: every task is then stopped
    /// gracefully and released.
    pub stop: Arc<dyn Fn() -> bool + Send + Sync>,
}

/// One process's share of a pipeline's tasks.
pub struct Member<O: Ownership, R: TaskRunner> {
    leases: O,
    runner: R,
    options: MemberOptions,
    running: BTreeMap<u32, (O::Lease, R::Running)>,
    /// Tasks whose input ended: still held, so that nobody runs them again
    /// while this member lives.
    finished: BTreeMap<u32, O::Lease>,
    published: Option<u32>,
    /// The live members seen at the previous look.
    last_members: Vec<String>,
}

/// Why a member stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    /// The lock files failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// A task failed; the member's other tasks were stopped gracefully.
    #[error("task {task} failed: {reason}")]
    Task {
        /// The task.
        task: u32,
        /// Its error.
        reason: String,
    },
}

impl<O: Ownership, R: TaskRunner> Member<O, R> {
    /// A member holding no task yet.
    pub fn new(leases: O, runner: R, options: MemberOptions) -> Self {
        Member {
            leases,
            runner,
            options,
            running: BTreeMap::new(),
            finished: BTreeMap::new(),
            published: None,
            last_members: Vec::new(),
        }
    }

    fn held(&self) -> u32 {
        (self.running.len() + self.finished.len()) as u32
    }

    /// Runs until asked to stop, a task fails, or every task it holds has
    /// ended by itself and it holds its share.
    pub fn run(mut self) -> Result<(), MemberError> {
        let result = self.run_loop();
        self.stop_all();
        result
    }

    fn run_loop(&mut self) -> Result<(), MemberError> {
        while !(self.options.stop)() {
            self.collect_ended()?;
            self.renew()?;
            // Tasks move only once the member list is the same at two looks
            // in a row: members that have not all seen a join or a death yet
            // would otherwise pass tasks around on the way.
            let target = self.stable_target()?;
            if let Some(target) = target {
                self.release_above(target);
                self.acquire_up_to(target)?;
            }
            let held = self.held();
            if self.published != Some(held) {
                self.leases.publish_held(held)?;
                self.published = Some(held);
            }
            let all_ended = self.running.is_empty() && !self.finished.is_empty();
            if all_ended && target.is_some_and(|t| held >= t) {
                tracing::info!(
                    member = self.leases.id(),
                    "every task this member holds has ended"
                );
                return Ok(());
            }
            std::thread::sleep(self.options.poll);
        }
        Ok(())
    }

    fn collect_ended(&mut self) -> Result<(), MemberError> {
        let tasks: Vec<u32> = self.running.keys().copied().collect();
        for task in tasks {
            let ended = match self.running.get_mut(&task) {
                Some((_, running)) => self.runner.ended(running),
                None => None,
            };
            match ended {
                None => {}
                Some(TaskEnd::Done) => {
                    if let Some((lease, _)) = self.running.remove(&task) {
                        tracing::info!(task, "task ended: its input ended");
                        self.finished.insert(task, lease);
                    }
                }
                Some(TaskEnd::Failed(reason)) => {
                    self.running.remove(&task);
                    return Err(MemberError::Task { task, reason });
                }
                Some(TaskEnd::Fenced(reason)) => {
                    if let Some((lease, _)) = self.running.remove(&task) {
                        tracing::error!(task, epoch = lease.epoch(), %reason, "a newer owner took the task; letting it go");
                        self.leases.release(lease);
                    }
                }
            }
        }
        Ok(())
    }

    /// Keeps every held lease alive; a task whose lease was lost is
    /// stopped at once (its new owner may be running it already: the
    /// checkpoint store's epoch fences what this one still writes).
    fn renew(&mut self) -> Result<(), MemberError> {
        let mut lost = Vec::new();
        for (task, (lease, _)) in self.running.iter_mut() {
            if !self.leases.renew(lease)? {
                lost.push(*task);
            }
        }
        for task in lost {
            if let Some((lease, running)) = self.running.remove(&task) {
                tracing::error!(
                    task,
                    epoch = lease.epoch(),
                    "lost the lease of a running task; stopping it"
                );
                let _ = self.runner.stop(running);
            }
        }
        let mut lost = Vec::new();
        for (task, lease) in self.finished.iter_mut() {
            if !self.leases.renew(lease)? {
                lost.push(*task);
            }
        }
        for task in lost {
            self.finished.remove(&task);
        }
        Ok(())
    }

    /// This member's target, when the member list is what it was at the
    /// previous look.
    fn stable_target(&mut self) -> Result<Option<u32>, MemberError> {
        let members: Vec<String> = self.leases.members()?.into_iter().map(|m| m.id).collect();
        let stable = members == self.last_members;
        let ids: Vec<&str> = members.iter().map(String::as_str).collect();
        let target = targets(self.options.tasks, &ids)
            .into_iter()
            .find(|(id, _)| *id == self.leases.id())
            .map_or(0, |(_, n)| n);
        self.last_members = members;
        Ok(stable.then_some(target))
    }

    /// Hands back tasks above `target`: finished ones first, then the
    /// highest-numbered running ones, each stopped gracefully first.
    fn release_above(&mut self, target: u32) {
        while self.held() > target {
            if let Some((task, lease)) = self.finished.pop_last() {
                tracing::info!(task, epoch = lease.epoch(), "handing back a finished task");
                self.leases.release(lease);
                continue;
            }
            let Some((task, (lease, running))) = self.running.pop_last() else {
                break;
            };
            tracing::info!(
                task,
                epoch = lease.epoch(),
                target,
                "handing a task over to another member"
            );
            if let TaskEnd::Failed(reason) = self.runner.stop(running) {
                tracing::error!(task, %reason, "the task failed while stopping");
            }
            self.leases.release(lease);
        }
    }

    fn acquire_up_to(&mut self, target: u32) -> Result<(), MemberError> {
        for task in 0..self.options.tasks {
            if self.held() >= target {
                break;
            }
            if self.running.contains_key(&task) || self.finished.contains_key(&task) {
                continue;
            }
            let Some(lease) = self.leases.try_acquire(task)? else {
                continue;
            };
            tracing::info!(
                task,
                epoch = lease.epoch(),
                member = self.leases.id(),
                "took a task"
            );
            match self.runner.start(task, lease.epoch()) {
                Ok(running) => {
                    self.running.insert(task, (lease, running));
                }
                Err(reason) => return Err(MemberError::Task { task, reason }),
            }
        }
        Ok(())
    }

    fn stop_all(&mut self) {
        while let Some((task, (lease, running))) = self.running.pop_last() {
            if let TaskEnd::Failed(reason) = self.runner.stop(running) {
                tracing::error!(task, %reason, "the task failed while stopping");
            }
            self.leases.release(lease);
        }
        while let Some((_, lease)) = self.finished.pop_last() {
            self.leases.release(lease);
        }
    }
}
