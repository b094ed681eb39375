//! Pipeline texts for the validators' tests: a small valid pipeline that each
//! case extends or patches, and the assertion that a broken text yields
//! exactly the problems a case lists (field path, line and message).

use std::path::Path;

use crate::{Checks, Pipeline, Problem};

/// A valid pipeline: a memory source `events`, a JSON decode step `decode`
/// (`id` u64, `card` string, `amount` f64, `ts` i64 as event time with a
/// 5s bound), then `steps` (more `[[steps]]` tables, may be empty) and a
/// discard sink `out` reading `sink_input`.
pub(crate) fn pipeline(steps: &str, sink_input: &str) -> String {
    format!(
        r#"name = "cases"

[[sources]]
name = "events"
type = "memory"

[[steps]]
name = "decode"
type = "decode"
input = "events"
format = "json"
fields = [
  {{ name = "id", type = "u64" }},
  {{ name = "card", type = "string" }},
  {{ name = "amount", type = "f64" }},
  {{ name = "ts", type = "i64" }},
]
event_time = "ts"
max_out_of_orderness = "5s"
{steps}
[[sinks]]
name = "out"
type = "discard"
input = "{sink_input}"
"#
    )
}

/// The smallest valid pipeline: source, decode step and sink.
pub(crate) fn minimal() -> String {
    pipeline("", "decode")
}

/// `text` with `from` replaced by `to`; the case is wrong if `from` is absent.
pub(crate) fn patched(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in:\n{text}");
    text.replacen(from, to, 1)
}

/// Validates `text` with relative paths resolved against this crate's
/// directory, where `Cargo.toml` stands in for any file that must exist.
pub(crate) fn parse(text: &str) -> Result<Pipeline, Vec<Problem>> {
    crate::parse(text, Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// 1-based line on which the one occurrence of `needle` in `text` starts.
pub(crate) fn line_of(text: &str, needle: &str) -> usize {
    let mut found = text.match_indices(needle);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("{needle:?} is not in:\n{text}"));
    assert!(
        found.next().is_none(),
        "{needle:?} occurs more than once in:\n{text}"
    );
    text[..at].matches('\n').count() + 1
}

/// A problem a case expects: the field path, the text whose (unique)
/// occurrence starts the reported line (`None`: no line), and the message.
pub(crate) type Expected<'a> = (&'a str, Option<&'a str>, &'a str);

/// A broken pipeline and every problem it yields, in the order reported.
pub(crate) struct Case<'a> {
    /// What is wrong, for failure messages.
    pub what: &'a str,
    /// The pipeline text.
    pub text: String,
    /// The problems it must yield, exactly.
    pub problems: Vec<Expected<'a>>,
}

/// A case yielding one problem.
pub(crate) fn case<'a>(
    what: &'a str,
    text: String,
    path: &'a str,
    line: Option<&'a str>,
    message: &'a str,
) -> Case<'a> {
    Case {
        what,
        text,
        problems: vec![(path, line, message)],
    }
}

/// Asserts that each case yields exactly its problems; reports every case
/// that does not.
pub(crate) fn check(cases: &[Case<'_>]) {
    check_in(cases, &Checks::default(), &[]);
}

/// `text` validated with `checks`, its `${VAR}` references looked up in
/// `vars` (and nowhere else).
pub(crate) fn parse_in(
    text: &str,
    checks: &Checks<'_>,
    vars: &[(&str, &str)],
) -> Result<Pipeline, Vec<Problem>> {
    let lookup = |name: &str| {
        Ok(vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string()))
    };
    crate::check_text(text, Path::new(env!("CARGO_MANIFEST_DIR")), checks, &lookup)
}

/// [`check`] with `checks` of what lies outside the file, and `${VAR}`
/// references looked up in `vars`.
pub(crate) fn check_in(cases: &[Case<'_>], checks: &Checks<'_>, vars: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for c in cases {
        let want: Vec<Problem> = c
            .problems
            .iter()
            .map(|(path, line, message)| Problem {
                path: path.to_string(),
                line: line.map(|needle| line_of(&c.text, needle)),
                message: message.to_string(),
            })
            .collect();
        match parse_in(&c.text, checks, vars) {
            Ok(_) => failures.push(format!("{}: the pipeline was accepted", c.what)),
            Err(got) if got != want => failures.push(format!(
                "{}:\n  got  {got:?}\n  want {want:?}\n{}",
                c.what, c.text
            )),
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
