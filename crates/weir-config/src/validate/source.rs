//! The `[[sources]]` table: exactly one source, a built-in kind (file,
//! stdin, memory, log) or a connector.

use std::path::Path;

use toml::Spanned;

use crate::check::{resolve, type_of, Checker};
use crate::connectors::{self, Context};
use crate::spec::SourceSpec;
use crate::{Framing, Problem, Source, SourceKind};

/// The pipeline's one source; `None` when there is none or it is wrong.
pub(super) fn check_sources(
    c: &mut Checker<'_>,
    sources: &[Spanned<toml::Table>],
    context: &Context<'_>,
) -> Option<Source> {
    if sources.len() != 1 {
        let line = sources.get(1).map(|s| c.line(s.span().start));
        c.push(Problem {
            path: "sources".into(),
            line,
            message: format!(
                "a pipeline has exactly one source at present, found {}",
                sources.len()
            ),
        });
    }
    let table = sources.first()?;
    match type_of(table.get_ref()) {
        Some(kind) if connectors::is_source(kind) => {
            let (name, kind) = connectors::check_source(c, table, kind, context)?;
            check_source_name(c, table, &name);
            Some(Source {
                name,
                kind,
                framing: Framing::LengthDelimited,
            })
        }
        _ => {
            let spec = c.typed::<SourceSpec>("sources[0]", table)?;
            check_source(c, table, spec, context)
        }
    }
}

/// A source of a built-in kind.
fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    s: SourceSpec,
    context: &Context<'_>,
) -> Option<Source> {
    let span = table.span();
    let framing = match s.framing.as_deref() {
        None | Some("lines") => Framing::Lines,
        Some("length_delimited") => Framing::LengthDelimited,
        Some(other) => {
            c.at(
                "sources[0].framing".into(),
                &span,
                "framing",
                format!("unknown framing {other:?} (expected \"lines\" or \"length_delimited\")"),
            );
            return None;
        }
    };
    let kind = match s.kind.as_str() {
        "file" => match &s.path {
            Some(p) => {
                let path = resolve(context.base_dir, p);
                if context.checks.source_files {
                    check_source_file(c, table, &path);
                }
                SourceKind::File { path }
            }
            None => {
                c.at(
                    "sources[0].path".into(),
                    &span,
                    "type",
                    "a file source needs `path`",
                );
                return None;
            }
        },
        "log" => check_log_source(c, table, &s, context)?,
        "stdin" => SourceKind::Stdin,
        "memory" => SourceKind::Memory,
        other => {
            c.at(
                "sources[0].type".into(),
                &span,
                "type",
                format!("unknown source type {other:?} (expected file, stdin, memory, log, nats, mqtt or kafka)"),
            );
            return None;
        }
    };
    if !matches!(kind, SourceKind::Log { .. })
        && (s.stream.is_some() || s.partitions.is_some() || s.follow.is_some())
    {
        c.at(
            "sources[0].stream".into(),
            &span,
            "stream",
            "`stream`, `partitions` and `follow` apply to log sources only",
        );
        return None;
    }
    check_source_name(c, table, &s.name);
    Some(Source {
        name: s.name,
        kind,
        framing,
    })
}

/// The file a file source reads exists and is a file.
fn check_source_file(c: &mut Checker<'_>, table: &Spanned<toml::Table>, path: &Path) {
    let problem = match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => format!("{} is a directory, not a file", path.display()),
        Ok(_) => return,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            format!("source file {} does not exist", path.display())
        }
        Err(e) => format!("cannot read source file {}: {e}", path.display()),
    };
    c.at("sources[0].path".into(), &table.span(), "path", problem);
}

/// A stream of the durable log.
fn check_log_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    s: &SourceSpec,
    context: &Context<'_>,
) -> Option<SourceKind> {
    let span = table.span();
    let (Some(dir), Some(stream)) = (s.path.as_ref(), s.stream.as_ref()) else {
        c.at(
            "sources[0].stream".into(),
            &span,
            "type",
            "a log source needs `path` (the log directory) and `stream`",
        );
        return None;
    };
    let partitions = s.partitions.unwrap_or(1);
    if !(1..=4096).contains(&partitions) {
        c.at(
            "sources[0].partitions".into(),
            &span,
            "partitions",
            format!("must be between 1 and 4096, got {partitions}"),
        );
        return None;
    }
    Some(SourceKind::Log {
        dir: resolve(context.base_dir, dir),
        stream: stream.clone(),
        partitions: partitions as u32,
        follow: s.follow.unwrap_or(false),
    })
}

/// Source names follow the rules of step names: no `__` prefix, no `.`.
fn check_source_name(c: &mut Checker<'_>, table: &Spanned<toml::Table>, name: &str) {
    if crate::is_hidden(name) || name.contains('.') {
        c.at(
            "sources[0].name".into(),
            &table.span(),
            "name",
            "names may not start with \"__\" or contain \".\"",
        );
    }
}

#[cfg(test)]
mod tests {
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
            // The decode step reads the source that is missing: one problem.
            case(
                "no source",
                patched(&minimal(), "[[sources]]\nname = \"events\"\ntype = \"memory\"\n", ""),
                "sources",
                None,
                "a pipeline has exactly one source at present, found 0",
            ),
            case(
                "unknown key",
                source("type = \"file\"\npaths = \"in.jsonl\""),
                "sources[0].paths",
                Some("paths ="),
                "unknown field `paths`, expected one of `name`, `type`, `path`, `framing`, `stream`, `partitions`, `follow`",
            ),
            case(
                "wrongly typed value",
                source("type = \"file\"\npath = 5"),
                "sources[0].path",
                Some("path = 5"),
                "invalid type: integer `5`, expected a string",
            ),
            case(
                "unknown framing",
                source("type = \"stdin\"\nframing = \"csv\""),
                "sources[0].framing",
                Some("framing ="),
                "unknown framing \"csv\" (expected \"lines\" or \"length_delimited\")",
            ),
            case(
                "file without path",
                source("type = \"file\""),
                "sources[0].path",
                Some("type = \"file\""),
                "a file source needs `path`",
            ),
            case(
                "log without stream",
                source("type = \"log\"\npath = \"log\""),
                "sources[0].stream",
                Some("type = \"log\""),
                "a log source needs `path` (the log directory) and `stream`",
            ),
            case(
                "log with no partitions",
                source("type = \"log\"\npath = \"log\"\nstream = \"s\"\npartitions = 0"),
                "sources[0].partitions",
                Some("partitions ="),
                "must be between 1 and 4096, got 0",
            ),
            case(
                "unknown type",
                source("type = \"s3\""),
                "sources[0].type",
                Some("type = \"s3\""),
                "unknown source type \"s3\" (expected file, stdin, memory, log, nats, mqtt or kafka)",
            ),
            case(
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

    /// What `weir validate` adds: the file a file source reads must exist.
    #[test]
    fn source_file_problems() {
        let base = env!("CARGO_MANIFEST_DIR");
        let missing = format!("source file {base}/in.jsonl does not exist");
        let directory = format!("{base}/src is a directory, not a file");
        struct NoModels;
        impl crate::ModelShapes for NoModels {
            fn shape(&self, _: &std::path::Path) -> Result<crate::ModelShape, String> {
                Err("no model here".into())
            }
        }
        let checks = crate::Checks::all(&NoModels);
        check_in(
            &[
                case(
                    "missing file",
                    source("type = \"file\"\npath = \"in.jsonl\""),
                    "sources[0].path",
                    Some("path ="),
                    &missing,
                ),
                case(
                    "directory",
                    source("type = \"file\"\npath = \"src\""),
                    "sources[0].path",
                    Some("path ="),
                    &directory,
                ),
            ],
            &checks,
            &[],
        );
        // It exists; and without the check a missing file is fine (a run
        // may be handed its input otherwise).
        let exists = source("type = \"file\"\npath = \"Cargo.toml\"");
        assert!(parse_in(&exists, &checks, &[]).is_ok());
        assert!(parse(&source("type = \"file\"\npath = \"in.jsonl\"")).is_ok());
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
}
