//! `weir dlq`: look at dead letters kept in a log stream, and send them
//! back through a pipeline once the cause is fixed.
//!
//! The dead-letter stream is only read (through a `TailReader`, so a
//! pipeline may be writing it meanwhile). A replay appends to the target
//! stream as its one writer; while another process owns that stream (a
//! running `weir ingest`) the append is refused with that process named,
//! and `--via` sends the records through the server instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use weir_log::{Log, LogError, Stream, StreamConfig, TailReader};

use crate::ingest_client::{IngestClient, MAX_BODY_BYTES};

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
        /// Send the records through the `weir ingest` server that owns the
        /// target stream (its address, `http://HOST:PORT`) instead of
        /// appending to the log directly, which is refused while it runs.
        #[arg(long, value_name = "URL")]
        via: Option<String>,
        /// With --via: file holding the server's bearer token (else
        /// WEIR_INGEST_TOKEN, else no token).
        #[arg(long, value_name = "PATH", requires = "via")]
        token_file: Option<PathBuf>,
    },
}

/// Up to `limit` entries of the dead-letter stream from offset `from` (or
/// the first retained one) on.
fn entries(
    reader: &mut TailReader,
    stream: &str,
    from: u64,
    limit: usize,
) -> anyhow::Result<Vec<(u64, serde_json::Value)>> {
    let from = from.max(
        reader
            .first_offset()
            .with_context(|| format!("cannot read stream {stream}"))?,
    );
    let records = reader
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

/// Where replayed records go.
enum Target {
    /// Appended directly, this process being the stream's writer.
    Log(Arc<Stream>),
    /// Posted to the ingest server that owns the stream.
    Ingest(IngestClient),
}

impl Target {
    fn open(
        log_dir: &Path,
        to: &str,
        via: Option<String>,
        token_file: Option<PathBuf>,
    ) -> anyhow::Result<Target> {
        if let Some(url) = via {
            let token = match &token_file {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read token file {}", path.display()))?
                        .trim()
                        .to_string(),
                ),
                None => std::env::var("WEIR_INGEST_TOKEN").ok(),
            }
            .filter(|t| !t.is_empty());
            return Ok(Target::Ingest(IngestClient::new(&url, to, token)?));
        }
        let log =
            Log::open(log_dir).with_context(|| format!("cannot open log {}", log_dir.display()))?;
        match log.stream(to, StreamConfig::default()) {
            Ok(stream) => Ok(Target::Log(stream)),
            Err(e @ LogError::Locked { .. }) => Err(anyhow!(
                "cannot append to stream {to}: {e}\n  \
                 if that is `weir ingest`, replay through it: add --via http://ADDRESS \
                 (its --listen address) and, if it takes a token, --token-file PATH or \
                 WEIR_INGEST_TOKEN"
            )),
            Err(e) => Err(e).with_context(|| format!("cannot open stream {to}")),
        }
    }

    fn append(&self, records: &[&[u8]]) -> anyhow::Result<()> {
        match self {
            Target::Log(stream) => stream.partition(0).append(records).map(|_| ())?,
            Target::Ingest(client) => client.append(records).map(|_| ())?,
        }
        Ok(())
    }
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
            let mut reader = TailReader::new(&log_dir, &stream, 0);
            let list = entries(&mut reader, &stream, from, limit)?;
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
            via,
            token_file,
        } => {
            let target = Target::open(&log_dir, &to, via, token_file)?;
            // Up to the end the dead letters have now, so a replay into
            // the dead-letter stream itself ends.
            let mut reader = TailReader::new(&log_dir, &stream, 0);
            let end = reader
                .end_offset()
                .with_context(|| format!("cannot read stream {stream}"))?;
            let mut from = from;
            let mut replayed = 0u64;
            while from < end {
                let batch = entries(&mut reader, &stream, from, (end - from).min(1000) as usize)?;
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                let records: Vec<(u64, Vec<u8>)> = batch
                    .iter()
                    .map(|(offset, e)| {
                        original(e)
                            .map(|r| (*offset, r))
                            .with_context(|| format!("offset {offset} of {stream}"))
                    })
                    .collect::<anyhow::Result<_>>()?;
                for chunk in chunks(&records, MAX_BODY_BYTES) {
                    let slices: Vec<&[u8]> = chunk.iter().map(|(_, r)| r.as_slice()).collect();
                    target.append(&slices).with_context(|| {
                        format!(
                            "cannot append to {to} after {replayed} dead letters; \
                             resume with --from {}",
                            chunk[0].0
                        )
                    })?;
                    replayed += chunk.len() as u64;
                }
                from = last + 1;
            }
            println!("replayed {replayed} dead letters from {stream} into {to}");
            Ok(())
        }
    }
}

/// `records` cut into runs of at most `max_bytes` of records each (a
/// record larger than that alone).
fn chunks(records: &[(u64, Vec<u8>)], max_bytes: usize) -> Vec<&[(u64, Vec<u8>)]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, (_, r)) in records.iter().enumerate() {
        if i > start && bytes + r.len() > max_bytes {
            out.push(&records[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += r.len();
    }
    if start < records.len() {
        out.push(&records[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunks_by_bytes() {
        let r = |n: usize| (n as u64, vec![0u8; n]);
        let records = vec![r(4), r(4), r(3), r(10), r(1)];
        let sizes: Vec<Vec<u64>> = super::chunks(&records, 8)
            .iter()
            .map(|c| c.iter().map(|(o, _)| *o).collect())
            .collect();
        assert_eq!(sizes, vec![vec![4, 4], vec![3], vec![10], vec![1]]);
        assert!(super::chunks(&[], 8).is_empty());
    }
}
