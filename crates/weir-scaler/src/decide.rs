//! The decision rule: how many workers the observed load needs.
//!
//! A pure, deterministic state machine ([`Decider`]): each tick it takes an
//! [`Observation`] and returns a [`Decision`] with the numbers behind it,
//! so that the same inputs always give the same count and every count can
//! be explained (logged, exported as metrics, replayed by the simulation).
//!
//! - **Reactive** (DS2, Kalavri et al., OSDI 2018): the workers needed to
//!   keep up with the input and drain the backlog within `drain_time`, at
//!   the per-worker *true* processing rate (records per second of busy
//!   time, so that an idle worker's capacity is not underestimated), kept
//!   at `target_utilization`:
//!   `ceil((input_rate + lag / drain_time) / (true_rate × target_utilization))`.
//! - **Predictive**: the input rate forecast at `now + startup_time` (a
//!   worker asked for now is useful only then) by a Theil–Sen trend over a
//!   sliding window of recent input rates ([`crate::forecast`]), over the
//!   same per-worker capacity.
//! - The decision is the larger of the two, within `[min, max]`. A rise is
//!   acted on at once; a fall only to the highest need seen over the last
//!   `scale_down_window` (the HPA's stabilisation window), so a need that
//!   dips for a tick does not stop a worker only to start it again.

use std::collections::VecDeque;

use crate::forecast::TheilSen;

/// How the scaler decides; all durations in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Share of a worker's true rate the scaler plans to use, in (0, 1]:
    /// the headroom for noise and for the time a decision takes to act.
    pub target_utilization: f64,
    /// The backlog should be drained within this time, in seconds (> 0).
    pub drain_time: f64,
    /// Fewest workers, at least 0.
    pub min_workers: usize,
    /// Most workers, at least `min_workers` and at least 1.
    pub max_workers: usize,
    /// A fall in the need is acted on only to the highest need over this
    /// many seconds (0: at once).
    pub scale_down_window: f64,
    /// Seconds from asking for a worker to that worker processing records:
    /// the forecast's horizon.
    pub startup_time: f64,
    /// Seconds of input-rate history the trend is fitted on.
    pub forecast_window: f64,
    /// The per-worker true rate (records/s) assumed until one is observed
    /// (None: hold the current count until then).
    pub default_true_rate: Option<f64>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            target_utilization: 0.8,
            drain_time: 30.0,
            min_workers: 1,
            max_workers: 16,
            scale_down_window: 60.0,
            startup_time: 15.0,
            forecast_window: 60.0,
            default_true_rate: None,
        }
    }
}

impl Settings {
    /// Checks the settings, naming the first that is out of range as its
    /// command-line flag.
    pub fn validate(&self) -> Result<(), String> {
        let t = self.target_utilization;
        if !(t > 0.0 && t <= 1.0) {
            return Err(format!("--target-utilization {t} must be in (0, 1]"));
        }
        if !(self.drain_time.is_finite() && self.drain_time > 0.0) {
            return Err(format!(
                "--drain-time {} s must be positive",
                self.drain_time
            ));
        }
        if self.max_workers == 0 {
            return Err("--max-workers must be at least 1".into());
        }
        if self.min_workers > self.max_workers {
            return Err(format!(
                "--min-workers {} is more than --max-workers {}",
                self.min_workers, self.max_workers
            ));
        }
        for (flag, v) in [
            ("--scale-down-window", self.scale_down_window),
            ("--startup-time", self.startup_time),
            ("--forecast-window", self.forecast_window),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("{flag} {v} s must be zero or positive"));
            }
        }
        if let Some(r) = self.default_true_rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("--worker-capacity {r} must be positive"));
            }
        }
        Ok(())
    }
}

/// What the scaler saw at one tick.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Seconds on a monotonic clock (any origin; only differences count).
    pub at: f64,
    /// Records arriving per second, over all workers.
    pub input_rate: f64,
    /// Records waiting (consumer lag), over all workers.
    pub lag: f64,
    /// Records one worker processes per second of busy time, where the
    /// tick could measure it (None: not measurable this tick, e.g. every
    /// worker was idle part of the time).
    pub true_rate: Option<f64>,
    /// Workers running now.
    pub current_workers: usize,
}

/// Which term set the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Term {
    /// The lag and input rate now (DS2).
    Reactive,
    /// The forecast input rate at `now + startup_time`.
    Predictive,
    /// The need was lower, but not for the whole scale-down window.
    Stabilized,
    /// Raised to `min_workers`.
    Min,
    /// Cut to `max_workers`.
    Max,
    /// No per-worker rate known yet: the current count is kept.
    NoCapacity,
}

impl Term {
    /// The label value in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Term::Reactive => "reactive",
            Term::Predictive => "predictive",
            Term::Stabilized => "stabilized",
            Term::Min => "min",
            Term::Max => "max",
            Term::NoCapacity => "no_capacity",
        }
    }
}

/// Where the count goes relative to the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
    Hold,
}

impl Direction {
    /// The label value in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
            Direction::Hold => "hold",
        }
    }
}

/// One decision and the numbers behind it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The worker count to run.
    pub desired: usize,
    /// Workers running when it was taken.
    pub current: usize,
    /// The reactive need (unclamped; 0 without a capacity).
    pub reactive: usize,
    /// The predictive need (unclamped; 0 without a capacity).
    pub predictive: usize,
    /// The term that set `desired`.
    pub term: Term,
    pub direction: Direction,
    /// The observed input rate (records/s).
    pub input_rate: f64,
    /// The observed lag (records).
    pub lag: f64,
    /// The forecast input rate at `now + startup_time` (records/s).
    pub forecast_rate: f64,
    /// The fitted trend (records/s per second).
    pub slope: f64,
    /// The per-worker true rate used (records/s; 0 when none is known).
    pub true_rate: f64,
}

/// The decision rule with the history it needs (recent input rates for the
/// forecast, recent needs for the stabilisation window, the last true rate
/// seen).
#[derive(Debug, Clone)]
pub struct Decider {
    settings: Settings,
    trend: TheilSen,
    /// `(at, need)` over the scale-down window, oldest first.
    needs: VecDeque<(f64, usize)>,
    true_rate: Option<f64>,
}

impl Decider {
    /// A decider with no history. Panics on settings that
    /// [`Settings::validate`] rejects.
    pub fn new(settings: Settings) -> Decider {
        if let Err(e) = settings.validate() {
            panic!("invalid scaler settings: {e}");
        }
        Decider {
            trend: TheilSen::new(settings.forecast_window),
            true_rate: settings.default_true_rate,
            settings,
            needs: VecDeque::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides for one tick. Non-finite or negative inputs count as 0.
    pub fn decide(&mut self, obs: &Observation) -> Decision {
        let s = &self.settings;
        let input_rate = sane(obs.input_rate);
        let lag = sane(obs.lag);
        if let Some(r) = obs.true_rate.filter(|r| r.is_finite() && *r > 0.0) {
            self.true_rate = Some(r);
        }
        self.trend.push(obs.at, input_rate);
        let (forecast_rate, slope) = match self.trend.fit() {
            Some(fit) => (sane(fit.at(obs.at + s.startup_time)), fit.slope),
            None => (input_rate, 0.0),
        };
        let current = obs.current_workers;
        let Some(true_rate) = self.true_rate else {
            let desired = current.clamp(s.min_workers, s.max_workers);
            let term = if desired > current {
                Term::Min
            } else if desired < current {
                Term::Max
            } else {
                Term::NoCapacity
            };
            return Decision {
                desired,
                current,
                reactive: 0,
                predictive: 0,
                term,
                direction: direction(current, desired),
                input_rate,
                lag,
                forecast_rate,
                slope,
                true_rate: 0.0,
            };
        };
        let capacity = true_rate * s.target_utilization;
        let reactive = workers_for(input_rate + lag / s.drain_time, capacity);
        let predictive = workers_for(forecast_rate, capacity);
        let (need, mut term) = if predictive > reactive {
            (predictive, Term::Predictive)
        } else {
            (reactive, Term::Reactive)
        };
        // The stabilisation window: the highest need within it.
        self.needs.push_back((obs.at, need));
        while let Some(&(t, _)) = self.needs.front() {
            if t < obs.at - s.scale_down_window {
                self.needs.pop_front();
            } else {
                break;
            }
        }
        let held = self.needs.iter().map(|&(_, n)| n).max().unwrap_or(need);
        let mut desired = need;
        if need < current && held > need {
            desired = held.min(current);
            term = Term::Stabilized;
        }
        if desired < s.min_workers {
            desired = s.min_workers;
            term = Term::Min;
        } else if desired > s.max_workers {
            desired = s.max_workers;
            term = Term::Max;
        }
        Decision {
            desired,
            current,
            reactive,
            predictive,
            term,
            direction: direction(current, desired),
            input_rate,
            lag,
            forecast_rate,
            slope,
            true_rate,
        }
    }
}

/// Workers of `capacity` records/s each that `rate` needs (saturating).
pub fn workers_for(rate: f64, capacity: f64) -> usize {
    if rate <= 0.0 || !rate.is_finite() {
        return 0;
    }
    let n = (rate / capacity).ceil();
    if n >= usize::MAX as f64 {
        usize::MAX
    } else {
        n as usize
    }
}

fn sane(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

fn direction(current: usize, desired: usize) -> Direction {
    match desired.cmp(&current) {
        std::cmp::Ordering::Greater => Direction::Up,
        std::cmp::Ordering::Less => Direction::Down,
        std::cmp::Ordering::Equal => Direction::Hold,
    }
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
