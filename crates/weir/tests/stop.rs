//! `weir run` stopped by SIGTERM or SIGINT, and killed by SIGKILL, as
//! Kubernetes and a person at a terminal do it: a signal stops the run
//! gracefully (final checkpoint, output committed, dead letters synced,
//! exit 0), and a restart ends with exactly the output of an uninterrupted
//! run; dead letters are durable once a checkpoint covers their input.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{append, start, weir};
use weir_test_support::fraud;
use weir_test_support::pipelines::fraud_text_following_log;
use weir_test_support::process::Running;

/// Waits until `path` holds at least `n` lines.
fn wait_for_lines(path: &Path, n: usize, run: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while lines(path).len() < n {
        assert!(run.0.try_wait().expect("poll").is_none(), "exited early");
        assert!(Instant::now() < deadline, "no output in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Sends `signal` (`TERM`, `INT`) to the process.
fn signal(run: &Running, signal: &str) {
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(run.0.id().to_string())
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

/// Waits for the process to exit, at most `limit`; returns its exit code.
fn exit_code(run: &mut Running, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = run.0.try_wait().expect("poll") {
            return status.code();
        }
        assert!(Instant::now() < deadline, "did not exit within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Positions in a dead-letter file, in file order.
fn dead_letter_positions(path: &Path) -> Vec<u64> {
    lines(path)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("whole JSON line");
            v["position"].as_u64().expect("position")
        })
        .collect()
}

#[test]
fn sigterm_and_sigint_stop_gracefully_and_a_restart_finishes_exactly_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(256, 2, true),
    )
    .expect("write");
    let alerts = dir.path().join("out/alerts.jsonl");
    // A malformed record at offset 0: its dead letter must survive.
    append(dir.path(), 0, 40_000, &[]);
    append(dir.path(), 0, 0, &[b"{\"txn_id\": oops"]);

    for (round, sig) in ["TERM", "INT"].into_iter().enumerate() {
        let committed = lines(&alerts).len();
        let mut run = start(dir.path(), &[]);
        wait_for_lines(&alerts, committed + 30, &mut run);
        signal(&run, sig);
        let code = exit_code(&mut run, Duration::from_secs(20));
        let stderr = std::fs::read_to_string(dir.path().join("weir.stderr")).expect("stderr");
        assert_eq!(code, Some(0), "SIG{sig}: {stderr}");
        assert!(
            stderr.contains(&format!("SIG{sig}: stopping")),
            "SIG{sig}: {stderr}"
        );
        assert!(stderr.contains("stopped on request"), "SIG{sig}: {stderr}");
        // Nothing staged is left invisible: what was read is committed.
        assert!(
            !dir.path().join("out/alerts.jsonl.staging").exists()
                || std::fs::read_dir(dir.path().join("out/alerts.jsonl.staging"))
                    .expect("staging")
                    .next()
                    .is_none(),
            "SIG{sig}: staged output left behind"
        );
        append(
            dir.path(),
            40_000 + round * 10_000,
            50_000 + round * 10_000,
            &[],
        );
    }

    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    // Exactly the reference alerts of the 60,000 events, each once.
    let got = fraud::alerts_in_file(&alerts);
    fraud::assert_exact(&got, &fraud::reference(60_000), "after two stops");
    let malformed = 40_000; // the offset the malformed record got
    assert_eq!(
        dead_letter_positions(&dir.path().join("out/dead_letter.jsonl")),
        vec![malformed]
    );
}

#[test]
fn dead_letters_survive_a_kill_once_a_checkpoint_covers_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(256, 2, true),
    )
    .expect("write");
    let alerts = dir.path().join("out/alerts.jsonl");
    let dead = dir.path().join("out/dead_letter.jsonl");
    // Three malformed records, then events whose alerts are committed only
    // by a checkpoint that covers the malformed ones too.
    append(dir.path(), 0, 0, &[b"not json", b"{\"txn_id\":", b"[1,2]"]);
    append(dir.path(), 0, 30_000, &[]);

    let mut run = start(dir.path(), &[]);
    wait_for_lines(&alerts, 20, &mut run);
    run.0.kill().expect("SIGKILL");
    run.0.wait().expect("reaped");
    assert_eq!(dead_letter_positions(&dead), vec![0, 1, 2]);

    let out = weir(&["run", "pipeline.toml", "--drain"], dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dead_letter_positions(&dead), vec![0, 1, 2]);
    fraud::assert_exact(
        &fraud::alerts_in_file(&alerts),
        &fraud::reference(30_000),
        "after a kill",
    );
}
