//! Checks a pipeline file and builds the typed [`Pipeline`].
//!
//! Problems are collected rather than stopping at the first, so a user sees
//! everything wrong with a file in one `weir validate` run. Each step's
//! schema is derived from its input's, so an expression is checked against
//! exactly the columns that will reach it.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::de::DeserializeOwned;
use toml::Spanned;

use crate::error::LineIndex;
use crate::spec::*;
use crate::*;

/// Collects problems with their locations.
pub(crate) struct Checker<'a> {
    lines: LineIndex<'a>,
    problems: Vec<Problem>,
}

impl<'a> Checker<'a> {
    pub(crate) fn at(
        &mut self,
        path: String,
        span: &Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) {
        let line = Some(self.lines.key_line(span, key));
        self.problems.push(Problem {
            path,
            line,
            message: message.into(),
        });
    }

    /// Deserializes a component table, reporting serde's words (unknown
    /// field, wrong type, missing field) at the offending key.
    pub(crate) fn typed<T: DeserializeOwned>(
        &mut self,
        path: &str,
        table: &Spanned<toml::Table>,
    ) -> Option<T> {
        match toml::Value::Table(table.get_ref().clone()).try_into::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let message = e.message().trim().to_string();
                // Parsing the component's own text again gives the position
                // of the offending value, which the table has lost.
                let located = self
                    .lines
                    .section(&table.span())
                    .and_then(|(text, first_line)| {
                        let err = toml::from_str::<T>(text).err()?;
                        let at = err.span()?.start;
                        let line_text = text[..at].rsplit('\n').next().unwrap_or("");
                        let key = line_text.split('=').next().unwrap_or("").trim().to_string();
                        let line = first_line + text[..at].matches('\n').count();
                        Some((line, key))
                    });
                let key = backticked(&message).filter(|_| !message.starts_with("missing field"));
                let (line, key) = match (located, key) {
                    (_, Some(k)) => (self.lines.key_line(&table.span(), &k), Some(k)),
                    (Some((line, k)), None) => (
                        line,
                        Some(k).filter(|k| !k.is_empty() && !k.contains(['{', '['])),
                    ),
                    (None, None) => (self.lines.line(table.span().start), None),
                };
                let field = match key {
                    Some(k) => format!("{path}.{k}"),
                    None => path.to_string(),
                };
                self.problems.push(Problem {
                    path: field,
                    line: Some(line),
                    message,
                });
                None
            }
        }
    }
}

/// First `name` in a serde message such as "unknown field `wher`, expected ...".
fn backticked(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

fn type_of(table: &toml::Table) -> Option<&str> {
    table.get("type").and_then(|v| v.as_str())
}

pub(crate) fn resolve(base_dir: &Path, p: &str) -> std::path::PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn parse_port(text: &str) -> Port {
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

/// A step after its own checks, before the graph is known.
struct Pending {
    index: usize,
    span: Range<usize>,
    name: String,
    input: Port,
    spec: PendingKind,
}

/// A sink as written: one of the built-in kinds or a connector.
enum AnySinkSpec {
    Plain(Box<SinkSpec>),
    Connector(Box<crate::connectors::ConnectorSinkSpec>),
}

impl AnySinkSpec {
    fn name(&self) -> &String {
        match self {
            AnySinkSpec::Plain(s) => &s.name,
            AnySinkSpec::Connector(s) => &s.name,
        }
    }

    fn input(&self) -> &str {
        match self {
            AnySinkSpec::Plain(s) => &s.input,
            AnySinkSpec::Connector(s) => &s.input,
        }
    }

    fn columns(&self) -> &Option<Vec<String>> {
        match self {
            AnySinkSpec::Plain(s) => &s.columns,
            AnySinkSpec::Connector(s) => &s.columns,
        }
    }
}

enum PendingKind {
    Decode(DecodeSpec),
    Filter(FilterSpec),
    Derive(DeriveSpec),
    Select(SelectSpec),
    KeyBy(KeyBySpec),
    Window(WindowSpec),
    Model(ModelSpec),
    Route(RouteSpec),
}

const STEP_TYPES: &str = "decode, filter, derive, select, key_by, window, model, route";

pub(crate) fn validate(text: &str, base_dir: &Path) -> Result<Pipeline, Vec<Problem>> {
    let lines = LineIndex::new(text);
    let file: FileSpec = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let line = e.span().map(|s| lines.line(s.start));
            let message = e.message().trim().to_string();
            let path = backticked(&message).unwrap_or_else(|| "(file)".into());
            return Err(vec![Problem {
                path,
                line,
                message,
            }]);
        }
    };
    let mut c = Checker {
        lines,
        problems: Vec::new(),
    };

    let settings = check_settings(&mut c, file.settings.as_ref());

    // Source.
    let mut source = None;
    if file.sources.len() != 1 {
        c.problems.push(Problem {
            path: "sources".into(),
            line: file.sources.get(1).map(|s| c.lines.line(s.span().start)),
            message: format!(
                "a pipeline has exactly one source at present, found {}",
                file.sources.len()
            ),
        });
    }
    if let Some(table) = file.sources.first() {
        match type_of(table.get_ref()) {
            Some(kind) if crate::connectors::SOURCE_TYPES.contains(&kind) => {
                source = crate::connectors::check_source(&mut c, table, kind, base_dir, &file.name)
                    .map(|(name, kind)| Source {
                        name,
                        kind,
                        framing: Framing::LengthDelimited,
                    });
                if let Some(s) = &source {
                    check_source_name(&mut c, table, &s.name);
                }
            }
            _ => {
                if let Some(spec) = c.typed::<SourceSpec>("sources[0]", table) {
                    source = check_source(&mut c, table, spec, base_dir);
                }
            }
        }
    }

    // Steps, each on its own.
    let mut pending = Vec::new();
    // Names of steps that failed their own checks: references to them are
    // not reported again.
    let mut failed: HashSet<String> = HashSet::new();
    for (i, table) in file.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        let span = table.span();
        let kind = match type_of(table.get_ref()) {
            Some(k) => k.to_string(),
            None => {
                c.at(
                    path,
                    &span,
                    "type",
                    format!("missing or non-string `type` (one of {STEP_TYPES})"),
                );
                continue;
            }
        };
        let spec = match kind.as_str() {
            "decode" => c.typed(&path, table).map(PendingKind::Decode),
            "filter" => c.typed(&path, table).map(PendingKind::Filter),
            "derive" => c.typed(&path, table).map(PendingKind::Derive),
            "select" => c.typed(&path, table).map(PendingKind::Select),
            "key_by" => c.typed(&path, table).map(PendingKind::KeyBy),
            "window" => c.typed(&path, table).map(PendingKind::Window),
            "model" => c.typed(&path, table).map(PendingKind::Model),
            "route" => c.typed(&path, table).map(PendingKind::Route),
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
        if spec.is_none() {
            if let Some(name) = table.get_ref().get("name").and_then(|v| v.as_str()) {
                failed.insert(name.to_string());
            }
        }
        if let Some(spec) = spec {
            let (name, input) = match &spec {
                PendingKind::Decode(s) => (&s.name, &s.input),
                PendingKind::Filter(s) => (&s.name, &s.input),
                PendingKind::Derive(s) => (&s.name, &s.input),
                PendingKind::Select(s) => (&s.name, &s.input),
                PendingKind::KeyBy(s) => (&s.name, &s.input),
                PendingKind::Window(s) => (&s.name, &s.input),
                PendingKind::Model(s) => (&s.name, &s.input),
                PendingKind::Route(s) => (&s.name, &s.input),
            };
            pending.push(Pending {
                index: i,
                span,
                name: name.clone(),
                input: parse_port(input),
                spec,
            });
        }
    }

    let mut sink_specs = Vec::new();
    for (i, table) in file.sinks.iter().enumerate() {
        let path = format!("sinks[{i}]");
        match type_of(table.get_ref()) {
            Some(kind) if crate::connectors::SINK_TYPES.contains(&kind) => {
                if let Some(spec) = c.typed::<crate::connectors::ConnectorSinkSpec>(&path, table) {
                    sink_specs.push((i, table.span(), AnySinkSpec::Connector(Box::new(spec))));
                }
            }
            _ => {
                if let Some(spec) = c.typed::<SinkSpec>(&path, table) {
                    sink_specs.push((i, table.span(), AnySinkSpec::Plain(Box::new(spec))));
                }
            }
        }
    }
    if file.sinks.is_empty() {
        c.problems.push(Problem {
            path: "sinks".into(),
            line: None,
            message: "a pipeline needs at least one sink (use type = \"discard\" to drop output)"
                .into(),
        });
    }

    let dead_letter = match &file.dead_letter {
        Some(t) => c.typed::<DeadLetterSpec>("dead_letter", t).and_then(|d| {
            let path = resolve(base_dir, d.path.as_deref().unwrap_or("dead_letter.jsonl"));
            match (d.log, d.stream, d.path.is_some()) {
                (None, None, _) => Some(DeadLetter { path, log: None }),
                (Some(log), Some(stream), false) => Some(DeadLetter { path, log: Some((resolve(base_dir, &log), stream)) }),
                (_, _, true) => {
                    c.at("dead_letter.path".into(), &t.span(), "path", "give either `path` (a file) or `log` and `stream` (a log stream), not both");
                    None
                }
                _ => {
                    c.at("dead_letter.stream".into(), &t.span(), "log", "a dead-letter log stream needs both `log` (the log directory) and `stream`");
                    None
                }
            }
        }),
        None => Some(DeadLetter { path: resolve(base_dir, "dead_letter.jsonl"), log: None }),
    };

    let checkpoint = file
        .checkpoint
        .as_ref()
        .and_then(|t| check_checkpoint(&mut c, t, base_dir, source.as_ref()));

    // Names are unique across sources, steps and sinks.
    let mut seen: HashMap<String, String> = HashMap::new();
    if let Some(s) = &source {
        seen.insert(s.name.clone(), "sources[0].name".into());
    }
    for p in &pending {
        let here = format!("steps[{}].name", p.index);
        if let Some(first) = seen.insert(p.name.clone(), here.clone()) {
            c.at(
                here,
                &p.span,
                "name",
                format!("name {:?} is already used by {first}", p.name),
            );
        }
    }
    for (i, span, s) in &sink_specs {
        let here = format!("sinks[{i}].name");
        if let Some(first) = seen.insert(s.name().clone(), here.clone()) {
            c.at(
                here,
                span,
                "name",
                format!("name {:?} is already used by {first}", s.name()),
            );
        }
    }

    // Graph: every input must name the source or a step; following inputs
    // from any step must reach the source (otherwise there is a cycle).
    let by_name: HashMap<&str, usize> = pending
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let source_name = source.as_ref().map(|s| s.name.as_str());
    let mut broken: HashSet<usize> = HashSet::new();
    for (i, p) in pending.iter().enumerate() {
        if Some(p.input.node.as_str()) != source_name
            && !by_name.contains_key(p.input.node.as_str())
        {
            c.at(
                format!("steps[{}].input", p.index),
                &p.span,
                "input",
                format!(
                    "input {:?} is not a source or step of this pipeline",
                    p.input.node
                ),
            );
            broken.insert(i);
        }
    }
    let mut order: Vec<usize> = Vec::new();
    let mut placed: HashSet<usize> = HashSet::new();
    for start in 0..pending.len() {
        let mut chain = vec![start];
        let mut on_chain: HashSet<usize> = HashSet::from([start]);
        let mut cur = start;
        loop {
            let node = pending[cur].input.node.as_str();
            if Some(node) == source_name || broken.contains(&cur) || placed.contains(&cur) {
                break;
            }
            let Some(&next) = by_name.get(node) else {
                break;
            };
            if placed.contains(&next) {
                break;
            }
            if !on_chain.insert(next) {
                let names: Vec<&str> = chain
                    .iter()
                    .rev()
                    .map(|&i| pending[i].name.as_str())
                    .collect();
                let p = &pending[start];
                c.at(
                    format!("steps[{}].input", p.index),
                    &p.span,
                    "input",
                    format!(
                        "steps form a cycle: {} -> {}",
                        names.join(" -> "),
                        pending[next].name
                    ),
                );
                for &i in &chain {
                    broken.insert(i);
                }
                break;
            }
            chain.push(next);
            cur = next;
        }
        for &i in chain.iter().rev() {
            if !broken.contains(&i) && placed.insert(i) {
                order.push(i);
            }
        }
    }

    // Schemas, in dependency order.
    let mut ports: HashMap<String, PortInfo> = HashMap::new();
    let mut steps: Vec<Step> = Vec::new();
    let mut route_outputs: HashMap<String, Vec<String>> = HashMap::new();
    for &i in &order {
        let p = &pending[i];
        let path = format!("steps[{}]", p.index);
        let from_source = Some(p.input.node.as_str()) == source_name;
        let upstream = if from_source {
            None
        } else {
            let Some(info) = ports.get(&p.input.node) else {
                continue;
            };
            if let Some(routes) = route_outputs.get(&p.input.node) {
                match &p.input.output {
                    Some(o) if routes.contains(o) => {}
                    Some(o) => {
                        c.at(
                            format!("{path}.input"),
                            &p.span,
                            "input",
                            format!(
                                "route step {:?} has no route {o:?} (routes: {})",
                                p.input.node,
                                routes.join(", ")
                            ),
                        );
                        continue;
                    }
                    None => {
                        c.at(
                            format!("{path}.input"),
                            &p.span,
                            "input",
                            format!(
                                "{:?} is a route step: name one of its routes, e.g. \"{}.{}\"",
                                p.input.node,
                                p.input.node,
                                routes.first().map(String::as_str).unwrap_or("route")
                            ),
                        );
                        continue;
                    }
                }
            } else if p.input.output.is_some() {
                c.at(
                    format!("{path}.input"),
                    &p.span,
                    "input",
                    format!(
                        "{:?} is not a route step; refer to it without a \".route\" suffix",
                        p.input.node
                    ),
                );
                continue;
            }
            Some(info.clone())
        };
        let is_decode = matches!(p.spec, PendingKind::Decode(_));
        if from_source && !is_decode {
            c.at(
                format!("{path}.input"),
                &p.span,
                "input",
                "steps reading a source must be of type \"decode\"",
            );
            continue;
        }
        if !from_source && is_decode {
            c.at(
                format!("{path}.input"),
                &p.span,
                "input",
                "a decode step must read a source directly",
            );
            continue;
        }
        let built = match (&p.spec, upstream) {
            (PendingKind::Decode(s), None) => check_decode(&mut c, &path, &p.span, s, base_dir),
            (spec, Some(up)) => check_step(&mut c, &path, &p.span, spec, &up, base_dir),
            (_, None) => None,
        };
        let Some((kind, output_schema, info)) = built else {
            continue;
        };
        if let StepKind::Route { routes } = &kind {
            route_outputs.insert(
                p.name.clone(),
                routes.iter().map(|(n, _)| n.clone()).collect(),
            );
        }
        let input_schema = match ports.get(&p.input.node) {
            Some(up) => up.schema.clone(),
            None => Arc::new(Schema::empty()),
        };
        steps.push(Step {
            name: p.name.clone(),
            input: p.input.clone(),
            input_schema,
            output_schema: output_schema.clone(),
            keyed: info.key.is_some(),
            kind,
        });
        ports.insert(p.name.clone(), info);
    }

    // Sinks.
    let mut sinks = Vec::new();
    for (i, span, s) in sink_specs {
        let path = format!("sinks[{i}]");
        let port = parse_port(s.input());
        let Some(info) = ports.get(&port.node) else {
            if failed.contains(&port.node) || pending.iter().any(|p| p.name == port.node) {
                // The step itself was reported.
                continue;
            }
            let why = if Some(port.node.as_str()) == source_name {
                "a sink cannot read a source directly: add a decode step".to_string()
            } else {
                format!("input {:?} is not a step of this pipeline", port.node)
            };
            c.at(format!("{path}.input"), &span, "input", why);
            continue;
        };
        if let Some(routes) = route_outputs.get(&port.node) {
            if !port.output.as_ref().is_some_and(|o| routes.contains(o)) {
                c.at(
                    format!("{path}.input"),
                    &span,
                    "input",
                    format!(
                        "name one of the routes of {:?}: {}",
                        port.node,
                        routes.join(", ")
                    ),
                );
                continue;
            }
        }
        if let Some(sink) = check_sink(&mut c, &path, &span, s, port, info, base_dir, &file.name) {
            sinks.push(sink);
        }
    }

    c.problems.sort_by_key(|p| p.line.unwrap_or(0));
    match (source, dead_letter) {
        (Some(source), Some(dead_letter)) if c.problems.is_empty() => Ok(Pipeline {
            name: file.name,
            base_dir: base_dir.to_path_buf(),
            settings,
            source,
            steps,
            sinks,
            dead_letter,
            checkpoint,
        }),
        _ => {
            if c.problems.is_empty() {
                c.problems.push(Problem {
                    path: "sources".into(),
                    line: None,
                    message: "no valid source".into(),
                });
            }
            Err(c.problems)
        }
    }
}

/// What flows out of a step: its schema and what is known about it.
#[derive(Clone)]
struct PortInfo {
    schema: SchemaRef,
    /// Key column once keyed.
    key: Option<String>,
    /// Event-time column and its out-of-orderness bound.
    event_time: Option<(String, i64)>,
}

fn check_checkpoint(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    base_dir: &Path,
    source: Option<&Source>,
) -> Option<CheckpointSettings> {
    let spec = c.typed::<CheckpointSpec>("checkpoint", table)?;
    let span = table.span();
    let interval_ms = match spec.interval.as_deref() {
        None => 1000,
        Some(d) => match crate::parse_duration_ms(d) {
            Ok(ms) if ms >= 1 => ms as u64,
            Ok(_) => {
                c.at(
                    "checkpoint.interval".into(),
                    &span,
                    "interval",
                    "must be at least 1ms",
                );
                return None;
            }
            Err(e) => {
                c.at("checkpoint.interval".into(), &span, "interval", e);
                return None;
            }
        },
    };
    let keep = spec.keep.unwrap_or(3);
    if !(1..=1000).contains(&keep) {
        c.at(
            "checkpoint.keep".into(),
            &span,
            "keep",
            format!("must be between 1 and 1000, got {keep}"),
        );
        return None;
    }
    if let Some(source) = source {
        if !matches!(
            source.kind,
            SourceKind::File { .. } | SourceKind::Log { .. }
        ) && !source.kind.is_connector()
        {
            c.at(
                "checkpoint".into(),
                &span,
                "dir",
                "checkpoints need a source that can be replayed from a position (file, log, nats, mqtt or kafka)",
            );
            return None;
        }
    }
    Some(CheckpointSettings {
        dir: resolve(base_dir, &spec.dir),
        interval_ms,
        keep: keep as usize,
    })
}

fn check_settings(c: &mut Checker<'_>, table: Option<&Spanned<toml::Table>>) -> Settings {
    let mut settings = Settings::default();
    let Some(table) = table else { return settings };
    let Some(spec) = c.typed::<SettingsSpec>("settings", table) else {
        return settings;
    };
    let span = table.span();
    if let Some(n) = spec.batch_rows {
        if !(1..=1_000_000).contains(&n) {
            c.at(
                "settings.batch_rows".into(),
                &span,
                "batch_rows",
                format!("must be between 1 and 1000000, got {n}"),
            );
        } else {
            settings.batch_rows = n as usize;
        }
    }
    if let Some(n) = spec.key_groups {
        if !(1..=32_768).contains(&n) {
            c.at(
                "settings.key_groups".into(),
                &span,
                "key_groups",
                format!("must be between 1 and 32768, got {n}"),
            );
        } else {
            settings.key_groups = n as u32;
        }
    }
    if let Some(n) = spec.shards {
        if n < 0 || n > settings.key_groups as i64 {
            c.at(
                "settings.shards".into(),
                &span,
                "shards",
                format!(
                    "must be between 0 (one per core) and key_groups ({}), got {n}",
                    settings.key_groups
                ),
            );
        } else {
            settings.shards = n as usize;
        }
    }
    settings
}

fn check_source(
    c: &mut Checker<'_>,
    table: &Spanned<toml::Table>,
    s: SourceSpec,
    base_dir: &Path,
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
        "file" => match s.path {
            Some(p) => SourceKind::File {
                path: resolve(base_dir, &p),
            },
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
        "log" => {
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
            SourceKind::Log {
                dir: resolve(base_dir, dir),
                stream: stream.clone(),
                partitions: partitions as u32,
                follow: s.follow.unwrap_or(false),
            }
        }
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

fn check_decode(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &DecodeSpec,
    base_dir: &Path,
) -> Option<(StepKind, SchemaRef, PortInfo)> {
    let mut ok = true;
    let format = match s.format.as_str() {
        "json" => DecodeFormat::Json,
        "protobuf" => match (&s.proto, &s.message) {
            (Some(proto), Some(_)) if !resolve(base_dir, proto).is_file() => {
                let missing = resolve(base_dir, proto);
                c.at(
                    format!("{path}.proto"),
                    span,
                    "proto",
                    format!("schema file {} does not exist", missing.display()),
                );
                return None;
            }
            (Some(proto), Some(message)) => DecodeFormat::Protobuf(ProtoMessage {
                schema_file: resolve(base_dir, proto),
                message: message.clone(),
            }),
            _ => {
                c.at(format!("{path}.proto"), span, "format", "protobuf decoding needs `proto` (a .proto file or descriptor set) and `message` (the full message name)");
                return None;
            }
        },
        other => {
            c.at(
                format!("{path}.format"),
                span,
                "format",
                format!("unknown format {other:?} (expected \"json\" or \"protobuf\")"),
            );
            return None;
        }
    };
    let mut fields = Vec::new();
    let mut names = HashSet::new();
    for (i, f) in s.fields.iter().enumerate() {
        let Some(t) = crate::field_type(&f.kind) else {
            c.at(format!("{path}.fields[{i}].type"), span, "fields", format!("unknown type {:?} for field {:?} (expected bool, i32, i64, u32, u64, f32, f64 or string)", f.kind, f.name));
            ok = false;
            continue;
        };
        if crate::is_hidden(&f.name) || !names.insert(f.name.clone()) {
            c.at(
                format!("{path}.fields[{i}].name"),
                span,
                "fields",
                format!("field name {:?} is reserved or repeated", f.name),
            );
            ok = false;
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
        ok = false;
    }
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
        match fields.iter().find(|(n, _, _)| n == t) {
            Some((
                _,
                DataType::Int64 | DataType::Int32 | DataType::UInt32 | DataType::UInt64,
                false,
            )) => {}
            Some((_, _, true)) => {
                c.at(
                    format!("{path}.event_time"),
                    span,
                    "event_time",
                    format!("event time {t:?} must be a required field, not optional"),
                );
                ok = false;
            }
            Some((_, other, _)) => {
                c.at(
                    format!("{path}.event_time"),
                    span,
                    "event_time",
                    format!(
                        "event time {t:?} must be an integer field (milliseconds), it is {other}"
                    ),
                );
                ok = false;
            }
            None => {
                c.at(
                    format!("{path}.event_time"),
                    span,
                    "event_time",
                    format!("event time {t:?} is not a declared field"),
                );
                ok = false;
            }
        }
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

fn compile_at(
    c: &mut Checker<'_>,
    path: String,
    span: &Range<usize>,
    key: &str,
    src: &str,
    schema: &Schema,
    predicate: bool,
) -> Option<CompiledExpr> {
    let r = if predicate {
        weir_expr::compile_predicate(src, schema)
    } else {
        weir_expr::compile(src, schema)
    };
    match r {
        Ok(e) => Some(e),
        Err(e) => {
            c.at(path, span, key, format!("{e} in {src:?}"));
            None
        }
    }
}

fn with_fields(schema: &Schema, extra: Vec<Field>) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(extra);
    Arc::new(Schema::new(fields))
}

fn check_step(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    spec: &PendingKind,
    up: &PortInfo,
    base_dir: &Path,
) -> Option<(StepKind, SchemaRef, PortInfo)> {
    let schema = up.schema.clone();
    let same = |s: SchemaRef| PortInfo {
        schema: s,
        key: up.key.clone(),
        event_time: up.event_time.clone(),
    };
    match spec {
        PendingKind::Decode(_) => None,
        PendingKind::Filter(s) => {
            let predicate = compile_at(
                c,
                format!("{path}.where"),
                span,
                "where",
                &s.predicate,
                &schema,
                true,
            )?;
            Some((StepKind::Filter { predicate }, schema.clone(), same(schema)))
        }
        PendingKind::Derive(s) => {
            let mut current = schema.as_ref().clone();
            let mut columns = Vec::new();
            let mut ok = true;
            for (name, value) in &s.columns {
                let field = format!("{path}.columns.{name}");
                let Some(src) = value.as_str() else {
                    c.at(field, span, name, "expected an expression string");
                    ok = false;
                    continue;
                };
                if current.field_with_name(name).is_ok() || crate::is_hidden(name) {
                    c.at(
                        field,
                        span,
                        name,
                        format!("column {name:?} already exists or is reserved"),
                    );
                    ok = false;
                    continue;
                }
                match compile_at(c, field, span, name, src, &current, false) {
                    Some(e) => {
                        current = with_fields(
                            &current,
                            vec![Field::new(name, e.data_type().clone(), true)],
                        )
                        .as_ref()
                        .clone();
                        columns.push((name.clone(), e));
                    }
                    None => ok = false,
                }
            }
            if !ok {
                return None;
            }
            let out = Arc::new(current);
            Some((StepKind::Derive { columns }, out.clone(), same(out)))
        }
        PendingKind::Select(s) => {
            let mut fields = Vec::new();
            let mut ok = true;
            for (i, name) in s.columns.iter().enumerate() {
                match schema.field_with_name(name) {
                    Ok(f) if !crate::is_hidden(name) => fields.push(f.clone()),
                    _ => {
                        c.at(
                            format!("{path}.columns[{i}]"),
                            span,
                            "columns",
                            format!("unknown column {name:?} (available: {})", visible(&schema)),
                        );
                        ok = false;
                    }
                }
            }
            if let Some(k) = &up.key {
                if !s.columns.contains(k) {
                    c.at(
                        format!("{path}.columns"),
                        span,
                        "columns",
                        format!("the key column {k:?} must be kept after key_by"),
                    );
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            for f in schema
                .fields()
                .iter()
                .filter(|f| crate::is_hidden(f.name()))
            {
                fields.push(f.as_ref().clone());
            }
            let out = Arc::new(Schema::new(fields));
            let mut info = same(out.clone());
            if let Some((t, _)) = &up.event_time {
                if !s.columns.contains(t) {
                    info.event_time = None;
                }
            }
            Some((
                StepKind::Select {
                    columns: s.columns.clone(),
                },
                out,
                info,
            ))
        }
        PendingKind::KeyBy(s) => {
            if let Some(k) = &up.key {
                c.at(
                    format!("{path}.input"),
                    span,
                    "input",
                    format!("records are already keyed by {k:?}; one key_by per path"),
                );
                return None;
            }
            match schema.field_with_name(&s.key) {
                Ok(f)
                    if matches!(
                        f.data_type(),
                        DataType::Int32
                            | DataType::Int64
                            | DataType::UInt32
                            | DataType::UInt64
                            | DataType::Utf8
                            | DataType::Boolean
                    ) => {}
                Ok(f) => {
                    c.at(
                        format!("{path}.key"),
                        span,
                        "key",
                        format!(
                            "key column {:?} is {}; keys must be integer, string or boolean",
                            s.key,
                            f.data_type()
                        ),
                    );
                    return None;
                }
                Err(_) => {
                    c.at(
                        format!("{path}.key"),
                        span,
                        "key",
                        format!(
                            "unknown column {:?} (available: {})",
                            s.key,
                            visible(&schema)
                        ),
                    );
                    return None;
                }
            }
            let info = PortInfo {
                schema: schema.clone(),
                key: Some(s.key.clone()),
                event_time: up.event_time.clone(),
            };
            Some((StepKind::KeyBy { key: s.key.clone() }, schema, info))
        }
        PendingKind::Window(s) => check_window(c, path, span, s, up),
        PendingKind::Model(s) => {
            let mut ok = true;
            for (i, name) in s.inputs.iter().enumerate() {
                match schema.field_with_name(name) {
                    Ok(f) if f.data_type().is_numeric() => {}
                    Ok(f) => {
                        c.at(
                            format!("{path}.inputs[{i}]"),
                            span,
                            "inputs",
                            format!(
                                "feature {name:?} is {}, features must be numeric",
                                f.data_type()
                            ),
                        );
                        ok = false;
                    }
                    Err(_) => {
                        c.at(
                            format!("{path}.inputs[{i}]"),
                            span,
                            "inputs",
                            format!("unknown column {name:?} (available: {})", visible(&schema)),
                        );
                        ok = false;
                    }
                }
            }
            if s.inputs.is_empty() || s.outputs.is_empty() {
                c.at(
                    format!("{path}.inputs"),
                    span,
                    "inputs",
                    "a model step needs at least one input and one output column",
                );
                ok = false;
            }
            let mut extra = Vec::new();
            for (i, name) in s.outputs.iter().enumerate() {
                if schema.field_with_name(name).is_ok() || crate::is_hidden(name) {
                    c.at(
                        format!("{path}.outputs[{i}]"),
                        span,
                        "outputs",
                        format!("output column {name:?} already exists or is reserved"),
                    );
                    ok = false;
                }
                extra.push(Field::new(name, DataType::Float64, true));
            }
            let model_path = resolve(base_dir, &s.path);
            if !model_path.is_file() {
                c.at(
                    format!("{path}.path"),
                    span,
                    "path",
                    format!("model file {} does not exist", model_path.display()),
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            let out = with_fields(&schema, extra);
            Some((
                StepKind::Model(Model {
                    path: model_path,
                    inputs: s.inputs.clone(),
                    outputs: s.outputs.clone(),
                }),
                out.clone(),
                same(out),
            ))
        }
        PendingKind::Route(s) => {
            let mut routes = Vec::new();
            let mut ok = true;
            for (name, value) in &s.routes {
                let field = format!("{path}.routes.{name}");
                let Some(src) = value.as_str() else {
                    c.at(field, span, name, "expected a predicate string");
                    ok = false;
                    continue;
                };
                match compile_at(c, field, span, name, src, &schema, true) {
                    Some(e) => routes.push((name.clone(), e)),
                    None => ok = false,
                }
            }
            if routes.is_empty() && ok {
                c.at(
                    format!("{path}.routes"),
                    span,
                    "routes",
                    "declare at least one route",
                );
                ok = false;
            }
            if !ok {
                return None;
            }
            Some((StepKind::Route { routes }, schema.clone(), same(schema)))
        }
    }
}

fn visible(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !crate::is_hidden(n))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_window(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
    up: &PortInfo,
) -> Option<(StepKind, SchemaRef, PortInfo)> {
    let schema = &up.schema;
    let Some(key) = up.key.clone() else {
        c.at(
            format!("{path}.input"),
            span,
            "input",
            "a window needs keyed input: put a key_by step before it",
        );
        return None;
    };
    let Some((time_column, bound)) = up.event_time.clone() else {
        c.at(
            format!("{path}.input"),
            span,
            "input",
            "a window needs event time: set `event_time` on the decode step",
        );
        return None;
    };
    let mut ok = true;
    let size_ms = match crate::parse_duration_ms(&s.size) {
        Ok(ms) if ms > 0 => ms,
        Ok(_) => {
            c.at(
                format!("{path}.size"),
                span,
                "size",
                "window size must be positive",
            );
            ok = false;
            1
        }
        Err(e) => {
            c.at(format!("{path}.size"), span, "size", e);
            ok = false;
            1
        }
    };
    let kind = match (s.kind.as_str(), &s.slide) {
        ("sliding", None) => WindowKind::Sliding,
        ("tumbling", None) => WindowKind::Tumbling,
        ("hopping", Some(slide)) => match crate::parse_duration_ms(slide) {
            Ok(ms) if ms > 0 && ms <= size_ms => WindowKind::Hopping { slide_ms: ms },
            Ok(_) => {
                c.at(
                    format!("{path}.slide"),
                    span,
                    "slide",
                    "slide must be positive and at most the window size",
                );
                return None;
            }
            Err(e) => {
                c.at(format!("{path}.slide"), span, "slide", e);
                return None;
            }
        },
        ("hopping", None) => {
            c.at(
                format!("{path}.slide"),
                span,
                "kind",
                "a hopping window needs `slide`",
            );
            return None;
        }
        ("sliding" | "tumbling", Some(_)) => {
            c.at(
                format!("{path}.slide"),
                span,
                "slide",
                "`slide` applies to hopping windows only",
            );
            return None;
        }
        (other, _) => {
            c.at(
                format!("{path}.kind"),
                span,
                "kind",
                format!("unknown window kind {other:?} (expected sliding, tumbling or hopping)"),
            );
            return None;
        }
    };
    let late = match s.late.as_deref() {
        None | Some("dead_letter") => LatePolicy::DeadLetter,
        Some("update") => LatePolicy::Update,
        Some(other) => {
            c.at(
                format!("{path}.late"),
                span,
                "late",
                format!(
                    "unknown late-event policy {other:?} (expected \"dead_letter\" or \"update\")"
                ),
            );
            return None;
        }
    };
    let mut aggregates = Vec::new();
    for (name, value) in &s.aggregates {
        let field = format!("{path}.aggregates.{name}");
        let Some(text) = value.as_str() else {
            c.at(
                field,
                span,
                name,
                "expected an aggregate such as \"sum(amount)\"",
            );
            ok = false;
            continue;
        };
        match parse_aggregate(text, schema) {
            Ok((function, column, data_type)) => {
                if schema.field_with_name(name).is_ok() || crate::is_hidden(name) {
                    c.at(
                        field,
                        span,
                        name,
                        format!("column {name:?} already exists or is reserved"),
                    );
                    ok = false;
                }
                aggregates.push(Aggregate {
                    name: name.clone(),
                    function,
                    column,
                    data_type,
                });
            }
            Err(e) => {
                c.at(field, span, name, e);
                ok = false;
            }
        }
    }
    if aggregates.is_empty() && ok {
        c.at(
            format!("{path}.aggregates"),
            span,
            "aggregates",
            "declare at least one aggregate",
        );
        ok = false;
    }
    if !ok {
        return None;
    }
    let agg_fields: Vec<Field> = aggregates
        .iter()
        .map(|a| Field::new(&a.name, a.data_type.clone(), true))
        .collect();
    let (out, info) = match kind {
        WindowKind::Sliding => {
            let out = with_fields(schema, agg_fields);
            (
                out.clone(),
                PortInfo {
                    schema: out,
                    key: Some(key.clone()),
                    event_time: Some((time_column.clone(), bound)),
                },
            )
        }
        _ => {
            // unwrap: the key column was checked to exist by key_by.
            let key_field = schema
                .field_with_name(&key)
                .map(|f| f.as_ref().clone())
                .unwrap_or_else(|_| Field::new(&key, DataType::Int64, true));
            let mut fields = vec![
                key_field,
                Field::new("window_start", DataType::Int64, false),
                Field::new("window_end", DataType::Int64, false),
            ];
            fields.extend(agg_fields);
            fields.push(Field::new(POSITION_COLUMN, DataType::UInt64, false));
            fields.push(Field::new(PRIOR_MAX_TIME_COLUMN, DataType::Int64, false));
            let out = Arc::new(Schema::new(fields));
            (
                out.clone(),
                PortInfo {
                    schema: out,
                    key: Some(key.clone()),
                    event_time: Some(("window_end".into(), bound)),
                },
            )
        }
    };
    Some((
        StepKind::Window(Window {
            kind,
            size_ms,
            time_column,
            key_column: key,
            max_out_of_orderness_ms: bound,
            aggregates,
            late,
        }),
        out,
        info,
    ))
}

fn parse_aggregate(
    text: &str,
    schema: &Schema,
) -> Result<(AggregateFunction, Option<String>, DataType), String> {
    let t = text.trim();
    let open = t
        .find('(')
        .ok_or_else(|| format!("expected an aggregate such as \"sum(amount)\", got {text:?}"))?;
    if !t.ends_with(')') {
        return Err(format!(
            "expected an aggregate such as \"sum(amount)\", got {text:?}"
        ));
    }
    let func = t[..open].trim().to_ascii_lowercase();
    let arg = t[open + 1..t.len() - 1].trim();
    let function = match func.as_str() {
        "count" => AggregateFunction::Count,
        "sum" => AggregateFunction::Sum,
        "min" => AggregateFunction::Min,
        "max" => AggregateFunction::Max,
        "avg" | "mean" => AggregateFunction::Avg,
        "stddev" | "stddev_samp" => AggregateFunction::StddevSamp,
        "stddev_pop" => AggregateFunction::StddevPop,
        "approx_distinct" | "approx_count_distinct" => AggregateFunction::ApproxDistinct,
        other => {
            return Err(format!(
                "unknown aggregate {other:?} (expected count, sum, min, max, avg, stddev, stddev_pop or approx_distinct)"
            ))
        }
    };
    if arg == "*" {
        return if function == AggregateFunction::Count {
            Ok((function, None, DataType::Int64))
        } else {
            Err(format!("only count accepts *, in {text:?}"))
        };
    }
    let field = schema
        .field_with_name(arg)
        .ok()
        .filter(|_| !crate::is_hidden(arg))
        .ok_or_else(|| {
            format!(
                "unknown column {arg:?} in {text:?} (available: {})",
                visible(schema)
            )
        })?;
    let dt = field.data_type();
    let numeric_int = matches!(
        dt,
        DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
    );
    let numeric = numeric_int || matches!(dt, DataType::Float32 | DataType::Float64);
    let out = match function {
        AggregateFunction::Count | AggregateFunction::ApproxDistinct => DataType::Int64,
        _ if !numeric => return Err(format!("{func} needs a numeric column, {arg:?} is {dt}")),
        AggregateFunction::Sum | AggregateFunction::Min | AggregateFunction::Max => {
            if numeric_int {
                DataType::Int64
            } else {
                DataType::Float64
            }
        }
        _ => DataType::Float64,
    };
    Ok((function, Some(arg.to_string()), out))
}

#[allow(clippy::too_many_arguments)]
fn check_sink(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: AnySinkSpec,
    input: Port,
    up: &PortInfo,
    base_dir: &Path,
    pipeline: &str,
) -> Option<Sink> {
    let schema = up.schema.clone();
    let columns: Vec<String> = match s.columns() {
        Some(cols) => {
            let mut ok = true;
            for (i, name) in cols.iter().enumerate() {
                if schema.field_with_name(name).is_err() || crate::is_hidden(name) {
                    c.at(
                        format!("{path}.columns[{i}]"),
                        span,
                        "columns",
                        format!("unknown column {name:?} (available: {})", visible(&schema)),
                    );
                    ok = false;
                }
            }
            if !ok {
                return None;
            }
            cols.clone()
        }
        None => schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| !crate::is_hidden(n))
            .collect(),
    };
    let s = match s {
        AnySinkSpec::Plain(s) => *s,
        AnySinkSpec::Connector(s) => {
            use crate::connectors::ConnectorSinkKind as K;
            let name = s.name.clone();
            let kind = match crate::connectors::check_sink(c, path, span, *s, base_dir, pipeline)? {
                K::Nats(k) => SinkKind::Nats(k),
                K::Mqtt(k) => SinkKind::Mqtt(k),
                K::Kafka(k) => SinkKind::Kafka(k),
                K::Postgres(k) => SinkKind::Postgres(k),
            };
            return Some(Sink {
                name,
                input,
                kind,
                columns,
                input_schema: schema,
            });
        }
    };
    let format = match (s.format.as_deref(), &s.proto, &s.message) {
        (None | Some("json"), None, None) => SinkFormat::Json,
        (Some("protobuf"), Some(proto), Some(message)) => SinkFormat::Protobuf(ProtoMessage {
            schema_file: resolve(base_dir, proto),
            message: message.clone(),
        }),
        (Some("protobuf"), _, _) => {
            c.at(
                format!("{path}.proto"),
                span,
                "format",
                "protobuf output needs `proto` and `message`",
            );
            return None;
        }
        (Some(other), _, _) if other != "json" => {
            c.at(
                format!("{path}.format"),
                span,
                "format",
                format!("unknown format {other:?} (expected \"json\" or \"protobuf\")"),
            );
            return None;
        }
        _ => {
            c.at(
                format!("{path}.proto"),
                span,
                "proto",
                "`proto` and `message` apply to format = \"protobuf\" only",
            );
            return None;
        }
    };
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
    Some(Sink {
        name: s.name,
        input,
        kind,
        columns,
        input_schema: schema,
    })
}
