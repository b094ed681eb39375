//! Record samples for `/tap/STEP`: a debugging view of what passes a step.
//!
//! The data path checks one relaxed flag per batch and step; only a step
//! with a subscriber pays for encoding its sampled rows. Samples go to an
//! async channel, so a subscriber (the HTTP endpoint) waits for them
//! without a thread of its own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use arrow_array::RecordBatch;
use tokio::sync::mpsc::{self, error::TrySendError, Receiver, Sender};

/// A step's samples for `/tap`.
struct TapSlot {
    active: AtomicBool,
    subscribers: Mutex<Vec<TapSubscriber>>,
}

struct TapSubscriber {
    tx: Sender<String>,
    per_second: u32,
    window: Instant,
    taken: u32,
}

/// Samples of the records passing each step, for debugging. A subscriber
/// gets at most its rate of records per second; records it cannot take
/// at once are dropped, never waited for. At most one second of samples
/// (its rate, up to 1024) waits for a subscriber.
pub struct Taps {
    steps: Vec<String>,
    slots: Vec<TapSlot>,
}

/// Most records queued per subscriber before new ones are dropped.
const TAP_QUEUE: usize = 1024;

impl Taps {
    pub(crate) fn new(steps: Vec<String>) -> Taps {
        let slots = steps
            .iter()
            .map(|_| TapSlot {
                active: AtomicBool::new(false),
                subscribers: Mutex::new(Vec::new()),
            })
            .collect();
        Taps { steps, slots }
    }

    /// The steps that can be tapped.
    pub fn steps(&self) -> &[String] {
        &self.steps
    }

    /// Starts sampling `step` at up to `per_second` records a second; the
    /// samples (JSON objects) arrive on the receiver until it is dropped.
    /// `None` for an unknown step.
    pub fn subscribe(&self, step: &str, per_second: u32) -> Option<Receiver<String>> {
        let i = self.steps.iter().position(|s| s == step)?;
        let per_second = per_second.max(1);
        let (tx, rx) = mpsc::channel((per_second as usize).min(TAP_QUEUE));
        let slot = &self.slots[i];
        let mut subs = slot.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        // Subscribers of a quiet step are otherwise only noticed gone at
        // its next batch: do not let them pile up.
        subs.retain(|s| !s.tx.is_closed());
        subs.push(TapSubscriber {
            tx,
            per_second,
            window: Instant::now(),
            taken: 0,
        });
        slot.active.store(true, Ordering::Release);
        Some(rx)
    }

    /// Whether anyone samples step `i` (one relaxed load per batch).
    #[inline]
    pub(crate) fn tapped(&self, i: usize) -> bool {
        self.slots
            .get(i)
            .is_some_and(|s| s.active.load(Ordering::Relaxed))
    }

    /// Offers a batch out of step `i` to its subscribers.
    pub(crate) fn offer(&self, i: usize, batch: &RecordBatch) {
        let Some(slot) = self.slots.get(i) else {
            return;
        };
        let mut subs = slot.subscribers.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let step = &self.steps[i];
        subs.retain_mut(|sub| {
            if sub.tx.is_closed() {
                return false;
            }
            if now.duration_since(sub.window).as_secs() >= 1 {
                sub.window = now;
                sub.taken = 0;
            }
            let budget = sub.per_second.saturating_sub(sub.taken) as usize;
            let rows = batch.num_rows();
            let take = budget.min(rows);
            if take == 0 {
                return true;
            }
            // Spread the sample over the batch rather than its head.
            let stride = rows / take;
            for k in 0..take {
                let mut line = crate::encode::row_json(batch, k * stride);
                // `row_json` gives an object; name the step in it.
                line.insert_str(1, &format!("\"_step\":{},", json_str(step)));
                if line.ends_with(",}") {
                    line.replace_range(line.len() - 2.., "}");
                }
                match sub.tx.try_send(line) {
                    Ok(()) => sub.taken += 1,
                    Err(TrySendError::Full(_)) => break,
                    Err(TrySendError::Closed(_)) => return false,
                }
            }
            true
        });
        if subs.is_empty() {
            slot.active.store(false, Ordering::Release);
        }
    }
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_tap_samples_at_its_rate_and_stops_when_dropped() {
        use arrow_array::UInt64Array;
        use arrow_schema::{DataType, Field, Schema};
        let taps = Taps::new(vec!["decode".into(), "features".into()]);
        assert!(taps.subscribe("nope", 5).is_none());
        assert!(!taps.tapped(1));
        let rx = taps.subscribe("features", 5).expect("known step");
        assert!(taps.tapped(1) && !taps.tapped(0));
        let schema = Arc::new(Schema::new(vec![
            Field::new("card_id", DataType::UInt64, false),
            Field::new("__pos", DataType::UInt64, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(UInt64Array::from_iter_values(0..100)),
                Arc::new(UInt64Array::from_iter_values(1000..1100)),
            ],
        )
        .expect("batch");
        taps.offer(1, &batch);
        taps.offer(1, &batch);
        let mut rx = rx;
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        // Five a second, spread over the batch, hidden columns left out.
        assert_eq!(
            got,
            [0, 20, 40, 60, 80]
                .iter()
                .map(|c| format!("{{\"_step\":\"features\",\"card_id\":{c}}}"))
                .collect::<Vec<_>>()
        );
        drop(rx);
        // The next batch notices the subscriber is gone, even with its
        // second's budget spent.
        taps.offer(1, &batch);
        assert!(!taps.tapped(1));
    }

    #[test]
    fn gone_subscribers_of_a_quiet_step_do_not_pile_up() {
        let taps = Taps::new(vec!["decode".into()]);
        let count = |taps: &Taps| taps.slots[0].subscribers.lock().unwrap().len();
        for _ in 0..100 {
            drop(taps.subscribe("decode", 1000).expect("known step"));
        }
        let rx = taps.subscribe("decode", 1000).expect("known step");
        assert_eq!(count(&taps), 1);
        drop(rx);
    }

    #[test]
    fn at_most_one_second_of_samples_waits() {
        use arrow_array::UInt64Array;
        use arrow_schema::{DataType, Field, Schema};
        let taps = Taps::new(vec!["decode".into()]);
        let mut slow = taps.subscribe("decode", 3).expect("known step");
        let mut fast = taps.subscribe("decode", 5000).expect("known step");
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(UInt64Array::from_iter_values(0..4000))],
        )
        .expect("batch");
        taps.offer(0, &batch);
        taps.offer(0, &batch);
        // The next second's samples find the slow subscriber's queue full.
        std::thread::sleep(std::time::Duration::from_millis(1010));
        taps.offer(0, &batch);
        let drain = |rx: &mut Receiver<String>| std::iter::from_fn(|| rx.try_recv().ok()).count();
        assert_eq!(drain(&mut slow), 3);
        assert_eq!(drain(&mut fast), TAP_QUEUE);
    }
}
