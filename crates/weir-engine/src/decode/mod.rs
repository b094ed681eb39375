//! Decode steps: raw records to Arrow columns, rejects to the dead-letter
//! destination.

pub mod columns;
pub mod json;
pub mod protobuf;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use weir_config::{Decode, DecodeFormat, Framing};

use crate::dead_letter::Rejected;
use crate::EngineError;
use columns::{declared_fields, RowsBuilder, Slot};

enum Parser {
    Json(json::JsonParser),
    Proto(protobuf::ProtoParser),
}

/// A decode step, one per worker thread.
pub struct Decoder {
    step: String,
    schema: SchemaRef,
    fields: Vec<columns::FieldDecl>,
    parser: Parser,
    slots: Vec<Slot>,
    event_time: Option<usize>,
    max_record_bytes: usize,
    framing: Framing,
}

/// Result of decoding one chunk.
pub struct Decoded {
    /// The valid records.
    pub batch: RecordBatch,
    /// Largest event time in the chunk (`i64::MIN` when none).
    pub max_event_time: i64,
}

impl Decoder {
    /// Builds a decoder for a validated decode step.
    pub fn new(
        step: &str,
        config: &Decode,
        schema: SchemaRef,
        framing: Framing,
    ) -> Result<Self, EngineError> {
        let fields = declared_fields(&schema);
        let event_time = config
            .event_time
            .as_ref()
            .and_then(|t| fields.iter().position(|f| &f.name == t));
        let parser = match &config.format {
            DecodeFormat::Json => Parser::Json(json::JsonParser::new(fields.clone())),
            DecodeFormat::Protobuf(spec) => {
                let message =
                    protobuf::load_message(spec).map_err(|e| EngineError::build(step, e))?;
                Parser::Proto(
                    protobuf::ProtoParser::new(fields.clone(), &message)
                        .map_err(|e| EngineError::build(step, e))?,
                )
            }
        };
        Ok(Decoder {
            step: step.to_string(),
            schema,
            slots: vec![Slot::Empty; fields.len()],
            fields,
            parser,
            event_time,
            max_record_bytes: config.max_record_bytes,
            framing,
        })
    }

    /// Decodes every record of a chunk; `first_position` is the source
    /// position of its first record.
    pub fn decode(
        &mut self,
        chunk: &[u8],
        record_count: usize,
        first_position: u64,
        rejected: &mut Vec<Rejected>,
    ) -> Decoded {
        let mut rows = RowsBuilder::new(
            self.schema.clone(),
            &self.fields,
            self.event_time,
            record_count,
        );
        let framed = crate::frame::records(self.framing, chunk);
        for (position, record) in (first_position..).zip(framed) {
            let outcome = match record {
                Err((reason, bytes)) => Err((reason.to_string(), bytes)),
                Ok(bytes) if bytes.len() > self.max_record_bytes => Err((
                    format!(
                        "record of {} bytes is over the limit of {} bytes",
                        bytes.len(),
                        self.max_record_bytes
                    ),
                    bytes,
                )),
                Ok(bytes) => {
                    let (result, strings) = match &mut self.parser {
                        Parser::Json(p) => (p.parse(bytes, &mut self.slots), &p.strings),
                        Parser::Proto(p) => (p.parse(bytes, &mut self.slots), &p.strings),
                    };
                    match result {
                        Ok(()) => {
                            rows.push(&self.slots, strings, position);
                            Ok(())
                        }
                        Err(reason) => Err((reason, bytes)),
                    }
                }
            };
            if let Err((reason, bytes)) = outcome {
                rejected.push(Rejected {
                    step: self.step.clone(),
                    position,
                    reason,
                    bytes: bytes.to_vec(),
                    record: None,
                });
            }
        }
        let max_event_time = rows.max_event_time();
        Decoded {
            batch: rows.finish(),
            max_event_time,
        }
    }
}
