//! Window steps: shape (sliding, tumbling, hopping), size, late-event
//! policy and aggregates, and the schema a window emits.

use std::ops::Range;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema};

use super::schema::{visible, with_fields, PortInfo};
use super::steps::Checked;
use crate::check::Checker;
use crate::spec::WindowSpec;
use crate::{
    Aggregate, AggregateFunction, LatePolicy, StepKind, Window, WindowKind, POSITION_COLUMN,
    PRIOR_MAX_TIME_COLUMN,
};

/// Checks a window step at `path` reading `up`, which must be keyed and
/// carry event time.
pub(super) fn check_window(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
    up: &PortInfo,
) -> Option<Checked> {
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
    let kind = window_kind(c, path, span, s, size_ms)?;
    let late = late_policy(c, path, span, s)?;
    let allowed_lateness_ms = match (&s.allowed_lateness, late) {
        (Some(text), _) => match crate::parse_duration_ms(text) {
            Ok(ms) => ms,
            Err(e) => {
                c.at(
                    format!("{path}.allowed_lateness"),
                    span,
                    "allowed_lateness",
                    e,
                );
                ok = false;
                0
            }
        },
        (None, LatePolicy::Update) => size_ms,
        (None, LatePolicy::DeadLetter) => 0,
    };
    let aggregates = aggregates(c, path, span, s, up, &mut ok);
    let revision_column = revision_column(c, path, span, s, kind, &key, &aggregates, &mut ok);
    if !ok {
        return None;
    }
    let out = output(
        up,
        &key,
        &time_column,
        bound,
        kind,
        &aggregates,
        revision_column.as_deref(),
    );
    Some((
        StepKind::Window(Window {
            kind,
            size_ms,
            time_column,
            key_column: key,
            max_out_of_orderness_ms: bound,
            aggregates,
            late,
            allowed_lateness_ms,
            revision_column,
        }),
        out.schema.clone(),
        out,
    ))
}

/// The window's shape; `slide` goes with hopping windows only.
fn window_kind(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
    size_ms: i64,
) -> Option<WindowKind> {
    let (field, key, message) = match (s.kind.as_str(), &s.slide) {
        ("sliding", None) => return Some(WindowKind::Sliding),
        ("tumbling", None) => return Some(WindowKind::Tumbling),
        ("hopping", Some(slide)) => match crate::parse_duration_ms(slide) {
            Ok(ms) if ms > 0 && ms <= size_ms => return Some(WindowKind::Hopping { slide_ms: ms }),
            Ok(_) => (
                "slide",
                "slide",
                "slide must be positive and at most the window size".to_string(),
            ),
            Err(e) => ("slide", "slide", e),
        },
        ("hopping", None) => ("slide", "kind", "a hopping window needs `slide`".into()),
        ("sliding" | "tumbling", Some(_)) => (
            "slide",
            "slide",
            "`slide` applies to hopping windows only".into(),
        ),
        (other, _) => (
            "kind",
            "kind",
            format!("unknown window kind {other:?} (expected sliding, tumbling or hopping)"),
        ),
    };
    c.at(format!("{path}.{field}"), span, key, message);
    None
}

/// What happens to events behind the watermark (default: dead letter).
fn late_policy(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
) -> Option<LatePolicy> {
    match s.late.as_deref() {
        None | Some("dead_letter") => Some(LatePolicy::DeadLetter),
        Some("update") => Some(LatePolicy::Update),
        Some(other) => {
            c.at(
                format!("{path}.late"),
                span,
                "late",
                format!(
                    "unknown late-event policy {other:?} (expected \"dead_letter\" or \"update\")"
                ),
            );
            None
        }
    }
}

/// The column numbering a fixed window's firings, when declared: a new
/// visible column that is not the sinks' `_id`.
#[allow(clippy::too_many_arguments)]
fn revision_column(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
    kind: WindowKind,
    key: &str,
    aggregates: &[Aggregate],
    ok: &mut bool,
) -> Option<String> {
    let name = s.revision_column.as_deref()?;
    let problem = if kind == WindowKind::Sliding {
        "`revision_column` applies to tumbling and hopping windows only".to_string()
    } else if name.is_empty()
        || crate::is_hidden(name)
        || name == "_id"
        || [key, "window_start", "window_end"].contains(&name)
        || aggregates.iter().any(|a| a.name == name)
    {
        format!("column {name:?} already exists or is reserved")
    } else {
        return Some(name.to_string());
    };
    c.at(
        format!("{path}.revision_column"),
        span,
        "revision_column",
        problem,
    );
    *ok = false;
    None
}

/// The aggregates, each a new column; `ok` turns false when one is wrong
/// or none is declared.
fn aggregates(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    s: &WindowSpec,
    up: &PortInfo,
    ok: &mut bool,
) -> Vec<Aggregate> {
    let schema = &up.schema;
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
            *ok = false;
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
                    *ok = false;
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
                *ok = false;
            }
        }
    }
    if aggregates.is_empty() && *ok {
        c.at(
            format!("{path}.aggregates"),
            span,
            "aggregates",
            "declare at least one aggregate",
        );
        *ok = false;
    }
    aggregates
}

/// What a window emits. A sliding window emits each event with its
/// aggregates appended; the others emit one row per key and window firing
/// (key, bounds, aggregates, the revision when declared), whose event time
/// is the window's end.
fn output(
    up: &PortInfo,
    key: &str,
    time_column: &str,
    bound: i64,
    kind: WindowKind,
    aggregates: &[Aggregate],
    revision_column: Option<&str>,
) -> PortInfo {
    let schema = &up.schema;
    let agg_fields: Vec<Field> = aggregates
        .iter()
        .map(|a| Field::new(&a.name, a.data_type.clone(), true))
        .collect();
    if kind == WindowKind::Sliding {
        return PortInfo {
            schema: with_fields(schema, agg_fields),
            key: Some(key.to_string()),
            event_time: Some((time_column.to_string(), bound)),
        };
    }
    // The key column was checked to exist by key_by.
    let key_field = schema
        .field_with_name(key)
        .map(|f| f.as_ref().clone())
        .unwrap_or_else(|_| Field::new(key, DataType::Int64, true));
    let mut fields = vec![
        key_field,
        Field::new("window_start", DataType::Int64, false),
        Field::new("window_end", DataType::Int64, false),
    ];
    fields.extend(agg_fields);
    if let Some(name) = revision_column {
        fields.push(Field::new(name, DataType::Int64, false));
    }
    fields.push(Field::new(POSITION_COLUMN, DataType::UInt64, false));
    fields.push(Field::new(PRIOR_MAX_TIME_COLUMN, DataType::Int64, false));
    PortInfo {
        schema: Arc::new(Schema::new(fields)),
        key: Some(key.to_string()),
        event_time: Some(("window_end".into(), bound)),
    }
}

/// `function(column)` or `count(*)`: the function, its column and the
/// output type.
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

#[cfg(test)]
mod tests {
    use crate::test_support::*;

    /// The base pipeline with a key_by on `card` and a window `w` (these lines
    /// after its input) read by the sink.
    fn window(lines: &str) -> String {
        pipeline(
            &format!(
                "\n[[steps]]\nname = \"k\"\ntype = \"key_by\"\ninput = \"decode\"\nkey = \"card\"\n\n[[steps]]\nname = \"w\"\ntype = \"window\"\ninput = \"k\"\n{lines}\n"
            ),
            "w",
        )
    }

    /// A tumbling window of `size` with these aggregates.
    fn aggregates(inline_table: &str) -> String {
        window(&format!(
            "kind = \"tumbling\"\nsize = \"1m\"\naggregates = {inline_table}"
        ))
    }

    #[test]
    fn window_problems() {
        check(&[
            case(
                "input that is not keyed",
                patched(&window("kind = \"sliding\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }"), "input = \"k\"", "input = \"decode\""),
                "steps[2].input",
                Some("input = \"decode\"\nkind"),
                "a window needs keyed input: put a key_by step before it",
            ),
            case(
                "no event time",
                patched(&window("kind = \"sliding\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }"), "event_time = \"ts\"\n", ""),
                "steps[2].input",
                Some("input = \"k\""),
                "a window needs event time: set `event_time` on the decode step",
            ),
            case(
                "empty size",
                window("kind = \"sliding\"\nsize = \"0s\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].size",
                Some("size ="),
                "window size must be positive",
            ),
            case(
                "size that is no duration",
                window("kind = \"sliding\"\nsize = \"1w\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].size",
                Some("size ="),
                "unknown duration unit \"w\" in \"1w\" (use ms, s, m or h)",
            ),
            case(
                "slide longer than the window",
                window("kind = \"hopping\"\nsize = \"1m\"\nslide = \"2m\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].slide",
                Some("slide ="),
                "slide must be positive and at most the window size",
            ),
            case(
                "slide that is no duration",
                window("kind = \"hopping\"\nsize = \"1m\"\nslide = \"often\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].slide",
                Some("slide ="),
                "duration \"often\" must start with a whole number, e.g. \"60s\"",
            ),
            case(
                "hopping without slide",
                window("kind = \"hopping\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].slide",
                Some("kind ="),
                "a hopping window needs `slide`",
            ),
            case(
                "slide on a sliding window",
                window("kind = \"sliding\"\nsize = \"1m\"\nslide = \"10s\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].slide",
                Some("slide ="),
                "`slide` applies to hopping windows only",
            ),
            case(
                "unknown kind",
                window("kind = \"session\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].kind",
                Some("kind ="),
                "unknown window kind \"session\" (expected sliding, tumbling or hopping)",
            ),
            case(
                "unknown late policy",
                window("kind = \"sliding\"\nsize = \"1m\"\nlate = \"drop\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].late",
                Some("late ="),
                "unknown late-event policy \"drop\" (expected \"dead_letter\" or \"update\")",
            ),
            case(
                "allowed lateness that is no duration",
                window("kind = \"tumbling\"\nsize = \"1m\"\nallowed_lateness = \"-5s\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].allowed_lateness",
                Some("allowed_lateness ="),
                "duration \"-5s\" must start with a whole number, e.g. \"60s\"",
            ),
            case(
                "revision column on a sliding window",
                window("kind = \"sliding\"\nsize = \"1m\"\nrevision_column = \"rev\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].revision_column",
                Some("revision_column ="),
                "`revision_column` applies to tumbling and hopping windows only",
            ),
            case(
                "revision column named like an aggregate",
                window("kind = \"tumbling\"\nsize = \"1m\"\nrevision_column = \"n\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].revision_column",
                Some("revision_column ="),
                "column \"n\" already exists or is reserved",
            ),
            case(
                "revision column named like the output id",
                window("kind = \"hopping\"\nsize = \"1m\"\nslide = \"10s\"\nrevision_column = \"_id\"\naggregates = { n = \"count(*)\" }"),
                "steps[2].revision_column",
                Some("revision_column ="),
                "column \"_id\" already exists or is reserved",
            ),
            case(
                "no aggregates",
                aggregates("{}"),
                "steps[2].aggregates",
                Some("aggregates ="),
                "declare at least one aggregate",
            ),
        ]);
    }

    #[test]
    fn aggregate_problems() {
        check(&[
            case(
                "not a string",
                aggregates("{ n = 1 }"),
                "steps[2].aggregates.n",
                Some("aggregates ="),
                "expected an aggregate such as \"sum(amount)\"",
            ),
            case(
                "column that exists",
                aggregates("{ amount = \"sum(amount)\" }"),
                "steps[2].aggregates.amount",
                Some("aggregates ="),
                "column \"amount\" already exists or is reserved",
            ),
            case(
                "no parentheses",
                aggregates("{ total = \"sum\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "expected an aggregate such as \"sum(amount)\", got \"sum\"",
            ),
            case(
                "unclosed parenthesis",
                aggregates("{ total = \"sum(amount\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "expected an aggregate such as \"sum(amount)\", got \"sum(amount\"",
            ),
            case(
                "unknown function",
                aggregates("{ mid = \"median(amount)\" }"),
                "steps[2].aggregates.mid",
                Some("aggregates ="),
                "unknown aggregate \"median\" (expected count, sum, min, max, avg, stddev, stddev_pop or approx_distinct)",
            ),
            case(
                "star for a function that is not count",
                aggregates("{ total = \"sum(*)\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "only count accepts *, in \"sum(*)\"",
            ),
            case(
                "unknown column",
                aggregates("{ total = \"sum(amout)\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "unknown column \"amout\" in \"sum(amout)\" (available: id, card, amount, ts)",
            ),
            case(
                "hidden column",
                aggregates("{ total = \"max(__pos)\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "unknown column \"__pos\" in \"max(__pos)\" (available: id, card, amount, ts)",
            ),
            case(
                "column that is not numeric",
                aggregates("{ total = \"avg(card)\" }"),
                "steps[2].aggregates.total",
                Some("aggregates ="),
                "avg needs a numeric column, \"card\" is Utf8",
            ),
        ]);
    }

    #[test]
    fn window_outputs() {
        let p = parse(&aggregates(
            "{ n = \"count(*)\", total = \"sum(id)\", top = \"max(amount)\", spread = \"stddev(amount)\", cards = \"approx_distinct(card)\" }",
        ))
        .expect("valid");
        let w = p.step("w").expect("window step");
        let crate::StepKind::Window(spec) = &w.kind else {
            panic!("not a window: {:?}", w.kind)
        };
        assert_eq!(spec.kind, crate::WindowKind::Tumbling);
        assert_eq!((spec.size_ms, spec.max_out_of_orderness_ms), (60_000, 5000));
        assert_eq!(
            (spec.time_column.as_str(), spec.key_column.as_str()),
            ("ts", "card")
        );
        assert_eq!(spec.late, crate::LatePolicy::DeadLetter);
        let fields: Vec<(String, String)> = w
            .output_schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        let expected = [
            ("card", "Utf8"),
            ("window_start", "Int64"),
            ("window_end", "Int64"),
            ("n", "Int64"),
            ("total", "Int64"),
            ("top", "Float64"),
            ("spread", "Float64"),
            ("cards", "Int64"),
            (crate::POSITION_COLUMN, "UInt64"),
            (crate::PRIOR_MAX_TIME_COLUMN, "Int64"),
        ]
        .map(|(n, t)| (n.to_string(), t.to_string()));
        assert_eq!(fields, expected);
        assert!(w.keyed);

        let p = parse(&window(
            "kind = \"hopping\"\nsize = \"1m\"\nslide = \"10s\"\nlate = \"update\"\naggregates = { n = \"count(amount)\" }",
        ))
        .expect("valid");
        let crate::StepKind::Window(spec) = &p.step("w").expect("window").kind else {
            panic!("not a window")
        };
        assert_eq!(spec.kind, crate::WindowKind::Hopping { slide_ms: 10_000 });
        assert_eq!(spec.late, crate::LatePolicy::Update);
        assert_eq!(spec.allowed_lateness_ms, 60_000, "update keeps one window");
        assert_eq!(spec.revision_column, None);
    }

    #[test]
    fn allowed_lateness_and_revision_column() {
        let spec_of = |lines: &str| {
            let p = parse(&window(lines)).expect("valid");
            let w = p.step("w").expect("window step").clone();
            let crate::StepKind::Window(spec) = w.kind else {
                panic!("not a window: {:?}", w.kind)
            };
            (spec, w.output_schema)
        };
        let (spec, _) =
            spec_of("kind = \"tumbling\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }");
        assert_eq!(spec.allowed_lateness_ms, 0, "none by default");
        let (spec, schema) = spec_of(
            "kind = \"tumbling\"\nsize = \"1m\"\nallowed_lateness = \"5s\"\nrevision_column = \"_revision\"\naggregates = { n = \"count(*)\" }",
        );
        assert_eq!(spec.allowed_lateness_ms, 5000);
        assert_eq!(spec.revision_column.as_deref(), Some("_revision"));
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(
            names,
            [
                "card",
                "window_start",
                "window_end",
                "n",
                "_revision",
                crate::POSITION_COLUMN,
                crate::PRIOR_MAX_TIME_COLUMN
            ]
        );
        let (spec, _) = spec_of(
            "kind = \"sliding\"\nsize = \"1m\"\nlate = \"update\"\nallowed_lateness = \"0s\"\naggregates = { n = \"count(*)\" }",
        );
        assert_eq!(
            spec.allowed_lateness_ms, 0,
            "a set lateness wins over update's"
        );
    }
}
