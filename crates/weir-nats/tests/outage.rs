//! The connectors across a server outage: a private `nats-server` with
//! JetStream is killed (SIGKILL) mid-run and started again on the same
//! port and store. The connectors must report reconnecting and then
//! connected, must not spin while the server is away, and in the end the
//! source must have delivered every message exactly once in order and the
//! sink must have stored every row exactly once.
//!
//! SIGKILL leaves what the server had written to its files in the page
//! cache, so the stream survives; only a power loss would lose what the
//! server had not yet fsynced (see the docs on `sync_interval`).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use weir_connect::{ConnectionState, Received};
use weir_test_support::names::unique;
use weir_test_support::rows::Rows;
use weir_test_support::wait::wait_for;

const POLL_WAIT: Duration = Duration::from_millis(100);
/// How long the server stays down.
const DOWN: Duration = Duration::from_secs(3);

/// The tests measure the process's CPU time while the server is down:
/// one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
#[ignore = "integration: needs the nats-server binary"]
fn source_survives_a_server_kill() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut server = private_server(dir.path());
    let url = server_url(server.port());
    let stream = unique("outsrc");
    let subject = format!("{stream}.x");
    {
        let js = Js::connect(&url);
        std::mem::forget(js.stream(&stream, &[&subject])); // the server goes with the test
        for i in 1..=200u64 {
            assert_eq!(js.publish(&subject, format!("m{i}").as_bytes()), i);
        }
    }

    let mut src =
        weir_nats::open_source("in", &source_config(&url, &stream, "c", None), None, false)
            .unwrap();
    let status = src.status();
    let mut ack = src.on_checkpoint();
    let mut got = poll_n(src.as_mut(), 100, Duration::from_secs(20));
    ack(&[51]);
    {
        let js = Js::connect(&url);
        wait_for(Duration::from_secs(10), "ack floor 50", || {
            js.consumer_info(&stream, "c").ack_floor.stream_sequence == 50
        });
    }

    server.kill();
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let mut polls = 0u32;
    let mut r = Received::default();
    wait_for(Duration::from_secs(5), "reconnecting", || {
        status.state() == ConnectionState::Reconnecting
    });
    while t0.elapsed() < DOWN {
        r.clear();
        // What was fetched before the kill may still come; then Idle.
        src.poll(&mut r, 50, POLL_WAIT).unwrap();
        collect(&r, &mut got);
        polls += 1;
    }
    let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    assert_eq!(status.state(), ConnectionState::Reconnecting);
    let most = (wall.as_millis() / POLL_WAIT.as_millis()) as u32 + 2;
    assert!(
        polls <= most,
        "{polls} polls in {wall:?}: poll does not wait"
    );
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?} while the server was down"
    );

    server.restart();
    {
        let js = Js::connect(&url);
        for i in 201..=300u64 {
            assert_eq!(
                js.publish(&subject, format!("m{i}").as_bytes()),
                i,
                "the stream lost messages"
            );
        }
    }
    let rest = poll_n(src.as_mut(), 300 - got.len(), Duration::from_secs(60));
    got.extend(rest);
    assert_eq!(got, expected(1..=300));
    assert_eq!(status.state(), ConnectionState::Connected);
    assert!(status.reconnects() >= 1);
    // Nothing more: no duplicates trail behind.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(1) {
        r.clear();
        src.poll(&mut r, 50, POLL_WAIT).unwrap();
        assert!(r.is_empty(), "more records after all 300");
    }
    // Acknowledgements work on the new connection.
    ack(&[301]);
    let js = Js::connect(&url);
    wait_for(Duration::from_secs(10), "ack floor 300", || {
        js.consumer_info(&stream, "c").ack_floor.stream_sequence == 300
    });
}

#[test]
#[ignore = "integration: needs the nats-server binary"]
fn sink_survives_a_server_kill() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut server = private_server(dir.path());
    let url = server_url(server.port());
    let stream = unique("outsink");
    let subject = format!("{stream}.out");
    {
        let js = Js::connect(&url);
        std::mem::forget(js.stream(&stream, &[&subject]));
    }
    let mut sink =
        weir_nats::open_sink("out", &sink_config(&url, &subject, 16), true, None).unwrap();
    let status = sink.status();
    sink.write(1, &Rows::new(0..100).output()).unwrap();
    sink.prepare(1).unwrap();

    server.kill();
    let (t0, cpu0) = (Instant::now(), cpu_time());
    let writer = std::thread::spawn(move || {
        sink.write(2, &Rows::new(100..300).output())?;
        sink.prepare(2)?;
        sink.finish()?;
        Ok::<_, weir_connect::ConnectError>(sink)
    });
    wait_for(Duration::from_secs(5), "reconnecting", || {
        status.state() == ConnectionState::Reconnecting
    });
    std::thread::sleep(DOWN.saturating_sub(t0.elapsed()));
    let (wall, cpu) = (t0.elapsed(), cpu_time() - cpu0);
    assert!(
        !writer.is_finished(),
        "the sink finished without the server"
    );
    assert!(
        cpu < wall / 4,
        "{cpu:?} of CPU in {wall:?} while the server was down"
    );

    server.restart();
    wait_for(Duration::from_secs(60), "the writer", || {
        writer.is_finished()
    });
    let mut sink = writer.join().unwrap().unwrap();
    assert_eq!(status.state(), ConnectionState::Connected);
    assert!(status.reconnects() >= 1);
    let js = Js::connect(&url);
    assert_holds_exactly(&js.read_all(&stream), 0..300);

    // A replay after the outage is still dropped.
    sink.write(3, &Rows::new(250..300).output()).unwrap();
    sink.finish().unwrap();
    assert_holds_exactly(&js.read_all(&stream), 0..300);
}

#[test]
#[ignore = "integration: needs the nats-server binary"]
fn draining_source_killed_mid_delivery() {
    // The kill lands while messages stream to the connector, so some are
    // in flight when the connection drops; a draining source must still
    // deliver every message once, in order, and end only after the last.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut server = private_server(dir.path());
    let url = server_url(server.port());
    let stream = unique("outmid");
    let subject = format!("{stream}.x");
    let n = 20_000u64;
    {
        let js = Js::connect(&url);
        std::mem::forget(js.stream(&stream, &[&subject]));
        js.publish_numbered(&subject, n, 1000);
    }
    let mut src =
        weir_nats::open_source("in", &source_config(&url, &stream, "c", None), None, true).unwrap();
    let status = src.status();
    let mut ack = src.on_checkpoint();
    let mut got = Vec::new();
    let mut r = Received::default();
    let mut killed_at = None;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        assert!(Instant::now() < deadline, "stuck at {} records", got.len());
        r.clear();
        let polled = src.poll(&mut r, 97, Duration::from_millis(50)).unwrap();
        collect(&r, &mut got);
        if got.len() % 1000 < 97 {
            ack(&src.position());
        }
        if killed_at.is_none() && got.len() >= 3000 {
            server.kill();
            killed_at = Some(Instant::now());
        }
        if let Some(t) = killed_at {
            if t.elapsed() > Duration::from_secs(2)
                && status.state() == ConnectionState::Reconnecting
            {
                server.restart();
                killed_at = Some(Instant::now() + Duration::from_secs(3600));
            }
        }
        if polled == weir_connect::Polled::End {
            break;
        }
    }
    assert_eq!(got.len() as u64, n, "records delivered");
    assert_eq!(got, expected(1..=n));
    assert!(status.reconnects() >= 1);
}
