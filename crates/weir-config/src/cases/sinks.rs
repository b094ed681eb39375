use crate::test_support::*;

/// The minimal pipeline with its sink's `type = "discard"` line replaced by
/// `lines`.
fn sink(lines: &str) -> String {
    patched(&minimal(), "type = \"discard\"", lines)
}

/// The minimal pipeline with a `[dead_letter]` table of these lines.
fn dead_letter(lines: &str) -> String {
    patched(
        &minimal(),
        "\n[[sources]]",
        &format!("\n[dead_letter]\n{lines}\n\n[[sources]]"),
    )
}

#[test]
fn sink_problems() {
    check(&[
        case(
            "no sink",
            minimal()[..minimal().find("[[sinks]]").expect("sink")].to_string(),
            "sinks",
            None,
            "a pipeline needs at least one sink (use type = \"discard\" to drop output)",
        ),
        case(
            "misspelt key",
            sink("type = \"file\"\npaht = \"out.jsonl\""),
            "sinks[0].paht",
            Some("paht ="),
            "unknown field `paht`, expected one of `name`, `type`, `input`, `path`, `format`, `proto`, `message`, `columns`, `stream`",
        ),
        case(
            "unknown column",
            sink("type = \"stdout\"\ncolumns = [\"id\", \"nope\"]"),
            "sinks[0].columns[1]",
            Some("columns ="),
            "unknown column \"nope\" (available: id, card, amount, ts)",
        ),
        case(
            "protobuf without message",
            sink("type = \"file\"\npath = \"out.pb\"\nformat = \"protobuf\"\nproto = \"e.proto\""),
            "sinks[0].proto",
            Some("format = \"protobuf\""),
            "protobuf output needs `proto` and `message`",
        ),
        case(
            "unknown format",
            sink("type = \"file\"\npath = \"out.csv\"\nformat = \"csv\""),
            "sinks[0].format",
            Some("format = \"csv\""),
            "unknown format \"csv\" (expected \"json\" or \"protobuf\")",
        ),
        case(
            "proto for JSON",
            sink("type = \"file\"\npath = \"out.jsonl\"\nproto = \"e.proto\""),
            "sinks[0].proto",
            Some("proto ="),
            "`proto` and `message` apply to format = \"protobuf\" only",
        ),
        case(
            "stdout with a path",
            sink("type = \"stdout\"\npath = \"out.jsonl\""),
            "sinks[0].format",
            Some("[[sinks]]"),
            "a stdout sink writes JSON lines and takes no path",
        ),
        case(
            "file without path",
            sink("type = \"file\""),
            "sinks[0].path",
            Some("type = \"file\""),
            "a file sink needs `path`",
        ),
        case(
            "protobuf into a log",
            sink("type = \"log\"\npath = \"log\"\nstream = \"s\"\nformat = \"protobuf\"\nproto = \"e.proto\"\nmessage = \"E\""),
            "sinks[0].format",
            Some("format = \"protobuf\""),
            "a log sink writes JSON records (their `_id` is how replays are recognised)",
        ),
        case(
            "log without stream",
            sink("type = \"log\"\npath = \"log\""),
            "sinks[0].stream",
            Some("type = \"log\""),
            "a log sink needs `path` (the log directory) and `stream`",
        ),
        case(
            "unknown type",
            sink("type = \"s3\""),
            "sinks[0].type",
            Some("type = \"s3\""),
            "unknown sink type \"s3\" (expected stdout, file, log, discard, nats, mqtt, kafka or postgres)",
        ),
        case(
            "stream on a file sink",
            sink("type = \"file\"\npath = \"out.jsonl\"\nstream = \"s\""),
            "sinks[0].stream",
            Some("stream ="),
            "`stream` applies to log sinks only",
        ),
    ]);
}

#[test]
fn dead_letter_problems() {
    check(&[
        case(
            "misspelt key",
            dead_letter("paht = \"dl.jsonl\""),
            "dead_letter.paht",
            Some("paht ="),
            "unknown field `paht`, expected one of `path`, `log`, `stream`",
        ),
        case(
            "file and log",
            dead_letter("path = \"dl.jsonl\"\nlog = \"log\"\nstream = \"dl\""),
            "dead_letter.path",
            Some("path ="),
            "give either `path` (a file) or `log` and `stream` (a log stream), not both",
        ),
        case(
            "log without stream",
            dead_letter("log = \"log\""),
            "dead_letter.stream",
            Some("log ="),
            "a dead-letter log stream needs both `log` (the log directory) and `stream`",
        ),
    ]);
}

#[test]
fn sinks_and_dead_letter_are_read() {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let p = parse(&sink(
        "type = \"file\"\npath = \"out.pb\"\nformat = \"protobuf\"\nproto = \"e.proto\"\nmessage = \"E\"\ncolumns = [\"amount\", \"id\"]",
    ))
    .expect("valid");
    assert_eq!(
        p.sinks[0].kind,
        crate::SinkKind::File {
            path: base.join("out.pb"),
            format: crate::SinkFormat::Protobuf(crate::ProtoMessage {
                schema_file: base.join("e.proto"),
                message: "E".into(),
            }),
        }
    );
    assert_eq!(p.sinks[0].columns, ["amount", "id"]);
    assert_eq!(p.dead_letter.path, base.join("dead_letter.jsonl"));
    assert_eq!(p.dead_letter.log, None);

    let p = parse(&dead_letter("log = \"log\"\nstream = \"dl\"")).expect("valid");
    assert_eq!(p.sinks[0].kind, crate::SinkKind::Discard);
    assert_eq!(p.sinks[0].columns, ["id", "card", "amount", "ts"]);
    assert_eq!(
        p.dead_letter.log,
        Some((base.join("log"), "dl".to_string()))
    );
}
