//! What the `weir` command checks in a pipeline before and when it runs:
//! `weir validate` finds a missing source file and a model whose inputs or
//! outputs do not match its step, each once, with the field and line;
//! `${VAR}` references are filled from the environment, an unset one named
//! with its line and no value ever printed; a checkpoint whose state means
//! something else (a changed aggregate) is refused at restore with both
//! fingerprints named and nothing touched.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// `weir ARGS` in `dir`, with these environment variables set.
fn weir(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .output()
        .expect("weir runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// 1-based line of the one line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} in {lines:?}:\n{text}");
    lines[0]
}

/// The fraud example with its model path made absolute.
fn fraud_pipeline() -> String {
    let text =
        std::fs::read_to_string(repo().join("examples/fraud/pipeline.toml")).expect("example");
    let model = repo().join("examples/fraud/model/fraud_lr.onnx");
    let needle = "path = \"model/fraud_lr.onnx\"";
    assert!(text.contains(needle));
    text.replace(needle, &format!("path = {:?}", model.display().to_string()))
}

/// `weir validate pipeline.toml` of `text` in `dir` fails with exactly one
/// problem, on the line of `needle`, at `field`, saying `message`.
fn assert_one_problem(dir: &Path, text: &str, needle: &str, field: &str, message: &str) {
    std::fs::write(dir.join("pipeline.toml"), text).expect("write");
    let out = weir(&["validate", "pipeline.toml"], dir, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{field}: accepted");
    assert!(err.contains("(1 problem)"), "{field}: {err}");
    let want = format!(
        "pipeline.toml:{}: {field}: {message}",
        line_of(text, needle)
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
}

#[test]
fn validate_checks_the_source_file_and_the_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = fraud_pipeline();
    // Relative paths resolve against the pipeline file's directory: here,
    // where weir runs.
    assert_one_problem(
        dir.path(),
        &good,
        "path = \"transactions.jsonl\"",
        "sources[0].path",
        "source file transactions.jsonl does not exist",
    );
    let input = dir.path().join("transactions.jsonl");

    std::fs::write(&input, "").expect("write");
    std::fs::write(dir.path().join("pipeline.toml"), &good).expect("write");
    let out = weir(&["validate", "pipeline.toml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The example model takes five features and yields one value per row.
    let model = repo().join("examples/fraud/model/fraud_lr.onnx");
    let four = good.replace(
        "inputs = [\"f_amount\", \"f_count\", \"f_sum\", \"f_max\", \"f_ratio\"]",
        "inputs = [\"f_amount\", \"f_count\", \"f_sum\", \"f_max\"]",
    );
    assert_one_problem(
        dir.path(),
        &four,
        "inputs = [\"f_amount\"",
        "steps[5].inputs",
        &format!(
            "model {} takes 5 features per row, the step names 4",
            model.display()
        ),
    );
    let two = good.replace("outputs = [\"score\"]", "outputs = [\"score\", \"other\"]");
    assert_one_problem(
        dir.path(),
        &two,
        "outputs = [\"score\"",
        "steps[5].outputs",
        &format!(
            "model {} produces 1 values per row, the step names 2 output columns",
            model.display()
        ),
    );
}

#[test]
fn variables_fill_the_pipeline_and_their_values_are_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("data")).expect("mkdir");
    std::fs::write(dir.path().join("data/transactions.jsonl"), "").expect("write");
    let text = fraud_pipeline().replace(
        "path = \"transactions.jsonl\"",
        "path = \"${WEIR_TEST_DATA}/transactions.jsonl\"",
    );
    std::fs::write(dir.path().join("pipeline.toml"), &text).expect("write");

    let out = weir(
        &["validate", "pipeline.toml"],
        dir.path(),
        &[("WEIR_TEST_DATA", "data")],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let out = weir(&["validate", "pipeline.toml"], dir.path(), &[]);
    let err = stderr(&out);
    assert!(!out.status.success());
    let want = format!(
        "pipeline.toml:{}: sources[0].path: environment variable WEIR_TEST_DATA is not set",
        line_of(&text, "${WEIR_TEST_DATA}")
    );
    assert!(err.contains(&want) && err.contains("(1 problem)"), "{err}");

    // A value that does not fit where it goes is reported by the variable's
    // name, never by its value.
    let secret = "correct-horse-battery-staple";
    let out = weir(
        &["validate", "pipeline.toml"],
        dir.path(),
        &[("WEIR_TEST_DATA", secret)],
    );
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(!err.contains(secret), "{err}");
    assert!(
        err.contains("source file ${WEIR_TEST_DATA}/transactions.jsonl does not exist"),
        "{err}"
    );
}

/// Per-card tumbling windows over a file, checkpointed: `total` is the
/// window's `function` of the amounts.
fn windows_pipeline(function: &str) -> String {
    format!(
        r#"name = "card-windows"

[settings]
batch_rows = 100

[checkpoint]
dir = "checkpoints"
interval = "1ms"

[dead_letter]
path = "out/dead_letter.jsonl"

[[sources]]
name = "events"
type = "file"
path = "events.jsonl"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
event_time = "ts"
fields = [
  {{ name = "card", type = "u64" }},
  {{ name = "amount_cents", type = "i64" }},
  {{ name = "ts", type = "i64" }},
]

[[steps]]
name = "by_card"
type = "key_by"
input = "decode"
key = "card"

[[steps]]
name = "per_second"
type = "window"
input = "by_card"
kind = "tumbling"
size = "1s"
aggregates = {{ n = "count(*)", total = "{function}(amount_cents)" }}

[[sinks]]
name = "windows"
type = "file"
input = "per_second"
path = "out/windows.jsonl"
"#
    )
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let bytes = std::fs::read(&p).expect("read");
                files.push((p, bytes));
            }
        }
    }
    files.sort();
    files
}

#[test]
fn a_changed_aggregate_is_refused_at_restore() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events: String = (0..20_000)
        .map(|i| {
            format!(
                "{{\"card\":{},\"amount_cents\":{},\"ts\":{}}}\n",
                i % 40,
                (i * 7919) % 10_000,
                i * 5
            )
        })
        .collect();
    std::fs::write(dir.path().join("events.jsonl"), events).expect("write");
    let sum = windows_pipeline("sum");
    std::fs::write(dir.path().join("pipeline.toml"), &sum).expect("write");
    let out = weir(&["run", "pipeline.toml"], dir.path(), &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let checkpoints = std::fs::read_dir(dir.path().join("checkpoints"))
        .expect("checkpoint dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".ckpt"))
        .count();
    assert!(checkpoints > 0, "no checkpoint was written");
    let before = snapshot(dir.path());

    // The same column name, another function: the saved sums mean nothing
    // to max.
    let max = windows_pipeline("max");
    std::fs::write(dir.path().join("pipeline.toml"), &max).expect("write");
    let out = weir(&["run", "pipeline.toml"], dir.path(), &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "the changed pipeline ran:\n{err}");
    let fingerprint = |text: &str| {
        weir_config::parse(text, dir.path())
            .expect("valid")
            .fingerprint()
    };
    let (old, new) = (fingerprint(&sum), fingerprint(&max));
    assert_ne!(old, new);
    assert!(err.contains("refusing to restore"), "{err}");
    assert!(
        err.contains(&old) && err.contains(&new),
        "{old} and {new} in:\n{err}"
    );

    // Nothing was touched: put the original pipeline file back and compare.
    std::fs::write(dir.path().join("pipeline.toml"), &sum).expect("write");
    assert!(before == snapshot(dir.path()), "files changed");
}
