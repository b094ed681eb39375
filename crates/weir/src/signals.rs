//! SIGTERM and SIGINT as a graceful stop.
//!
//! Kubernetes stops a pod with SIGTERM and a person with Ctrl-C (SIGINT).
//! The first of either asks the run to stop: the source stops reading, a
//! final checkpoint is taken, sinks and dead letters are committed, the
//! summary is printed and the process exits 0. If that takes longer than
//! the grace period, or a second signal comes, the process exits at once
//! (as a SIGKILL would end it: a restart resumes from the last checkpoint).

use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use weir_engine::Stop;

/// Watches for the signals while it lives.
pub struct StopOnSignal {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
}

/// Requests `stop` on the first SIGTERM or SIGINT; `command` names the
/// program in messages.
pub fn watch(stop: Stop, grace: Duration, command: &'static str) -> anyhow::Result<StopOnSignal> {
    watch_with(stop, grace, command, "final checkpoint and commit")
}

/// [`watch`], saying what stopping does with `doing`.
pub fn watch_with(
    stop: Stop,
    grace: Duration,
    command: &'static str,
    doing: &'static str,
) -> anyhow::Result<StopOnSignal> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .context("cannot install the SIGTERM and SIGINT handlers")?;
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("weir-signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if stop.requested() {
                    eprintln!("{command}: {name} again; exiting at once");
                    std::process::exit(128 + signal);
                }
                eprintln!(
                    "{command}: {name}: stopping ({doing}; a second signal exits at once)"
                );
                stop.request();
                let _ = std::thread::Builder::new()
                    .name("weir-stop-timeout".into())
                    .spawn(move || {
                        std::thread::sleep(grace);
                        eprintln!(
                            "{command}: did not stop within {:.1} s (--stop-timeout); exiting without finishing",
                            grace.as_secs_f64()
                        );
                        std::process::exit(1);
                    });
            }
        })
        .context("cannot start the signal thread")?;
    Ok(StopOnSignal {
        handle,
        thread: Some(thread),
    })
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
