//! Private brokers for the tests that take a broker away mid-run: a
//! `nats-server` with JetStream or a Mosquitto, on a free port with its own
//! store directory, killed (SIGKILL) or stopped (SIGTERM) and started again
//! on the same port and store. The machine's shared brokers stay untouched.
//!
//! Each broker's standard error goes to `<program>.log` in its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::free_port;
use crate::wait::wait_for;

/// How long a (re)started broker may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(15);
/// How long a broker may take to exit after SIGTERM.
const STOP_LIMIT: Duration = Duration::from_secs(10);

/// A broker process of the test's own, killed when dropped.
pub struct Broker {
    program: &'static str,
    args: Vec<String>,
    port: u16,
    dir: PathBuf,
    ready: Option<Box<dyn Fn(u16) -> bool>>,
    child: Option<Child>,
}

impl Broker {
    /// A `nats-server` with JetStream on a free loopback port, storing in
    /// `dir/store`; started and accepting connections.
    pub fn nats_server(dir: &Path) -> Broker {
        let port = free_port();
        let store = dir.join("store");
        let args = ["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]
            .iter()
            .map(|a| a.to_string())
            .chain([store.display().to_string()])
            .collect();
        Broker::start("nats-server", args, port, dir)
    }

    /// A Mosquitto on `port` without a store, configured by
    /// `dir/mosquitto.conf` with the listener and then `extra` (lines of
    /// mosquitto.conf); started and accepting connections.
    pub fn mosquitto(dir: &Path, port: u16, extra: &str) -> Broker {
        let conf = dir.join("mosquitto.conf");
        // `user root`: started as root (as on CI), mosquitto would switch to
        // its own user, which cannot write into this directory. Ignored
        // when not root.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nuser root\n{extra}\n"),
        )
        .expect("write mosquitto.conf");
        Broker::start(
            "mosquitto",
            vec!["-c".into(), conf.display().to_string()],
            port,
            dir,
        )
    }

    /// A Mosquitto as [`Broker::mosquitto`] that keeps its sessions and
    /// queued messages in `dir` (saved every second and on SIGTERM), so a
    /// restart finds them.
    pub fn mosquitto_persistent(dir: &Path, port: u16, extra: &str) -> Broker {
        let store = format!(
            "persistence true\npersistence_location {}/\nautosave_interval 1\n{extra}",
            dir.display()
        );
        Broker::mosquitto(dir, port, &store)
    }

    /// Starts `program ARGS`, which must listen on `port`, and waits until
    /// it accepts connections.
    pub fn start(program: &'static str, args: Vec<String>, port: u16, dir: &Path) -> Broker {
        let mut broker = Broker {
            program,
            args,
            port,
            dir: dir.to_path_buf(),
            ready: None,
            child: None,
        };
        broker.restart();
        broker
    }

    /// Makes every start, this one included, also wait until
    /// `probe(port)` holds: a broker may accept connections before it
    /// serves every request (JetStream, for one).
    pub fn ready_when(mut self, probe: impl Fn(u16) -> bool + 'static) -> Broker {
        self.ready = Some(Box::new(probe));
        self.wait_ready();
        self
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its directory: configuration, store and log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Kills it with SIGKILL: no goodbye to clients, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the broker");
            child.wait().expect("reap the broker");
        }
    }

    /// Stops it with SIGTERM (a broker saves its store on the way out) and
    /// waits for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM {}", self.program);
            let deadline = Instant::now() + STOP_LIMIT;
            while child.try_wait().expect("poll the broker").is_none() {
                assert!(
                    Instant::now() < deadline,
                    "{} did not stop within {STOP_LIMIT:?}",
                    self.program
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Starts it (again) with the same arguments, on the same port and
    /// store, and waits until it is ready.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.program);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("broker log file");
        let child = Command::new(self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {} (is it installed?): {e}", self.program));
        self.child = Some(child);
        self.wait_ready();
    }

    /// What it logged so far, over all its starts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.program))
    }

    fn wait_ready(&self) {
        let port = self.port;
        let what = format!("{} to serve on port {port}", self.program);
        wait_for(START_LIMIT, &what, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && self.ready.as_ref().is_none_or(|probe| probe(port))
        });
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
