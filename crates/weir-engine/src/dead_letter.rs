//! The dead-letter destination: every record the pipeline could not
//! process, with the reason, the step and the original bytes.
//!
//! Written as JSON lines, one object per rejected record:
//! `{"step":…,"position":…,"reason":…,"bytes_base64":…,"text":…}` where
//! `text` is present when the bytes are valid UTF-8 (for reading) and
//! `bytes_base64` always holds them exactly. Records rejected after
//! decoding (late events, model failures) carry the decoded record as
//! `record` instead.

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

/// Appends rejected records to a JSON-lines file.
pub struct DeadLetterWriter {
    out: BufWriter<File>,
    path: String,
    count: u64,
    line: Vec<u8>,
}

impl DeadLetterWriter {
    /// Creates (truncates) the file, making its directory if needed.
    pub fn create(path: &Path) -> Result<Self, EngineError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                EngineError::io(
                    format!("cannot create dead-letter directory {}", dir.display()),
                    e,
                )
            })?;
        }
        let file = File::create(path).map_err(|e| {
            EngineError::io(
                format!("cannot create dead-letter file {}", path.display()),
                e,
            )
        })?;
        Ok(DeadLetterWriter {
            out: BufWriter::with_capacity(1 << 16, file),
            path: path.display().to_string(),
            count: 0,
            line: Vec::new(),
        })
    }

    /// Writes one rejected record.
    pub fn write(&mut self, r: &Rejected) -> Result<(), EngineError> {
        self.line.clear();
        self.line.extend_from_slice(b"{\"step\":");
        crate::sink::json_string(&mut self.line, &r.step);
        self.line
            .extend_from_slice(format!(",\"position\":{},\"reason\":", r.position).as_bytes());
        crate::sink::json_string(&mut self.line, &r.reason);
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
                crate::sink::json_string(&mut self.line, text);
            }
        }
        self.line.extend_from_slice(b"}\n");
        self.out.write_all(&self.line).map_err(|e| {
            EngineError::io(format!("cannot write dead-letter file {}", self.path), e)
        })?;
        self.count += 1;
        Ok(())
    }

    /// Flushes and returns the number of records written.
    pub fn finish(mut self) -> Result<u64, EngineError> {
        self.out.flush().map_err(|e| {
            EngineError::io(format!("cannot write dead-letter file {}", self.path), e)
        })?;
        Ok(self.count)
    }
}
