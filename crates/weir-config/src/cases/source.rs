use crate::test_support::*;

/// The minimal pipeline with its source table's `type = "memory"` line
/// replaced by `lines`.
fn source(lines: &str) -> String {
    patched(&minimal(), "type = \"memory\"", lines)
}

#[test]
fn source_problems() {
    check(&[
        case(
            "two sources",
            patched(
                &minimal(),
                "\n[[steps]]",
                "\n[[sources]]\nname = \"more\"\ntype = \"stdin\"\n\n[[steps]]",
            ),
            "sources",
            Some("[[sources]]\nname = \"more\""),
            "a pipeline has exactly one source at present, found 2",
        ),
        Case {
            what: "no source",
            text: patched(&minimal(), "[[sources]]\nname = \"events\"\ntype = \"memory\"\n", ""),
            problems: vec![
                (
                    "sources",
                    None,
                    "a pipeline has exactly one source at present, found 0",
                ),
                (
                    "steps[0].input",
                    Some("input = \"events\""),
                    "input \"events\" is not a source or step of this pipeline",
                ),
            ],
        },
        source_case(
            "unknown key",
            source("type = \"file\"\npaths = \"in.jsonl\""),
            "sources[0].paths",
            Some("paths ="),
            "unknown field `paths`, expected one of `name`, `type`, `path`, `framing`, `stream`, `partitions`, `follow`",
        ),
        source_case(
            "unknown framing",
            source("type = \"stdin\"\nframing = \"csv\""),
            "sources[0].framing",
            Some("framing ="),
            "unknown framing \"csv\" (expected \"lines\" or \"length_delimited\")",
        ),
        source_case(
            "file without path",
            source("type = \"file\""),
            "sources[0].path",
            Some("type = \"file\""),
            "a file source needs `path`",
        ),
        source_case(
            "log without stream",
            source("type = \"log\"\npath = \"log\""),
            "sources[0].stream",
            Some("type = \"log\""),
            "a log source needs `path` (the log directory) and `stream`",
        ),
        source_case(
            "log with no partitions",
            source("type = \"log\"\npath = \"log\"\nstream = \"s\"\npartitions = 0"),
            "sources[0].partitions",
            Some("partitions ="),
            "must be between 1 and 4096, got 0",
        ),
        source_case(
            "unknown type",
            source("type = \"s3\""),
            "sources[0].type",
            Some("type = \"s3\""),
            "unknown source type \"s3\" (expected file, stdin, memory, log, nats, mqtt or kafka)",
        ),
        source_case(
            "log keys on a file source",
            source("type = \"file\"\npath = \"in.jsonl\"\nfollow = true"),
            "sources[0].stream",
            Some("[[sources]]"),
            "`stream`, `partitions` and `follow` apply to log sources only",
        ),
        case(
            "reserved name",
            patched(
                &patched(&minimal(), "name = \"events\"", "name = \"__events\""),
                "input = \"events\"",
                "input = \"__events\"",
            ),
            "sources[0].name",
            Some("name = \"__events\""),
            "names may not start with \"__\" or contain \".\"",
        ),
        case(
            "reserved name of a connector source",
            patched(
                &source("type = \"nats\"\nurl = \"nats://127.0.0.1\"\nstream = \"S\""),
                "name = \"events\"",
                "name = \"__events\"",
            )
            .replacen("input = \"events\"", "input = \"__events\"", 1),
            "sources[0].name",
            Some("name = \"__events\""),
            "names may not start with \"__\" or contain \".\"",
        ),
    ]);
}

#[test]
fn sources_are_read() {
    let p = parse(&source(
        "type = \"log\"\npath = \"log\"\nstream = \"s\"\npartitions = 3\nfollow = true",
    ))
    .expect("valid");
    assert_eq!(
        p.source.kind,
        crate::SourceKind::Log {
            dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("log"),
            stream: "s".into(),
            partitions: 3,
            follow: true,
        }
    );
    assert_eq!(p.source.record_framing(), crate::Framing::LengthDelimited);
    let p = parse(&source("type = \"stdin\"\nframing = \"length_delimited\"")).expect("valid");
    assert_eq!(p.source.kind, crate::SourceKind::Stdin);
    assert_eq!(p.source.framing, crate::Framing::LengthDelimited);
}
