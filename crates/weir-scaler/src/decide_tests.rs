use super::*;
use proptest::prelude::*;

fn settings() -> Settings {
    Settings {
        target_utilization: 0.8,
        drain_time: 10.0,
        min_workers: 1,
        max_workers: 100,
        scale_down_window: 30.0,
        startup_time: 10.0,
        forecast_window: 60.0,
        default_true_rate: None,
    }
}

fn obs(at: f64, input_rate: f64, lag: f64, true_rate: Option<f64>, current: usize) -> Observation {
    Observation {
        at,
        input_rate,
        lag,
        true_rate,
        current_workers: current,
    }
}

#[test]
fn reactive_need_is_ds2s_formula() {
    let mut d = Decider::new(settings());
    // (100 000 + 200 000 / 10) / (50 000 × 0.8) = 3 exactly.
    let x = d.decide(&obs(0.0, 100_000.0, 200_000.0, Some(50_000.0), 1));
    assert_eq!(x.reactive, 3);
    assert_eq!(x.predictive, 3, "one point: the forecast is the rate now");
    assert_eq!(x.desired, 3);
    assert_eq!(x.direction, Direction::Up);
    assert_eq!(x.term, Term::Reactive);
    // One record more needs a fourth worker.
    let x = d.decide(&obs(1.0, 100_001.0, 200_000.0, None, 3));
    assert_eq!(x.reactive, 4);
    assert_eq!(x.true_rate, 50_000.0, "the last true rate is kept");
}

#[test]
fn a_rising_trend_is_met_before_it_arrives() {
    let mut d = Decider::new(settings());
    let mut last = None;
    // +1 000 records/s every second, no lag: the reactive need lags
    // behind, the forecast 10 s ahead does not.
    for t in 0..20 {
        let rate = 10_000.0 + 1_000.0 * t as f64;
        last = Some(d.decide(&obs(t as f64, rate, 0.0, Some(1_000.0), 10)));
    }
    let x = last.unwrap();
    assert_eq!(x.slope, 1_000.0);
    assert_eq!(x.forecast_rate, 39_000.0);
    assert_eq!(x.reactive, 37); // 29 000 / 800 = 36.25
    assert_eq!(x.predictive, 49); // 39 000 / 800 = 48.75
    assert_eq!(x.term, Term::Predictive);
    assert_eq!(x.desired, 49);
}

#[test]
fn scale_down_waits_for_the_window() {
    let mut d = Decider::new(settings());
    let mut cur = 1;
    for t in 0..5 {
        cur = d
            .decide(&obs(t as f64, 8_000.0, 0.0, Some(1_000.0), cur))
            .desired;
    }
    assert_eq!(cur, 10);
    // The load halves: the need is 5, but the count holds at 10 until the
    // stabilisation window (30 s) no longer holds a need of 10 (the
    // robust forecast still sees 8 000 ev/s for the first few ticks after
    // the fall, taking them for outliers), then goes to 5 at once.
    let mut seen = Vec::new();
    for t in 5..100 {
        let x = d.decide(&obs(t as f64, 4_000.0, 0.0, Some(1_000.0), cur));
        if x.desired == 10 {
            assert!(
                matches!(x.term, Term::Stabilized | Term::Predictive),
                "{x:?}"
            );
        }
        seen.push(x.desired);
        cur = x.desired;
    }
    let held = seen.iter().take_while(|&&n| n == 10).count();
    assert!((30..50).contains(&held), "held {held}: {seen:?}");
    assert!(seen[held..].iter().all(|&n| n == 5), "{seen:?}");
}

#[test]
fn clamps_and_no_capacity() {
    let mut s = settings();
    s.min_workers = 2;
    s.max_workers = 4;
    let mut d = Decider::new(s.clone());
    let x = d.decide(&obs(0.0, 1e6, 0.0, None, 0));
    assert_eq!((x.desired, x.term), (2, Term::Min), "no rate yet: min");
    let x = d.decide(&obs(1.0, 1e6, 0.0, None, 3));
    assert_eq!((x.desired, x.term), (3, Term::NoCapacity));
    let x = d.decide(&obs(2.0, 1e6, 0.0, Some(1.0), 3));
    assert_eq!((x.desired, x.term), (4, Term::Max));
    let mut d = Decider::new(s);
    let x = d.decide(&obs(0.0, 0.0, 0.0, Some(1.0), 3));
    assert_eq!(
        (x.desired, x.term, x.direction),
        (2, Term::Min, Direction::Down)
    );
}

#[test]
fn settings_are_checked_by_flag_name() {
    let mut s = settings();
    s.target_utilization = 1.5;
    assert!(s.validate().unwrap_err().contains("--target-utilization"));
    let mut s = settings();
    s.min_workers = 9;
    s.max_workers = 3;
    assert!(s.validate().unwrap_err().contains("--min-workers"));
    let mut s = settings();
    s.drain_time = 0.0;
    assert!(s.validate().unwrap_err().contains("--drain-time"));
}

fn arb_obs() -> impl Strategy<Value = (f64, f64, Option<f64>, usize)> {
    (
        prop_oneof![Just(0.0), 0.0f64..2e6, Just(f64::NAN), Just(-5.0)],
        prop_oneof![Just(0.0), 0.0f64..1e8],
        prop_oneof![Just(None), (1.0f64..1e6).prop_map(Some)],
        0usize..200,
    )
}

proptest! {
    /// Whatever it sees, the count stays within [min, max], the same
    /// inputs give the same decisions, and a count above the needs is
    /// only ever kept, never raised.
    #[test]
    fn bounded_deterministic_and_never_above_need_and_current(
        ticks in proptest::collection::vec(arb_obs(), 1..60),
        min in 0usize..5,
        extra in 1usize..50,
    ) {
        let mut s = settings();
        s.min_workers = min;
        s.max_workers = min + extra;
        let mut a = Decider::new(s.clone());
        let mut b = Decider::new(s.clone());
        for (i, &(rate, lag, tr, cur)) in ticks.iter().enumerate() {
            let o = obs(i as f64, rate, lag, tr, cur);
            let x = a.decide(&o);
            prop_assert_eq!(x, b.decide(&o));
            prop_assert!(x.desired >= s.min_workers && x.desired <= s.max_workers);
            let need = x.reactive.max(x.predictive);
            if x.term != Term::NoCapacity && x.desired > need.max(s.min_workers) {
                prop_assert!(x.desired <= cur, "raised above the need: {:?}", x);
            }
        }
    }

    /// More lag or more input never asks for fewer workers (with the same
    /// history).
    #[test]
    fn monotone_in_load(rate in 0.0f64..1e6, lag in 0.0f64..1e7, more in 0.0f64..1e6, tr in 1.0f64..1e5) {
        let s = Settings { max_workers: 100_000, ..settings() };
        let lo = Decider::new(s.clone()).decide(&obs(0.0, rate, lag, Some(tr), 1));
        let hi_rate = Decider::new(s.clone()).decide(&obs(0.0, rate + more, lag, Some(tr), 1));
        let hi_lag = Decider::new(s).decide(&obs(0.0, rate, lag + more, Some(tr), 1));
        prop_assert!(hi_rate.desired >= lo.desired);
        prop_assert!(hi_lag.desired >= lo.desired);
    }

    /// A steady load, once the window has passed, settles on one count and
    /// stays there (no flapping).
    #[test]
    fn steady_load_does_not_flap(rate in 1.0f64..1e6, tr in 1.0f64..1e5, start in 0usize..50) {
        let s = Settings { max_workers: 100_000, ..settings() };
        let mut d = Decider::new(s);
        let mut cur = start;
        let mut changes = 0;
        let mut prev = None;
        for t in 0..200 {
            let x = d.decide(&obs(t as f64, rate, 0.0, Some(tr), cur));
            if prev.is_some_and(|p| p != x.desired) {
                changes += 1;
            }
            prev = Some(x.desired);
            cur = x.desired;
        }
        prop_assert!(changes <= 1, "{} changes", changes);
        prop_assert_eq!(cur, workers_for(rate, tr * 0.8).max(1));
    }
}
