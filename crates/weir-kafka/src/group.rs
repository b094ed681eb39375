//! A pipeline split into tasks over a Kafka topic: which process runs which
//! task is decided by Kafka's consumer group protocol, as in Kafka Streams.
//!
//! Task N reads partition N of the topic (producers write a record to the
//! partition of its key's task), so owning task N is being assigned
//! partition N in the group. Each `weir run` process joins the group once
//! with a *member* consumer ([`KafkaGroup`]) that subscribes to the topic
//! under cooperative rebalancing (`cooperative-sticky`): a join or a death
//! moves only the partitions that must move, and the others keep running.
//! The member consumer never reads records (its partitions are paused as
//! soon as they are assigned); each task reads its partition through a
//! consumer of its own, assigned that one partition at its checkpoint's
//! offset ([`open_task_source`]), and commits its offsets through the
//! member, the group's member that owns the partition.
//!
//! A revoked partition's task is stopped inside the revocation callback,
//! before the callback returns (a last checkpoint, outputs committed): the
//! group hands the partition to its next owner only after that. A member
//! that is frozen or cut off past `session.timeout.ms` loses its partitions
//! without being asked; the group generation, which every rebalance raises,
//! is each task's fencing epoch, so the new owner's claim on the task's
//! checkpoint store refuses whatever the stale owner still writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use weir_connect::{ConnectError, ConnectionState, ConnectorStatus};

use crate::client::{
    client_config, connect_error, creation_error, partition_count, WeirContext, METADATA_TIMEOUT,
};

/// Called with the tasks (partitions) the group takes from this member;
/// must return only once they have stopped.
pub type OnRevoke = Box<dyn Fn(&[u32]) + Send + Sync>;

/// A task the group gave this member, with the generation it was given in
/// (the task's fencing epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The task (partition).
    pub task: u32,
    /// The group generation of the assignment (at least 1).
    pub epoch: u64,
}

/// The member consumer's context: librdkafka's logs and errors as every
/// weir client has them, plus the rebalance callbacks.
pub struct GroupContext {
    inner: WeirContext,
    topic: String,
    on_revoke: OnRevoke,
    /// Assignments made by the rebalance callback, taken by [`KafkaGroup::poll`].
    assigned: Mutex<Vec<Assigned>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        // A commit refused during a rebalance, or from a member the group
        // dropped, is routine here (the checkpoint holds the offsets); the
        // commit callback reports each failure once.
        if facility == "COMMITFAIL" {
            tracing::debug!(connector = %self.inner.label, "librdkafka {facility}: {message}");
            return;
        }
        self.inner.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.inner.error(error, reason);
    }
}

fn tasks_of(list: &TopicPartitionList, topic: &str) -> Vec<u32> {
    let mut tasks: Vec<u32> = list
        .elements_for_topic(topic)
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect();
    tasks.sort_unstable();
    tasks
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            let tasks = tasks_of(list, &self.topic);
            if tasks.is_empty() {
                return;
            }
            if consumer.assignment_lost() {
                tracing::error!(connector = %self.inner.label, ?tasks, "the consumer group took these tasks from this member (its session expired); stopping them");
            } else {
                tracing::info!(connector = %self.inner.label, ?tasks, "the consumer group moves these tasks to another member; stopping them");
            }
            // Blocks until the tasks have stopped: only then may the group
            // give their partitions to another member.
            (self.on_revoke)(&tasks);
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let tasks = tasks_of(list, &self.topic);
                if tasks.is_empty() {
                    return;
                }
                // The member reads nothing itself: each task has its own
                // consumer.
                if let Err(e) = consumer.pause(list) {
                    tracing::warn!(connector = %self.inner.label, "pausing the member's partitions failed: {e}");
                }
                let Some(generation) = generation(consumer) else {
                    tracing::error!(connector = %self.inner.label, ?tasks, "the consumer group generation cannot be read; the tasks are not started");
                    return;
                };
                tracing::info!(connector = %self.inner.label, ?tasks, generation, "the consumer group assigned these tasks to this member");
                if let Ok(mut assigned) = self.assigned.lock() {
                    assigned.extend(tasks.into_iter().map(|task| Assigned {
                        task,
                        epoch: generation,
                    }));
                }
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(connector = %self.inner.label, "consumer group rebalance failed: {e}")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => tracing::debug!(
                connector = %self.inner.label,
                partitions = offsets.count(),
                "kafka offsets committed to the consumer group"
            ),
            // Not fatal: the checkpoint holds the offsets, and the next
            // checkpoint commits again.
            Err(e) => tracing::info!(
                connector = %self.inner.label,
                "committing kafka offsets to the consumer group failed: {e}"
            ),
        }
    }
}

/// The magic that opens librdkafka's serialized consumer group metadata
/// (`rd_kafka_consumer_group_metadata_write`), which the generation follows
/// as a native-endian 32-bit integer.
const GROUP_METADATA_MAGIC: &[u8] = b"CGMDv2:";

/// The consumer's current group generation, from its group metadata;
/// `None` before it has joined.
fn generation<C: ConsumerContext>(consumer: &BaseConsumer<C>) -> Option<u64> {
    use rdkafka::bindings as rd;
    // rdkafka exposes the group metadata only as an opaque handle (for
    // transactions); librdkafka's serialization of it carries the
    // generation at a fixed place.
    let bytes = unsafe {
        // SAFETY: the client pointer is valid while `consumer` lives; the
        // metadata handle and the buffer are freed with the functions
        // librdkafka documents for them, and the slice is copied before
        // the buffer is freed.
        let metadata = rd::rd_kafka_consumer_group_metadata(consumer.client().native_ptr());
        if metadata.is_null() {
            return None;
        }
        let mut buffer: *mut std::ffi::c_void = std::ptr::null_mut();
        let mut size: usize = 0;
        let error = rd::rd_kafka_consumer_group_metadata_write(metadata, &mut buffer, &mut size);
        rd::rd_kafka_consumer_group_metadata_destroy(metadata);
        if !error.is_null() {
            rd::rd_kafka_error_destroy(error);
            return None;
        }
        if buffer.is_null() {
            return None;
        }
        let bytes = std::slice::from_raw_parts(buffer as *const u8, size).to_vec();
        rd::rd_kafka_mem_free(std::ptr::null_mut(), buffer);
        bytes
    };
    parse_generation(&bytes)
}

fn parse_generation(bytes: &[u8]) -> Option<u64> {
    let rest = bytes.strip_prefix(GROUP_METADATA_MAGIC)?;
    let generation = i32::from_ne_bytes(rest.get(..4)?.try_into().ok()?);
    u64::try_from(generation).ok().filter(|&g| g > 0)
}

/// This process's membership in the group that shares a pipeline's tasks.
/// Cheap to clone; every clone is the same member.
#[derive(Clone)]
pub struct KafkaGroup {
    consumer: Arc<BaseConsumer<GroupContext>>,
    topic: String,
    group: String,
}

impl KafkaGroup {
    /// Joins consumer group `config.group_id` for `config.topic`, which must
    /// have `tasks` partitions. `on_revoke` stops the tasks the group takes
    /// away and returns once they have stopped. Unless the pipeline's
    /// properties say otherwise, a member that stops answering loses its
    /// tasks after 6 s (`session.timeout.ms`, the brokers' usual minimum).
    pub fn join(
        name: &str,
        config: &weir_config::KafkaSource,
        tasks: u32,
        member: &str,
        on_revoke: OnRevoke,
    ) -> Result<KafkaGroup, ConnectError> {
        let label = format!("kafka group {:?} of source {name:?}", config.group_id);
        let status = Arc::new(ConnectorStatus::default());
        let mut client = client_config(
            &config.brokers,
            &[
                ("client.id", &format!("weir-{name}-{member}")),
                ("session.timeout.ms", "6000"),
                ("heartbeat.interval.ms", "500"),
            ],
            &config.properties,
            &config.credentials,
        );
        // What task ownership depends on: the group, incremental moves,
        // and no offsets but those the tasks commit from checkpoints.
        client
            .set("group.id", &config.group_id)
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        let context = GroupContext {
            inner: WeirContext::new(label.clone(), config.brokers.clone(), status.clone()),
            topic: config.topic.clone(),
            on_revoke,
            assigned: Mutex::new(Vec::new()),
        };
        let consumer: BaseConsumer<GroupContext> = client
            .create_with_context(context)
            .map_err(|e| creation_error(&label, e))?;
        let metadata = consumer
            .fetch_metadata(Some(&config.topic), METADATA_TIMEOUT)
            .map_err(|e| {
                for _ in 0..64 {
                    let _ = consumer.poll(Duration::ZERO);
                }
                connect_error(&consumer.context().inner, "metadata request", &e)
            })?;
        let partitions = partition_count(&metadata, &config.topic, &config.brokers)?;
        if partitions != tasks as usize {
            return Err(ConnectError::Config(format!(
                "kafka topic {:?} has {partitions} partitions but settings.tasks is {tasks}: \
                 task N reads partition N, so they must be equal",
                config.topic
            )));
        }
        consumer
            .subscribe(&[&config.topic])
            .map_err(|e| ConnectError::Broker {
                address: config.brokers.clone(),
                message: format!("subscribing to kafka topic {:?}: {e}", config.topic),
            })?;
        status.set(ConnectionState::Connected);
        Ok(KafkaGroup {
            consumer: Arc::new(consumer),
            topic: config.topic.clone(),
            group: config.group_id.clone(),
        })
    }

    /// The group's id.
    pub fn group_id(&self) -> &str {
        &self.group
    }

    /// Serves the group (heartbeats' outcomes, rebalances: revocations run
    /// their callback here) for up to `wait`, and returns the tasks
    /// assigned since the last call.
    pub fn poll(&self, wait: Duration) -> Vec<Assigned> {
        // Anything the member's consumer fetched before its partitions were
        // paused is dropped: the tasks read their partitions themselves.
        if let Some(Err(e)) = self.consumer.poll(wait) {
            tracing::debug!(connector = %self.consumer.context().inner.label, "kafka group: {e}");
        }
        self.consumer
            .context()
            .assigned
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    /// Whether the group has this member owning `task` now.
    pub fn owns(&self, task: u32) -> bool {
        if self.consumer.assignment_lost() {
            return false;
        }
        self.consumer
            .assignment()
            .is_ok_and(|a| a.find_partition(&self.topic, task as i32).is_some())
    }

    /// Commits `next` as the group's offset of `task`'s partition (from a
    /// durable checkpoint; asynchronous, the outcome is logged).
    pub(crate) fn commit(&self, task: u32, next: i64) -> KafkaResult<()> {
        let mut offsets = TopicPartitionList::with_capacity(1);
        offsets.add_partition_offset(&self.topic, task as i32, Offset::Offset(next))?;
        self.consumer.commit(&offsets, CommitMode::Async)
    }

    /// Leaves the group at once (its tasks must have stopped), so that the
    /// other members take them over without waiting for the session to
    /// expire.
    pub fn leave(self) {
        self.consumer.unsubscribe();
        // Serve the revocation the unsubscribe causes.
        for _ in 0..10 {
            let _ = self.poll(Duration::from_millis(50));
            if self.consumer.assignment().is_ok_and(|a| a.count() == 0) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_is_read_from_the_serialized_metadata() {
        let mut bytes = GROUP_METADATA_MAGIC.to_vec();
        bytes.extend_from_slice(&7i32.to_ne_bytes());
        bytes.extend_from_slice(b"group\0member\0\x01");
        assert_eq!(parse_generation(&bytes), Some(7));
        // Not joined (generation -1), another format, or cut short.
        let mut unjoined = GROUP_METADATA_MAGIC.to_vec();
        unjoined.extend_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(parse_generation(&unjoined), None);
        assert_eq!(parse_generation(b"CGMDv3:\x07\0\0\0"), None);
        assert_eq!(parse_generation(b"CGMDv2:\x07\0"), None);
    }
}
