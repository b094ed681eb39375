//! `settings.tasks`: what a pipeline split into tasks needs. Each task is a
//! pipeline of its own (see `crate::tasks`), so everything it writes must
//! be its own: its sinks' files and streams name `{task}`, and its input is
//! the partition with its number.

use toml::Spanned;

use crate::check::Checker;
use crate::{Pipeline, SinkKind, SourceKind, TASK_PLACEHOLDER};

/// The problems of a pipeline with `settings.tasks > 1`, reported at the
/// table that must change.
pub(super) fn check_tasks(
    c: &mut Checker<'_>,
    p: &Pipeline,
    settings: Option<&Spanned<toml::Table>>,
    source: Option<&Spanned<toml::Table>>,
    sinks: &[Spanned<toml::Table>],
    dead_letter: Option<&Spanned<toml::Table>>,
) {
    let tasks = p.settings.tasks;
    if tasks < 2 {
        return;
    }
    let Some(settings) = settings else { return };
    let span = settings.span();
    if p.graph.keyed.is_empty() {
        c.at(
            "settings.tasks".into(),
            &span,
            "tasks",
            "a pipeline split into tasks needs a key_by step: a task owns a range of key groups",
        );
    }
    match &p.source.kind {
        SourceKind::Log {
            partitions, stream, ..
        } if *partitions != tasks => {
            let at = source.map_or(span.clone(), |s| s.span());
            c.at(
                "sources[0].partitions".into(),
                &at,
                "partitions",
                format!(
                    "stream {stream:?} has {partitions} partitions but settings.tasks is {tasks}: \
                     task N reads partition N, so they must be equal"
                ),
            );
        }
        SourceKind::Log { .. } => {}
        SourceKind::Nats(n) if !n.subject.as_deref().unwrap_or("").contains(TASK_PLACEHOLDER) => {
            let at = source.map_or(span.clone(), |s| s.span());
            c.at(
                "sources[0].subject".into(),
                &at,
                "subject",
                format!(
                    "with settings.tasks task N reads the subjects of its partition: put {TASK_PLACEHOLDER} in the subject (such as \"transactions.{TASK_PLACEHOLDER}\", with producers publishing to transactions.<task of the key>)"
                ),
            );
        }
        SourceKind::Nats(_) => {}
        // The topic's partition count is checked when a worker joins the
        // consumer group (it lives on the brokers).
        SourceKind::Kafka(_) => {}
        _ => c.at(
            "settings.tasks".into(),
            &span,
            "tasks",
            "only log, nats and kafka sources can be split into tasks (task N reads partition N of the stream or topic, or the subjects of partition N)",
        ),
    }
    if p.checkpoint.is_none() {
        c.at(
            "settings.tasks".into(),
            &span,
            "tasks",
            "a pipeline split into tasks needs a [checkpoint] table: a task moves between processes through its checkpoints",
        );
    }
    for (i, sink) in p.sinks.iter().enumerate() {
        let Some(table) = sinks.get(i) else { continue };
        let (key, value) = match &sink.kind {
            SinkKind::File { path, .. } => ("path", path.to_string_lossy().into_owned()),
            SinkKind::Log { stream, .. } => ("stream", stream.clone()),
            _ => continue,
        };
        if !value.contains(TASK_PLACEHOLDER) {
            c.at(
                format!("sinks[{i}].{key}"),
                &table.span(),
                key,
                format!(
                    "with settings.tasks each task writes its own {}: put {TASK_PLACEHOLDER} in the {key} (it becomes the task's number)",
                    if key == "path" { "file" } else { "stream" }
                ),
            );
        }
    }
    let dl = &p.dead_letter;
    let (key, value) = match &dl.log {
        Some((_, stream)) => ("stream", stream.clone()),
        None => ("path", dl.path.to_string_lossy().into_owned()),
    };
    if !value.contains(TASK_PLACEHOLDER) {
        let message = format!(
            "with settings.tasks each task writes its own dead letters: put {TASK_PLACEHOLDER} in the dead letter's {key}"
        );
        match dead_letter {
            Some(t) => c.at(format!("dead_letter.{key}"), &t.span(), key, message),
            None => c.at(
                "dead_letter".into(),
                &span,
                "tasks",
                format!("{message} (a [dead_letter] table with path = \"dead_letter-{TASK_PLACEHOLDER}.jsonl\")"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::{case, check, parse, patched};
    use crate::SinkKind;

    /// A log source of 3 partitions split into 3 tasks, keyed, with a file
    /// sink and a dead letter per task.
    fn split() -> String {
        r#"name = "split"

[settings]
key_groups = 12
tasks = 3

[checkpoint]
dir = "cp"

[dead_letter]
path = "dl-{task}.jsonl"

[[sources]]
name = "events"
type = "log"
path = "log"
stream = "tx"
partitions = 3

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
fields = [{ name = "id", type = "u64" }, { name = "ts", type = "i64" }]
event_time = "ts"

[[steps]]
name = "by_id"
type = "key_by"
input = "decode"
key = "id"

[[steps]]
name = "w"
type = "window"
input = "by_id"
kind = "tumbling"
size = "1m"
aggregates = { n = "count(*)" }

[[sinks]]
name = "out"
type = "file"
input = "w"
path = "out/alerts-{task}.jsonl"
"#
        .to_string()
    }

    #[test]
    fn a_task_is_a_pipeline_of_its_own() {
        let p = parse(&split()).expect("valid");
        assert_eq!(p.settings.tasks, 3);
        assert!(p.task.is_none());
        assert_eq!(p.log_partitions(), Some(0..3));
        assert!(p.for_task(3).is_none());
        let t = p.for_task(1).expect("task 1");
        assert!(t.for_task(0).is_none(), "a task is not split again");
        assert_eq!(
            t.task,
            Some(crate::Task {
                index: 1,
                count: 3,
                key_groups: (4, 8)
            })
        );
        assert_eq!(t.log_partitions(), Some(1..2));
        assert_eq!(t.consumer_name(), "split-task-1");
        let SinkKind::File { path, .. } = &t.sinks[0].kind else {
            panic!("a file sink")
        };
        assert!(path.ends_with("out/alerts-1.jsonl"), "{path:?}");
        // A store at a URL: the task's under its own prefix.
        let at_url = parse(&patched(
            &split(),
            "dir = \"cp\"",
            "url = \"s3://bucket/cp/\"",
        ))
        .expect("valid");
        let cp = at_url
            .for_task(2)
            .expect("task 2")
            .checkpoint
            .expect("checkpoint");
        assert_eq!(cp.url.as_deref(), Some("s3://bucket/cp/task-2"));
        // A NATS source's task reads its subject through its own consumer.
        let nats = parse(&patched(
            &split(),
            "type = \"log\"\npath = \"log\"\nstream = \"tx\"\npartitions = 3",
            "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"TX\"\nsubject = \"tx.{task}\"",
        ))
        .expect("valid");
        let crate::SourceKind::Nats(n) = &nats.for_task(2).expect("task 2").source.kind else {
            panic!("a nats source")
        };
        assert_eq!(
            (n.subject.as_deref(), n.consumer.as_str()),
            (Some("tx.2"), "split-task-2")
        );
        // A Kafka source's tasks share the consumer group (the group
        // assigns partition N to task N's owner).
        let kafka = parse(&patched(
            &split(),
            "type = \"log\"\npath = \"log\"\nstream = \"tx\"\npartitions = 3",
            "type = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"tx\"",
        ))
        .expect("valid");
        let crate::SourceKind::Kafka(k) = &kafka.for_task(1).expect("task 1").source.kind else {
            panic!("a kafka source")
        };
        assert_eq!((k.topic.as_str(), k.group_id.as_str()), ("tx", "split"));
        assert!(t.dead_letter.path.ends_with("dl-1.jsonl"));
        let cp = &t.checkpoint.as_ref().expect("checkpoint").dir;
        assert!(cp.ends_with("cp/task-1"), "{cp:?}");
        // No task restores another's state, nor the unsplit pipeline's.
        let prints = [
            p.fingerprint(),
            t.fingerprint(),
            p.for_task(2).expect("task 2").fingerprint(),
            parse(&patched(
                &patched(&split(), "tasks = 3", "tasks = 1"),
                "partitions = 3",
                "partitions = 1",
            ))
            .expect("one task")
            .fingerprint(),
        ];
        for i in 0..prints.len() {
            for j in i + 1..prints.len() {
                assert_ne!(prints[i], prints[j], "{i} and {j}");
            }
        }
    }

    #[test]
    fn what_a_split_pipeline_needs() {
        let text = split();
        check(&[
            case(
                "more tasks than key groups",
                patched(&text, "tasks = 3", "tasks = 13"),
                "settings.tasks",
                Some("tasks = 13"),
                "must be between 1 and key_groups (12), got 13",
            ),
            case(
                "partitions other than tasks",
                patched(&text, "partitions = 3", "partitions = 4"),
                "sources[0].partitions",
                Some("partitions = 4"),
                "stream \"tx\" has 4 partitions but settings.tasks is 3: task N reads partition N, so they must be equal",
            ),
            case(
                "a sink file shared by the tasks",
                patched(&text, "alerts-{task}.jsonl", "alerts.jsonl"),
                "sinks[0].path",
                Some("path = \"out/alerts.jsonl\""),
                "with settings.tasks each task writes its own file: put {task} in the path (it becomes the task's number)",
            ),
            case(
                "a dead-letter file shared by the tasks",
                patched(&text, "dl-{task}.jsonl", "dl.jsonl"),
                "dead_letter.path",
                Some("path = \"dl.jsonl\""),
                "with settings.tasks each task writes its own dead letters: put {task} in the dead letter's path",
            ),
            case(
                "a nats source without a subject per task",
                patched(
                    &text,
                    "type = \"log\"\npath = \"log\"\nstream = \"tx\"\npartitions = 3",
                    "type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nstream = \"TX\"\nsubject = \"tx.*\"",
                ),
                "sources[0].subject",
                Some("subject = \"tx.*\""),
                "with settings.tasks task N reads the subjects of its partition: put {task} in the subject (such as \"transactions.{task}\", with producers publishing to transactions.<task of the key>)",
            ),
            case(
                "a source without partitions",
                patched(
                    &text,
                    "type = \"log\"\npath = \"log\"\nstream = \"tx\"\npartitions = 3",
                    "type = \"file\"\npath = \"in.jsonl\"",
                ),
                "settings.tasks",
                Some("tasks = 3"),
                "only log, nats and kafka sources can be split into tasks (task N reads partition N of the stream or topic, or the subjects of partition N)",
            ),
            case(
                "no checkpoints",
                patched(&text, "[checkpoint]\ndir = \"cp\"\n", ""),
                "settings.tasks",
                Some("tasks = 3"),
                "a pipeline split into tasks needs a [checkpoint] table: a task moves between processes through its checkpoints",
            ),
        ]);
    }
}
