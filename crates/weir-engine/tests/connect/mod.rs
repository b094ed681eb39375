//! Shared by the connector end-to-end tests: fraud-v1 with its source and
//! sink swapped for connectors, the reference alerts, private brokers.

#![allow(dead_code)] // each test file uses a part

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_config::{CheckpointSettings, Pipeline, SinkKind, SourceKind};
use weir_workloads::fraud_v1;

/// fraud-v1 from examples/fraud/pipeline.toml reading `source` and writing
/// its alerts to `sink`, with checkpoints every 100 ms in `dir` when asked.
pub fn fraud_pipeline(
    dir: &Path,
    source: SourceKind,
    sink: SinkKind,
    checkpoints: bool,
) -> Pipeline {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud/pipeline.toml");
    let mut p = weir_config::load(&path).expect("example pipeline is valid");
    p.source.kind = source;
    p.sinks[0].kind = sink;
    p.dead_letter.path = dir.join("dead_letter.jsonl");
    p.checkpoint = checkpoints.then(|| CheckpointSettings {
        dir: dir.join("checkpoints"),
        interval_ms: 100,
        keep: 3,
    });
    p
}

/// The first `n` fraud-v1 events, one JSON object each.
pub fn events(n: u64) -> Vec<Vec<u8>> {
    fraud_v1::encode_json(n)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// An alert as compared: txn_id, card_id and the score's bits.
pub type Alert = (u64, u64, u64);

/// The reference alerts for `n` events, sorted.
pub fn reference(n: u64) -> Vec<Alert> {
    let mut r: Vec<Alert> = fraud_v1::alerts(n)
        .into_iter()
        .map(|(t, c, s)| (t, c, s.to_bits()))
        .collect();
    r.sort_unstable();
    r
}

/// Parses alert JSON records (with `_id`); returns them sorted, and their ids.
pub fn parse_alerts<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Alert>, Vec<u64>) {
    let mut alerts = Vec::new();
    let mut ids = Vec::new();
    for r in records {
        let v: serde_json::Value = serde_json::from_slice(r)
            .unwrap_or_else(|e| panic!("alert {:?} is not JSON: {e}", String::from_utf8_lossy(r)));
        alerts.push((
            v["txn_id"].as_u64().expect("txn_id"),
            v["card_id"].as_u64().expect("card_id"),
            v["score"].as_f64().expect("score").to_bits(),
        ));
        ids.push(v["_id"].as_u64().expect("_id"));
    }
    alerts.sort_unstable();
    (alerts, ids)
}

/// Asserts the alerts equal the reference exactly (no loss, no duplicate)
/// without printing thousands of them.
pub fn assert_exact(got: &[Alert], expected: &[Alert], what: &str) {
    assert!(!expected.is_empty());
    assert_eq!(got.len(), expected.len(), "{what}: alert count");
    if let Some((g, e)) = got.iter().zip(expected).find(|(g, e)| g != e) {
        panic!("{what}: first differing alert: got {g:?}, expected {e:?}");
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port nothing listens on (at the time of asking).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `cond` holds, panicking with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A broker process of the test's own, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    program: &'static str,
    args: Vec<String>,
    pub port: u16,
    pub dir: PathBuf,
}

impl Broker {
    /// Starts `program args` and waits for `port` to accept connections.
    pub fn start(program: &'static str, args: Vec<String>, port: u16, dir: PathBuf) -> Broker {
        let mut b = Broker {
            child: None,
            program,
            args,
            port,
            dir,
        };
        b.restart();
        b
    }

    /// Kills it with SIGKILL (no chance to save anything).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }

    /// Starts it again with the same arguments (same port, same store).
    pub fn restart(&mut self) {
        let child = Command::new(self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program));
        self.child = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(10), "the broker to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
