//! Helpers shared by the integration tests: unique names, a QoS 1
//! publisher that waits for every PUBACK, reading a source to its end, and
//! a private Mosquitto on a free port.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use weir_connect::{Polled, Received, SourceConnector};

/// A name no other test run uses.
pub fn unique(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("weir-{what}-{}-{nanos}", std::process::id())
}

/// A source config on the shared broker (127.0.0.1:1883).
pub fn source_config(
    topics: &[&str],
    log_dir: &Path,
    dedup_window: usize,
) -> weir_config::MqttSource {
    weir_config::MqttSource {
        host: "127.0.0.1".into(),
        port: 1883,
        topics: topics.iter().map(|t| t.to_string()).collect(),
        qos: 1,
        client_id: unique("src"),
        log_dir: log_dir.to_path_buf(),
        stream: "mqtt_in".into(),
        dedup_window,
        credentials: Default::default(),
    }
}

/// Publishes each `(topic, payload)` with QoS 1 to `port`, in order, and
/// returns once the broker has acknowledged all of them.
pub fn publish(port: u16, messages: &[(&str, &[u8])]) {
    let (client, mut connection) =
        Client::new(MqttOptions::new(unique("pub"), "127.0.0.1", port), 16);
    let owned: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    let publisher = client.clone();
    // Publishing blocks when the request queue is full: do it beside the
    // loop that drives the connection.
    let feeder = std::thread::spawn(move || {
        for (t, p) in owned {
            publisher
                .publish(t, QoS::AtLeastOnce, false, p)
                .expect("queue a publish");
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = 0;
    while acked < messages.len() {
        assert!(
            Instant::now() < deadline,
            "only {acked} of {} PUBACKs within 20 s",
            messages.len()
        );
        match connection.recv_timeout(Duration::from_millis(200)) {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => acked += 1,
            Ok(Err(e)) => panic!("publisher: {e}"),
            _ => {}
        }
    }
    feeder.join().unwrap();
    let _ = client.disconnect();
    let _ = connection.recv_timeout(Duration::from_millis(200));
}

/// Polls `source` until it ends, returning `(offset, payload)` of every
/// record (all in partition 0).
pub fn read_to_end(source: &mut dyn SourceConnector, limit: Duration) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + limit;
    let mut out = Received::default();
    let mut got = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no End within {limit:?}; got {} records",
            got.len()
        );
        out.clear();
        match source
            .poll(&mut out, 100, Duration::from_millis(200))
            .expect("poll")
        {
            Polled::Records => {
                for (r, p) in out.iter() {
                    assert_eq!(r.partition, 0);
                    got.push((r.offset, p.to_vec()));
                }
            }
            Polled::Idle => {}
            Polled::End => return got,
        }
    }
}

/// `(offset, payload)` pairs from `first` on.
pub fn numbered(first: u64, payloads: &[&[u8]]) -> Vec<(u64, Vec<u8>)> {
    payloads
        .iter()
        .enumerate()
        .map(|(i, p)| (first + i as u64, p.to_vec()))
        .collect()
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

/// A private Mosquitto with its own config and persistence directory.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts `mosquitto -c <conf>` on a free port; `extra` is appended to
    /// the config.
    pub fn start(extra: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n\
                 persistence true\n\
                 persistence_location {}/\n\
                 autosave_interval 1\n\
                 user root\n\
                 {extra}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            dir,
            conf,
            child: None,
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run mosquitto");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM (it saves its store on the way out)
    /// and waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status()
                .expect("run kill");
            assert!(status.success());
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                assert!(
                    Instant::now() < deadline,
                    "mosquitto did not stop within 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it again, same port and store.
    pub fn restart(&mut self) {
        self.spawn();
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
