//! fraud-v1 end to end through NATS JetStream: events read from a stream by
//! a durable consumer, alerts published to another stream, under
//! checkpoints. The alerts must equal the reference exactly, also when the
//! broker is killed mid-run and restarted, and a second run finds nothing
//! left to do (everything was acknowledged once checkpointed).

mod common;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::assert_both_reconnected;
use weir_config::{Credentials, NatsSink, NatsSource, SinkKind, SourceKind};
use weir_engine::{run, RunOptions};
use weir_test_support::brokers::Broker;
use weir_test_support::fraud::{assert_exact, events, parse_alerts, reference, Alert};
use weir_test_support::names::unique;
use weir_test_support::pipelines::fraud_with;
use weir_test_support::wait::wait_for;

const EVENTS: u64 = 20_000;

struct Streams {
    url: String,
    input: String,
    input_subject: String,
    output: String,
    output_subject: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn context(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to NATS");
    jetstream::new(client)
}

/// Creates the input and output streams (file storage) and publishes the
/// first `n` events to the input.
fn setup(url: &str, n: u64) -> Streams {
    let name = unique("WEIR_E2E");
    let s = Streams {
        url: url.to_string(),
        input: format!("{name}_IN"),
        input_subject: format!("{name}.in"),
        output: format!("{name}_OUT"),
        output_subject: format!("{name}.alerts"),
    };
    runtime().block_on(async {
        let js = context(url).await;
        for (stream, subject) in [(&s.input, &s.input_subject), (&s.output, &s.output_subject)] {
            js.create_stream(stream::Config {
                name: stream.clone(),
                subjects: vec![subject.clone()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .expect("create stream");
        }
        let mut acks = Vec::new();
        for e in events(n) {
            acks.push(
                js.publish(s.input_subject.clone(), e.into())
                    .await
                    .expect("publish"),
            );
            if acks.len() == 1000 {
                for a in acks.drain(..) {
                    a.await.expect("publish ack");
                }
            }
        }
        for a in acks {
            a.await.expect("publish ack");
        }
    });
    s
}

fn source(s: &Streams) -> SourceKind {
    SourceKind::Nats(NatsSource {
        servers: vec![s.url.clone()],
        stream: s.input.clone(),
        consumer: format!("{}_consumer", s.input),
        subject: None,
        credentials: Credentials::default(),
    })
}

fn sink(s: &Streams) -> SinkKind {
    SinkKind::Nats(NatsSink {
        servers: vec![s.url.clone()],
        subject: s.output_subject.clone(),
        max_in_flight: 256,
        credentials: Credentials::default(),
    })
}

/// Every message of the output stream: alerts (sorted) and, per message,
/// its `_id` and its `Nats-Msg-Id` header.
fn output(s: &Streams) -> (Vec<Alert>, Vec<(u64, String)>) {
    runtime().block_on(async {
        let js = context(&s.url).await;
        let mut stream = js.get_stream(&s.output).await.expect("output stream");
        let state = stream.info().await.expect("stream info").state.clone();
        let mut payloads = Vec::new();
        let mut headers = Vec::new();
        for seq in state.first_sequence..=state.last_sequence {
            if state.messages == 0 {
                break;
            }
            let m = stream.get_raw_message(seq).await.expect("stored message");
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_string())
                .unwrap_or_default();
            headers.push(id);
            payloads.push(m.payload.to_vec());
        }
        let (alerts, ids) = parse_alerts(payloads.iter().map(Vec::as_slice));
        (alerts, ids.into_iter().zip(headers).collect())
    })
}

fn cleanup(s: &Streams) {
    runtime().block_on(async {
        let js = context(&s.url).await;
        let _ = js.delete_stream(&s.input).await;
        let _ = js.delete_stream(&s.output).await;
    });
}

fn check_output(s: &Streams, what: &str) {
    let (alerts, ids) = output(s);
    assert_exact(&alerts, &reference(EVENTS), what);
    for (id, header) in &ids {
        assert_eq!(
            &id.to_string(),
            header,
            "{what}: Nats-Msg-Id is the record's _id"
        );
    }
    let mut unique_ids: Vec<u64> = ids.iter().map(|(id, _)| *id).collect();
    unique_ids.sort_unstable();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), ids.len(), "{what}: ids are unique");
}

fn drain(p: &weir_config::Pipeline) -> weir_engine::RunSummary {
    run(
        p,
        RunOptions {
            drain: true,
            ..Default::default()
        },
    )
    .expect("pipeline runs")
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn fraud_alerts_through_jetstream_are_exact() {
    let s = setup("nats://127.0.0.1:4222", EVENTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let p = fraud_with(dir.path(), source(&s), sink(&s), true);
    let summary = drain(&p);
    assert_eq!(summary.source_records, EVENTS);
    check_output(&s, "first run");

    // Everything was checkpointed and acknowledged: a second run reads
    // nothing and publishes nothing.
    let again = drain(&p);
    assert_eq!(
        again.source_records, 0,
        "second run re-read acknowledged events"
    );
    check_output(&s, "second run");

    // A run without the checkpoint replays from the consumer's ack floor,
    // which is the end; a fresh consumer name would replay everything and
    // the stream's duplicate window would drop every republished alert.
    let mut fresh = p.clone();
    if let SourceKind::Nats(n) = &mut fresh.source.kind {
        n.consumer = format!("{}_fresh", n.consumer);
    }
    fresh.checkpoint = None;
    let replay = drain(&fresh);
    assert_eq!(replay.source_records, EVENTS);
    check_output(&s, "replay from the start");
    cleanup(&s);
}

#[test]
#[ignore = "integration: needs the nats-server binary"]
fn killing_the_broker_mid_run_changes_nothing() {
    let store = tempfile::tempdir().expect("store dir");
    let mut broker = Broker::nats_server(store.path());
    let url = format!("nats://127.0.0.1:{}", broker.port());
    let s = setup(&url, EVENTS);
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = fraud_with(dir.path(), source(&s), sink(&s), true);
    // Small batches: the run lasts long enough to be cut in the middle.
    p.settings.batch_rows = 64;
    let p = Arc::new(p);
    let running = {
        let p = p.clone();
        std::thread::spawn(move || drain(&p))
    };
    // Kill the broker once some alerts are out, then bring it back.
    let counted = || {
        runtime().block_on(async {
            let Ok(client) = async_nats::connect(&url).await else {
                return 0;
            };
            let js = jetstream::new(client);
            match js.get_stream(&s.output).await {
                Ok(mut st) => st.info().await.map(|i| i.state.messages).unwrap_or(0),
                Err(_) => 0,
            }
        })
    };
    wait_for(Duration::from_secs(60), "the first alerts", || {
        counted() >= 20
    });
    assert!(
        !running.is_finished(),
        "the run ended before the broker was killed"
    );
    broker.kill();
    std::thread::sleep(Duration::from_millis(1500));
    broker.restart();
    let summary = running.join().expect("pipeline thread");
    assert_eq!(summary.source_records, EVENTS);
    check_output(&s, "run with a broker kill");
    assert_both_reconnected(&summary);
    assert!(broker.dir().exists());
}
