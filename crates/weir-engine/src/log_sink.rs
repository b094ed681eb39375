//! The log sink: output records appended to a stream of the durable log,
//! idempotent under checkpoints.
//!
//! Records are appended as they arrive (no staging), one JSON record per
//! output record, ending with its `_id`. The sink's part of checkpoint `n`
//! is the offset from which the stream may hold records a replay from `n`
//! produces again: the first offset appended for a later epoch (records of
//! epoch `n + 1` from a producer whose barrier came early are appended
//! before the others' barriers arrive), else the next offset. On restart
//! the sink reads the records from there on and remembers their ids; the
//! replay produces the same records with the same ids, and those are not
//! appended again. Without a checkpoint the whole stream is read. Memory grows with the records
//! written after the restored checkpoint, one `u64` each.

use std::collections::HashSet;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, UInt64Array};

use crate::state::{StateReader, StateWriter};
use crate::EngineError;

/// An open log sink.
pub struct LogSink {
    stream: Arc<weir_log::Stream>,
    name: String,
    /// Ids already in the stream past the restored checkpoint.
    written: HashSet<u64>,
    refs: Vec<(usize, usize)>,
    /// First offset appended for each epoch not yet covered by a
    /// checkpoint.
    epoch_start: std::collections::BTreeMap<u64, u64>,
}

fn fail(sink: &str) -> impl Fn(weir_log::LogError) -> EngineError + '_ {
    move |e| EngineError::Worker(format!("sink {sink}: {e}"))
}

/// The `_id` at the end of a record this sink wrote.
fn id_of(record: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(record).ok()?;
    let at = text.rfind("\"_id\":")? + 6;
    text[at..].trim_end_matches('}').trim().parse().ok()
}

impl LogSink {
    /// Opens the stream; `restored` is `Some` under checkpoints, holding
    /// the sink's part of the restored checkpoint if there is one.
    pub fn open(
        sink: &str,
        dir: &std::path::Path,
        stream: &str,
        restored: Option<Option<&[u8]>>,
    ) -> Result<Self, EngineError> {
        let log = weir_log::Log::open(dir).map_err(fail(sink))?;
        let stream = log
            .stream(stream, weir_log::StreamConfig::default())
            .map_err(fail(sink))?;
        let mut written = HashSet::new();
        if let Some(part) = restored {
            let partition = stream.partition(0);
            let mut from = match part {
                Some(bytes) => StateReader::new(bytes).u64().map_err(|_| {
                    EngineError::Checkpoint(format!(
                        "sink {sink}: its part of the checkpoint cannot be read"
                    ))
                })?,
                None => partition.first_offset(),
            }
            .max(partition.first_offset());
            let end = partition.next_offset();
            while from < end {
                let records = partition
                    .read(from, 4096.min((end - from) as usize))
                    .map_err(fail(sink))?;
                let Some(&(last, _)) = records.last() else {
                    break;
                };
                written.extend(records.iter().filter_map(|(_, r)| id_of(r)));
                from = last + 1;
            }
            if !written.is_empty() {
                tracing::info!(
                    sink,
                    records = written.len(),
                    "records past the checkpoint will not be appended again"
                );
            }
        }
        Ok(LogSink {
            stream,
            name: sink.to_string(),
            written,
            refs: Vec::new(),
            epoch_start: std::collections::BTreeMap::new(),
        })
    }

    /// Appends the JSON lines in `encoded` (one per row of `batch`, of the
    /// epoch closed by barrier `epoch`), less those already in the stream.
    pub fn write(
        &mut self,
        epoch: u64,
        batch: &RecordBatch,
        encoded: &[u8],
    ) -> Result<(), EngineError> {
        let ids = batch
            .column_by_name(weir_config::POSITION_COLUMN)
            .and_then(|a| a.as_any().downcast_ref::<UInt64Array>());
        self.refs.clear();
        let mut start = 0;
        for (row, end) in memchr::memchr_iter(b'\n', encoded).enumerate() {
            let id = ids.map(|a| a.value(row));
            let again = id.is_some_and(|id| !self.written.is_empty() && self.written.contains(&id));
            if !again {
                self.refs.push((start, end));
            }
            start = end + 1;
        }
        if self.refs.is_empty() {
            return Ok(());
        }
        let records: Vec<&[u8]> = self.refs.iter().map(|&(s, e)| &encoded[s..e]).collect();
        let offsets = self
            .stream
            .partition(0)
            .append(&records)
            .map_err(fail(&self.name))?;
        self.epoch_start.entry(epoch).or_insert(offsets.start);
        Ok(())
    }

    /// Makes what was appended durable (at the end of a run).
    pub fn flush(&self) -> Result<(), EngineError> {
        self.stream.flush().map_err(fail(&self.name))
    }

    /// The sink's part of checkpoint `id`: where records a replay from it
    /// may produce again begin.
    pub fn prepare(&mut self, id: u64) -> Result<Vec<u8>, EngineError> {
        self.stream.flush().map_err(fail(&self.name))?;
        self.epoch_start.retain(|&epoch, _| epoch > id);
        let from = self
            .epoch_start
            .values()
            .copied()
            .min()
            .unwrap_or_else(|| self.stream.partition(0).next_offset());
        let mut out = Vec::new();
        StateWriter(&mut out).u64(from);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_read_back_from_records() {
        assert_eq!(super::id_of(br#"{"a":1,"_id":42}"#), Some(42));
        assert_eq!(
            super::id_of(br#"{"_id":18446744073709551615}"#),
            Some(u64::MAX)
        );
        assert_eq!(super::id_of(br#"{"a":1}"#), None);
        assert_eq!(super::id_of(b"\xff"), None);
    }
}
