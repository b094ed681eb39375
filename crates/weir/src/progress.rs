//! The one-line progress display of `weir run` on a terminal: records
//! read, rate, source lag and elapsed time, as an indicatif spinner with a
//! message. Off when standard error is not a terminal, so logs and pipes
//! stay clean; log lines are written while the line is hidden
//! ([`LogWriter`]), so none starts in the middle of it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use weir_engine::telemetry::Telemetry;

/// The progress line on screen, if any.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn shown() -> MutexGuard<'static, Option<ProgressBar>> {
    SHOWN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Standard error for log lines: hides a progress line while writing, so a
/// log line never starts in the middle of one (it is drawn again below).
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // Cloned out of the lock: the bar has its own, taken by `suspend`.
        let bar = shown().clone();
        let write = || std::io::stderr().lock().write_all(buf);
        match bar {
            Some(bar) => bar.suspend(write)?,
            None => write()?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Writes `line` to standard error as log lines are written: above the
/// progress line, if one is shown.
pub fn print_line(line: &str) {
    // One write, so the line is written whole while the progress line is
    // hidden.
    let _ = LogWriter.write_all(format!("{line}\n").as_bytes());
}

/// A running display; dropping it clears the line.
pub struct Progress {
    bar: ProgressBar,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Starts the display when standard error is a terminal. The line appears
/// after a second, then shows the rate over the last second.
pub fn start(telemetry: &Telemetry, pipeline: &weir_config::Pipeline) -> Option<Progress> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let records = telemetry.source_records(pipeline);
    let health = telemetry.health.clone();
    let style = ProgressStyle::with_template("{spinner} {msg}").ok()?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style);
    *shown() = Some(bar.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let shown_bar = bar.clone();
    let thread = std::thread::Builder::new()
        .name("weir-progress".into())
        .spawn(move || {
            let started = Instant::now();
            let mut last = (started, 0u64);
            let mut ticking = false;
            while !stopped.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now = Instant::now();
                if now.duration_since(last.0) < Duration::from_secs(1) {
                    continue;
                }
                let n = records.get();
                let rate =
                    n.saturating_sub(last.1) as f64 / now.duration_since(last.0).as_secs_f64();
                last = (now, n);
                shown_bar.set_message(status_line(
                    n,
                    rate,
                    health.lag(),
                    now.duration_since(started),
                ));
                if !ticking {
                    // Shown from the first update on, the spinner turning.
                    shown_bar.enable_steady_tick(Duration::from_millis(120));
                    ticking = true;
                }
            }
        });
    match thread {
        Ok(thread) => Some(Progress {
            bar,
            stop,
            thread: Some(thread),
        }),
        Err(_) => {
            *shown() = None;
            None
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        *shown() = None;
        self.bar.finish_and_clear();
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
