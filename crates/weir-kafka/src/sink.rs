//! The Kafka sink: each output row becomes a record whose key is the row's
//! output id (8 bytes, big-endian) and whose value is the row's JSON
//! object. The default partitioner hashes the key, so a replayed row lands
//! in the same partition as before.
//!
//! Two deliveries:
//!
//! - **Transactional** (exactly once for `read_committed` consumers): an
//!   epoch's records go in one transaction, committed at `prepare`. The
//!   commit precedes the checkpoint's durability, so a crash in between
//!   replays an epoch that is already in the topic: at open the sink reads
//!   the topic back (see [`crate::readback`]) from the offsets in its
//!   checkpoint part and skips the ids found there while the replay passes
//!   them. A commit whose outcome is unknown (timed out, retriable) is not
//!   retried: the producer is re-created, which fences the old one and so
//!   settles its transaction, then the epoch's ids are read back and only
//!   the missing ones re-sent in a new transaction — the remedy for torn
//!   transactions Jepsen gave in 2024. An abortable failure aborts and does
//!   the same; a fatal one is an error.
//! - **Idempotent** (at least once): librdkafka's idempotent producer, no
//!   transactions; `prepare` and `finish` wait for every delivery and fail
//!   on any failed one. After a crash a replayed row may appear twice, with
//!   the same key.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use weir_config::KafkaDelivery;
use weir_connect::{ConnectError, ConnectionState, ConnectorStatus, Output, SinkConnector};

use crate::client::{
    client_config, connect_error, creation_error, partition_count, WeirContext, METADATA_TIMEOUT,
    REQUEST_TIMEOUT,
};
use crate::part;
use crate::readback::{read_ids, ReadBack};

/// How long `init_transactions` may take (it waits for the coordinator to
/// settle a previous instance's open transaction).
const INIT_TIMEOUT: Duration = Duration::from_secs(60);

/// librdkafka's default `transaction.timeout.ms`.
const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times an epoch is re-sent after failed commits before the sink
/// gives up with an error.
const MAX_COMMIT_ATTEMPTS: u32 = 5;

/// While librdkafka's queue is full: how long to wait before trying again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(10);

/// What the delivery callbacks (on the producer's polling thread) tell the
/// sink: the highest offset delivered per partition, and failures.
struct Deliveries {
    /// Highest delivered offset per partition, -1 before any.
    max_offset: Vec<AtomicI64>,
    failed: AtomicU64,
    /// The first failure since the last check, in librdkafka's words.
    /// Locked only when a delivery fails.
    first_failure: Mutex<Option<String>>,
}

impl Deliveries {
    fn new(partitions: usize) -> Deliveries {
        Deliveries {
            max_offset: (0..partitions).map(|_| AtomicI64::new(-1)).collect(),
            failed: AtomicU64::new(0),
            first_failure: Mutex::new(None),
        }
    }

    /// Failures since the last call: their count and the first's words.
    fn take_failures(&self) -> Option<(u64, String)> {
        let failed = self.failed.swap(0, Ordering::AcqRel);
        if failed == 0 {
            return None;
        }
        let first = self
            .first_failure
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_default();
        Some((failed, first))
    }
}

/// The producer's context: the shared [`WeirContext`] plus delivery
/// tracking.
struct SinkContext {
    base: WeirContext,
    deliveries: Arc<Deliveries>,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(message) => {
                if let Some(max) = self.deliveries.max_offset.get(message.partition() as usize) {
                    max.fetch_max(message.offset(), Ordering::AcqRel);
                }
                self.base.connection_alive();
            }
            Err((error, message)) => {
                if self.deliveries.failed.fetch_add(1, Ordering::AcqRel) == 0 {
                    if let Ok(mut first) = self.deliveries.first_failure.lock() {
                        *first = Some(format!("{error} (partition {})", message.partition()));
                    }
                }
            }
        }
    }
}

/// The current epoch's records, kept until its transaction commits so
/// that they can be re-sent: ids and JSON rows back to back, as the engine
/// hands them over (no allocation per record).
#[derive(Default)]
struct Pending {
    ids: Vec<u64>,
    json: Vec<u8>,
    ends: Vec<usize>,
}

impl Pending {
    fn push(&mut self, id: u64, row: &[u8]) {
        self.json.extend_from_slice(row);
        self.ids.push(id);
        self.ends.push(self.json.len());
    }

    fn rows(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        let mut start = 0;
        self.ids.iter().zip(&self.ends).map(move |(&id, &end)| {
            let row = &self.json[start..end];
            start = end;
            (id, row)
        })
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.json.clear();
        self.ends.clear();
    }
}

/// How a failed transactional call is to be handled (librdkafka's
/// classification of transactional errors).
enum TxnFailure {
    /// The producer is unusable (fenced by another instance, not
    /// authorised): the sink fails.
    Fatal(String),
    /// The transaction failed and must be aborted.
    Abortable(String),
    /// The outcome is unknown (timed out, retriable): the transaction may
    /// still commit in the background.
    Indefinite(String),
}

fn classify(error: KafkaError) -> TxnFailure {
    match &error {
        KafkaError::Transaction(e) if e.is_fatal() => TxnFailure::Fatal(error.to_string()),
        KafkaError::Transaction(e) if e.txn_requires_abort() => {
            TxnFailure::Abortable(error.to_string())
        }
        _ => TxnFailure::Indefinite(error.to_string()),
    }
}

type Sink = ThreadedProducer<SinkContext>;

pub(crate) struct KafkaSinkConnector {
    label: String,
    brokers: String,
    topic: String,
    transactional: bool,
    transactional_id: String,
    checkpointing: bool,
    /// How long a commit or abort may take: `transaction.timeout.ms`, past
    /// which the broker aborts the transaction anyway. (librdkafka's "-1"
    /// would wait without end on a coordinator that keeps failing.)
    transaction_timeout: Duration,
    /// The producer's configuration, kept to re-create it and for
    /// read-backs.
    config: ClientConfig,
    producer: Sink,
    deliveries: Arc<Deliveries>,
    status: Arc<ConnectorStatus>,
    /// Whether a transaction is open.
    in_transaction: bool,
    /// Per partition, an offset at or before every record this sink may
    /// write from now on: the checkpoint part, where a read-back after a
    /// restart starts.
    committed_end: Vec<i64>,
    pending: Pending,
    /// Ids found in the topic at open (committed after the checkpoint the
    /// sink restarted from): their replays are not sent again. Each is
    /// removed when its replay passes, so the set empties as the replay
    /// catches up; 8 bytes per id plus the table's overhead meanwhile.
    skip: HashSet<u64>,
}

fn create_producer(
    config: &ClientConfig,
    label: &str,
    brokers: &str,
    status: &Arc<ConnectorStatus>,
    deliveries: &Arc<Deliveries>,
) -> Result<Sink, ConnectError> {
    let context = SinkContext {
        base: WeirContext::new(label.to_string(), brokers.to_string(), status.clone()),
        deliveries: deliveries.clone(),
    };
    config
        .create_with_context(context)
        .map_err(|e| creation_error(label, e))
}

pub(crate) fn open(
    name: &str,
    config: &weir_config::KafkaSink,
    checkpointing: bool,
    restored: Option<&[u8]>,
) -> Result<KafkaSinkConnector, ConnectError> {
    let label = format!("kafka sink {name:?}");
    let transactional = config.delivery == KafkaDelivery::Transactional;
    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);
    let mut client = client_config(
        &config.brokers,
        &[
            ("client.id", &format!("weir-{name}")),
            // The topic must exist (its partition count is part of the
            // checkpoint); a typo should not create a topic.
            ("allow.auto.create.topics", "false"),
        ],
        &config.properties,
        &config.credentials,
    );
    client.set("enable.idempotence", "true");
    if transactional {
        client.set("transactional.id", &config.transactional_id);
    }
    // The part is decoded before anything connects: a bad one is the
    // checkpoint's fault, whatever the brokers say.
    let restored_offsets = match (transactional && checkpointing, restored) {
        (true, Some(bytes)) => Some(part::decode(bytes)?),
        _ => None,
    };

    // Delivery tracking is sized by the partition count, known only from
    // metadata: a first producer, never used to send, asks for it.
    let deliveries = Arc::new(Deliveries::new(0));
    let probe = create_producer(&client, &label, &config.brokers, &status, &deliveries)?;
    let metadata = probe
        .client()
        .fetch_metadata(Some(&config.topic), METADATA_TIMEOUT)
        .map_err(|e| connect_error(&probe.context().base, "metadata request", &e))?;
    let partitions = partition_count(&metadata, &config.topic, &config.brokers)?;
    drop(probe);

    let deliveries = Arc::new(Deliveries::new(partitions));
    let producer = create_producer(&client, &label, &config.brokers, &status, &deliveries)?;
    let transaction_timeout = client
        .get("transaction.timeout.ms")
        .and_then(|ms| ms.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_TRANSACTION_TIMEOUT);
    let mut sink = KafkaSinkConnector {
        label,
        brokers: config.brokers.clone(),
        topic: config.topic.clone(),
        transactional,
        transactional_id: config.transactional_id.clone(),
        checkpointing,
        transaction_timeout,
        config: client,
        producer,
        deliveries,
        status,
        in_transaction: false,
        committed_end: vec![0; partitions],
        pending: Pending::default(),
        skip: HashSet::new(),
    };
    if transactional {
        sink.init_transactions()?;
        sink.committed_end = if checkpointing {
            sink.read_back_replays(restored_offsets.as_deref(), partitions)?
        } else {
            sink.end_offsets(partitions)?
        };
    }
    sink.status.set(ConnectionState::Connected);
    tracing::info!(
        connector = %sink.label,
        "writing kafka topic {:?} ({partitions} partitions) on {}, {}",
        sink.topic,
        sink.brokers,
        if transactional {
            format!("transactional (transactional.id {:?})", sink.transactional_id)
        } else {
            "idempotent".to_string()
        }
    );
    Ok(sink)
}

impl KafkaSinkConnector {
    fn broker_error(&self, message: String) -> ConnectError {
        ConnectError::Broker {
            address: self.brokers.clone(),
            message,
        }
    }

    /// Registers the transactional id with its coordinator; this fences any
    /// earlier producer with the same id and settles its open transaction.
    fn init_transactions(&self) -> Result<(), ConnectError> {
        self.producer
            .init_transactions(INIT_TIMEOUT)
            .map_err(|e| match classify(e) {
                TxnFailure::Indefinite(m) => ConnectError::Connect {
                    address: self.brokers.clone(),
                    message: format!(
                        "initialising transactions for transactional.id {:?}: {m}",
                        self.transactional_id
                    ),
                },
                TxnFailure::Fatal(m) | TxnFailure::Abortable(m) => self.broker_error(format!(
                    "initialising transactions for transactional.id {:?}: {m}",
                    self.transactional_id
                )),
            })
    }

    /// Each partition's end offset now (high watermark).
    fn end_offsets(&self, partitions: usize) -> Result<Vec<i64>, ConnectError> {
        (0..partitions)
            .map(|partition| {
                self.producer
                    .client()
                    .fetch_watermarks(&self.topic, partition as i32, REQUEST_TIMEOUT)
                    .map(|(_, high)| high)
                    .map_err(|e| {
                        self.broker_error(format!("end offset of {}[{partition}]: {e}", self.topic))
                    })
            })
            .collect()
    }

    fn read_back(&self, from: &[i64], found: impl FnMut(u64)) -> Result<Vec<i64>, ConnectError> {
        let context = WeirContext::new(
            format!("{} read-back", self.label),
            self.brokers.clone(),
            // Its own status: the read-back's connection is not the sink's.
            Arc::new(ConnectorStatus::default()),
        );
        read_ids(
            &self.config,
            context,
            &format!("{}.weir-read-back", self.transactional_id),
            &ReadBack {
                topic: &self.topic,
                from,
            },
            found,
        )
    }

    /// At open under checkpoints: collects the ids committed after the
    /// restored checkpoint (from its part's offsets) or, without one, all
    /// ids in the topic, since a run that crashed before its first
    /// checkpoint may have committed epochs the replay produces again.
    /// Returns where the read-back ended, the new floor for the part.
    fn read_back_replays(
        &mut self,
        restored: Option<&[i64]>,
        partitions: usize,
    ) -> Result<Vec<i64>, ConnectError> {
        let mut from = vec![0i64; partitions];
        if let Some(offsets) = restored {
            if offsets.len() > partitions {
                return Err(ConnectError::Checkpoint(format!(
                    "the checkpoint holds offsets for {} partitions of kafka topic {:?}, \
                     which has {partitions}",
                    offsets.len(),
                    self.topic
                )));
            }
            // Partitions added since the checkpoint are read from the start.
            from[..offsets.len()].copy_from_slice(offsets);
        }
        let mut skip = HashSet::new();
        let ends = self.read_back(&from, |id| {
            skip.insert(id);
        })?;
        if !skip.is_empty() {
            tracing::info!(
                connector = %self.label,
                "{} records are already in kafka topic {:?} past the {}; \
                 their replays will not be sent again",
                skip.len(),
                self.topic,
                if restored.is_some() { "checkpoint" } else { "start" }
            );
        }
        self.skip = skip;
        Ok(ends.iter().zip(&from).map(|(&e, &f)| e.max(f)).collect())
    }

    /// Sends one record, waiting while librdkafka's queue is full (it
    /// drains as deliveries complete or time out, so this ends).
    fn send(producer: &Sink, topic: &str, id: u64, row: &[u8]) -> Result<(), KafkaError> {
        let key = id.to_be_bytes();
        let mut record = BaseRecord::to(topic).key(&key).payload(row);
        loop {
            match producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(QUEUE_FULL_WAIT);
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    fn produce_error(&self, e: KafkaError) -> ConnectError {
        self.broker_error(format!("producing to kafka topic {:?}: {e}", self.topic))
    }

    fn begin(&mut self) -> Result<(), ConnectError> {
        if !self.in_transaction {
            self.producer.begin_transaction().map_err(|e| {
                self.broker_error(format!(
                    "beginning a transaction (transactional.id {:?}): {e}",
                    self.transactional_id
                ))
            })?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Commits the open transaction; on failure settles it (see the module
    /// docs) so that every pending record is in the topic exactly once.
    fn commit_transaction(&mut self, epoch: u64) -> Result<(), ConnectError> {
        if !self.in_transaction {
            return Ok(());
        }
        let mut attempt = 1;
        let mut outcome = self.producer.commit_transaction(self.transaction_timeout);
        loop {
            self.in_transaction = false;
            let failure = match outcome {
                Ok(()) => break,
                Err(e) => classify(e),
            };
            self.settle(epoch, failure)?;
            if attempt == MAX_COMMIT_ATTEMPTS {
                return Err(self.broker_error(format!(
                    "epoch {epoch}: transaction not committed after {attempt} attempts"
                )));
            }
            attempt += 1;
            // Which of the epoch's records made it is known only to the
            // topic: read them back, re-send the rest.
            let wanted: HashSet<u64> = self.pending.ids.iter().copied().collect();
            let mut present = HashSet::new();
            let from = self.committed_end.clone();
            self.read_back(&from, |id| {
                if wanted.contains(&id) {
                    present.insert(id);
                }
            })?;
            let missing = self.pending.ids.len() - present.len();
            tracing::info!(
                connector = %self.label,
                "epoch {epoch}: {} of {} records found committed; re-sending {missing}",
                present.len(),
                self.pending.ids.len()
            );
            if missing == 0 {
                break;
            }
            self.begin()?;
            for (id, row) in self.pending.rows() {
                if !present.contains(&id) {
                    Self::send(&self.producer, &self.topic, id, row)
                        .map_err(|e| self.produce_error(e))?;
                }
            }
            outcome = self.producer.commit_transaction(self.transaction_timeout);
        }
        // Every pending record is committed: the part moves past them.
        for (end, max) in self
            .committed_end
            .iter_mut()
            .zip(&self.deliveries.max_offset)
        {
            *end = (*end).max(max.load(Ordering::Acquire) + 1);
        }
        // Failures of records that a later attempt re-sent are settled.
        let _ = self.deliveries.take_failures();
        self.pending.clear();
        Ok(())
    }

    /// After a failed commit: leaves no transaction open on this producer
    /// (aborting it, or re-creating the producer when its outcome is
    /// unknown); a fatal failure is the sink's end.
    fn settle(&mut self, epoch: u64, failure: TxnFailure) -> Result<(), ConnectError> {
        match failure {
            TxnFailure::Fatal(m) => {
                self.status.set(ConnectionState::Closed);
                Err(self.broker_error(format!(
                    "epoch {epoch}: committing the transaction failed fatally \
                     (transactional.id {:?}): {m}",
                    self.transactional_id
                )))
            }
            TxnFailure::Abortable(m) => {
                tracing::warn!(connector = %self.label, "epoch {epoch}: transaction failed, aborting: {m}");
                match self.producer.abort_transaction(self.transaction_timeout) {
                    Ok(()) => Ok(()),
                    Err(e) => match classify(e) {
                        TxnFailure::Fatal(m) => self.settle(epoch, TxnFailure::Fatal(m)),
                        TxnFailure::Abortable(m) | TxnFailure::Indefinite(m) => {
                            self.recreate_producer(epoch, &format!("abort failed: {m}"))
                        }
                    },
                }
            }
            TxnFailure::Indefinite(m) => {
                self.recreate_producer(epoch, &format!("commit outcome unknown: {m}"))
            }
        }
    }

    /// Replaces the producer by a new one with the same transactional id.
    /// Its `init_transactions` fences the old producer: the coordinator
    /// completes or aborts the transaction the old one left, so that a
    /// read-back afterwards sees its final outcome. Retrying the commit on
    /// the old producer instead could leave the transaction torn.
    fn recreate_producer(&mut self, epoch: u64, reason: &str) -> Result<(), ConnectError> {
        self.status.set(ConnectionState::Reconnecting);
        tracing::warn!(
            connector = %self.label,
            "epoch {epoch}: re-creating the producer for transactional.id {:?} on {}: {reason}",
            self.transactional_id,
            self.brokers
        );
        let fresh = create_producer(
            &self.config,
            &self.label,
            &self.brokers,
            &self.status,
            &self.deliveries,
        )?;
        // Dropping the old producer purges what it still had in flight.
        drop(std::mem::replace(&mut self.producer, fresh));
        self.init_transactions()?;
        self.status.set(ConnectionState::Connected);
        tracing::info!(
            connector = %self.label,
            "producer for transactional.id {:?} re-created on {}",
            self.transactional_id,
            self.brokers
        );
        Ok(())
    }

    /// Idempotent delivery: waits until every record sent is acknowledged
    /// or has failed (bounded by `message.timeout.ms`), and fails on any
    /// failure.
    fn flush_idempotent(&self) -> Result<(), ConnectError> {
        self.producer.flush(Timeout::Never).map_err(|e| {
            self.broker_error(format!("flushing to kafka topic {:?}: {e}", self.topic))
        })?;
        if let Some((failed, first)) = self.deliveries.take_failures() {
            return Err(self.broker_error(format!(
                "{failed} records to kafka topic {:?} were not delivered; first: {first}",
                self.topic
            )));
        }
        Ok(())
    }
}

impl SinkConnector for KafkaSinkConnector {
    fn write(&mut self, epoch: u64, out: &Output<'_>) -> Result<(), ConnectError> {
        if out.is_empty() {
            return Ok(());
        }
        if self.transactional {
            self.begin()?;
        }
        for i in 0..out.len() {
            let id = out.ids[i];
            if !self.skip.is_empty() && self.skip.remove(&id) {
                if self.skip.is_empty() {
                    // Give the memory back once the replay is past them all.
                    self.skip = HashSet::new();
                }
                continue;
            }
            let row = out.json_row(i);
            if self.transactional {
                self.pending.push(id, row);
            }
            Self::send(&self.producer, &self.topic, id, row).map_err(|e| self.produce_error(e))?;
        }
        // Without checkpoints nothing calls `prepare`: each batch is its own
        // transaction, visible to readers at once.
        if self.transactional && !self.checkpointing {
            self.commit_transaction(epoch)?;
        }
        Ok(())
    }

    fn prepare(&mut self, epoch: u64) -> Result<Vec<u8>, ConnectError> {
        if self.transactional {
            self.commit_transaction(epoch)?;
            Ok(part::encode(&self.committed_end))
        } else {
            self.flush_idempotent()?;
            Ok(Vec::new())
        }
    }

    fn commit(&mut self, _epoch: u64) -> Result<(), ConnectError> {
        // The transaction committed at `prepare`; restarts are handled by
        // the read-back.
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        let result = if self.transactional {
            self.commit_transaction(0)
        } else {
            self.flush_idempotent()
        };
        self.status.set(ConnectionState::Closed);
        result
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        Arc::clone(&self.status)
    }
}

impl Drop for KafkaSinkConnector {
    fn drop(&mut self) {
        self.status.set(ConnectionState::Closed);
    }
}
