//! The graph of steps and sinks: unique names, inputs that exist, no
//! cycles, the order steps are built in, decode directly after the source,
//! the output port each input names, and the resolved [`Graph`] handed to
//! the engine. (One key_by per path is checked with the key_by step, which
//! knows whether its input is keyed.)

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use super::tables::{SinkTable, StepSpec, StepTable};
use crate::check::Checker;
use crate::{Consumer, Graph, Port, Source, Step, StepKind};

/// Names are unique across sources, steps and sinks.
pub(super) fn check_names(
    c: &mut Checker<'_>,
    source: Option<&Source>,
    steps: &[StepTable],
    sinks: &[SinkTable],
) {
    let mut seen: HashMap<String, String> = HashMap::new();
    if let Some(s) = source {
        seen.insert(s.name.clone(), "sources[0].name".into());
    }
    let names = steps
        .iter()
        .map(|p| (format!("steps[{}].name", p.index), &p.name, &p.span))
        .chain(
            sinks
                .iter()
                .map(|s| (format!("sinks[{}].name", s.index), s.spec.name(), &s.span)),
        );
    for (here, name, span) in names {
        if let Some(first) = seen.insert(name.clone(), here.clone()) {
            c.at(
                here,
                span,
                "name",
                format!("name {name:?} is already used by {first}"),
            );
        }
    }
}

/// Indices into `steps` in an order where every step comes after its
/// input. Every input must name the source or a step, and following inputs
/// from any step must reach the source (otherwise there is a cycle); steps
/// failing either are left out, and reported unless their input is one of
/// the `failed` tables (whose own problem was reported) or, with no source
/// name known, the step is a decode step (the missing source was reported).
pub(super) fn order(
    c: &mut Checker<'_>,
    steps: &[StepTable],
    source_name: Option<&str>,
    failed: &HashSet<String>,
) -> Vec<usize> {
    let by_name: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut broken: HashSet<usize> = HashSet::new();
    for (i, p) in steps.iter().enumerate() {
        let node = p.input.node.as_str();
        if Some(node) != source_name && !by_name.contains_key(node) {
            broken.insert(i);
            let reported = failed.contains(node)
                || (source_name.is_none() && matches!(p.spec, StepSpec::Decode(_)));
            if reported {
                continue;
            }
            c.at(
                format!("steps[{}].input", p.index),
                &p.span,
                "input",
                format!(
                    "input {:?} is not a source or step of this pipeline",
                    p.input.node
                ),
            );
        }
    }
    let mut order: Vec<usize> = Vec::new();
    let mut placed: HashSet<usize> = HashSet::new();
    for start in 0..steps.len() {
        // Follow inputs up from `start` until the source, a placed step or
        // a broken one; then place the chain, root first.
        let mut chain = vec![start];
        let mut on_chain: HashSet<usize> = HashSet::from([start]);
        let mut cur = start;
        loop {
            let node = steps[cur].input.node.as_str();
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
                report_cycle(c, steps, &chain, next);
                broken.extend(chain.iter().copied());
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
    order
}

/// Reports the cycle that following inputs along `chain` (each step's
/// input after it) closed at `next`, at the input of its first step in the
/// file, listing the steps once in the direction records flow: `a -> b ->
/// a` when `b` reads `a` and `a` reads `b`.
fn report_cycle(c: &mut Checker<'_>, steps: &[StepTable], chain: &[usize], next: usize) {
    let from = chain.iter().position(|&i| i == next).unwrap_or(0);
    // Records flow against the chain: from each step's input to the step.
    let mut cycle: Vec<usize> = chain[from..].iter().rev().copied().collect();
    let first = (0..cycle.len())
        .min_by_key(|&k| steps[cycle[k]].index)
        .unwrap_or(0);
    cycle.rotate_left(first);
    let Some(&head) = cycle.first() else { return };
    let names: Vec<&str> = cycle
        .iter()
        .chain([&head])
        .map(|&i| steps[i].name.as_str())
        .collect();
    let p = &steps[head];
    c.at(
        format!("steps[{}].input", p.index),
        &p.span,
        "input",
        format!("steps form a cycle: {}", names.join(" -> ")),
    );
}

/// A step reading the source must be a decode step, and a decode step must
/// read the source; false (reported at `path`) otherwise.
pub(super) fn check_decode_placement(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    from_source: bool,
    is_decode: bool,
) -> bool {
    if from_source == is_decode {
        return true;
    }
    let message = if from_source {
        "steps reading a source must be of type \"decode\""
    } else {
        "a decode step must read a source directly"
    };
    c.at(format!("{path}.input"), span, "input", message);
    false
}

/// The output port a step's or sink's `input` names on a checked step,
/// which has `routes` when it is a route step: the route's position, or 0.
/// A route step must be read through one of its routes, any other step
/// without one; otherwise the problem is reported at `path` and there is
/// no port.
pub(super) fn input_port(
    c: &mut Checker<'_>,
    path: &str,
    span: &Range<usize>,
    input: &Port,
    routes: Option<&Vec<String>>,
) -> Option<usize> {
    let message = match (routes, &input.output) {
        (Some(routes), Some(o)) => match routes.iter().position(|r| r == o) {
            Some(port) => return Some(port),
            None => format!(
                "route step {:?} has no route {o:?} (routes: {})",
                input.node,
                routes.join(", ")
            ),
        },
        (Some(routes), None) => format!(
            "{:?} is a route step: name one of its routes, e.g. \"{}.{}\"",
            input.node,
            input.node,
            routes.first().map(String::as_str).unwrap_or("route")
        ),
        (None, Some(_)) => format!(
            "{:?} is not a route step; refer to it without a \".route\" suffix",
            input.node
        ),
        (None, None) => return Some(0),
    };
    c.at(format!("{path}.input"), span, "input", message);
    None
}

/// The resolved tree of checked steps. `step_inputs` holds, per step, the
/// step and port it reads (`None` for a step reading the source), and
/// `sink_inputs` the same per sink; both were resolved against `steps`, so
/// every index and port is in range.
pub(super) fn tree(
    steps: &[Step],
    decode: usize,
    step_inputs: &[Option<(usize, usize)>],
    sink_inputs: &[(usize, usize)],
) -> Graph {
    let mut children: Vec<Vec<Vec<Consumer>>> = steps
        .iter()
        .map(|s| match &s.kind {
            StepKind::Route { routes } => vec![Vec::new(); routes.len()],
            _ => vec![Vec::new()],
        })
        .collect();
    let steps_reading = step_inputs
        .iter()
        .enumerate()
        .filter_map(|(i, input)| input.map(|(parent, port)| (parent, port, Consumer::Step(i))));
    let sinks_reading = sink_inputs
        .iter()
        .enumerate()
        .map(|(i, &(parent, port))| (parent, port, Consumer::Sink(i)));
    for (parent, port, consumer) in steps_reading.chain(sinks_reading) {
        children[parent][port].push(consumer);
    }
    // A key_by runs on the workers (it splits); what follows it on the shards.
    let on_shards = |s: &Step| s.keyed && !matches!(s.kind, StepKind::KeyBy { .. });
    let (keyed, unkeyed): (Vec<usize>, Vec<usize>) =
        (0..steps.len()).partition(|&i| on_shards(&steps[i]));
    Graph {
        children,
        decode,
        unkeyed,
        keyed,
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::*;
    use crate::Consumer;

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
            case(
                "cycle",
                pipeline(&(filter("a", "b") + &filter("b", "a")), "decode"),
                "steps[1].input",
                Some("input = \"b\""),
                "steps form a cycle: a -> b -> a",
            ),
            // Reported once, at its first step in the file, in the order
            // records would flow; the step reading the cycle is left out.
            case(
                "cycle of three read by another step",
                pipeline(
                    &(filter("x", "b") + &filter("b", "a") + &filter("a", "c") + &filter("c", "b")),
                    "x",
                ),
                "steps[2].input",
                Some("input = \"a\""),
                "steps form a cycle: b -> c -> a -> b",
            ),
            case(
                "step reading itself",
                pipeline(&filter("a", "a"), "a"),
                "steps[1].input",
                Some("input = \"a\"\nwhere"),
                "steps form a cycle: a -> a",
            ),
            case(
                "two decode steps",
                pipeline(
                    &step("name = \"again\"\ntype = \"decode\"\ninput = \"events\"\nformat = \"json\"\nfields = [{ name = \"id\", type = \"u64\" }]"),
                    "again",
                ),
                "steps[1].input",
                Some("input = \"events\"\nformat = \"json\"\nfields = [{"),
                "the source is already decoded by step \"decode\": one decode step reads the source, other steps read it",
            ),
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
                "\"r\" is a route step: name one of its routes, e.g. \"r.big\"",
            ),
            case(
                "sink reading an unknown route",
                pipeline(&route(), "r.huge"),
                "sinks[0].input",
                Some("input = \"r.huge\""),
                "route step \"r\" has no route \"huge\" (routes: big, small)",
            ),
            case(
                "sink reading a route of a step that is not a route step",
                pipeline("", "decode.big"),
                "sinks[0].input",
                Some("input = \"decode.big\""),
                "\"decode\" is not a route step; refer to it without a \".route\" suffix",
            ),
        ]);
    }

    /// A `[[sinks]]` table `name` reading `input`.
    fn sink(name: &str, input: &str) -> String {
        format!("\n[[sinks]]\nname = \"{name}\"\ntype = \"discard\"\ninput = \"{input}\"\n")
    }

    #[test]
    fn graph_of_routes_sinks_and_a_key_by() {
        // In the file, `f` comes before the route step it reads; `g` reads
        // the decode step after the others and has no consumer.
        let steps = filter("f", "r.big")
            + &route()
            + &step("name = \"k\"\ntype = \"key_by\"\ninput = \"r.small\"\nkey = \"card\"")
            + &step("name = \"w\"\ntype = \"window\"\ninput = \"k\"\nkind = \"sliding\"\nsize = \"1m\"\naggregates = { n = \"count(*)\" }")
            + &filter("g", "decode");
        let text = pipeline(&steps, "r.small")
            + &sink("windows", "w")
            + &sink("big", "r.big")
            + &sink("raw", "decode")
            + &sink("small_too", "r.small")
            + &sink("filtered", "f");
        let p = parse(&text).expect("valid");
        let names: Vec<&str> = p.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["decode", "r", "f", "k", "w", "g"]);
        let sinks: Vec<&str> = p.sinks.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            sinks,
            ["out", "windows", "big", "raw", "small_too", "filtered"]
        );
        use Consumer::{Sink, Step};
        assert_eq!(
            p.graph.children,
            vec![
                // decode: the route step and g, then the raw sink.
                vec![vec![Step(1), Step(5), Sink(3)]],
                // r: big, then small (declaration order).
                vec![vec![Step(2), Sink(2)], vec![Step(3), Sink(0), Sink(4)],],
                // f
                vec![vec![Sink(5)]],
                // k
                vec![vec![Step(4)]],
                // w
                vec![vec![Sink(1)]],
                // g
                vec![vec![]],
            ]
        );
        assert_eq!(p.graph.decode, 0);
        assert_eq!(p.graph.unkeyed, [0, 1, 2, 3, 5]);
        assert_eq!(p.graph.keyed, [4]);
        let ports: Vec<usize> = (0..7).map(|i| p.graph.port_count(i)).collect();
        assert_eq!(ports, [1, 2, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn graph_without_key_by() {
        let p = parse(&pipeline(&filter("f", "decode"), "f")).expect("valid");
        assert_eq!(
            p.graph.children,
            vec![vec![vec![Consumer::Step(1)]], vec![vec![Consumer::Sink(0)]]]
        );
        assert_eq!(p.graph.decode, 0);
        assert_eq!(p.graph.unkeyed, [0, 1]);
        assert!(p.graph.keyed.is_empty());
    }

    #[test]
    fn graph_stays_when_kinds_change() {
        // The engine's tests swap sources and sinks after loading; the
        // graph depends only on names and inputs.
        let mut p = parse(&pipeline(&route(), "r.small")).expect("valid");
        let before = p.graph.children.clone();
        p.source.kind = crate::SourceKind::Stdin;
        p.sinks[0].kind = crate::SinkKind::Stdout;
        assert_eq!(p.graph.children, before);
        assert_eq!(
            before,
            vec![
                vec![vec![Consumer::Step(1)]],
                vec![vec![], vec![Consumer::Sink(0)]]
            ]
        );
    }
}
