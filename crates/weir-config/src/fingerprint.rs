//! What a checkpoint's state means, as one short string: a checkpoint is
//! restored only into a pipeline with the same fingerprint.
//!
//! It covers what gives the saved state its meaning and nothing else: the
//! key group count (keys hash into groups, and state is saved per group)
//! and, per stateful step (the windows, whose state is saved under the
//! step's name, per key), its name, its key column and type, its shape
//! (kind, size, slide, event-time column, out-of-orderness bound, late
//! policy) and its aggregates (output column, function, input column,
//! output type) in order. Everything else may change between runs and keep
//! the checkpoint: steps without state (filters, derives, selects, models,
//! routes, the decode step's other fields), expressions and predicates,
//! sources and sinks, batch sizes, shard counts, checkpoint settings.
//!
//! The text is hashed with FNV-1a, which (unlike `DefaultHasher`) is the
//! same in every Rust version; names are written with their length, so no
//! name can pass for another's text.

use std::fmt::Write;

use arrow_schema::DataType;

use crate::{Aggregate, AggregateFunction, LatePolicy, Pipeline, StepKind, Window, WindowKind};

/// `name@hash`: the pipeline's name and the hash of what its state means.
pub(crate) fn fingerprint(p: &Pipeline) -> String {
    let h = fnv1a(&state_text(p));
    format!("{}@{h:016x}", p.name)
}

/// The text the fingerprint hashes.
pub(crate) fn state_text(p: &Pipeline) -> String {
    let mut text = format!("state/2;key_groups={};", p.settings.key_groups);
    // Only when split, so that earlier checkpoints keep their meaning. A
    // task's state is its key groups' and its partition's: another task's
    // checkpoint does not restore into it.
    if p.settings.tasks > 1 {
        let _ = write!(text, "tasks={};", p.settings.tasks);
    }
    if let Some(t) = &p.task {
        let _ = write!(text, "task={};", t.index);
    }
    for s in &p.steps {
        match &s.kind {
            StepKind::Window(w) => {
                let key_type = s
                    .input_schema
                    .field_with_name(&w.key_column)
                    .map(|f| type_name(f.data_type()))
                    .unwrap_or_else(|_| "?".into());
                text.push_str("window ");
                name(&mut text, &s.name);
                window(&mut text, w, &key_type);
                text.push(';');
            }
            // No state of their own. (A new kind of step with state must be
            // added above: this match lists every kind.)
            StepKind::Decode(_)
            | StepKind::Filter { .. }
            | StepKind::Derive { .. }
            | StepKind::Select { .. }
            | StepKind::KeyBy { .. }
            | StepKind::Model(_)
            | StepKind::Route { .. } => {}
        }
    }
    text
}

/// A window's shape, key and aggregates. Every field of [`Window`] is
/// named here, so a field added to it must be placed in the fingerprint or
/// deliberately left out.
fn window(text: &mut String, w: &Window, key_type: &str) {
    let Window {
        kind,
        size_ms,
        time_column,
        key_column,
        max_out_of_orderness_ms,
        aggregates,
        late,
        // How long fired windows are kept for late events: a retention
        // setting, not the state's meaning; a restore under another one
        // keeps or drops fired windows sooner.
        allowed_lateness_ms: _,
        revision_column,
    } = w;
    let kind = match kind {
        WindowKind::Sliding => "sliding".to_string(),
        WindowKind::Tumbling => "tumbling".to_string(),
        WindowKind::Hopping { slide_ms } => format!("hopping slide={slide_ms}"),
    };
    let late = match late {
        LatePolicy::DeadLetter => "dead_letter",
        LatePolicy::Update => "update",
    };
    let _ = write!(text, " {kind} size={size_ms} time=");
    name(text, time_column);
    let _ = write!(
        text,
        " out_of_orderness={max_out_of_orderness_ms} late={late} key="
    );
    name(text, key_column);
    let _ = write!(text, ":{key_type} aggregates=");
    for a in aggregates {
        aggregate(text, a);
    }
    // Fired windows count their firings in state only for this column.
    if let Some(column) = revision_column {
        text.push_str(" revision=");
        name(text, column);
    }
}

fn aggregate(text: &mut String, a: &Aggregate) {
    let Aggregate {
        name: output,
        function,
        column,
        data_type,
    } = a;
    let function = match function {
        AggregateFunction::Count => "count",
        AggregateFunction::Sum => "sum",
        AggregateFunction::Min => "min",
        AggregateFunction::Max => "max",
        AggregateFunction::Avg => "avg",
        AggregateFunction::StddevSamp => "stddev_samp",
        AggregateFunction::StddevPop => "stddev_pop",
        AggregateFunction::ApproxDistinct => "approx_distinct",
    };
    name(text, output);
    let _ = write!(text, "={function}(");
    match column {
        Some(c) => name(text, c),
        None => text.push('*'),
    }
    let _ = write!(text, "):{},", type_name(data_type));
}

/// A name, preceded by its length in bytes.
fn name(text: &mut String, n: &str) {
    let _ = write!(text, "{}:{n}", n.len());
}

/// The pipeline file's name for a type (`i64`, `string`); Arrow's own for
/// the few a file cannot declare.
fn type_name(t: &DataType) -> String {
    match t {
        DataType::Boolean => "bool".into(),
        DataType::Int32 => "i32".into(),
        DataType::Int64 => "i64".into(),
        DataType::UInt32 => "u32".into(),
        DataType::UInt64 => "u64".into(),
        DataType::Float32 => "f32".into(),
        DataType::Float64 => "f64".into(),
        DataType::Utf8 => "string".into(),
        other => other.to_string(),
    }
}

/// 64-bit FNV-1a.
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{parse, patched};

    /// A pipeline with state: a file source, a decode step, a filter, a
    /// derive, a key_by on `id`, a hopping window, a derive after it, a file
    /// sink, a checkpoint and settings.
    const BASE: &str = r#"name = "fp"

[settings]
batch_rows = 100
shards = 2
key_groups = 64

[checkpoint]
dir = "cp"
interval = "1s"

[dead_letter]
path = "dl.jsonl"

[[sources]]
name = "events"
type = "file"
path = "in.jsonl"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
fields = [
  { name = "id", type = "u64" },
  { name = "card", type = "string" },
  { name = "amount", type = "f64" },
  { name = "ts", type = "i64" },
  { name = "ts2", type = "i64" },
]
event_time = "ts"
max_out_of_orderness = "5s"

[[steps]]
name = "positive"
type = "filter"
input = "decode"
where = "amount > 0"

[[steps]]
name = "more"
type = "derive"
input = "positive"
columns = { amount2 = "amount * 2" }

[[steps]]
name = "by_id"
type = "key_by"
input = "more"
key = "id"

[[steps]]
name = "w"
type = "window"
input = "by_id"
kind = "hopping"
size = "1m"
slide = "10s"
aggregates = { n = "count(*)", total = "sum(amount)", top = "max(amount2)" }

[[steps]]
name = "after"
type = "derive"
input = "w"
columns = { big = "total > 100" }

[[sinks]]
name = "out"
type = "file"
input = "after"
path = "out.jsonl"
"#;

    fn fingerprint_of(text: &str) -> String {
        parse(text)
            .unwrap_or_else(|e| panic!("invalid: {e:?}\n{text}"))
            .fingerprint()
    }

    /// Edits of the base pipeline: what is edited, the text replaced, and
    /// its replacement (several pairs apply in turn).
    type Edit<'a> = (&'a str, &'a [(&'a str, &'a str)]);

    fn edited(edits: &[(&str, &str)]) -> String {
        edits.iter().fold(BASE.to_string(), |text, (from, to)| {
            patched(&text, from, to)
        })
    }

    #[test]
    fn what_gives_state_its_meaning_changes_the_fingerprint() {
        let changes: &[Edit] = &[
            ("aggregate function", &[("sum(amount)", "max(amount)")]),
            ("aggregate input column", &[("max(amount2)", "max(amount)")]),
            (
                "count(*) to count(column)",
                &[("count(*)", "count(amount)")],
            ),
            (
                "aggregate output type",
                &[(
                    "name = \"amount\", type = \"f64\"",
                    "name = \"amount\", type = \"i64\"",
                )],
            ),
            (
                "aggregate output column",
                &[
                    ("total = ", "sum_amount = "),
                    ("total > 100", "sum_amount > 100"),
                ],
            ),
            (
                "aggregate order",
                &[(
                    "n = \"count(*)\", total = \"sum(amount)\"",
                    "total = \"sum(amount)\", n = \"count(*)\"",
                )],
            ),
            ("key column", &[("key = \"id\"", "key = \"card\"")]),
            (
                "key type",
                &[(
                    "name = \"id\", type = \"u64\"",
                    "name = \"id\", type = \"i64\"",
                )],
            ),
            (
                "window kind",
                &[
                    ("kind = \"hopping\"", "kind = \"tumbling\""),
                    ("slide = \"10s\"\n", ""),
                ],
            ),
            ("window size", &[("size = \"1m\"", "size = \"2m\"")]),
            ("window slide", &[("slide = \"10s\"", "slide = \"20s\"")]),
            (
                "event-time column",
                &[("event_time = \"ts\"", "event_time = \"ts2\"")],
            ),
            (
                "out-of-orderness bound",
                &[(
                    "max_out_of_orderness = \"5s\"",
                    "max_out_of_orderness = \"6s\"",
                )],
            ),
            (
                "late policy",
                &[("slide = \"10s\"", "slide = \"10s\"\nlate = \"update\"")],
            ),
            ("key group count", &[("key_groups = 64", "key_groups = 32")]),
            (
                "revision column",
                &[(
                    "slide = \"10s\"",
                    "slide = \"10s\"\nrevision_column = \"rev\"",
                )],
            ),
            (
                "window step name",
                &[
                    ("name = \"w\"", "name = \"w2\""),
                    ("input = \"w\"", "input = \"w2\""),
                ],
            ),
        ];
        let base = fingerprint_of(BASE);
        let same: Vec<&str> = changes
            .iter()
            .filter(|(_, edits)| fingerprint_of(&edited(edits)) == base)
            .map(|(what, _)| *what)
            .collect();
        assert!(
            same.is_empty(),
            "these changes keep the fingerprint: {same:?}"
        );
    }

    #[test]
    fn what_leaves_state_alone_keeps_the_fingerprint() {
        let changes: &[Edit] = &[
            ("filter predicate", &[("where = \"amount > 0\"", "where = \"amount > 1\"")]),
            ("filter step name", &[("name = \"positive\"", "name = \"pos\""), ("input = \"positive\"", "input = \"pos\"")]),
            ("derive expression before the window", &[("amount * 2", "amount * 3")]),
            ("derive after the window", &[("total > 100", "total > 200")]),
            ("a step after the window", &[("columns = { big = \"total > 100\" }", "columns = { big = \"total > 100\", half = \"total / 2\" }")]),
            ("an unused decoded field", &[("  { name = \"ts2\", type = \"i64\" },\n", "  { name = \"ts2\", type = \"i64\" },\n  { name = \"note\", type = \"string\", optional = true },\n")]),
            ("source path", &[("path = \"in.jsonl\"", "path = \"other.jsonl\"")]),
            ("sink path", &[("path = \"out.jsonl\"", "path = \"elsewhere.jsonl\"")]),
            ("sink columns", &[("path = \"out.jsonl\"", "path = \"out.jsonl\"\ncolumns = [\"id\", \"total\"]")]),
            ("dead-letter path", &[("path = \"dl.jsonl\"", "path = \"dead.jsonl\"")]),
            ("batch size", &[("batch_rows = 100", "batch_rows = 5000")]),
            ("shard count", &[("shards = 2", "shards = 8")]),
            ("checkpoint interval", &[("interval = \"1s\"", "interval = \"5s\"")]),
            ("allowed lateness", &[("slide = \"10s\"", "slide = \"10s\"\nallowed_lateness = \"30s\"")]),
        ];
        let base = fingerprint_of(BASE);
        let changed: Vec<&str> = changes
            .iter()
            .filter(|(_, edits)| fingerprint_of(&edited(edits)) != base)
            .map(|(what, _)| *what)
            .collect();
        assert!(
            changed.is_empty(),
            "these changes alter the fingerprint: {changed:?}"
        );
    }

    #[test]
    fn the_text_is_stable() {
        // The hash of this exact text is what earlier checkpoints carry:
        // changing how the text is written refuses them all.
        let p = parse(BASE).expect("valid");
        assert_eq!(
            state_text(&p),
            "state/2;key_groups=64;window 1:w hopping slide=10000 size=60000 time=2:ts \
             out_of_orderness=5000 late=dead_letter key=2:id:u64 \
             aggregates=1:n=count(*):i64,5:total=sum(6:amount):f64,3:top=max(7:amount2):f64,;"
        );
        assert_eq!(
            p.fingerprint(),
            format!("fp@{:016x}", fnv1a(&state_text(&p)))
        );
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }
}
