//! The MQTT sink against a real broker: every row published with QoS 1
//! reaches a subscriber, exactly as the row's JSON.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_connect::ConnectionState;
use weir_test_support::names::unique;
use weir_test_support::rows::Rows;

/// Rows `first..first + n`: a column `v`, ids `1000 + v`; and each row's
/// JSON alone.
fn rows(first: i64, n: i64) -> (Rows, Vec<Vec<u8>>) {
    let values: ArrayRef = Arc::new(Int64Array::from_iter_values(first..first + n));
    let batch = RecordBatch::try_from_iter([("v", values)]).unwrap();
    let ids: Vec<u64> = (first..first + n).map(|v| 1000 + v as u64).collect();
    let each: Vec<Vec<u8>> = (first..first + n)
        .zip(&ids)
        .map(|(v, id)| format!("{{\"_id\":{id},\"v\":{v}}}").into_bytes())
        .collect();
    (Rows::from_parts(batch, &["v"], ids, &each), each)
}

#[test]
#[ignore = "integration: needs Mosquitto on 127.0.0.1:1883"]
fn every_row_reaches_a_subscriber() {
    let topic = unique("sink");
    // The subscriber, subscribed before anything is published.
    let (subscriber, mut incoming) =
        Client::new(MqttOptions::new(unique("sub"), "127.0.0.1", 1883), 16);
    subscriber.subscribe(&topic, QoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no SUBACK");
        if let Ok(Ok(Event::Incoming(Packet::SubAck(_)))) =
            incoming.recv_timeout(Duration::from_millis(200))
        {
            break;
        }
    }

    let config = weir_config::MqttSink {
        host: "127.0.0.1".into(),
        port: 1883,
        topic: topic.clone(),
        qos: 1,
        client_id: unique("sink"),
        retain: false,
        credentials: Default::default(),
    };
    let mut sink = weir_mqtt::open_sink("out", &config, true, None).expect("open the sink");
    assert_eq!(sink.status().state(), ConnectionState::Connected);
    let mut expected = Vec::new();
    // Two epochs, more rows than the sink keeps in flight.
    for (epoch, first, n) in [(1u64, 0i64, 700i64), (2, 700, 300)] {
        let (rows, each) = rows(first, n);
        sink.write(epoch, &rows.output()).unwrap();
        // Every PUBACK is in: the part is empty, commit does nothing.
        assert_eq!(sink.prepare(epoch).unwrap(), Vec::<u8>::new());
        sink.commit(epoch).unwrap();
        expected.extend(each);
    }
    sink.finish().unwrap();
    drop(sink);

    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} rows arrived",
            got.len(),
            expected.len()
        );
        if let Ok(Ok(Event::Incoming(Packet::Publish(p)))) =
            incoming.recv_timeout(Duration::from_millis(200))
        {
            assert_eq!(p.topic, topic);
            got.push(p.payload.to_vec());
        }
    }
    assert_eq!(got, expected);
    let _ = subscriber.disconnect();
}
