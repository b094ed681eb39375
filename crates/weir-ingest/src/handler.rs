//! One ingest request, from its body to its answer: reading and bounding
//! the body, splitting it into records, the idempotency key, the append
//! and its fsync on a blocking thread ([`Job`]), and the answer for each
//! outcome; and the small endpoints `/metrics` and `/readyz`.

use super::*;

#[derive(Serialize)]
pub(super) struct Accepted<'a> {
    stream: &'a str,
    partition: u32,
    offsets: [u64; 2],
    accepted: usize,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<RecordError>,
    #[serde(skip_serializing_if = "is_zero")]
    error_count: usize,
}

pub(super) fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Serialize)]
pub(super) struct Rejected {
    errors: Vec<RecordError>,
    error_count: usize,
    accepted: usize,
}

#[derive(Serialize)]
pub(super) struct ErrorBody<'a> {
    error: &'a str,
}

pub(super) fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

pub(super) fn retry_after(mut r: Response, seconds: &'static str) -> Response {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    r
}

pub(super) fn unauthorized() -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}

pub(super) async fn ingest(
    State(state): State<Arc<IngestState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let started = Instant::now();
    let stream = state.streams.get(&name).cloned();
    let response = handle(&state, stream.as_ref(), &name, request).await;
    let requests = stream
        .as_ref()
        .map_or(&state.unknown_stream, |s| &s.metrics.requests);
    requests.answered(
        &state.registry,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    state.answered.fetch_add(1, Ordering::Relaxed);
    response
}

/// The checks before the body is read, the read, then the blocking part.
pub(super) async fn handle(
    state: &Arc<IngestState>,
    st: Option<&Arc<StreamState>>,
    name: &str,
    request: Request,
) -> Response {
    if let Some(token) = &state.bearer_token {
        if !authorized(request.headers(), token) {
            return unauthorized();
        }
    }
    let Some(st) = st else {
        return error(StatusCode::NOT_FOUND, &format!("unknown stream {name:?}"));
    };
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(format) = content_type.and_then(Format::from_content_type) else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/x-ndjson, application/jsonl, application/json or application/x-protobuf",
        );
    };
    let partial = match partial_param(request.uri().query()) {
        Ok(p) => p,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    // The header is ignored when the window is off (no journal to keep).
    let key = match request.headers().get(IDEMPOTENCY_KEY) {
        Some(v) if st.keys => {
            if let Err(message) = idempotency::check_key(v.as_bytes()) {
                return error(StatusCode::BAD_REQUEST, &message);
            }
            Some(idempotency::key_hash(v.as_bytes()))
        }
        _ => None,
    };
    if let Some(max) = state.max_lag {
        let lag = (state.lag)(&st.stream);
        if lag > max {
            state.overload.count(Overload::ConsumerLag);
            return retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "consumer lag of stream {name:?} is {lag} records, above the bound of {max}"
                    ),
                ),
                "1",
            );
        }
    }
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("body larger than {} bytes", state.max_body_bytes),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > state.max_body_bytes as u64) {
        return too_large();
    }

    // Admission: a request slot, and memory for the body before reading it.
    let overloaded = |reason: Overload, what: &str| {
        state.overload.count(reason);
        retry_after(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the server is at its limit of {what}; retry later"),
            ),
            "1",
        )
    };
    let Ok(slot) = state.requests.clone().try_acquire_owned() else {
        return overloaded(Overload::InFlightRequests, "requests in flight");
    };
    let reserve = declared.map_or(state.max_body_bytes, |n| n as usize);
    let Ok(mut memory) = state.memory.clone().try_acquire_many_owned(kib(reserve)) else {
        return overloaded(Overload::InFlightBytes, "memory for requests in flight");
    };
    let read = read_body(request.into_body(), reserve, state.max_body_bytes);
    let body = match tokio::time::timeout(state.limits.body_timeout, read).await {
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s",
                    state.limits.body_timeout.as_secs_f64()
                ),
            )
        }
        Ok(Ok(b)) => b,
        Ok(Err(None)) => return too_large(),
        Ok(Err(Some(e))) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the body: {e}"),
            )
        }
    };
    st.metrics.received_bytes.add(body.len() as u64);
    // An undeclared length reserved the limit: give back what it did not use.
    let used = kib(body.len()) as usize;
    if memory.num_permits() > used {
        drop(memory.split(memory.num_permits() - used));
    }

    // Checking the records and the append are CPU work and blocking I/O
    // (fsync): on the blocking pool, which answers through a channel so
    // that records stored for a client that is gone are counted.
    let job = Job {
        state: state.clone(),
        st: st.clone(),
        format,
        partial,
        key,
        body,
        _slot: slot,
        memory,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let counter = state.clone();
    let stream_name = st.name.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(Outcome::Appended { offsets, .. }) = tx.send(job.run()) {
            let n = offsets.end - offsets.start;
            counter.unanswered.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(
                stream = %stream_name,
                offsets = ?offsets,
                "records appended for a client that left before the answer"
            );
        }
    });
    let Ok(outcome) = rx.await else {
        tracing::error!(stream = %name, "append task failed");
        return error(StatusCode::INTERNAL_SERVER_ERROR, "append task failed");
    };
    outcome.into_response(state, st)
}

/// Reads a body of at most `max` bytes into one buffer of `expected`
/// bytes (its `Content-Length`), dropping each chunk once copied, so a
/// request holds its body once. `Err(None)` when it is larger than `max`.
pub(super) async fn read_body(
    mut body: axum::body::Body,
    expected: usize,
    max: usize,
) -> Result<Bytes, Option<axum::Error>> {
    let mut buf = BytesMut::with_capacity(expected.min(max));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Some)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// The blocking part of a request.
pub(super) struct Job {
    state: Arc<IngestState>,
    st: Arc<StreamState>,
    format: Format,
    partial: bool,
    key: Option<u128>,
    body: Bytes,
    /// Held until the append is done, also when the client left.
    _slot: OwnedSemaphorePermit,
    memory: OwnedSemaphorePermit,
}

pub(super) enum Outcome {
    Appended {
        offsets: Range<u64>,
        accepted: usize,
        errors: Vec<RecordError>,
        error_count: usize,
        replayed: bool,
    },
    Invalid {
        errors: Vec<RecordError>,
        error_count: usize,
    },
    Overloaded,
    InFlight,
    Mismatch,
    Failed(LogError),
}

impl Job {
    fn run(mut self) -> Outcome {
        // The batch's slices, 16 bytes a record: reserved like the body,
        // before they are allocated.
        let most = records::max_records(self.format, &self.body);
        match self
            .state
            .memory
            .clone()
            .try_acquire_many_owned(kib(most.saturating_mul(BYTES_PER_RECORD)))
        {
            Ok(more) => self.memory.merge(more),
            Err(_) => return Outcome::Overloaded,
        }
        let split = records::split(self.format, &self.body);
        self.st.metrics.rejected.add(split.error_count as u64);
        if split.error_count > 0 && (split.records.is_empty() || !self.partial) {
            return Outcome::Invalid {
                errors: split.errors,
                error_count: split.error_count,
            };
        }
        let fingerprint = self
            .key
            .map(|_| idempotency::fingerprint(self.format as u8, self.partial, &self.body));
        let st = &self.st;
        let partition = st.stream.partition(0);
        let count = split.records.len();
        let mut guard = lock(&st.append);
        if let (Some(idem), Some(key), Some(fp)) = (guard.as_ref(), self.key, fingerprint) {
            match idem.window.lookup(key, fp, idempotency::now_ms()) {
                Lookup::Absent => {}
                Lookup::InFlight => return Outcome::InFlight,
                Lookup::Mismatch => return Outcome::Mismatch,
                Lookup::Done { first, count } => {
                    st.metrics.replays.add(1);
                    return Outcome::Appended {
                        offsets: first..first + u64::from(count),
                        accepted: count as usize,
                        errors: split.errors,
                        error_count: split.error_count,
                        replayed: true,
                    };
                }
            }
        }
        if count == 0 {
            let end = partition.next_offset();
            return Outcome::Appended {
                offsets: end..end,
                accepted: 0,
                errors: split.errors,
                error_count: split.error_count,
                replayed: false,
            };
        }
        let first = partition.next_offset();
        let mut claimed = None;
        if let Some(idem) = guard.as_mut() {
            if let Err(e) = idem.before_append(first) {
                return Outcome::Failed(e);
            }
            if let (Some(key), Some(fp)) = (self.key, fingerprint) {
                let n = u32::try_from(count).unwrap_or(u32::MAX);
                if let Err(e) = idem.claim(key, fp, first, n, idempotency::now_ms()) {
                    return Outcome::Failed(e);
                }
                claimed = Some(key);
            }
        }
        let t = Instant::now();
        let appended = partition.append(&split.records);
        st.metrics.append.observe(t.elapsed().as_secs_f64());
        let offsets = match appended {
            Ok(o) => o,
            Err(e) => {
                if let (Some(idem), Some(key)) = (guard.as_mut(), claimed) {
                    idem.claim_failed(key);
                }
                return Outcome::Failed(e);
            }
        };
        if offsets.start != first {
            // Only another writer of the stream could do that.
            tracing::error!(
                stream = %st.name,
                expected = first,
                got = offsets.start,
                "the batch got other offsets than the idempotency journal recorded"
            );
        }
        drop(guard);
        if st.sync_each {
            let t = Instant::now();
            let synced = partition.flush();
            st.metrics.fsync.observe(t.elapsed().as_secs_f64());
            if let Err(e) = synced {
                if let (Some(idem), Some(key)) = (lock(&st.append).as_mut(), claimed) {
                    idem.window.abort(key);
                }
                return Outcome::Failed(e);
            }
        }
        if let (Some(idem), Some(key)) = (lock(&st.append).as_mut(), claimed) {
            idem.window.complete(key);
        }
        st.metrics.appended.add(count as u64);
        self.state
            .appended
            .fetch_add(count as u64, Ordering::Relaxed);
        tracing::debug!(stream = %st.name, records = count, ?offsets, "appended");
        Outcome::Appended {
            offsets,
            accepted: count,
            errors: split.errors,
            error_count: split.error_count,
            replayed: false,
        }
    }
}

impl Outcome {
    fn into_response(self, state: &IngestState, st: &StreamState) -> Response {
        match self {
            Outcome::Appended {
                offsets,
                accepted,
                errors,
                error_count,
                replayed,
            } => {
                let mut r = Json(Accepted {
                    stream: &st.name,
                    partition: 0,
                    offsets: [offsets.start, offsets.end],
                    accepted,
                    errors,
                    error_count,
                })
                .into_response();
                if replayed {
                    r.headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                }
                r
            }
            Outcome::Invalid {
                errors,
                error_count,
            } => (
                StatusCode::BAD_REQUEST,
                Json(Rejected {
                    errors,
                    error_count,
                    accepted: 0,
                }),
            )
                .into_response(),
            Outcome::Overloaded => {
                state.overload.count(Overload::InFlightBytes);
                retry_after(
                    error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is at its limit of memory for requests in flight; retry later",
                    ),
                    "1",
                )
            }
            Outcome::InFlight => retry_after(
                error(
                    StatusCode::CONFLICT,
                    "a request with this Idempotency-Key is being appended; retry later",
                ),
                "1",
            ),
            Outcome::Mismatch => error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "this Idempotency-Key was used for a different request (another body, Content-Type or partial)",
            ),
            Outcome::Failed(e @ LogError::BatchTooLarge { .. }) => {
                error(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string())
            }
            Outcome::Failed(e) => append_failed(state, st, &e),
        }
    }
}

/// `507` for a full disk, `500` otherwise; logged at most every 10 s per
/// stream. A failed fsync or a partition that refuses appends makes the
/// server not ready.
pub(super) fn append_failed(state: &IngestState, st: &StreamState, e: &LogError) -> Response {
    let full = storage_full(e);
    if !full
        && matches!(
            e,
            LogError::Failed { .. } | LogError::Io { op: "fsync", .. }
        )
    {
        lock(&st.failed).get_or_insert_with(|| e.to_string());
    }
    if let Some(suppressed) = st.errors.due() {
        tracing::error!(
            stream = %st.name,
            error = %e,
            failures_not_logged = suppressed,
            "append failed"
        );
    }
    if full {
        state.overload.count(Overload::StorageFull);
        retry_after(
            error(
                StatusCode::INSUFFICIENT_STORAGE,
                &format!("the disk is full, nothing was appended: {e}"),
            ),
            STORAGE_FULL_RETRY_AFTER,
        )
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("append failed: {e}"),
        )
    }
}

/// Whether an error, or one it was caused by, is a full disk or quota.
pub(super) fn storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) {
                return true;
            }
        }
        next = err.source();
    }
    false
}

pub(super) async fn metrics_text(
    State(state): State<Arc<IngestState>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = &state.bearer_token {
        if !authorized(&headers, token) {
            return unauthorized();
        }
    }
    // Collectors read files (stream sizes, /proc): off the async threads.
    let registry = state.registry.clone();
    match tokio::task::spawn_blocking(move || registry.render()).await {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

pub(super) async fn readyz(State(state): State<Arc<IngestState>>) -> Response {
    let why = state.readiness();
    if why.is_empty() {
        "ready\n".into_response()
    } else {
        let body: String = why.iter().map(|w| format!("not ready: {w}\n")).collect();
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// `partial` from the query string: absent means false.
pub(super) fn partial_param(query: Option<&str>) -> Result<bool, String> {
    let mut partial = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key == "partial" {
            partial = match value {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => return Err(format!("partial must be true or false, not {value:?}")),
            };
        }
    }
    Ok(partial)
}

/// Whether `headers` carry `Authorization: Bearer <token>`.
pub(super) fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
    else {
        return false;
    };
    let Some((scheme, given)) = value.split_at_checked(7) else {
        return false;
    };
    scheme.eq_ignore_ascii_case(b"bearer ") & constant_time_eq(given, token.as_bytes())
}

/// Compares without an early exit, so the time taken does not tell how
/// many leading bytes matched (it does depend on the lengths).
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    let n = a.len().max(b.len());
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn bearer_header() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer tok"),
        );
        assert!(authorized(&h, "tok"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer tok"),
        );
        assert!(authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic tok"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer to"));
        assert!(!authorized(&h, "tok"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(!authorized(&h, "tok"));
    }

    #[test]
    fn partial_query() {
        assert_eq!(partial_param(None), Ok(false));
        assert_eq!(partial_param(Some("partial=true")), Ok(true));
        assert_eq!(partial_param(Some("x=1&partial=1")), Ok(true));
        assert_eq!(partial_param(Some("partial=false")), Ok(false));
        assert_eq!(partial_param(Some("partial")), Ok(true));
        assert!(partial_param(Some("partial=yes")).is_err());
    }
}
