//! The view of `weir top`: one table per concern (records, sink
//! latencies, models, shards, streams, checkpoints, dead letters,
//! connectors) under a header line, rendered from two scrapes of the same
//! endpoint. Series are looked up by the names the engine registers them
//! under (`weir_engine::telemetry::names`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use weir_engine::telemetry::names;
use weir_metrics::process;

use super::exposition::{label, Scrape};
use super::format::{bytes, count, per_sec, seconds};
use super::histogram::estimate;

/// Every series of the engine starts with this; the process's with
/// [`PROCESS_PREFIX`].
const WEIR_PREFIX: &str = "weir_";
const PROCESS_PREFIX: &str = "process_";

/// The two scrapes a view is made from.
struct Pair<'a> {
    prev: &'a Scrape,
    cur: &'a Scrape,
    secs: f64,
    /// Whether some shown quantile covers all time, not the interval.
    lifetime_marks: bool,
}

impl Pair<'_> {
    /// Per-second increase of the counter `name` with exactly `labels`;
    /// `None` without an earlier sample or time between the scrapes.
    fn rate(&self, name: &str, labels: &[(String, String)]) -> Option<f64> {
        if self.secs <= 0.0 {
            return None;
        }
        let cur = self.cur.exact(name, labels)?;
        let prev = self.prev.exact(name, labels)?;
        // A counter that went down was reset (process restart).
        let increase = if cur >= prev { cur - prev } else { cur };
        Some(increase / self.secs)
    }

    /// The counter `name` whose labels include `want`: total and rate.
    fn counter(&self, name: &str, want: &[(&str, &str)]) -> (Option<f64>, Option<f64>) {
        match self
            .cur
            .named(name)
            .find(|s| want.iter().all(|(k, v)| s.label(k) == Some(*v)))
        {
            Some(s) => (Some(s.value), self.rate(name, &s.labels)),
            None => (None, None),
        }
    }

    /// Quantile `q` of the histogram `base` with labels including `want`,
    /// formatted with `fmt`; `*` marks a lifetime estimate.
    fn quantile(
        &mut self,
        base: &str,
        want: &[(&str, &str)],
        q: f64,
        fmt: fn(f64) -> String,
    ) -> String {
        let Some(cur) = self.cur.histogram(base, want) else {
            return "-".into();
        };
        let prev = self.prev.histogram(base, want);
        match estimate(prev.as_ref(), &cur, q) {
            Some(e) if e.interval || self.secs <= 0.0 => fmt(e.value),
            Some(e) => {
                self.lifetime_marks = true;
                format!("{}*", fmt(e.value))
            }
            None => "-".into(),
        }
    }
}

/// Renders the view of a pipeline from two scrapes `elapsed` apart
/// (`Duration::ZERO`, or the same scrape twice, shows no rates).
pub fn render(address: &str, prev: &Scrape, cur: &Scrape, elapsed: Duration) -> String {
    let mut p = Pair {
        prev,
        cur,
        secs: elapsed.as_secs_f64(),
        lifetime_marks: false,
    };
    let mut o = String::new();
    header(&mut o, &p, address);
    let sinks = records(&mut o, &p);
    sink_latencies(&mut o, &mut p, &sinks);
    models(&mut o, &mut p);
    shards(&mut o, cur);
    streams(&mut o, cur);
    checkpoints(&mut o, prev, cur);
    dead_letters(&mut o, &p);
    connectors(&mut o, cur);
    if p.lifetime_marks {
        let _ = writeln!(
            o,
            "\n* since the process started: no observations between the two scrapes"
        );
    }
    o
}

/// The first line: pipeline, readiness, process CPU and memory.
fn header(o: &mut String, p: &Pair, address: &str) {
    let cur = p.cur;
    let pipelines: BTreeSet<&str> = cur
        .samples
        .iter()
        .filter(|s| s.name.starts_with(WEIR_PREFIX))
        .filter_map(|s| s.label("pipeline"))
        .collect();
    let pipeline = if pipelines.is_empty() {
        "-".to_string()
    } else {
        pipelines.into_iter().collect::<Vec<_>>().join(",")
    };
    let ready = match cur.value(names::READY, &[]) {
        Some(v) if v >= 1.0 => "yes",
        Some(_) => "NO",
        None => "-",
    };
    let cpu = p
        .rate(process::PROCESS_CPU_SECONDS_TOTAL, &[])
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    let rss = cur
        .value(process::PROCESS_RESIDENT_MEMORY_BYTES, &[])
        .map_or("-".into(), bytes);
    let over = if p.secs > 0.0 {
        format!("rates over {:.1} s", p.secs)
    } else {
        "no rates yet".to_string()
    };
    let _ = writeln!(
        o,
        "weir top {address}   pipeline {pipeline}   ready {ready}   cpu {cpu}   rss {rss}   {over}"
    );
    if !cur
        .samples
        .iter()
        .any(|s| s.name.starts_with(WEIR_PREFIX) || s.name.starts_with(PROCESS_PREFIX))
    {
        let _ = writeln!(
            o,
            "(no weir metrics in the scrape: is this a `weir run --metrics-address` endpoint?)"
        );
    }
}

/// Records and rates per source, step (in and out) and sink; returns the
/// sinks, those with only latency series included.
fn records(o: &mut String, p: &Pair) -> Vec<String> {
    let cur = p.cur;
    let mut rows = Vec::new();
    let mut component = |what: String, name: &str, key: &str, family: &str| {
        let (total, rate) = p.counter(family, &[(key, name)]);
        rows.push(vec![
            what,
            total.map_or("-".into(), count),
            rate.map_or("-".into(), per_sec),
        ]);
    };
    for s in cur.label_values(names::SOURCE_RECORDS_TOTAL, "source") {
        component(
            format!("source {s}"),
            &s,
            "source",
            names::SOURCE_RECORDS_TOTAL,
        );
    }
    let mut steps = cur.label_values(names::STEP_RECORDS_IN_TOTAL, "step");
    for s in cur.label_values(names::STEP_RECORDS_OUT_TOTAL, "step") {
        if !steps.contains(&s) {
            steps.push(s);
        }
    }
    for s in &steps {
        for (dir, family) in [
            ("in", names::STEP_RECORDS_IN_TOTAL),
            ("out", names::STEP_RECORDS_OUT_TOTAL),
        ] {
            component(format!("step {s} {dir}"), s, "step", family);
        }
    }
    let mut sinks = cur.label_values(names::SINK_RECORDS_TOTAL, "sink");
    for family in [
        names::INGEST_TO_SINK_SECONDS,
        names::EVENT_TIME_TO_SINK_SECONDS,
    ] {
        for s in cur.label_values(&format!("{family}_bucket"), "sink") {
            if !sinks.contains(&s) {
                sinks.push(s);
            }
        }
    }
    for s in cur.label_values(names::SINK_RECORDS_TOTAL, "sink") {
        component(format!("sink {s}"), &s, "sink", names::SINK_RECORDS_TOTAL);
    }
    o.push('\n');
    table(o, &["RECORDS", "TOTAL", "PER SECOND"], rows);
    sinks
}

/// Ingest-to-sink and event-time-to-sink quantiles per sink.
fn sink_latencies(o: &mut String, p: &mut Pair, sinks: &[String]) {
    let mut rows = Vec::new();
    for s in sinks {
        let want = [("sink", s.as_str())];
        rows.push(vec![
            s.clone(),
            p.quantile(names::INGEST_TO_SINK_SECONDS, &want, 0.5, seconds),
            p.quantile(names::INGEST_TO_SINK_SECONDS, &want, 0.99, seconds),
            p.quantile(names::EVENT_TIME_TO_SINK_SECONDS, &want, 0.5, seconds),
            p.quantile(names::EVENT_TIME_TO_SINK_SECONDS, &want, 0.99, seconds),
        ]);
    }
    o.push('\n');
    table(
        o,
        &[
            "SINK LATENCY",
            "INGEST P50",
            "INGEST P99",
            "EVENT-TIME P50",
            "EVENT-TIME P99",
        ],
        rows,
    );
}

/// Inference time and calls per model step.
fn models(o: &mut String, p: &mut Pair) {
    let mut rows = Vec::new();
    let calls_family = format!("{}_count", names::MODEL_INFERENCE_SECONDS);
    for (labels, _) in p.cur.histograms(names::MODEL_INFERENCE_SECONDS) {
        let get = |k| label(&labels, k).unwrap_or("-").to_string();
        let (step, model, version) = (get("step"), get("model"), get("version"));
        let want = [
            ("step", step.as_str()),
            ("model", model.as_str()),
            ("version", version.as_str()),
        ];
        let p99 = p.quantile(names::MODEL_INFERENCE_SECONDS, &want, 0.99, seconds);
        let calls = p.rate(&calls_family, &labels).map_or("-".into(), per_sec);
        rows.push(vec![
            model.clone(),
            version.clone(),
            step.clone(),
            p99,
            calls,
        ]);
    }
    o.push('\n');
    table(
        o,
        &["MODEL", "VERSION", "STEP", "INFERENCE P99", "CALLS/S"],
        rows,
    );
}

/// Watermark lag and window state per shard, in shard order.
fn shards(o: &mut String, cur: &Scrape) {
    let mut shards: Vec<String> = cur.label_values(names::WATERMARK_LAG_SECONDS, "shard");
    for s in cur.label_values(names::WINDOW_STATE_ENTRIES, "shard") {
        if !shards.contains(&s) {
            shards.push(s);
        }
    }
    shards.sort_by(|a, b| match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    let rows = shards
        .iter()
        .map(|s| {
            let want = [("shard", s.as_str())];
            vec![
                s.clone(),
                cur.value(names::WATERMARK_LAG_SECONDS, &want)
                    .map_or("-".into(), seconds),
                cur.value(names::WINDOW_STATE_ENTRIES, &want)
                    .map_or("-".into(), count),
            ]
        })
        .collect();
    o.push('\n');
    table(o, &["SHARD", "WATERMARK LAG", "WINDOW STATE ENTRIES"], rows);
}

/// Consumer lag and size per log stream.
fn streams(o: &mut String, cur: &Scrape) {
    let mut streams = cur.label_values(names::LOG_CONSUMER_LAG_RECORDS, "stream");
    for s in cur.label_values(names::LOG_SIZE_BYTES, "stream") {
        if !streams.contains(&s) {
            streams.push(s);
        }
    }
    let rows = streams
        .iter()
        .map(|s| {
            let want = [("stream", s.as_str())];
            vec![
                s.clone(),
                cur.value(names::LOG_CONSUMER_LAG_RECORDS, &want)
                    .map_or("-".into(), count),
                cur.value(names::LOG_SIZE_BYTES, &want)
                    .map_or("-".into(), bytes),
            ]
        })
        .collect();
    o.push('\n');
    table(o, &["STREAM", "CONSUMER LAG", "LOG SIZE"], rows);
}

/// The last checkpoint's age, duration and size, and the outcomes.
fn checkpoints(o: &mut String, prev: &Scrape, cur: &Scrape) {
    let age = cur
        .value(names::CHECKPOINT_AGE_SECONDS, &[])
        .map_or("-".into(), seconds);
    let size = cur
        .value(names::CHECKPOINT_SIZE_BYTES, &[])
        .map_or("-".into(), bytes);
    let duration = checkpoint_duration(prev, cur);
    let outcome = |o: &str| {
        cur.value(names::CHECKPOINTS_TOTAL, &[("outcome", o)])
            .map_or("-".into(), count)
    };
    o.push('\n');
    table(
        o,
        &[
            "CHECKPOINTS",
            "LAST AGE",
            "DURATION",
            "SIZE",
            "COMPLETED",
            "FAILED",
        ],
        vec![vec![
            String::new(),
            age,
            duration,
            size,
            outcome("completed"),
            outcome("failed"),
        ]],
    );
}

/// Dead letters by reason, summed over steps.
fn dead_letters(o: &mut String, p: &Pair) {
    let cur = p.cur;
    let mut reasons: Vec<String> = cur.label_values(names::DEAD_LETTERS_TOTAL, "reason");
    reasons.sort();
    let rows = reasons
        .iter()
        .map(|r| {
            let (mut total, mut rate, mut rated) = (0.0, 0.0, false);
            for s in cur
                .named(names::DEAD_LETTERS_TOTAL)
                .filter(|s| s.label("reason") == Some(r))
            {
                total += s.value;
                if let Some(x) = p.rate(&s.name, &s.labels) {
                    rate += x;
                    rated = true;
                }
            }
            vec![
                r.clone(),
                count(total),
                if rated { per_sec(rate) } else { "-".into() },
            ]
        })
        .collect();
    o.push('\n');
    table(o, &["DEAD LETTERS", "TOTAL", "PER SECOND"], rows);
}

/// Connection state and reconnections per connector.
fn connectors(o: &mut String, cur: &Scrape) {
    let rows = cur
        .named(names::CONNECTOR_UP)
        .map(|s| {
            let name = s.label("connector").unwrap_or("-");
            let role = s.label("role").unwrap_or("-");
            let reconnects = cur
                .value(
                    names::CONNECTOR_RECONNECTS_TOTAL,
                    &[("connector", name), ("role", role)],
                )
                .map_or("-".into(), count);
            vec![
                name.to_string(),
                role.to_string(),
                if s.value >= 1.0 { "up" } else { "DOWN" }.to_string(),
                reconnects,
            ]
        })
        .collect();
    o.push('\n');
    table(o, &["CONNECTOR", "ROLE", "STATE", "RECONNECTS"], rows);
}

/// The last checkpoint's duration: exact when one completed between the
/// scrapes, the mean when several did, else the mean of all (marked).
fn checkpoint_duration(prev: &Scrape, cur: &Scrape) -> String {
    let Some(c) = cur.histogram(names::CHECKPOINT_DURATION_SECONDS, &[]) else {
        return "-".into();
    };
    let p = prev.histogram(names::CHECKPOINT_DURATION_SECONDS, &[]);
    if let Some(d) = p.and_then(|p| c.since(&p)) {
        if let (Some(n), Some(sum)) = (d.count, d.sum) {
            if n >= 1.0 {
                let mean = seconds(sum / n);
                return if n == 1.0 {
                    mean
                } else {
                    format!("{mean} (mean of {n})")
                };
            }
        }
    }
    match (c.count, c.sum) {
        (Some(n), Some(sum)) if n > 0.0 => format!("{} (mean)", seconds(sum / n)),
        _ => "-".into(),
    }
}

/// Appends an aligned table: the first column left-aligned, the others
/// right-aligned; a table without rows shows one row of `-`.
fn table(o: &mut String, headers: &[&str], mut rows: Vec<Vec<String>>) {
    if rows.is_empty() {
        rows.push(vec!["-".to_string(); headers.len()]);
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(text, "{cell:<w$}");
            } else {
                let _ = write!(text, "   {cell:>w$}");
            }
        }
        let _ = writeln!(o, "{}", text.trim_end());
    };
    line(&mut headers.iter().copied());
    for row in &rows {
        line(&mut row.iter().map(String::as_str));
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{cells, row, rows, CUR, PREV};
    use super::*;

    #[test]
    fn renders_every_section_from_two_scrapes() {
        let prev = Scrape::parse(PREV);
        let cur = Scrape::parse(CUR);
        let view = render("127.0.0.1:9464", &prev, &cur, Duration::from_secs(2));
        let header = view.lines().next().unwrap();
        assert!(header.contains("weir top 127.0.0.1:9464"), "{header}");
        assert!(header.contains("pipeline fraud"), "{header}");
        assert!(header.contains("ready NO"), "{header}");
        assert!(header.contains("cpu 75.0%"), "{header}");
        assert!(header.contains("rss 238.4 MiB"), "{header}");
        assert!(header.contains("rates over 2.0 s"), "{header}");

        assert_eq!(
            row(&view, "source orders"),
            ["source orders", "3,000", "1,000"]
        );
        assert_eq!(
            row(&view, "step decode in"),
            ["step decode in", "3,000", "1,000"]
        );
        assert_eq!(
            row(&view, "step decode out"),
            ["step decode out", "2,980", "995"]
        );
        assert_eq!(row(&view, "step features in")[2], "995");
        assert_eq!(row(&view, "sink alerts"), ["sink alerts", "10", "0.0"]);
        assert_eq!(row(&view, "sink scores"), ["sink scores", "2,980", "995"]);

        // scores: 1990 new observations all in (0.1, 1]: p50 = 0.1 + 0.9 *
        // 995/1990; the event-time family is new in this scrape, so it is
        // estimated from its cumulative counts (marked *).
        assert_eq!(
            row(&view, "scores"),
            ["scores", "550.0 ms", "991.0 ms", "3.00 s*", "4.96 s*"]
        );
        // alerts: no traffic in the interval, no event-time family.
        assert_eq!(
            row(&view, "alerts"),
            ["alerts", "5.5 ms*", "9.9 ms*", "-", "-"]
        );
        assert!(view.contains("* since the process started"));

        assert_eq!(
            row(&view, "fraud"),
            ["fraud", "3", "score", "9.9 ms", "10.0"]
        );

        // Shards sorted numerically.
        let shard_2 = view.find("\n2 ").unwrap();
        let shard_10 = view.find("\n10 ").unwrap();
        assert!(shard_2 < shard_10);
        assert_eq!(row(&view, "2"), ["2", "2.50 s", "1,234,567"]);
        assert_eq!(row(&view, "10"), ["10", "250.0 ms", "7"]);

        assert_eq!(row(&view, "orders"), ["orders", "12,345", "2.0 KiB"]);
        // One checkpoint of 0.25 s completed between the scrapes.
        let cp = view
            .lines()
            .skip_while(|l| !l.starts_with("CHECKPOINTS"))
            .nth(1)
            .unwrap();
        assert_eq!(cells(cp), ["500.0 ms", "250.0 ms", "1.5 MiB", "3", "0"]);

        assert_eq!(row(&view, "late"), ["late", "2", "-"]);
        assert_eq!(row(&view, "malformed"), ["malformed", "8", "2.0"]);

        assert_eq!(rows(&view, "orders")[1], ["orders", "source", "up", "0"]);
        assert_eq!(rows(&view, "alerts")[1], ["alerts", "sink", "DOWN", "4"]);
    }

    #[test]
    fn missing_families_show_dashes() {
        let empty = Scrape::parse("");
        let view = render("h:1", &empty, &empty, Duration::from_secs(1));
        assert!(
            view.contains("pipeline -   ready -   cpu -   rss -"),
            "{view}"
        );
        assert!(view.contains("no weir metrics in the scrape"));
        for header in [
            "RECORDS",
            "SINK LATENCY",
            "MODEL",
            "SHARD",
            "STREAM",
            "DEAD LETTERS",
            "CONNECTOR",
        ] {
            let next = view
                .lines()
                .skip_while(|l| !l.starts_with(header))
                .nth(1)
                .unwrap();
            assert!(
                next.split_whitespace().all(|c| c == "-"),
                "{header}: {next:?}"
            );
        }
        let cp = view
            .lines()
            .skip_while(|l| !l.starts_with("CHECKPOINTS"))
            .nth(1)
            .unwrap();
        assert!(cp.split_whitespace().all(|c| c == "-"), "{cp:?}");

        // Only the records families: everything else is a dash, no panic.
        let cur = Scrape::parse(
            "weir_source_records_total{pipeline=\"p\",source=\"s\"} 5\n\
             weir_sink_records_total{pipeline=\"p\",sink=\"k\"} 5\n\
             weir_ingest_to_sink_seconds_bucket{pipeline=\"p\",sink=\"k\",le=\"1\"} 5\n",
        );
        let view = render("h:1", &empty, &cur, Duration::from_secs(1));
        assert_eq!(row(&view, "source s"), ["source s", "5", "-"]);
        assert_eq!(row(&view, "k"), ["k", "-", "-", "-", "-"]);
        // The same scrape twice, or no time between them: no rates.
        let view = render("h:1", &cur, &cur, Duration::ZERO);
        assert!(view.contains("no rates yet"));
        assert_eq!(row(&view, "source s"), ["source s", "5", "-"]);
    }

    #[test]
    fn counter_resets_count_from_zero() {
        let prev = Scrape::parse("weir_source_records_total{source=\"s\"} 100\n");
        let cur = Scrape::parse("weir_source_records_total{source=\"s\"} 30\n");
        let view = render("h:1", &prev, &cur, Duration::from_secs(3));
        assert_eq!(row(&view, "source s"), ["source s", "30", "10.0"]);
    }
}
