//! Observation: the load, read from the workers' `/metrics`.
//!
//! Each tick the scaler scrapes every worker's `weir run
//! --metrics-address` endpoint (with the bearer token of
//! `WEIR_ENDPOINT_TOKEN` where set) through weir-metrics' HTTP client and
//! exposition parser, the ones `weir top` uses, and compares it with the
//! previous scrape of the same worker:
//!
//! - processed rate = Δ records read by the source / Δt;
//! - input rate = Σ processed rate + Δ Σ lag / Δt (what arrived is what was
//!   read plus what the backlog grew by), never below 0;
//! - lag = Σ consumer lag now;
//! - true rate: DS2's true processing rate is records / *busy* time. The
//!   engine exposes no per-worker busy time (no series in
//!   `weir_engine::telemetry::names` measures it), so the best proxy
//!   available is used: a worker whose backlog was more than one second of
//!   its own processing at both scrapes was busy the whole interval, and
//!   its processed rate is its true rate (unless it had read nothing by the
//!   first of them: it was still starting); the true rate is the mean of
//!   such workers' rates. A tick where no worker was saturated measures none
//!   (None), and the decision keeps the last one measured (or
//!   `--worker-capacity`), rather than mistaking an idle worker's rate for
//!   its capacity.
//!
//! The series names are passed in ([`Series`]) rather than repeated here:
//! the engine defines them (`weir_engine::telemetry::names`), and the
//! `weir` binary, which links the engine, hands them over; this crate
//! stays free of the engine's dependencies.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weir_metrics::client::{self, Endpoint};
use weir_metrics::exposition::Scrape;

/// Timeout of the connect and of each read of one scrape.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `/metrics` body accepted.
const MAX_SCRAPE_BYTES: usize = 16 * 1024 * 1024;

/// The engine's series the observation reads.
#[derive(Debug, Clone, Copy)]
pub struct Series {
    /// Records read by the source (counter).
    pub source_records: &'static str,
    /// Records of the source stream not yet read (gauge).
    pub consumer_lag: &'static str,
}

/// The workers' endpoints: addresses (`host:port` or `http://host:port`),
/// where `{worker}` stands for a worker's index (0, 1, …) and is expanded
/// for each worker running.
#[derive(Debug, Clone)]
pub struct Targets {
    pub patterns: Vec<String>,
    pub token: Option<String>,
}

impl Targets {
    /// The addresses for `workers` workers: each pattern with `{worker}`
    /// once per worker, each other address as is.
    pub fn expand(&self, workers: usize) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.patterns {
            if p.contains("{worker}") {
                out.extend((0..workers).map(|i| p.replace("{worker}", &i.to_string())));
            } else {
                out.push(p.clone());
            }
        }
        out
    }

    /// Checks each pattern parses as an address (with `{worker}` as 0).
    pub fn validate(&self) -> anyhow::Result<()> {
        for p in &self.patterns {
            Endpoint::parse(&p.replace("{worker}", "0"))
                .map_err(|e| anyhow::anyhow!("--workers-metrics: {e}"))?;
        }
        Ok(())
    }
}

/// One worker's counters at one scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub at: Instant,
    /// Records read, summed over the series.
    pub records: f64,
    /// Records read per series (its labels): a worker of a split pipeline
    /// has one per task it runs, and tasks come and go as they move.
    pub by_series: Vec<(Vec<(String, String)>, f64)>,
    pub lag: f64,
}

impl Reading {
    /// The reading in a parsed exposition (sums over the labels).
    pub fn from_scrape(scrape: &Scrape, series: &Series, at: Instant) -> Reading {
        let lag = scrape
            .samples
            .iter()
            .filter(|s| s.name == series.consumer_lag)
            .map(|s| s.value)
            .filter(|v| v.is_finite())
            .sum::<f64>();
        let by_series: Vec<(Vec<(String, String)>, f64)> = scrape
            .samples
            .iter()
            .filter(|s| s.name == series.source_records && s.value.is_finite())
            .map(|s| (s.labels.clone(), s.value))
            .collect();
        Reading {
            at,
            records: by_series.iter().map(|(_, v)| v).sum(),
            by_series,
            lag,
        }
    }

    /// Records read since `prev`, series by series: a series new since
    /// then (a task that moved in, a restarted worker) counts from 0, one
    /// that went down (a restarted task) counts from 0, and one that is
    /// gone (a task that moved out) counts nothing: a task moving between
    /// workers is never taken for a burst.
    fn records_since(&self, prev: &Reading) -> f64 {
        self.by_series
            .iter()
            .map(
                |(labels, cur)| match prev.by_series.iter().find(|(l, _)| l == labels) {
                    Some((_, before)) if cur >= before => cur - before,
                    _ => *cur,
                },
            )
            .sum()
    }
}

/// What one tick saw over all workers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    pub input_rate: f64,
    pub lag: f64,
    pub true_rate: Option<f64>,
    /// Workers scraped with a previous reading to compare with.
    pub measured: usize,
    /// Scrapes that failed.
    pub errors: usize,
}

/// The load from pairs of readings (previous, current) of each worker.
/// Workers without a previous reading add their lag only.
pub fn load(pairs: &[(Option<Reading>, Reading)]) -> Load {
    let mut l = Load::default();
    let (mut processed, mut lag_growth) = (0.0, 0.0);
    let (mut saturated, mut saturated_sum) = (0usize, 0.0);
    for (prev, cur) in pairs {
        l.lag += cur.lag;
        let Some(prev) = prev else { continue };
        let dt = cur.at.saturating_duration_since(prev.at).as_secs_f64();
        if dt <= 0.0 {
            continue;
        }
        let rate = cur.records_since(prev) / dt;
        processed += rate;
        lag_growth += (cur.lag - prev.lag) / dt;
        l.measured += 1;
        // Saturated, and not starting: a worker that had read nothing by
        // the previous scrape spent part of the interval opening and
        // restoring, and its rate then says nothing of its capacity.
        if rate > 0.0 && prev.records > 0.0 && prev.lag > rate && cur.lag > rate {
            saturated += 1;
            saturated_sum += rate;
        }
    }
    l.input_rate = (processed + lag_growth).max(0.0);
    if saturated > 0 {
        l.true_rate = Some(saturated_sum / saturated as f64);
    }
    l
}

/// Scrapes the workers and keeps each one's last reading.
#[derive(Debug)]
pub struct Observer {
    targets: Targets,
    series: Series,
    last: HashMap<String, Reading>,
}

impl Observer {
    pub fn new(targets: Targets, series: Series) -> Observer {
        Observer {
            targets,
            series,
            last: HashMap::new(),
        }
    }

    /// Scrapes the endpoints of `workers` workers (blocking; not to be
    /// called on an async runtime's thread) and returns the load.
    pub fn observe(&mut self, workers: usize) -> Load {
        let mut pairs = Vec::new();
        let mut errors = 0;
        let addresses = self.targets.expand(workers);
        for address in &addresses {
            match scrape(address, self.targets.token.clone()) {
                Ok(scrape) => {
                    let cur = Reading::from_scrape(&scrape, &self.series, Instant::now());
                    let prev = self.last.insert(address.clone(), cur.clone());
                    pairs.push((prev, cur));
                }
                Err(e) => {
                    errors += 1;
                    self.last.remove(address);
                    tracing::warn!(address = %address, "scaler: cannot scrape a worker: {e:#}");
                }
            }
        }
        self.last.retain(|a, _| addresses.contains(a));
        Load {
            errors,
            ..load(&pairs)
        }
    }
}

fn scrape(address: &str, token: Option<String>) -> anyhow::Result<Scrape> {
    let endpoint = Endpoint::parse(address)?.with_token(token);
    let r = client::get(&endpoint, "/metrics", SCRAPE_TIMEOUT, MAX_SCRAPE_BYTES)?;
    if r.status != 200 {
        anyhow::bail!(
            "{} answered {} {}",
            endpoint.url("/metrics"),
            r.status,
            r.reason
        );
    }
    Ok(Scrape::parse(&String::from_utf8_lossy(&r.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERIES: Series = Series {
        source_records: "weir_source_records_total",
        consumer_lag: "weir_log_consumer_lag_records",
    };

    fn reading(at: Instant, records: f64, lag: f64) -> Reading {
        tasks(at, &[(0, records)], lag)
    }

    /// A worker running tasks `(task, records read)`.
    fn tasks(at: Instant, tasks: &[(u32, f64)], lag: f64) -> Reading {
        let by_series: Vec<(Vec<(String, String)>, f64)> = tasks
            .iter()
            .map(|(t, n)| (vec![("task".to_string(), t.to_string())], *n))
            .collect();
        Reading {
            at,
            records: by_series.iter().map(|(_, v)| v).sum(),
            by_series,
            lag,
        }
    }

    #[test]
    fn readings_sum_the_labelled_series() {
        let text = "# TYPE weir_source_records_total counter\n\
            weir_source_records_total{pipeline=\"p\",source=\"a\"} 100\n\
            weir_source_records_total{pipeline=\"p\",source=\"b\"} 50\n\
            weir_log_consumer_lag_records{stream=\"s\"} 7\n";
        let now = Instant::now();
        let r = Reading::from_scrape(&Scrape::parse(text), &SERIES, now);
        assert_eq!((r.records, r.lag), (150.0, 7.0));
    }

    #[test]
    fn input_true_rate_and_restarts() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        // Worker 0 saturated (lag above a second of its rate both times):
        // 2 000 records in 2 s, lag 5 000 → 7 000. Worker 1 idle-ish.
        let pairs = [
            (
                Some(reading(t0, 500.0, 5_000.0)),
                reading(t1, 2_500.0, 7_000.0),
            ),
            (Some(reading(t0, 100.0, 0.0)), reading(t1, 300.0, 0.0)),
            (None, reading(t1, 10.0, 3.0)),
        ];
        let l = load(&pairs);
        // (1 000 + 100) processed + 1 000 lag growth per second.
        assert_eq!(l.input_rate, 2_100.0);
        assert_eq!(l.lag, 7_003.0);
        assert_eq!(l.true_rate, Some(1_000.0));
        assert_eq!(l.measured, 2);
        // A worker that had read nothing at the first scrape was starting
        // (opening, restoring): its slow first interval is no capacity.
        let l = load(&[(Some(reading(t0, 0.0, 5_000.0)), reading(t1, 36.0, 9_000.0))]);
        assert_eq!((l.input_rate, l.true_rate), (2_018.0, None));
        // Task 2 moved from worker A to worker B between the scrapes: A's
        // sum went down (no restart: A's other task counts its 300), B's
        // new series counts from 0 (its 100).
        let l = load(&[
            (
                Some(tasks(t0, &[(1, 5_000.0), (2, 9_000.0)], 0.0)),
                tasks(t1, &[(1, 5_300.0)], 0.0),
            ),
            (
                Some(tasks(t0, &[(3, 1_000.0)], 0.0)),
                tasks(t1, &[(3, 1_200.0), (2, 100.0)], 0.0),
            ),
        ]);
        assert_eq!(l.input_rate, (300.0 + 200.0 + 100.0) / 2.0);
        // A restarted worker's counter went down: counted from 0.
        let l = load(&[(Some(reading(t0, 900.0, 0.0)), reading(t1, 40.0, 0.0))]);
        assert_eq!((l.input_rate, l.true_rate), (20.0, None));
    }

    #[test]
    fn patterns_expand_per_worker() {
        let t = Targets {
            patterns: vec!["127.0.0.1:95{worker}".into(), "10.0.0.1:9464".into()],
            token: None,
        };
        assert_eq!(
            t.expand(2),
            ["127.0.0.1:950", "127.0.0.1:951", "10.0.0.1:9464"]
        );
        assert!(t.validate().is_ok());
        let bad = Targets {
            patterns: vec!["nohost".into()],
            token: None,
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("--workers-metrics"));
    }
}
