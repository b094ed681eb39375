//! A pipeline split into tasks: which key groups a task owns, and the
//! pipeline one task runs. (A NATS source's task reads the subject with
//! `{task}` replaced by its number, through consumer `<consumer>-task-N`.)
//!
//! `settings.tasks = N` splits the key groups into N contiguous ranges, as
//! shards split them inside a process. Task `t` reads partition `t` of its
//! log stream (a producer routes a record to the partition of its key's
//! task: [`task_of_group`] of the key's group), keeps its checkpoints in
//! `task-t` under the checkpoint directory, publishes its position as
//! consumer `<pipeline>-task-t`, and writes to sinks whose path or stream
//! has `{task}` replaced by `t`. So a task is a pipeline of its own, and
//! any process given the pipeline can run any task.

use crate::{Pipeline, SinkKind, SourceKind, Task, TASK_PLACEHOLDER};

/// The task owning key group `group` of `key_groups`, in `tasks` tasks:
/// contiguous ranges, the same split shards use.
#[inline]
pub fn task_of_group(group: u32, key_groups: u32, tasks: u32) -> u32 {
    ((u64::from(group) * u64::from(tasks)) / u64::from(key_groups)) as u32
}

/// The key groups `[start, end)` task `index` of `tasks` owns.
pub fn task_key_groups(index: u32, tasks: u32, key_groups: u32) -> (u32, u32) {
    // The smallest group g with task_of_group(g) >= index.
    let first = |t: u32| -> u32 {
        let t = u64::from(t);
        ((t * u64::from(key_groups)).div_ceil(u64::from(tasks))) as u32
    };
    (first(index), first(index + 1))
}

fn with_task(text: &str, index: u32) -> String {
    text.replace(TASK_PLACEHOLDER, &index.to_string())
}

impl Pipeline {
    /// The pipeline task `index` runs; `None` when the pipeline is not
    /// split into tasks or `index` is not one of them.
    pub fn for_task(&self, index: u32) -> Option<Pipeline> {
        let count = self.settings.tasks;
        if count < 2 || index >= count || self.task.is_some() {
            return None;
        }
        let mut p = self.clone();
        p.task = Some(Task {
            index,
            count,
            key_groups: task_key_groups(index, count, self.settings.key_groups),
        });
        for sink in &mut p.sinks {
            match &mut sink.kind {
                SinkKind::File { path, .. } => {
                    *path = with_task(&path.to_string_lossy(), index).into();
                }
                SinkKind::Log { stream, .. } => *stream = with_task(stream, index),
                _ => {}
            }
        }
        if let SourceKind::Nats(n) = &mut p.source.kind {
            if let Some(subject) = &mut n.subject {
                *subject = with_task(subject, index);
            }
            n.consumer = format!("{}-task-{index}", n.consumer);
        }
        let dl = &mut p.dead_letter;
        dl.path = with_task(&dl.path.to_string_lossy(), index).into();
        if let Some((_, stream)) = &mut dl.log {
            *stream = with_task(stream, index);
        }
        if let Some(cp) = &mut p.checkpoint {
            match &mut cp.url {
                Some(url) => *url = format!("{}/task-{index}", url.trim_end_matches('/')),
                None => cp.dir = cp.dir.join(format!("task-{index}")),
            }
        }
        Some(p)
    }

    /// The partitions of the source's log stream this pipeline reads: all
    /// of them, or its task's one.
    pub fn log_partitions(&self) -> Option<std::ops::Range<u32>> {
        match (&self.source.kind, &self.task) {
            (SourceKind::Log { .. }, Some(t)) => Some(t.index..t.index + 1),
            (SourceKind::Log { partitions, .. }, None) => Some(0..*partitions),
            _ => None,
        }
    }

    /// The consumer name under which the source's position is published:
    /// the pipeline's name, with `-task-N` for a task.
    pub fn consumer_name(&self) -> String {
        match &self.task {
            Some(t) => format!("{}-task-{}", self.name, t.index),
            None => self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ranges_cover_the_groups_and_agree_with_task_of_group() {
        for key_groups in [1u32, 7, 128, 1000] {
            for tasks in 1..=key_groups.min(12) {
                let mut next = 0;
                for t in 0..tasks {
                    let (a, b) = task_key_groups(t, tasks, key_groups);
                    assert_eq!(a, next, "{key_groups} groups, {tasks} tasks, task {t}");
                    assert!(b > a, "task {t} of {tasks} owns no group of {key_groups}");
                    for g in a..b {
                        assert_eq!(task_of_group(g, key_groups, tasks), t);
                    }
                    next = b;
                }
                assert_eq!(next, key_groups);
            }
        }
        assert_eq!(task_key_groups(1, 3, 128), (43, 86));
    }
}
