//! Metrics that the engine updates once per batch and an HTTP scrape
//! renders in the Prometheus text exposition format (0.0.4).
//!
//! A [`Registry`] hands out shared handles ([`Counter`], [`Gauge`],
//! [`Histogram`]) that are plain atomics: updating one takes no lock and
//! allocates nothing, so the hot path pays an atomic add per batch.
//! Values that are cheaper to read when asked than to keep up to date (a
//! log's size on disk, a connector's state, the process's CPU time) come
//! from collectors, closures the registry calls at each scrape.

#[cfg(feature = "client")]
pub mod client;
pub mod exposition;
pub mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use process::process_metrics;

/// Label pairs, in the order they are rendered.
pub type Labels = Vec<(String, String)>;

/// Builds [`Labels`] from string pairs.
pub fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A value that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as `f64` bits).
#[derive(Debug)]
pub struct Gauge(AtomicU64);

impl Default for Gauge {
    fn default() -> Self {
        Gauge(AtomicU64::new(0f64.to_bits()))
    }
}

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Bucket bounds for durations in seconds: 100 µs to 60 s.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Bucket bounds for lags in seconds that may reach hours (event time).
pub const LAG_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 86400.0,
];

/// Bucket bounds for record counts per batch.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 8.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0];

/// A histogram with fixed bucket bounds. Observations of a whole batch
/// ([`Histogram::observe_n`]) cost one bucket search, an atomic add and a
/// compare-and-swap for the sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), the last one for `+Inf`.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, as `f64` bits (lags in seconds summed over
    /// millions of records outgrow any fixed-point integer).
    sum_bits: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_bits: AtomicU64::new(0f64.to_bits()),
        }
    }
    /// Records one observation.
    pub fn observe(&self, v: f64) {
        self.observe_n(v, 1);
    }
    /// Records `n` observations of the same value.
    pub fn observe_n(&self, v: f64, n: u64) {
        if n == 0 || v.is_nan() {
            return;
        }
        let bucket = self.bounds.partition_point(|&b| b < v);
        self.counts[bucket].fetch_add(n, Ordering::Relaxed);
        let add = v * n as f64;
        let _ = self
            .sum_bits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + add).to_bits())
            });
    }
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
    /// Sum of the observations so far.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum_bits.load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A series' handle (cloning shares it).
#[derive(Clone)]
enum Value {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
}

struct Family {
    kind: Kind,
    help: String,
    series: Vec<(Labels, Value)>,
}

/// A collected family: its kind, help and samples.
type Collected = (Kind, String, Vec<(Labels, f64)>);

/// Values written by a collector at scrape time.
#[derive(Default)]
pub struct Scrape {
    families: BTreeMap<String, Collected>,
}

impl Scrape {
    fn add(&mut self, kind: Kind, name: &str, help: &str, labels: Labels, v: f64) {
        self.families
            .entry(name.to_string())
            .or_insert_with(|| (kind, help.to_string(), Vec::new()))
            .2
            .push((labels, v));
    }
    /// A gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: Labels, v: f64) {
        self.add(Kind::Gauge, name, help, labels, v);
    }
    /// A counter sample (the collector keeps the running total).
    pub fn counter(&mut self, name: &str, help: &str, labels: Labels, v: f64) {
        self.add(Kind::Counter, name, help, labels, v);
    }
}

type Collector = Box<dyn Fn(&mut Scrape) + Send + Sync>;

/// The metrics of one process.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
    collectors: Mutex<Vec<Collector>>,
    /// Registries rendered with this one, each series with the extra
    /// labels first (the runs of a process's tasks, `task="3"`).
    children: Mutex<Vec<(Labels, Arc<Registry>)>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Registry(..)")
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn series(
        &self,
        kind: Kind,
        name: &str,
        help: &str,
        labels: Labels,
        make: impl FnOnce() -> Value,
    ) -> Value {
        // A poisoned lock only means a scrape panicked; the map is intact.
        let mut families = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            kind,
            help: help.to_string(),
            series: Vec::new(),
        });
        if let Some((_, v)) = family.series.iter().find(|(l, _)| *l == labels) {
            return v.clone();
        }
        let v = make();
        family.series.push((labels, v.clone()));
        v
    }

    /// The counter `name` with these labels, registered on first use.
    ///
    /// # Panics
    /// If `name` was registered as another kind: a programming error.
    pub fn counter(&self, name: &str, help: &str, labels: Labels) -> Arc<Counter> {
        match self.series(Kind::Counter, name, help, labels, || {
            Value::Counter(Arc::default())
        }) {
            Value::Counter(c) => c,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }

    /// The gauge `name` with these labels, registered on first use.
    ///
    /// # Panics
    /// If `name` was registered as another kind: a programming error.
    pub fn gauge(&self, name: &str, help: &str, labels: Labels) -> Arc<Gauge> {
        match self.series(Kind::Gauge, name, help, labels, || {
            Value::Gauge(Arc::default())
        }) {
            Value::Gauge(g) => g,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }

    /// The histogram `name` with these labels and bucket bounds,
    /// registered on first use.
    ///
    /// # Panics
    /// If `name` was registered as another kind: a programming error.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: Labels,
        bounds: &'static [f64],
    ) -> Arc<Histogram> {
        match self.series(Kind::Histogram, name, help, labels, || {
            Value::Histogram(Arc::new(Histogram::new(bounds)))
        }) {
            Value::Histogram(h) => h,
            _ => panic!("metric {name} registered twice with different types"),
        }
    }

    /// Adds a collector, called at every scrape.
    pub fn collect(&self, f: impl Fn(&mut Scrape) + Send + Sync + 'static) {
        self.collectors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Renders `child` with this registry, its series labelled `labels`
    /// first, until [`detach`](Self::detach)ed; a child attached under the
    /// same labels replaces the one before.
    pub fn attach(&self, labels: Labels, child: Arc<Registry>) {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children.retain(|(l, _)| *l != labels);
        children.push((labels, child));
    }

    /// Stops rendering the child attached under `labels`.
    pub fn detach(&self, labels: &Labels) {
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _)| l != labels);
    }

    /// Everything in the text exposition format: this registry's series,
    /// then each attached child's, a family's HELP and TYPE once.
    pub fn render(&self) -> String {
        let children = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let none = Labels::new();
        let mut parts: Vec<(&Labels, &Registry)> = vec![(&none, self)];
        parts.extend(children.iter().map(|(l, r)| (l, &**r)));
        render_parts(&parts)
    }
}

/// One registry's families and scraped samples, locked for a render.
struct Part<'a> {
    extra: &'a Labels,
    families: std::sync::MutexGuard<'a, BTreeMap<String, Family>>,
    scrape: Scrape,
}

fn render_parts(registries: &[(&Labels, &Registry)]) -> String {
    let parts: Vec<Part<'_>> = registries
        .iter()
        .map(|(extra, r)| {
            let mut scrape = Scrape::default();
            for c in r
                .collectors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                c(&mut scrape);
            }
            Part {
                extra,
                families: r.families.lock().unwrap_or_else(|p| p.into_inner()),
                scrape,
            }
        })
        .collect();
    let mut out = String::with_capacity(8192);
    // Registered and collected families of every part, merged in name order.
    let mut names: Vec<&String> = parts
        .iter()
        .flat_map(|p| p.families.keys().chain(p.scrape.families.keys()))
        .collect();
    names.sort();
    names.dedup();
    let mut with_extra = Labels::new();
    for name in names {
        let Some((kind, help)) =
            parts.iter().find_map(
                |p| match (p.families.get(name), p.scrape.families.get(name)) {
                    (Some(f), _) => Some((f.kind, f.help.as_str())),
                    (None, Some((k, h, _))) => Some((*k, h.as_str())),
                    (None, None) => None,
                },
            )
        else {
            continue;
        };
        let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(out, "# TYPE {name} {}", kind.name());
        for part in &parts {
            let labelled = |labels: &Labels, buf: &mut Labels| {
                buf.clear();
                buf.extend(part.extra.iter().cloned());
                buf.extend(labels.iter().cloned());
            };
            if let Some(f) = part.families.get(name) {
                for (labels, value) in &f.series {
                    labelled(labels, &mut with_extra);
                    let labels = &with_extra;
                    match value {
                        Value::Counter(c) => sample(&mut out, name, labels, None, c.get() as f64),
                        Value::Gauge(g) => sample(&mut out, name, labels, None, g.get()),
                        Value::Histogram(h) => histogram(&mut out, name, labels, h),
                    }
                }
            }
            if let Some((_, _, samples)) = part.scrape.families.get(name) {
                for (labels, v) in samples {
                    labelled(labels, &mut with_extra);
                    sample(&mut out, name, &with_extra, None, *v);
                }
            }
        }
    }
    out
}

fn histogram(out: &mut String, name: &str, labels: &Labels, h: &Histogram) {
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, c) in h.counts.iter().enumerate() {
        cumulative += c.load(Ordering::Relaxed);
        let le = match h.bounds.get(i) {
            Some(b) => format_value(*b),
            None => "+Inf".to_string(),
        };
        sample(out, &bucket, labels, Some(&le), cumulative as f64);
    }
    sample(out, &format!("{name}_sum"), labels, None, h.sum());
    sample(
        out,
        &format!("{name}_count"),
        labels,
        None,
        cumulative as f64,
    );
}

fn sample(out: &mut String, name: &str, labels: &Labels, le: Option<&str>, v: f64) {
    out.push_str(name);
    if !labels.is_empty() || le.is_some() {
        out.push('{');
        let mut first = true;
        for (k, v) in labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(le.map(|le| ("le", le)))
        {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(k);
            out.push_str("=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(v));
    out.push('\n');
}

fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn attached_registries_render_with_their_labels_and_one_header() {
        let process = Registry::new();
        process
            .counter("weir_x_total", "X.", labels(&[("p", "a")]))
            .add(1);
        let task = Arc::new(Registry::new());
        task.counter("weir_x_total", "X.", labels(&[("p", "a")]))
            .add(5);
        task.collect(|s| s.gauge("weir_y", "Y.", labels(&[]), 2.0));
        let key = labels(&[("task", "3")]);
        process.attach(key.clone(), task.clone());
        assert_eq!(
            process.render(),
            "# HELP weir_x_total X.\n# TYPE weir_x_total counter\nweir_x_total{p=\"a\"} 1\n\
             weir_x_total{task=\"3\",p=\"a\"} 5\n# HELP weir_y Y.\n# TYPE weir_y gauge\nweir_y{task=\"3\"} 2\n"
        );
        process.detach(&key);
        assert_eq!(
            process.render(),
            "# HELP weir_x_total X.\n# TYPE weir_x_total counter\nweir_x_total{p=\"a\"} 1\n"
        );
    }

    use super::*;

    #[test]
    fn counters_gauges_and_histograms_render() {
        let r = Registry::new();
        let c = r.counter("weir_x_total", "Things.", labels(&[("step", "a\"b")]));
        c.add(3);
        r.counter("weir_x_total", "Things.", labels(&[("step", "a\"b")]))
            .add(2);
        r.gauge("weir_g", "A gauge.", vec![]).set(1.5);
        let h = r.histogram(
            "weir_h_seconds",
            "Times.",
            labels(&[("sink", "s")]),
            &[0.1, 1.0],
        );
        h.observe_n(0.05, 2);
        h.observe(0.5);
        h.observe(7.0);
        r.collect(|s| s.gauge("weir_c", "Collected.", labels(&[("stream", "x")]), 42.0));
        let text = r.render();
        assert_eq!(
            text,
            "# HELP weir_c Collected.\n# TYPE weir_c gauge\nweir_c{stream=\"x\"} 42\n\
             # HELP weir_g A gauge.\n# TYPE weir_g gauge\nweir_g 1.5\n\
             # HELP weir_h_seconds Times.\n# TYPE weir_h_seconds histogram\n\
             weir_h_seconds_bucket{sink=\"s\",le=\"0.1\"} 2\n\
             weir_h_seconds_bucket{sink=\"s\",le=\"1\"} 3\n\
             weir_h_seconds_bucket{sink=\"s\",le=\"+Inf\"} 4\n\
             weir_h_seconds_sum{sink=\"s\"} 7.6\n\
             weir_h_seconds_count{sink=\"s\"} 4\n\
             # HELP weir_x_total Things.\n# TYPE weir_x_total counter\nweir_x_total{step=\"a\\\"b\"} 5\n"
        );
    }

    #[test]
    fn observations_on_a_bound_fall_in_its_bucket() {
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe(1.0);
        h.observe(2.0);
        h.observe(f64::NAN);
        assert_eq!(h.counts[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.counts[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 2);
        assert_eq!(h.sum(), 3.0);
    }

    #[test]
    fn sums_of_large_observations_do_not_wrap() {
        let h = Histogram::new(LAG_SECONDS_BUCKETS);
        // Three years of event-time lag, for a million records, 100 times.
        for _ in 0..100 {
            h.observe_n(95_000_000.0, 1_000_000);
        }
        assert_eq!(h.sum(), 9.5e15);
        assert_eq!(h.count(), 100_000_000);
    }
}
