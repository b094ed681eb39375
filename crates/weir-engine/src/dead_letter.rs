//! The dead-letter destination: every record the pipeline could not
//! process, with the reason, the step and the original bytes.
//!
//! Written as JSON lines, one object per rejected record:
//! `{"step":…,"position":…,"reason":…,"bytes_base64":…,"text":…}` where
//! `text` is present when the bytes are valid UTF-8 (for reading) and
//! `bytes_base64` always holds them exactly. Records rejected after
//! decoding (late events, model failures) carry the decoded record as
//! `record` instead. With `[dead_letter] log` and `stream`, the same
//! objects are appended to a stream of the durable log instead (one record
//! each), where `weir dlq inspect` and `weir dlq replay` find them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use base64::Engine as _;

use crate::EngineError;

/// A record the pipeline could not process.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Step that rejected it.
    pub step: String,
    /// Its position in the source.
    pub position: u64,
    /// Why.
    pub reason: String,
    /// The original bytes (empty when rejected after decoding).
    pub bytes: Vec<u8>,
    /// The decoded record as a JSON object, when rejected after decoding.
    pub record: Option<String>,
}

enum Destination {
    File(BufWriter<File>),
    /// Entries buffered for one append per batch of rejects.
    Log(std::sync::Arc<weir_log::Stream>, Vec<Vec<u8>>),
}

/// Appends rejected records to a JSON-lines file or a durable log stream
/// (one entry per record, the same JSON object either way).
pub struct DeadLetterWriter {
    out: Destination,
    path: String,
    count: u64,
    line: Vec<u8>,
    /// Whether `start` truncates the file (an earlier run's entries are
    /// replaced).
    replace: bool,
}

/// Empties `file` if it is a regular file; a FIFO or a device (a sink
/// writing to a pipe or `/dev/stdout`) is left as it is.
pub(crate) fn truncate_regular(file: &File) -> std::io::Result<()> {
    if file.metadata()?.is_file() {
        file.set_len(0)?;
    }
    Ok(())
}

impl DeadLetterWriter {
    /// Opens the file to be replaced, making its directory if needed; it
    /// is truncated by [`start`](Self::start), once the run is known to
    /// start.
    pub fn create(path: &Path) -> Result<Self, EngineError> {
        Self::open_file(path, false)
    }

    /// Opens the JSON-lines file for appending (under checkpoints, where a
    /// restart must keep what earlier runs rejected).
    pub fn append(path: &Path) -> Result<Self, EngineError> {
        Self::open_file(path, true)
    }

    fn open_file(path: &Path, append: bool) -> Result<Self, EngineError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::io(
                    format!("cannot create dead-letter directory {}", dir.display()),
                    e,
                )
            })?;
        }
        let file = if append {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
        };
        let file = file.map_err(|e| {
            EngineError::io(
                format!("cannot create dead-letter file {}", path.display()),
                e,
            )
        })?;
        Ok(DeadLetterWriter {
            out: Destination::File(BufWriter::with_capacity(1 << 16, file)),
            path: path.display().to_string(),
            count: 0,
            line: Vec::new(),
            replace: !append,
        })
    }

    /// Opens (creating if needed) a stream of the durable log.
    pub fn log(dir: &Path, stream: &str) -> Result<Self, EngineError> {
        let fail = |e: weir_log::LogError| {
            EngineError::log(
                format!("dead-letter stream {stream} in {}", dir.display()),
                e,
            )
        };
        let log = weir_log::Log::open(dir).map_err(fail)?;
        let stream_handle = log
            .stream(stream, weir_log::StreamConfig::default())
            .map_err(fail)?;
        Ok(DeadLetterWriter {
            out: Destination::Log(stream_handle, Vec::new()),
            path: format!("{} (stream {stream})", dir.display()),
            count: 0,
            line: Vec::new(),
            replace: false,
        })
    }

    /// The run starts: a file to be replaced is truncated now.
    pub fn start(&mut self) -> Result<(), EngineError> {
        if let (Destination::File(out), true) = (&mut self.out, self.replace) {
            truncate_regular(out.get_ref()).map_err(|e| {
                EngineError::io(format!("cannot truncate dead-letter file {}", self.path), e)
            })?;
        }
        Ok(())
    }

    /// Makes what was written so far durable (log streams append here, one
    /// batch per call).
    pub fn commit(&mut self) -> Result<(), EngineError> {
        if let Destination::Log(stream, pending) = &mut self.out {
            if !pending.is_empty() {
                let records: Vec<&[u8]> = pending.iter().map(Vec::as_slice).collect();
                stream.partition(0).append(&records).map_err(|e| {
                    EngineError::log(
                        format!("cannot append to dead-letter stream {}", self.path),
                        e,
                    )
                })?;
                pending.clear();
            }
        }
        Ok(())
    }

    /// Writes one rejected record.
    pub fn write(&mut self, r: &Rejected) -> Result<(), EngineError> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"step\":");
        crate::encode::json_string(&mut self.line, &r.step);
        self.line
            .extend_from_slice(format!(",\"position\":{},\"reason\":", r.position).as_bytes());
        crate::encode::json_string(&mut self.line, &r.reason);
        if let Some(record) = &r.record {
            self.line.extend_from_slice(b",\"record\":");
            self.line.extend_from_slice(record.as_bytes());
        } else {
            self.line.extend_from_slice(b",\"bytes_base64\":\"");
            self.line.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(&r.bytes)
                    .as_bytes(),
            );
            self.line.push(b'"');
            if let Ok(text) = std::str::from_utf8(&r.bytes) {
                self.line.extend_from_slice(b",\"text\":");
                crate::encode::json_string(&mut self.line, text);
            }
        }
        self.line.push(b'}');
        match &mut self.out {
            Destination::Log(_, pending) => pending.push(self.line.clone()),
            Destination::File(out) => {
                self.line.push(b'\n');
                out.write_all(&self.line).map_err(|e| {
                    EngineError::io(format!("cannot write dead-letter file {}", self.path), e)
                })?;
            }
        }
        self.count += 1;
        Ok(())
    }

    /// Makes everything written so far durable: flushed and fsynced (a
    /// file), or appended and flushed to disk (a log stream).
    pub fn sync(&mut self) -> Result<(), EngineError> {
        self.commit()?;
        match &mut self.out {
            Destination::File(out) => {
                out.flush()
                    .and_then(|_| out.get_ref().sync_data())
                    .map_err(|e| {
                        EngineError::io(format!("cannot write dead-letter file {}", self.path), e)
                    })
            }
            Destination::Log(stream, _) => stream.flush().map_err(|e| {
                EngineError::log(format!("cannot sync dead-letter stream {}", self.path), e)
            }),
        }
    }

    /// Syncs and returns the number of records written.
    pub fn finish(mut self) -> Result<u64, EngineError> {
        self.sync()?;
        Ok(self.count)
    }
}
