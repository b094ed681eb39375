//! The server's series: handles registered at start, so a request updates
//! atomics and takes no lock.

use std::sync::Arc;

use weir_metrics::{labels, Counter, Histogram, Registry, SECONDS_BUCKETS};

use crate::names;

/// The status codes the events endpoint answers with; each gets its
/// series at start, so a dashboard's rates begin at zero.
const CODES: &[u16] = &[
    200, 400, 401, 404, 408, 409, 413, 415, 422, 429, 500, 503, 507,
];

/// Request counts and durations of one `stream` label value.
pub(crate) struct RequestMetrics {
    by_code: Vec<(u16, Arc<Counter>)>,
    duration: Arc<Histogram>,
    stream: String,
}

impl RequestMetrics {
    pub(crate) fn new(registry: &Registry, stream: &str) -> RequestMetrics {
        RequestMetrics {
            by_code: CODES
                .iter()
                .map(|&code| (code, requests_counter(registry, stream, code)))
                .collect(),
            duration: registry.histogram(
                names::REQUEST_DURATION_SECONDS,
                "Time from a request's head to its answer.",
                labels(&[("stream", stream)]),
                SECONDS_BUCKETS,
            ),
            stream: stream.to_string(),
        }
    }

    /// Counts one answered request.
    pub(crate) fn answered(&self, registry: &Registry, code: u16, seconds: f64) {
        match self.by_code.iter().find(|(c, _)| *c == code) {
            Some((_, counter)) => counter.add(1),
            // Not answered by the handler today; counted all the same.
            None => requests_counter(registry, &self.stream, code).add(1),
        }
        self.duration.observe(seconds);
    }
}

fn requests_counter(registry: &Registry, stream: &str, code: u16) -> Arc<Counter> {
    registry.counter(
        names::REQUESTS_TOTAL,
        "Requests to the events endpoint, by status code of the answer.",
        labels(&[("stream", stream), ("code", &code.to_string())]),
    )
}

/// The series of one configured stream.
pub(crate) struct StreamMetrics {
    pub(crate) requests: RequestMetrics,
    pub(crate) received_bytes: Arc<Counter>,
    pub(crate) appended: Arc<Counter>,
    pub(crate) rejected: Arc<Counter>,
    pub(crate) append: Arc<Histogram>,
    pub(crate) fsync: Arc<Histogram>,
    pub(crate) replays: Arc<Counter>,
}

impl StreamMetrics {
    pub(crate) fn new(registry: &Registry, stream: &str) -> StreamMetrics {
        let l = || labels(&[("stream", stream)]);
        StreamMetrics {
            requests: RequestMetrics::new(registry, stream),
            received_bytes: registry.counter(
                names::RECEIVED_BYTES_TOTAL,
                "Request body bytes read.",
                l(),
            ),
            appended: registry.counter(
                names::RECORDS_APPENDED_TOTAL,
                "Records appended to the log.",
                l(),
            ),
            rejected: registry.counter(
                names::RECORDS_REJECTED_TOTAL,
                "Invalid records refused.",
                l(),
            ),
            append: registry.histogram(
                names::APPEND_DURATION_SECONDS,
                "Writing one request's batch to the log, without the fsync.",
                l(),
                SECONDS_BUCKETS,
            ),
            fsync: registry.histogram(
                names::FSYNC_DURATION_SECONDS,
                "Waiting for the fsync that makes a request's batch durable (shared by concurrent requests).",
                l(),
                SECONDS_BUCKETS,
            ),
            replays: registry.counter(
                names::IDEMPOTENT_REPLAYS_TOTAL,
                "Requests answered from the idempotency window without appending.",
                l(),
            ),
        }
    }
}

/// Why a request was refused to protect the server or its readers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Overload {
    InFlightRequests,
    InFlightBytes,
    ConsumerLag,
    StorageFull,
}

impl Overload {
    const ALL: [Overload; 4] = [
        Overload::InFlightRequests,
        Overload::InFlightBytes,
        Overload::ConsumerLag,
        Overload::StorageFull,
    ];

    fn label(self) -> &'static str {
        match self {
            Overload::InFlightRequests => "in_flight_requests",
            Overload::InFlightBytes => "in_flight_bytes",
            Overload::ConsumerLag => "consumer_lag",
            Overload::StorageFull => "storage_full",
        }
    }
}

/// Refusals by [`Overload`] reason.
pub(crate) struct OverloadMetrics([Arc<Counter>; 4]);

impl OverloadMetrics {
    pub(crate) fn new(registry: &Registry) -> OverloadMetrics {
        OverloadMetrics(Overload::ALL.map(|reason| {
            registry.counter(
                names::OVERLOAD_REJECTIONS_TOTAL,
                "Requests refused to protect the server or its readers (503, 429 or 507), by reason.",
                labels(&[("reason", reason.label())]),
            )
        }))
    }

    pub(crate) fn count(&self, reason: Overload) {
        self.0[reason as usize].add(1);
    }
}
