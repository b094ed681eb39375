//! The MQTT source as the engine sees it: the receiver thread, which makes
//! messages durable in a one-partition log stream, and a log source
//! ([`weir_log_source::LogSource`]) reading that stream back from the
//! position the engine asks for and publishing the consumer position.
//!
//! The log source reads through the open [`Stream`](weir_log::Stream)
//! rather than the files: the stream shows only records whose fsync has
//! completed, so the pipeline never processes (and checkpoints past) a
//! record that a power loss could still take away. What is MQTT's own is
//! kept here: waiting on the receiver's signal instead of looking at the
//! stream every millisecond, the receiver's failures surfacing from
//! `poll`, and what a drain means (quiet for a second).

use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::AsyncClient;
use tokio::sync::Notify;
use weir_connect::{
    Acknowledge, Backoff, ConnectError, ConnectionState, ConnectorStatus, Polled, Received,
    SourceConnector,
};
use weir_log::{Log, LogError, Stream, StreamConfig};
use weir_log_source::{LogSource, LogSourceConfig, ReadFrom};

use crate::client::{self, address, OPEN_TIMEOUT};
use crate::dedup::KeyStream;
use crate::receiver::{Receiver, Shared, MAX_PACKET_BYTES, REQUEST_CAPACITY};

/// With `drain`: how long the receiver must have been subscribed with
/// nothing arriving before the source ends. MQTT has no "end": this is the
/// best a drain can mean.
pub(crate) const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// Test hooks, set only by this crate's tests.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Hooks {
    #[cfg(test)]
    pub(crate) fail_appends: bool,
}

/// The connector handed to the engine.
struct MqttSource {
    name: String,
    /// Reads the receiver's stream back and publishes the position.
    log: LogSource,
    /// The receiver's stream: what it has written, durable or not yet.
    stream: Arc<Stream>,
    drain: bool,
    shared: Arc<Shared>,
    /// The receiver's final error, once `poll` has returned it.
    failed: Option<String>,
    status: Arc<ConnectorStatus>,
    stop: Arc<Notify>,
    receiver: Option<JoinHandle<()>>,
}

fn log_error(context: String) -> impl FnOnce(LogError) -> ConnectError {
    move |e| ConnectError::Io {
        context,
        source: std::io::Error::other(e),
    }
}

/// A name the log accepts for the consumer position: the client id with
/// characters outside `A-Z a-z 0-9 . _ -` replaced by `_`.
fn consumer_name(client_id: &str) -> String {
    let mut name: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if name.starts_with('.') || name.is_empty() {
        name.insert(0, '_');
        name.truncate(200);
    }
    name
}

pub(crate) fn open(
    name: &str,
    config: &weir_config::MqttSource,
    start: Option<&[u64]>,
    drain: bool,
    hooks: Hooks,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    let qos = client::qos(config.qos)?;
    if config.topics.is_empty() {
        return Err(ConnectError::Config(format!(
            "source {name}: give at least one MQTT topic filter"
        )));
    }
    if let Some(bad) = config.topics.iter().find(|t| !rumqttc::valid_filter(t)) {
        return Err(ConnectError::Config(format!(
            "source {name}: {bad:?} is not a valid MQTT topic filter"
        )));
    }
    if config.client_id.is_empty() {
        return Err(ConnectError::Config(format!(
            "source {name}: the MQTT client id must not be empty (it names the persistent session)"
        )));
    }
    let address = address(&config.host, config.port);
    let dir = config.log_dir.display().to_string();
    let log = Log::open(&config.log_dir).map_err(log_error(format!("open log {dir}")))?;
    let stream = log
        .stream(&config.stream, StreamConfig::default())
        .map_err(log_error(format!(
            "open stream {:?} in {dir}",
            config.stream
        )))?;
    let partition = stream.partition(0);
    let end = partition.next_offset();
    let first = partition.first_offset();
    if start.is_none() && end > first {
        tracing::info!(source = name, stream = %config.stream, first, end, "no checkpoint: reading the stream of received MQTT messages from its first record");
    }
    let consumer = consumer_name(&config.client_id);
    // Following always: the end of an MQTT source is decided here (quiet
    // for a second when draining), not by the end the stream has now.
    let log_config = LogSourceConfig {
        dir: &config.log_dir,
        stream: &config.stream,
        partitions: 1,
        read: None,
        follow: true,
        consumer: &consumer,
    };
    let log_source = LogSource::open(
        name,
        &log_config,
        ReadFrom::Stream(stream.clone()),
        start,
        false,
    )?;
    let dedup = if config.dedup_window > 0 {
        Some(
            KeyStream::open(&log, &config.stream, config.dedup_window, end).map_err(log_error(
                format!(
                    "open deduplication keys {:?} in {dir}",
                    KeyStream::name(&config.stream)
                ),
            ))?,
        )
    } else {
        None
    };

    let mut options = client::options(
        &config.client_id,
        &config.host,
        config.port,
        &config.credentials,
        MAX_PACKET_BYTES,
    );
    // Manual acknowledgement is the point of this source: a PUBACK goes
    // out only once the message is durable.
    options.set_manual_acks(true);
    let (mqtt, mut eventloop) = AsyncClient::new(options, REQUEST_CAPACITY);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(client::CONNECT_TIMEOUT_S);
    eventloop.set_network_options(network);

    let shared = Arc::new(Shared::new());
    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);
    let stop = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = Receiver {
        address: address.clone(),
        topics: config.topics.clone(),
        qos,
        client: mqtt,
        eventloop,
        stream: stream.clone(),
        dedup,
        shared: shared.clone(),
        status: status.clone(),
        stop: stop.clone(),
        ready: Some(ready_tx),
        backoff: Backoff::reconnect(),
        connected_once: false,
        unsent_acks: Default::default(),
        #[cfg(test)]
        fail_appends: hooks.fail_appends,
    };
    let _ = hooks;
    let runtime = client::runtime()?;
    let thread = std::thread::Builder::new()
        .name(format!("weir-mqtt-{name}"))
        .spawn(move || runtime.block_on(receiver.run()))
        .map_err(|source| ConnectError::Io {
            context: "start the MQTT receiver thread".into(),
            source,
        })?;
    let mut source = MqttSource {
        name: name.to_string(),
        log: log_source,
        stream,
        drain,
        shared,
        failed: None,
        status,
        stop,
        receiver: Some(thread),
    };
    match ready_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(())) => Ok(Box::new(source)),
        Ok(Err(e)) => Err(e),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            source.shutdown();
            Err(ConnectError::Connect {
                address,
                message: format!(
                    "not connected and subscribed within {} s",
                    OPEN_TIMEOUT.as_secs()
                ),
            })
        }
        // The receiver ended without a word: it can only have panicked.
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConnectError::Connect {
            address,
            message: "the MQTT receiver thread stopped unexpectedly".into(),
        }),
    }
}

impl MqttSource {
    fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.receiver.take() {
            if t.join().is_err() {
                tracing::error!(source = %self.name, "the MQTT receiver thread panicked");
            }
        }
        self.status.set(ConnectionState::Closed);
    }
}

impl Drop for MqttSource {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl SourceConnector for MqttSource {
    fn partitions(&self) -> u32 {
        1
    }

    fn poll(
        &mut self,
        out: &mut Received,
        max: usize,
        wait: Duration,
    ) -> Result<Polled, ConnectError> {
        let deadline = Instant::now() + wait;
        loop {
            if self.log.read_available(out, max)? {
                return Ok(Polled::Records);
            }
            // Nothing to read: wait for the receiver, under the lock it
            // signals with, so no batch slips in between check and wait.
            let mut failure = self.shared.failure();
            if let Some(e) = failure.take() {
                self.failed = Some(e.to_string());
                return Err(e);
            }
            if let Some(why) = &self.failed {
                return Err(ConnectError::Config(format!(
                    "source {} stopped after an earlier error: {why}",
                    self.name
                )));
            }
            let caught_up = self.log.position()[0] >= self.stream.partition(0).next_offset();
            let mut until = deadline;
            if self.drain && caught_up {
                if let Some(quiet) = self.shared.quiet_for() {
                    if quiet >= DRAIN_QUIET {
                        return Ok(Polled::End);
                    }
                    until = until.min(Instant::now() + (DRAIN_QUIET - quiet));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Polled::Idle);
            }
            // The receiver signals after each batch is durable (and when
            // it fails); until then nothing new is readable.
            drop(
                self.shared
                    .wait(failure, until.saturating_duration_since(now)),
            );
        }
    }

    fn position(&self) -> Vec<u64> {
        self.log.position()
    }

    fn on_checkpoint(&mut self) -> Acknowledge {
        self.log.on_checkpoint()
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names_are_what_the_log_accepts() {
        assert_eq!(consumer_name("weir-pipe_1.a"), "weir-pipe_1.a");
        assert_eq!(consumer_name("a b/c"), "a_b_c");
        assert_eq!(consumer_name(".x"), "_.x");
    }
}
