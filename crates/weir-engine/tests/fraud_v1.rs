//! fraud-v1 end to end through `examples/fraud/pipeline*.toml`: the alerts
//! must be exactly the reference alerts (ids, cards and score bits), from
//! JSON and from Protobuf input, for any number of shards.

use std::sync::Arc;

use weir_engine::{run, Input, RunOptions};
use weir_test_support::fraud::{alerts_in_file, assert_exact, reference};
use weir_test_support::pipelines::{example_path, load_example};
use weir_workloads::fraud_v1;

const EVENTS: u64 = 100_000;

fn check(name: &str, input: Vec<u8>, shards: &[usize]) {
    let expected = reference(EVENTS);
    assert_eq!(expected.len(), 1967);
    assert_eq!(
        expected
            .iter()
            .fold(0u64, |a, (t, _, _)| a.wrapping_add(*t)),
        117_986_728
    );
    let input = Arc::new(input);
    for &n in shards {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = load_example(name, dir.path());
        let summary = run(
            &p,
            RunOptions {
                shards: Some(n),
                input: Input::Bytes(input.clone()),
                ..Default::default()
            },
        )
        .expect("run");
        assert_eq!(summary.shards, n);
        assert_eq!(summary.source_records, EVENTS);
        assert_eq!(summary.dead_letters, 0);
        assert_eq!(summary.sinks[0].records, 1967, "{name} with {n} shards");
        let got = alerts_in_file(&dir.path().join(if name.contains("protobuf") {
            "alerts-protobuf.jsonl"
        } else {
            "alerts.jsonl"
        }));
        assert_exact(&got, &expected, &format!("{name} with {n} shards"));
    }
}

#[test]
fn json_input_gives_the_reference_alerts_for_1_2_and_4_shards() {
    check("pipeline.toml", fraud_v1::encode_json(EVENTS), &[1, 2, 4]);
}

#[test]
fn protobuf_input_gives_the_reference_alerts_for_1_and_3_shards() {
    check(
        "pipeline-protobuf.toml",
        fraud_v1::encode_protobuf(EVENTS),
        &[1, 3],
    );
}

#[test]
fn small_batches_give_the_same_alerts() {
    // Batch boundaries must not change results: cut the input into
    // micro-batches of 7 records.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = load_example("pipeline.toml", dir.path());
    p.settings.batch_rows = 7;
    let summary = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Bytes(Arc::new(fraud_v1::encode_json(EVENTS))),
            ..Default::default()
        },
    )
    .expect("run");
    assert_eq!(summary.sinks[0].records, 1967);
    assert_exact(
        &alerts_in_file(&dir.path().join("alerts.jsonl")),
        &reference(EVENTS),
        "batches of 7",
    );
}

#[test]
fn file_source_reads_the_same_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("transactions.jsonl");
    std::fs::write(&input, fraud_v1::encode_json(EVENTS)).expect("write input");
    let mut p = load_example("pipeline.toml", dir.path());
    p.source.kind = weir_config::SourceKind::File { path: input };
    let summary = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Configured,
            ..Default::default()
        },
    )
    .expect("run");
    assert_eq!(summary.source_records, EVENTS);
    assert_exact(
        &alerts_in_file(&dir.path().join("alerts.jsonl")),
        &reference(EVENTS),
        "file source",
    );
}

#[test]
fn protobuf_schema_from_a_descriptor_set() {
    use prost::Message as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let proto_dir = example_path("");
    let set = protox::compile(["transaction.proto"], [proto_dir]).expect("compile proto");
    let descriptor = dir.path().join("transaction.desc");
    std::fs::write(&descriptor, set.encode_to_vec()).expect("write descriptor set");
    let mut p = load_example("pipeline-protobuf.toml", dir.path());
    for step in &mut p.steps {
        if let weir_config::StepKind::Decode(d) = &mut step.kind {
            if let weir_config::DecodeFormat::Protobuf(m) = &mut d.format {
                m.schema_file = descriptor.clone();
            }
        }
    }
    let summary = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Bytes(Arc::new(fraud_v1::encode_protobuf(EVENTS))),
            ..Default::default()
        },
    )
    .expect("run");
    assert_eq!(summary.dead_letters, 0);
    assert_exact(
        &alerts_in_file(&dir.path().join("alerts-protobuf.jsonl")),
        &reference(EVENTS),
        "descriptor set",
    );
}

#[test]
fn log_source_reads_events_appended_to_the_durable_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = dir.path().join("log");
    {
        let log = weir_log::Log::open(&log_dir).expect("open log");
        let config = weir_log::StreamConfig {
            partitions: 1,
            segment_bytes: 1 << 20,
            fsync: weir_log::FsyncPolicy::Never,
            ..Default::default()
        };
        let stream = log.stream("transactions", config).expect("stream");
        let input = fraud_v1::encode_json(EVENTS);
        let lines: Vec<&[u8]> = input
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        for batch in lines.chunks(1000) {
            stream.partition(0).append(batch).expect("append");
        }
        stream.flush().expect("flush");
    }
    let mut p = load_example("pipeline.toml", dir.path());
    p.source.kind = weir_config::SourceKind::Log {
        dir: log_dir,
        stream: "transactions".into(),
        partitions: 1,
        follow: false,
    };
    let summary = run(
        &p,
        RunOptions {
            shards: Some(2),
            input: Input::Configured,
            ..Default::default()
        },
    )
    .expect("run");
    assert_eq!(summary.source_records, EVENTS);
    assert_eq!(summary.dead_letters, 0);
    assert_exact(
        &alerts_in_file(&dir.path().join("alerts.jsonl")),
        &reference(EVENTS),
        "log source",
    );
}
