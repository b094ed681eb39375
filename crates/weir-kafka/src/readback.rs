//! Reading back which output ids a topic already holds.
//!
//! The transactional sink commits an epoch's transaction at `prepare`,
//! before the checkpoint holding it is durable, and a torn commit leaves a
//! transaction's outcome unknown. In both cases the truth is in the topic:
//! a `read_committed` consumer reads the sink's records (key = output id,
//! 8 bytes big-endian) from given offsets up to the end and reports each id
//! it finds, so that the sink re-sends only what is missing.
//!
//! "The end" is each partition's end offset as listed at the start of the
//! read-back under `read_committed` (the last stable offset): everything
//! committed by then. A transaction of another producer left open on the
//! topic holds that offset back, and the read-back waits for it (bounded by
//! [`STALL_TIMEOUT`] without progress).

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weir_connect::ConnectError;

use crate::client::{creation_error, WeirContext, REQUEST_TIMEOUT};

/// A read-back fails when it makes no progress (no record, no end of
/// partition) for this long.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a read-back reads: the topic, its partition count and, per
/// partition, the first offset to read.
pub(crate) struct ReadBack<'a> {
    pub(crate) topic: &'a str,
    pub(crate) from: &'a [i64],
}

/// Reads every partition of `spec.topic` from `spec.from[p]` to its end as
/// listed now, calling `found(id)` for each record with an 8-byte key;
/// returns the end offset reached per partition.
///
/// `config` is the sink's client configuration (brokers, credentials,
/// properties); the read-back forces `read_committed`, a group id used for
/// nothing but the assignment, and no commits.
pub(crate) fn read_ids(
    config: &ClientConfig,
    context: WeirContext,
    group_id: &str,
    spec: &ReadBack<'_>,
    mut found: impl FnMut(u64),
) -> Result<Vec<i64>, ConnectError> {
    let brokers = context.brokers.clone();
    let broker_error = |what: String, e: KafkaError| ConnectError::Broker {
        address: brokers.clone(),
        message: format!("{what}: {e}"),
    };
    let mut config = config.clone();
    config
        .set("group.id", group_id)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer<WeirContext> = config
        .create_with_context(context)
        .map_err(|e| creation_error("kafka read-back consumer", e))?;

    let topic = spec.topic;
    let mut ends = Vec::with_capacity(spec.from.len());
    let mut done = Vec::with_capacity(spec.from.len());
    let mut assignment = TopicPartitionList::with_capacity(spec.from.len());
    for (partition, &from) in spec.from.iter().enumerate() {
        let partition = partition as i32;
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
            .map_err(|e| broker_error(format!("end offsets of {topic}[{partition}]"), e))?;
        let start = from.max(low);
        ends.push(high);
        done.push(start >= high);
        if start < high {
            assignment
                .add_partition_offset(topic, partition, Offset::Offset(start))
                .map_err(|e| broker_error(format!("read-back of {topic}[{partition}]"), e))?;
        }
    }
    let mut remaining = done.iter().filter(|d| !**d).count();
    if remaining == 0 {
        return Ok(ends);
    }
    consumer
        .assign(&assignment)
        .map_err(|e| broker_error(format!("assigning {topic} for read-back"), e))?;

    let mut last_progress = Instant::now();
    let mut mark_done = |partition: i32, done: &mut Vec<bool>| {
        if let Some(d) = done.get_mut(partition as usize) {
            if !*d {
                *d = true;
                remaining -= 1;
            }
        }
        remaining
    };
    loop {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                last_progress = Instant::now();
                if let Some(key) = message.key() {
                    if let Ok(bytes) = <[u8; 8]>::try_from(key) {
                        found(u64::from_be_bytes(bytes));
                    }
                }
                let partition = message.partition();
                let reached = message.offset() + 1;
                let end = ends.get(partition as usize).copied().unwrap_or(i64::MAX);
                if reached >= end && mark_done(partition, &mut done) == 0 {
                    return Ok(ends);
                }
            }
            // The fetcher reached the partition's end as it is now, which
            // is at or past the end listed above.
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                last_progress = Instant::now();
                if mark_done(partition, &mut done) == 0 {
                    return Ok(ends);
                }
            }
            Some(Err(e @ KafkaError::MessageConsumptionFatal(_))) => {
                return Err(broker_error(format!("reading back {topic}"), e));
            }
            Some(Err(e)) => {
                tracing::debug!(topic, "kafka read-back: {e}");
            }
            None => {}
        }
        if last_progress.elapsed() > STALL_TIMEOUT {
            return Err(ConnectError::Broker {
                address: brokers.clone(),
                message: format!(
                    "reading back {topic} (read_committed) made no progress for {}s; \
                     an open transaction of another producer holds back the topic's end, \
                     or the brokers are unreachable",
                    STALL_TIMEOUT.as_secs()
                ),
            });
        }
    }
}
