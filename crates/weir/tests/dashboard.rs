//! The Grafana dashboard in `deploy/grafana/weir-dashboard.json` against
//! what `weir run --metrics-address` and `weir ingest` serve: its queries
//! parse, and every metric it queries is exposed by a running pipeline or
//! ingest server — a renamed metric or a typo in a panel fails here instead
//! of showing "No data" at 3 a.m.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{append, get, start};
use weir_test_support::net::free_port;
use weir_test_support::pipelines::fraud_text_following_log;
use weir_test_support::repo_root;

use weir_engine::telemetry::names::{self, FAMILIES};
use weir_test_support::process;

/// Families that exist only in pipelines with a broker or database
/// connector (Kafka, MQTT, NATS, PostgreSQL): the connection state and its
/// reconnections. The pipeline this test runs reads a local log stream and
/// writes a file, so it has no connector and exposes neither; they are the
/// only dashboard metrics allowed to be absent from its `/metrics`.
/// Starting a broker is out of reach of a self-contained test.
const ONLY_WITH_CONNECTORS: &[&str] = &[names::CONNECTOR_UP, names::CONNECTOR_RECONNECTS_TOTAL];

fn dashboard() -> serde_json::Value {
    let path = repo_root().join("deploy/grafana/weir-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// Every panel of the dashboard, rows and the panels nested in (collapsed)
/// rows included, in document order.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    fn walk<'a>(list: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The PromQL expressions of a panel's targets.
fn exprs(panel: &serde_json::Value) -> Vec<&str> {
    panel["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["expr"].as_str())
        .collect()
}

/// Index just past the string literal starting at `i` (`"`, `'` or `` ` ``).
fn skip_string(chars: &[char], i: usize) -> usize {
    let quote = chars[i];
    let mut j = i + 1;
    while j < chars.len() {
        if chars[j] == '\\' && quote != '`' {
            j += 2;
            continue;
        }
        if chars[j] == quote {
            return j + 1;
        }
        j += 1;
    }
    j
}

/// Index just past the group opened at `i` (`{...}`, `[...]` or `(...)`),
/// nested groups and string literals inside it included.
fn skip_group(chars: &[char], i: usize) -> usize {
    let open = chars[i];
    let close = match open {
        '{' => '}',
        '[' => ']',
        _ => ')',
    };
    let mut depth = 0;
    let mut j = i;
    while j < chars.len() {
        match chars[j] {
            '"' | '\'' | '`' => {
                j = skip_string(chars, j);
                continue;
            }
            c if c == open => depth += 1,
            c if c == close => {
                depth -= 1;
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    j
}

/// The metric names an expression selects: identifiers that are neither
/// functions (followed by `(`), aggregation operators, keywords, label names
/// (inside `{...}` or `by (...)`), label values (quoted), `$variables`,
/// numbers nor durations (`[5m]`, `offset 1h`).
fn promql_metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
        "and",
        "or",
        "unless",
        "atan2",
        "bool",
        "offset",
        "inf",
        "nan",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Keywords followed by a parenthesised list of label names.
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let chars: Vec<char> = expr.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => i = skip_string(&chars, i),
            // Label matchers, and range / subquery durations.
            '{' | '[' => i = skip_group(&chars, i),
            // A Grafana variable: `$name` or `${name}` / `${name:format}`.
            '$' => {
                i += 1;
                if chars.get(i) == Some(&'{') {
                    i = skip_group(&chars, i);
                } else {
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                }
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            // Numbers (0.99, 1e-3, 0x1f) and durations (5m, 1h30m).
            c if c.is_ascii_digit()
                || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                while i < chars.len() {
                    let d = chars[i];
                    let exponent_sign = (d == '+' || d == '-') && matches!(chars[i - 1], 'e' | 'E');
                    if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exponent_sign {
                        i += 1;
                    } else {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
                let ident: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let called = chars.get(next) == Some(&'(');
                let lower = ident.to_ascii_lowercase();
                if called && LABEL_LISTS.contains(&lower.as_str()) {
                    i = skip_group(&chars, next);
                } else if !called && !KEYWORDS.contains(&lower.as_str()) {
                    names.push(ident);
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// The metric names the dashboard queries, exactly as queried (histograms
/// as their `_bucket`, `_sum` or `_count` series).
fn dashboard_metric_names() -> BTreeSet<String> {
    let dashboard = dashboard();
    panels(&dashboard)
        .into_iter()
        .flat_map(exprs)
        .flat_map(promql_metric_names)
        .collect()
}

/// The family a queried series belongs to, given the families' types
/// (name → type, as in the `# TYPE` lines): a histogram's `_bucket`, `_sum`
/// and `_count` series map to the histogram, anything else to itself.
fn family(queried: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = queried.strip_suffix(suffix) {
            if types.get(base).map(String::as_str) == Some("histogram") {
                return base.to_string();
            }
        }
    }
    queried.to_string()
}

/// The metric families `weir run --metrics-address` serves (name → type),
/// as the engine defines them.
fn run_types() -> BTreeMap<String, String> {
    FAMILIES
        .iter()
        .map(|(name, kind)| (name.to_string(), kind.as_str().to_string()))
        .collect()
}

/// The metric families `weir ingest` serves on `/metrics` (name → type),
/// as weir-ingest defines them.
fn ingest_types() -> BTreeMap<String, String> {
    weir_ingest::names::FAMILIES
        .iter()
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// What the dashboard may query: the families of both (histograms through
/// their `_bucket`, `_sum` and `_count` series).
fn spec_types() -> BTreeMap<String, String> {
    let mut all = run_types();
    for (name, kind) in ingest_types() {
        if let Some(other) = all.insert(name.clone(), kind.clone()) {
            assert_eq!(other, kind, "{name} has two types");
        }
    }
    all
}

/// The dashboard's metrics that only `weir ingest` exposes.
fn ingest_only(names: &BTreeSet<String>) -> BTreeSet<String> {
    let (run, ingest) = (run_types(), ingest_types());
    names
        .iter()
        .filter(|n| {
            let fam = family(n, &ingest);
            ingest.contains_key(&fam) && !run.contains_key(&fam)
        })
        .cloned()
        .collect()
}

#[test]
fn promql_extraction_skips_everything_but_metric_names() {
    let names = |e: &str| promql_metric_names(e);
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, sink) (rate(a_bucket{pipeline=~"$pipeline", x="b_total{"}[$__rate_interval])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("sum(rate(a_total[5m] offset 1h)) by (step) / on (step) group_left (x) b * 1e-3"),
        ["a_total", "b"]
    );
    assert_eq!(
        names("time() - c{instance=~\"${instance:regex}\"} or max without (shard) (d) > bool 0.5"),
        ["c", "d"]
    );
    assert_eq!(names("count(e) and topk(3, f[1h:5m])"), ["e", "f"]);
}

#[test]
fn dashboard_queries_parse() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "weir-overview");
    assert_eq!(dashboard["title"], "weir overview");
    let all = panels(&dashboard);
    let mut ids = BTreeSet::new();
    for panel in &all {
        let id = panel["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("panel without a numeric id: {}", panel["title"]));
        assert!(ids.insert(id), "panel id {id} twice ({})", panel["title"]);
        for key in ["h", "w", "x", "y"] {
            assert!(
                panel["gridPos"][key].is_u64(),
                "panel {id} ({}) has no gridPos.{key}",
                panel["title"]
            );
        }
    }

    let spec = spec_types();
    let mut querying = 0;
    for panel in &all {
        let mut queried = false;
        for expr in exprs(panel) {
            // The extractor does not look into `{__name__=...}` selectors.
            assert!(!expr.contains("__name__"), "{expr}");
            let names = promql_metric_names(expr);
            assert!(!names.is_empty(), "no metric in {expr:?}");
            queried = true;
            for name in names {
                assert!(
                    name.starts_with("weir_") || name.starts_with("process_"),
                    "{name} in {expr:?} is not a weir_ or process_ metric"
                );
                // Only names of the spec, histograms only as their series.
                let fam = family(&name, &spec);
                assert!(
                    spec.contains_key(&fam),
                    "{name} in {expr:?} is not a metric of the spec"
                );
                assert!(
                    fam != name || spec[&fam] != "histogram",
                    "histogram {name} queried without _bucket/_sum/_count in {expr:?}"
                );
            }
        }
        if queried {
            querying += 1;
        }
    }
    assert!(querying >= 12, "only {querying} panels query metrics");
    let names = dashboard_metric_names();
    for name in ONLY_WITH_CONNECTORS {
        assert!(names.contains(*name), "the dashboard does not query {name}");
    }
}

/// The families of an exposition and their types, from its `# TYPE` lines.
fn exposed_types(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect()
}

/// The dashboard metrics whose family is missing from `types`.
fn missing(names: &BTreeSet<String>, types: &BTreeMap<String, String>) -> Vec<String> {
    names
        .iter()
        .filter(|n| !types.contains_key(&family(n, types)))
        .cloned()
        .collect()
}

#[test]
fn every_dashboard_metric_is_exposed() {
    let all = dashboard_metric_names();
    let ingest = ingest_only(&all);
    let names: BTreeSet<String> = all.difference(&ingest).cloned().collect();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("pipeline.toml"),
        fraud_text_following_log(4096, 2, true),
    )
    .expect("write pipeline");
    // Events for records to flow through every step to the sink, and one
    // malformed record after them so a dead letter is counted.
    append(dir.path(), 0, 20_000, &[b"{\"txn_id\": oops}"]);
    let port = free_port();
    let mut run = start(
        dir.path(),
        &["--metrics-address", &format!("127.0.0.1:{port}")],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut types = BTreeMap::new();
    let mut last_error = String::from("never scraped");
    let mut exited = None;
    loop {
        match get(port, "/metrics") {
            Ok((200, body)) => {
                types = exposed_types(&body);
                last_error.clear();
            }
            Ok((status, body)) => last_error = format!("{status}: {body}"),
            Err(e) => last_error = e,
        }
        let absent = missing(&names, &types);
        if absent
            .iter()
            .all(|n| ONLY_WITH_CONNECTORS.contains(&n.as_str()))
        {
            break;
        }
        if let Some(status) = run.0.try_wait().expect("poll weir") {
            exited = Some(status);
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    drop(run);

    let absent: Vec<String> = missing(&names, &types)
        .into_iter()
        .filter(|n| !ONLY_WITH_CONNECTORS.contains(&n.as_str()))
        .collect();
    let log = std::fs::read_to_string(dir.path().join("weir.stderr")).unwrap_or_default();
    let tail: String = {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    };
    assert!(
        absent.is_empty(),
        "the dashboard queries metrics that `weir run` does not expose: {absent:?}\n\
         exposed families: {:?}\nlast scrape error: {last_error}\nweir exited: {exited:?}\n\
         weir stderr (tail):\n{tail}",
        types.keys().collect::<Vec<_>>()
    );
}

/// The panels of `weir ingest` query only what a running `weir ingest`
/// exposes on `/metrics`.
#[test]
fn every_ingest_dashboard_metric_is_exposed() {
    let names = ingest_only(&dashboard_metric_names());
    assert!(names.len() >= 10, "only {names:?} on ingest panels");
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let stderr = std::fs::File::create(dir.path().join("ingest.stderr")).expect("stderr");
    let _ingest = process::start(
        common::WEIR,
        &[
            "ingest",
            "--listen",
            &listen,
            "--log-dir",
            "log",
            "--stream",
            "s",
        ],
        dir.path(),
        stderr,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let types = loop {
        match get(port, "/metrics") {
            Ok((200, body)) => break exposed_types(&body),
            Ok((status, body)) => panic!("{status}: {body}"),
            Err(e) => {
                assert!(Instant::now() < deadline, "weir ingest never served: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    let absent = missing(&names, &types);
    assert!(
        absent.is_empty(),
        "the dashboard queries metrics that `weir ingest` does not expose: {absent:?}\n\
         exposed families: {:?}",
        types.keys().collect::<Vec<_>>()
    );
    // And the types are the spec's.
    for (name, kind) in ingest_types() {
        assert_eq!(types.get(&name), Some(&kind), "{name}");
    }
}
