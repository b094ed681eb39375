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
