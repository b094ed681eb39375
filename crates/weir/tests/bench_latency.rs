//! `weir bench fraud-v1 --rate`: latency mode with its warm-up, with
//! checkpoints and with a discard sink; the alerts and checksum it prints
//! (counted by its sink probe) against the alerts file and the engine's
//! own count of what the sink wrote.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use common::weir;
use weir_test_support::pipelines::fraud_text;

/// A copy of the fraud example in a temp dir, so its output is this
/// test's own.
fn example() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("pipeline.toml"), fraud_text()).expect("write pipeline");
    dir
}

/// `weir bench fraud-v1 --pipeline pipeline.toml ARGS` in `dir`.
fn bench(dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["bench", "fraud-v1", "--pipeline", "pipeline.toml"];
    all.extend_from_slice(args);
    weir(&all, dir)
}

/// The closing `fraud-v1 mode=latency k=v ...` line as a map.
fn closing_line(out: &Output) -> HashMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let line = stdout.lines().last().expect("a closing line");
    assert!(line.starts_with("fraud-v1 mode=latency "), "{line}");
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn num(line: &HashMap<String, String>, key: &str) -> u64 {
    line.get(key)
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Records the engine says the sink `alerts` wrote (the run's summary on
/// standard error).
fn sink_records(out: &Output) -> u64 {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("sink alerts"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count for sink alerts in:\n{stderr}"))
}

/// Alerts and the sum of their txn_ids in a JSON-lines file.
fn alerts_in(path: &Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).expect("alerts file");
    let mut n = 0;
    let mut sum = 0u64;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
        n += 1;
        sum = sum.wrapping_add(v["txn_id"].as_u64().expect("txn_id"));
    }
    (n, sum)
}

/// What every latency run must show: all events fed, latencies measured
/// after the warm-up and in order, every record's creation known, and the
/// alerts the engine counted.
fn check_common(out: &Output, line: &HashMap<String, String>) {
    assert_eq!(num(line, "events"), 80_000, "{line:?}");
    assert_eq!(num(line, "warmup_s"), 2, "{line:?}");
    assert_eq!(num(line, "duration_s"), 4, "{line:?}");
    assert_eq!(num(line, "unmeasured"), 0, "{line:?}");
    let samples = num(line, "samples");
    let alerts = num(line, "alerts");
    assert!(
        samples > 0 && samples < alerts,
        "the warm-up's are left out: {line:?}"
    );
    let (p50, p99, p999, max) = (
        num(line, "p50_us"),
        num(line, "p99_us"),
        num(line, "p999_us"),
        num(line, "max_us"),
    );
    assert!(
        p50 > 0 && p50 <= p99 && p99 <= p999 && p999 <= max,
        "{line:?}"
    );
    assert_eq!(alerts, sink_records(out), "{line:?}");
}

#[test]
fn latency_with_the_pipeline_file_sink() {
    let dir = example();
    let out = bench(
        dir.path(),
        &["--rate", "20000", "--duration", "4", "--warmup", "2"],
    );
    let line = closing_line(&out);
    check_common(&out, &line);
    assert_eq!(line["sink"], "pipeline");
    assert!(!line.contains_key("checkpoints"), "{line:?}");
    let file = alerts_in(&dir.path().join("out/alerts.jsonl"));
    assert_eq!(file, (num(&line, "alerts"), num(&line, "checksum")));
}

#[test]
fn latency_with_checkpoints_and_a_discard_sink() {
    let dir = example();
    let out = bench(
        dir.path(),
        &[
            "--rate",
            "20000",
            "--duration",
            "4",
            "--warmup",
            "2",
            "--checkpoint-interval",
            "500",
            "--sink",
            "discard",
        ],
    );
    let line = closing_line(&out);
    check_common(&out, &line);
    assert_eq!(line["sink"], "discard");
    assert_eq!(num(&line, "checkpoint_interval_ms"), 500);
    assert!(num(&line, "checkpoints") >= 2, "{line:?}");
    assert!(num(&line, "checkpoint_last_bytes") > 0, "{line:?}");
    assert!(
        num(&line, "checkpoint_total_bytes") >= num(&line, "checkpoint_last_bytes"),
        "{line:?}"
    );
    let ms = |key: &str| -> f64 { line[key].parse().unwrap_or_else(|e| panic!("{key}: {e}")) };
    assert!(
        ms("checkpoint_median_ms") <= ms("checkpoint_max_ms"),
        "{line:?}"
    );
    // A stall is part of its checkpoint's duration (printed to 0.1 ms,
    // stalls to 0.01), and capturing a window's state takes some time.
    assert!(ms("checkpoint_max_stall_ms") > 0.0, "{line:?}");
    assert!(
        ms("checkpoint_stall_median_ms") <= ms("checkpoint_stall_p99_ms")
            && ms("checkpoint_stall_p99_ms") <= ms("checkpoint_max_stall_ms")
            && ms("checkpoint_max_stall_ms") <= ms("checkpoint_max_ms") + 0.05,
        "{line:?}"
    );
    // The alerts went to the discard sink, not to the file.
    assert!(!dir.path().join("out/alerts.jsonl").exists());
}

#[test]
fn latency_with_checkpoints_and_the_transactional_file_sink() {
    let dir = example();
    let out = bench(
        dir.path(),
        &[
            "--rate",
            "20000",
            "--duration",
            "4",
            "--warmup",
            "2",
            "--checkpoint-interval",
            "500",
        ],
    );
    let line = closing_line(&out);
    check_common(&out, &line);
    assert!(num(&line, "checkpoints") >= 2, "{line:?}");
    // After the final commit the file holds what the sink was handed.
    let file = alerts_in(&dir.path().join("out/alerts.jsonl"));
    assert_eq!(file, (num(&line, "alerts"), num(&line, "checksum")));
}

#[test]
fn a_warmup_as_long_as_the_run_is_refused() {
    let dir = example();
    for args in [
        &["--rate", "1000", "--duration", "3", "--warmup", "3"][..],
        // The default warm-up is one 60 s window.
        &["--rate", "1000", "--duration", "30"][..],
    ] {
        let out = bench(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr.contains("--warmup") && stderr.contains("must be shorter than --duration"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn latency_flags_need_latency_mode() {
    let dir = example();
    for flag in [
        &["--warmup", "1"][..],
        &["--checkpoint-interval", "100"][..],
        &["--sink", "discard"][..],
    ] {
        let mut args = vec!["--events", "1000"];
        args.extend_from_slice(flag);
        let out = bench(dir.path(), &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag:?}");
        assert!(stderr.contains("latency mode only"), "{flag:?}: {stderr}");
    }
}
