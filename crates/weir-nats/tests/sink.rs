//! The JetStream sink against the machine's NATS server: every row once,
//! replays dropped by `Nats-Msg-Id`, more rows than may be in flight.

mod common;

use std::time::Duration;

use common::*;
use weir_connect::ConnectionState;
use weir_test_support::names::unique;
use weir_test_support::rows::Rows;

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn replays_are_stored_once() {
    let js = Js::connect(SERVER);
    let stream = unique("sink");
    let subject = format!("{stream}.out");
    let _guard = js.stream(&stream, &[&subject]);
    let config = sink_config(SERVER, &subject, 8);

    let mut sink = weir_nats::open_sink("out", &config, true, None).unwrap();
    assert_eq!(sink.status().state(), ConnectionState::Connected);
    // 250 rows, 8 in flight at most, over two epochs.
    sink.write(1, &Rows::new(0..100).output()).unwrap();
    assert!(sink.prepare(1).unwrap().is_empty());
    sink.commit(1).unwrap();
    sink.write(2, &Rows::new(100..250).output()).unwrap();
    sink.finish().unwrap();
    let stored = js.read_all(&stream);
    assert_holds_exactly(&stored, 0..250);
    // In order, as nothing had to be sent again.
    let ids: Vec<u64> = stored
        .iter()
        .map(|(_, id, _)| id.as_ref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(ids, (0..250).collect::<Vec<_>>());
    drop(sink);

    // A restart replays from an earlier checkpoint: the same ids again,
    // and some new ones.
    let mut sink = weir_nats::open_sink("out", &config, true, Some(&[])).unwrap();
    sink.write(2, &Rows::new(100..250).output()).unwrap();
    sink.write(3, &Rows::new(250..300).output()).unwrap();
    sink.prepare(3).unwrap();
    sink.commit(3).unwrap();
    sink.finish().unwrap();
    assert_holds_exactly(&js.read_all(&stream), 0..300);
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn one_in_flight_and_empty_batches() {
    let js = Js::connect(SERVER);
    let stream = unique("sink1");
    let subject = format!("{stream}.out");
    let _guard = js.stream(&stream, &[&subject]);
    let mut sink =
        weir_nats::open_sink("out", &sink_config(SERVER, &subject, 1), false, None).unwrap();
    sink.write(0, &Rows::new([]).output()).unwrap();
    sink.write(0, &Rows::new(0..20).output()).unwrap();
    sink.write(0, &Rows::new(10..30).output()).unwrap();
    sink.finish().unwrap();
    assert_holds_exactly(&js.read_all(&stream), 0..30);
    // Finishing again with nothing in flight returns at once.
    let t = std::time::Instant::now();
    sink.finish().unwrap();
    assert!(t.elapsed() < Duration::from_secs(1));
}
