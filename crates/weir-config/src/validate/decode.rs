//! The decode step: wire format, declared fields (the schema every later
//! step starts from), event time and record size bound.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;

use arrow_schema::{DataType, SchemaRef};

use super::schema::PortInfo;
use crate::check::{resolve, Checker};
use crate::spec::DecodeSpec;
use crate::{Decode, DecodeFormat, ProtoMessage, StepKind};

/// Checks a decode step at `path`; its output schema is the declared fields
/// and the hidden columns.
pub(super) fn check_decode(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &DecodeSpec,
    base_dir: &Path,
) -> Option<(StepKind, SchemaRef, PortInfo)> {
    let format = decode_format(c, path, span, s, base_dir)?;
    let mut ok = true;
    let fields = declared_fields(c, path, span, s, &mut ok);
    let bound = match &s.max_out_of_orderness {
        Some(d) => match crate::parse_duration_ms(d) {
            Ok(ms) => ms,
            Err(e) => {
                c.at(
                    format!("{path}.max_out_of_orderness"),
                    span,
                    "max_out_of_orderness",
                    e,
                );
                ok = false;
                0
            }
        },
        None => 0,
    };
    if let Some(t) = &s.event_time {
        ok &= check_event_time(c, path, span, t, &fields);
    }
    let max_record_bytes = match s.max_record_bytes {
        None => 1 << 20,
        Some(n) if n > 0 => n as usize,
        Some(n) => {
            c.at(
                format!("{path}.max_record_bytes"),
                span,
                "max_record_bytes",
                format!("must be positive, got {n}"),
            );
            ok = false;
            1
        }
    };
    if !ok {
        return None;
    }
    let schema = crate::decoded_schema(&fields);
    let info = PortInfo {
        schema: schema.clone(),
        key: None,
        event_time: s.event_time.clone().map(|t| (t, bound)),
    };
    Some((
        StepKind::Decode(Decode {
            format,
            event_time: s.event_time.clone(),
            max_out_of_orderness_ms: bound,
            max_record_bytes,
        }),
        schema,
        info,
    ))
}

/// JSON, or Protobuf with a schema file that exists and a message name.
fn decode_format(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &DecodeSpec,
    base_dir: &Path,
) -> Option<DecodeFormat> {
    match s.format.as_str() {
        "json" => Some(DecodeFormat::Json),
        "protobuf" => match (&s.proto, &s.message) {
            (Some(proto), Some(_)) if !resolve(base_dir, proto).is_file() => {
                let missing = resolve(base_dir, proto);
                c.at(
                    format!("{path}.proto"),
                    span,
                    "proto",
                    format!("schema file {} does not exist", missing.display()),
                );
                None
            }
            (Some(proto), Some(message)) => Some(DecodeFormat::Protobuf(ProtoMessage {
                schema_file: resolve(base_dir, proto),
                message: message.clone(),
            })),
            _ => {
                c.at(format!("{path}.proto"), span, "format", "protobuf decoding needs `proto` (a .proto file or descriptor set) and `message` (the full message name)");
                None
            }
        },
        other => {
            c.at(
                format!("{path}.format"),
                span,
                "format",
                format!("unknown format {other:?} (expected \"json\" or \"protobuf\")"),
            );
            None
        }
    }
}

/// The declared fields as (name, type, optional); `ok` turns false when
/// one is wrong or none is declared.
fn declared_fields(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &DecodeSpec,
    ok: &mut bool,
) -> Vec<(String, DataType, bool)> {
    let mut fields = Vec::new();
    let mut names = HashSet::new();
    for (i, f) in s.fields.iter().enumerate() {
        let Some(t) = crate::field_type(&f.kind) else {
            c.at(format!("{path}.fields[{i}].type"), span, "fields", format!("unknown type {:?} for field {:?} (expected bool, i32, i64, u32, u64, f32, f64 or string)", f.kind, f.name));
            *ok = false;
            continue;
        };
        if crate::is_hidden(&f.name) || !names.insert(f.name.clone()) {
            c.at(
                format!("{path}.fields[{i}].name"),
                span,
                "fields",
                format!("field name {:?} is reserved or repeated", f.name),
            );
            *ok = false;
        }
        fields.push((f.name.clone(), t, f.optional));
    }
    if fields.is_empty() {
        c.at(
            format!("{path}.fields"),
            span,
            "fields",
            "declare at least one field",
        );
        *ok = false;
    }
    fields
}

/// The event-time column must be a required integer field; false when it
/// is not (reported).
fn check_event_time(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    t: &str,
    fields: &[(String, DataType, bool)],
) -> bool {
    let message = match fields.iter().find(|(n, _, _)| n == t) {
        Some((
            _,
            DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64,
            false,
        )) => return true,
        Some((_, _, true)) => format!("event time {t:?} must be a required field, not optional"),
        Some((_, other, _)) => {
            format!("event time {t:?} must be an integer field (milliseconds), it is {other}")
        }
        None => format!("event time {t:?} is not a declared field"),
    };
    c.at(format!("{path}.event_time"), span, "event_time", message);
    false
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// The base pipeline's `fields` array.
    const FIELDS: &str = "fields = [\n  { name = \"id\", type = \"u64\" },\n  { name = \"card\", type = \"string\" },\n  { name = \"amount\", type = \"f64\" },\n  { name = \"ts\", type = \"i64\" },\n]";

    #[test]
    fn decode_problems() {
        let base = minimal();
        check(&[
            case(
                "missing fields",
                patched(
                    &patched(&base, FIELDS, ""),
                    "event_time = \"ts\"\n",
                    "",
                ),
                "steps[0]",
                Some("name = \"decode\""),
                "missing field `fields`",
            ),
            case(
                "unknown key",
                patched(
                    &patched(&base, "fields = [", "columns = ["),
                    "event_time = \"ts\"\n",
                    "",
                ),
                "steps[0].columns",
                Some("columns = ["),
                "unknown field `columns`, expected one of `name`, `type`, `input`, `format`, `fields`, `proto`, `message`, `event_time`, `max_out_of_orderness`, `max_record_bytes`",
            ),
            case(
                "unknown format",
                patched(&base, "format = \"json\"", "format = \"csv\""),
                "steps[0].format",
                Some("format ="),
                "unknown format \"csv\" (expected \"json\" or \"protobuf\")",
            ),
            case(
                "protobuf without message",
                patched(&base, "format = \"json\"", "format = \"protobuf\"\nproto = \"Cargo.toml\""),
                "steps[0].proto",
                Some("format ="),
                "protobuf decoding needs `proto` (a .proto file or descriptor set) and `message` (the full message name)",
            ),
            case(
                "missing schema file",
                patched(
                    &base,
                    "format = \"json\"",
                    "format = \"protobuf\"\nproto = \"/nonexistent/events.proto\"\nmessage = \"E\"",
                ),
                "steps[0].proto",
                Some("proto ="),
                "schema file /nonexistent/events.proto does not exist",
            ),
            case(
                "unknown field type",
                patched(&base, "type = \"string\"", "type = \"text\""),
                "steps[0].fields[1].type",
                Some("fields = ["),
                "unknown type \"text\" for field \"card\" (expected bool, i32, i64, u32, u64, f32, f64 or string)",
            ),
            case(
                "repeated field",
                patched(&base, "name = \"card\"", "name = \"id\""),
                "steps[0].fields[1].name",
                Some("fields = ["),
                "field name \"id\" is reserved or repeated",
            ),
            case(
                "reserved field",
                patched(&base, "name = \"card\"", "name = \"__card\""),
                "steps[0].fields[1].name",
                Some("fields = ["),
                "field name \"__card\" is reserved or repeated",
            ),
            Case {
                what: "no fields",
                text: patched(
                    &base,
                    FIELDS,
                    "fields = []",
                ),
                problems: vec![
                    ("steps[0].fields", Some("fields = []"), "declare at least one field"),
                    (
                        "steps[0].event_time",
                        Some("event_time ="),
                        "event time \"ts\" is not a declared field",
                    ),
                ],
            },
            case(
                "bound that is no duration",
                patched(&base, "\"5s\"", "\"5 seconds\""),
                "steps[0].max_out_of_orderness",
                Some("max_out_of_orderness ="),
                "unknown duration unit \"seconds\" in \"5 seconds\" (use ms, s, m or h)",
            ),
            case(
                "optional event time",
                patched(&base, "type = \"i64\"", "type = \"i64\", optional = true"),
                "steps[0].event_time",
                Some("event_time ="),
                "event time \"ts\" must be a required field, not optional",
            ),
            case(
                "event time that is not an integer",
                patched(&base, "event_time = \"ts\"", "event_time = \"amount\""),
                "steps[0].event_time",
                Some("event_time ="),
                "event time \"amount\" must be an integer field (milliseconds), it is Float64",
            ),
            case(
                "undeclared event time",
                patched(&base, "event_time = \"ts\"", "event_time = \"time\""),
                "steps[0].event_time",
                Some("event_time ="),
                "event time \"time\" is not a declared field",
            ),
            case(
                "record bound that is not positive",
                patched(&base, "event_time = \"ts\"", "event_time = \"ts\"\nmax_record_bytes = 0"),
                "steps[0].max_record_bytes",
                Some("max_record_bytes ="),
                "must be positive, got 0",
            ),
        ]);
    }

    #[test]
    fn decode_is_read() {
        let p = parse(&minimal()).expect("valid");
        let crate::StepKind::Decode(d) = &p.steps[0].kind else {
            panic!("not a decode step: {:?}", p.steps[0].kind)
        };
        assert_eq!(
            *d,
            crate::Decode {
                format: crate::DecodeFormat::Json,
                event_time: Some("ts".into()),
                max_out_of_orderness_ms: 5000,
                max_record_bytes: 1 << 20,
            }
        );
        let names: Vec<&str> = p.steps[0]
            .output_schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        assert_eq!(
            names,
            [
                "id",
                "card",
                "amount",
                "ts",
                crate::POSITION_COLUMN,
                crate::PRIOR_MAX_TIME_COLUMN
            ]
        );
    }
}
