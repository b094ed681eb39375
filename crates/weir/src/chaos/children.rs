//! The processes `weir chaos` runs: `weir ingest` on a free port, and
//! `weir run` children whose standard error is kept (a file, a tail for
//! error messages) and watched for the line that says the first record was
//! processed, which times recovery.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{lock, Shared, STREAM};

/// The line `weir run` prints to standard error once it processed a record.
const FIRST_RECORD: &str = "weir run: first record processed";
/// Lines of a child's standard error kept for error messages.
const TAIL_LINES: usize = 40;

/// A `weir run` child whose standard error a thread reads (so it never
/// blocks on a full pipe) into a file, a tail and the first-record signal.
pub(super) struct RunChild {
    pub(super) child: Child,
    /// When the first-record line came, and the line.
    pub(super) ready: mpsc::Receiver<(Instant, String)>,
    tail: Arc<Mutex<VecDeque<String>>>,
    _reader: JoinHandle<()>,
}

impl RunChild {
    pub(super) fn spawn(
        exe: &Path,
        pipeline: &Path,
        shards: Option<usize>,
        drain: bool,
        log: &Path,
    ) -> anyhow::Result<RunChild> {
        let mut cmd = Command::new(exe);
        cmd.arg("run").arg(pipeline);
        if let Some(s) = shards {
            cmd.arg("--shards").arg(s.to_string());
        }
        if drain {
            cmd.arg("--drain");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start weir run")?;
        let stderr = child.stderr.take().expect("piped stderr");
        let file = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, ready) = mpsc::channel();
        let reader = {
            let tail = tail.clone();
            std::thread::Builder::new()
                .name("weir-chaos-stderr".into())
                .spawn(move || read_stderr(stderr, file, &tail, &tx))?
        };
        Ok(RunChild {
            child,
            ready,
            tail,
            _reader: reader,
        })
    }

    pub(super) fn tail(&self) -> String {
        let mut s = String::new();
        for l in lock(&self.tail).iter() {
            s.push_str("  | ");
            s.push_str(l);
            s.push('\n');
        }
        if s.is_empty() {
            s.push_str("  (nothing)\n");
        }
        s
    }
}

fn read_stderr(
    stderr: std::process::ChildStderr,
    mut file: File,
    tail: &Mutex<VecDeque<String>>,
    ready: &mpsc::Sender<(Instant, String)>,
) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    let mut signalled = false;
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let now = Instant::now();
        let _ = file.write_all(&line);
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if !signalled && text.starts_with(FIRST_RECORD) {
            signalled = true;
            let _ = ready.send((now, text.clone()));
        }
        let mut t = lock(tail);
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(text);
    }
}

/// Waits for the run's first-record line; fails if it exits first, the
/// producer fails or the deadline passes.
pub(super) fn wait_first_record(
    run: &mut RunChild,
    shared: &Shared,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<(Instant, String)> {
    loop {
        match run.ready.recv_timeout(Duration::from_millis(20)) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Standard error closed without the line: the process ended.
                let status = wait_exit(&mut run.child, deadline, what)?;
                bail!(
                    "{what}: weir run exited ({status}) before processing a record; its standard error ends with:\n{}",
                    run.tail()
                );
            }
        }
        shared.check()?;
        if Instant::now() >= deadline {
            bail!("{what}: deadline passed before weir run processed a record");
        }
    }
}

/// Waits for a child to exit, killing it at the deadline.
pub(super) fn wait_exit(
    child: &mut Child,
    deadline: Instant,
    what: &str,
) -> anyhow::Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: deadline passed before it exited");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts `weir ingest` on `port` (when given and free) or a free port;
/// retries on other ports when it fails to start (another process may take
/// a released port).
pub(super) fn start_ingest(
    exe: &Path,
    work: &Path,
    log_dir: &Path,
    deadline: Instant,
    port: Option<u16>,
) -> anyhow::Result<(Child, u16)> {
    static STARTS: AtomicU32 = AtomicU32::new(0);
    let mut last = String::new();
    for attempt in 1..=5 {
        let port = match port {
            Some(p) if attempt == 1 => p,
            _ => TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(),
        };
        let n = STARTS.fetch_add(1, Ordering::SeqCst) + 1;
        let log = work.join("stderr").join(format!("ingest-{n}.stderr"));
        let file =
            File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = Command::new(exe)
            .arg("ingest")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--log-dir")
            .arg(log_dir)
            .args(["--stream", STREAM, "--fsync", "always"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .context("cannot start weir ingest")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                last = format!(
                    "weir ingest exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default().trim()
                );
                break;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok((child, port));
            }
            if Instant::now() >= deadline || started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("weir ingest did not start listening on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    bail!("weir ingest failed to start 5 times; last: {last}")
}

/// `weir run: first record processed (restored checkpoint 12)` → `restored
/// checkpoint 12`.
pub(super) fn detail(line: &str) -> &str {
    let rest = line.strip_prefix(FIRST_RECORD).unwrap_or(line).trim();
    rest.strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_is_what_the_first_record_line_says_in_brackets() {
        assert_eq!(
            detail("weir run: first record processed (restored checkpoint 12)"),
            "restored checkpoint 12"
        );
        assert_eq!(
            detail("weir run: first record processed (no checkpoint)"),
            "no checkpoint"
        );
        assert_eq!(detail("other"), "other");
    }
}
