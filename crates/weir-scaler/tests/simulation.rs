//! The simulation behind BENCHMARKS.md, recomputed from the committed
//! traces with the parameters the benchmark states, so that its figures
//! cannot drift from the code. Capacity and price are placeholders (see
//! BENCHMARKS.md); the 3 s start-up is what `weir chaos --spike`
//! measured on this machine (a worker started to its first record, at
//! most 2.2 s), rounded up.

use weir_scaler::decide::Settings;
use weir_scaler::sim::{self, Params};

fn trace(name: &str) -> Vec<f64> {
    let path = format!(
        "{}/../../benchmarks/traces/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    sim::parse_trace(&text).unwrap()
}

/// BENCHMARKS.md's command: placeholder worker parameters (capacity
/// 100 000 ev/s, start-up 20 s, 0.0001 per worker-second), decisions every
/// 5 s (the ScaledObject's pollingInterval), drain time 10 s, forecast
/// window 30 s, the other settings the command's defaults.
fn setup() -> (Params, Settings) {
    (
        Params {
            capacity: 100_000.0,
            cost_per_worker_second: 0.0001,
            interval: 5,
        },
        Settings {
            target_utilization: 0.8,
            drain_time: 10.0,
            min_workers: 1,
            max_workers: 32,
            scale_down_window: 60.0,
            startup_time: 20.0,
            forecast_window: 30.0,
            default_true_rate: None,
        },
    )
}

#[test]
fn committed_traces_are_the_generated_ones() {
    for (name, step, doc) in [
        ("spike-200k-1200k.csv", false, sim::SPIKE_DOC),
        ("step-200k-1200k.csv", true, sim::STEP_DOC),
    ] {
        let path = format!(
            "{}/../../benchmarks/traces/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, sim::trace_csv(&sim::spike_trace(step), doc), "{name}");
    }
}

/// (trace, start-up s) → (time to absorb s, scaler worker-seconds, static
/// worker-seconds, max latency estimate s, scaler's most workers).
const FIGURES: &[(&str, f64, u64, u64, u64, f64, usize)] = &[
    ("spike-200k-1200k.csv", 20.0, 54, 21650, 54000, 11.500, 21),
    ("spike-200k-1200k.csv", 10.0, 33, 21355, 54000, 3.333, 19),
    ("spike-200k-1200k.csv", 5.0, 0, 21230, 54000, 0.625, 18),
    ("spike-200k-1200k.csv", 3.0, 0, 21130, 54000, 0.167, 17),
    ("step-200k-1200k.csv", 20.0, 36, 22795, 54000, 60.000, 32),
    ("step-200k-1200k.csv", 10.0, 21, 22205, 54000, 30.000, 27),
    ("step-200k-1200k.csv", 5.0, 12, 21765, 54000, 15.000, 21),
    ("step-200k-1200k.csv", 3.0, 8, 21615, 54000, 9.000, 19),
];

#[test]
fn benchmark_figures() {
    let (params, base) = setup();
    for name in ["spike-200k-1200k.csv", "step-200k-1200k.csv"] {
        for startup in [20.0, 10.0, 5.0, 3.0] {
            let settings = Settings {
                startup_time: startup,
                ..base.clone()
            };
            let c = sim::compare(&trace(name), &params, &settings);
            println!("{name} startup {startup}\n{}", c.report(&params, &settings));
            println!(
                "(\"{name}\", {startup:.1}, {}, {}, {}, {:.3}, {}),",
                c.scaler.time_to_absorb.unwrap(),
                c.scaler.worker_seconds,
                c.fixed.worker_seconds,
                c.scaler.max_latency,
                c.scaler.max_workers
            );
            let f = FIGURES
                .iter()
                .find(|f| f.0 == name && f.1 == startup)
                .unwrap();
            {
                assert_eq!(c.scaler.time_to_absorb, Some(f.2), "{name} {startup}");
                assert_eq!(c.scaler.worker_seconds, f.3, "{name} {startup}");
                assert_eq!(c.fixed.worker_seconds, f.4, "{name} {startup}");
                assert_eq!(
                    format!("{:.3}", c.scaler.max_latency),
                    format!("{:.3}", f.5)
                );
                assert_eq!(c.scaler.max_workers, f.6);
            }
        }
    }
}

/// The worker measured by the real spike run (BENCHMARKS.md, "The spike,
/// for real"): 25,000 events/s at 0.1 CPU, taken as 250,000 events/s for
/// a worker of one CPU, and a 3 s start-up; the price stays a
/// placeholder (the cost ratio does not depend on it).
#[test]
fn figures_with_the_measured_worker() {
    let (base_params, base) = setup();
    let params = Params {
        capacity: 250_000.0,
        ..base_params
    };
    let settings = Settings {
        startup_time: 3.0,
        ..base
    };
    // (trace, time to absorb, scaler worker-s, static worker-s, most workers)
    for (name, absorb, scaler, fixed, most) in [
        ("spike-200k-1200k.csv", 0, 8065, 21600, 7),
        ("step-200k-1200k.csv", 8, 8250, 21600, 8),
    ] {
        let c = sim::compare(&trace(name), &params, &settings);
        println!("{name}\n{}", c.report(&params, &settings));
        assert_eq!(c.scaler.time_to_absorb, Some(absorb), "{name}");
        assert_eq!(c.scaler.worker_seconds, scaler, "{name}");
        assert_eq!(c.fixed.worker_seconds, fixed, "{name}");
        assert_eq!(c.scaler.max_workers, most, "{name}");
    }
}
