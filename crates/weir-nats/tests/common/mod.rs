//! Helpers for the NATS integration tests: a test-side JetStream client
//! (streams made and deleted per test), connector configurations, output
//! batches and a private `nats-server` for the outage tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{ArrayRef, RecordBatch, UInt64Array};
use async_nats::jetstream::{self, consumer, stream};
use weir_config::{Credentials, NatsSink, NatsSource};
use weir_connect::{Output, Polled, Received, SourceConnector};

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

/// A name no other test run uses (stream and consumer names: no dots).
pub fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("weirtest_{tag}_{}_{nanos}", std::process::id())
}

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

/// Waits up to `limit` for `cond`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An output batch owned by the test, lent as an [`Output`].
pub struct Rows {
    batch: RecordBatch,
    columns: Vec<String>,
    ids: Vec<u64>,
    json: Vec<u8>,
    ends: Vec<usize>,
}

/// The JSON row the tests write for `id`.
pub fn row_json(id: u64) -> String {
    format!("{{\"_id\":{id},\"v\":\"row-{id}\"}}")
}

impl Rows {
    pub fn new(ids: impl IntoIterator<Item = u64>) -> Rows {
        let ids: Vec<u64> = ids.into_iter().collect();
        let mut json = Vec::new();
        let mut ends = Vec::new();
        for &id in &ids {
            json.extend_from_slice(row_json(id).as_bytes());
            ends.push(json.len());
            json.push(b'\n');
        }
        let column: ArrayRef = Arc::new(UInt64Array::from(ids.clone()));
        Rows {
            batch: RecordBatch::try_from_iter([("_id", column)]).unwrap(),
            columns: vec!["_id".to_string()],
            ids,
            json,
            ends,
        }
    }

    pub fn output(&self) -> Output<'_> {
        Output {
            batch: &self.batch,
            columns: &self.columns,
            ids: &self.ids,
            json: &self.json,
            ends: &self.ends,
        }
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

/// A port nothing listens on (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
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

/// A private `nats-server` with JetStream, for outage tests.
pub struct PrivateServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
}

impl PrivateServer {
    /// Starts one on a free port, storing in `dir`.
    pub fn start(dir: &Path) -> PrivateServer {
        let mut s = PrivateServer {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        s.restart();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// (Re)starts it on the same port and store, and waits until it
    /// answers JetStream requests.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} did not come up",
                self.port
            );
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                let js = Js::connect(&self.url());
                // JetStream answers (a missing stream is an answer).
                let answer = js.rt.block_on(async {
                    tokio::time::timeout(Duration::from_secs(2), js.js.get_stream("weirtest_probe"))
                        .await
                });
                if let Ok(Err(e)) = &answer {
                    if e.to_string().contains("stream not found") {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no goodbye to clients, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        self.kill();
    }
}
