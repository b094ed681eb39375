//! The one-line progress display of `weir run` on a terminal: records
//! read, rate, source lag and elapsed time, redrawn in place. Off when
//! standard error is not a terminal, so logs and pipes stay clean.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_engine::telemetry::Telemetry;

/// Whether a progress line is on screen: log lines clear it first.
static SHOWN: AtomicBool = AtomicBool::new(false);

/// Standard error for log lines: clears a progress line before writing,
/// so a log line never starts in the middle of one (the next tick redraws
/// it below).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if SHOWN.swap(false, Ordering::Relaxed) {
            err.write_all(b"\r\x1b[2K")?;
        }
        err.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// A running display; dropping it clears the line.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the display when standard error is a terminal.
pub fn start(telemetry: &Telemetry, pipeline: &weir_config::Pipeline) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let records = telemetry.source_records(pipeline);
    let health = telemetry.health.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("weir-progress".into())
        .spawn(move || {
            let started = Instant::now();
            let mut last = (started, 0u64);
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = Instant::now();
                if now.duration_since(last.0) < Duration::from_secs(1) {
                    continue;
                }
                let n = records.get();
                let rate = (n - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                let line = status_line(n, rate, health.lag(), now.duration_since(started));
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
                SHOWN.store(true, Ordering::Relaxed);
            }
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            SHOWN.store(false, Ordering::Relaxed);
        })
        .ok()?;
    Some(Progress {
        stop,
        thread: Some(thread),
    })
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `1,234,567 records  45.6k/s  lag 12  0:01:05`.
fn status_line(records: u64, rate: f64, lag: Option<u64>, elapsed: Duration) -> String {
    let lag = match lag {
        Some(l) => format!("  lag {}", crate::top::count(l as f64)),
        None => String::new(),
    };
    let s = elapsed.as_secs();
    format!(
        "weir run: {} records  {}/s{lag}  {}:{:02}:{:02}",
        crate::top::count(records as f64),
        compact(rate),
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// `45600.0` as `45.6k`.
fn compact(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_reads_well() {
        assert_eq!(
            status_line(1_234_567, 45_600.0, Some(12), Duration::from_secs(65)),
            "weir run: 1,234,567 records  45.6k/s  lag 12  0:01:05"
        );
        assert_eq!(
            status_line(999, 3.0, None, Duration::from_secs(3 * 3600 + 1)),
            "weir run: 999 records  3/s  3:00:01"
        );
        assert_eq!(compact(2_500_000.0), "2.50M");
    }
}
