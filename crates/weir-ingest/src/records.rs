//! Cutting a request body into records and validating each one.
//!
//! Every format yields, in order, either a record (a slice of the body to
//! append as is) or an error for that record. A broken frame (bad JSON
//! array syntax, a bad Protobuf length prefix) makes the rest of the body
//! unreadable: it is reported once, at the index of the first record that
//! could not be cut out, and nothing after it is returned.
//!
//! Only the first [`MAX_REPORTED_ERRORS`] errors are kept (with their
//! reasons); the rest are counted. A body of millions of invalid records
//! thus costs a counter, not a reason string each.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserializer;
use serde_json::value::RawValue;

/// The body formats the endpoint accepts, chosen by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/x-ndjson` or `application/jsonl`: one JSON object per
    /// line; blank lines are skipped and are not records.
    JsonLines,
    /// `application/json`: one JSON array whose elements are objects.
    JsonArray,
    /// `application/x-protobuf`: messages each preceded by their length as
    /// a base-128 varint (the `writeDelimitedTo` framing).
    DelimitedProtobuf,
}

impl Format {
    /// The format for a `Content-Type` header value (parameters such as
    /// `; charset=utf-8` are ignored, case does not matter), or `None`.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let media = value.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/x-ndjson")
            || media.eq_ignore_ascii_case("application/jsonl")
        {
            Some(Format::JsonLines)
        } else if media.eq_ignore_ascii_case("application/json") {
            Some(Format::JsonArray)
        } else if media.eq_ignore_ascii_case("application/x-protobuf") {
            Some(Format::DelimitedProtobuf)
        } else {
            None
        }
    }
}

/// How many refused records a [`Split`] keeps, with their reasons; the
/// others are only counted ([`Split::error_count`]).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// A record that was refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RecordError {
    /// Zero-based position of the record in the request.
    pub index: usize,
    /// Why it was refused.
    pub reason: String,
}

/// The records of a body and the errors, both in request order.
#[derive(Debug, Default)]
pub struct Split<'a> {
    /// Valid records, in request order (as the log appends them).
    pub records: Vec<&'a [u8]>,
    /// The first [`MAX_REPORTED_ERRORS`] invalid records (a framing error
    /// included, which is always the last error).
    pub errors: Vec<RecordError>,
    /// How many records were invalid, those not in `errors` included.
    pub error_count: usize,
}

impl<'a> Split<'a> {
    fn push(&mut self, index: usize, result: Result<&'a [u8], String>) {
        match result {
            Ok(r) => self.records.push(r),
            Err(reason) => self.error(index, reason),
        }
    }

    fn error(&mut self, index: usize, reason: String) {
        self.error_count += 1;
        if self.errors.len() < MAX_REPORTED_ERRORS {
            self.errors.push(RecordError { index, reason });
        }
    }

    /// Whether a reason is wanted for the next error (one more fits).
    fn wants_reason(&self) -> bool {
        self.errors.len() < MAX_REPORTED_ERRORS
    }
}

/// Cuts `body` into records of `format` and validates each. The list of
/// records is allocated once, for [`max_records`].
pub fn split(format: Format, body: &[u8]) -> Split<'_> {
    let mut out = Split {
        records: Vec::with_capacity(max_records(format, body)),
        ..Split::default()
    };
    match format {
        Format::JsonLines => json_lines(body, &mut out),
        Format::JsonArray => json_array(body, &mut out),
        Format::DelimitedProtobuf => delimited_protobuf(body, &mut out),
    }
    out
}

/// At least as many records as [`split`] can find in `body`, counted
/// without checking them (one pass over the bytes): the lines of JSON
/// lines, the `{` of a JSON array (every record is an object), the frames
/// of Protobuf. What a request's list of records will take is known before
/// it is built.
pub fn max_records(format: Format, body: &[u8]) -> usize {
    match format {
        Format::JsonLines => body.iter().filter(|&&b| b == b'\n').count() + 1,
        Format::JsonArray => body.iter().filter(|&&b| b == b'{').count(),
        Format::DelimitedProtobuf => {
            let mut pos = 0;
            let mut n = 0;
            while pos < body.len() {
                let Ok((len, k)) = read_varint(&body[pos..]) else {
                    break;
                };
                n += 1;
                pos = match usize::try_from(len)
                    .ok()
                    .and_then(|l| (pos + k).checked_add(l))
                {
                    Some(p) => p,
                    None => break,
                };
            }
            n
        }
    }
}

/// Whether `bytes` is one JSON object, checked without building it. The
/// reason is only formatted when `reason` is set (a body of millions of
/// bad lines formats a hundred).
fn check_object(bytes: &[u8], reason: bool) -> Result<(), Option<String>> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result = de.deserialize_any(ObjectCheck).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(_) if !reason => Err(None),
        Err(e) => Err(Some(
            match serde_json::from_slice::<serde_json::Value>(bytes) {
                Ok(other) => format!("expected a JSON object, found {}", kind(&other)),
                Err(_) => format!("invalid JSON: {e}"),
            },
        )),
    }
}

/// Accepts a JSON object and skips its members; anything else is an error.
struct ObjectCheck;

impl<'de> Visitor<'de> for ObjectCheck {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(())
    }
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn json_lines<'a>(body: &'a [u8], out: &mut Split<'a>) {
    let mut index = 0;
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match check_object(line, out.wants_reason()) {
            Ok(()) => out.records.push(line),
            Err(reason) => out.error(index, reason.unwrap_or_default()),
        }
        index += 1;
    }
}

fn json_array<'a>(body: &'a [u8], out: &mut Split<'a>) {
    let seen = Cell::new(0usize);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = de
        .deserialize_seq(ElementsVisitor { seen: &seen, out })
        .and_then(|()| de.end());
    if let Err(e) = parsed {
        let reason = if e.is_data() && seen.get() == 0 && out.records.is_empty() {
            // Valid JSON but not an array at all.
            format!("expected a JSON array of objects: {e}")
        } else {
            format!("invalid JSON, the rest of the body is unreadable: {e}")
        };
        // A framing error is always reported, as the last error.
        out.error_count += 1;
        if out.errors.len() == MAX_REPORTED_ERRORS {
            out.errors.pop();
        }
        out.errors.push(RecordError {
            index: seen.get(),
            reason,
        });
    }
}

/// Walks the array, slicing each element out of the original bytes.
struct ElementsVisitor<'s, 'o, 'a> {
    seen: &'s Cell<usize>,
    out: &'o mut Split<'a>,
}

impl<'de, 's, 'o> Visitor<'de> for ElementsVisitor<'s, 'o, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element_seed(RawSeed)? {
            let index = self.seen.get();
            let text = raw.get();
            if text.starts_with('{') {
                self.out.records.push(text.as_bytes());
            } else if self.out.wants_reason() {
                let v: serde_json::Value =
                    serde_json::from_str(text).unwrap_or(serde_json::Value::Null);
                let reason = format!("expected a JSON object, found {}", kind(&v));
                self.out.error(index, reason);
            } else {
                self.out.error(index, String::new());
            }
            self.seen.set(index + 1);
        }
        Ok(())
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = &'de RawValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<&'de RawValue, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

fn delimited_protobuf<'a>(body: &'a [u8], out: &mut Split<'a>) {
    let mut pos = 0;
    let mut index = 0;
    while pos < body.len() {
        let (len, n) = match read_varint(&body[pos..]) {
            Ok(v) => v,
            Err(reason) => {
                out.push(index, Err(format!("{reason} at byte {pos}")));
                return;
            }
        };
        let start = pos + n;
        let remaining = (body.len() - start) as u64;
        if len > remaining {
            out.push(
                index,
                Err(format!(
                    "length prefix at byte {pos} says {len} bytes but only {remaining} remain"
                )),
            );
            return;
        }
        let end = start + len as usize;
        out.push(index, Ok(&body[start..end]));
        pos = end;
        index += 1;
    }
}

/// Decodes a base-128 varint; returns the value and the bytes it took.
fn read_varint(buf: &[u8]) -> Result<(u64, usize), &'static str> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().enumerate().take(10) {
        if i == 9 && b > 1 {
            return Err("length prefix overflows 64 bits");
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    if buf.len() >= 10 {
        Err("length prefix longer than 10 bytes")
    } else {
        Err("truncated length prefix")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recs<'a>(s: &Split<'a>) -> Vec<&'a [u8]> {
        s.records.clone()
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::JsonLines)
        );
        assert_eq!(
            Format::from_content_type("Application/JSONL; charset=utf-8"),
            Some(Format::JsonLines)
        );
        assert_eq!(
            Format::from_content_type("application/json;charset=utf-8"),
            Some(Format::JsonArray)
        );
        assert_eq!(
            Format::from_content_type(" application/x-protobuf "),
            Some(Format::DelimitedProtobuf)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        assert_eq!(Format::from_content_type(""), None);
    }

    #[test]
    fn json_lines_skip_blank_lines_and_strip_cr() {
        let s = split(Format::JsonLines, b"{\"a\":1}\r\n\n  \n{\"b\":2}");
        assert!(s.errors.is_empty());
        assert_eq!(recs(&s), vec![&b"{\"a\":1}"[..], b"{\"b\":2}"]);
    }

    #[test]
    fn json_lines_errors_are_indexed_by_record() {
        let s = split(Format::JsonLines, b"{\"a\":1}\n\n[1]\n{bad\n{}\n");
        assert_eq!(recs(&s), vec![&b"{\"a\":1}"[..], b"{}"]);
        assert_eq!(s.errors.len(), 2);
        assert_eq!(s.errors[0].index, 1);
        assert_eq!(s.errors[0].reason, "expected a JSON object, found an array");
        assert_eq!(s.errors[1].index, 2);
        assert!(s.errors[1].reason.starts_with("invalid JSON"));
    }

    #[test]
    fn json_array_slices_elements() {
        let body = b" [ {\"a\": 1} ,\n {\"b\":[1,2]}, 3, \"x\", {} ] ";
        let s = split(Format::JsonArray, body);
        assert_eq!(recs(&s), vec![&b"{\"a\": 1}"[..], b"{\"b\":[1,2]}", b"{}"]);
        assert_eq!(
            s.errors,
            vec![
                RecordError {
                    index: 2,
                    reason: "expected a JSON object, found a number".into()
                },
                RecordError {
                    index: 3,
                    reason: "expected a JSON object, found a string".into()
                },
            ]
        );
    }

    #[test]
    fn json_array_syntax_error_stops_at_the_broken_element() {
        let s = split(Format::JsonArray, b"[{\"a\":1},{\"b\":]");
        assert_eq!(recs(&s), vec![&b"{\"a\":1}"[..]]);
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].index, 1);
        let s = split(Format::JsonArray, b"{\"a\":1}");
        assert!(s.records.is_empty());
        assert_eq!(s.errors[0].index, 0);
        assert!(s.errors[0].reason.starts_with("expected a JSON array"));
        let s = split(Format::JsonArray, b"[{}] x");
        assert_eq!(s.errors.len(), 1);
        assert_eq!(s.errors[0].index, 1);
        let s = split(Format::JsonArray, b"[]");
        assert!(s.records.is_empty() && s.errors.is_empty());
    }

    #[test]
    fn protobuf_framing() {
        let mut body = vec![3, 1, 2, 3, 0];
        body.push(0x82);
        body.push(0x01);
        body.extend(std::iter::repeat_n(7u8, 130));
        let s = split(Format::DelimitedProtobuf, &body);
        assert!(s.errors.is_empty());
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.records[0], &[1, 2, 3]);
        assert_eq!(s.records[1], &[] as &[u8]);
        assert_eq!(s.records[2].len(), 130);

        let s = split(Format::DelimitedProtobuf, &[2, 9, 9, 5, 1]);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.errors[0].index, 1);
        assert_eq!(
            s.errors[0].reason,
            "length prefix at byte 3 says 5 bytes but only 1 remain"
        );
        let s = split(Format::DelimitedProtobuf, &[1, 9, 0x80]);
        assert_eq!(s.errors[0].reason, "truncated length prefix at byte 2");
        let s = split(Format::DelimitedProtobuf, &[0xff; 12]);
        assert_eq!(s.errors[0].index, 0);
        assert!(s.errors[0].reason.contains("overflows"));
    }

    #[test]
    fn only_the_first_errors_keep_their_reasons() {
        let mut body = b"{}\n".repeat(3);
        body.extend(b"x\n".repeat(250));
        body.extend(b"[]\n");
        let s = split(Format::JsonLines, &body);
        assert_eq!(s.records.len(), 3);
        assert_eq!(s.error_count, 251);
        assert_eq!(s.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(s.errors[0].index, 3);
        assert_eq!(s.errors[99].index, 102);
        assert!(s.errors[99].reason.starts_with("invalid JSON"));

        // A JSON array's framing error is reported even past the cap.
        let mut body = b"[".to_vec();
        body.extend(b"1,".repeat(150));
        body.extend(b"{}, oops]");
        let s = split(Format::JsonArray, &body);
        assert_eq!(s.records, vec![&b"{}"[..]]);
        assert_eq!(s.error_count, 151);
        assert_eq!(s.errors.len(), MAX_REPORTED_ERRORS);
        assert_eq!(s.errors[98].index, 98);
        assert_eq!(s.errors[99].index, 151);
        assert!(s.errors[99]
            .reason
            .contains("the rest of the body is unreadable"));
    }

    #[test]
    fn objects_are_checked_without_trailing_garbage() {
        let s = split(
            Format::JsonLines,
            b"{\"a\":{\"b\":[1,{}]}}\n{} x\n{\"a\":1,}\n\"s\"\n",
        );
        assert_eq!(s.records, vec![&b"{\"a\":{\"b\":[1,{}]}}"[..]]);
        assert_eq!(s.error_count, 3);
        assert!(s.errors[0]
            .reason
            .starts_with("invalid JSON: trailing characters"));
        assert!(s.errors[1].reason.starts_with("invalid JSON"));
        assert_eq!(s.errors[2].reason, "expected a JSON object, found a string");
    }

    #[test]
    fn max_records_bounds_what_split_finds() {
        let cases: [(Format, &[u8]); 6] = [
            (Format::JsonLines, b"{}\n\n{\"a\":{}}\nx"),
            (Format::JsonLines, b""),
            (Format::JsonArray, b"[{\"a\":{}}, 1, {}]"),
            (Format::JsonArray, b"{}"),
            (Format::DelimitedProtobuf, &[2, 1, 2, 0, 1, 7]),
            (Format::DelimitedProtobuf, &[2, 1, 2, 9, 1]),
        ];
        let bounds: Vec<usize> = cases.iter().map(|(f, b)| max_records(*f, b)).collect();
        assert_eq!(bounds, vec![4, 1, 3, 1, 3, 2]);
        for (f, b) in cases {
            assert!(split(f, b).records.len() <= max_records(f, b));
        }
    }

    #[test]
    fn varints() {
        assert_eq!(read_varint(&[0]), Ok((0, 1)));
        assert_eq!(read_varint(&[0xac, 0x02]), Ok((300, 2)));
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(read_varint(&max), Ok((u64::MAX, 10)));
    }
}
