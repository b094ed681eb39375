//! The connector: where reading starts, round-robin polls, the end of a
//! bounded read, and the consumer position published after checkpoints.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_connect::{
    Acknowledge, ConnectError, ConnectionState, ConnectorStatus, Polled, Received, SourceConnector,
};
use weir_log::{LogError, Stream, TailReader};

use crate::reader::Reader;
use crate::LogSourceConfig;

/// How long a following source sleeps between looks at a stream with
/// nothing new: the files give no signal when a writer appends.
const IDLE_SLEEP: Duration = Duration::from_millis(1);

/// Where a [`LogSource`] reads its records from.
#[derive(Debug, Clone)]
pub enum ReadFrom {
    /// The stream's files, read-only: another process (`weir ingest`) may
    /// be appending. What a pipeline's `log` source uses.
    Files,
    /// The stream as opened in this process, which shows only records
    /// whose fsync has completed: for a connector that appends to the
    /// stream itself (the MQTT source's receiver).
    Stream(Arc<Stream>),
}

/// A stream of the log read as a [`SourceConnector`].
///
/// It reads partitions `read` of the stream (all by default); a record's
/// offset in its partition is its offset in the stream. Each poll reads one partition, the next one
/// round-robin that has records, so a poll's records are consecutive
/// offsets of one partition.
pub struct LogSource {
    name: String,
    dir: PathBuf,
    stream: String,
    consumer: String,
    reader: Reader,
    /// The first partition read: index `p` of `next` is partition
    /// `first + p`.
    first: u32,
    /// The stream's partitions, for the consumer position.
    stream_partitions: u32,
    /// The next offset to deliver, per partition.
    next: Vec<u64>,
    /// Without `follow`: each partition's end when the source opened,
    /// where reading stops.
    end: Option<Vec<u64>>,
    /// The partition the next poll tries first.
    turn: usize,
    status: Arc<ConnectorStatus>,
}

impl std::fmt::Debug for LogSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("stream", &self.stream)
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

fn log_error(context: impl FnOnce() -> String) -> impl FnOnce(LogError) -> ConnectError {
    move |e| ConnectError::Io {
        context: context(),
        source: std::io::Error::other(e),
    }
}

impl LogSource {
    /// Opens the source named `name` at `start` (the next offset per
    /// partition, from the restored checkpoint), else at each partition's
    /// first retained offset. With `drain`, or without `config.follow`, it
    /// ends once every partition has reached the end it had now.
    ///
    /// Errors: a `start` with another number of partitions, or past a
    /// partition's end, is [`ConnectError::Checkpoint`]; a stream in
    /// `from` with another name or partition count than `config` is
    /// [`ConnectError::Config`]; an unreadable stream is
    /// [`ConnectError::Io`]. A `start` before a partition's first retained
    /// offset (retention removed records the checkpoint had not covered)
    /// is logged and reading resumes at the first retained one.
    pub fn open(
        name: &str,
        config: &LogSourceConfig<'_>,
        from: ReadFrom,
        start: Option<&[u64]>,
        drain: bool,
    ) -> Result<LogSource, ConnectError> {
        let read = config.read.clone().unwrap_or(0..config.partitions);
        if read.is_empty() || read.end > config.partitions {
            return Err(ConnectError::Config(format!(
                "cannot read partitions {read:?} of stream {:?}, which has {}",
                config.stream, config.partitions
            )));
        }
        let reader = match from {
            ReadFrom::Files => Reader::Files(
                read.clone()
                    .map(|p| TailReader::new(config.dir, config.stream, p))
                    .collect(),
            ),
            ReadFrom::Stream(stream) => {
                let has = stream.partitions().len();
                if stream.name() != config.stream || has != config.partitions as usize {
                    return Err(ConnectError::Config(format!(
                        "reading stream {:?} with {} partitions through stream {:?}, which has {has}",
                        config.stream,
                        config.partitions,
                        stream.name()
                    )));
                }
                Reader::Stream(stream, read.start)
            }
        };
        let mut source = LogSource {
            name: name.to_string(),
            dir: config.dir.to_path_buf(),
            stream: config.stream.to_string(),
            consumer: config.consumer.to_string(),
            reader,
            first: read.start,
            stream_partitions: config.partitions,
            next: Vec::new(),
            end: None,
            turn: 0,
            status: Arc::new(ConnectorStatus::default()),
        };
        source.next = source.starting_offsets(start)?;
        if !config.follow || drain {
            source.end = Some(source.current_ends()?);
        }
        // A local log is always reachable.
        source.status.set(ConnectionState::Connected);
        Ok(source)
    }

    /// Where reading starts: `start` checked against the stream, else the
    /// first retained offsets.
    fn starting_offsets(&mut self, start: Option<&[u64]>) -> Result<Vec<u64>, ConnectError> {
        let partitions = self.partitions_len() as u32;
        let mut next = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            next.push(
                self.reader
                    .first_offset(p)
                    .map_err(self.read_error(p, "find the first offset of"))?,
            );
        }
        let Some(start) = start else {
            return Ok(next);
        };
        if start.len() != next.len() {
            return Err(ConnectError::Checkpoint(format!(
                "the checkpoint has positions for {} partitions, stream {} has {}",
                start.len(),
                self.stream,
                next.len()
            )));
        }
        for (p, (first, &s)) in (0..partitions).zip(next.iter_mut().zip(start)) {
            if s < *first {
                tracing::warn!(source = %self.name, partition = self.first + p, checkpointed = s, first = *first, "records after the checkpoint were removed by retention; resuming at the first retained one");
                continue;
            }
            if s > *first
                && !self
                    .reader
                    .reaches(p, s)
                    .map_err(self.read_error(p, "read"))?
            {
                let end = self
                    .reader
                    .end_offset(p)
                    .map_err(self.read_error(p, "find the end of"))?;
                return Err(ConnectError::Checkpoint(format!(
                    "the checkpoint resumes partition {} at offset {s}, but stream {:?} in {} ends at {end} there (was the log directory replaced?)",
                    self.first + p,
                    self.stream,
                    self.dir.display()
                )));
            }
            *first = s;
        }
        Ok(next)
    }

    /// Each partition's end now.
    fn current_ends(&mut self) -> Result<Vec<u64>, ConnectError> {
        let mut ends = Vec::with_capacity(self.next.len());
        for p in 0..self.partitions_len() as u32 {
            // Reading at the start first makes a file reader scan only
            // from there to the end.
            let from = self.next[p as usize];
            self.reader
                .read(p, from, 1)
                .map_err(self.read_error(p, "read"))?;
            ends.push(
                self.reader
                    .end_offset(p)
                    .map_err(self.read_error(p, "find the end of"))?,
            );
        }
        Ok(ends)
    }

    fn partitions_len(&self) -> usize {
        match &self.reader {
            Reader::Files(readers) => readers.len(),
            Reader::Stream(stream, first) => stream.partitions().len() - *first as usize,
        }
    }

    /// Turns a log error on the `p`th partition read into a connector error
    /// saying what was being done, where.
    fn read_error(&self, p: u32, doing: &str) -> impl FnOnce(LogError) -> ConnectError {
        let context = format!(
            "{doing} partition {} of stream {:?} in {}",
            self.first + p,
            self.stream,
            self.dir.display()
        );
        log_error(move || context)
    }

    /// Appends to `out` what can be read now, without waiting: at most
    /// `max` records of one partition, the next one round-robin that has
    /// any. Returns whether it appended any.
    ///
    /// For a caller with its own way of waiting (a signal from the writer)
    /// rather than [`poll`](SourceConnector::poll)'s short sleeps.
    pub fn read_available(&mut self, out: &mut Received, max: usize) -> Result<bool, ConnectError> {
        let partitions = self.next.len();
        for i in 0..partitions {
            let p = (self.turn + i) % partitions;
            let end = self.end.as_ref().map_or(u64::MAX, |end| end[p]);
            let records = loop {
                let left = end.saturating_sub(self.next[p]);
                let want = max.min(usize::try_from(left).unwrap_or(usize::MAX));
                if want == 0 {
                    break Vec::new();
                }
                match self.reader.read(p as u32, self.next[p], want) {
                    Ok(records) => break records,
                    Err(LogError::OffsetOutOfRange { first, .. }) => {
                        tracing::warn!(source = %self.name, partition = p, from = self.next[p], first, "records were removed by retention before they were read; skipping to the first retained one");
                        self.next[p] = first;
                    }
                    Err(e) => return Err(self.read_error(p as u32, "read")(e)),
                }
            };
            let Some(&(last, _)) = records.last() else {
                continue;
            };
            for (offset, payload) in &records {
                out.push(self.first + p as u32, *offset, payload);
            }
            self.next[p] = last + 1;
            self.turn = (p + 1) % partitions;
            return Ok(true);
        }
        Ok(false)
    }

    /// Without `follow`: every partition has reached the end it had at
    /// open.
    fn at_end(&self) -> bool {
        self.end
            .as_ref()
            .is_some_and(|end| self.next.iter().zip(end).all(|(n, e)| n >= e))
    }
}

impl SourceConnector for LogSource {
    fn partitions(&self) -> u32 {
        self.next.len() as u32
    }

    fn poll(
        &mut self,
        out: &mut Received,
        max: usize,
        wait: Duration,
    ) -> Result<Polled, ConnectError> {
        let started = Instant::now();
        loop {
            if self.read_available(out, max)? {
                return Ok(Polled::Records);
            }
            if self.at_end() {
                return Ok(Polled::End);
            }
            let waited = started.elapsed();
            if waited >= wait {
                return Ok(Polled::Idle);
            }
            std::thread::sleep(IDLE_SLEEP.min(wait - waited));
        }
    }

    fn position(&self) -> Vec<u64> {
        self.next.clone()
    }

    fn on_checkpoint(&mut self) -> Acknowledge {
        let (dir, stream, consumer) =
            (self.dir.clone(), self.stream.clone(), self.consumer.clone());
        let (first, all) = (self.first as usize, self.stream_partitions as usize);
        Box::new(move |next: &[u64]| {
            if first == 0 && next.len() == all {
                return publish_position(&dir, &stream, &consumer, next);
            }
            // A share of the stream: the partitions others read count as
            // caught up, so this consumer's lag is its own partitions'.
            let mut whole = vec![u64::MAX; all];
            for (slot, &n) in whole[first..].iter_mut().zip(next) {
                *slot = n;
            }
            publish_position(&dir, &stream, &consumer, &whole)
        })
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        self.status.clone()
    }
}

/// Publishes `next` as `consumer`'s position in `stream` (ingest's lag
/// bound reads it). A failure costs only that signal: logged, not fatal.
fn publish_position(dir: &Path, stream: &str, consumer: &str, next: &[u64]) {
    if let Err(e) = weir_log::commit_consumer_position(dir, stream, consumer, next) {
        tracing::warn!(stream = %stream, consumer = %consumer, error = %e, "cannot publish the consumer position");
    }
}
