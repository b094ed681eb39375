//! A trace-driven simulation of the scaler against static provisioning.
//!
//! The model is discrete in time, one tick per second: the input rate of
//! each second comes from a trace; each running worker costs its
//! worker-seconds, but processes records only `startup_time` seconds after
//! it was asked for; a worker processes `capacity` records per second; what
//! is not processed waits (the backlog, carried over). Every `interval`
//! seconds the scaler observes the input rate, the backlog and the
//! per-worker true rate (the capacity: in the model every worker's busy
//! rate is its capacity) and decides through the same [`Decider`] as the
//! real scaler; stopping a worker is instant. Static provisioning runs
//! `ceil(peak / (capacity × target_utilization))` workers, all useful from
//! the first second (the same headroom as the scaler keeps).
//!
//! - *Onset*: the first second whose rate exceeds the first second's by
//!   more than 10 %.
//! - *Absorbed*: the first second from the onset on after which the
//!   backlog stays below one second of input; the time to absorb is that
//!   second minus the onset (0 where the backlog never reached it).
//! - *Cost*: worker-seconds (starting or useful) × the price of one.
//! - *Latency* (an estimate): backlog / useful capacity, in seconds.

use std::fmt::Write as _;

use crate::decide::{Decider, Observation, Settings};

/// The model's parameters besides the decision settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// Records one worker processes per second.
    pub capacity: f64,
    /// Price of one worker-second.
    pub cost_per_worker_second: f64,
    /// Seconds between decisions (a whole number of ticks, at least 1).
    pub interval: u64,
}

/// One second of a simulated run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tick {
    pub second: u64,
    pub input_rate: f64,
    /// Workers running (starting or useful).
    pub workers: usize,
    /// Workers processing.
    pub useful: usize,
    pub backlog: f64,
    pub latency: f64,
}

/// What one policy did over the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub timeline: Vec<Tick>,
    pub worker_seconds: u64,
    pub cost: f64,
    /// Seconds from the onset until absorbed; None if never.
    pub time_to_absorb: Option<u64>,
    pub max_backlog: f64,
    pub max_latency: f64,
    pub max_workers: usize,
}

/// The scaler and static provisioning over one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub onset: Option<u64>,
    pub peak: f64,
    pub static_workers: usize,
    pub scaler: Outcome,
    pub fixed: Outcome,
}

impl Comparison {
    /// The scaler's cost relative to static provisioning: −0.40 is 40 %
    /// cheaper.
    pub fn cost_change(&self) -> f64 {
        self.scaler.cost / self.fixed.cost - 1.0
    }

    /// The report `weir scaler simulate` prints.
    pub fn report(&self, params: &Params, settings: &Settings) -> String {
        let mut s = String::new();
        let absorb = |o: &Outcome| match o.time_to_absorb {
            Some(t) => format!("{t} s"),
            None => "never".to_string(),
        };
        let _ = writeln!(
            s,
            "trace: {} s, peak {:.0} ev/s, onset at {}",
            self.scaler.timeline.len(),
            self.peak,
            self.onset
                .map_or("none (no rise over 10 %)".into(), |o| format!("{o} s"))
        );
        let _ = writeln!(
            s,
            "model: capacity {:.0} ev/s per worker, startup {} s, {} per worker-second, decisions every {} s, target utilisation {}, drain time {} s, scale-down window {} s, forecast window {} s",
            params.capacity,
            settings.startup_time,
            params.cost_per_worker_second,
            params.interval,
            settings.target_utilization,
            settings.drain_time,
            settings.scale_down_window,
            settings.forecast_window
        );
        let _ = writeln!(
            s,
            "{:<22} {:>10} {:>14} {:>12} {:>14} {:>12} {:>12}",
            "policy", "absorb", "worker-s", "cost", "max backlog", "max lat s", "max workers"
        );
        for (name, o) in [
            ("autoscaler".to_string(), &self.scaler),
            (
                format!("static ({} workers)", self.static_workers),
                &self.fixed,
            ),
        ] {
            let _ = writeln!(
                s,
                "{:<22} {:>10} {:>14} {:>12.2} {:>14.0} {:>12.2} {:>12}",
                name,
                absorb(o),
                o.worker_seconds,
                o.cost,
                o.max_backlog,
                o.max_latency,
                o.max_workers
            );
        }
        let _ = writeln!(
            s,
            "autoscaler cost vs static: {:+.1} %",
            self.cost_change() * 100.0
        );
        s
    }
}

/// Reads a trace: CSV lines `second,events_per_second` (a header line and
/// `#` comments are skipped), one per second from 0 without gaps.
pub fn parse_trace(text: &str) -> Result<Vec<f64>, String> {
    let mut rates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (rates.is_empty() && line.starts_with('s')) {
            continue;
        }
        let (sec, rate) = line
            .split_once(',')
            .ok_or_else(|| format!("line {}: expected `second,events_per_second`", i + 1))?;
        let sec: u64 = sec
            .trim()
            .parse()
            .map_err(|_| format!("line {}: second {sec:?} is not a whole number", i + 1))?;
        let rate: f64 = rate
            .trim()
            .parse()
            .ok()
            .filter(|r: &f64| r.is_finite() && *r >= 0.0)
            .ok_or_else(|| format!("line {}: rate {rate:?} is not a number >= 0", i + 1))?;
        if sec != rates.len() as u64 {
            return Err(format!(
                "line {}: second {sec}, expected {} (one line per second, from 0)",
                i + 1,
                rates.len()
            ));
        }
        rates.push(rate);
    }
    if rates.is_empty() {
        return Err("the trace has no lines".into());
    }
    Ok(rates)
}

/// Runs both policies over `trace`.
pub fn compare(trace: &[f64], params: &Params, settings: &Settings) -> Comparison {
    let peak = trace.iter().copied().fold(0.0, f64::max);
    let onset = trace
        .iter()
        .position(|&r| r > trace[0] * 1.1)
        .map(|i| i as u64);
    let static_workers =
        crate::decide::workers_for(peak, params.capacity * settings.target_utilization).max(1);
    Comparison {
        onset,
        peak,
        static_workers,
        scaler: run(trace, params, onset, Policy::Scaler(settings.clone())),
        fixed: run(trace, params, onset, Policy::Static(static_workers)),
    }
}

enum Policy {
    Scaler(Settings),
    Static(usize),
}

fn run(trace: &[f64], params: &Params, onset: Option<u64>, policy: Policy) -> Outcome {
    let startup = match &policy {
        Policy::Scaler(s) => s.startup_time.ceil() as u64,
        Policy::Static(_) => 0,
    };
    // The second each running worker becomes useful.
    let mut useful_at: Vec<u64> = Vec::new();
    let mut decider = None;
    match &policy {
        Policy::Scaler(s) => {
            // Warm start: the workers the first second needs, running.
            let cap = params.capacity * s.target_utilization;
            let n = crate::decide::workers_for(trace[0], cap).clamp(s.min_workers, s.max_workers);
            useful_at.resize(n, 0);
            decider = Some(Decider::new(s.clone()));
        }
        Policy::Static(n) => useful_at.resize(*n, 0),
    }
    let interval = params.interval.max(1);
    let mut backlog = 0.0f64;
    let mut timeline = Vec::with_capacity(trace.len());
    let mut worker_seconds = 0u64;
    for (second, &rate) in trace.iter().enumerate() {
        let second = second as u64;
        if let Some(d) = decider.as_mut() {
            if second.is_multiple_of(interval) {
                let x = d.decide(&Observation {
                    at: second as f64,
                    input_rate: rate,
                    lag: backlog,
                    true_rate: Some(params.capacity),
                    current_workers: useful_at.len(),
                });
                if x.desired > useful_at.len() {
                    useful_at.resize(x.desired, second + startup);
                } else {
                    // Stop the newest first (those still starting).
                    useful_at.truncate(x.desired);
                }
            }
        }
        let useful = useful_at.iter().filter(|&&u| u <= second).count();
        let capacity = useful as f64 * params.capacity;
        let processed = (backlog + rate).min(capacity);
        backlog = backlog + rate - processed;
        worker_seconds += useful_at.len() as u64;
        let latency = if backlog <= 0.0 {
            0.0
        } else if capacity > 0.0 {
            backlog / capacity
        } else {
            f64::INFINITY
        };
        timeline.push(Tick {
            second,
            input_rate: rate,
            workers: useful_at.len(),
            useful,
            backlog,
            latency,
        });
    }
    let time_to_absorb = onset.and_then(|onset| {
        let after = &timeline[onset as usize..];
        match after
            .iter()
            .rposition(|t| t.backlog >= t.input_rate.max(1.0))
        {
            None => Some(0),
            Some(i) if i + 1 < after.len() => Some(i as u64 + 1),
            Some(_) => None,
        }
    });
    Outcome {
        worker_seconds,
        cost: worker_seconds as f64 * params.cost_per_worker_second,
        time_to_absorb,
        max_backlog: timeline.iter().map(|t| t.backlog).fold(0.0, f64::max),
        max_latency: timeline.iter().map(|t| t.latency).fold(0.0, f64::max),
        max_workers: timeline.iter().map(|t| t.workers).max().unwrap_or(0),
        timeline,
    }
}

/// Both timelines side by side as CSV.
pub fn timeline_csv(c: &Comparison) -> String {
    let mut s = String::from(
        "second,input_rate,scaler_workers,scaler_useful,scaler_backlog,scaler_latency_s,static_workers,static_backlog,static_latency_s\n",
    );
    for (a, b) in c.scaler.timeline.iter().zip(&c.fixed.timeline) {
        let _ = writeln!(
            s,
            "{},{},{},{},{:.0},{:.3},{},{:.0},{:.3}",
            a.second,
            a.input_rate,
            a.workers,
            a.useful,
            a.backlog,
            a.latency,
            b.workers,
            b.backlog,
            b.latency
        );
    }
    s
}

/// The header comment of the spike trace's file.
pub const SPIKE_DOC: &str =
    "The brief's scenario (weir scaler simulate --write-trace spike): 3600 s;\n\
200000 ev/s for seconds 0-1199; a linear ramp to 1200000 ev/s over seconds\n\
1200-1259; 1200000 ev/s for seconds 1260-1859; a linear decline to 200000\n\
ev/s over seconds 1860-2159; 200000 ev/s for seconds 2160-3599.";
/// The header comment of the step trace's file.
pub const STEP_DOC: &str =
    "The brief's scenario with a step (weir scaler simulate --write-trace step):\n\
as the spike trace, but the rise from 200000 to 1200000 ev/s takes one\n\
second (second 1200), which no forecast can see coming.";

/// The brief's scenario as a trace (`benchmarks/traces/spike-200k-1200k.csv`):
/// 3,600 s; 200,000 ev/s until second 1,200; a linear ramp to 1,200,000
/// ev/s over 60 s (seconds 1,200–1,260); a plateau until second 1,860; a
/// linear decline back to 200,000 over 300 s (until 2,160); 200,000 to the
/// end. With `step`, the rise takes one second instead of 60 (the case no
/// forecast can see coming).
pub fn spike_trace(step: bool) -> Vec<f64> {
    let (base, peak) = (200_000.0, 1_200_000.0);
    let ramp_end = if step { 1_201.0 } else { 1_260.0 };
    (0..3_600)
        .map(|t| {
            let t = t as f64;
            if t < 1_200.0 {
                base
            } else if t < ramp_end {
                base + (peak - base) * (t - 1_200.0 + 1.0) / (ramp_end - 1_200.0)
            } else if t < 1_860.0 {
                peak
            } else if t < 2_160.0 {
                peak - (peak - base) * (t - 1_860.0 + 1.0) / 300.0
            } else {
                base
            }
        })
        .map(f64::round)
        .collect()
}

/// A trace as the CSV `parse_trace` reads.
pub fn trace_csv(trace: &[f64], comment: &str) -> String {
    let mut s = String::new();
    for line in comment.lines() {
        let _ = writeln!(s, "# {line}");
    }
    s.push_str("second,events_per_second\n");
    for (i, r) in trace.iter().enumerate() {
        let _ = writeln!(s, "{i},{r}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_round_trip_and_bad_lines_are_named() {
        let t = spike_trace(false);
        assert_eq!(t.len(), 3_600);
        assert_eq!(
            (t[0], t[1_259], t[1_500], t[2_159], t[3_599]),
            (200_000.0, 1_200_000.0, 1_200_000.0, 200_000.0, 200_000.0)
        );
        assert_eq!(parse_trace(&trace_csv(&t, "x")).unwrap(), t);
        assert!(parse_trace("0,1\n2,1\n").unwrap_err().contains("line 2"));
        assert!(parse_trace("0,-1\n").unwrap_err().contains("rate"));
        assert!(parse_trace("").is_err());
    }

    #[test]
    fn static_for_the_peak_never_lags_and_costs_its_workers() {
        let trace = vec![100.0, 100.0, 500.0, 500.0, 100.0];
        let params = Params {
            capacity: 100.0,
            cost_per_worker_second: 2.0,
            interval: 1,
        };
        let settings = Settings {
            target_utilization: 1.0,
            min_workers: 1,
            ..Settings::default()
        };
        let c = compare(&trace, &params, &settings);
        assert_eq!(c.static_workers, 5);
        assert_eq!(c.onset, Some(2));
        assert_eq!(c.fixed.time_to_absorb, Some(0));
        assert_eq!(c.fixed.worker_seconds, 25);
        assert_eq!(c.fixed.cost, 50.0);
    }

    #[test]
    fn a_step_is_absorbed_after_the_startup_time() {
        // 100 → 400 ev/s at second 10; workers of 100 ev/s start in 5 s.
        let trace: Vec<f64> = (0..60)
            .map(|t| if t < 10 { 100.0 } else { 400.0 })
            .collect();
        let params = Params {
            capacity: 100.0,
            cost_per_worker_second: 1.0,
            interval: 1,
        };
        let settings = Settings {
            target_utilization: 1.0,
            drain_time: 5.0,
            startup_time: 5.0,
            min_workers: 1,
            ..Settings::default()
        };
        let c = compare(&trace, &params, &settings);
        let t = &c.scaler.timeline;
        assert_eq!(t[10].useful, 1);
        assert!(t[10].workers >= 4, "asked for at once: {:?}", t[10]);
        assert!(t[15].useful >= 4, "useful 5 s later: {:?}", t[15]);
        let absorb = c.scaler.time_to_absorb.unwrap();
        assert!(absorb > 5 && absorb < 20, "{absorb}");
        // Draining the backlog takes more workers than the peak itself.
        assert!(c.scaler.max_workers > c.static_workers);
    }
}
