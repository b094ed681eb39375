//! The local backend for real: worker processes started, counted, stopped
//! with SIGTERM first (SIGKILL only after the grace period), restarted when
//! they crash, and none left running when the backend shuts down.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_scaler::backend::{Backend, CommandTemplate, Local};

/// A worker script: writes its pid, and on SIGTERM writes `term-N` and
/// exits (or, with `stubborn`, ignores SIGTERM).
fn script(dir: &Path, stubborn: bool) -> String {
    let on_term = if stubborn {
        format!("trap 'echo term > {}/term-$1' TERM", dir.display())
    } else {
        format!("trap 'echo term > {}/term-$1; exit 0' TERM", dir.display())
    };
    let path = dir.join(if stubborn { "stubborn.sh" } else { "worker.sh" });
    std::fs::write(
        &path,
        format!(
            "{on_term}\necho $$ > {dir}/pid-$1\nwhile true; do sleep 0.05; done\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    format!("sh {} {{worker}}", path.display())
}

fn alive(pid: u32) -> bool {
    // A zombie counts as gone: /proc/PID/stat's state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn wait(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn workers_start_stop_with_sigterm_first_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let restarts = Arc::new(weir_metrics::Counter::default());
    let mut b = Local::new(
        CommandTemplate::parse(&script(dir.path(), false)).unwrap(),
        Duration::from_secs(5),
        restarts.clone(),
    );
    b.scale_to(3).unwrap();
    assert_eq!(b.current(), 3);
    let pids = b.pids();
    assert!(pids.iter().all(|&p| alive(p)));
    for i in 0..3 {
        wait("the pid files", || {
            dir.path().join(format!("pid-{i}")).exists()
        });
    }
    // Down to 1: workers 1 and 2 get SIGTERM (they say so) and are reaped.
    b.scale_to(1).unwrap();
    assert_eq!(b.current(), 1);
    assert!(dir.path().join("term-1").exists() && dir.path().join("term-2").exists());
    assert!(!dir.path().join("term-0").exists());
    assert!(!alive(pids[1]) && !alive(pids[2]));
    assert!(alive(pids[0]));
    // Worker 0 crashes: the next tick starts it again.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    wait("the crash", || {
        std::fs::read_to_string(format!("/proc/{}/stat", pids[0]))
            .map(|s| s.contains(") Z"))
            .unwrap_or(true)
    });
    b.supervise();
    assert_eq!(restarts.get(), 1);
    let again = b.pids()[0];
    assert_ne!(again, pids[0]);
    assert!(alive(again));
    // (Its trap is set once it has written its pid.)
    wait("the new pid file", || {
        std::fs::read_to_string(dir.path().join("pid-0"))
            .is_ok_and(|p| p.trim() == again.to_string())
    });
    // Shutting down stops every worker.
    b.shutdown();
    assert_eq!(b.current(), 0);
    assert!(!alive(again));
    assert!(dir.path().join("term-0").exists());
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Local::new(
        CommandTemplate::parse(&script(dir.path(), true)).unwrap(),
        Duration::from_millis(400),
        Arc::new(weir_metrics::Counter::default()),
    );
    b.scale_to(1).unwrap();
    let pid = b.pids()[0];
    wait("the pid file", || dir.path().join("pid-0").exists());
    let t = Instant::now();
    b.scale_to(0).unwrap();
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(dir.path().join("term-0").exists(), "SIGTERM came first");
    assert!(!alive(pid));
}

#[test]
fn dropping_the_backend_leaves_no_worker() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Local::new(
        CommandTemplate::parse(&script(dir.path(), false)).unwrap(),
        Duration::from_secs(5),
        Arc::new(weir_metrics::Counter::default()),
    );
    b.scale_to(2).unwrap();
    let pids = b.pids();
    drop(b);
    assert!(pids.iter().all(|&p| !alive(p)));
}
