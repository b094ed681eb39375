//! JSON lines for sinks and dead letters, written straight from Arrow
//! columns: each column is resolved to its typed array once per batch, and
//! rows are written into one buffer without building values per record.

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, UInt32Array, UInt64Array,
};
use arrow_schema::DataType;

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

pub(crate) fn encode_json(
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

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
