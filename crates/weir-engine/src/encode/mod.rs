//! Encoding records for the outside world: the counterpart of `decode`.
//!
//! Sinks write JSON lines (with the output id `_id`) or length-delimited
//! Protobuf; dead letters and taps show decoded records as JSON objects.

mod json;
pub(crate) mod protobuf;

pub(crate) use json::encode_json;
pub use json::{encode_json_rows, encode_json_rows_with_id, json_string, row_json};
