//! The MQTT source's receiver: one thread running the client's event loop,
//! which makes each batch of incoming publishes durable in the log stream
//! and only then acknowledges them.
//!
//! MQTT has no offsets to resume from, so the broker's only record of what
//! we consumed is our PUBACKs. Acknowledging a message before it is fsynced
//! would let a crash lose it; acknowledging after means a crash between
//! the fsync and the PUBACK stores it twice (the broker redelivers it to
//! the persistent session), which the deduplication window removes. So the
//! order per batch is: receive what is there (up to a bound) → drop
//! duplicates → append and fsync (one group commit) → hand the PUBACKs to
//! the event loop.
//!
//! Packet ids belong to a connection: after a loss the broker resends
//! unacknowledged messages, possibly reusing an id for another message, so
//! PUBACKs of a batch received on a connection that has since dropped are
//! never sent (rumqttc also discards those queued at the loss).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{
    AsyncClient, ConnAck, ConnectionError, Event, EventLoop, Packet, Publish, QoS, SubAck,
    SubscribeFilter, SubscribeReasonCode,
};
use tokio::sync::Notify;
use weir_connect::{Backoff, ConnectError, ConnectionState, ConnectorStatus};
use weir_log::Stream;

use crate::client::{describe, reconnect_after};
use crate::dedup::{self, DedupWindow, KeyStream};

/// Most publishes made durable together.
pub(crate) const MAX_BATCH_RECORDS: usize = 1024;
/// A batch stops growing past this many payload bytes.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Largest MQTT packet accepted; with [`MAX_BATCH_BYTES`] it keeps every
/// batch under the log's frame limit.
pub(crate) const MAX_PACKET_BYTES: usize = 32 * 1024 * 1024;
/// Requests (PUBACKs, the SUBSCRIBE) queued for the event loop.
pub(crate) const REQUEST_CAPACITY: usize = 2 * MAX_BATCH_RECORDS;

/// What the receiver tells the polling side.
#[derive(Debug)]
pub(crate) struct Shared {
    epoch: Instant,
    /// When (ms after `epoch`) the last batch became durable or the
    /// subscription was (re)made.
    last_activity_ms: AtomicU64,
    /// Connected with the subscription in place.
    subscribed: AtomicBool,
    /// Publishes are in hand that are not durable yet.
    persisting: AtomicBool,
    /// Why the receiver stopped for good (taken by `poll`).
    failure: Mutex<Option<ConnectError>>,
    /// Signalled (with `failure` locked) after each durable batch, each
    /// subscription and a failure.
    changed: Condvar,
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            persisting: AtomicBool::new(false),
            failure: Mutex::new(None),
            changed: Condvar::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_activity_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    /// Wakes a waiting `poll`.
    fn notify(&self) {
        let _guard = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// How long the receiver has been subscribed with nothing arriving;
    /// `None` while it is not subscribed or holds a batch not yet durable.
    pub(crate) fn quiet_for(&self) -> Option<Duration> {
        if !self.subscribed.load(Ordering::SeqCst) || self.persisting.load(Ordering::SeqCst) {
            return None;
        }
        let last = self.last_activity_ms.load(Ordering::SeqCst);
        Some(Duration::from_millis(self.now_ms().saturating_sub(last)))
    }

    /// The lock `poll` waits under; holds the receiver's final error.
    pub(crate) fn failure(&self) -> std::sync::MutexGuard<'_, Option<ConnectError>> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits on `guard` for at most `timeout`.
    pub(crate) fn wait<'a>(
        &self,
        guard: std::sync::MutexGuard<'a, Option<ConnectError>>,
        timeout: Duration,
    ) -> std::sync::MutexGuard<'a, Option<ConnectError>> {
        self.changed
            .wait_timeout(guard, timeout)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0)
    }
}

/// A batch of received publishes not yet durable.
#[derive(Default)]
struct Batch {
    publishes: Vec<Publish>,
    bytes: usize,
}

/// The receiver's state; runs on its own thread until stopped or failed.
pub(crate) struct Receiver {
    pub(crate) address: String,
    pub(crate) topics: Vec<String>,
    pub(crate) qos: QoS,
    pub(crate) client: AsyncClient,
    pub(crate) eventloop: EventLoop,
    pub(crate) stream: Arc<Stream>,
    pub(crate) dedup: Option<(KeyStream, DedupWindow)>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) status: Arc<ConnectorStatus>,
    pub(crate) stop: Arc<Notify>,
    /// Until the first SUBACK: where `open_source` waits for the outcome.
    pub(crate) ready: Option<mpsc::Sender<Result<(), ConnectError>>>,
    pub(crate) backoff: Backoff,
    pub(crate) connected_once: bool,
    /// PUBACKs for durable publishes that did not fit the request queue.
    pub(crate) unsent_acks: VecDeque<Publish>,
    /// Test hook: make the next appends fail as a full disk would, to show
    /// that a publish that is not durable is never acknowledged.
    #[cfg(test)]
    pub(crate) fail_appends: bool,
}

impl Receiver {
    /// Runs until stopped (returns quietly) or a final error (recorded for
    /// `poll`, or sent to `open_source` before the first SUBACK).
    pub(crate) async fn run(mut self) {
        let outcome = self.receive().await;
        match outcome {
            Ok(()) => self.disconnect().await,
            Err(e) => {
                self.status.set(ConnectionState::Closed);
                if let Some(ready) = self.ready.take() {
                    // `open_source` reports it; nothing was received for it.
                    let _ = ready.send(Err(e));
                } else {
                    tracing::error!(address = %self.address, error = %e, "MQTT source stopped");
                    *self.shared.failure() = Some(e);
                    self.shared.changed.notify_all();
                }
            }
        }
    }

    async fn receive(&mut self) -> Result<(), ConnectError> {
        let mut batch = Batch::default();
        loop {
            self.hand_over_acks();
            let event = tokio::select! {
                biased;
                _ = self.stop.notified() => return Ok(()),
                event = self.eventloop.poll() => event,
            };
            let mut lost = None;
            match event {
                Ok(event) => self.handle(event, &mut batch)?,
                Err(e) => lost = Some(e),
            }
            if !batch.publishes.is_empty() {
                // Take whatever else is already here without waiting, so
                // one fsync covers it. A zero timeout polls the event loop
                // once: it returns buffered packets or reads what the
                // socket holds, and is cancelled (harmlessly: nothing
                // is half-done on a pending read) when there is nothing.
                while lost.is_none()
                    && batch.publishes.len() < MAX_BATCH_RECORDS
                    && batch.bytes < MAX_BATCH_BYTES
                {
                    match tokio::time::timeout(Duration::ZERO, self.eventloop.poll()).await {
                        Err(_) => break,
                        Ok(Ok(event)) => self.handle(event, &mut batch)?,
                        Ok(Err(e)) => lost = Some(e),
                    }
                }
                self.persist(&mut batch, lost.is_none())?;
            }
            if let Some(e) = lost {
                if !self.connection_lost(e).await? {
                    return Ok(());
                }
            }
        }
    }

    fn handle(&mut self, event: Event, batch: &mut Batch) -> Result<(), ConnectError> {
        match event {
            Event::Incoming(Packet::Publish(p)) => {
                if batch.publishes.is_empty() {
                    self.shared.persisting.store(true, Ordering::SeqCst);
                }
                batch.bytes += p.payload.len() + 4;
                batch.publishes.push(p);
            }
            Event::Incoming(Packet::ConnAck(c)) => self.on_connack(&c)?,
            Event::Incoming(Packet::SubAck(s)) => self.on_suback(&s)?,
            _ => {}
        }
        Ok(())
    }

    fn on_connack(&mut self, connack: &ConnAck) -> Result<(), ConnectError> {
        self.status.set(ConnectionState::Connected);
        if !self.connected_once {
            self.connected_once = true;
            tracing::info!(address = %self.address, session_present = connack.session_present, "connected to the MQTT broker");
            // Subscribe on every start even when the session has the
            // subscriptions: the configured topics may have changed. (The
            // broker resends retained messages then; the window drops them.)
            return self.subscribe();
        }
        tracing::info!(address = %self.address, attempts = self.backoff.attempts(), "reconnected to the MQTT broker");
        self.backoff.reset();
        if connack.session_present {
            self.subscribed();
            Ok(())
        } else {
            tracing::warn!(address = %self.address, "the broker kept no session for this client: subscribing again; QoS 1 messages published while disconnected are lost");
            self.subscribe()
        }
    }

    fn subscribe(&mut self) -> Result<(), ConnectError> {
        let filters = self
            .topics
            .iter()
            .map(|t| SubscribeFilter::new(t.clone(), self.qos));
        self.client
            .try_subscribe_many(filters)
            .map_err(|e| ConnectError::Broker {
                address: self.address.clone(),
                message: format!("cannot subscribe to {:?}: {e}", self.topics),
            })
    }

    fn on_suback(&mut self, suback: &SubAck) -> Result<(), ConnectError> {
        let refused: Vec<&str> = suback
            .return_codes
            .iter()
            .zip(&self.topics)
            .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
            .map(|(_, t)| t.as_str())
            .collect();
        if !refused.is_empty() {
            return Err(ConnectError::Broker {
                address: self.address.clone(),
                message: format!("the broker refused the subscription to {refused:?}"),
            });
        }
        tracing::debug!(address = %self.address, topics = ?self.topics, "subscribed");
        self.subscribed();
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        Ok(())
    }

    fn subscribed(&self) {
        self.shared.touch();
        self.shared.subscribed.store(true, Ordering::SeqCst);
        self.shared.notify();
    }

    /// Makes `batch` durable, then acknowledges it when `ack` (the
    /// connection it came on is still up).
    fn persist(&mut self, batch: &mut Batch, ack: bool) -> Result<(), ConnectError> {
        let mut payloads: Vec<&[u8]> = Vec::with_capacity(batch.publishes.len());
        let mut keys = Vec::new();
        let mut dropped = 0usize;
        for p in &batch.publishes {
            if let Some((_, window)) = &mut self.dedup {
                let k = dedup::key(&p.topic, &p.payload);
                if !window.insert(k) {
                    dropped += 1;
                    continue;
                }
                keys.push(k);
            }
            payloads.push(&p.payload);
        }
        if dropped > 0 {
            tracing::debug!(dropped, "dropped duplicate MQTT messages");
        }
        #[cfg(test)]
        if self.fail_appends {
            return Err(append_error(
                &self.stream,
                std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: no space left"),
            ));
        }
        // Durable when this returns: the stream fsyncs every append.
        let offsets = self
            .stream
            .partition(0)
            .append(&payloads)
            .map_err(|e| append_error(&self.stream, std::io::Error::other(e)))?;
        if let Some((key_stream, _)) = &mut self.dedup {
            if !keys.is_empty() {
                if let Err(e) = key_stream.append(offsets.start, &keys) {
                    // Costs only deduplication after a restart.
                    tracing::warn!(error = %e, "cannot record deduplication keys");
                }
            }
        }
        self.shared.touch();
        self.shared.persisting.store(false, Ordering::SeqCst);
        self.shared.notify();
        batch.bytes = 0;
        for p in batch.publishes.drain(..) {
            if ack && p.qos != QoS::AtMostOnce {
                self.unsent_acks.push_back(p);
            }
        }
        self.hand_over_acks();
        Ok(())
    }

    /// Queues PUBACKs for the event loop, as many as fit.
    fn hand_over_acks(&mut self) {
        while let Some(p) = self.unsent_acks.front() {
            if self.client.try_ack(p).is_err() {
                break;
            }
            self.unsent_acks.pop_front();
        }
    }

    /// After a failed poll: before the first SUBACK that is final (open
    /// reports it); later, pause and let the next poll reconnect. False
    /// when stopped during the pause.
    async fn connection_lost(&mut self, e: ConnectionError) -> Result<bool, ConnectError> {
        if self.ready.is_some() {
            return Err(ConnectError::Connect {
                address: self.address.clone(),
                message: describe(&e),
            });
        }
        // PUBACKs not yet sent belong to the lost connection.
        self.unsent_acks.clear();
        self.shared.subscribed.store(false, Ordering::SeqCst);
        Ok(reconnect_after(
            &e,
            &self.address,
            &self.status,
            &mut self.backoff,
            &self.stop,
        )
        .await)
    }

    /// Best effort on stop: send the PUBACKs of durable publishes and a
    /// DISCONNECT (the persistent session stays with the broker).
    async fn disconnect(&mut self) {
        if self.status.state() != ConnectionState::Connected {
            return;
        }
        self.hand_over_acks();
        if self.client.try_disconnect().is_err() {
            return;
        }
        let eventloop = &mut self.eventloop;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}

fn append_error(stream: &Stream, source: std::io::Error) -> ConnectError {
    ConnectError::Io {
        context: format!(
            "make received MQTT messages durable in log stream {:?}",
            stream.name()
        ),
        source,
    }
}
