//! `weir scaler` as a user meets it: flags checked with clear errors, the
//! simulation of the committed trace, and the local backend leaving no
//! worker behind when the scaler gets SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{weir, WEIR};
use weir_test_support::net::free_port;
use weir_test_support::repo_root;
use weir_test_support::wait::wait_for;

#[test]
fn bad_flags_are_named() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            vec!["scaler", "--target-utilization", "2"],
            "--target-utilization",
        ),
        (
            vec!["scaler", "--min-workers", "5", "--max-workers", "2"],
            "--min-workers",
        ),
        (vec!["scaler", "--backend", "local"], "--local-command"),
        (vec!["scaler", "--drain-time", "soon"], "not a duration"),
        (
            vec!["scaler", "--workers-metrics", "nohost"],
            "--workers-metrics",
        ),
        (
            vec![
                "scaler",
                "simulate",
                "--trace",
                "missing.csv",
                "--capacity-per-worker",
                "1",
            ],
            "missing.csv",
        ),
    ] {
        let out = weir(&args, dir.path());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let help = weir(&["scaler", "--help"], dir.path());
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--workers-metrics",
        "--backend",
        "--local-command",
        "--min-workers",
        "--max-workers",
        "--target-utilization",
        "--drain-time",
        "--startup-time",
        "--interval",
    ] {
        assert!(
            text.contains(flag),
            "{flag} missing from weir scaler --help"
        );
    }
}

#[test]
fn simulate_prints_both_policies() {
    let dir = tempfile::tempdir().unwrap();
    let trace = repo_root().join("benchmarks/traces/spike-200k-1200k.csv");
    let timeline = dir.path().join("timeline.csv");
    let out = weir(
        &[
            "scaler",
            "simulate",
            "--trace",
            trace.to_str().unwrap(),
            "--capacity-per-worker",
            "100000",
            "--startup-time",
            "20s",
            "--cost-per-worker-second",
            "0.0001",
            "--max-workers",
            "32",
            "--timeline",
            timeline.to_str().unwrap(),
        ],
        dir.path(),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("autoscaler cost vs static"), "{text}");
    assert_eq!(
        std::fs::read_to_string(&timeline).unwrap().lines().count(),
        3_601
    );
}

/// The children of `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.get(1).and_then(|f| f.parse::<u32>().ok()) == Some(pid) && fields[0] != "Z" {
                out.push(p);
            }
        }
    }
    out
}

/// The scaler and its workers get a SIGTERM to the scaler's process group
/// (as a Ctrl-C at a terminal sends SIGINT to the foreground group): each
/// worker must be stopped once, by the scaler, and none outlive it.
#[test]
fn sigterm_stops_the_local_workers_once_and_leaves_none() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("worker.sh");
    std::fs::write(
        &script,
        format!(
            "trap 'echo term >> {d}/term-$1; exit 0' TERM\necho $$ > {d}/pid-$1\nwhile true; do sleep 0.05; done\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let command = format!("sh {} {{worker}}", script.display());
    let mut child = Command::new(WEIR)
        .args([
            "scaler",
            "--listen",
            &listen,
            "--backend",
            "local",
            "--local-command",
            &command,
            "--min-workers",
            "2",
            "--interval",
            "200ms",
            "--stop-grace",
            "5s",
        ])
        .current_dir(dir.path())
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for(Duration::from_secs(20), "two local workers", || {
        (0..2).all(|i| dir.path().join(format!("pid-{i}")).exists())
    });
    let workers = children(pid);
    assert_eq!(workers.len(), 2, "{workers:?}");
    // Each worker in a process group of its own, apart from the scaler's.
    for w in &workers {
        let stat = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap();
        let pgrp: u32 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(
            pgrp, *w,
            "worker {w} shares process group {pgrp} (scaler {pid})"
        );
    }
    // The whole group, as a terminal would.
    let kill = Command::new("kill")
        .args(["-TERM", "--", &format!("-{pid}")])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for i in 0..2 {
        let terms = std::fs::read_to_string(dir.path().join(format!("term-{i}"))).unwrap();
        assert_eq!(terms.lines().count(), 1, "worker {i} got {terms:?}");
    }
    for w in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{w}")).exists()
                || std::fs::read_to_string(format!("/proc/{w}/stat"))
                    .is_ok_and(|s| s.contains(") Z")),
            "worker {w} outlived the scaler"
        );
    }
}
