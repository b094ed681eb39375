//! The producer of `weir chaos`: fraud-v1 events posted to `weir ingest`
//! in order, one request at a time, each acknowledgement recorded with the
//! log offsets it names.

use std::sync::atomic::Ordering;
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
}

/// Posts the first `events` events in order, `batch` per request, at most
/// `rate` per second, one request at a time. Keeps one request back per kill
/// still to come. Any failed request is fatal: a blind retry could append
/// twice.
pub(super) fn produce(
    port: u16,
    events: u64,
    batch: u64,
    rate: u64,
    kills: u32,
    shared: &Shared,
    deadline: Instant,
) -> anyhow::Result<Production> {
    let ingest = Endpoint::parse(&format!("127.0.0.1:{port}"))?;
    let batches = events.div_ceil(batch);
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
            let pending = kills.saturating_sub(shared.kills_done.load(Ordering::SeqCst));
            if now >= due && batches - j > u64::from(pending) {
                break;
            }
            std::thread::sleep(
                due.saturating_duration_since(now)
                    .clamp(Duration::from_millis(1), Duration::from_millis(10)),
            );
        }
        let timeout = deadline
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_secs(60));
        let (start, end, accepted) = post(&ingest, &body, timeout)
            .with_context(|| format!("request {} (events {first}..{})", j + 1, first + n))?;
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
    })
}

/// What `weir ingest` answers to an accepted request.
#[derive(Debug, Deserialize)]
struct Appended {
    /// The first offset assigned and the one after the last.
    offsets: [u64; 2],
    accepted: u64,
}

/// POSTs JSON lines; returns the acknowledged `(start, end, accepted)`.
fn post(ingest: &Endpoint, body: &[u8], timeout: Duration) -> anyhow::Result<(u64, u64, u64)> {
    let r = http_client::post(
        ingest,
        &format!("/v1/streams/{STREAM}/events"),
        "application/x-ndjson",
        Bytes::copy_from_slice(body),
        timeout,
        MAX_ANSWER_BYTES,
    )?;
    let shown = || String::from_utf8_lossy(&r.body[..r.body.len().min(500)]).into_owned();
    if r.status != 200 {
        bail!("HTTP {}: {}", r.status, shown());
    }
    let appended: Appended = serde_json::from_slice(&r.body)
        .with_context(|| format!("unexpected response {}", shown()))?;
    let [start, end] = appended.offsets;
    if start > end {
        bail!("unexpected response {}", shown());
    }
    Ok((start, end, appended.accepted))
}
