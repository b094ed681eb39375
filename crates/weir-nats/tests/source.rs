//! The JetStream source against the machine's NATS server: exact offsets
//! and payloads, acknowledgement on checkpoints, restart at a checkpoint
//! and at the broker's ack floor, draining, subject filters.

mod common;

use std::time::Duration;

use common::*;
use weir_connect::{ConnectionState, Polled, Received};
use weir_test_support::names::unique;
use weir_test_support::wait::wait_for;

const IGNORE: &str = "integration: needs NATS JetStream on 127.0.0.1:4222";

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn reads_acknowledges_and_restarts() {
    let _ = IGNORE;
    let js = Js::connect(SERVER);
    let stream = unique("src");
    let subject = format!("{stream}.a");
    let _guard = js.stream(&stream, &[&format!("{stream}.>")]);
    for i in 1..=50u64 {
        assert_eq!(js.publish(&subject, format!("m{i}").as_bytes()), i);
    }
    let config = source_config(SERVER, &stream, "pipe", None);

    // A new consumer delivers the whole stream, offsets = sequences.
    let mut src = weir_nats::open_source("in", &config, None, true).unwrap();
    assert_eq!(src.partitions(), 1);
    assert_eq!(src.position(), vec![1]);
    assert_eq!(src.status().state(), ConnectionState::Connected);
    let got = poll_to_end(src.as_mut(), Duration::from_secs(20));
    assert_eq!(got, expected(1..=50));
    assert_eq!(src.position(), vec![51]);

    // A checkpoint at 21 acknowledges 1..=20: the ack floor becomes 20.
    let mut ack = src.on_checkpoint();
    ack(&[21]);
    wait_for(Duration::from_secs(10), "ack floor 20", || {
        js.consumer_info(&stream, "pipe").ack_floor.stream_sequence == 20
    });
    // The same again, and one further: the floor only moves forward.
    ack(&[21]);
    ack(&[41]);
    wait_for(Duration::from_secs(10), "ack floor 40", || {
        js.consumer_info(&stream, "pipe").ack_floor.stream_sequence == 40
    });
    drop(ack);
    drop(src);

    // Restored at checkpoint 21: exactly 21.. again, whatever the broker
    // acknowledged since.
    let mut src = weir_nats::open_source("in", &config, Some(&[21]), true).unwrap();
    assert_eq!(src.position(), vec![21]);
    let got = poll_to_end(src.as_mut(), Duration::from_secs(20));
    assert_eq!(got, expected(21..=50));
    src.on_checkpoint()(&[31]);
    wait_for(Duration::from_secs(10), "ack floor 30", || {
        js.consumer_info(&stream, "pipe").ack_floor.stream_sequence == 30
    });
    drop(src);

    // Without a checkpoint: after the broker's ack floor, at once (the
    // unacknowledged 31..=50 do not wait for ack_wait).
    let mut src = weir_nats::open_source("in", &config, None, true).unwrap();
    assert_eq!(src.position(), vec![31]);
    let got = poll_to_end(src.as_mut(), Duration::from_secs(5));
    assert_eq!(got, expected(31..=50));
    drop(src);

    // Not draining: new messages keep coming, and an idle poll is Idle.
    let mut src = weir_nats::open_source("in", &config, Some(&[51]), false).unwrap();
    let mut r = Received::default();
    assert_eq!(
        src.poll(&mut r, 10, Duration::from_millis(200)).unwrap(),
        Polled::Idle
    );
    assert!(r.is_empty());
    for i in 51..=60u64 {
        js.publish(&subject, format!("m{i}").as_bytes());
    }
    let got = poll_n(src.as_mut(), 10, Duration::from_secs(10));
    assert_eq!(got, expected(51..=60));
    assert_eq!(src.position(), vec![61]);
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn subject_filter_keeps_stream_sequences() {
    let js = Js::connect(SERVER);
    let stream = unique("filter");
    let _guard = js.stream(&stream, &[&format!("{stream}.>")]);
    let mut want = Vec::new();
    for i in 1..=30u64 {
        let subject = if i % 3 == 0 {
            format!("{stream}.keep")
        } else {
            format!("{stream}.other")
        };
        let seq = js.publish(&subject, format!("m{i}").as_bytes());
        if i % 3 == 0 {
            want.push((seq, format!("m{i}")));
        }
    }
    let config = source_config(SERVER, &stream, "filtered", Some(&format!("{stream}.keep")));
    let mut src = weir_nats::open_source("in", &config, None, true).unwrap();
    let got = poll_to_end(src.as_mut(), Duration::from_secs(20));
    assert_eq!(got, want);
    assert_eq!(src.position(), vec![31]);
    src.on_checkpoint()(&[16]);
    // Ack-all on message 15 (the last delivered below 16).
    wait_for(Duration::from_secs(10), "ack floor 15", || {
        js.consumer_info(&stream, "filtered")
            .ack_floor
            .stream_sequence
            == 15
    });
    drop(src);
    let mut src = weir_nats::open_source("in", &config, Some(&[16]), true).unwrap();
    let got = poll_to_end(src.as_mut(), Duration::from_secs(20));
    assert_eq!(
        got,
        want.iter()
            .filter(|(s, _)| *s >= 16)
            .cloned()
            .collect::<Vec<_>>()
    );
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn many_messages_in_bounded_polls() {
    // More than the pull batch and the forwarding buffer, polled in small
    // pieces, checkpointed as it goes.
    let js = Js::connect(SERVER);
    let stream = unique("many");
    let subject = format!("{stream}.x");
    let _guard = js.stream(&stream, &[&subject]);
    let n = 6000u64;
    // In pieces: the context allows 5000 unacknowledged publishes.
    js.publish_numbered(&subject, n, 500);
    let config = source_config(SERVER, &stream, "many", None);
    let mut src = weir_nats::open_source("in", &config, None, true).unwrap();
    let mut ack = src.on_checkpoint();
    let mut got = Vec::new();
    let mut r = Received::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {}",
            got.len()
        );
        r.clear();
        let polled = src.poll(&mut r, 500, Duration::from_millis(100)).unwrap();
        assert!(r.len() <= 500);
        collect(&r, &mut got);
        ack(&src.position());
        if polled == Polled::End {
            break;
        }
    }
    assert_eq!(got, expected(1..=n));
    wait_for(Duration::from_secs(10), "everything acknowledged", || {
        js.consumer_info(&stream, "many").ack_floor.stream_sequence == n
    });
}
