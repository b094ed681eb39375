use crate::test_support::*;

/// A `[[steps]]` table with these lines.
fn step(lines: &str) -> String {
    format!("\n[[steps]]\n{lines}\n")
}

/// A filter step `name` reading `input`.
fn filter(name: &str, input: &str) -> String {
    step(&format!(
        "name = \"{name}\"\ntype = \"filter\"\ninput = \"{input}\"\nwhere = \"amount > 0\""
    ))
}

/// A route step `r` reading decode, with routes `big` and `small`.
fn route() -> String {
    step("name = \"r\"\ntype = \"route\"\ninput = \"decode\"\nroutes = { big = \"amount > 100\", small = \"amount <= 100\" }")
}

#[test]
fn graph_problems() {
    check(&[
        case(
            "step named like the source",
            pipeline(&filter("events", "decode"), "events"),
            "steps[1].name",
            Some("name = \"events\"\ntype = \"filter\""),
            "name \"events\" is already used by sources[0].name",
        ),
        case(
            "sink named like a step",
            patched(&minimal(), "name = \"out\"", "name = \"decode\""),
            "sinks[0].name",
            Some("name = \"decode\"\ntype = \"discard\""),
            "name \"decode\" is already used by steps[0].name",
        ),
        case(
            "unknown input",
            pipeline(&filter("f", "decod"), "decode"),
            "steps[1].input",
            Some("input = \"decod\""),
            "input \"decod\" is not a source or step of this pipeline",
        ),
        Case {
            what: "cycle",
            text: pipeline(&(filter("a", "b") + &filter("b", "a")), "decode"),
            problems: vec![(
                "steps[1].input",
                Some("input = \"b\""),
                "steps form a cycle: b -> a -> a",
            )],
        },
        case(
            "route step read without a route",
            pipeline(&(route() + &filter("f", "r")), "f"),
            "steps[2].input",
            Some("input = \"r\""),
            "\"r\" is a route step: name one of its routes, e.g. \"r.big\"",
        ),
        case(
            "unknown route",
            pipeline(&(route() + &filter("f", "r.huge")), "f"),
            "steps[2].input",
            Some("input = \"r.huge\""),
            "route step \"r\" has no route \"huge\" (routes: big, small)",
        ),
        case(
            "route of a step that is not a route step",
            pipeline(&filter("f", "decode.big"), "f"),
            "steps[1].input",
            Some("input = \"decode.big\""),
            "\"decode\" is not a route step; refer to it without a \".route\" suffix",
        ),
        case(
            "step other than decode reading the source",
            pipeline(&filter("f", "events"), "f"),
            "steps[1].input",
            Some("input = \"events\"\nwhere"),
            "steps reading a source must be of type \"decode\"",
        ),
        case(
            "decode reading a step",
            pipeline(
                &(filter("f", "decode")
                    + &step("name = \"again\"\ntype = \"decode\"\ninput = \"f\"\nformat = \"json\"\nfields = [{ name = \"id\", type = \"u64\" }]")),
                "decode",
            ),
            "steps[2].input",
            Some("input = \"f\""),
            "a decode step must read a source directly",
        ),
        case(
            "sink reading an unknown step",
            pipeline("", "nope"),
            "sinks[0].input",
            Some("input = \"nope\""),
            "input \"nope\" is not a step of this pipeline",
        ),
        case(
            "sink reading the source",
            patched(
                &pipeline("", "events"),
                "type = \"discard\"\ninput = \"events\"",
                "input = \"events\"\ntype = \"discard\"",
            ),
            "sinks[0].input",
            Some("input = \"events\"\ntype = \"discard\""),
            "a sink cannot read a source directly: add a decode step",
        ),
        case(
            "sink reading a route step without a route",
            pipeline(&route(), "r"),
            "sinks[0].input",
            Some("input = \"r\""),
            "name one of the routes of \"r\": big, small",
        ),
        case(
            "sink reading an unknown route",
            pipeline(&route(), "r.huge"),
            "sinks[0].input",
            Some("input = \"r.huge\""),
            "name one of the routes of \"r\": big, small",
        ),
    ]);
}
