//! Capped exponential backoff with jitter, for reconnecting.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Delays between reconnection attempts: doubling from `initial` up to
/// `max`, each drawn at random from the upper half of the current step so
/// that many clients cut off together do not return together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
    rng: u64,
    attempts: u32,
}

impl Backoff {
    /// A backoff starting at `initial` and never waiting more than `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
            rng: seed | 1,
            attempts: 0,
        }
    }

    /// The defaults connectors use: 100 ms doubling up to 10 s.
    pub fn reconnect() -> Backoff {
        Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// The delay before the next attempt; each call doubles the step.
    pub fn next_delay(&mut self) -> Duration {
        // xorshift64: enough randomness for jitter, no dependency.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let step = self.current;
        let half = step / 2;
        let jitter = if half.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1))
        };
        self.current = (self.current * 2).min(self.max);
        self.attempts = self.attempts.saturating_add(1);
        half + jitter
    }

    /// Attempts since the last [`reset`](Backoff::reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// After a success: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        // Step k is min(100 ms * 2^k, 1 s); each delay lies in its upper half.
        for (k, d) in delays.iter().enumerate() {
            let step = Duration::from_millis(100 * (1u64 << k)).min(Duration::from_secs(1));
            assert!(
                *d >= step / 2 && *d < step,
                "delay {k}: {d:?} outside [{:?}, {step:?})",
                step / 2
            );
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        let d = b.next_delay();
        assert!(d >= Duration::from_millis(50) && d < Duration::from_millis(100));
    }
}
