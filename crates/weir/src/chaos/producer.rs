//! The producer of `weir chaos`: fraud-v1 events posted to `weir ingest`
//! in order, one request at a time, each acknowledgement recorded with the
//! log offsets it names. Each request carries an `Idempotency-Key`; one that
//! gets no answer (`weir ingest` was killed, or is restarting) is sent
//! again with the same key until it is answered, as a producer should: the
//! server appends it at most once.

use std::sync::atomic::Ordering;
use std::time::SystemTime;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hyper::body::Bytes;
use serde::Deserialize;
use weir_workloads::fraud_v1;

use super::{lock, Ack, Shared, STREAM};
use crate::http_client::{self, Endpoint};

/// Largest answer accepted from `weir ingest`.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

pub(super) struct Production {
    pub(super) requests: u64,
    pub(super) elapsed: Duration,
    /// Requests sent again after getting no answer.
    pub(super) retries: u64,
    /// Answers the server replayed for a key it had stored.
    pub(super) replayed: u64,
}

/// How long to wait before sending a request again.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Posts the first `events` events in order, `batch` per request, at most
/// `rate` per second, one request at a time. Keeps one request back per kill
/// still to come (of either process). A request without an answer is sent
/// again with its key; an answer other than 200 (409 and 503 excepted,
/// which ask to retry) is fatal.
pub(super) fn produce(
    events: u64,
    batch: u64,
    rate: u64,
    kills: u32,
    shared: &Shared,
    deadline: Instant,
) -> anyhow::Result<Production> {
    // Keys unique to this run, in case a log is ever reused.
    let run = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let batches = events.div_ceil(batch);
    let (mut retries, mut replayed) = (0u64, 0u64);
    let mut generator = fraud_v1::Generator::new();
    let mut body = Vec::with_capacity(batch as usize * 110);
    let started = Instant::now();
    let mut next_offset = 0u64;
    for j in 0..batches {
        let first = j * batch;
        let n = batch.min(events - first);
        body.clear();
        for i in first..first + n {
            let t = generator.next_event(i, fraud_v1::BASE_TS + i as i64);
            fraud_v1::write_json(&t, &mut body);
        }
        let due = started + Duration::from_secs_f64(first as f64 / rate as f64);
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                bail!("stopped");
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("deadline passed after {first} events");
            }
            let pending = kills.saturating_sub(shared.kills_done.load(Ordering::SeqCst))
                + shared.ingest_kills_pending();
            if now >= due && batches - j > u64::from(pending) {
                shared.holding.store(false, Ordering::SeqCst);
                break;
            }
            shared
                .holding
                .store(batches - j <= u64::from(pending), Ordering::SeqCst);
            std::thread::sleep(
                due.saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), Duration::from_millis(10)),
            );
        }
        let key = format!("chaos-{run:x}-{first}-{n}");
        let what = || format!("request {} (events {first}..{})", j + 1, first + n);
        let (start, end, accepted) = loop {
            if shared.stop.load(Ordering::SeqCst) {
                bail!("stopped");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("deadline passed while sending {}", what());
            }
            let port = shared.ingest_port.load(Ordering::SeqCst);
            let ingest = Endpoint::parse(&format!("127.0.0.1:{port}"))?;
            shared.in_flight.store(true, Ordering::SeqCst);
            let sent = post(&ingest, &key, &body, left.min(Duration::from_secs(60)));
            shared.in_flight.store(false, Ordering::SeqCst);
            match sent.with_context(what)? {
                Answer::Appended {
                    start,
                    end,
                    accepted,
                    replay,
                } => {
                    replayed += u64::from(replay);
                    break (start, end, accepted);
                }
                Answer::Retry(why) => {
                    tracing::debug!(key, %why, "sending again");
                    retries += 1;
                    std::thread::sleep(RETRY_PAUSE);
                }
            }
        };
        if accepted != n || end - start != n || start != next_offset {
            bail!(
                "request {} (events {first}..{}): acknowledged {accepted} records at offsets \
                 {start}..{end}, expected {n} at {next_offset}..{}",
                j + 1,
                first + n,
                next_offset + n
            );
        }
        next_offset = end;
        lock(&shared.acks).push(Ack {
            first_event: first,
            start,
            end,
        });
        shared.acked_events.store(first + n, Ordering::SeqCst);
    }
    Ok(Production {
        requests: batches,
        elapsed: started.elapsed(),
        retries,
        replayed,
    })
}

/// What `weir ingest` answers to an accepted request.
#[derive(Debug, Deserialize)]
struct Appended {
    /// The first offset assigned and the one after the last.
    offsets: [u64; 2],
    accepted: u64,
}

/// What became of one attempt.
enum Answer {
    /// Acknowledged `start..end` with `accepted` records (`replay`: from
    /// the server's idempotency window).
    Appended {
        start: u64,
        end: u64,
        accepted: u64,
        replay: bool,
    },
    /// No answer, or one that asks to come back later: send it again.
    Retry(String),
}

/// POSTs JSON lines with `key`; `Err` for an answer that retrying cannot
/// change.
fn post(ingest: &Endpoint, key: &str, body: &[u8], timeout: Duration) -> anyhow::Result<Answer> {
    let r = match http_client::post(
        ingest,
        &format!("/v1/streams/{STREAM}/events"),
        "application/x-ndjson",
        &[("Idempotency-Key", key)],
        Bytes::copy_from_slice(body),
        timeout,
        MAX_ANSWER_BYTES,
    ) {
        Ok(r) => r,
        // Refused, reset, closed or timed out: the server may or may not
        // have stored it; the key makes sending it again safe.
        Err(e) => return Ok(Answer::Retry(format!("{e:#}"))),
    };
    let shown = || String::from_utf8_lossy(&r.body[..r.body.len().min(500)]).into_owned();
    match r.status {
        200 => {}
        // A request with the key is still being appended, or the server
        // is busy.
        409 | 503 => return Ok(Answer::Retry(format!("HTTP {}: {}", r.status, shown()))),
        _ => bail!("HTTP {}: {}", r.status, shown()),
    }
    let appended: Appended = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected response {}", shown()))?;
    let [start, end] = appended.offsets;
    if start > end {
        bail!("unexpected response {}", shown());
    }
    let replay = r
        .headers
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    Ok(Answer::Appended {
        start,
        end,
        accepted: appended.accepted,
        replay,
    })
}
