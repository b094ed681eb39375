//! Typed column builders shared by the decoders.
//!
//! A decoder parses one record into a row of [`Slot`]s (reused, no
//! allocation per record); only a complete, valid row is appended to the
//! columns, so a record rejected halfway leaves nothing behind.

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_buffer::{BooleanBufferBuilder, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, SchemaRef};

/// The decoders' view of a declared field type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// bool
    Bool,
    /// i32
    I32,
    /// i64
    I64,
    /// u32
    U32,
    /// u64
    U64,
    /// f32
    F32,
    /// f64
    F64,
    /// string
    Str,
}

impl Kind {
    /// Kind of an Arrow type from a decoded schema.
    pub fn of(dt: &DataType) -> Option<Kind> {
        Some(match dt {
            DataType::Boolean => Kind::Bool,
            DataType::Int32 => Kind::I32,
            DataType::Int64 => Kind::I64,
            DataType::UInt32 => Kind::U32,
            DataType::UInt64 => Kind::U64,
            DataType::Float32 => Kind::F32,
            DataType::Float64 => Kind::F64,
            DataType::Utf8 => Kind::Str,
            _ => return None,
        })
    }

    /// Name as written in pipeline files.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::I32 => "i32",
            Kind::I64 => "i64",
            Kind::U32 => "u32",
            Kind::U64 => "u64",
            Kind::F32 => "f32",
            Kind::F64 => "f64",
            Kind::Str => "string",
        }
    }
}

/// One parsed value of the record being decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Slot {
    /// Not seen (or null).
    Empty,
    /// Signed integer (i32 and i64 fields).
    Int(i64),
    /// Unsigned integer (u32 and u64 fields).
    UInt(u64),
    /// Float (f32 and f64 fields).
    Float(f64),
    /// Boolean.
    Bool(bool),
    /// String: byte range in the row's string scratch buffer.
    Str(u32, u32),
}

/// A declared field as the decoders see it.
#[derive(Debug, Clone)]
pub struct FieldDecl {
    /// Field name.
    pub name: String,
    /// Type.
    pub kind: Kind,
    /// Whether it may be missing.
    pub optional: bool,
}

/// Reads the declared fields (everything but the hidden columns) of a
/// decoded schema.
pub fn declared_fields(schema: &SchemaRef) -> Vec<FieldDecl> {
    schema
        .fields()
        .iter()
        .filter(|f| !weir_config::is_hidden(f.name()))
        .filter_map(|f| {
            Kind::of(f.data_type()).map(|kind| FieldDecl {
                name: f.name().clone(),
                kind,
                optional: f.is_nullable(),
            })
        })
        .collect()
}

enum Values {
    Bool(BooleanBufferBuilder),
    I32(Vec<i32>),
    I64(Vec<i64>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Str { offsets: Vec<i32>, data: Vec<u8> },
}

struct Column {
    values: Values,
    validity: Option<BooleanBufferBuilder>,
}

/// Builds a record batch row by row from validated slots.
pub struct RowsBuilder {
    schema: SchemaRef,
    columns: Vec<Column>,
    positions: Vec<u64>,
    prior_max: Vec<i64>,
    event_time: Option<usize>,
    running_max: i64,
}

impl RowsBuilder {
    /// A builder for `schema` (a decoded schema: fields, then the hidden
    /// columns); `event_time` is the index of the event-time field.
    pub fn new(
        schema: SchemaRef,
        fields: &[FieldDecl],
        event_time: Option<usize>,
        capacity: usize,
    ) -> Self {
        let columns = fields
            .iter()
            .map(|f| Column {
                values: match f.kind {
                    Kind::Bool => Values::Bool(BooleanBufferBuilder::new(capacity)),
                    Kind::I32 => Values::I32(Vec::with_capacity(capacity)),
                    Kind::I64 => Values::I64(Vec::with_capacity(capacity)),
                    Kind::U32 => Values::U32(Vec::with_capacity(capacity)),
                    Kind::U64 => Values::U64(Vec::with_capacity(capacity)),
                    Kind::F32 => Values::F32(Vec::with_capacity(capacity)),
                    Kind::F64 => Values::F64(Vec::with_capacity(capacity)),
                    Kind::Str => {
                        let mut offsets = Vec::with_capacity(capacity + 1);
                        offsets.push(0);
                        Values::Str {
                            offsets,
                            data: Vec::with_capacity(capacity * 8),
                        }
                    }
                },
                validity: f.optional.then(|| BooleanBufferBuilder::new(capacity)),
            })
            .collect();
        RowsBuilder {
            schema,
            columns,
            positions: Vec::with_capacity(capacity),
            prior_max: Vec::with_capacity(capacity),
            event_time,
            running_max: i64::MIN,
        }
    }

    /// Appends one row. `slots` must hold a value of the right kind for
    /// every required field (the decoders check this first); `strings` is
    /// the scratch buffer `Slot::Str` ranges point into.
    pub fn push(&mut self, slots: &[Slot], strings: &[u8], position: u64) {
        for (col, slot) in self.columns.iter_mut().zip(slots) {
            let present = !matches!(slot, Slot::Empty);
            if let Some(v) = &mut col.validity {
                v.append(present);
            }
            match (&mut col.values, *slot) {
                (Values::Bool(b), Slot::Bool(x)) => b.append(x),
                (Values::Bool(b), _) => b.append(false),
                (Values::I32(v), Slot::Int(x)) => v.push(x as i32),
                (Values::I32(v), _) => v.push(0),
                (Values::I64(v), Slot::Int(x)) => v.push(x),
                (Values::I64(v), _) => v.push(0),
                (Values::U32(v), Slot::UInt(x)) => v.push(x as u32),
                (Values::U32(v), _) => v.push(0),
                (Values::U64(v), Slot::UInt(x)) => v.push(x),
                (Values::U64(v), _) => v.push(0),
                (Values::F32(v), Slot::Float(x)) => v.push(x as f32),
                (Values::F32(v), _) => v.push(0.0),
                (Values::F64(v), Slot::Float(x)) => v.push(x),
                (Values::F64(v), _) => v.push(0.0),
                (Values::Str { offsets, data }, Slot::Str(s, e)) => {
                    data.extend_from_slice(&strings[s as usize..e as usize]);
                    offsets.push(data.len() as i32);
                }
                (Values::Str { offsets, data }, _) => offsets.push(data.len() as i32),
            }
        }
        self.positions.push(position);
        self.prior_max.push(self.running_max);
        if let Some(i) = self.event_time {
            let ts = match slots[i] {
                Slot::Int(x) => x,
                Slot::UInt(x) => x.min(i64::MAX as u64) as i64,
                _ => i64::MIN,
            };
            self.running_max = self.running_max.max(ts);
        }
    }

    /// Rows appended so far.
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    /// Whether no row was appended.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Largest event time among the rows appended (`i64::MIN` if none).
    pub fn max_event_time(&self) -> i64 {
        self.running_max
    }

    /// Finishes the batch.
    pub fn finish(self) -> RecordBatch {
        let rows = self.positions.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len() + 2);
        for col in self.columns {
            let nulls = col.validity.map(|mut v| NullBuffer::new(v.finish()));
            let array: ArrayRef = match col.values {
                Values::Bool(mut b) => Arc::new(BooleanArray::new(b.finish(), nulls)),
                Values::I32(v) => Arc::new(Int32Array::new(ScalarBuffer::from(v), nulls)),
                Values::I64(v) => Arc::new(Int64Array::new(ScalarBuffer::from(v), nulls)),
                Values::U32(v) => Arc::new(UInt32Array::new(ScalarBuffer::from(v), nulls)),
                Values::U64(v) => Arc::new(UInt64Array::new(ScalarBuffer::from(v), nulls)),
                Values::F32(v) => Arc::new(Float32Array::new(ScalarBuffer::from(v), nulls)),
                Values::F64(v) => Arc::new(Float64Array::new(ScalarBuffer::from(v), nulls)),
                Values::Str { offsets, data } => {
                    // The decoders only store validated UTF-8 and offsets are
                    // monotonic by construction.
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                    Arc::new(StringArray::new(offsets, data.into(), nulls))
                }
            };
            arrays.push(array);
        }
        arrays.push(Arc::new(UInt64Array::from(self.positions)));
        arrays.push(Arc::new(Int64Array::from(self.prior_max)));
        debug_assert!(arrays.iter().all(|a| a.len() == rows));
        // unwrap: the arrays are built from the schema's own fields, in order.
        RecordBatch::try_new(self.schema, arrays).expect("decoded columns match their schema")
    }
}
