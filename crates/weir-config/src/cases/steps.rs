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

/// The base pipeline with a key_by on `card`, then step `s` (these lines
/// after its name) reading it, read by the sink.
fn after_key_by(lines: &str) -> String {
    let steps = step("name = \"k\"\ntype = \"key_by\"\ninput = \"decode\"\nkey = \"card\"")
        + &step(&format!("name = \"s\"\n{lines}"));
    pipeline(&steps, "s")
}

#[test]
fn step_table_problems() {
    check(&[
        Case {
            what: "no type",
            text: one_step("input = \"decode\""),
            problems: vec![
                (
                    "steps[1]",
                    Some("[[steps]]\nname = \"s\""),
                    "missing or non-string `type` (one of decode, filter, derive, select, key_by, window, model, route)",
                ),
                // A step without a type is not known as a step at all.
                (
                    "sinks[0].input",
                    Some("input = \"s\""),
                    "input \"s\" is not a step of this pipeline",
                ),
            ],
        },
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
    ]);
}

#[test]
fn filter_problems() {
    check(&[
        case(
            "unknown column",
            one_step("type = \"filter\"\ninput = \"decode\"\nwhere = \"amout > 0\""),
            "steps[1].where",
            Some("where ="),
            "unknown column \"amout\" (available: id, card, amount, ts); did you mean \"amount\"? in \"amout > 0\"",
        ),
        case(
            "predicate that is not boolean",
            one_step("type = \"filter\"\ninput = \"decode\"\nwhere = \"amount * 2\""),
            "steps[1].where",
            Some("where ="),
            "expected BOOLEAN predicate, found DOUBLE in \"amount * 2\"",
        ),
    ]);
}

#[test]
fn derive_problems() {
    check(&[
        case(
            "value that is not a string",
            one_step("type = \"derive\"\ninput = \"decode\"\ncolumns = { double = 2 }"),
            "steps[1].columns.double",
            Some("columns ="),
            "expected an expression string",
        ),
        case(
            "existing column",
            one_step(
                "type = \"derive\"\ninput = \"decode\"\ncolumns = { amount = \"amount * 2\" }",
            ),
            "steps[1].columns.amount",
            Some("columns ="),
            "column \"amount\" already exists or is reserved",
        ),
        case(
            "reserved column",
            one_step(
                "type = \"derive\"\ninput = \"decode\"\ncolumns = { __double = \"amount * 2\" }",
            ),
            "steps[1].columns.__double",
            Some("columns ="),
            "column \"__double\" already exists or is reserved",
        ),
        case(
            "expression that does not type-check",
            one_step("type = \"derive\"\ninput = \"decode\"\ncolumns = { bad = \"card + 1\" }"),
            "steps[1].columns.bad",
            Some("columns ="),
            "cannot apply operator + to VARCHAR and BIGINT in \"card + 1\"",
        ),
    ]);
}

#[test]
fn select_problems() {
    check(&[
        case(
            "unknown column",
            one_step("type = \"select\"\ninput = \"decode\"\ncolumns = [\"id\", \"nope\"]"),
            "steps[1].columns[1]",
            Some("columns ="),
            "unknown column \"nope\" (available: id, card, amount, ts)",
        ),
        case(
            "hidden column",
            one_step("type = \"select\"\ninput = \"decode\"\ncolumns = [\"__pos\"]"),
            "steps[1].columns[0]",
            Some("columns ="),
            "unknown column \"__pos\" (available: id, card, amount, ts)",
        ),
        case(
            "key column dropped",
            after_key_by("type = \"select\"\ninput = \"k\"\ncolumns = [\"id\"]"),
            "steps[2].columns",
            Some("columns ="),
            "the key column \"card\" must be kept after key_by",
        ),
    ]);
}

#[test]
fn key_by_problems() {
    check(&[
        case(
            "second key_by on a path",
            after_key_by("type = \"key_by\"\ninput = \"k\"\nkey = \"id\""),
            "steps[2].input",
            Some("input = \"k\""),
            "records are already keyed by \"card\"; one key_by per path",
        ),
        case(
            "key that is a float",
            one_step("type = \"key_by\"\ninput = \"decode\"\nkey = \"amount\""),
            "steps[1].key",
            Some("key ="),
            "key column \"amount\" is Float64; keys must be integer, string or boolean",
        ),
        case(
            "unknown key",
            one_step("type = \"key_by\"\ninput = \"decode\"\nkey = \"cards\""),
            "steps[1].key",
            Some("key ="),
            "unknown column \"cards\" (available: id, card, amount, ts)",
        ),
    ]);
}

#[test]
fn model_problems() {
    let model = |lines: &str| {
        one_step(&format!(
            "type = \"model\"\ninput = \"decode\"\npath = \"Cargo.toml\"\n{lines}"
        ))
    };
    check(&[
        case(
            "feature that is a string",
            model("inputs = [\"card\"]\noutputs = [\"score\"]"),
            "steps[1].inputs[0]",
            Some("inputs ="),
            "feature \"card\" is Utf8, features must be numeric",
        ),
        case(
            "unknown feature",
            model("inputs = [\"amount\", \"nope\"]\noutputs = [\"score\"]"),
            "steps[1].inputs[1]",
            Some("inputs ="),
            "unknown column \"nope\" (available: id, card, amount, ts)",
        ),
        case(
            "no outputs",
            model("inputs = [\"amount\"]\noutputs = []"),
            "steps[1].inputs",
            Some("inputs ="),
            "a model step needs at least one input and one output column",
        ),
        case(
            "output that exists",
            model("inputs = [\"amount\"]\noutputs = [\"amount\"]"),
            "steps[1].outputs[0]",
            Some("outputs ="),
            "output column \"amount\" already exists or is reserved",
        ),
        case(
            "missing model file",
            one_step("type = \"model\"\ninput = \"decode\"\npath = \"/nonexistent/m.onnx\"\ninputs = [\"amount\"]\noutputs = [\"score\"]"),
            "steps[1].path",
            Some("path ="),
            "model file /nonexistent/m.onnx does not exist",
        ),
    ]);
}

#[test]
fn route_problems() {
    check(&[
        case(
            "predicate that is not a string",
            pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = { big = true }"), "r.big"),
            "steps[1].routes.big",
            Some("routes ="),
            "expected a predicate string",
        ),
        case(
            "predicate that does not type-check",
            pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = { big = \"amount\" }"), "r.big"),
            "steps[1].routes.big",
            Some("routes ="),
            "expected BOOLEAN predicate, found DOUBLE in \"amount\"",
        ),
        case(
            "no routes",
            pipeline(&step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = {}"), "r"),
            "steps[1].routes",
            Some("routes ="),
            "declare at least one route",
        ),
    ]);
}
