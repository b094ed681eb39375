//! What the NATS tests need beyond weir-test-support: a test-side
//! JetStream client (streams made and deleted per test), connector
//! configurations, polling a source, and a private `nats-server` that is
//! ready only once JetStream answers.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use weir_config::{Credentials, NatsSink, NatsSource};
use weir_connect::{Polled, Received, SourceConnector};
use weir_test_support::brokers::Broker;
use weir_test_support::rows::row_json;

/// Logs to the test's output when `RUST_LOG` is set.
pub fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// The machine's NATS server (JetStream enabled).
pub const SERVER: &str = "nats://127.0.0.1:4222";

/// A JetStream client for the test's own setup and checks.
pub struct Js {
    pub rt: tokio::runtime::Runtime,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Js {
    pub fn connect(url: &str) -> Js {
        logs();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(async_nats::ConnectOptions::new().connect(url))
            .unwrap_or_else(|e| panic!("test client cannot connect to {url}: {e}"));
        let js = {
            let _entered = rt.enter();
            jetstream::new(client.clone())
        };
        Js { rt, client, js }
    }

    /// Creates a file stream capturing `subjects`; deleted when the guard
    /// drops.
    pub fn stream(&self, name: &str, subjects: &[&str]) -> StreamGuard<'_> {
        self.rt
            .block_on(self.js.create_stream(stream::Config {
                name: name.to_string(),
                subjects: subjects.iter().map(|s| s.to_string()).collect(),
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .unwrap_or_else(|e| panic!("creating stream {name}: {e}"));
        StreamGuard {
            js: self,
            name: name.to_string(),
        }
    }

    /// Publishes and waits for the stream's ack; returns the sequence.
    pub fn publish(&self, subject: &str, payload: &[u8]) -> u64 {
        self.rt.block_on(async {
            self.js
                .publish(subject.to_string(), payload.to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        })
    }

    /// Publishes `m1` to `m<n>` to `subject`, waiting for the stream's
    /// acks every `piece` messages (the context allows 5000 unacknowledged
    /// publishes).
    pub fn publish_numbered(&self, subject: &str, n: u64, piece: usize) {
        self.rt.block_on(async {
            let mut acks = Vec::new();
            for i in 1..=n {
                acks.push(
                    self.js
                        .publish(subject.to_string(), format!("m{i}").into_bytes().into())
                        .await
                        .unwrap(),
                );
                if acks.len() == piece || i == n {
                    for a in acks.drain(..) {
                        a.await.unwrap();
                    }
                }
            }
        })
    }

    pub fn consumer_info(&self, stream: &str, consumer: &str) -> consumer::Info {
        self.rt.block_on(async {
            let s = self.js.get_stream(stream).await.unwrap();
            s.consumer_info(consumer).await.unwrap()
        })
    }

    /// Every message in the stream: (sequence, Nats-Msg-Id, payload).
    pub fn read_all(&self, name: &str) -> Vec<(u64, Option<String>, String)> {
        self.rt.block_on(async {
            let mut s = self.js.get_stream(name).await.unwrap();
            let state = s.info().await.unwrap().state.clone();
            let mut out = Vec::new();
            if state.messages == 0 {
                return out;
            }
            for seq in state.first_sequence..=state.last_sequence {
                let Ok(m) = s.get_raw_message(seq).await else {
                    continue;
                };
                let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
                out.push((
                    m.sequence,
                    id,
                    String::from_utf8(m.payload.to_vec()).unwrap(),
                ));
            }
            out
        })
    }
}

/// Deletes its stream when dropped (also when a test fails).
pub struct StreamGuard<'a> {
    js: &'a Js,
    pub name: String,
}

impl Drop for StreamGuard<'_> {
    fn drop(&mut self) {
        let _ = self.js.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), self.js.js.delete_stream(&self.name)).await
        });
    }
}

pub fn source_config(
    server: &str,
    stream: &str,
    consumer: &str,
    subject: Option<&str>,
) -> NatsSource {
    NatsSource {
        servers: vec![server.to_string()],
        stream: stream.to_string(),
        consumer: consumer.to_string(),
        subject: subject.map(str::to_string),
        credentials: Credentials::default(),
    }
}

pub fn sink_config(server: &str, subject: &str, max_in_flight: usize) -> NatsSink {
    NatsSink {
        servers: vec![server.to_string()],
        subject: subject.to_string(),
        max_in_flight,
        credentials: Credentials::default(),
    }
}

/// `(sequence, payload)` of the messages [`Js::publish_numbered`]
/// publishes (and the tests publish one by one) at `seqs`.
pub fn expected(seqs: impl IntoIterator<Item = u64>) -> Vec<(u64, String)> {
    seqs.into_iter().map(|s| (s, format!("m{s}"))).collect()
}

/// Polls until `n` records arrived; panics after `limit`.
pub fn poll_n(src: &mut dyn SourceConnector, n: usize, limit: Duration) -> Vec<(u64, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut r = Received::default();
    while got.len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records within {limit:?}: {got:?}",
            got.len()
        );
        r.clear();
        let polled = src
            .poll(&mut r, n - got.len(), Duration::from_millis(100))
            .unwrap();
        collect(&r, &mut got);
        assert_ne!(
            polled,
            Polled::End,
            "ended after {} of {n} records",
            got.len()
        );
    }
    got
}

/// Polls until the source ends (draining); panics after `limit`.
pub fn poll_to_end(src: &mut dyn SourceConnector, limit: Duration) -> Vec<(u64, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    let mut r = Received::default();
    loop {
        assert!(
            Instant::now() < deadline,
            "no end within {limit:?} after {} records",
            got.len()
        );
        r.clear();
        let polled = src.poll(&mut r, 37, Duration::from_millis(100)).unwrap();
        collect(&r, &mut got);
        if polled == Polled::End {
            assert!(r.is_empty(), "records with End");
            return got;
        }
    }
}

pub fn collect(r: &Received, got: &mut Vec<(u64, String)>) {
    for (rec, payload) in r.iter() {
        assert_eq!(rec.partition, 0);
        got.push((rec.offset, String::from_utf8(payload.to_vec()).unwrap()));
    }
}

/// Checks that a stream holds each id of `ids` exactly once, with
/// `Nats-Msg-Id` equal to the id and the row's JSON as payload.
pub fn assert_holds_exactly(
    stored: &[(u64, Option<String>, String)],
    ids: impl IntoIterator<Item = u64>,
) {
    let mut want: Vec<u64> = ids.into_iter().collect();
    want.sort();
    let mut got: Vec<u64> = Vec::new();
    for (seq, id, payload) in stored {
        let id: u64 = id
            .as_deref()
            .unwrap_or_else(|| panic!("message {seq} has no Nats-Msg-Id"))
            .parse()
            .unwrap();
        assert_eq!(payload, &row_json(id), "payload of message {seq}");
        got.push(id);
    }
    got.sort();
    assert_eq!(got.len(), want.len(), "message count (ids {got:?})");
    assert_eq!(got, want);
}

/// CPU time (user + system) this process has used.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line; the slice
    // starts at field 3.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// A private `nats-server` with JetStream on a free port, storing in
/// `dir`: each start waits until JetStream answers requests (a missing
/// stream is an answer), not only until the port accepts connections.
pub fn private_server(dir: &Path) -> Broker {
    Broker::nats_server(dir).ready_when(|port| {
        let js = Js::connect(&server_url(port));
        let answer = js.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(2), js.js.get_stream("weirtest_probe")).await
        });
        matches!(&answer, Ok(Err(e)) if e.to_string().contains("stream not found"))
    })
}

/// The URL of a server on a loopback port.
pub fn server_url(port: u16) -> String {
    format!("nats://127.0.0.1:{port}")
}
