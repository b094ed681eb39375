//! The MQTT source against a real broker: offsets, replay from a
//! checkpoint, drain, the deduplication window, and the errors at open.

mod common;

use std::time::{Duration, Instant};

use common::{numbered, publish, read_to_end, source_config};
use weir_connect::{ConnectError, ConnectionState};
use weir_log::{Log, StreamConfig, TailReader};
use weir_test_support::brokers::Broker;
use weir_test_support::names::unique;
use weir_test_support::net::free_port;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
#[ignore = "integration: needs Mosquitto on 127.0.0.1:1883"]
fn delivers_payloads_at_stream_offsets_and_replays_from_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("offsets");
    let config = source_config(&[&format!("{topic}/#")], dir.path(), 0);
    let payloads: Vec<Vec<u8>> = (0..50).map(|i| format!("m-{i}").into_bytes()).collect();
    let payload_refs: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
    let sub_topic = format!("{topic}/a");

    let mut source = weir_mqtt::open_source("mqtt_in", &config, None, true).expect("open");
    assert_eq!(source.partitions(), 1);
    assert_eq!(source.position(), vec![0]);
    assert_eq!(source.status().state(), ConnectionState::Connected);
    let messages: Vec<(&str, &[u8])> = payload_refs
        .iter()
        .map(|p| (sub_topic.as_str(), *p))
        .collect();
    publish(1883, &messages);

    // Exactly the payloads, in order, at offsets 0..50; then End.
    assert_eq!(
        read_to_end(source.as_mut(), LIMIT),
        numbered(0, &payload_refs)
    );
    assert_eq!(source.position(), vec![50]);
    // The checkpoint thread's call publishes the consumer position.
    (source.on_checkpoint())(&[50]);
    drop(source);

    // They are the stream's records, read by another reader.
    let stored = TailReader::new(dir.path(), "mqtt_in", 0)
        .read(0, 1000)
        .unwrap();
    assert_eq!(stored, numbered(0, &payload_refs));
    let log = Log::open(dir.path()).unwrap();
    let stream = log.stream("mqtt_in", StreamConfig::default()).unwrap();
    assert_eq!(
        stream.consumer_offsets().unwrap(),
        vec![(config.client_id.clone(), vec![50])]
    );
    drop(stream);
    drop(log);

    // A restart at checkpoint [20] delivers 20..50 again, same offsets.
    let mut source = weir_mqtt::open_source("mqtt_in", &config, Some(&[20]), true).expect("reopen");
    assert_eq!(source.position(), vec![20]);
    assert_eq!(
        read_to_end(source.as_mut(), LIMIT),
        numbered(20, &payload_refs[20..])
    );
    drop(source);

    // Without a checkpoint the stream is read from its first record.
    let mut source = weir_mqtt::open_source("mqtt_in", &config, None, true).expect("reopen");
    assert_eq!(
        read_to_end(source.as_mut(), LIMIT),
        numbered(0, &payload_refs)
    );
}

#[test]
#[ignore = "integration: needs Mosquitto on 127.0.0.1:1883"]
fn the_dedup_window_drops_repeats_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let topic = unique("dedup");
    let (x, y) = (format!("{topic}/x"), format!("{topic}/y"));
    let config = source_config(&[&format!("{topic}/#")], dir.path(), 100);

    let mut source = weir_mqtt::open_source("mqtt_in", &config, None, true).expect("open");
    publish(
        1883,
        &[
            (&x, b"a"),
            (&x, b"b"),
            (&x, b"a"), // repeat: dropped
            (&y, b"a"), // same payload, other topic: kept
            (&x, b"c"),
            (&x, b"b"), // repeat: dropped
        ],
    );
    let first: Vec<&[u8]> = vec![b"a", b"b", b"a", b"c"];
    assert_eq!(read_to_end(source.as_mut(), LIMIT), numbered(0, &first));
    drop(source);

    // After a restart the window still holds a, b, a@y and c.
    let mut source = weir_mqtt::open_source("mqtt_in", &config, Some(&[4]), true).expect("reopen");
    publish(1883, &[(&x, b"a"), (&y, b"a"), (&x, b"d"), (&x, b"c")]);
    assert_eq!(read_to_end(source.as_mut(), LIMIT), numbered(4, &[b"d"]));
    drop(source);
    let stored = TailReader::new(dir.path(), "mqtt_in", 0)
        .read(0, 100)
        .unwrap();
    assert_eq!(stored.len(), 5);
}

#[test]
fn a_closed_port_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut config = source_config(&["t/#"], dir.path(), 0);
    config.port = port;
    let started = Instant::now();
    let err = weir_mqtt::open_source("mqtt_in", &config, None, false)
        .err()
        .expect("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(10));
    match &err {
        ConnectError::Connect { address, message } => {
            assert_eq!(address, &format!("127.0.0.1:{port}"));
            assert!(message.contains("Connection refused"), "{message}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert!(err
        .to_string()
        .starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")));

    let sink = weir_config::MqttSink {
        host: "127.0.0.1".into(),
        port,
        topic: "t".into(),
        qos: 1,
        client_id: unique("sink"),
        retain: false,
        credentials: Default::default(),
    };
    match weir_mqtt::open_sink("out", &sink, true, None).err() {
        Some(ConnectError::Connect { address, message }) => {
            assert_eq!(address, format!("127.0.0.1:{port}"));
            assert!(message.contains("Connection refused"), "{message}");
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}

#[test]
fn bad_topics_are_configuration_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Checked before any connection: the port is never dialled.
    let mut config = source_config(&["ok/+", "a/#/b"], dir.path(), 0);
    config.port = free_port();
    match weir_mqtt::open_source("mqtt_in", &config, None, false).err() {
        Some(ConnectError::Config(m)) => {
            assert_eq!(
                m,
                "source mqtt_in: \"a/#/b\" is not a valid MQTT topic filter"
            )
        }
        other => panic!("expected a config error, got {other:?}"),
    }
    let sink = weir_config::MqttSink {
        host: "127.0.0.1".into(),
        port: config.port,
        topic: "out/+".into(),
        qos: 1,
        client_id: unique("sink"),
        retain: false,
        credentials: Default::default(),
    };
    match weir_mqtt::open_sink("out", &sink, true, None).err() {
        Some(ConnectError::Config(m)) => {
            assert!(m.contains("\"out/+\" is not a valid MQTT topic"), "{m}")
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
#[ignore = "integration: needs the mosquitto binary"]
fn a_refused_connack_says_why() {
    // No anonymous clients and no password file: every CONNECT is refused.
    let broker_dir = tempfile::tempdir().unwrap();
    let broker =
        Broker::mosquitto_persistent(broker_dir.path(), free_port(), "allow_anonymous false");
    let dir = tempfile::tempdir().unwrap();
    let mut config = source_config(&["t/#"], dir.path(), 0);
    config.port = broker.port();
    config.credentials.user = Some("weir".into());
    config.credentials.password = Some(weir_config::Secret::new("hunter2", "test"));
    match weir_mqtt::open_source("mqtt_in", &config, None, false).err() {
        Some(ConnectError::Connect { address, message }) => {
            assert_eq!(address, format!("127.0.0.1:{}", broker.port()));
            assert_eq!(message, "the broker refused the connection: not authorized");
            assert!(!message.contains("hunter2"));
        }
        other => panic!("expected a connect error, got {other:?}"),
    }
}
