//! Pipelines the tests run: the examples of `examples/fraud` with their
//! paths made to work from a test's own directory, the fraud example with
//! its source or sink swapped, and pieces of pipeline text several tests
//! write.

use std::path::{Path, PathBuf};

use weir_config::{CheckpointSettings, Pipeline, SinkKind, SourceKind};

use crate::repo_root;

/// The fraud example's source, as its text reads.
pub const FRAUD_FILE_SOURCE: &str =
    "type = \"file\"\npath = \"transactions.jsonl\"\nframing = \"lines\"";

/// The fraud example's sink, as its text reads.
pub const FRAUD_FILE_SINK: &str =
    "type = \"file\"\ninput = \"over_threshold\"\npath = \"out/alerts.jsonl\"";

/// The decode step's `fields` for fraud-v1 transactions (JSON or
/// Protobuf), as a pipeline file declares them.
pub const TRANSACTION_FIELDS: &str = r#"fields = [
  { name = "txn_id", type = "u64" },
  { name = "card_id", type = "u64" },
  { name = "merchant_id", type = "u32" },
  { name = "amount_cents", type = "i64" },
  { name = "country", type = "string" },
  { name = "ts", type = "i64" },
]"#;

/// `examples/fraud/<name>`.
pub fn example_path(name: &str) -> PathBuf {
    repo_root().join("examples/fraud").join(name)
}

/// The Protobuf schema of fraud-v1 transactions
/// (`examples/fraud/transaction.proto`).
pub fn transaction_proto() -> PathBuf {
    example_path("transaction.proto")
}

/// The text of `examples/fraud/<name>` with its model path made absolute,
/// so a copy works from any directory.
pub fn example_text(name: &str) -> String {
    let text = std::fs::read_to_string(example_path(name))
        .unwrap_or_else(|e| panic!("reading example {name}: {e}"));
    let model = example_path("model/fraud_lr.onnx");
    replace_once(
        &text,
        "path = \"model/fraud_lr.onnx\"",
        &format!("path = {:?}", model.display().to_string()),
    )
}

/// The fraud example's text ([`example_text`] of `pipeline.toml`).
pub fn fraud_text() -> String {
    example_text("pipeline.toml")
}

/// The fraud example on `shards` shards, following the log stream
/// `log/transactions` (it runs until stopped), with micro-batches of at
/// most `batch_rows` records and, when asked, checkpoints every 50 ms.
pub fn fraud_text_following_log(batch_rows: usize, shards: usize, checkpoint: bool) -> String {
    let text = replace_once(
        &fraud_text(),
        FRAUD_FILE_SOURCE,
        "type = \"log\"\npath = \"log\"\nstream = \"transactions\"\nfollow = true",
    );
    let text = replace_once(
        &text,
        "batch_rows = 4096",
        &format!("batch_rows = {batch_rows}\nshards = {shards}"),
    );
    if checkpoint {
        format!("{text}\n[checkpoint]\ndir = \"checkpoints\"\ninterval = \"50ms\"\n")
    } else {
        text
    }
}

/// `text` with `from` replaced by `to`; panics if `from` is not there, so
/// a changed example fails loudly instead of running unchanged.
pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the pipeline text");
    text.replacen(from, to, 1)
}

/// Loads `examples/fraud/<name>` with its file sinks and dead letters
/// writing into `dir`.
pub fn load_example(name: &str, dir: &Path) -> Pipeline {
    let mut p = weir_config::load(&example_path(name))
        .unwrap_or_else(|e| panic!("example {name} is not valid: {e}"));
    for s in &mut p.sinks {
        if let SinkKind::File { path, .. } = &mut s.kind {
            *path = dir.join(path.file_name().expect("file name"));
        }
    }
    p.dead_letter.path = dir.join("dead_letter.jsonl");
    p
}

/// The fraud example reading `source` and writing its alerts to `sink`,
/// dead letters in `dir`, with checkpoints every 100 ms in
/// `dir/checkpoints` when asked.
pub fn fraud_with(dir: &Path, source: SourceKind, sink: SinkKind, checkpoints: bool) -> Pipeline {
    let mut p = load_example("pipeline.toml", dir);
    p.source.kind = source;
    p.sinks[0].kind = sink;
    p.checkpoint = checkpoints.then(|| CheckpointSettings {
        dir: dir.join("checkpoints"),
        url: None,
        interval_ms: 100,
        keep: 3,
    });
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_texts_are_valid_pipelines() {
        let dir = tempfile::tempdir().expect("temp dir");
        for (what, text) in [
            ("fraud", fraud_text()),
            ("on the log", fraud_text_following_log(64, 2, true)),
            ("mqtt", example_text("pipeline-mqtt.toml")),
        ] {
            weir_config::parse(&text, dir.path())
                .unwrap_or_else(|problems| panic!("{what}: {problems:#?}"));
        }
        let p =
            weir_config::parse(&fraud_text_following_log(64, 2, true), dir.path()).expect("valid");
        assert_eq!(p.settings.batch_rows, 64);
        assert!(p.checkpoint.is_some());
        assert!(matches!(
            p.source.kind,
            SourceKind::Log { follow: true, .. }
        ));
    }

    #[test]
    #[should_panic(expected = "is not in the pipeline text")]
    fn a_replacement_that_does_not_apply_fails() {
        replace_once("a = 1", "b = 2", "b = 3");
    }
}
