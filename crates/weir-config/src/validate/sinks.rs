//! Sinks (the columns they write, the built-in kinds; connector sinks are
//! checked by their connector) and the dead-letter destination.

use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use super::schema::{visible, PortInfo};
use super::tables::SinkSpecs;
use crate::check::{resolve, Checker};
use crate::connectors::{self, Context};
use crate::spec::{DeadLetterSpec, SinkSpec};
use crate::{DeadLetter, Port, ProtoMessage, Sink, SinkFormat, SinkKind};

/// Checks the sink at `path` reading `input`, whose records are `up`.
pub(super) fn check_sink(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: SinkSpecs,
    input: Port,
    up: &PortInfo,
    context: &Context<'_>,
) -> Option<Sink> {
    let schema = up.schema.clone();
    let columns = sink_columns(c, path, span, s.columns(), up)?;
    let (name, kind) = match s {
        SinkSpecs::Connector(s) => {
            let name = s.name.clone();
            (name, connectors::check_sink(c, path, span, *s, context)?)
        }
        SinkSpecs::Plain(s) => {
            let kind = plain_sink_kind(c, path, span, &s, context.base_dir)?;
            (s.name, kind)
        }
    };
    Some(Sink {
        name,
        input,
        kind,
        columns,
        input_schema: schema,
    })
}

/// The columns written: those listed, or every visible one.
fn sink_columns(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    listed: &Option<Vec<String>>,
    up: &PortInfo,
) -> Option<Vec<String>> {
    let schema = &up.schema;
    let Some(cols) = listed else {
        return Some(
            schema
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .filter(|n| !crate::is_hidden(n))
                .collect(),
        );
    };
    let mut ok = true;
    for (i, name) in cols.iter().enumerate() {
        if schema.field_with_name(name).is_err() || crate::is_hidden(name) {
            c.at(
                format!("{path}.columns[{i}]"),
                span,
                "columns",
                format!("unknown column {name:?} (available: {})", visible(schema)),
            );
            ok = false;
        }
    }
    ok.then(|| cols.clone())
}

/// A stdout, file, log or discard sink.
fn plain_sink_kind(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &SinkSpec,
    base_dir: &Path,
) -> Option<SinkKind> {
    let format = sink_format(c, path, span, s, base_dir)?;
    let kind = match s.kind.as_str() {
        "stdout" => {
            if format != SinkFormat::Json || s.path.is_some() {
                c.at(
                    format!("{path}.format"),
                    span,
                    "format",
                    "a stdout sink writes JSON lines and takes no path",
                );
                return None;
            }
            SinkKind::Stdout
        }
        "file" => match &s.path {
            Some(p) => SinkKind::File {
                path: resolve(base_dir, p),
                format,
            },
            None => {
                c.at(
                    format!("{path}.path"),
                    span,
                    "type",
                    "a file sink needs `path`",
                );
                return None;
            }
        },
        "discard" => SinkKind::Discard,
        "log" => match (&s.path, &s.stream, &format) {
            (Some(dir), Some(stream), SinkFormat::Json) => SinkKind::Log {
                dir: resolve(base_dir, dir),
                stream: stream.clone(),
            },
            (_, _, SinkFormat::Protobuf(_)) => {
                c.at(
                    format!("{path}.format"),
                    span,
                    "format",
                    "a log sink writes JSON records (their `_id` is how replays are recognised)",
                );
                return None;
            }
            _ => {
                c.at(
                    format!("{path}.stream"),
                    span,
                    "type",
                    "a log sink needs `path` (the log directory) and `stream`",
                );
                return None;
            }
        },
        other => {
            c.at(
                format!("{path}.type"),
                span,
                "type",
                format!("unknown sink type {other:?} (expected stdout, file, log, discard, nats, mqtt, kafka or postgres)"),
            );
            return None;
        }
    };
    if s.stream.is_some() && !matches!(kind, SinkKind::Log { .. }) {
        c.at(
            format!("{path}.stream"),
            span,
            "stream",
            "`stream` applies to log sinks only",
        );
        return None;
    }
    Some(kind)
}

/// JSON (default) or Protobuf with `proto` and `message`.
fn sink_format(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &SinkSpec,
    base_dir: &Path,
) -> Option<SinkFormat> {
    match (s.format.as_deref(), &s.proto, &s.message) {
        (None | Some("json"), None, None) => Some(SinkFormat::Json),
        (Some("protobuf"), Some(proto), Some(message)) => {
            Some(SinkFormat::Protobuf(ProtoMessage {
                schema_file: resolve(base_dir, proto),
                message: message.clone(),
            }))
        }
        (Some("protobuf"), _, _) => {
            c.at(
                format!("{path}.proto"),
                span,
                "format",
                "protobuf output needs `proto` and `message`",
            );
            None
        }
        (Some(other), _, _) if other != "json" => {
            c.at(
                format!("{path}.format"),
                span,
                "format",
                format!("unknown format {other:?} (expected \"json\" or \"protobuf\")"),
            );
            None
        }
        _ => {
            c.at(
                format!("{path}.proto"),
                span,
                "proto",
                "`proto` and `message` apply to format = \"protobuf\" only",
            );
            None
        }
    }
}

/// Where rejected records go: a file (default `dead_letter.jsonl`) or a log
/// stream.
pub(super) fn check_dead_letter(
    c: &mut Checker<'_>,
    table: Option<&Spanned<toml::Table>>,
    base_dir: &Path,
) -> Option<DeadLetter> {
    let Some(t) = table else {
        return Some(DeadLetter {
            path: resolve(base_dir, "dead_letter.jsonl"),
            log: None,
        });
    };
    let d = c.typed::<DeadLetterSpec>("dead_letter", t)?;
    let path = resolve(base_dir, d.path.as_deref().unwrap_or("dead_letter.jsonl"));
    match (d.log, d.stream, d.path.is_some()) {
        (None, None, _) => Some(DeadLetter { path, log: None }),
        (Some(log), Some(stream), false) => Some(DeadLetter {
            path,
            log: Some((resolve(base_dir, &log), stream)),
        }),
        (_, _, true) => {
            c.at(
                "dead_letter.path".into(),
                &t.span(),
                "path",
                "give either `path` (a file) or `log` and `stream` (a log stream), not both",
            );
            None
        }
        _ => {
            c.at(
                "dead_letter.stream".into(),
                &t.span(),
                "log",
                "a dead-letter log stream needs both `log` (the log directory) and `stream`",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
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
}
