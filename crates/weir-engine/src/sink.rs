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

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;
use weir_config::{Sink, SinkFormat, SinkKind};
use weir_connect::{ConnectError, Output, SinkConnector};

use crate::frame::put_varint;
use crate::log_sink::LogSink;
use crate::txn_file::{EpochPlace, TxnFile};
use crate::EngineError;

/// Writes a JSON string literal (quoted, escaped).
pub fn json_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        match escape {
            Some(e) => out.extend_from_slice(e),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A typed view of one column, resolved once per batch.
enum Col<'a> {
    Bool(&'a BooleanArray),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Str(&'a StringArray),
    Other(&'a ArrayRef),
}

fn view(a: &ArrayRef) -> Col<'_> {
    let any = a.as_any();
    match a.data_type() {
        DataType::Boolean => any.downcast_ref().map(Col::Bool),
        DataType::Int32 => any.downcast_ref().map(Col::I32),
        DataType::Int64 => any.downcast_ref().map(Col::I64),
        DataType::UInt32 => any.downcast_ref().map(Col::U32),
        DataType::UInt64 => any.downcast_ref().map(Col::U64),
        DataType::Float32 => any.downcast_ref().map(Col::F32),
        DataType::Float64 => any.downcast_ref().map(Col::F64),
        DataType::Utf8 => any.downcast_ref().map(Col::Str),
        _ => None,
    }
    .unwrap_or(Col::Other(a))
}

fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        // Rust's shortest round-trip formatting; integral values get ".0"
        // so readers keep them as floats.
        let s = format!("{v:?}");
        out.extend_from_slice(s.as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

fn write_int(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write as _;
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{v}");
}

impl Col<'_> {
    fn write_json(&self, out: &mut Vec<u8>, row: usize) {
        let null = match self {
            Col::Other(a) => a.is_null(row),
            Col::Bool(a) => a.is_null(row),
            Col::I32(a) => a.is_null(row),
            Col::I64(a) => a.is_null(row),
            Col::U32(a) => a.is_null(row),
            Col::U64(a) => a.is_null(row),
            Col::F32(a) => a.is_null(row),
            Col::F64(a) => a.is_null(row),
            Col::Str(a) => a.is_null(row),
        };
        if null {
            out.extend_from_slice(b"null");
            return;
        }
        match self {
            Col::Bool(a) => out.extend_from_slice(if a.value(row) { b"true" } else { b"false" }),
            Col::I32(a) => write_int(out, a.value(row)),
            Col::I64(a) => write_int(out, a.value(row)),
            Col::U32(a) => write_int(out, a.value(row)),
            Col::U64(a) => write_int(out, a.value(row)),
            Col::F32(a) => write_float(out, a.value(row) as f64),
            Col::F64(a) => write_float(out, a.value(row)),
            Col::Str(a) => json_string(out, a.value(row)),
            Col::Other(_) => out.extend_from_slice(b"null"),
        }
    }
}

/// Encodes the named columns of every row of `batch` as JSON lines.
pub fn encode_json_rows(batch: &RecordBatch, columns: &[String], out: &mut Vec<u8>) {
    encode_json(batch, columns, false, out, None)
}

/// Like [`encode_json_rows`], with the output id as a last field `_id`.
pub fn encode_json_rows_with_id(batch: &RecordBatch, columns: &[String], out: &mut Vec<u8>) {
    encode_json(batch, columns, true, out, None)
}

fn encode_json(
    batch: &RecordBatch,
    columns: &[String],
    with_id: bool,
    out: &mut Vec<u8>,
    mut ends: Option<&mut Vec<usize>>,
) {
    let ids = with_id
        .then(|| batch.column_by_name(weir_config::POSITION_COLUMN))
        .flatten()
        .and_then(|a| a.as_any().downcast_ref::<UInt64Array>());
    let cols: Vec<(Vec<u8>, Col<'_>)> = columns
        .iter()
        .filter_map(|name| {
            let a = batch.column_by_name(name)?;
            let mut key = Vec::with_capacity(name.len() + 3);
            json_string(&mut key, name);
            key.push(b':');
            Some((key, view(a)))
        })
        .collect();
    for row in 0..batch.num_rows() {
        out.push(b'{');
        for (i, (key, col)) in cols.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            col.write_json(out, row);
        }
        if let Some(ids) = ids {
            if !cols.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(b"\"_id\":");
            write_int(out, ids.value(row));
        }
        out.push(b'}');
        if let Some(ends) = ends.as_deref_mut() {
            ends.push(out.len());
        }
        out.push(b'\n');
    }
}

/// One row as a JSON object (no newline), for dead-letter entries.
pub fn row_json(batch: &RecordBatch, row: usize) -> String {
    let columns: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| !weir_config::is_hidden(n))
        .collect();
    let one = batch.slice(row, 1);
    let mut out = Vec::new();
    encode_json_rows(&one, &columns, &mut out);
    out.pop();
    String::from_utf8_lossy(&out).into_owned()
}

/// How a protobuf sink encodes each column.
struct ProtoField {
    column: String,
    number: u32,
    kind: prost_reflect::Kind,
}

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
    /// sinks then stage each epoch until its checkpoint completes.
    pub fn open(
        sink: &Sink,
        transactional: Option<Option<EpochPlace>>,
        log_part: Option<Option<&[u8]>>,
    ) -> Result<Self, EngineError> {
        let checkpointing = log_part.is_some();
        let restored = log_part.flatten();
        let connector = |c: Result<Box<dyn SinkConnector>, ConnectError>, dest: String| {
            let json = !matches!(sink.kind, SinkKind::Postgres(_));
            c.map(|c| (Target::Connector(c, dest, json), Encoding::Json))
                .map_err(|e| EngineError::Worker(format!("sink {}: {e}", sink.name)))
        };
        let (target, encoding) = match &sink.kind {
            SinkKind::Nats(c) => connector(
                weir_nats::open_sink(&sink.name, c, checkpointing, restored),
                format!("NATS subject {} at {}", c.subject, c.servers.join(",")),
            )?,
            SinkKind::Mqtt(c) => connector(
                weir_mqtt::open_sink(&sink.name, c, checkpointing, restored),
                format!("MQTT topic {} at {}:{}", c.topic, c.host, c.port),
            )?,
            SinkKind::Kafka(c) => connector(
                weir_kafka::open_sink(&sink.name, c, checkpointing, restored),
                format!("Kafka topic {} at {}", c.topic, c.brokers),
            )?,
            SinkKind::Postgres(c) => connector(
                weir_postgres::open_sink(
                    &sink.name,
                    c,
                    &sink.columns,
                    &sink.input_schema,
                    checkpointing,
                    restored,
                ),
                format!(
                    "PostgreSQL table {} at {}:{}/{}",
                    c.table, c.host, c.port, c.database
                ),
            )?,
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
                        TxnFile::open(&sink.name, path, restored)?,
                        path.display().to_string(),
                    ),
                    None => {
                        let file = File::create(path).map_err(|e| {
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
                        let mut fields = Vec::new();
                        for c in &sink.columns {
                            let f = message.get_field_by_name(c).ok_or_else(|| {
                                EngineError::build(
                                    &sink.name,
                                    format!("message {} has no field {c:?}", message.full_name()),
                                )
                            })?;
                            fields.push(ProtoField {
                                column: c.clone(),
                                number: f.number(),
                                kind: f.kind(),
                            });
                        }
                        Encoding::Protobuf(fields)
                    }
                };
                (target, encoding)
            }
        };
        Ok(SinkWriter {
            name: sink.name.clone(),
            columns: sink.columns.clone(),
            encoding,
            target,
            buf: Vec::new(),
            ends: Vec::new(),
            records: 0,
        })
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
                    EngineError::Worker(format!("sink {}: output without ids", self.name))
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
                .map_err(|e| EngineError::Worker(format!("sink {}: {e}", self.name)));
        }
        match &self.encoding {
            Encoding::Json => encode_json_rows_with_id(batch, &self.columns, &mut self.buf),
            Encoding::Protobuf(fields) => encode_proto_rows(batch, fields, &mut self.buf)
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
                return c
                    .prepare(id)
                    .map_err(|e| EngineError::Worker(format!("sink {}: {e}", self.name)))
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
            return c
                .commit(id)
                .map_err(|e| EngineError::Worker(format!("sink {}: {e}", self.name)));
        }
        if let Target::Txn(t, _) = &mut self.target {
            t.commit(id).map_err(|e| {
                EngineError::io(
                    format!(
                        "sink {}: cannot commit output to {}",
                        self.name,
                        t.path().display()
                    ),
                    e,
                )
            })?;
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
                    .map_err(|e| EngineError::Worker(format!("sink {}: {e}", self.name)))
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

fn encode_proto_rows(
    batch: &RecordBatch,
    fields: &[ProtoField],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    use prost_reflect::Kind as K;
    let cols: Vec<(&ProtoField, Arc<dyn Array>)> = fields
        .iter()
        .map(|f| {
            batch
                .column_by_name(&f.column)
                .cloned()
                .map(|a| (f, a))
                .ok_or_else(|| format!("missing column {}", f.column))
        })
        .collect::<Result<_, _>>()?;
    let mut msg = Vec::new();
    for row in 0..batch.num_rows() {
        msg.clear();
        for (f, a) in &cols {
            if a.is_null(row) {
                continue;
            }
            let as_i64 = || -> Option<i64> {
                let any = a.as_any();
                any.downcast_ref::<Int64Array>()
                    .map(|x| x.value(row))
                    .or_else(|| {
                        any.downcast_ref::<Int32Array>()
                            .map(|x| x.value(row) as i64)
                    })
                    .or_else(|| {
                        any.downcast_ref::<UInt32Array>()
                            .map(|x| x.value(row) as i64)
                    })
                    .or_else(|| {
                        any.downcast_ref::<UInt64Array>()
                            .map(|x| x.value(row) as i64)
                    })
                    .or_else(|| {
                        any.downcast_ref::<BooleanArray>()
                            .map(|x| x.value(row) as i64)
                    })
            };
            let as_f64 = || -> Option<f64> {
                let any = a.as_any();
                any.downcast_ref::<Float64Array>()
                    .map(|x| x.value(row))
                    .or_else(|| {
                        any.downcast_ref::<Float32Array>()
                            .map(|x| x.value(row) as f64)
                    })
                    .or_else(|| as_i64().map(|v| v as f64))
            };
            let bad = || {
                format!(
                    "column {} cannot be written as protobuf {:?}",
                    f.column, f.kind
                )
            };
            match f.kind {
                K::Double => {
                    let v = as_f64().ok_or_else(bad)?;
                    put_varint(&mut msg, ((f.number as u64) << 3) | 1);
                    msg.extend_from_slice(&v.to_le_bytes());
                }
                K::Float => {
                    let v = as_f64().ok_or_else(bad)? as f32;
                    put_varint(&mut msg, ((f.number as u64) << 3) | 5);
                    msg.extend_from_slice(&v.to_le_bytes());
                }
                K::Int64 | K::Int32 | K::Uint64 | K::Uint32 | K::Bool => {
                    let v = as_i64().ok_or_else(bad)?;
                    if v != 0 {
                        put_varint(&mut msg, (f.number as u64) << 3);
                        put_varint(&mut msg, v as u64);
                    }
                }
                K::Sint64 | K::Sint32 => {
                    let v = as_i64().ok_or_else(bad)?;
                    if v != 0 {
                        put_varint(&mut msg, (f.number as u64) << 3);
                        put_varint(&mut msg, ((v << 1) ^ (v >> 63)) as u64);
                    }
                }
                K::String => {
                    let s = a
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(bad)?
                        .value(row);
                    if !s.is_empty() {
                        put_varint(&mut msg, ((f.number as u64) << 3) | 2);
                        put_varint(&mut msg, s.len() as u64);
                        msg.extend_from_slice(s.as_bytes());
                    }
                }
                _ => return Err(bad()),
            }
        }
        put_varint(out, msg.len() as u64);
        out.extend_from_slice(&msg);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        let mut out = Vec::new();
        json_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c\\nd\\u0001é\""
        );
    }

    #[test]
    fn rows_as_json() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(UInt64Array::from(vec![1, 2])) as ArrayRef),
            (
                "score",
                Arc::new(Float64Array::from(vec![Some(0.5), None])) as ArrayRef,
            ),
            ("c", Arc::new(StringArray::from(vec!["x", "y"])) as ArrayRef),
        ])
        .unwrap();
        let mut out = Vec::new();
        encode_json_rows(&batch, &["id".into(), "score".into(), "c".into()], &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"id\":1,\"score\":0.5,\"c\":\"x\"}\n{\"id\":2,\"score\":null,\"c\":\"y\"}\n"
        );
    }
}
