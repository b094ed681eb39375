//! `weir dlq`: look at dead letters kept in a log stream, and send them
//! back through a pipeline once the cause is fixed.
//!
//! Dead letters are read from a stream of the log or from a dead-letter
//! file, and can be picked by step and reason. The dead-letter stream is
//! only read (through a `TailReader`, so a
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

/// Where dead letters are read from: a stream of the log or a file.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false, id = "dead_letters")]
pub struct From {
    /// The dead-letter stream (in --log-dir).
    #[arg(long, requires = "log_dir")]
    stream: Option<String>,
    /// A dead-letter file (JSON lines, the `[dead_letter] path` of a
    /// pipeline); an entry's offset is its line number, from 0.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

/// Which entries to take.
#[derive(Debug, clap::Args)]
pub struct Filter {
    /// First offset to look at.
    #[arg(long, default_value_t = 0)]
    from: u64,
    /// Only entries rejected by this step.
    #[arg(long)]
    step: Option<String>,
    /// Only entries whose reason contains this text (any case), such as
    /// `late` or `malformed`.
    #[arg(long)]
    reason: Option<String>,
}

impl Filter {
    fn matches(&self, entry: &serde_json::Value) -> bool {
        let field = |name: &str| entry.get(name).and_then(|v| v.as_str()).unwrap_or("");
        self.step.as_deref().is_none_or(|s| field("step") == s)
            && self
                .reason
                .as_deref()
                .is_none_or(|r| field("reason").to_lowercase().contains(&r.to_lowercase()))
    }
}

/// `weir dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// Print dead-letter entries: offset, step, source position, reason and
    /// the original record.
    Inspect {
        /// Directory of the durable log (with --stream).
        #[arg(long)]
        log_dir: Option<PathBuf>,
        #[command(flatten)]
        source: From,
        #[command(flatten)]
        filter: Filter,
        /// Most entries to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Append the original records of dead-letter entries to a stream
    /// (usually the one a fixed pipeline reads).
    Replay {
        /// Directory of the durable log: of the dead-letter stream and, unless
        /// --via, of the stream replayed into.
        #[arg(long)]
        log_dir: Option<PathBuf>,
        #[command(flatten)]
        source: From,
        /// The stream to append the records to.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        filter: Filter,
        /// Replay at most this many entries.
        #[arg(long)]
        limit: Option<u64>,
        /// Print what would be replayed and append nothing.
        #[arg(long)]
        dry_run: bool,
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

/// Dead-letter entries, from a stream or a file.
enum DeadLetters {
    Stream {
        reader: TailReader,
        name: String,
    },
    /// A file's entries by line, read at once.
    File {
        entries: Vec<(u64, serde_json::Value)>,
    },
}

impl DeadLetters {
    fn open(log_dir: Option<&Path>, from: &From) -> anyhow::Result<DeadLetters> {
        if let Some(path) = &from.file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read dead-letter file {}", path.display()))?;
            let entries = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l)
                        .map(|v| (i as u64, v))
                        .with_context(|| {
                            format!(
                                "line {} of {} is not a dead-letter entry",
                                i + 1,
                                path.display()
                            )
                        })
                })
                .collect::<anyhow::Result<_>>()?;
            return Ok(DeadLetters::File { entries });
        }
        let (Some(dir), Some(name)) = (log_dir, &from.stream) else {
            bail!("give --file PATH, or --log-dir DIR and --stream NAME");
        };
        if !dir.join(name).is_dir() {
            let mut streams: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            streams.sort();
            bail!(
                "there is no stream {name:?} in {} (streams there: {})",
                dir.display(),
                if streams.is_empty() {
                    "none".to_string()
                } else {
                    streams.join(", ")
                }
            );
        }
        Ok(DeadLetters::Stream {
            reader: TailReader::new(dir, name, 0),
            name: name.clone(),
        })
    }

    /// What to call it in messages.
    fn name(&self) -> String {
        match self {
            DeadLetters::Stream { name, .. } => format!("stream {name}"),
            DeadLetters::File { .. } => "the file".to_string(),
        }
    }

    /// The offset after the last entry now.
    fn end(&mut self) -> anyhow::Result<u64> {
        match self {
            DeadLetters::Stream { reader, name } => reader
                .end_offset()
                .with_context(|| format!("cannot read stream {name}")),
            DeadLetters::File { entries } => Ok(entries.last().map_or(0, |(o, _)| o + 1)),
        }
    }

    /// Up to `limit` entries from offset `from` (or the first retained
    /// one) on.
    fn read(&mut self, from: u64, limit: usize) -> anyhow::Result<Vec<(u64, serde_json::Value)>> {
        match self {
            DeadLetters::Stream { reader, name } => entries(reader, name, from, limit),
            DeadLetters::File { entries } => Ok(entries
                .iter()
                .filter(|(o, _)| *o >= from)
                .take(limit)
                .cloned()
                .collect()),
        }
    }
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

    /// Appends `records`; whether they had been stored before (through a
    /// server that recognised the batch).
    fn append(&self, records: &[&[u8]]) -> anyhow::Result<bool> {
        Ok(match self {
            Target::Log(stream) => {
                stream.partition(0).append(records)?;
                false
            }
            Target::Ingest(client) => client.append(records)?.1,
        })
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

/// One line per entry, as `inspect` and a dry run print it.
fn describe(offset: u64, e: &serde_json::Value) -> String {
    let record = original(e)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_else(|err| format!("<{err}>"));
    format!(
        "offset {offset}  step {}  position {}\n  reason: {}\n  record: {}",
        e.get("step").and_then(|v| v.as_str()).unwrap_or("?"),
        e.get("position")
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into()),
        e.get("reason").and_then(|v| v.as_str()).unwrap_or("?"),
        record
    )
}

/// Runs a `weir dlq` subcommand.
pub fn run(command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Inspect {
            log_dir,
            source,
            filter,
            limit,
        } => {
            let mut dead = DeadLetters::open(log_dir.as_deref(), &source)?;
            let end = dead.end()?;
            let mut shown = 0;
            let mut from = filter.from;
            while from < end && shown < limit {
                let batch = dead.read(from, 1000)?;
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                for (offset, e) in batch.iter().filter(|(_, e)| filter.matches(e)) {
                    if shown == limit {
                        break;
                    }
                    println!("{}", describe(*offset, e));
                    shown += 1;
                }
                from = last + 1;
            }
            if shown == 0 {
                println!(
                    "no dead letters in {} from offset {} that match",
                    dead.name(),
                    filter.from
                );
            }
            Ok(())
        }
        DlqCommand::Replay {
            log_dir,
            source,
            to,
            filter,
            limit,
            dry_run,
            via,
            token_file,
        } => {
            let mut dead = DeadLetters::open(log_dir.as_deref(), &source)?;
            let target = if dry_run {
                None
            } else {
                let Some(dir) = log_dir.as_deref().or(via.as_ref().map(|_| Path::new(""))) else {
                    bail!("give --log-dir DIR (the log holding stream {to}) or --via URL");
                };
                Some(Target::open(dir, &to, via, token_file)?)
            };
            let name = dead.name();
            // Up to the end the dead letters have now, so a replay into
            // the dead-letter stream itself ends.
            let end = dead.end()?;
            let limit = limit.unwrap_or(u64::MAX);
            let mut from = filter.from;
            let (mut replayed, mut skipped, mut already) = (0u64, 0u64, 0u64);
            while from < end && replayed < limit {
                let batch = dead.read(from, (end - from).min(1000) as usize)?;
                let Some(&(last, _)) = batch.last() else {
                    break;
                };
                let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
                for (offset, e) in &batch {
                    if !filter.matches(e) {
                        skipped += 1;
                        continue;
                    }
                    if replayed + records.len() as u64 == limit {
                        break;
                    }
                    if dry_run {
                        println!("{}", describe(*offset, e));
                    }
                    let record =
                        original(e).with_context(|| format!("offset {offset} of {name}"))?;
                    records.push((*offset, record));
                }
                match &target {
                    None => replayed += records.len() as u64,
                    Some(target) => {
                        for chunk in chunks(&records, MAX_BODY_BYTES) {
                            let slices: Vec<&[u8]> =
                                chunk.iter().map(|(_, r)| r.as_slice()).collect();
                            let before = target.append(&slices).with_context(|| {
                                format!(
                                    "cannot append to {to} after {replayed} dead letters; \
                                     resume with --from {}",
                                    chunk[0].0
                                )
                            })?;
                            if before {
                                already += chunk.len() as u64;
                            }
                            replayed += chunk.len() as u64;
                        }
                    }
                }
                from = last + 1;
            }
            let mut skipped = match skipped {
                0 => String::new(),
                n => format!(" ({n} left out by --step/--reason)"),
            };
            if already > 0 {
                skipped.push_str(&format!(
                    " ({already} already stored by an earlier replay, not stored again)"
                ));
            }
            if dry_run {
                println!("would replay {replayed} dead letters from {name} into {to}{skipped}");
            } else {
                println!("replayed {replayed} dead letters from {name} into {to}{skipped}");
            }
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
