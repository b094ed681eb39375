//! Names of streams, topics, tables and clients that no other test, and
//! no other run of the tests, uses at the same time: the shared brokers
//! and database outlive a test run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// `prefix` followed by the process id, a per-process counter and the
/// clock's nanoseconds. Letters, digits and `_` only after the prefix, so
/// it is a valid NATS stream, Kafka topic, MQTT topic and SQL identifier
/// when the prefix is.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_differ_and_keep_to_safe_characters() {
        let (a, b) = (super::unique("t"), super::unique("t"));
        assert_ne!(a, b);
        assert!(a.starts_with("t_"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    }
}
