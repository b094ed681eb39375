//! The source: a durable pull consumer on a JetStream stream.
//!
//! A task on the connector's runtime (the *pump*) owns the consumer: it
//! pulls messages, forwards each new one to [`Source::poll`] through a
//! bounded channel, sends the acknowledgements that checkpoints ask for,
//! and re-creates the consumer when its delivery may have a hole.
//!
//! **Offsets** are stream sequences. The pump forwards a message only if
//! its sequence is above every sequence forwarded before in this run, so
//! offsets grow strictly and a redelivery is never handed out twice.
//!
//! **No holes.** A message the server delivered but the client never got
//! (the connection dropped with it in flight, or the client's buffer
//! overflowed) would otherwise come back only after `ack_wait`, behind
//! later sequences that were already handed out, and the rule above would
//! drop it. So every delivery's consumer sequence is checked to follow the
//! previous one (the server numbers every delivery, redeliveries included),
//! and after a gap, a disconnection or a slow-consumer event the pump
//! deletes the consumer and creates it again at the last checkpoint's
//! place: it then delivers everything from there in order, and what was
//! already handed out is skipped by sequence.
//!
//! **Starting place.** With a checkpoint, its next sequence. Without one,
//! one past the consumer's ack floor when the consumer exists, else the
//! whole stream. The consumer is always re-created (JetStream cannot move
//! an existing consumer's start), which also brings messages that were
//! delivered to a previous run but never acknowledged back at once instead
//! of after `ack_wait`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{ConsumerErrorKind, Stream as JsStream};
use async_nats::jetstream::ErrorCode;
use async_nats::{Client, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use weir_connect::{Backoff, ConnectError, ConnectorStatus, Polled, Received, SourceConnector};

use crate::{connect, error_chain, Connection, REQUEST_TIMEOUT};

/// Messages asked for by one pull request.
const PULL_BATCH: usize = 1024;
/// Messages forwarded by the pump and not yet polled.
const BUFFER: usize = 4 * PULL_BATCH;
/// How long the server waits for an acknowledgement before delivering a
/// message again. Acknowledgements come only with checkpoints, so this
/// must be well above the checkpoint interval, or every message would be
/// redelivered (and skipped here) again and again. Redelivery is not how
/// anything is recovered: a restart or a hole re-creates the consumer at
/// the checkpoint's place, which brings unacknowledged messages back at
/// once.
const ACK_WAIT: Duration = Duration::from_secs(600);
/// Most messages delivered and not yet acknowledged. With `AckPolicy::All`
/// a checkpoint acknowledges everything before its place with one ack, but
/// everything read since the previous checkpoint stays pending until then:
/// at 100k messages/s and the default 1 s interval that is 100k, and ten
/// times that leaves room for slow checkpoints and longer intervals. When
/// the limit is reached the server pauses delivery until the next
/// checkpoint acknowledges; nothing is lost, throughput just dips. The
/// server keeps one small entry per pending message (tens of MB at most).
const MAX_ACK_PENDING: i64 = 1_000_000;
/// Pull requests expire after this; the server sends idle heartbeats
/// meanwhile so that a dead pull is noticed.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// When draining: how long the server may report deliveries that never
/// arrive before the consumer is re-created.
const STALL: Duration = Duration::from_secs(2);

/// Most reply subjects kept for acknowledging (about 100 bytes each).
/// Without checkpoints, or with many messages between two, older ones are
/// thinned out: an acknowledgement may then stop short of a checkpoint's
/// place, which is safe (the next one goes further), and the newest are
/// always kept, so the last checkpoint acknowledges exactly.
const REPLIES_KEPT: usize = 1 << 16;

/// What the engine's side asks of the pump.
enum Cmd {
    /// A checkpoint covers every sequence below this one.
    Ack(u64),
    /// Whether everything the stream holds has been forwarded.
    CaughtUp(oneshot::Sender<bool>),
}

/// What the pump forwards.
enum Out {
    Msg(u64, Bytes),
    Fatal(ConnectError),
}

pub(crate) struct Source {
    conn: Option<Connection>,
    rx: mpsc::Receiver<Out>,
    cmds: mpsc::UnboundedSender<Cmd>,
    /// One past the last sequence handed out (before any: the start).
    next: u64,
    drain: bool,
    ended: bool,
    /// A drain check sent to the pump and not yet answered.
    caught_up: Option<oneshot::Receiver<bool>>,
    /// An error received with the last records, reported next poll.
    failed: Option<ConnectError>,
    buf: Vec<Out>,
}

impl Source {
    pub(crate) fn open(
        name: &str,
        config: &weir_config::NatsSource,
        start: Option<&[u64]>,
        drain: bool,
    ) -> Result<Source, ConnectError> {
        let label = format!("source {name}");
        if let Some(s) = start {
            if s.len() != 1 {
                return Err(ConnectError::Checkpoint(format!(
                    "nats {label}: the checkpoint has positions for {} partitions, a JetStream stream has 1",
                    s.len()
                )));
            }
        }
        let conn = connect(&label, &config.servers, &config.credentials)?;
        let js = {
            // Building a context spawns its acker task on the runtime.
            let _entered = conn.rt.enter();
            async_nats::jetstream::context::ContextBuilder::new()
                .timeout(REQUEST_TIMEOUT)
                .build(conn.client.clone())
        };
        let address = conn.address.clone();
        let stream_name = config.stream.clone();
        let consumer = config.consumer.clone();
        let filter = config.subject.clone();
        let opened = conn.rt.block_on(async {
            let stream = js.get_stream(&stream_name).await.map_err(|e| match e.kind() {
                GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    ConnectError::Config(format!(
                        "nats {label}: stream {stream_name:?} does not exist on {address}: {}",
                        error_chain(&e)
                    ))
                }
                _ => ConnectError::Broker {
                    address: address.clone(),
                    message: format!(
                        "nats {label}: looking up stream {stream_name:?}: {}",
                        error_chain(&e)
                    ),
                },
            })?;
            let first = match start {
                Some(s) => s[0].max(1),
                None => match stream.consumer_info(&consumer).await {
                    Ok(info) => info.ack_floor.stream_sequence + 1,
                    Err(e) if matches!(e.kind(), ConsumerInfoErrorKind::NotFound) => 1,
                    Err(e) => {
                        return Err(ConnectError::Broker {
                            address: address.clone(),
                            message: format!(
                                "nats {label}: reading consumer {consumer:?} of stream {stream_name:?}: {}",
                                error_chain(&e)
                            ),
                        })
                    }
                },
            };
            let messages = recreate(&stream, &consumer, filter.as_deref(), first)
                .await
                .map_err(|f| f.into_error(&label, &address, &stream_name, &consumer))?;
            Ok((stream, messages, first))
        });
        let (stream, messages, first) = match opened {
            Ok(v) => v,
            Err(e) => {
                conn.shutdown();
                return Err(e);
            }
        };
        tracing::info!(
            connector = %label, server = %address, stream = %stream_name, consumer = %consumer,
            start = first, "reading JetStream stream"
        );

        let (out, rx) = mpsc::channel(BUFFER);
        let (cmds, cmd_rx) = mpsc::unbounded_channel();
        let pump = Pump {
            label,
            address,
            stream_name,
            consumer,
            filter,
            client: conn.client.clone(),
            stream,
            out,
            cmds: cmd_rx,
            interruptions: conn.interruptions.clone(),
            floor: first,
            ack_next: 0,
            forwarded: first - 1,
            last_dseq: 0,
            replies: VecDeque::new(),
            held: None,
            messages: Some(messages),
            stall: None,
            ack_failing: false,
        };
        conn.rt.spawn(pump.run());
        Ok(Source {
            conn: Some(conn),
            rx,
            cmds,
            next: first,
            drain,
            ended: false,
            caught_up: None,
            failed: None,
            buf: Vec::new(),
        })
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connection open until drop")
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.shutdown();
        }
    }
}

impl SourceConnector for Source {
    fn partitions(&self) -> u32 {
        1
    }

    fn poll(
        &mut self,
        out: &mut Received,
        max: usize,
        wait: Duration,
    ) -> Result<Polled, ConnectError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.ended {
            return Ok(Polled::End);
        }
        let deadline = Instant::now() + wait;
        if self.drain && self.caught_up.is_none() {
            let (tx, rx) = oneshot::channel();
            if self.cmds.send(Cmd::CaughtUp(tx)).is_ok() {
                self.caught_up = Some(rx);
            }
        }
        let max = max.max(1);
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let conn = self.conn.as_ref().expect("connection open until drop");
        let received = conn
            .rt
            .block_on(async { tokio::time::timeout(wait, self.rx.recv_many(&mut buf, max)).await });
        if let Ok(0) = received {
            // The pump is gone without a word: only when the runtime stops.
            self.buf = buf;
            return Err(ConnectError::Broker {
                address: self.conn().address.clone(),
                message: "the NATS source's reader stopped".into(),
            });
        }
        let mut n = 0;
        for item in buf.drain(..) {
            match item {
                Out::Msg(seq, payload) => {
                    if seq < self.next {
                        // Cannot happen: the pump forwards growing sequences.
                        continue;
                    }
                    out.push(0, seq, &payload);
                    self.next = seq + 1;
                    n += 1;
                }
                Out::Fatal(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        self.buf = buf;
        if n > 0 {
            return Ok(Polled::Records);
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if let Some(mut answer) = self.caught_up.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            let conn = self.conn.as_ref().expect("connection open until drop");
            let got = conn
                .rt
                .block_on(async { tokio::time::timeout(left, &mut answer).await });
            match got {
                Ok(Ok(true)) if self.rx.is_empty() => {
                    self.ended = true;
                    tracing::info!(offset = self.next, "NATS source drained");
                    return Ok(Polled::End);
                }
                Ok(_) => {}
                Err(_) => self.caught_up = Some(answer),
            }
        }
        Ok(Polled::Idle)
    }

    fn position(&self) -> Vec<u64> {
        vec![self.next]
    }

    fn on_checkpoint(&mut self) -> Box<dyn FnMut(&[u64]) + Send> {
        let cmds = self.cmds.clone();
        Box::new(move |next: &[u64]| {
            if let Some(&next) = next.first() {
                // Unbounded: never blocks the checkpoint thread. The pump
                // sends the acknowledgement and logs a failure.
                if cmds.send(Cmd::Ack(next)).is_err() {
                    tracing::debug!(next, "NATS source closed; acknowledgement dropped");
                }
            }
        })
    }

    fn status(&self) -> std::sync::Arc<ConnectorStatus> {
        self.conn().status.clone()
    }
}

/// Why the consumer could not be (re-)created.
enum Failure {
    /// The stream is gone.
    NoStream(String),
    /// The server refused the consumer.
    Refused(String),
    /// A request failed (timeout, no connection): worth retrying.
    Retry(String),
}

impl Failure {
    fn into_error(self, label: &str, address: &str, stream: &str, consumer: &str) -> ConnectError {
        match self {
            Failure::NoStream(words) => ConnectError::Config(format!(
                "nats {label}: stream {stream:?} does not exist on {address}: {words}"
            )),
            Failure::Refused(words) | Failure::Retry(words) => ConnectError::Broker {
                address: address.to_string(),
                message: format!(
                    "nats {label}: creating consumer {consumer:?} on stream {stream:?}: {words}"
                ),
            },
        }
    }
}

/// Deletes the consumer if it exists and creates it delivering from
/// stream sequence `first`; returns its message stream.
async fn recreate(
    stream: &JsStream,
    consumer: &str,
    filter: Option<&str>,
    first: u64,
) -> Result<pull::Stream, Failure> {
    match stream.delete_consumer(consumer).await {
        Ok(_) => {}
        Err(e) => match e.kind() {
            ConsumerErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {}
            ConsumerErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                return Err(Failure::NoStream(error_chain(&e)))
            }
            ConsumerErrorKind::JetStream(_) => return Err(Failure::Refused(error_chain(&e))),
            _ => return Err(Failure::Retry(error_chain(&e))),
        },
    }
    let deliver_policy = if first <= 1 {
        DeliverPolicy::All
    } else {
        DeliverPolicy::ByStartSequence {
            start_sequence: first,
        }
    };
    let config = pull::Config {
        durable_name: Some(consumer.to_string()),
        deliver_policy,
        // Ack-all: one acknowledgement per checkpoint covers every message
        // before its place (and those this run skipped as redeliveries).
        ack_policy: AckPolicy::All,
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        filter_subject: filter.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let created = stream
        .create_consumer(config)
        .await
        .map_err(|e| match e.kind() {
            ConsumerErrorKind::JetStream(err)
                if err.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Failure::NoStream(error_chain(&e))
            }
            ConsumerErrorKind::JetStream(_) => Failure::Refused(error_chain(&e)),
            _ => Failure::Retry(error_chain(&e)),
        })?;
    created
        .stream()
        .max_messages_per_batch(PULL_BATCH)
        .expires(PULL_EXPIRES)
        .heartbeat(PULL_HEARTBEAT)
        .messages()
        .await
        .map_err(|e| Failure::Retry(error_chain(&e)))
}

/// The task that owns the consumer.
struct Pump {
    label: String,
    address: String,
    stream_name: String,
    consumer: String,
    filter: Option<String>,
    client: Client,
    stream: JsStream,
    out: mpsc::Sender<Out>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    interruptions: watch::Receiver<u64>,
    /// Where the consumer was last created: everything below is covered by
    /// a checkpoint (or came before the start).
    floor: u64,
    /// The highest place a checkpoint asked to acknowledge up to.
    ack_next: u64,
    /// The last sequence forwarded.
    forwarded: u64,
    /// The consumer sequence of the last delivery since the consumer was
    /// created.
    last_dseq: u64,
    /// Reply subjects of received messages, by growing sequence, from the
    /// acknowledged place on; an ack-all on one acknowledges every message
    /// before it too.
    replies: VecDeque<(u64, Subject)>,
    /// A message waiting for room in the channel.
    held: Option<(u64, Bytes)>,
    /// The consumer's messages; `None` until it is (re-)created.
    messages: Option<pull::Stream>,
    /// When draining: since when the server reports deliveries that have
    /// not arrived, and the consumer sequence reached then.
    stall: Option<(Instant, u64)>,
    /// Whether the last acknowledgement failed (to log once).
    ack_failing: bool,
}

impl Pump {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The consumer was created at open, after these were counted.
        self.interruptions.borrow_and_update();
        loop {
            if self.messages.is_none() {
                if let Err(e) = self.reopen().await {
                    tracing::error!(connector = %self.label, error = %e, "NATS source failed");
                    let _ = self.out.send(Out::Fatal(e)).await;
                    return;
                }
            }
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            // An owned permit, so that the branches' futures borrow only
            // fields the handlers do not need.
            let out = self.held.is_some().then(|| self.out.clone());
            tokio::select! {
                biased;
                cmd = self.cmds.recv() => match cmd {
                    None => return,
                    Some(Cmd::Ack(next)) => {
                        self.ack_next = self.ack_next.max(next);
                        self.ack().await;
                    }
                    Some(Cmd::CaughtUp(reply)) => {
                        let done = self.caught_up().await;
                        let _ = reply.send(done);
                    }
                },
                changed = self.interruptions.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    tracing::info!(connector = %self.label, "connection interrupted; re-creating the consumer at the checkpoint");
                    self.messages = None;
                }
                permit = async { out.expect("held").reserve_owned().await }, if self.held.is_some() => match permit {
                    Ok(permit) => {
                        let (seq, payload) = self.held.take().expect("held");
                        permit.send(Out::Msg(seq, payload));
                    }
                    Err(_) => return,
                },
                item = messages.next(), if self.held.is_none() => match item {
                    Some(Ok(m)) => self.take(m),
                    Some(Err(e)) => {
                        tracing::warn!(connector = %self.label, error = %error_chain(&e), "pulling from the consumer failed; re-creating it");
                        self.messages = None;
                    }
                    None => {
                        tracing::warn!(connector = %self.label, "the consumer's message stream ended; re-creating it");
                        self.messages = None;
                    }
                },
                _ = tick.tick() => self.ack().await,
            }
        }
    }

    /// Takes one delivered message.
    fn take(&mut self, m: async_nats::jetstream::Message) {
        let (seq, dseq) = match m.info() {
            Ok(info) => (info.stream_sequence, info.consumer_sequence),
            Err(e) => {
                tracing::warn!(connector = %self.label, error = %e, "message without JetStream metadata; re-creating the consumer");
                self.messages = None;
                return;
            }
        };
        if dseq != self.last_dseq + 1 {
            tracing::warn!(
                connector = %self.label, expected = self.last_dseq + 1, got = dseq,
                "a delivery went missing; re-creating the consumer at the checkpoint"
            );
            self.messages = None;
            return;
        }
        self.last_dseq = dseq;
        if let Some(reply) = &m.message.reply {
            if self.replies.back().is_none_or(|(s, _)| seq > *s) {
                if self.replies.len() >= REPLIES_KEPT {
                    thin(&mut self.replies);
                }
                self.replies.push_back((seq, reply.clone()));
            }
        }
        if seq <= self.forwarded {
            // Handed out before in this run (a redelivery, or the replay
            // after the consumer was re-created).
            return;
        }
        self.forwarded = seq;
        self.held = Some((seq, m.message.payload));
    }

    /// Acknowledges (ack-all) the last received message below the
    /// checkpoint's place, waiting for the server's confirmation; on
    /// failure the next tick tries again.
    async fn ack(&mut self) {
        let mut target = None;
        while let Some((seq, _)) = self.replies.front() {
            if *seq >= self.ack_next {
                break;
            }
            target = self.replies.pop_front();
        }
        let Some((seq, reply)) = target else {
            return;
        };
        let sent = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.client
                .request(reply.clone(), Bytes::from_static(b"+ACK")),
        )
        .await;
        let failure = match sent {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(error_chain(&e)),
            Err(_) => Some("timed out".to_string()),
        };
        match failure {
            None => {
                if self.ack_failing {
                    tracing::info!(connector = %self.label, "acknowledgements go through again");
                }
                self.ack_failing = false;
                tracing::debug!(connector = %self.label, seq, "acknowledged");
            }
            Some(words) => {
                if !self.ack_failing {
                    tracing::warn!(
                        connector = %self.label, server = %self.address, seq, error = %words,
                        "cannot acknowledge to NATS; retrying"
                    );
                }
                self.ack_failing = true;
                self.replies.push_front((seq, reply));
            }
        }
    }

    /// Whether the stream has nothing more for the consumer and everything
    /// delivered has been forwarded.
    async fn caught_up(&mut self) -> bool {
        if self.held.is_some() || self.messages.is_none() {
            return false;
        }
        let info = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.stream.consumer_info(&self.consumer),
        )
        .await
        {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                tracing::debug!(connector = %self.label, error = %error_chain(&e), "consumer info failed");
                return false;
            }
            Err(_) => return false,
        };
        if info.num_pending > 0 {
            self.stall = None;
            return false;
        }
        if info.delivered.consumer_sequence <= self.last_dseq {
            return true;
        }
        // The server delivered more than arrived: in flight, or lost.
        match self.stall {
            Some((since, at)) if at == self.last_dseq => {
                if since.elapsed() >= STALL {
                    tracing::warn!(
                        connector = %self.label, delivered = info.delivered.consumer_sequence,
                        received = self.last_dseq,
                        "deliveries never arrived; re-creating the consumer at the checkpoint"
                    );
                    self.messages = None;
                    self.stall = None;
                }
            }
            _ => self.stall = Some((Instant::now(), self.last_dseq)),
        }
        false
    }

    /// Re-creates the consumer at the last checkpoint's place, retrying
    /// with backoff while the server cannot be reached.
    async fn reopen(&mut self) -> Result<(), ConnectError> {
        self.messages = None;
        self.interruptions.borrow_and_update();
        self.replies.clear();
        self.last_dseq = 0;
        self.stall = None;
        // Creating the consumer at the checkpoint's place acknowledges
        // everything before it.
        self.floor = self.floor.max(self.ack_next);
        let mut backoff = Backoff::reconnect();
        loop {
            match recreate(
                &self.stream,
                &self.consumer,
                self.filter.as_deref(),
                self.floor,
            )
            .await
            {
                Ok(messages) => {
                    self.messages = Some(messages);
                    tracing::info!(
                        connector = %self.label, start = self.floor, skip_to = self.forwarded + 1,
                        "consumer re-created"
                    );
                    return Ok(());
                }
                Err(Failure::NoStream(words)) => {
                    return Err(Failure::NoStream(words).into_error(
                        &self.label,
                        &self.address,
                        &self.stream_name,
                        &self.consumer,
                    ))
                }
                Err(Failure::Refused(words)) | Err(Failure::Retry(words)) => {
                    let delay = backoff.next_delay();
                    if backoff.attempts() == 1 || backoff.attempts().is_multiple_of(10) {
                        tracing::warn!(
                            connector = %self.label, server = %self.address, attempt = backoff.attempts(),
                            error = %words, "cannot re-create the consumer yet; retrying"
                        );
                    }
                    tokio::time::sleep(delay).await;
                    // Interruptions during the outage are covered by this
                    // re-creation.
                    self.interruptions.borrow_and_update();
                }
            }
        }
    }
}

/// Drops every other entry of the older half.
fn thin(replies: &mut VecDeque<(u64, Subject)>) {
    let half = replies.len() / 2;
    let mut i = 0;
    replies.retain(|_| {
        let keep = i >= half || !i.is_multiple_of(2);
        i += 1;
        keep
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thinning_keeps_the_newest_and_order() {
        let mut r: VecDeque<(u64, Subject)> = (1..=8).map(|s| (s, Subject::from("x"))).collect();
        thin(&mut r);
        let seqs: Vec<u64> = r.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![2, 4, 5, 6, 7, 8]);
    }
}
