//! Backends: what acts on a decision.
//!
//! - [`Keda`] is passive: KEDA reads the count over gRPC ([`crate::keda`])
//!   and Kubernetes starts and stops the pods; the backend only remembers
//!   the count.
//! - [`Local`] runs the workers on this machine, one `weir run` process
//!   (or any command) per worker, for real runs and tests without a
//!   cluster. Workers are numbered 0, 1, …; the command template's
//!   `{worker}` becomes the index (for a `--metrics-address` port, say).
//!   Scaling down stops the highest indices: SIGTERM (a graceful stop with
//!   a final checkpoint, for `weir run`), then SIGKILL after the grace
//!   period. A worker that exits on its own is reaped and started again at
//!   the next tick. [`Local::shutdown`] (on the scaler's SIGTERM or
//!   SIGINT, and on drop) stops every worker the same way, so none is left
//!   behind; on Linux each worker also gets SIGKILL should the scaler die
//!   without that chance (`PR_SET_PDEATHSIG`). Each worker runs in a
//!   process group of its own, so that a Ctrl-C meant for the scaler does
//!   not reach the workers as well: `weir run` takes a second signal as
//!   "exit at once", which would skip its final checkpoint.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_metrics::Counter;

/// Acts on decisions.
pub trait Backend: Send {
    /// Workers running (or, for a passive backend, last asked for).
    fn current(&self) -> usize;
    /// Runs `n` workers.
    fn scale_to(&mut self, n: usize) -> anyhow::Result<()>;
    /// Called each tick before observing: restarts what crashed.
    fn supervise(&mut self) {}
    /// Stops everything it started.
    fn shutdown(&mut self) {}
}

/// KEDA's backend: the count is served, Kubernetes acts on it.
#[derive(Debug, Default)]
pub struct Keda {
    desired: usize,
}

impl Keda {
    /// Starts from `initial` (the count assumed running before the first
    /// decision).
    pub fn new(initial: usize) -> Keda {
        Keda { desired: initial }
    }
}

impl Backend for Keda {
    fn current(&self) -> usize {
        self.desired
    }
    fn scale_to(&mut self, n: usize) -> anyhow::Result<()> {
        self.desired = n;
        Ok(())
    }
}

/// A command line with `{worker}` placeholders, split on whitespace (no
/// shell: no quoting, pipes or variables; wrap a shell script for those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    words: Vec<String>,
}

impl CommandTemplate {
    pub fn parse(text: &str) -> anyhow::Result<CommandTemplate> {
        let words: Vec<String> = text.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            anyhow::bail!("--local-command is empty: give the worker's command line, e.g. \"weir run pipeline.toml --metrics-address 127.0.0.1:947{{worker}}\"");
        }
        Ok(CommandTemplate { words })
    }

    /// The program and arguments of worker `index`.
    pub fn render(&self, index: usize) -> Vec<String> {
        let i = index.to_string();
        self.words
            .iter()
            .map(|w| w.replace("{worker}", &i))
            .collect()
    }
}

/// Workers as child processes of the scaler.
#[derive(Debug)]
pub struct Local {
    template: CommandTemplate,
    grace: Duration,
    /// Index = worker number.
    children: Vec<Child>,
    restarts: Arc<Counter>,
}

impl Local {
    /// A backend with no worker running yet; `grace` is the time from
    /// SIGTERM to SIGKILL.
    pub fn new(template: CommandTemplate, grace: Duration, restarts: Arc<Counter>) -> Local {
        Local {
            template,
            grace,
            children: Vec::new(),
            restarts,
        }
    }

    /// The process ids of the workers, by index.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    fn spawn(&self, index: usize) -> anyhow::Result<Child> {
        let argv = self.template.render(index);
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .env("WEIR_WORKER_INDEX", index.to_string())
            .stdin(Stdio::null());
        #[cfg(target_os = "linux")]
        // SAFETY: setpgid and prctl are async-signal-safe; nothing else
        // runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // A process group of its own: a Ctrl-C at the terminal (or
                // a signal to the scaler's group) reaches the scaler only,
                // which then stops the worker once, gracefully; a second
                // signal would make `weir run` exit at once.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| {
            anyhow::anyhow!("cannot start worker {index} ({}): {e}", argv.join(" "))
        })?;
        tracing::info!(
            worker = index,
            pid = child.id(),
            "scaler: started worker {index}: {}",
            argv.join(" ")
        );
        Ok(child)
    }

    /// SIGTERM to each, then SIGKILL to those still running after the
    /// grace period; every one reaped.
    fn stop(&self, mut children: Vec<(usize, Child)>) {
        for (i, c) in &children {
            tracing::info!(
                worker = *i,
                pid = c.id(),
                "scaler: stopping worker {i} (SIGTERM)"
            );
            signal(c, libc::SIGTERM);
        }
        let deadline = Instant::now() + self.grace;
        loop {
            children.retain_mut(|(i, c)| match c.try_wait() {
                Ok(Some(status)) => {
                    tracing::info!(worker = *i, "scaler: worker {i} stopped ({status})");
                    false
                }
                Ok(None) => true,
                Err(_) => false,
            });
            if children.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for (i, c) in &mut children {
            tracing::warn!(
                worker = *i,
                "scaler: worker {i} still running {:.1} s after SIGTERM; SIGKILL",
                self.grace.as_secs_f64()
            );
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a pid of our own unreaped child.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

impl Backend for Local {
    fn current(&self) -> usize {
        self.children.len()
    }

    fn scale_to(&mut self, n: usize) -> anyhow::Result<()> {
        if n < self.children.len() {
            let stopping: Vec<(usize, Child)> = self
                .children
                .drain(n..)
                .enumerate()
                .map(|(k, c)| (n + k, c))
                .collect();
            self.stop(stopping);
        }
        while self.children.len() < n {
            let child = self.spawn(self.children.len())?;
            self.children.push(child);
        }
        Ok(())
    }

    fn supervise(&mut self) {
        let exited: Vec<usize> = self
            .children
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| match c.try_wait() {
                Ok(Some(status)) => {
                    tracing::warn!(
                        worker = i,
                        "scaler: worker {i} exited on its own ({status}); starting it again"
                    );
                    Some(i)
                }
                _ => None,
            })
            .collect();
        for i in exited {
            self.restarts.add(1);
            match self.spawn(i) {
                Ok(c) => self.children[i] = c,
                Err(e) => tracing::error!("scaler: {e:#}"),
            }
        }
    }

    fn shutdown(&mut self) {
        let all: Vec<(usize, Child)> = self.children.drain(..).enumerate().collect();
        self.stop(all);
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_the_index_and_reject_empty() {
        let t = CommandTemplate::parse("weir run p.toml --metrics-address 127.0.0.1:95{worker}")
            .unwrap();
        assert_eq!(t.render(3)[4], "127.0.0.1:953");
        assert!(CommandTemplate::parse("  ").is_err());
    }
}
