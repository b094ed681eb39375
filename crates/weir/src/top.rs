//! `weir top`: a live view of a running pipeline from its `/metrics`.
//!
//! Operators want to see a running `weir run --metrics-address` at a
//! glance without setting up Prometheus: records and rates per source,
//! step and sink, sink latencies, model inference time, per-shard
//! watermark lag and window state, consumer lag, checkpoints, dead
//! letters, connectors, readiness and the process's CPU and memory.
//!
//! Rates and interval quantiles need two scrapes: each view is rendered by
//! [`render`], a pure function of two parsed scrapes and the time between
//! them, so it is tested on fixture exposition text. The exposition is
//! parsed here ([`Scrape::parse`]) rather than with the `prometheus-parse`
//! crate, whose label parser splits on `,` and `=` without honouring
//! quoting or escapes (step and pipeline names are free text).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::http_get::{self, Endpoint};

/// Timeout of the connect and of each read of a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/metrics` body accepted.
const MAX_SCRAPE_BYTES: usize = 64 * 1024 * 1024;
/// Clears the terminal and moves the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// Arguments of `weir top`.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Address of a `weir run --metrics-address` endpoint: host:port or
    /// http://host:port.
    address: String,
    /// Time between scrapes, over which rates are computed (e.g. 500ms,
    /// 1s, 5s).
    #[arg(long, default_value = "1s", value_parser = parse_interval)]
    interval: Duration,
    /// Print one snapshot (from two scrapes an interval apart) and exit,
    /// as when standard output is not a terminal.
    #[arg(long)]
    once: bool,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    let ms = weir_config::parse_duration_ms(text)?;
    if ms <= 0 {
        return Err(format!("interval {text:?} must be positive"));
    }
    Ok(Duration::from_millis(ms.unsigned_abs()))
}

/// Runs `weir top`.
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let endpoint = Endpoint::parse(&args.address)?;
    let address = endpoint.authority().to_string();
    let stdout = std::io::stdout();
    let live = !args.once && stdout.is_terminal();
    let (mut prev, mut prev_at) = scrape(&endpoint)?;
    if !live {
        std::thread::sleep(args.interval);
        let (cur, cur_at) = scrape(&endpoint)?;
        let view = render(&address, &prev, &cur, cur_at - prev_at);
        let mut out = stdout.lock();
        return write_quietly(&mut out, &view);
    }
    let mut out = stdout.lock();
    write_quietly(
        &mut out,
        &format!("{CLEAR}{}", render(&address, &prev, &prev, Duration::ZERO)),
    )?;
    loop {
        std::thread::sleep(args.interval);
        match scrape(&endpoint) {
            Ok((cur, cur_at)) => {
                let view = render(&address, &prev, &cur, cur_at - prev_at);
                write_quietly(&mut out, &format!("{CLEAR}{view}"))?;
                (prev, prev_at) = (cur, cur_at);
            }
            Err(e) => {
                // Keep the last view, say why it is stale, and retry: the
                // pipeline may be restarting.
                let view = render(&address, &prev, &prev, Duration::ZERO);
                write_quietly(
                    &mut out,
                    &format!("{CLEAR}{view}\nerror: {e:#} (retrying every interval)\n"),
                )?;
            }
        }
    }
}

/// Writes and flushes `text`; a closed standard output (`| head`) is not
/// an error.
fn write_quietly(out: &mut impl Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// GETs and parses `/metrics`; returns the scrape and when it arrived.
fn scrape(endpoint: &Endpoint) -> anyhow::Result<(Scrape, Instant)> {
    let r = http_get::get(endpoint, "/metrics", SCRAPE_TIMEOUT, MAX_SCRAPE_BYTES).with_context(
        || {
            format!(
                "cannot scrape {} (is `weir run --metrics-address {}` running?)",
                endpoint.url("/metrics"),
                endpoint.authority()
            )
        },
    )?;
    let at = Instant::now();
    if r.head.status != 200 {
        let body = String::from_utf8_lossy(&r.body);
        bail!(
            "GET {} answered {} {}: {}",
            endpoint.url("/metrics"),
            r.head.status,
            r.head.reason,
            body.trim()
        );
    }
    Ok((Scrape::parse(&String::from_utf8_lossy(&r.body)), at))
}

/// One sample line of the exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Sorted by label name.
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        label(&self.labels, name)
    }
}

fn label<'a>(labels: &'a [(String, String)], name: &str) -> Option<&'a str> {
    labels
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A parsed Prometheus text exposition (format 0.0.4).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses exposition text; lines that are not valid samples
    /// (comments, `# TYPE`, garbage) are skipped.
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_sample)
            .collect();
        Scrape { samples }
    }

    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The sample of `name` with exactly `labels`.
    fn exact(&self, name: &str, labels: &[(String, String)]) -> Option<f64> {
        self.named(name)
            .find(|s| s.labels == labels)
            .map(|s| s.value)
    }

    /// The first sample of `name` whose labels include `want`.
    fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| want.iter().all(|(k, v)| s.label(k) == Some(*v)))
            .map(|s| s.value)
    }

    /// Distinct values of label `key` on `name`, in order of appearance.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for s in self.named(name) {
            if let Some(v) = s.label(key) {
                if !seen.iter().any(|x: &String| x == v) {
                    seen.push(v.to_string());
                }
            }
        }
        seen
    }

    /// The histograms of family `base`, by label set (without `le`), in
    /// order of appearance.
    fn histograms(&self, base: &str) -> Vec<(Vec<(String, String)>, Histogram)> {
        let bucket_name = format!("{base}_bucket");
        let mut out: Vec<(Vec<(String, String)>, Histogram)> = Vec::new();
        for s in self.named(&bucket_name) {
            let Some(le) = s.label("le").and_then(parse_float) else {
                continue;
            };
            let labels: Vec<(String, String)> = s
                .labels
                .iter()
                .filter(|(k, _)| k != "le")
                .cloned()
                .collect();
            let i = match out.iter().position(|(l, _)| *l == labels) {
                Some(i) => i,
                None => {
                    out.push((labels, Histogram::default()));
                    out.len() - 1
                }
            };
            out[i].1.buckets.push((le, s.value));
        }
        let count_name = format!("{base}_count");
        let sum_name = format!("{base}_sum");
        for (labels, h) in &mut out {
            h.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            h.count = self.exact(&count_name, labels);
            h.sum = self.exact(&sum_name, labels);
        }
        out
    }

    /// The histogram of `base` whose labels include `want`.
    fn histogram(&self, base: &str, want: &[(&str, &str)]) -> Option<Histogram> {
        self.histograms(base)
            .into_iter()
            .find(|(l, _)| want.iter().all(|(k, v)| label(l, k) == Some(*v)))
            .map(|(_, h)| h)
    }
}

/// Parses `name{label="value",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = line[end..].trim_start();
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, r) = parse_labels(r)?;
        labels = l;
        rest = r;
    }
    let value = parse_float(rest.split_whitespace().next()?)?;
    labels.sort();
    Some(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Parses the labels after `{`; returns them and the text after `}`.
fn parse_labels(mut rest: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let key = &rest[..end];
        if key.is_empty() {
            return None;
        }
        rest = rest[end..]
            .trim_start()
            .strip_prefix('=')?
            .trim_start()
            .strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let close = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        rest = rest[close + 1..].trim_start();
        labels.push((key.to_string(), value));
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return None;
        }
    }
}

/// Parses a sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_float(text: &str) -> Option<f64> {
    text.parse().ok()
}

/// One histogram: cumulative bucket counts by upper bound.
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`.
    buckets: Vec<(f64, f64)>,
    count: Option<f64>,
    sum: Option<f64>,
}

impl Histogram {
    /// Observations in total (the `+Inf` bucket, else `_count`).
    fn total(&self) -> f64 {
        match self.buckets.last() {
            Some((le, c)) if *le == f64::INFINITY => *c,
            _ => self.count.unwrap_or(0.0),
        }
    }

    /// The increase from `prev` to `self`, if they have the same buckets;
    /// after a reset (a count went down), `self` itself.
    fn since(&self, prev: &Histogram) -> Option<Histogram> {
        if self.buckets.len() != prev.buckets.len()
            || self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .any(|(a, b)| a.0 != b.0)
        {
            return None;
        }
        if self.total() < prev.total() {
            return Some(self.clone());
        }
        let sub = |a: Option<f64>, b: Option<f64>| Some((a? - b?).max(0.0));
        Some(Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&prev.buckets)
                .map(|(a, b)| (a.0, (a.1 - b.1).max(0.0)))
                .collect(),
            count: sub(self.count, prev.count),
            sum: sub(self.sum, prev.sum),
        })
    }

    /// The `q` quantile estimated as Prometheus' `histogram_quantile`
    /// does: linear interpolation within the bucket holding the rank (the
    /// first bucket's lower bound is 0); a rank in the `+Inf` bucket gives
    /// the highest finite bound. `None` without observations or without a
    /// `+Inf` bucket.
    fn quantile(&self, q: f64) -> Option<f64> {
        let (last_le, _) = *self.buckets.last()?;
        if last_le != f64::INFINITY || !(0.0..=1.0).contains(&q) {
            return None;
        }
        // Counts must not go down from bucket to bucket; a scrape racing
        // with observations can make them.
        let mut running = 0.0f64;
        let buckets: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|&(le, c)| {
                running = running.max(c);
                (le, running)
            })
            .collect();
        let total = running;
        if total.is_nan() || total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let i = buckets.iter().position(|&(_, c)| c >= rank)?;
        if i == buckets.len() - 1 {
            return Some(if i == 0 { 0.0 } else { buckets[i - 1].0 });
        }
        let (upper, count) = buckets[i];
        let (lower, below) = if i == 0 {
            if upper <= 0.0 {
                return Some(upper);
            }
            (0.0, 0.0)
        } else {
            buckets[i - 1]
        };
        let in_bucket = count - below;
        if in_bucket <= 0.0 {
            return Some(upper);
        }
        Some(lower + (upper - lower) * (rank - below) / in_bucket)
    }
}

/// A quantile estimate and whether it covers only the interval between the
/// scrapes (`false`: everything since the process started, as there was
/// no traffic in the interval).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Estimate {
    value: f64,
    interval: bool,
}

/// The `q` quantile of a histogram over the interval if it saw
/// observations, else over its whole life.
fn estimate(prev: Option<&Histogram>, cur: &Histogram, q: f64) -> Option<Estimate> {
    if let Some(delta) = prev.and_then(|p| cur.since(p)) {
        if delta.total() > 0.0 {
            if let Some(value) = delta.quantile(q) {
                return Some(Estimate {
                    value,
                    interval: true,
                });
            }
        }
    }
    cur.quantile(q).map(|value| Estimate {
        value,
        interval: false,
    })
}

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

    // Header: pipeline, readiness, process.
    let pipelines: BTreeSet<&str> = cur
        .samples
        .iter()
        .filter(|s| s.name.starts_with("weir_"))
        .filter_map(|s| s.label("pipeline"))
        .collect();
    let pipeline = if pipelines.is_empty() {
        "-".to_string()
    } else {
        pipelines.into_iter().collect::<Vec<_>>().join(",")
    };
    let ready = match cur.value("weir_ready", &[]) {
        Some(v) if v >= 1.0 => "yes",
        Some(_) => "NO",
        None => "-",
    };
    let cpu = p
        .rate("process_cpu_seconds_total", &[])
        .map_or("-".into(), |r| format!("{:.1}%", r * 100.0));
    let rss = cur
        .value("process_resident_memory_bytes", &[])
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
        .any(|s| s.name.starts_with("weir_") || s.name.starts_with("process_"))
    {
        let _ = writeln!(
            o,
            "(no weir metrics in the scrape: is this a `weir run --metrics-address` endpoint?)"
        );
    }

    // Records per component.
    let mut rows = Vec::new();
    let component =
        |o_rows: &mut Vec<Vec<String>>, what: String, name: &str, key: &str, family: &str| {
            let (total, rate) = p.counter(family, &[(key, name)]);
            o_rows.push(vec![
                what,
                total.map_or("-".into(), count),
                rate.map_or("-".into(), per_sec),
            ]);
        };
    for s in cur.label_values("weir_source_records_total", "source") {
        component(
            &mut rows,
            format!("source {s}"),
            &s,
            "source",
            "weir_source_records_total",
        );
    }
    let mut steps = cur.label_values("weir_step_records_in_total", "step");
    for s in cur.label_values("weir_step_records_out_total", "step") {
        if !steps.contains(&s) {
            steps.push(s);
        }
    }
    for s in &steps {
        for (dir, family) in [
            ("in", "weir_step_records_in_total"),
            ("out", "weir_step_records_out_total"),
        ] {
            component(&mut rows, format!("step {s} {dir}"), s, "step", family);
        }
    }
    let mut sinks = cur.label_values("weir_sink_records_total", "sink");
    for family in [
        "weir_ingest_to_sink_seconds",
        "weir_event_time_to_sink_seconds",
    ] {
        for s in cur.label_values(&format!("{family}_bucket"), "sink") {
            if !sinks.contains(&s) {
                sinks.push(s);
            }
        }
    }
    for s in cur.label_values("weir_sink_records_total", "sink") {
        component(
            &mut rows,
            format!("sink {s}"),
            &s,
            "sink",
            "weir_sink_records_total",
        );
    }
    o.push('\n');
    table(&mut o, &["RECORDS", "TOTAL", "PER SECOND"], rows);

    // Sink latencies.
    let mut rows = Vec::new();
    for s in &sinks {
        let want = [("sink", s.as_str())];
        rows.push(vec![
            s.clone(),
            p.quantile("weir_ingest_to_sink_seconds", &want, 0.5, seconds),
            p.quantile("weir_ingest_to_sink_seconds", &want, 0.99, seconds),
            p.quantile("weir_event_time_to_sink_seconds", &want, 0.5, seconds),
            p.quantile("weir_event_time_to_sink_seconds", &want, 0.99, seconds),
        ]);
    }
    o.push('\n');
    table(
        &mut o,
        &[
            "SINK LATENCY",
            "INGEST P50",
            "INGEST P99",
            "EVENT-TIME P50",
            "EVENT-TIME P99",
        ],
        rows,
    );

    // Models.
    let mut rows = Vec::new();
    for (labels, _) in cur.histograms("weir_model_inference_seconds") {
        let get = |k| label(&labels, k).unwrap_or("-").to_string();
        let (step, model, version) = (get("step"), get("model"), get("version"));
        let want = [
            ("step", step.as_str()),
            ("model", model.as_str()),
            ("version", version.as_str()),
        ];
        let p99 = p.quantile("weir_model_inference_seconds", &want, 0.99, seconds);
        let calls = p
            .rate("weir_model_inference_seconds_count", &labels)
            .map_or("-".into(), per_sec);
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
        &mut o,
        &["MODEL", "VERSION", "STEP", "INFERENCE P99", "CALLS/S"],
        rows,
    );

    // Shards.
    let mut shards: Vec<String> = cur.label_values("weir_watermark_lag_seconds", "shard");
    for s in cur.label_values("weir_window_state_entries", "shard") {
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
                cur.value("weir_watermark_lag_seconds", &want)
                    .map_or("-".into(), seconds),
                cur.value("weir_window_state_entries", &want)
                    .map_or("-".into(), count),
            ]
        })
        .collect();
    o.push('\n');
    table(
        &mut o,
        &["SHARD", "WATERMARK LAG", "WINDOW STATE ENTRIES"],
        rows,
    );

    // Streams.
    let mut streams = cur.label_values("weir_log_consumer_lag_records", "stream");
    for s in cur.label_values("weir_log_size_bytes", "stream") {
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
                cur.value("weir_log_consumer_lag_records", &want)
                    .map_or("-".into(), count),
                cur.value("weir_log_size_bytes", &want)
                    .map_or("-".into(), bytes),
            ]
        })
        .collect();
    o.push('\n');
    table(&mut o, &["STREAM", "CONSUMER LAG", "LOG SIZE"], rows);

    // Checkpoints.
    let age = cur
        .value("weir_checkpoint_age_seconds", &[])
        .map_or("-".into(), seconds);
    let size = cur
        .value("weir_checkpoint_size_bytes", &[])
        .map_or("-".into(), bytes);
    let duration = checkpoint_duration(prev, cur);
    let outcome = |o: &str| {
        cur.value("weir_checkpoints_total", &[("outcome", o)])
            .map_or("-".into(), count)
    };
    o.push('\n');
    table(
        &mut o,
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

    // Dead letters, by reason (summed over steps).
    let mut reasons: Vec<String> = cur.label_values("weir_dead_letters_total", "reason");
    reasons.sort();
    let rows = reasons
        .iter()
        .map(|r| {
            let (mut total, mut rate, mut rated) = (0.0, 0.0, false);
            for s in cur
                .named("weir_dead_letters_total")
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
    table(&mut o, &["DEAD LETTERS", "TOTAL", "PER SECOND"], rows);

    // Connectors.
    let rows = cur
        .named("weir_connector_up")
        .map(|s| {
            let name = s.label("connector").unwrap_or("-");
            let role = s.label("role").unwrap_or("-");
            let reconnects = cur
                .value(
                    "weir_connector_reconnects_total",
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
    table(&mut o, &["CONNECTOR", "ROLE", "STATE", "RECONNECTS"], rows);

    if p.lifetime_marks {
        let _ = writeln!(
            o,
            "\n* since the process started: no observations between the two scrapes"
        );
    }
    o
}

/// The last checkpoint's duration: exact when one completed between the
/// scrapes, the mean when several did, else the mean of all (marked).
fn checkpoint_duration(prev: &Scrape, cur: &Scrape) -> String {
    let Some(c) = cur.histogram("weir_checkpoint_duration_seconds", &[]) else {
        return "-".into();
    };
    let p = prev.histogram("weir_checkpoint_duration_seconds", &[]);
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

/// A count, with thousands separators.
pub(crate) fn count(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let n = v.round();
    let digits = format!("{}", n.abs());
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    if n < 0.0 {
        s.insert(0, '-');
    }
    s
}

/// A rate per second.
fn per_sec(v: f64) -> String {
    if v.is_finite() && v.abs() < 100.0 {
        format!("{v:.1}")
    } else {
        count(v)
    }
}

/// A duration in seconds, in a readable unit.
fn seconds(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a == 0.0 {
        "0".to_string()
    } else if a < 1e-3 {
        format!("{:.0} µs", v * 1e6)
    } else if a < 1.0 {
        format!("{:.1} ms", v * 1e3)
    } else if a < 120.0 {
        format!("{v:.2} s")
    } else if a < 7200.0 {
        format!("{:.1} min", v / 60.0)
    } else {
        format!("{:.1} h", v / 3600.0)
    }
}

/// A size in bytes, in binary units.
fn bytes(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if v.abs() < 1024.0 {
        return format!("{v:.0} B");
    }
    let mut x = v / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if x.abs() < 1024.0 {
            break;
        }
        x /= 1024.0;
        unit = u;
    }
    format!("{x:.1} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREV: &str = r#"# HELP weir_source_records_total records read from the source
# TYPE weir_source_records_total counter
weir_source_records_total{pipeline="fraud",source="orders"} 1000
# TYPE weir_step_records_in_total counter
weir_step_records_in_total{pipeline="fraud",step="decode"} 1000
weir_step_records_in_total{pipeline="fraud",step="features"} 990
# TYPE weir_step_records_out_total counter
weir_step_records_out_total{pipeline="fraud",step="decode"} 990
weir_step_records_out_total{pipeline="fraud",step="features"} 990
# TYPE weir_sink_records_total counter
weir_sink_records_total{pipeline="fraud",sink="alerts"} 10
weir_sink_records_total{pipeline="fraud",sink="scores"} 990
# TYPE weir_ingest_to_sink_seconds histogram
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.01"} 500
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 990
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 5.0
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="scores"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.01"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.1"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="+Inf"} 10
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="alerts"} 0.05
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="alerts"} 10
# TYPE weir_model_inference_seconds histogram
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.001"} 0
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.01"} 10
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="+Inf"} 10
weir_model_inference_seconds_sum{pipeline="fraud",step="score",model="fraud",version="3"} 0.05
weir_model_inference_seconds_count{pipeline="fraud",step="score",model="fraud",version="3"} 10
# TYPE weir_checkpoint_duration_seconds histogram
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="0.1"} 2
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="+Inf"} 2
weir_checkpoint_duration_seconds_sum{pipeline="fraud"} 0.1
weir_checkpoint_duration_seconds_count{pipeline="fraud"} 2
weir_dead_letters_total{pipeline="fraud",step="decode",reason="malformed"} 3
weir_dead_letters_total{pipeline="fraud",step="features",reason="malformed"} 1
process_cpu_seconds_total 10
"#;

    const CUR: &str = r#"# HELP weir_source_records_total records read from the source
# TYPE weir_source_records_total counter
weir_source_records_total{pipeline="fraud",source="orders"} 3000
# TYPE weir_step_records_in_total counter
weir_step_records_in_total{pipeline="fraud",step="decode"} 3000
weir_step_records_in_total{pipeline="fraud",step="features"} 2980
# TYPE weir_step_records_out_total counter
weir_step_records_out_total{pipeline="fraud",step="decode"} 2980
weir_step_records_out_total{pipeline="fraud",step="features"} 2980
# TYPE weir_sink_records_total counter
weir_sink_records_total{pipeline="fraud",sink="alerts"} 10
weir_sink_records_total{pipeline="fraud",sink="scores"} 2980
# TYPE weir_ingest_to_sink_seconds histogram
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.01"} 500
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="0.1"} 990
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 2980
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 2980
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 1000.0
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="scores"} 2980
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.001"} 0
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.01"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="0.1"} 10
weir_ingest_to_sink_seconds_bucket{pipeline="fraud",sink="alerts",le="+Inf"} 10
weir_ingest_to_sink_seconds_sum{pipeline="fraud",sink="alerts"} 0.05
weir_ingest_to_sink_seconds_count{pipeline="fraud",sink="alerts"} 10
# TYPE weir_event_time_to_sink_seconds histogram
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="1"} 0
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="5"} 2980
weir_event_time_to_sink_seconds_bucket{pipeline="fraud",sink="scores",le="+Inf"} 2980
weir_event_time_to_sink_seconds_sum{pipeline="fraud",sink="scores"} 6000
weir_event_time_to_sink_seconds_count{pipeline="fraud",sink="scores"} 2980
# TYPE weir_model_inference_seconds histogram
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.001"} 0
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="0.01"} 30
weir_model_inference_seconds_bucket{pipeline="fraud",step="score",model="fraud",version="3",le="+Inf"} 30
weir_model_inference_seconds_sum{pipeline="fraud",step="score",model="fraud",version="3"} 0.15
weir_model_inference_seconds_count{pipeline="fraud",step="score",model="fraud",version="3"} 30
# TYPE weir_window_state_entries gauge
weir_window_state_entries{pipeline="fraud",shard="10"} 7
weir_window_state_entries{pipeline="fraud",shard="2"} 1234567
# TYPE weir_watermark_lag_seconds gauge
weir_watermark_lag_seconds{pipeline="fraud",shard="2"} 2.5
weir_watermark_lag_seconds{pipeline="fraud",shard="10"} 0.25
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="0.1"} 2
weir_checkpoint_duration_seconds_bucket{pipeline="fraud",le="+Inf"} 3
weir_checkpoint_duration_seconds_sum{pipeline="fraud"} 0.35
weir_checkpoint_duration_seconds_count{pipeline="fraud"} 3
weir_checkpoint_size_bytes{pipeline="fraud"} 1572864
weir_checkpoint_age_seconds{pipeline="fraud"} 0.5
weir_checkpoints_total{pipeline="fraud",outcome="completed"} 3
weir_checkpoints_total{pipeline="fraud",outcome="failed"} 0
weir_log_size_bytes{pipeline="fraud",stream="orders"} 2048
weir_log_consumer_lag_records{pipeline="fraud",stream="orders"} 12345
weir_dead_letters_total{pipeline="fraud",step="decode",reason="malformed"} 5
weir_dead_letters_total{pipeline="fraud",step="features",reason="malformed"} 3
weir_dead_letters_total{pipeline="fraud",step="features",reason="late"} 2
weir_connector_up{pipeline="fraud",connector="orders",role="source"} 1
weir_connector_up{pipeline="fraud",connector="alerts",role="sink"} 0
weir_connector_reconnects_total{pipeline="fraud",connector="orders",role="source"} 0
weir_connector_reconnects_total{pipeline="fraud",connector="alerts",role="sink"} 4
weir_ready{pipeline="fraud"} 0
process_cpu_seconds_total 11.5
process_resident_memory_bytes 2.5e+08
"#;

    /// The cells of a line (separated by at least three spaces).
    fn cells(line: &str) -> Vec<&str> {
        line.split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect()
    }

    /// The rows of `view` whose first cell is `first`.
    fn rows<'a>(view: &'a str, first: &str) -> Vec<Vec<&'a str>> {
        view.lines()
            .map(cells)
            .filter(|c| c.first() == Some(&first))
            .collect()
    }

    /// The first row of `view` whose first cell is `first`.
    fn row<'a>(view: &'a str, first: &str) -> Vec<&'a str> {
        rows(view, first)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no row {first:?} in\n{view}"))
    }

    #[test]
    fn parses_samples_labels_escapes_and_special_values() {
        let s = Scrape::parse(
            "# HELP x a help line\n\
             x 1\n\
             y{a=\"1\",b=\"two, with = and } inside\"} 2.5 1700000000000\n\
             z{ b = \"q\\\"uote\\\\ \\n\" , a=\"\",} +Inf\n\
             w NaN\n\
             v{le=\"-Inf\"} -Inf\n\
             broken{a=\"1\" 3\n\
             also broken\n\
             {a=\"1\"} 3\n",
        );
        let names: Vec<&str> = s.samples.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "z", "w", "v"]);
        assert_eq!(s.samples[0].value, 1.0);
        assert!(s.samples[0].labels.is_empty());
        assert_eq!(s.samples[1].label("b"), Some("two, with = and } inside"));
        assert_eq!(s.samples[1].value, 2.5);
        assert_eq!(s.samples[2].label("b"), Some("q\"uote\\ \n"));
        assert_eq!(s.samples[2].label("a"), Some(""));
        assert_eq!(s.samples[2].labels[0].0, "a", "labels sorted");
        assert_eq!(s.samples[2].value, f64::INFINITY);
        assert!(s.samples[3].value.is_nan());
        assert_eq!(s.samples[4].value, f64::NEG_INFINITY);
    }

    fn hist(buckets: &[(f64, f64)]) -> Histogram {
        Histogram {
            buckets: buckets.to_vec(),
            count: buckets.last().map(|b| b.1),
            sum: None,
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let inf = f64::INFINITY;
        let h = hist(&[(0.1, 50.0), (0.2, 90.0), (1.0, 100.0), (inf, 100.0)]);
        let close = |a: Option<f64>, b: f64| {
            let a = a.unwrap();
            assert!((a - b).abs() < 1e-9, "{a} != {b}");
        };
        close(h.quantile(0.5), 0.1);
        close(h.quantile(0.25), 0.05);
        close(h.quantile(0.7), 0.15);
        close(h.quantile(0.99), 0.2 + 0.8 * 0.9);
        close(h.quantile(1.0), 1.0);
        // A rank in the +Inf bucket gives the highest finite bound.
        let h = hist(&[(0.1, 50.0), (1.0, 90.0), (inf, 100.0)]);
        close(h.quantile(0.99), 1.0);
        // No observations, no +Inf bucket, nothing at all: no estimate.
        assert_eq!(hist(&[(0.1, 0.0), (inf, 0.0)]).quantile(0.5), None);
        assert_eq!(hist(&[(0.1, 5.0)]).quantile(0.5), None);
        assert_eq!(hist(&[]).quantile(0.5), None);
        // Non-monotonic counts are evened out.
        let h = hist(&[(0.1, 50.0), (0.2, 40.0), (inf, 100.0)]);
        close(h.quantile(0.5), 0.1);
    }

    #[test]
    fn interval_quantiles_use_the_increase_else_all_time() {
        let inf = f64::INFINITY;
        let prev = hist(&[(0.01, 100.0), (1.0, 100.0), (inf, 100.0)]);
        let cur = hist(&[(0.01, 100.0), (1.0, 200.0), (inf, 200.0)]);
        let e = estimate(Some(&prev), &cur, 0.5).unwrap();
        assert!(e.interval);
        assert!((e.value - 0.505).abs() < 1e-9, "{}", e.value);
        // No traffic in the interval: cumulative, marked.
        let e = estimate(Some(&cur), &cur, 0.5).unwrap();
        assert!(!e.interval);
        assert!((e.value - 0.01).abs() < 1e-9);
        // A reset (process restarted) counts from zero.
        let small = hist(&[(0.01, 0.0), (1.0, 4.0), (inf, 4.0)]);
        let e = estimate(Some(&cur), &small, 0.5).unwrap();
        assert!(e.interval);
        // Different buckets: cumulative.
        let other = hist(&[(0.5, 100.0), (inf, 300.0)]);
        assert!(!estimate(Some(&cur), &other, 0.5).unwrap().interval);
        assert!(!estimate(None, &cur, 0.5).unwrap().interval);
    }

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

    #[test]
    fn formats() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(-1234567.0), "-1,234,567");
        assert_eq!(per_sec(12.34), "12.3");
        assert_eq!(per_sec(12345.6), "12,346");
        assert_eq!(seconds(0.000012), "12 µs");
        assert_eq!(seconds(0.0125), "12.5 ms");
        assert_eq!(seconds(1.5), "1.50 s");
        assert_eq!(seconds(600.0), "10.0 min");
        assert_eq!(seconds(36000.0), "10.0 h");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0 * 1024.0), "3.0 GiB");
    }

    #[test]
    fn interval_parsing() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("1").is_err());
        assert!(parse_interval("fast").is_err());
    }

    #[test]
    fn once_against_a_server_and_an_unreachable_address() {
        let response = |body: &str| {
            vec![format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()]
        };
        let (addr, server) = crate::http_get::tests::serve(vec![response(PREV), response(CUR)]);
        let ep = Endpoint::parse(&addr).unwrap();
        let (a, _) = scrape(&ep).unwrap();
        let (b, _) = scrape(&ep).unwrap();
        assert_eq!(a.samples.len(), Scrape::parse(PREV).samples.len());
        let view = render(&addr, &a, &b, Duration::from_secs(2));
        assert_eq!(
            row(&view, "source orders"),
            ["source orders", "3,000", "1,000"]
        );
        server.join().unwrap();

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = listener.local_addr().unwrap().to_string();
        drop(listener);
        let e = scrape(&Endpoint::parse(&gone).unwrap()).unwrap_err();
        assert!(
            format!("{e:#}").contains(&format!("cannot scrape http://{gone}/metrics")),
            "{e:#}"
        );
    }
}
