//! Sinks: where results leave the pipeline.
//!
//! Each sink runs on its own thread and receives batches from every shard;
//! records are encoded batch by batch into one buffer and written with one
//! call per batch. JSON records carry `_id`, the deterministic output id
//! (the record's `__pos`: its source position, or for window results an id
//! derived from the window), so a replay reproduces the same ids. Under
//! checkpoints a file sink is transactional ([`crate::txn_file`]);
//! standard output is written at once (at least once: a replay after a
//! crash writes the same records, with the same ids, again).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use arrow_array::{RecordBatch, UInt64Array};
use weir_config::{Sink, SinkFormat, SinkKind};
use weir_connect::{Output, SinkConnector};

use crate::connectors::{self, OpenedSink};
use crate::encode::protobuf::{self, ProtoField};
use crate::encode::{encode_json, encode_json_rows_with_id};
use crate::log_sink::LogSink;
use crate::txn_file::{EpochPlace, TxnFile};
use crate::EngineError;

enum Encoding {
    Json,
    Protobuf(Vec<ProtoField>),
}

enum Target {
    /// A connector, its destination, and whether it uses JSON rows (a
    /// database sink binds typed columns and gets none).
    Connector(Box<dyn SinkConnector>, String, bool),
    Stdout(std::io::Stdout),
    File(BufWriter<File>, String),
    Txn(TxnFile, String),
    Log(LogSink, String),
    Discard,
}

/// A running sink.
pub struct SinkWriter {
    name: String,
    columns: Vec<String>,
    encoding: Encoding,
    target: Target,
    buf: Vec<u8>,
    /// Where each JSON row ends in `buf`, for connectors.
    ends: Vec<usize>,
    records: u64,
}

impl SinkWriter {
    /// Opens a sink's destination. `transactional` is set under
    /// checkpoints, with the sink's place in the restored checkpoint; file
    /// sinks then stage each epoch until its checkpoint completes, claimed
    /// for the task owner's `epoch` (0: the run is not a task).
    pub fn open(
        sink: &Sink,
        transactional: Option<Option<EpochPlace>>,
        log_part: Option<Option<&[u8]>>,
        epoch: u64,
    ) -> Result<Self, EngineError> {
        let checkpointing = log_part.is_some();
        let restored = log_part.flatten();
        if let Some(OpenedSink {
            connector,
            destination,
            json_rows,
        }) = connectors::open_sink(sink, checkpointing, restored)?
        {
            return Ok(SinkWriter::new(
                sink,
                Target::Connector(connector, destination, json_rows),
                Encoding::Json,
            ));
        }
        let (target, encoding) = match &sink.kind {
            SinkKind::Log { dir, stream } => (
                Target::Log(
                    LogSink::open(&sink.name, dir, stream, log_part)?,
                    format!("log stream {stream} in {}", dir.display()),
                ),
                Encoding::Json,
            ),
            SinkKind::Stdout => (Target::Stdout(std::io::stdout()), Encoding::Json),
            SinkKind::Discard => (Target::Discard, Encoding::Json),
            SinkKind::File { path, format } => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        EngineError::io(
                            format!(
                                "sink {}: cannot create directory {}",
                                sink.name,
                                dir.display()
                            ),
                            e,
                        )
                    })?;
                }
                let target = match transactional {
                    Some(restored) => Target::Txn(
                        TxnFile::open(&sink.name, path, restored, epoch)?,
                        path.display().to_string(),
                    ),
                    None => {
                        // Not truncated yet: `start` does, once the run is
                        // known to start, so a run that fails to open
                        // something leaves earlier output alone.
                        let file = std::fs::OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(path)
                            .map_err(|e| {
                                EngineError::io(
                                    format!("sink {}: cannot create {}", sink.name, path.display()),
                                    e,
                                )
                            })?;
                        Target::File(
                            BufWriter::with_capacity(1 << 16, file),
                            path.display().to_string(),
                        )
                    }
                };
                let encoding = match format {
                    SinkFormat::Json => Encoding::Json,
                    SinkFormat::Protobuf(spec) => {
                        let message = crate::decode::protobuf::load_message(spec)
                            .map_err(|e| EngineError::build(&sink.name, e))?;
                        let fields = protobuf::fields(&message, &sink.columns)
                            .map_err(|e| EngineError::build(&sink.name, e))?;
                        Encoding::Protobuf(fields)
                    }
                };
                (target, encoding)
            }
            _ => {
                return Err(EngineError::invariant(
                    format!("sink {}", sink.name),
                    "a connector sink was not opened by the registry",
                ))
            }
        };
        Ok(SinkWriter::new(sink, target, encoding))
    }

    fn new(sink: &Sink, target: Target, encoding: Encoding) -> SinkWriter {
        SinkWriter {
            name: sink.name.clone(),
            columns: sink.columns.clone(),
            encoding,
            target,
            buf: Vec::new(),
            ends: Vec::new(),
            records: 0,
        }
    }

    /// The run starts: a plain file sink replaces what an earlier run
    /// wrote (opening it left it untouched).
    pub fn start(&mut self) -> Result<(), EngineError> {
        if let Target::File(f, path) = &mut self.target {
            crate::dead_letter::truncate_regular(f.get_ref()).map_err(|e| {
                EngineError::io(format!("sink {}: cannot truncate {path}", self.name), e)
            })?;
        }
        Ok(())
    }

    /// The connection state, for a sink that is a connector.
    pub fn connector_status(&self) -> Option<Arc<weir_connect::ConnectorStatus>> {
        match &self.target {
            Target::Connector(c, ..) => Some(c.status()),
            _ => None,
        }
    }

    fn destination(&self) -> &str {
        match &self.target {
            Target::Stdout(_) => "standard output",
            Target::File(_, path)
            | Target::Txn(_, path)
            | Target::Log(_, path)
            | Target::Connector(_, path, _) => path,
            Target::Discard => "nothing",
        }
    }

    /// Writes a batch (outside checkpoints).
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), EngineError> {
        self.write_epoch(0, batch)
    }

    /// Writes a batch belonging to the epoch closed by barrier `epoch`.
    pub fn write_epoch(&mut self, epoch: u64, batch: &RecordBatch) -> Result<(), EngineError> {
        self.records += batch.num_rows() as u64;
        if matches!(self.target, Target::Discard) || batch.num_rows() == 0 {
            return Ok(());
        }
        self.buf.clear();
        if let Target::Connector(c, _, json) = &mut self.target {
            let ids = batch
                .column_by_name(weir_config::POSITION_COLUMN)
                .and_then(|a| a.as_any().downcast_ref::<UInt64Array>())
                .ok_or_else(|| {
                    EngineError::invariant(format!("sink {}", self.name), "output without ids")
                })?;
            self.ends.clear();
            if *json {
                encode_json(
                    batch,
                    &self.columns,
                    true,
                    &mut self.buf,
                    Some(&mut self.ends),
                );
            }
            let out = Output {
                batch,
                columns: &self.columns,
                ids: ids.values(),
                json: &self.buf,
                ends: &self.ends,
            };
            return c
                .write(epoch, &out)
                .map_err(|e| EngineError::sink(&self.name, e));
        }
        match &self.encoding {
            Encoding::Json => encode_json_rows_with_id(batch, &self.columns, &mut self.buf),
            Encoding::Protobuf(fields) => protobuf::encode_proto_rows(batch, fields, &mut self.buf)
                .map_err(|e| EngineError::build(&self.name, e))?,
        }
        let r = match &mut self.target {
            Target::Stdout(s) => s.lock().write_all(&self.buf),
            Target::File(f, _) => f.write_all(&self.buf),
            Target::Txn(t, _) => t.write(epoch, &self.buf),
            Target::Log(l, _) => return l.write(epoch, batch, &self.buf),
            // Connectors returned above.
            Target::Discard | Target::Connector(..) => Ok(()),
        };
        r.map_err(|e| {
            EngineError::io(
                format!("sink {}: cannot write {}", self.name, self.destination()),
                e,
            )
        })
    }

    /// At a barrier: makes epoch `id` durable where the sink is
    /// transactional; returns the sink's part of the checkpoint.
    pub fn prepare(&mut self, id: u64) -> Result<Vec<u8>, EngineError> {
        let r = match &mut self.target {
            Target::Connector(c, ..) => {
                return c.prepare(id).map_err(|e| EngineError::sink(&self.name, e))
            }
            Target::Txn(t, _) => t.prepare(id).map(|p| p.encode()),
            Target::Log(l, _) => return l.prepare(id),
            Target::Stdout(s) => s.flush().map(|_| Vec::new()),
            Target::File(f, _) => f.flush().map(|_| Vec::new()),
            Target::Discard => Ok(Vec::new()),
        };
        r.map_err(|e| {
            EngineError::io(
                format!(
                    "sink {}: cannot stage output for {}",
                    self.name,
                    self.destination()
                ),
                e,
            )
        })
    }

    /// The checkpoint covering epoch `id` is durable: make it visible.
    pub fn commit(&mut self, id: u64) -> Result<(), EngineError> {
        if let Target::Connector(c, ..) = &mut self.target {
            return c.commit(id).map_err(|e| EngineError::sink(&self.name, e));
        }
        if let Target::Txn(t, _) = &mut self.target {
            t.commit(id)?;
        }
        Ok(())
    }

    /// Flushes and returns the number of records written.
    pub fn finish(mut self) -> Result<u64, EngineError> {
        let r = match &mut self.target {
            Target::Stdout(s) => s.flush(),
            Target::File(f, _) => f.flush().and_then(|_| f.get_ref().sync_data()),
            Target::Txn(..) | Target::Discard => Ok(()),
            Target::Log(l, _) => return l.flush().map(|_| self.records),
            Target::Connector(c, ..) => {
                return c
                    .finish()
                    .map(|_| self.records)
                    .map_err(|e| EngineError::sink(&self.name, e))
            }
        };
        r.map_err(|e| {
            EngineError::io(
                format!("sink {}: cannot flush {}", self.name, self.destination()),
                e,
            )
        })?;
        Ok(self.records)
    }
}
