//! The Kafka source: every partition of one topic, assigned by weir, or
//! one task's partition of a pipeline split into tasks.
//!
//! An unsplit pipeline assigns itself all partitions (no consumer-group
//! rebalancing): one pipeline instance owns the topic, as its keyed state
//! is not split by source partition. A task reads only its partition; which
//! process runs it is the consumer group's decision (`crate::group`), and
//! its offsets are committed through that process's group member.
//!
//! A record's partition is its Kafka partition and its
//! offset its Kafka offset, so a replay from a checkpoint's offsets yields
//! the same positions. Under `read_committed` (the default) transaction
//! markers and aborted records are skipped, which leaves gaps in offsets;
//! the engine expects gaps.
//!
//! Offsets are committed to the consumer group only once a checkpoint
//! holding them is durable, and only for visibility in Kafka tooling: the
//! checkpoint is the truth, and a restart without one starts from the
//! group's committed offsets (else the earliest).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use weir_connect::{
    Backoff, ConnectError, ConnectionState, ConnectorStatus, Polled, Received, SourceConnector,
};

use crate::client::{
    client_config, connect_error, creation_error, partition_count, WeirContext, METADATA_TIMEOUT,
    REQUEST_TIMEOUT,
};

impl ConsumerContext for WeirContext {
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(
                connector = %self.label,
                partitions = offsets.count(),
                "kafka offsets committed to the consumer group"
            ),
            // Not fatal: the checkpoint holds the offsets, and the next
            // checkpoint commits again.
            Err(e) => tracing::warn!(
                connector = %self.label,
                brokers = %self.brokers,
                "committing kafka offsets to the consumer group failed: {e}"
            ),
        }
    }
}

/// When draining: where each partition ends and whether it got there.
struct Drain {
    /// End offset per partition listed at open (under `read_committed`, the
    /// last stable offset: everything committed by then).
    ends: Vec<i64>,
    /// Whether the partition has been read to its end.
    reached: Vec<bool>,
    /// Partitions not yet at their end.
    remaining: usize,
}

impl Drain {
    fn reach(&mut self, partition: usize) {
        if let Some(reached) = self.reached.get_mut(partition) {
            if !*reached {
                *reached = true;
                self.remaining -= 1;
            }
        }
    }
}

/// Which partitions a source reads, and who commits its offsets.
#[derive(Default)]
pub(crate) struct Scope {
    /// One task's partition (else all of them).
    pub task: Option<u32>,
    /// The group member that owns the task: offsets are committed through
    /// it (a consumer outside the group's membership may not commit).
    pub group: Option<crate::KafkaGroup>,
}

impl Scope {
    fn reads(&self, partition: usize) -> bool {
        self.task.is_none_or(|t| t as usize == partition)
    }
}

pub(crate) struct KafkaSourceConnector {
    label: String,
    topic: String,
    /// Shared with the checkpoint thread, which commits offsets through it
    /// (librdkafka's commit is thread-safe and, asynchronous, does not
    /// block that thread); its result comes back through this poll.
    consumer: Arc<BaseConsumer<WeirContext>>,
    partitions: u32,
    /// Next offset per partition: after the last record delivered, or
    /// where the partition started (the checkpoint's offset, the group's
    /// committed one, or the log start offset at open).
    next: Vec<u64>,
    drain: Option<Drain>,
    status: Arc<ConnectorStatus>,
    /// While reconnecting: when to ask the brokers for metadata next, to
    /// notice they are back on a topic with nothing new to read.
    probe: Backoff,
    next_probe: Option<Instant>,
    scope: Arc<Scope>,
}

pub(crate) fn open(
    name: &str,
    config: &weir_config::KafkaSource,
    start: Option<&[u64]>,
    drain: bool,
    scope: Scope,
) -> Result<KafkaSourceConnector, ConnectError> {
    let label = match scope.task {
        Some(t) => format!("kafka source {name:?} (task {t})"),
        None => format!("kafka source {name:?}"),
    };
    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);
    let mut client = client_config(
        &config.brokers,
        &[
            ("isolation.level", "read_committed"),
            ("auto.offset.reset", "earliest"),
            ("client.id", &format!("weir-{name}")),
        ],
        &config.properties,
        &config.credentials,
    );
    // weir commits only checkpointed offsets, itself.
    client
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", if drain { "true" } else { "false" });
    let context = WeirContext::new(label.clone(), config.brokers.clone(), status.clone());
    let consumer: BaseConsumer<WeirContext> = client
        .create_with_context(context)
        .map_err(|e| creation_error(&label, e))?;
    let context = consumer.context();

    let metadata = consumer
        .fetch_metadata(Some(&config.topic), METADATA_TIMEOUT)
        .map_err(|e| {
            // librdkafka's logs (why connecting failed) arrive as events on
            // the consumer's queue; serve those already there so that the
            // error carries its words.
            for _ in 0..64 {
                let _ = consumer.poll(Duration::ZERO);
            }
            connect_error(context, "metadata request", &e)
        })?;
    let partitions = partition_count(&metadata, &config.topic, &config.brokers)?;
    if let Some(task) = scope.task.filter(|&t| t as usize >= partitions) {
        return Err(ConnectError::Config(format!(
            "task {task} reads partition {task} of kafka topic {:?}, which has {partitions}",
            config.topic
        )));
    }
    let broker_error = |what: &str, e: KafkaError| ConnectError::Broker {
        address: config.brokers.clone(),
        message: format!("{what} of kafka topic {:?}: {e}", config.topic),
    };

    let mut assignment = TopicPartitionList::with_capacity(partitions);
    let mut next = Vec::with_capacity(partitions);
    match start {
        Some(checkpoint) => {
            if checkpoint.len() != partitions {
                return Err(ConnectError::Checkpoint(format!(
                    "the checkpoint holds offsets for {} partitions of kafka topic {:?}, \
                     which has {partitions}",
                    checkpoint.len(),
                    config.topic
                )));
            }
            for (partition, &offset) in checkpoint.iter().enumerate() {
                let offset = i64::try_from(offset).map_err(|_| {
                    ConnectError::Checkpoint(format!(
                        "checkpoint offset {offset} of {}[{partition}] is out of range",
                        config.topic
                    ))
                })?;
                if scope.reads(partition) {
                    assignment
                        .add_partition_offset(
                            &config.topic,
                            partition as i32,
                            Offset::Offset(offset),
                        )
                        .map_err(|e| broker_error("assignment", e))?;
                }
                next.push(offset as u64);
            }
        }
        None => {
            let mut wanted = TopicPartitionList::with_capacity(partitions);
            for partition in (0..partitions).filter(|&p| scope.reads(p)) {
                wanted.add_partition(&config.topic, partition as i32);
            }
            let committed = consumer
                .committed_offsets(wanted, REQUEST_TIMEOUT)
                .map_err(|e| broker_error("committed offsets of the consumer group", e))?;
            for partition in 0..partitions {
                if !scope.reads(partition) {
                    // Another task's: never read, never committed.
                    next.push(0);
                    continue;
                }
                // No committed offset (`Invalid`) starts at the earliest,
                // made concrete as the log start offset now, so that the
                // position is a real offset before any record arrives.
                let offset = match committed
                    .find_partition(&config.topic, partition as i32)
                    .map(|e| e.offset())
                {
                    Some(Offset::Offset(o)) if o >= 0 => o,
                    _ => {
                        consumer
                            .fetch_watermarks(&config.topic, partition as i32, REQUEST_TIMEOUT)
                            .map_err(|e| {
                                broker_error(&format!("start offset of partition {partition}"), e)
                            })?
                            .0
                    }
                };
                assignment
                    .add_partition_offset(&config.topic, partition as i32, Offset::Offset(offset))
                    .map_err(|e| broker_error("assignment", e))?;
                next.push(offset.max(0) as u64);
            }
        }
    }

    let drain = if drain {
        let mut ends = Vec::with_capacity(partitions);
        for partition in 0..partitions {
            if !scope.reads(partition) {
                ends.push(0);
                continue;
            }
            let (_, high) = consumer
                .fetch_watermarks(&config.topic, partition as i32, REQUEST_TIMEOUT)
                .map_err(|e| broker_error(&format!("end offset of partition {partition}"), e))?;
            ends.push(high);
        }
        let mut drain = Drain {
            reached: vec![false; partitions],
            remaining: partitions,
            ends,
        };
        // A partition whose start is already at its end is done, and so
        // is one this source does not read.
        for (partition, &start) in next.iter().enumerate() {
            if !scope.reads(partition) || start as i64 >= drain.ends[partition] {
                drain.reach(partition);
            }
        }
        Some(drain)
    } else {
        None
    };

    consumer
        .assign(&assignment)
        .map_err(|e| broker_error("assignment", e))?;
    status.set(ConnectionState::Connected);
    tracing::info!(
        connector = %label,
        "reading kafka topic {:?} ({}) from {}{}",
        config.topic,
        match scope.task {
            Some(t) => format!("partition {t} of {partitions}"),
            None => format!("{partitions} partitions"),
        },
        config.brokers,
        if start.is_some() { " at the checkpoint's offsets" } else { "" }
    );
    Ok(KafkaSourceConnector {
        label,
        topic: config.topic.clone(),
        consumer: Arc::new(consumer),
        partitions: partitions as u32,
        next,
        drain,
        status,
        probe: Backoff::reconnect(),
        next_probe: None,
        scope: Arc::new(scope),
    })
}

impl KafkaSourceConnector {
    fn drained(&self) -> bool {
        self.drain.as_ref().is_some_and(|d| d.remaining == 0)
    }

    /// A record at `offset` of `partition` was delivered.
    fn delivered(&mut self, partition: usize, offset: i64) {
        if let Some(next) = self.next.get_mut(partition) {
            *next = offset as u64 + 1;
        }
        if let Some(drain) = &mut self.drain {
            if drain
                .ends
                .get(partition)
                .is_some_and(|&end| offset + 1 >= end)
            {
                drain.reach(partition);
            }
        }
    }

    /// While reconnecting: a metadata request on the backoff's schedule
    /// tells whether the brokers are back (a topic with nothing new to read
    /// gives no other sign). Its timeout is bounded by the poll's wait, so
    /// a poll never overruns.
    fn probe_brokers(&mut self, time_left: Duration) {
        if self.status.state() != ConnectionState::Reconnecting || time_left.is_zero() {
            return;
        }
        let now = Instant::now();
        if self.next_probe.is_some_and(|at| now < at) {
            return;
        }
        match self
            .consumer
            .fetch_metadata(Some(&self.topic), time_left.min(Duration::from_secs(2)))
        {
            Ok(_) => {
                self.probe.reset();
                self.next_probe = None;
                self.consumer.context().connection_alive();
            }
            Err(_) => self.next_probe = Some(Instant::now() + self.probe.next_delay()),
        }
    }
}

impl SourceConnector for KafkaSourceConnector {
    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn poll(
        &mut self,
        out: &mut Received,
        max: usize,
        wait: Duration,
    ) -> Result<Polled, ConnectError> {
        if self.drained() {
            return Ok(Polled::End);
        }
        let deadline = Instant::now() + wait;
        self.probe_brokers(wait);
        let mut got = 0usize;
        while got < max {
            // Once something arrived, take only what is already here.
            let timeout = if got > 0 {
                Duration::ZERO
            } else {
                deadline.saturating_duration_since(Instant::now())
            };
            match self.consumer.poll(timeout) {
                Some(Ok(message)) => {
                    let partition = message.partition();
                    let offset = message.offset();
                    // Negative partitions or offsets do not occur on fetched
                    // messages; skipping one keeps a broken broker from
                    // producing a bogus position.
                    if partition < 0 || offset < 0 {
                        tracing::warn!(connector = %self.label, partition, offset, "kafka message without a valid position skipped");
                        continue;
                    }
                    out.push(
                        partition as u32,
                        offset as u64,
                        message.payload().unwrap_or_default(),
                    );
                    got += 1;
                    self.delivered(partition as usize, offset);
                    self.consumer.context().connection_alive();
                }
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(drain) = &mut self.drain {
                        drain.reach(partition as usize);
                        if drain.remaining == 0 {
                            break;
                        }
                    }
                }
                Some(Err(KafkaError::MessageConsumption(code))) => {
                    self.consumer
                        .context()
                        .client_error(code, &code.to_string());
                }
                Some(Err(KafkaError::MessageConsumptionFatal(code))) => {
                    self.status.set(ConnectionState::Closed);
                    return Err(ConnectError::Broker {
                        address: self.consumer.context().brokers.clone(),
                        message: format!(
                            "fatal error consuming kafka topic {:?}: {code}",
                            self.topic
                        ),
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(connector = %self.label, "kafka consumer: {e}");
                }
                // Nothing within the timeout, or an event (a commit result)
                // was served: wait on until the deadline.
                None => {
                    if got > 0 || Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        if got > 0 {
            return Ok(Polled::Records);
        }
        if self.drained() {
            return Ok(Polled::End);
        }
        Ok(Polled::Idle)
    }

    fn position(&self) -> Vec<u64> {
        self.next.clone()
    }

    fn on_checkpoint(&mut self) -> Box<dyn FnMut(&[u64]) + Send> {
        let consumer = Arc::clone(&self.consumer);
        let scope = Arc::clone(&self.scope);
        let topic = self.topic.clone();
        let partitions = self.partitions as usize;
        let label = self.label.clone();
        Box::new(move |next: &[u64]| {
            if next.len() != partitions {
                tracing::warn!(
                    connector = %label,
                    "not committing offsets for {} partitions to a topic with {partitions}",
                    next.len()
                );
                return;
            }
            let mut offsets = TopicPartitionList::with_capacity(partitions);
            for (partition, &offset) in next.iter().enumerate() {
                if !scope.reads(partition) {
                    continue;
                }
                let Ok(offset) = i64::try_from(offset) else {
                    tracing::warn!(connector = %label, "offset {offset} out of range; not committed");
                    return;
                };
                // A task commits through its group member.
                if let (Some(group), Some(task)) = (&scope.group, scope.task) {
                    if let Err(e) = group.commit(task, offset) {
                        tracing::warn!(connector = %label, "committing kafka offsets failed: {e}");
                    }
                    return;
                }
                if let Err(e) =
                    offsets.add_partition_offset(&topic, partition as i32, Offset::Offset(offset))
                {
                    tracing::warn!(connector = %label, "offsets not committed: {e}");
                    return;
                }
            }
            // Asynchronous: the checkpoint thread must not wait on the
            // brokers; the outcome is logged by the polling thread.
            if let Err(e) = consumer.commit(&offsets, CommitMode::Async) {
                tracing::warn!(connector = %label, "committing kafka offsets failed: {e}");
            }
        })
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        Arc::clone(&self.status)
    }
}

impl Drop for KafkaSourceConnector {
    fn drop(&mut self) {
        self.status.set(ConnectionState::Closed);
    }
}
