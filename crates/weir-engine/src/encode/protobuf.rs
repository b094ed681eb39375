//! Length-delimited Protobuf messages for file sinks, encoded from Arrow
//! columns by the field numbers and kinds of a message loaded at run time.

use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};

use crate::frame::put_varint;

/// How one column is written: its field's number and kind.
pub(crate) struct ProtoField {
    column: String,
    number: u32,
    kind: prost_reflect::Kind,
}

/// The fields of `message` for `columns`, in order; an error names a
/// column the message has no field for.
pub(crate) fn fields(
    message: &prost_reflect::MessageDescriptor,
    columns: &[String],
) -> Result<Vec<ProtoField>, String> {
    columns
        .iter()
        .map(|c| {
            let f = message
                .get_field_by_name(c)
                .ok_or_else(|| format!("message {} has no field {c:?}", message.full_name()))?;
            Ok(ProtoField {
                column: c.clone(),
                number: f.number(),
                kind: f.kind(),
            })
        })
        .collect()
}

/// Appends every row of `batch` as one length-delimited message.
pub(crate) fn encode_proto_rows(
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
