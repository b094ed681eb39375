//! fraud-v1 end to end through MQTT: events published with QoS 1 to a
//! topic the pipeline subscribes to with a persistent session (each message
//! durable in the pipeline's log stream before it is acknowledged), alerts
//! published to another topic. The alerts must equal the reference
//! exactly, also when the broker is stopped mid-run and started again.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::assert_both_reconnected;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_config::{Credentials, MqttSink, MqttSource, SinkKind, SourceKind};
use weir_engine::{run, RunOptions};
use weir_test_support::brokers::Broker;
use weir_test_support::fraud::{assert_exact, events, parse_alerts, reference};
use weir_test_support::names::unique;
use weir_test_support::net::free_port;
use weir_test_support::pipelines::fraud_with;
use weir_test_support::wait::wait_for;

const EVENTS: u64 = 10_000;

fn source_config(
    port: u16,
    topic: &str,
    client_id: &str,
    buffer: &Path,
) -> weir_config::MqttSource {
    MqttSource {
        host: "127.0.0.1".into(),
        port,
        topics: vec![topic.to_string()],
        qos: 1,
        client_id: client_id.to_string(),
        log_dir: buffer.to_path_buf(),
        stream: "transactions".into(),
        dedup_window: EVENTS as usize,
        credentials: Credentials::default(),
    }
}

/// Records in the source's log stream so far.
fn buffered(buffer: &Path) -> u64 {
    weir_log::TailReader::new(buffer, "transactions", 0)
        .end_offset()
        .unwrap_or(0)
}

/// A subscriber collecting every payload on `topic` until stopped.
struct Collector {
    payloads: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Collector {
    fn start(port: u16, topic: &str) -> Collector {
        let mut opts = MqttOptions::new(unique("collector"), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(5));
        // Keeps its subscription and queued alerts across a broker restart.
        opts.set_clean_session(false);
        let (client, mut connection) = Client::new(opts, 100);
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .expect("subscribe");
        let payloads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (payloads.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            for event in connection.iter() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                match event {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(m))) => {
                        p.lock().expect("lock").push(m.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("subscribed");
        Collector {
            payloads,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> usize {
        self.payloads.lock().expect("lock").len()
    }

    fn finish(mut self) -> Vec<Vec<u8>> {
        self.stop.store(true, Ordering::Relaxed);
        // The connection wakes up at the next keep-alive at the latest.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.payloads.lock().expect("lock"))
    }
}

/// Publishes the events with QoS 1, `wave` at a time, waiting after each
/// wave until the pipeline has made them durable (the broker keeps at most
/// 1000 messages queued per client by default and drops the rest). Resends
/// what was not acknowledged when the connection drops.
fn publish(port: u16, topic: &str, buffer: &Path, wave: usize, mut between: impl FnMut(u64)) {
    let mut opts = MqttOptions::new(unique("publisher"), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts.set_clean_session(false);
    let (client, mut connection) = Client::new(opts, 1000);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = acked.clone();
    let driver = std::thread::spawn(move || {
        for event in connection.iter() {
            match event {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    a.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                // Broker gone: rumqttc reconnects on the next iteration
                // and, with a persistent session, resends unacknowledged
                // publishes.
                Err(rumqttc::ConnectionError::RequestsDone) => break,
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    let all = events(EVENTS);
    let mut sent = 0u64;
    for chunk in all.chunks(wave) {
        for e in chunk {
            client
                .publish(topic, QoS::AtLeastOnce, false, e.clone())
                .expect("queue publish");
        }
        sent += chunk.len() as u64;
        // While the wave is in flight.
        between(sent);
        wait_for(
            Duration::from_secs(60),
            "the pipeline to buffer a wave",
            || buffered(buffer) >= sent,
        );
    }
    wait_for(Duration::from_secs(30), "every PUBACK", || {
        acked.load(Ordering::Relaxed) >= EVENTS
    });
    let _ = client.disconnect();
    drop(client);
    let _ = driver.join();
}

/// Checks the alerts against the reference. MQTT delivers at least once:
/// with `dedup`, repeated records (same `_id`, same bytes) are dropped
/// first, as a consumer of an MQTT sink does.
fn check(mut collected: Vec<Vec<u8>>, dedup: bool, what: &str) {
    if dedup {
        collected.sort();
        collected.dedup();
    }
    let (alerts, ids) = parse_alerts(collected.iter().map(Vec::as_slice));
    assert_exact(&alerts, &reference(EVENTS), what);
    let mut unique_ids = ids.clone();
    unique_ids.sort_unstable();
    unique_ids.dedup();
    assert_eq!(unique_ids.len(), ids.len(), "{what}: one record per id");
}

fn run_through(
    port: u16,
    mut between: impl FnMut(u64),
    dedup: bool,
    what: &str,
) -> weir_engine::RunSummary {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
    let u = unique("weir-e2e");
    let (input, output) = (format!("{u}/in"), format!("{u}/alerts"));
    let dir = tempfile::tempdir().expect("temp dir");
    let buffer = dir.path().join("mqtt");
    let config = source_config(port, &input, &u, &buffer);
    // The persistent session exists before anything is published, as it
    // does once a pipeline has run once.
    drop(weir_mqtt::open_source("transactions", &config, None, false).expect("create the session"));
    let collector = Collector::start(port, &output);
    let sink = SinkKind::Mqtt(MqttSink {
        host: "127.0.0.1".into(),
        port,
        topic: output.clone(),
        qos: 1,
        client_id: format!("{u}-alerts"),
        retain: false,
        credentials: Credentials::default(),
    });
    let p = Arc::new(fraud_with(dir.path(), SourceKind::Mqtt(config), sink, true));
    let running = {
        let p = p.clone();
        std::thread::spawn(move || {
            run(
                &p,
                RunOptions {
                    drain: true,
                    ..Default::default()
                },
            )
        })
    };
    publish(port, &input, &buffer, 500, &mut between);
    let summary = running
        .join()
        .expect("pipeline thread")
        .expect("pipeline runs");
    assert_eq!(summary.source_records, EVENTS, "{what}: events read");
    let expected = reference(EVENTS).len();
    wait_for(Duration::from_secs(10), "every alert", || {
        collector.count() >= expected
    });
    check(collector.finish(), dedup, what);
    summary
}

#[test]
#[ignore = "integration: needs Mosquitto on 127.0.0.1:1883"]
fn fraud_alerts_through_mqtt_are_exact() {
    let summary = run_through(1883, |_| {}, false, "mqtt");
    for c in &summary.connectors {
        assert_eq!(c.reconnects, 0, "{c:?}");
    }
}

#[test]
#[ignore = "integration: needs the mosquitto binary"]
fn stopping_the_broker_mid_run_changes_nothing() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("broker dir");
    let mut broker = Broker::mosquitto_persistent(
        dir.path(),
        port,
        "allow_anonymous true\nmax_queued_messages 0",
    );
    let mut stopped = false;
    let summary = run_through(
        port,
        |sent| {
            if !stopped && sent >= EVENTS / 2 {
                // Mosquitto writes its store (sessions, queued messages)
                // when it stops; a SIGKILL loses what it acknowledged since
                // its last save, which no client can recover.
                broker.terminate();
                std::thread::sleep(Duration::from_millis(1500));
                broker.restart();
                stopped = true;
            }
        },
        true,
        "mqtt with a broker restart",
    );
    assert!(stopped);
    assert_both_reconnected(&summary);
}
