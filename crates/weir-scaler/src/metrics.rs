//! The scaler's own series, named once here, and the log line of each
//! decision: every decision is explained in both.

use std::sync::Arc;

use weir_metrics::{labels, Counter, Gauge, Registry};

use crate::decide::Decision;

/// Workers the scaler wants (gauge; what KEDA is served as `weir_workers`).
pub const DESIRED_WORKERS: &str = "weir_scaler_desired_workers";
/// Workers running at the last decision (gauge).
pub const CURRENT_WORKERS: &str = "weir_scaler_current_workers";
/// The reactive (DS2) need of the last decision (gauge).
pub const REACTIVE_WORKERS: &str = "weir_scaler_reactive_workers";
/// The predictive need of the last decision (gauge).
pub const PREDICTIVE_WORKERS: &str = "weir_scaler_predictive_workers";
/// Observed input rate over all workers (gauge).
pub const INPUT_RATE: &str = "weir_scaler_input_rate_events_per_second";
/// Forecast input rate at now + startup time (gauge).
pub const FORECAST_RATE: &str = "weir_scaler_forecast_rate_events_per_second";
/// Observed lag over all workers (gauge).
pub const LAG_RECORDS: &str = "weir_scaler_lag_records";
/// The per-worker true processing rate used (gauge).
pub const TRUE_RATE: &str = "weir_scaler_true_rate_events_per_second";
/// Decisions (counter; `direction`: up, down, hold; `term`: reactive,
/// predictive, stabilized, min, max, no_capacity).
pub const DECISIONS_TOTAL: &str = "weir_scaler_decisions_total";
/// Scrapes of a worker's `/metrics` that failed (counter).
pub const SCRAPE_ERRORS_TOTAL: &str = "weir_scaler_scrape_errors_total";
/// Local workers restarted after they exited on their own (counter).
pub const WORKER_RESTARTS_TOTAL: &str = "weir_scaler_worker_restarts_total";

/// Every family the scaler exposes.
pub const FAMILIES: &[&str] = &[
    DESIRED_WORKERS,
    CURRENT_WORKERS,
    REACTIVE_WORKERS,
    PREDICTIVE_WORKERS,
    INPUT_RATE,
    FORECAST_RATE,
    LAG_RECORDS,
    TRUE_RATE,
    DECISIONS_TOTAL,
    SCRAPE_ERRORS_TOTAL,
    WORKER_RESTARTS_TOTAL,
];

/// The handles the control loop updates.
#[derive(Debug, Clone)]
pub struct ScalerMetrics {
    pub registry: Arc<Registry>,
    desired: Arc<Gauge>,
    current: Arc<Gauge>,
    reactive: Arc<Gauge>,
    predictive: Arc<Gauge>,
    input_rate: Arc<Gauge>,
    forecast_rate: Arc<Gauge>,
    lag: Arc<Gauge>,
    true_rate: Arc<Gauge>,
    pub scrape_errors: Arc<Counter>,
    pub restarts: Arc<Counter>,
}

impl ScalerMetrics {
    pub fn new(registry: Arc<Registry>) -> ScalerMetrics {
        let g = |name: &str, help: &str| registry.gauge(name, help, Vec::new());
        ScalerMetrics {
            desired: g(DESIRED_WORKERS, "Workers the scaler wants."),
            current: g(CURRENT_WORKERS, "Workers running at the last decision."),
            reactive: g(
                REACTIVE_WORKERS,
                "Reactive (lag and true rate) need of the last decision.",
            ),
            predictive: g(
                PREDICTIVE_WORKERS,
                "Predictive (forecast) need of the last decision.",
            ),
            input_rate: g(INPUT_RATE, "Observed input rate over all workers."),
            forecast_rate: g(
                FORECAST_RATE,
                "Input rate forecast at now plus the startup time.",
            ),
            lag: g(LAG_RECORDS, "Observed consumer lag over all workers."),
            true_rate: g(
                TRUE_RATE,
                "Per-worker true processing rate used by the decision.",
            ),
            scrape_errors: registry.counter(
                SCRAPE_ERRORS_TOTAL,
                "Failed scrapes of a worker's /metrics.",
                Vec::new(),
            ),
            restarts: registry.counter(
                WORKER_RESTARTS_TOTAL,
                "Local workers restarted after exiting on their own.",
                Vec::new(),
            ),
            registry,
        }
    }

    /// Exports and logs one decision.
    pub fn record(&self, d: &Decision) {
        self.desired.set(d.desired as f64);
        self.current.set(d.current as f64);
        self.reactive.set(d.reactive as f64);
        self.predictive.set(d.predictive as f64);
        self.input_rate.set(d.input_rate);
        self.forecast_rate.set(d.forecast_rate);
        self.lag.set(d.lag);
        self.true_rate.set(d.true_rate);
        self.registry
            .counter(
                DECISIONS_TOTAL,
                "Scaling decisions by direction and deciding term.",
                labels(&[
                    ("direction", d.direction.as_str()),
                    ("term", d.term.as_str()),
                ]),
            )
            .add(1);
        let line = format!(
            "scaler decision: {} -> {} workers ({}, by {}): reactive {}, predictive {}, input {:.0} ev/s, lag {:.0}, forecast {:.0} ev/s (trend {:+.1} ev/s²), true rate {:.0} ev/s per worker",
            d.current,
            d.desired,
            d.direction.as_str(),
            d.term.as_str(),
            d.reactive,
            d.predictive,
            d.input_rate,
            d.lag,
            d.forecast_rate,
            d.slope,
            d.true_rate
        );
        match d.direction {
            crate::decide::Direction::Hold => tracing::debug!(
                desired = d.desired,
                current = d.current,
                reactive = d.reactive,
                predictive = d.predictive,
                term = d.term.as_str(),
                input_rate = d.input_rate,
                lag = d.lag,
                forecast_rate = d.forecast_rate,
                true_rate = d.true_rate,
                "{line}"
            ),
            _ => tracing::info!(
                desired = d.desired,
                current = d.current,
                reactive = d.reactive,
                predictive = d.predictive,
                term = d.term.as_str(),
                input_rate = d.input_rate,
                lag = d.lag,
                forecast_rate = d.forecast_rate,
                true_rate = d.true_rate,
                "{line}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Decider, Observation, Settings};
    use weir_metrics::exposition::Scrape;

    #[test]
    fn a_decision_is_exported_under_the_names_defined_here() {
        let m = ScalerMetrics::new(Arc::new(Registry::new()));
        let mut d = Decider::new(Settings::default());
        m.record(&d.decide(&Observation {
            at: 0.0,
            input_rate: 1000.0,
            lag: 0.0,
            true_rate: Some(100.0),
            current_workers: 1,
        }));
        m.scrape_errors.add(0);
        let text = m.registry.render();
        let scrape = Scrape::parse(&text);
        assert_eq!(scrape.value(DESIRED_WORKERS, &[]), Some(13.0));
        assert_eq!(
            scrape.value(
                DECISIONS_TOTAL,
                &[("direction", "up"), ("term", "reactive")]
            ),
            Some(1.0)
        );
        for s in &scrape.samples {
            assert!(
                FAMILIES.contains(&s.name.as_str()),
                "{} not in FAMILIES",
                s.name
            );
        }
    }
}
