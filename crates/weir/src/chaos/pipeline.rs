//! The pipeline `weir chaos` runs: the fraud-v1 example's steps verbatim,
//! reading the log stream HTTP ingest appends to, in follow mode,
//! checkpointed, writing alerts to a transactional file sink.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::STREAM;

pub(super) fn example_dir() -> PathBuf {
    let local = Path::new("examples/fraud");
    if local.is_dir() {
        return local.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fraud")
}

/// A TOML basic string holding `path`.
fn toml_path(path: &Path) -> anyhow::Result<String> {
    let s = path
        .to_str()
        .with_context(|| format!("path {} is not UTF-8", path.display()))?;
    Ok(serde_json::to_string(s)?)
}

/// The example fraud-v1 pipeline with its header and steps verbatim (the
/// model path made absolute), reading the log stream in follow mode,
/// checkpointed, writing the alerts and dead letters into `work`.
pub(super) fn pipeline_text(
    example: &Path,
    work: &Path,
    log_dir: &Path,
    sink: &Path,
    interval_ms: u64,
) -> anyhow::Result<String> {
    let file = example.join("pipeline.toml");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read the example pipeline {}", file.display()))?;
    let example = example
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", example.display()))?;
    let find = |what: &str| {
        text.find(&format!("\n{what}\n"))
            .map(|i| i + 1)
            .with_context(|| format!("{} has no {what} section", file.display()))
    };
    let sources = find("[[sources]]")?;
    let steps = find("[[steps]]")?;
    let sinks = find("[[sinks]]")?;
    if !(sources < steps && steps < sinks) {
        bail!(
            "{}: expected the sections in the order sources, steps, sinks",
            file.display()
        );
    }
    let mut out = String::new();
    out.push_str("# Written by `weir chaos`: the fraud-v1 example reading a log stream.\n");
    // The header (name, settings) without the example's comments, which
    // describe the file-based example.
    for line in text[..sources].lines() {
        if !line.trim_start().starts_with('#') {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!(
        "[checkpoint]\ndir = {}\ninterval = \"{interval_ms}ms\"\nkeep = 3\n\n",
        toml_path(&work.join("checkpoints"))?
    ));
    out.push_str(&format!(
        "[[sources]]\nname = \"transactions\"\ntype = \"log\"\npath = {}\nstream = \"{STREAM}\"\nfollow = true\n\n",
        toml_path(log_dir)?
    ));
    for line in text[steps..sinks].lines() {
        let relative = line
            .trim_start()
            .strip_prefix("path")
            .and_then(|r| r.trim_start().strip_prefix('='))
            .map(str::trim)
            .and_then(|v| v.strip_prefix('"'))
            .and_then(|v| v.strip_suffix('"'))
            .filter(|v| !Path::new(v).is_absolute());
        match relative {
            Some(p) => {
                let abs = example.join(p);
                out.push_str(&format!("path = {}\n", toml_path(&abs)?));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out.push_str(&format!(
        "[[sinks]]\nname = \"alerts\"\ntype = \"file\"\ninput = \"over_threshold\"\npath = {}\n\
         columns = [\"txn_id\", \"card_id\", \"score\"]\n\n[dead_letter]\npath = {}\n",
        toml_path(sink)?,
        toml_path(&work.join("out").join("dead_letter.jsonl"))?
    ));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_is_the_example_on_a_log() {
        let work = Path::new("/tmp/w");
        let text = pipeline_text(
            &example_dir(),
            work,
            &work.join("log"),
            &work.join("out/alerts.jsonl"),
            200,
        )
        .unwrap();
        assert!(text.contains("follow = true"));
        assert!(text.contains("interval = \"200ms\""));
        assert!(text.contains("where = \"score > 0.9\""));
        assert!(text.contains("fraud_lr.onnx\"\n"));
        assert!(!text.contains("path = \"model/"));
        assert!(!text.contains("transactions.jsonl"));
    }
}
