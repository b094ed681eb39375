//! Step and sink tables read into their serde form, each on its own, before
//! anything is known about the graph: a table with a wrong key or type is
//! reported here and takes no further part.

use std::collections::HashSet;
use std::ops::Range;

use toml::Spanned;

use crate::check::{type_of, Checker};
use crate::connectors::{self, ConnectorSinkSpec};
use crate::spec::*;
use crate::{Port, Problem};

/// The step types, for messages.
const STEP_TYPES: &str = "decode, filter, derive, select, key_by, window, model, route";

/// A step after its own checks, before the graph is known.
pub(super) struct StepTable {
    /// Position in the file's `steps`.
    pub index: usize,
    pub span: Range<usize>,
    pub name: String,
    pub input: Port,
    pub spec: StepSpec,
}

/// A step as written, by type.
pub(super) enum StepSpec {
    Decode(DecodeSpec),
    Filter(FilterSpec),
    Derive(DeriveSpec),
    Select(SelectSpec),
    KeyBy(KeyBySpec),
    Window(WindowSpec),
    Model(ModelSpec),
    Route(RouteSpec),
}

impl StepSpec {
    /// The step's name and input as written.
    fn name_and_input(&self) -> (&String, &String) {
        match self {
            StepSpec::Decode(s) => (&s.name, &s.input),
            StepSpec::Filter(s) => (&s.name, &s.input),
            StepSpec::Derive(s) => (&s.name, &s.input),
            StepSpec::Select(s) => (&s.name, &s.input),
            StepSpec::KeyBy(s) => (&s.name, &s.input),
            StepSpec::Window(s) => (&s.name, &s.input),
            StepSpec::Model(s) => (&s.name, &s.input),
            StepSpec::Route(s) => (&s.name, &s.input),
        }
    }
}

/// The step tables that passed their own checks.
pub(super) struct StepTables {
    pub steps: Vec<StepTable>,
    /// Names of steps that failed their own checks: references to them are
    /// not reported again.
    pub failed: HashSet<String>,
}

/// Reads each step table into the spec of its type.
pub(super) fn read_steps(c: &mut Checker<'_>, tables: &[Spanned<toml::Table>]) -> StepTables {
    let mut steps = Vec::new();
    let mut failed = HashSet::new();
    for (i, table) in tables.iter().enumerate() {
        let path = format!("steps[{i}]");
        let span = table.span();
        let name = table.get_ref().get("name").and_then(|v| v.as_str());
        let Some(kind) = type_of(table.get_ref()) else {
            failed.extend(name.map(str::to_string));
            c.at(
                path,
                &span,
                "type",
                format!("missing or non-string `type` (one of {STEP_TYPES})"),
            );
            continue;
        };
        let spec = match kind {
            "decode" => c.typed(&path, table).map(StepSpec::Decode),
            "filter" => c.typed(&path, table).map(StepSpec::Filter),
            "derive" => c.typed(&path, table).map(StepSpec::Derive),
            "select" => c.typed(&path, table).map(StepSpec::Select),
            "key_by" => c.typed(&path, table).map(StepSpec::KeyBy),
            "window" => c.typed(&path, table).map(StepSpec::Window),
            "model" => c.typed(&path, table).map(StepSpec::Model),
            "route" => c.typed(&path, table).map(StepSpec::Route),
            other => {
                c.at(
                    format!("{path}.type"),
                    &span,
                    "type",
                    format!("unknown step type {other:?} (expected one of {STEP_TYPES})"),
                );
                None
            }
        };
        let Some(spec) = spec else {
            failed.extend(name.map(str::to_string));
            continue;
        };
        let (name, input) = spec.name_and_input();
        steps.push(StepTable {
            index: i,
            span,
            name: name.clone(),
            input: parse_port(input),
            spec,
        });
    }
    StepTables { steps, failed }
}

/// A sink as written: one of the built-in kinds or a connector.
pub(super) enum SinkSpecs {
    Plain(Box<SinkSpec>),
    Connector(Box<ConnectorSinkSpec>),
}

impl SinkSpecs {
    pub fn name(&self) -> &String {
        match self {
            SinkSpecs::Plain(s) => &s.name,
            SinkSpecs::Connector(s) => &s.name,
        }
    }

    pub fn input(&self) -> &str {
        match self {
            SinkSpecs::Plain(s) => &s.input,
            SinkSpecs::Connector(s) => &s.input,
        }
    }

    pub fn columns(&self) -> &Option<Vec<String>> {
        match self {
            SinkSpecs::Plain(s) => &s.columns,
            SinkSpecs::Connector(s) => &s.columns,
        }
    }
}

/// A sink table after its own checks.
pub(super) struct SinkTable {
    /// Position in the file's `sinks`.
    pub index: usize,
    pub span: Range<usize>,
    pub spec: SinkSpecs,
}

/// Reads each sink table into the spec of its kind; a pipeline needs one.
pub(super) fn read_sinks(c: &mut Checker<'_>, tables: &[Spanned<toml::Table>]) -> Vec<SinkTable> {
    let mut sinks = Vec::new();
    for (i, table) in tables.iter().enumerate() {
        let path = format!("sinks[{i}]");
        let spec = match type_of(table.get_ref()) {
            Some(kind) if connectors::is_sink(kind) => c
                .typed::<ConnectorSinkSpec>(&path, table)
                .map(|s| SinkSpecs::Connector(Box::new(s))),
            _ => c
                .typed::<SinkSpec>(&path, table)
                .map(|s| SinkSpecs::Plain(Box::new(s))),
        };
        if let Some(spec) = spec {
            sinks.push(SinkTable {
                index: i,
                span: table.span(),
                spec,
            });
        }
    }
    if tables.is_empty() {
        c.push(Problem {
            path: "sinks".into(),
            line: None,
            message: "a pipeline needs at least one sink (use type = \"discard\" to drop output)"
                .into(),
        });
    }
    sinks
}

/// `node` or `node.output` (a route of a route step).
pub(super) fn parse_port(text: &str) -> Port {
    match text.split_once('.') {
        Some((node, output)) => Port {
            node: node.to_string(),
            output: Some(output.to_string()),
        },
        None => Port {
            node: text.to_string(),
            output: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// A `[[steps]]` table with these lines.
    fn step(lines: &str) -> String {
        format!("\n[[steps]]\n{lines}\n")
    }

    /// The base pipeline with one more step `s` (whose table has these lines
    /// after its name) read by the sink.
    fn one_step(lines: &str) -> String {
        pipeline(&step(&format!("name = \"s\"\n{lines}")), "s")
    }

    #[test]
    fn step_table_problems() {
        check(&[
            // The sink reading the step is not reported as reading nothing.
            case(
                "no type",
                one_step("input = \"decode\""),
                "steps[1]",
                Some("[[steps]]\nname = \"s\""),
                "missing or non-string `type` (one of decode, filter, derive, select, key_by, window, model, route)",
            ),
            case(
                "unknown type",
                one_step("type = \"map\"\ninput = \"decode\""),
                "steps[1].type",
                Some("type = \"map\""),
                "unknown step type \"map\" (expected one of decode, filter, derive, select, key_by, window, model, route)",
            ),
            case(
                "misspelt key",
                one_step("type = \"filter\"\ninput = \"decode\"\nwher = \"amount > 0\""),
                "steps[1].wher",
                Some("wher ="),
                "unknown field `wher`, expected one of `name`, `type`, `input`, `where`",
            ),
            case(
                "missing key",
                one_step("type = \"filter\"\ninput = \"decode\""),
                "steps[1]",
                Some("name = \"s\""),
                "missing field `where`",
            ),
            case(
                "wrongly typed value",
                one_step("type = \"filter\"\ninput = \"decode\"\nwhere = 5"),
                "steps[1].where",
                Some("where ="),
                "invalid type: integer `5`, expected a string",
            ),
            case(
                "wrongly typed duration",
                one_step("type = \"decode\"\ninput = \"events\"\nformat = \"json\"\nfields = []\nmax_out_of_orderness = 5"),
                "steps[1].max_out_of_orderness",
                Some("max_out_of_orderness = 5"),
                "invalid type: integer `5`, expected a string",
            ),
        ]);
    }

    /// A broken step `s` (these lines after its name), then a filter `t`
    /// reading it and read by the sink: only the broken step is reported.
    fn read_by_the_next(lines: &str) -> String {
        let steps = step(&format!("name = \"s\"\n{lines}"))
            + &step("name = \"t\"\ntype = \"filter\"\ninput = \"s\"\nwhere = \"amount > 1\"");
        pipeline(&steps, "t")
    }

    #[test]
    fn a_broken_step_is_reported_once() {
        check(&[
            case(
                "misspelt key",
                read_by_the_next("type = \"filter\"\ninput = \"decode\"\nwher = \"amount > 0\""),
                "steps[1].wher",
                Some("wher ="),
                "unknown field `wher`, expected one of `name`, `type`, `input`, `where`",
            ),
            case(
                "wrongly typed value",
                read_by_the_next("type = \"filter\"\ninput = \"decode\"\nwhere = true"),
                "steps[1].where",
                Some("where = true"),
                "invalid type: boolean `true`, expected a string",
            ),
            case(
                "no type",
                read_by_the_next("input = \"decode\"\nwhere = \"amount > 0\""),
                "steps[1]",
                Some("[[steps]]\nname = \"s\""),
                "missing or non-string `type` (one of decode, filter, derive, select, key_by, window, model, route)",
            ),
            case(
                "unknown type",
                read_by_the_next("type = \"map\"\ninput = \"decode\""),
                "steps[1].type",
                Some("type = \"map\""),
                "unknown step type \"map\" (expected one of decode, filter, derive, select, key_by, window, model, route)",
            ),
            case(
                "expression that does not type-check",
                read_by_the_next("type = \"filter\"\ninput = \"decode\"\nwhere = \"card > 1\""),
                "steps[1].where",
                Some("where = \"card"),
                "cannot compare VARCHAR with BIGINT in \"card > 1\"",
            ),
        ]);
    }

    /// The minimal pipeline with its sink's `type = "discard"` line replaced by
    /// `lines`.
    fn sink(lines: &str) -> String {
        patched(&minimal(), "type = \"discard\"", lines)
    }

    #[test]
    fn sink_table_problems() {
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
        ]);
    }
}
