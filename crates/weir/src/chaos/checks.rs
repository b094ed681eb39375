//! What `weir chaos` checks once the run is over: every acknowledged event
//! in the log with the bytes posted for it, and the sink holding exactly
//! the reference alerts, each once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use weir_workloads::fraud_v1;

use super::{Ack, STREAM};

/// Checks the log and the sink after the run, prints the differences (if
/// any) and the summary line; returns whether the output was exact.
/// What the kills of `weir ingest` made the producer do.
pub(super) struct IngestKills {
    pub(super) kills: u32,
    pub(super) retries: u64,
    pub(super) replayed: u64,
}

pub(super) fn verify(
    log_dir: &Path,
    sink: &Path,
    acks: &[Ack],
    events: u64,
    mut recoveries: Vec<Duration>,
    ingest: IngestKills,
) -> anyhow::Result<bool> {
    let log_check = verify_log(log_dir, acks, events)?;
    let sink_check = verify_sink(sink, events)?;
    recoveries.sort_unstable();
    let p50 = percentile(&recoveries, 0.5);
    let max = recoveries.last().copied().unwrap_or_default();
    let lost = sink_check.missing + log_check.lost;
    let exact = lost == 0
        && sink_check.duplicated == 0
        && sink_check.unexpected == 0
        && sink_check.mismatched == 0
        && sink_check.bad_lines == 0
        && sink_check.duplicate_ids == 0
        && log_check.extra == 0
        && sink_check.alerts == sink_check.reference_alerts
        && sink_check.checksum == sink_check.reference_checksum;
    if !exact {
        println!(
            "chaos differences: reference alerts={} checksum={}; missing_alerts={} \
             acknowledged_events_lost={} duplicated={} unexpected={} mismatched={} \
             bad_lines={} duplicate_ids={} unacknowledged_log_records={}",
            sink_check.reference_alerts,
            sink_check.reference_checksum,
            sink_check.missing,
            log_check.lost,
            sink_check.duplicated,
            sink_check.unexpected,
            sink_check.mismatched,
            sink_check.bad_lines,
            sink_check.duplicate_ids,
            log_check.extra
        );
        for note in log_check.notes.iter().chain(&sink_check.notes) {
            println!("  {note}");
        }
    }
    if sink_check.missing_ids > 0 {
        println!(
            "note: {} sink lines have no \"_id\" field",
            sink_check.missing_ids
        );
    }
    println!(
        "chaos fraud-v1 events={} kills={} ingest_kills={} retries={} replayed={} alerts={} checksum={} lost={} duplicated={} unacknowledged_log_records={} recovery_p50_ms={} recovery_max_ms={}",
        events,
        recoveries.len(),
        ingest.kills,
        ingest.retries,
        ingest.replayed,
        sink_check.alerts,
        sink_check.checksum,
        lost,
        sink_check.duplicated,
        log_check.extra,
        p50.as_millis(),
        max.as_millis()
    );
    Ok(exact)
}

/// Nearest-rank percentile of sorted values (zero when there are none).
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub(super) struct LogCheck {
    /// Acknowledged events missing from the log or held with other bytes.
    lost: u64,
    /// Records in the log beyond the acknowledged ones.
    extra: u64,
    notes: Vec<String>,
}

/// Reads the log back: every acknowledged offset must hold exactly the bytes
/// posted for it (the JSON line without its newline).
pub(super) fn verify_log(log_dir: &Path, acks: &[Ack], events: u64) -> anyhow::Result<LogCheck> {
    let acked: u64 = acks.iter().map(|a| a.end - a.start).sum();
    if acked != events {
        bail!("only {acked} of {events} events were acknowledged");
    }
    // Read-only, as the pipelines read it.
    let mut reader = weir_log::TailReader::new(log_dir, STREAM, 0);
    let end = reader
        .end_offset()
        .with_context(|| format!("cannot read stream {STREAM} of {}", log_dir.display()))?;
    let mut check = LogCheck {
        lost: 0,
        extra: end.saturating_sub(acked),
        notes: Vec::new(),
    };
    let mut generator = fraud_v1::Generator::new();
    let mut expected = Vec::new();
    let mut next_event = 0u64;
    for ack in acks {
        if ack.first_event != next_event {
            bail!(
                "acknowledged requests are not contiguous at event {}",
                ack.first_event
            );
        }
        let n = ack.end - ack.start;
        let mut got: Vec<(u64, Vec<u8>)> = Vec::with_capacity(n as usize);
        let mut from = ack.start;
        while from < ack.end {
            match reader.read(from, (ack.end - from) as usize) {
                Ok(r) if r.is_empty() => break,
                Ok(r) => {
                    from = r.last().map(|x| x.0 + 1).unwrap_or(ack.end);
                    got.extend(r.into_iter().filter(|x| x.0 < ack.end));
                }
                Err(e) => {
                    check.notes.push(format!("reading offset {from}: {e}"));
                    break;
                }
            }
        }
        let by_offset: HashMap<u64, &[u8]> = got.iter().map(|(o, b)| (*o, b.as_slice())).collect();
        for k in 0..n {
            let i = ack.first_event + k;
            let t = generator.next_event(i, fraud_v1::BASE_TS + i as i64);
            expected.clear();
            fraud_v1::write_json(&t, &mut expected);
            expected.pop();
            let offset = ack.start + k;
            match by_offset.get(&offset) {
                Some(b) if *b == expected.as_slice() => {}
                other => {
                    check.lost += 1;
                    if check.notes.len() < 10 {
                        check.notes.push(match other {
                            None => format!(
                                "event {i}: acknowledged at offset {offset}, missing from the log"
                            ),
                            Some(b) => format!(
                                "event {i}: offset {offset} holds {:?}",
                                String::from_utf8_lossy(b)
                            ),
                        });
                    }
                }
            }
        }
        next_event += n;
    }
    Ok(check)
}

#[derive(Default)]
pub(super) struct SinkCheck {
    alerts: u64,
    checksum: u64,
    reference_alerts: u64,
    reference_checksum: u64,
    /// Reference alerts absent from the sink.
    missing: u64,
    /// Lines whose txn_id appeared before.
    duplicated: u64,
    /// Lines whose txn_id is not a reference alert.
    unexpected: u64,
    /// Lines of reference alerts with another card or score.
    mismatched: u64,
    bad_lines: u64,
    duplicate_ids: u64,
    missing_ids: u64,
    notes: Vec<String>,
}

/// Compares the sink's lines with the reference alerts (score bit for bit).
pub(super) fn verify_sink(path: &Path, events: u64) -> anyhow::Result<SinkCheck> {
    let reference: HashMap<u64, (u64, u64)> = fraud_v1::alerts(events)
        .into_iter()
        .map(|(t, c, s)| (t, (c, s.to_bits())))
        .collect();
    let mut check = SinkCheck {
        reference_alerts: reference.len() as u64,
        reference_checksum: reference.keys().fold(0u64, |a, t| a.wrapping_add(*t)),
        ..Default::default()
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            check.notes.push(format!("no sink file {}", path.display()));
            Vec::new()
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut seen = HashSet::new();
    let mut ids = HashSet::new();
    let note = |check: &mut SinkCheck, s: String| {
        if check.notes.len() < 20 {
            check.notes.push(s);
        }
    };
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let v: Option<serde_json::Value> = serde_json::from_slice(line).ok();
        let fields = v.as_ref().and_then(|v| {
            Some((
                v.get("txn_id")?.as_u64()?,
                v.get("card_id")?.as_u64()?,
                v.get("score")?.as_f64()?,
                v.get("_id").and_then(|x| x.as_u64()),
            ))
        });
        let Some((txn, card, score, id)) = fields else {
            check.bad_lines += 1;
            note(
                &mut check,
                format!(
                    "{}:{}: not an alert line: {:?}",
                    path.display(),
                    n + 1,
                    String::from_utf8_lossy(line)
                ),
            );
            continue;
        };
        check.alerts += 1;
        check.checksum = check.checksum.wrapping_add(txn);
        match id {
            Some(id) if !ids.insert(id) => {
                check.duplicate_ids += 1;
                note(&mut check, format!("line {}: _id {id} seen before", n + 1));
            }
            Some(_) => {}
            None => check.missing_ids += 1,
        }
        if !seen.insert(txn) {
            check.duplicated += 1;
            note(
                &mut check,
                format!("line {}: txn_id {txn} seen before", n + 1),
            );
            continue;
        }
        match reference.get(&txn) {
            None => {
                check.unexpected += 1;
                note(
                    &mut check,
                    format!("line {}: txn_id {txn} is not a reference alert", n + 1),
                );
            }
            Some(&(c, s)) if c != card || s != score.to_bits() => {
                check.mismatched += 1;
                note(
                    &mut check,
                    format!(
                        "line {}: txn_id {txn}: card {card} score {score:?}, expected card {c} score {:?}",
                        n + 1,
                        f64::from_bits(s)
                    ),
                );
            }
            Some(_) => {}
        }
    }
    let mut missing: Vec<u64> = reference
        .keys()
        .filter(|t| !seen.contains(*t))
        .copied()
        .collect();
    missing.sort_unstable();
    check.missing = missing.len() as u64;
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
        check.notes.push(format!(
            "{} reference alerts missing, e.g. txn_id {}",
            missing.len(),
            shown.join(", ")
        ));
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 0.5), Duration::from_millis(5));
        assert_eq!(percentile(&v, 1.0), Duration::from_millis(10));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
