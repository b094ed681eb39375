//! Checks a pipeline file and builds the typed [`Pipeline`].
//!
//! Problems are collected rather than stopping at the first, so a user sees
//! everything wrong with a file in one `weir validate` run. Each step's
//! schema is derived from its input's, so an expression is checked against
//! exactly the columns that will reach it.
//!
//! One module per concern: `settings` (settings and checkpoint), `source`,
//! `tables` (step and sink tables read on their own), `decode`, `steps`
//! (filter, derive, select, key_by, model, route), `window`, `sinks` (and
//! the dead letter), `graph` (names, inputs, cycles, order, ports and the
//! resolved [`crate::Graph`]); `schema` holds what flows between steps.
//! This module only wires them together.

mod decode;
mod graph;
mod schema;
mod settings;
mod sinks;
mod source;
mod steps;
mod tables;
mod tasks;
mod window;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::Schema;

use crate::check::{field_named, Checker};
use crate::connectors::Context;
use crate::spec::FileSpec;
use crate::{Checks, Pipeline, Problem, Sink, Step, StepKind};
use schema::PortInfo;
use tables::{parse_port, SinkTable, StepSpec, StepTables};

/// Checks pipeline text (relative paths resolve against `base_dir`): the
/// typed pipeline, or every problem found, in file order.
pub(crate) fn validate(
    text: &str,
    base_dir: &Path,
    checks: &Checks<'_>,
) -> Result<Pipeline, Vec<Problem>> {
    let file = parse_file(text)?;
    let mut c = Checker::new(text);
    let context = Context {
        base_dir,
        pipeline: &file.name,
        checks,
    };
    let settings = settings::check_settings(&mut c, file.settings.as_ref());
    let source = source::check_sources(&mut c, &file.sources, &context);
    let step_tables = tables::read_steps(&mut c, &file.steps);
    let sink_tables = tables::read_sinks(&mut c, &file.sinks);
    let dead_letter = sinks::check_dead_letter(&mut c, file.dead_letter.as_ref(), base_dir);
    let checkpoint = file
        .checkpoint
        .as_ref()
        .and_then(|t| settings::check_checkpoint(&mut c, t, base_dir, source.as_ref()));
    graph::check_names(&mut c, source.as_ref(), &step_tables.steps, &sink_tables);
    // The source's name as written: steps reading it are checked even when
    // the source itself is wrong (its problem is reported once, above).
    let source_name = file
        .sources
        .first()
        .and_then(|t| t.get_ref().get("name"))
        .and_then(|v| v.as_str());
    let order = graph::order(&mut c, &step_tables.steps, source_name, &step_tables.failed);
    let built = build_steps(&mut c, &step_tables, &order, source_name, &context);
    let (sinks, sink_inputs) = build_sinks(
        &mut c,
        sink_tables,
        &built,
        &step_tables,
        source_name,
        &context,
    );
    match (source, dead_letter, built.decode) {
        (Some(source), Some(dead_letter), Some(decode)) if !c.has_problems() => {
            let graph = graph::tree(&built.steps, decode, &built.inputs, &sink_inputs);
            let pipeline = Pipeline {
                name: file.name,
                base_dir: base_dir.to_path_buf(),
                settings,
                source,
                steps: built.steps,
                sinks,
                dead_letter,
                checkpoint,
                graph,
                task: None,
            };
            tasks::check_tasks(
                &mut c,
                &pipeline,
                file.settings.as_ref(),
                file.sources.first(),
                &file.sinks,
                file.dead_letter.as_ref(),
            );
            if c.has_problems() {
                return Err(c.into_problems());
            }
            Ok(pipeline)
        }
        _ => {
            let mut problems = c.into_problems();
            if problems.is_empty() {
                problems.push(Problem {
                    path: "sources".into(),
                    line: None,
                    message: "no valid source".into(),
                });
            }
            Err(problems)
        }
    }
}

/// The file's top level; a TOML syntax error is the only problem reported.
fn parse_file(text: &str) -> Result<FileSpec, Vec<Problem>> {
    toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s| s.start.min(text.len()));
        let line = at.map(|at| Checker::new(text).line(at));
        let message = e.message().trim().to_string();
        // A wrongly typed top-level value: the key on the value's line.
        let key_at = |at: usize| {
            let line_text = text
                .get(..at)
                .unwrap_or("")
                .rsplit('\n')
                .next()
                .unwrap_or("");
            let key = line_text.split('=').next().unwrap_or("").trim();
            (line_text.contains('=') && !key.is_empty() && !key.starts_with('['))
                .then(|| key.to_string())
        };
        let path = field_named(&message)
            .or_else(|| {
                message
                    .starts_with("invalid")
                    .then(|| at.and_then(key_at))
                    .flatten()
            })
            .unwrap_or_else(|| "(file)".into());
        vec![Problem {
            path,
            line,
            message,
        }]
    })
}

/// A checked step's place in the pipeline and what flows out of it.
struct Placed {
    /// Index into the checked steps.
    index: usize,
    info: PortInfo,
}

/// The checked steps, in pipeline order.
struct Built {
    steps: Vec<Step>,
    /// Per step, the step and output port it reads; `None` for the decode.
    inputs: Vec<Option<(usize, usize)>>,
    /// Checked steps by name.
    placed: HashMap<String, Placed>,
    /// The routes of each checked route step, by name.
    routes: HashMap<String, Vec<String>>,
    /// The decode step: the one step reading the source.
    decode: Option<usize>,
}

/// Checks the steps in dependency order, each against what its input
/// yields; a step whose input failed is left out (the input was reported).
fn build_steps(
    c: &mut Checker<'_>,
    tables: &StepTables,
    order: &[usize],
    source_name: Option<&str>,
    context: &Context<'_>,
) -> Built {
    let mut built = Built {
        steps: Vec::new(),
        inputs: Vec::new(),
        placed: HashMap::new(),
        routes: HashMap::new(),
        decode: None,
    };
    for &i in order {
        let p = &tables.steps[i];
        let path = format!("steps[{}]", p.index);
        let node = p.input.node.as_str();
        let from_source = Some(node) == source_name;
        let (upstream, input) = if from_source {
            (None, None)
        } else {
            let Some(up) = built.placed.get(node) else {
                continue;
            };
            let routes = built.routes.get(node);
            let Some(port) = graph::input_port(c, &path, &p.span, &p.input, routes) else {
                continue;
            };
            (Some(up.info.clone()), Some((up.index, port)))
        };
        let is_decode = matches!(p.spec, StepSpec::Decode(_));
        if !graph::check_decode_placement(c, &path, &p.span, from_source, is_decode) {
            continue;
        }
        if let (true, Some(first)) = (from_source, built.decode) {
            c.at(
                format!("{path}.input"),
                &p.span,
                "input",
                format!(
                    "the source is already decoded by step {:?}: one decode step reads the source, other steps read it",
                    built.steps[first].name
                ),
            );
            continue;
        }
        let checked = match (&p.spec, &upstream) {
            (StepSpec::Decode(s), None) => {
                decode::check_decode(c, &path, &p.span, s, context.base_dir)
            }
            (spec, Some(up)) => steps::check_step(c, &path, &p.span, spec, up, context),
            (_, None) => None,
        };
        let Some((kind, output_schema, info)) = checked else {
            continue;
        };
        if let StepKind::Route { routes } = &kind {
            built.routes.insert(
                p.name.clone(),
                routes.iter().map(|(n, _)| n.clone()).collect(),
            );
        }
        let index = built.steps.len();
        if from_source {
            built.decode = Some(index);
        }
        built.steps.push(Step {
            name: p.name.clone(),
            input: p.input.clone(),
            input_schema: upstream.map_or_else(|| Arc::new(Schema::empty()), |up| up.schema),
            output_schema,
            keyed: info.key.is_some(),
            kind,
        });
        built.inputs.push(input);
        built.placed.insert(p.name.clone(), Placed { index, info });
    }
    built
}

/// Checks each sink against the step it reads; returns the checked sinks
/// and, per sink, the step and output port it reads.
fn build_sinks(
    c: &mut Checker<'_>,
    tables: Vec<SinkTable>,
    built: &Built,
    step_tables: &StepTables,
    source_name: Option<&str>,
    context: &Context<'_>,
) -> (Vec<Sink>, Vec<(usize, usize)>) {
    let mut sinks = Vec::new();
    let mut inputs = Vec::new();
    for t in tables {
        let path = format!("sinks[{}]", t.index);
        let input = parse_port(t.spec.input());
        let Some(up) = built.placed.get(&input.node) else {
            let reported = step_tables.failed.contains(&input.node)
                || step_tables.steps.iter().any(|p| p.name == input.node);
            if !reported {
                let why = if Some(input.node.as_str()) == source_name {
                    "a sink cannot read a source directly: add a decode step".to_string()
                } else {
                    format!("input {:?} is not a step of this pipeline", input.node)
                };
                c.at(format!("{path}.input"), &t.span, "input", why);
            }
            continue;
        };
        let routes = built.routes.get(&input.node);
        let Some(port) = graph::input_port(c, &path, &t.span, &input, routes) else {
            continue;
        };
        if let Some(sink) = sinks::check_sink(c, &path, &t.span, t.spec, input, &up.info, context) {
            sinks.push(sink);
            inputs.push((up.index, port));
        }
    }
    (sinks, inputs)
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    #[test]
    fn file_problems() {
        check(&[
            case(
                "TOML syntax",
                patched(&minimal(), "format = \"json\"", "format = json"),
                "(file)",
                Some("format = json"),
                "string values must be quoted, expected literal string",
            ),
            case(
                "unknown top-level key",
                patched(&minimal(), "name = \"cases\"", "name = \"cases\"\nversion = 2"),
                "version",
                Some("version ="),
                "unknown field `version`, expected one of `name`, `settings`, `sources`, `steps`, `sinks`, `dead_letter`, `checkpoint`",
            ),
            case(
                "wrongly typed name",
                patched(&minimal(), "name = \"cases\"", "name = 5"),
                "name",
                Some("name = 5"),
                "invalid type: integer `5`, expected a string",
            ),
            case(
                "no name",
                patched(&minimal(), "name = \"cases\"\n", ""),
                "name",
                // The file's start (a blank line, here).
                Some("\n[[sources]]"),
                "missing field `name`",
            ),
        ]);
    }

    /// `${VAR}` references, as a pipeline file meets them: each problem
    /// once, with its field and line, and never a value from the
    /// environment.
    #[test]
    fn interpolation_problems() {
        const SECRET: &str = "hunter2-very-secret";
        let vars = [("PW", SECRET), ("FRAMING", "csv"), ("DIR", "in")];
        let source = |lines: &str| patched(&minimal(), "type = \"memory\"", lines);
        check_in(
            &[
                case(
                    "unset variable",
                    source("type = \"file\"\npath = \"${DATA}/in.jsonl\""),
                    "sources[0].path",
                    Some("path ="),
                    "environment variable DATA is not set (set it, or give a default: ${DATA:-default})",
                ),
                case(
                    "reference outside a string",
                    patched(&minimal(), "name = \"cases\"", "name = \"cases\"\n\n[settings]\nbatch_rows = ${ROWS}"),
                    "settings.batch_rows",
                    Some("batch_rows ="),
                    "`${` outside a quoted string: variables are put into strings only (write \"${NAME}\")",
                ),
                case(
                    "value the field does not take",
                    source("type = \"stdin\"\nframing = \"${FRAMING}\""),
                    "sources[0].framing",
                    Some("framing ="),
                    "unknown framing \"${FRAMING}\" (expected \"lines\" or \"length_delimited\")",
                ),
                case(
                    "secret in a URL",
                    source("type = \"nats\"\nurl = \"nats://u:${PW}@127.0.0.1\"\nstream = \"S\""),
                    "sources[0].url",
                    Some("url ="),
                    "the URL holds a password: give it with `password_env` or `password_file` instead",
                ),
                case(
                    "secret of the wrong type",
                    patched(&minimal(), "name = \"cases\"", "name = \"cases\"\n\n[settings]\nbatch_rows = \"${PW}\""),
                    "settings.batch_rows",
                    Some("batch_rows ="),
                    "invalid type: string \"${PW}\", expected i64",
                ),
            ],
            &crate::Checks::default(),
            &vars,
        );
        let p = parse_in(
            &source("type = \"file\"\npath = \"${DIR}/${NAME:-events}.jsonl\""),
            &crate::Checks::default(),
            &vars,
        )
        .expect("valid");
        assert_eq!(
            p.source.kind,
            crate::SourceKind::File {
                path: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("in/events.jsonl")
            }
        );
    }

    /// A secret read through a variable named by interpolation stays a
    /// `Secret`: the pipeline's `Debug` names where it came from only.
    #[test]
    fn secrets_stay_out_of_debug() {
        const SECRET: &str = "s3cr3t-token-from-the-environment";
        std::env::set_var("WEIR_CONFIG_CASES_INTERPOLATED_TOKEN", SECRET);
        let text = patched(
            &minimal(),
            "type = \"memory\"",
            "type = \"nats\"\nurl = \"nats://127.0.0.1\"\nstream = \"S\"\ntoken_env = \"${TOKEN_VAR}\"",
        );
        let vars = [("TOKEN_VAR", "WEIR_CONFIG_CASES_INTERPOLATED_TOKEN")];
        let p = parse_in(&text, &crate::Checks::default(), &vars).expect("valid");
        let debug = format!("{p:?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(
            debug
                .contains("Secret(from environment variable WEIR_CONFIG_CASES_INTERPOLATED_TOKEN)"),
            "{debug}"
        );
    }
}
