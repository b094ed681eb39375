//! fraud-v1 as the end-to-end tests check it: the events one record each,
//! the reference alerts, alert records parsed back, and an exact
//! comparison that does not print thousands of alerts.

use std::path::Path;

use weir_workloads::fraud_v1;

/// An alert as compared: txn_id, card_id and the score's bits.
pub type Alert = (u64, u64, u64);

/// The first `n` fraud-v1 events, one JSON object each (no newline).
pub fn events(n: u64) -> Vec<Vec<u8>> {
    fraud_v1::encode_json(n)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The reference alerts for the first `n` events, sorted.
pub fn reference(n: u64) -> Vec<Alert> {
    let mut r: Vec<Alert> = fraud_v1::alerts(n)
        .into_iter()
        .map(|(t, c, s)| (t, c, s.to_bits()))
        .collect();
    r.sort_unstable();
    r
}

/// One alert record (JSON with `_id`): the alert and its output id.
pub fn parse_alert(record: &[u8]) -> (Alert, u64) {
    let v: serde_json::Value = serde_json::from_slice(record).unwrap_or_else(|e| {
        panic!(
            "alert {:?} is not JSON: {e}",
            String::from_utf8_lossy(record)
        )
    });
    let alert = (
        v["txn_id"].as_u64().expect("txn_id"),
        v["card_id"].as_u64().expect("card_id"),
        v["score"].as_f64().expect("score").to_bits(),
    );
    (alert, v["_id"].as_u64().expect("_id"))
}

/// Alert records: the alerts sorted, and their ids in record order.
pub fn parse_alerts<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Alert>, Vec<u64>) {
    let (mut alerts, ids): (Vec<Alert>, Vec<u64>) = records.into_iter().map(parse_alert).unzip();
    alerts.sort_unstable();
    (alerts, ids)
}

/// The alerts of a JSON-lines file (a file sink's output), sorted.
pub fn alerts_in_file(path: &Path) -> Vec<Alert> {
    let text =
        std::fs::read(path).unwrap_or_else(|e| panic!("reading alerts {}: {e}", path.display()));
    parse_alerts(text.split(|&b| b == b'\n').filter(|l| !l.is_empty())).0
}

/// Asserts the alerts equal the reference exactly (no loss, no
/// duplicate) without printing thousands of them.
pub fn assert_exact(got: &[Alert], expected: &[Alert], what: &str) {
    assert!(!expected.is_empty(), "{what}: no reference alerts");
    assert_eq!(got.len(), expected.len(), "{what}: alert count");
    if let Some((g, e)) = got.iter().zip(expected).find(|(g, e)| g != e) {
        panic!("{what}: first differing alert: got {g:?}, expected {e:?}");
    }
}
