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
}
