//! `weir dlq` on dead-letter files and streams: a stream that does not
//! exist is an error, entries are picked by step and reason, a replay can
//! be limited and tried dry.

mod common;

use std::path::Path;

use common::weir;
use weir_test_support::fraud;
use weir_test_support::pipelines::fraud_text;

/// Runs the fraud example over 2,000 events and three malformed records
/// in `dir`; its dead letters are in `out/dead_letter.jsonl`.
fn run_with_rejects(dir: &Path) {
    std::fs::write(dir.join("pipeline.toml"), fraud_text()).expect("pipeline");
    let mut input = Vec::new();
    for (i, e) in fraud::events(2_000).into_iter().enumerate() {
        if i % 700 == 0 {
            input.extend_from_slice(format!("{{\"txn_id\": broken{i}\n").as_bytes());
        }
        input.extend_from_slice(&e);
        input.push(b'\n');
    }
    std::fs::write(dir.join("transactions.jsonl"), input).expect("input");
    let out = weir(&["run", "pipeline.toml"], dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stdout(args: &[&str], dir: &Path) -> String {
    let out = weir(args, dir);
    assert!(
        out.status.success(),
        "weir {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn stream_records(dir: &Path, stream: &str) -> Vec<Vec<u8>> {
    let mut reader = weir_log::TailReader::new(&dir.join("log"), stream, 0);
    let end = reader.end_offset().expect("end");
    reader
        .read(0, end as usize)
        .expect("read")
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

#[test]
fn inspecting_a_stream_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(dir.path().join("log/dead-letters")).expect("a stream dir");
    let out = weir(
        &[
            "dlq",
            "inspect",
            "--log-dir",
            "log",
            "--stream",
            "dead-leters",
        ],
        dir.path(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("there is no stream \"dead-leters\" in log (streams there: dead-letters)"),
        "{stderr}"
    );
    // Nothing was created by looking.
    assert!(!dir.path().join("log/dead-leters").exists());
}

#[test]
fn dead_letter_files_are_inspected_filtered_and_replayed() {
    let dir = tempfile::tempdir().expect("temp dir");
    run_with_rejects(dir.path());
    let file = ["--file", "out/dead_letter.jsonl"];

    let all = stdout(&[&["dlq", "inspect"][..], &file].concat(), dir.path());
    assert_eq!(all.matches("offset ").count(), 3, "{all}");
    for (line, i) in [(0, 0), (1, 700), (2, 1400)] {
        assert!(
            all.contains(&format!(
                "offset {line}  step decode  position {}",
                i + line
            )),
            "{all}"
        );
        assert!(
            all.contains(&format!("record: {{\"txn_id\": broken{i}")),
            "{all}"
        );
    }
    let none = stdout(
        &[&["dlq", "inspect"][..], &file, &["--reason", "late"]].concat(),
        dir.path(),
    );
    assert!(
        none.starts_with("no dead letters in the file from offset 0"),
        "{none}"
    );

    // A dry run appends nothing.
    let replay = [
        &["dlq", "replay", "--log-dir", "log", "--to", "transactions"][..],
        &file,
        &["--step", "decode", "--limit", "2"],
    ]
    .concat();
    let dry = stdout(&[&replay[..], &["--dry-run"]].concat(), dir.path());
    assert!(
        dry.ends_with("would replay 2 dead letters from the file into transactions\n"),
        "{dry}"
    );
    assert!(!dir.path().join("log/transactions").exists());

    let done = stdout(&replay, dir.path());
    assert_eq!(
        done,
        "replayed 2 dead letters from the file into transactions\n"
    );
    assert_eq!(
        stream_records(dir.path(), "transactions"),
        vec![
            b"{\"txn_id\": broken0".to_vec(),
            b"{\"txn_id\": broken700".to_vec()
        ]
    );

    // Filters that match nothing replay nothing, and say why.
    let other = stdout(
        &[
            &["dlq", "replay", "--log-dir", "log", "--to", "transactions"][..],
            &file,
            &["--step", "score"],
        ]
        .concat(),
        dir.path(),
    );
    assert_eq!(
        other,
        "replayed 0 dead letters from the file into transactions (3 left out by --step/--reason)\n"
    );
    assert_eq!(stream_records(dir.path(), "transactions").len(), 2);
}
