//! `weir dlq`: look at dead letters kept in a log stream, and send them
//! back through a pipeline once the cause is fixed.

use std::path::PathBuf;

use anyhow::{bail, Context};
use base64::Engine as _;
use weir_log::{Log, StreamConfig};

/// `weir dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Print dead-letter entries: offset, step, source position, reason and
    /// the original record.
    Inspect {
        /// Directory of the durable log.
        #[arg(long)]
        log_dir: PathBuf,
        /// The dead-letter stream.
        #[arg(long)]
        stream: String,
        /// First offset to show.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Append the original records of dead-letter entries to a stream
    /// (usually the one a fixed pipeline reads).
    Replay {
        /// Directory of the durable log.
        #[arg(long)]
        log_dir: PathBuf,
        /// The dead-letter stream.
        #[arg(long)]
        stream: String,
        /// The stream to append the records to.
        #[arg(long)]
        to: String,
        /// First dead-letter offset to replay.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

fn entries(
    log_dir: &PathBuf,
    stream: &str,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<(u64, serde_json::Value)>> {
    let log =
        Log::open(log_dir).with_context(|| format!("cannot open log {}", log_dir.display()))?;
    let s = log
        .stream(stream, StreamConfig::default())
        .with_context(|| format!("cannot open stream {stream}"))?;
    let p = s.partition(0);
    let from = from.max(p.first_offset());
    if from >= p.next_offset() {
        return Ok(Vec::new());
    }
    let records = p
        .read(from, limit)
        .with_context(|| format!("cannot read stream {stream} from offset {from}"))?;
    records
        .into_iter()
        .map(|(offset, bytes)| {
            serde_json::from_slice(&bytes)
                .map(|v| (offset, v))
                .with_context(|| format!("offset {offset} of {stream} is not a dead-letter entry"))
        })
        .collect()
}

/// The record an entry holds: the original bytes, or the decoded record
/// for records rejected after decoding.
fn original(entry: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
    if let Some(b64) = entry.get("bytes_base64").and_then(|v| v.as_str()) {
        return base64::engine::general_purpose::STANDARD
            .decode(b64)
            .context("bytes_base64 is not base64");
    }
    match entry.get("record") {
        Some(record) => Ok(serde_json::to_vec(record)?),
        None => bail!("entry has neither bytes_base64 nor record"),
    }
}

/// Runs a `weir dlq` subcommand.
pub fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Inspect {
            log_dir,
            stream,
            from,
            limit,
        } => {
            let list = entries(&log_dir, &stream, from, limit)?;
            if list.is_empty() {
                println!("no dead letters in {stream} from offset {from}");
            }
            for (offset, e) in list {
                let record = original(&e)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_else(|err| format!("<{err}>"));
                println!(
                    "offset {offset}  step {}  position {}\n  reason: {}\n  record: {}",
                    e.get("step").and_then(|v| v.as_str()).unwrap_or("?"),
                    e.get("position")
                        .map(|v| v.to_string())
                        .unwrap_or_else(|| "?".into()),
                    e.get("reason").and_then(|v| v.as_str()).unwrap_or("?"),
                    record
                );
            }
            Ok(())
        }
        DlqCommand::Replay {
            log_dir,
            stream,
            to,
            from,
        } => {
            let mut from = from;
            let log = Log::open(&log_dir)
                .with_context(|| format!("cannot open log {}", log_dir.display()))?;
            let target = log
                .stream(&to, StreamConfig::default())
                .with_context(|| format!("cannot open stream {to}"))?;
            let mut replayed = 0u64;
            loop {
                let batch = entries(&log_dir, &stream, from, 1000)?;
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                let records: Vec<Vec<u8>> = batch
                    .iter()
                    .map(|(_, e)| original(e))
                    .collect::<anyhow::Result<_>>()?;
                let slices: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
                target
                    .partition(0)
                    .append(&slices)
                    .with_context(|| format!("cannot append to {to}"))?;
                replayed += records.len() as u64;
                from = last + 1;
            }
            println!("replayed {replayed} dead letters from {stream} into {to}");
            Ok(())
        }
    }
}
