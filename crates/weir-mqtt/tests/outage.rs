//! The MQTT source across a broker outage: a private Mosquitto (with
//! persistence) is stopped mid-run and started again on the same port.
//!
//! The broker is stopped with SIGTERM: Mosquitto writes its store
//! (sessions, subscriptions, queued and in-flight QoS 1 messages) on the
//! way out, so nothing it acknowledged is lost. With SIGKILL it keeps only
//! what its last autosave wrote, and can lose messages it had already
//! acknowledged to the publisher — the broker's guarantee, which no
//! subscriber can make up for; this test checks ours.
//!
//! Across the outage the publisher resends what it saw no PUBACK for and
//! the broker redelivers what the source had not acknowledged, so copies
//! arrive; `dedup_window` (payloads are unique) keeps exactly one of each.
//! This test is alone in its file because it installs a global log
//! subscriber, to count reconnect attempts and check the log lines.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::read_to_end;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_connect::ConnectionState;
use weir_test_support::brokers::Broker;
use weir_test_support::names::unique;
use weir_test_support::net::free_port;
use weir_test_support::wait::wait_for;

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Publishes `n` messages with QoS 1 over a persistent session, one at a
/// time, each until its PUBACK, across broker restarts.
fn publish_through_outages(port: u16, topic: String, n: usize, acked: Arc<AtomicUsize>) {
    let mut options = MqttOptions::new(unique("pub"), "127.0.0.1", port);
    options.set_clean_session(false);
    let (client, mut connection) = Client::new(options, 16);
    let deadline = Instant::now() + Duration::from_secs(45);
    for i in 0..n {
        let payload = format!("msg-{i:04}");
        client
            .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.as_bytes())
            .unwrap();
        loop {
            assert!(Instant::now() < deadline, "publisher stuck at message {i}");
            match connection.recv_timeout(Duration::from_millis(200)) {
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => break,
                // rumqttc resends its unacknowledged publishes into a
                // resumed session itself; into a new one we resend.
                Ok(Ok(Event::Incoming(Packet::ConnAck(c)))) if !c.session_present => {
                    client
                        .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.as_bytes())
                        .unwrap();
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(100)),
                _ => {}
            }
        }
        acked.store(i + 1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
}

#[test]
#[ignore = "integration: needs the mosquitto binary"]
fn the_source_reconnects_without_spinning_and_keeps_every_message_once() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("weir_mqtt=debug"))
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let broker_dir = tempfile::tempdir().unwrap();
    let mut broker =
        Broker::mosquitto_persistent(broker_dir.path(), free_port(), "allow_anonymous true");
    let address = format!("127.0.0.1:{}", broker.port());
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("outage");
    let mut config = common::source_config(&[&topic], dir.path(), 1000);
    config.port = broker.port();
    let mut source = weir_mqtt::open_source("mqtt_in", &config, None, true).expect("open");
    let status = source.status();

    const N: usize = 300;
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (port, topic, acked) = (broker.port(), topic.clone(), acked.clone());
        std::thread::spawn(move || publish_through_outages(port, topic, N, acked))
    };

    wait_for(Duration::from_secs(20), "100 messages acknowledged", || {
        acked.load(Ordering::SeqCst) >= 100
    });
    broker.terminate();
    wait_for(Duration::from_secs(5), "the source noticed", || {
        status.state() == ConnectionState::Reconnecting
    });
    let attempts_before = logs.text().matches("MQTT reconnect attempt failed").count();
    std::thread::sleep(Duration::from_secs(2));
    // Backoff from 100 ms doubling: about 5 attempts in 2 s. A loop
    // without a pause would make thousands.
    let attempts = logs.text().matches("MQTT reconnect attempt failed").count() - attempts_before;
    assert!(
        (1..=12).contains(&attempts),
        "{attempts} reconnect attempts in 2 s"
    );
    assert_eq!(status.state(), ConnectionState::Reconnecting);

    broker.restart();
    wait_for(Duration::from_secs(15), "the source reconnected", || {
        status.state() == ConnectionState::Connected && status.reconnects() == 1
    });
    publisher.join().expect("publisher");

    // Every message exactly once, at consecutive offsets.
    let records = read_to_end(source.as_mut(), Duration::from_secs(30));
    let mut payloads: Vec<String> = records
        .iter()
        .map(|(_, p)| String::from_utf8(p.clone()).unwrap())
        .collect();
    let offsets: Vec<u64> = records.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..N as u64).collect::<Vec<_>>());
    payloads.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("msg-{i:04}")).collect();
    assert_eq!(payloads, expected, "broker log:\n{}", broker.log());

    let text = logs.text();
    // How many copies the window removed varies with where the outage
    // fell (often none with SIGTERM); shown for the record.
    eprintln!(
        "batches with duplicates dropped: {}",
        text.matches("dropped duplicate MQTT messages").count()
    );
    let lost = text
        .lines()
        .find(|l| l.contains("lost the connection to the MQTT broker"))
        .expect("a warning on the loss");
    assert!(
        lost.contains("WARN") && lost.contains(&format!("address={address}")),
        "{lost}"
    );
    let back = text
        .lines()
        .find(|l| l.contains("reconnected to the MQTT broker"))
        .expect("a line on the reconnection");
    assert!(
        back.contains("INFO") && back.contains(&format!("address={address}")),
        "{back}"
    );
    drop(source);
    assert_eq!(status.state(), ConnectionState::Closed);
}
