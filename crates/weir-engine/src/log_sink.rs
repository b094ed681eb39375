//! The log sink: output records appended to a stream of the durable log,
//! idempotent under checkpoints.
//!
//! Records are appended as they arrive (no staging), one JSON record per
//! output record, ending with its `_id`. The sink's part of checkpoint `n`
//! is the offset from which the stream may hold records that a replay from
//! `n` produces again, with the ranges past it that hold records `n`
//! already covers. Two things put covered and uncovered records side by
//! side: a producer whose barrier came early appends records of epoch
//! `n + 1` before the others' records of epoch `n`; and after a restart the
//! records an earlier run appended past the restored checkpoint are
//! produced again in this run's epochs, which need not match the earlier
//! run's, so a record may be covered by this run's checkpoint `n` while
//! one appended before it is not yet produced again.
//!
//! On restart the sink reads the records from the checkpoint's offset on,
//! less the covered ranges, and remembers their ids; the replay produces
//! the same records with the same ids, and those are not appended again.
//! Until a remembered record is produced again its offset holds later
//! checkpoints' offsets back, so a second crash finds it too. Without a
//! checkpoint the whole stream is read. Memory grows with the records
//! past the checkpoint's offset.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, UInt64Array};

use crate::state::{StateReader, StateWriter};
use crate::EngineError;

/// What the records of a span of the stream are to the next checkpoint.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Claim {
    /// Appended (or produced again) in this epoch of this run.
    Epoch(u64),
    /// Appended by an earlier run past the restored checkpoint and not
    /// produced again yet: a replay from any checkpoint of this run so far
    /// produces it.
    Awaited,
    /// Covered by a checkpoint: no replay from it or a later one produces
    /// it again.
    Covered,
}

/// A span of offsets `[start, end)` (start is the map key) with one claim.
#[derive(Clone, Copy, Debug)]
struct Span {
    end: u64,
    claim: Claim,
}

/// An open log sink.
pub struct LogSink {
    stream: Arc<weir_log::Stream>,
    name: String,
    /// Ids an earlier run appended past the restored checkpoint and not
    /// produced again yet, with their offsets.
    awaited: HashMap<u64, u64>,
    refs: Vec<(usize, usize)>,
    /// The spans from the last checkpoint's offset on, by start offset.
    spans: BTreeMap<u64, Span>,
}

fn fail(sink: &str) -> impl Fn(weir_log::LogError) -> EngineError + '_ {
    move |e| EngineError::log(format!("sink {sink}"), e)
}

/// The `_id` at the end of a record this sink wrote.
fn id_of(record: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(record).ok()?;
    let at = text.rfind("\"_id\":")? + 6;
    text[at..].trim_end_matches('}').trim().parse().ok()
}

/// The sink's part of a checkpoint: the offset replays may produce records
/// again from, and the covered `[start, end)` ranges past it. A part of
/// only an offset (as earlier versions wrote) has no covered ranges.
fn decode_part(bytes: &[u8]) -> Option<(u64, Vec<(u64, u64)>)> {
    let mut r = StateReader::new(bytes);
    let from = r.u64().ok()?;
    let mut covered = Vec::new();
    if !r.done() {
        let n = r.count(2).ok()?;
        let mut at = from;
        for _ in 0..n {
            let start = at.checked_add(r.u64().ok()?)?;
            let end = start.checked_add(r.u64().ok()?)?;
            covered.push((start, end));
            at = end;
        }
        if !r.done() {
            return None;
        }
    }
    Some((from, covered))
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
        let mut awaited = HashMap::new();
        let mut spans: BTreeMap<u64, Span> = BTreeMap::new();
        if let Some(part) = restored {
            let partition = stream.partition(0);
            let (from, covered) = match part {
                Some(bytes) => decode_part(bytes).ok_or_else(|| EngineError::Staged {
                    sink: sink.to_string(),
                    problem: "its part of the checkpoint cannot be read".to_string(),
                })?,
                None => (partition.first_offset(), Vec::new()),
            };
            let mut from = from.max(partition.first_offset());
            let end = partition.next_offset();
            let mut covered = covered.into_iter().peekable();
            while from < end {
                let records = partition
                    .read(from, 4096.min((end - from) as usize))
                    .map_err(fail(sink))?;
                let Some(&(last, _)) = records.last() else {
                    break;
                };
                for (offset, record) in &records {
                    while covered.next_if(|&(_, e)| e <= *offset).is_some() {}
                    let claim = match (covered.peek(), id_of(record)) {
                        (Some(&(s, _)), _) if s <= *offset => Claim::Covered,
                        // A record without an id cannot be recognised when
                        // produced again; it cannot hold checkpoints back.
                        (_, None) => Claim::Covered,
                        (_, Some(id)) => {
                            // Of two copies of one id (from a version
                            // without covered ranges) the later is kept.
                            if let Some(copy) = awaited.insert(id, *offset) {
                                if let Some(span) = spans.get_mut(&copy) {
                                    span.claim = Claim::Covered;
                                }
                            }
                            Claim::Awaited
                        }
                    };
                    spans.insert(
                        *offset,
                        Span {
                            end: offset + 1,
                            claim,
                        },
                    );
                }
                from = last + 1;
            }
            if !awaited.is_empty() {
                tracing::info!(
                    sink,
                    records = awaited.len(),
                    "records past the checkpoint will not be appended again"
                );
            }
        }
        Ok(LogSink {
            stream,
            name: sink.to_string(),
            awaited,
            refs: Vec::new(),
            spans,
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
            let earlier = match ids {
                Some(ids) if !self.awaited.is_empty() => self.awaited.remove(&ids.value(row)),
                _ => None,
            };
            match earlier {
                // Already in the stream: now it belongs to this epoch.
                Some(offset) => {
                    self.spans.insert(
                        offset,
                        Span {
                            end: offset + 1,
                            claim: Claim::Epoch(epoch),
                        },
                    );
                }
                None => self.refs.push((start, end)),
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
        self.spans.insert(
            offsets.start,
            Span {
                end: offsets.end,
                claim: Claim::Epoch(epoch),
            },
        );
        Ok(())
    }

    /// Makes what was appended durable (at the end of a run).
    pub fn flush(&self) -> Result<(), EngineError> {
        self.stream.flush().map_err(fail(&self.name))
    }

    /// The sink's part of checkpoint `id`: where records a replay from it
    /// may produce again begin, and the covered ranges past that.
    pub fn prepare(&mut self, id: u64) -> Result<Vec<u8>, EngineError> {
        self.stream.flush().map_err(fail(&self.name))?;
        for span in self.spans.values_mut() {
            if matches!(span.claim, Claim::Epoch(e) if e <= id) {
                span.claim = Claim::Covered;
            }
        }
        let from = self
            .spans
            .iter()
            .find(|(_, s)| s.claim != Claim::Covered)
            .map(|(&start, _)| start)
            .unwrap_or_else(|| self.stream.partition(0).next_offset());
        self.spans = self.spans.split_off(&from);
        let mut covered: Vec<(u64, u64)> = Vec::new();
        for (&start, span) in &self.spans {
            if span.claim != Claim::Covered {
                continue;
            }
            match covered.last_mut() {
                Some(last) if last.1 == start => last.1 = span.end,
                _ => covered.push((start, span.end)),
            }
        }
        let mut out = Vec::new();
        let mut w = StateWriter(&mut out);
        w.u64(from);
        w.u64(covered.len() as u64);
        let mut at = from;
        for (start, end) in covered {
            w.u64(start - at);
            w.u64(end - start);
            at = end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{RecordBatch, UInt64Array};
    use arrow_schema::{DataType, Field, Schema};

    use super::{decode_part, LogSink};

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

    /// Writes records with these ids in one epoch, as the engine would.
    fn write(sink: &mut LogSink, epoch: u64, ids: &[u64]) {
        let schema = Arc::new(Schema::new(vec![Field::new(
            weir_config::POSITION_COLUMN,
            DataType::UInt64,
            false,
        )]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(UInt64Array::from(ids.to_vec()))])
            .expect("batch");
        let mut encoded = Vec::new();
        for id in ids {
            encoded.extend_from_slice(format!("{{\"_id\":{id}}}\n").as_bytes());
        }
        sink.write(epoch, &batch, &encoded).expect("write");
    }

    fn open(dir: &std::path::Path, part: Option<&[u8]>) -> LogSink {
        LogSink::open("alerts", dir, "alerts", Some(part)).expect("open")
    }

    fn ids_in(dir: &std::path::Path) -> Vec<u64> {
        let log = weir_log::Log::open(dir).expect("log");
        let stream = log
            .stream("alerts", weir_log::StreamConfig::default())
            .expect("stream");
        let p = stream.partition(0);
        p.read(0, 1000)
            .expect("read")
            .iter()
            .map(|(_, r)| super::id_of(r).expect("id"))
            .collect()
    }

    /// Two crashes: the second run produces again what the first appended
    /// in epochs of its own, checkpoints part of it and crashes; the third
    /// run must still find the rest in the stream.
    #[test]
    fn records_of_an_earlier_run_stay_found_across_a_second_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = open(dir.path(), None);
        write(&mut first, 1, &[1, 2]);
        write(&mut first, 2, &[3, 4]);
        let part1 = first.prepare(1).expect("prepare");
        write(&mut first, 2, &[5]);
        write(&mut first, 3, &[6, 7, 8]);
        first.flush().expect("flush");
        drop(first); // killed before checkpoint 2

        let mut second = open(dir.path(), Some(&part1));
        write(&mut second, 2, &[3, 4]);
        let part2 = second.prepare(2).expect("prepare");
        // Records 5 to 8 are past checkpoint 2 and at offsets 4 to 7.
        assert_eq!(decode_part(&part2), Some((4, vec![])));
        write(&mut second, 3, &[5, 6]);
        drop(second); // killed before checkpoint 3

        let mut third = open(dir.path(), Some(&part2));
        write(&mut third, 3, &[5, 6, 7, 8, 9]);
        third.prepare(3).expect("prepare");
        assert_eq!(ids_in(dir.path()), vec![1, 2, 3, 4, 5, 6, 7, 8, 9]);
    }

    /// Records of an epoch appended after the next epoch's first ones are
    /// covered by its checkpoint; they must not hold the next checkpoints
    /// back when nothing produces them again.
    #[test]
    fn covered_records_past_the_offset_are_not_awaited() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut first = open(dir.path(), None);
        write(&mut first, 1, &[1]);
        write(&mut first, 2, &[2]); // a producer's barrier 1 came early
        write(&mut first, 1, &[3]);
        let part1 = first.prepare(1).expect("prepare");
        assert_eq!(decode_part(&part1), Some((1, vec![(2, 3)])));
        drop(first);

        let mut second = open(dir.path(), Some(&part1));
        write(&mut second, 2, &[2, 4]);
        let part2 = second.prepare(2).expect("prepare");
        assert_eq!(decode_part(&part2), Some((4, vec![])));
        write(&mut second, 3, &[5]);
        drop(second);

        let mut third = open(dir.path(), Some(&part2));
        write(&mut third, 3, &[5, 6]);
        third.prepare(3).expect("prepare");
        assert_eq!(ids_in(dir.path()), vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn parts_of_only_an_offset_are_read() {
        let mut old = Vec::new();
        crate::state::StateWriter(&mut old).u64(7);
        assert_eq!(decode_part(&old), Some((7, vec![])));
        assert_eq!(decode_part(&[]), None);
        assert_eq!(decode_part(&[7, 9]), None);
    }
}
