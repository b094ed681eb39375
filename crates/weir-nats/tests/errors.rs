//! What the connectors say when they cannot work: the server unreachable,
//! the stream missing, no stream for the sink's subject.

mod common;

use common::*;
use weir_connect::ConnectError;
use weir_test_support::names::unique;
use weir_test_support::net::free_port;
use weir_test_support::rows::Rows;

fn message(e: ConnectError) -> String {
    e.to_string()
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn unreachable_server_is_named() {
    let port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let t = std::time::Instant::now();
    let Err(e) = weir_nats::open_source("in", &source_config(&url, "s", "c", None), None, false)
    else {
        panic!("connected to a closed port");
    };
    assert!(matches!(e, ConnectError::Connect { .. }), "{e:?}");
    let m = message(e);
    assert!(m.contains(&format!("127.0.0.1:{port}")), "{m}");
    assert!(m.to_lowercase().contains("refused"), "{m}");
    let Err(e) = weir_nats::open_sink("out", &sink_config(&url, "x", 4), false, None) else {
        panic!("connected to a closed port");
    };
    assert!(matches!(e, ConnectError::Connect { .. }), "{e:?}");
    assert!(message(e).contains(&format!("127.0.0.1:{port}")));
    // Refused at once, not after retries.
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t.elapsed()
    );
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn missing_stream_is_named() {
    let stream = unique("missing");
    let Err(e) = weir_nats::open_source(
        "in",
        &source_config(SERVER, &stream, "c", None),
        None,
        false,
    ) else {
        panic!("opened a missing stream");
    };
    assert!(matches!(e, ConnectError::Config(_)), "{e:?}");
    let m = message(e);
    assert!(m.contains(&stream), "{m}");
    assert!(m.contains("127.0.0.1:4222"), "{m}");
    assert!(m.contains("stream not found"), "server's words: {m}");
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn subject_without_stream_is_named() {
    let subject = format!("{}.nowhere", unique("nostream"));
    let Err(e) = weir_nats::open_sink("out", &sink_config(SERVER, &subject, 4), false, None) else {
        panic!("opened a sink no stream captures");
    };
    assert!(matches!(e, ConnectError::Config(_)), "{e:?}");
    let m = message(e);
    assert!(m.contains(&subject), "{m}");
    assert!(m.contains("127.0.0.1:4222"), "{m}");
}

#[test]
#[ignore = "integration: needs NATS JetStream on 127.0.0.1:4222"]
fn stream_deleted_under_the_connectors() {
    let js = Js::connect(SERVER);
    let stream = unique("gone");
    let subject = format!("{stream}.x");
    let guard = js.stream(&stream, &[&subject]);
    js.publish(&subject, b"m1");
    let mut sink =
        weir_nats::open_sink("out", &sink_config(SERVER, &subject, 4), false, None).unwrap();
    let mut src = weir_nats::open_source(
        "in",
        &source_config(SERVER, &stream, "c", None),
        None,
        false,
    )
    .unwrap();
    assert_eq!(
        poll_n(src.as_mut(), 1, std::time::Duration::from_secs(10)).len(),
        1
    );
    drop(guard);

    // The sink: the server rejects the publish (no responders).
    sink.write(0, &Rows::new(0..3).output()).unwrap();
    let e = sink.finish().unwrap_err();
    let m = message(e);
    assert!(m.contains(&subject) && m.contains("127.0.0.1:4222"), "{m}");
    assert!(m.contains("no stream"), "{m}");

    // The source: its consumer went with the stream; re-creating it finds
    // no stream, which is final.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut r = weir_connect::Received::default();
    let e = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the source did not notice"
        );
        match src.poll(&mut r, 10, std::time::Duration::from_millis(100)) {
            Ok(_) => assert!(r.is_empty()),
            Err(e) => break e,
        }
    };
    assert!(matches!(e, ConnectError::Config(_)), "{e:?}");
    let m = message(e);
    assert!(m.contains(&stream) && m.contains("127.0.0.1:4222"), "{m}");
}
