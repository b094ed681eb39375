//! The simulation behind BENCHMARKS.md, recomputed from the committed
//! traces with the parameters the benchmark states, so that its figures
//! cannot drift from the code. The worker parameters are placeholders
//! (see BENCHMARKS.md) until a real run measures them.

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

/// The command's defaults and BENCHMARKS.md's placeholders.
fn setup() -> (Params, Settings) {
    (
        Params {
            capacity: 100_000.0,
            cost_per_worker_second: 0.0001,
            interval: 5,
        },
        Settings {
            target_utilization: 0.8,
            drain_time: 30.0,
            min_workers: 1,
            max_workers: 32,
            scale_down_window: 60.0,
            startup_time: 20.0,
            forecast_window: 60.0,
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

#[test]
fn benchmark_figures() {
    let (params, settings) = setup();
    for name in ["spike-200k-1200k.csv", "step-200k-1200k.csv"] {
        let c = sim::compare(&trace(name), &params, &settings);
        println!("{name}\n{}", c.report(&params, &settings));
    }
}
