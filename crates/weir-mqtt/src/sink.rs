//! The MQTT sink: publishes each output row's JSON to one topic.
//!
//! A driver thread runs the client's event loop (reconnecting with
//! backoff); `write` hands publishes to it through rumqttc's bounded
//! request queue, which blocks when full, and rumqttc keeps at most
//! [`MAX_IN_FLIGHT`] QoS 1 publishes unacknowledged. With QoS 1,
//! `prepare` and `finish` return once the broker has acknowledged every
//! publish so far; the persistent session makes rumqttc resend the
//! unacknowledged ones after a reconnect. MQTT has no deduplication: a
//! resend, or the engine's replay after a crash, can deliver a row twice;
//! its JSON carries `_id` for consumers to drop the copy. With QoS 0 they
//! return once every publish is written to the connection (at most once).
//!
//! The sink stages nothing: its checkpoint part is empty and `commit`
//! does nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rumqttc::{ConnectionError, Event, EventLoop, Outgoing, Packet, QoS};
use tokio::sync::Notify;
use weir_connect::{
    Backoff, ConnectError, ConnectionState, ConnectorStatus, Output, SinkConnector,
};

use crate::client::{self, address, describe, reconnect_after, OPEN_TIMEOUT};

/// Most QoS 1 publishes awaiting their PUBACK.
const MAX_IN_FLIGHT: u16 = 256;
/// Publishes queued for the event loop beyond those in flight.
const REQUEST_CAPACITY: usize = 1024;
/// Largest publish (a row's JSON plus the topic).
const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;

/// Counters the driver advances and `prepare`/`finish` wait on.
#[derive(Debug, Default)]
struct Progress {
    /// Publishes handed to the event loop.
    sent: AtomicU64,
    /// Publishes done: acknowledged (QoS 1) or written (QoS 0).
    done: AtomicU64,
    /// A writer waits: the driver must signal `changed`.
    waiting: AtomicBool,
    /// The driver's final error.
    failure: Mutex<Option<ConnectError>>,
    changed: Condvar,
}

impl Progress {
    fn signal(&self) {
        let _guard = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }
}

struct MqttSink {
    name: String,
    address: String,
    client: rumqttc::Client,
    topic: String,
    qos: QoS,
    retain: bool,
    progress: Arc<Progress>,
    /// The driver's final error, once returned.
    failed: Option<String>,
    status: Arc<ConnectorStatus>,
    stop: Arc<Notify>,
    driver: Option<JoinHandle<()>>,
}

pub(crate) fn open(
    name: &str,
    config: &weir_config::MqttSink,
) -> Result<Box<dyn SinkConnector>, ConnectError> {
    let qos = client::qos(config.qos)?;
    if config.topic.is_empty() || !rumqttc::valid_topic(&config.topic) {
        return Err(ConnectError::Config(format!(
            "sink {name}: {:?} is not a valid MQTT topic to publish to (no wildcards '+' or '#')",
            config.topic
        )));
    }
    let address = address(&config.host, config.port);
    let mut options = client::options(
        &config.client_id,
        &config.host,
        config.port,
        &config.credentials,
        MAX_PACKET_BYTES,
    );
    options.set_inflight(MAX_IN_FLIGHT);
    let (client, connection) = rumqttc::Client::new(options, REQUEST_CAPACITY);
    let mut eventloop = connection.eventloop;
    let mut network = eventloop.network_options();
    network.set_connection_timeout(client::CONNECT_TIMEOUT_S);
    eventloop.set_network_options(network);

    let progress = Arc::new(Progress::default());
    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);
    let stop = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = mpsc::channel();
    let driver = Driver {
        address: address.clone(),
        client: client.clone(),
        eventloop,
        qos,
        progress: progress.clone(),
        status: status.clone(),
        stop: stop.clone(),
        ready: Some(ready_tx),
        backoff: Backoff::reconnect(),
    };
    let runtime = client::runtime()?;
    let thread = std::thread::Builder::new()
        .name(format!("weir-mqtt-{name}"))
        .spawn(move || runtime.block_on(driver.run()))
        .map_err(|source| ConnectError::Io {
            context: "start the MQTT sink's thread".into(),
            source,
        })?;
    let mut sink = MqttSink {
        name: name.to_string(),
        address: address.clone(),
        client,
        topic: config.topic.clone(),
        qos,
        retain: config.retain,
        progress,
        failed: None,
        status,
        stop,
        driver: Some(thread),
    };
    match ready_rx.recv_timeout(OPEN_TIMEOUT) {
        Ok(Ok(())) => Ok(Box::new(sink)),
        Ok(Err(e)) => Err(e),
        Err(mpsc::RecvTimeoutError::Timeout) => {
            sink.shutdown();
            Err(ConnectError::Connect {
                address,
                message: format!("not connected within {} s", OPEN_TIMEOUT.as_secs()),
            })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ConnectError::Connect {
            address,
            message: "the MQTT sink's thread stopped unexpectedly".into(),
        }),
    }
}

impl MqttSink {
    /// The driver's final error, if it stopped.
    fn check(&mut self) -> Result<(), ConnectError> {
        if let Some(e) = self
            .progress
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            self.failed = Some(e.to_string());
            return Err(e);
        }
        match &self.failed {
            Some(why) => Err(ConnectError::Config(format!(
                "sink {} stopped after an earlier error: {why}",
                self.name
            ))),
            None => Ok(()),
        }
    }

    /// Waits until every publish handed over is done.
    fn wait_all(&mut self) -> Result<(), ConnectError> {
        let progress = self.progress.clone();
        let sent = progress.sent.load(Ordering::SeqCst);
        let mut guard = progress.failure.lock().unwrap_or_else(|e| e.into_inner());
        progress.waiting.store(true, Ordering::SeqCst);
        let outcome = loop {
            if guard.is_some() {
                break Err(());
            }
            if progress.done.load(Ordering::SeqCst) >= sent {
                break Ok(());
            }
            // The driver signals under this lock after each ack; the
            // timeout only guards against a missed signal.
            guard = progress
                .changed
                .wait_timeout(guard, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
        };
        progress.waiting.store(false, Ordering::SeqCst);
        drop(guard);
        match outcome {
            Ok(()) => Ok(()),
            Err(()) => self.check(),
        }
    }

    fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.driver.take() {
            if t.join().is_err() {
                tracing::error!(sink = %self.name, "the MQTT sink's thread panicked");
            }
        }
        self.status.set(ConnectionState::Closed);
    }
}

impl Drop for MqttSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl SinkConnector for MqttSink {
    fn write(&mut self, _epoch: u64, out: &Output<'_>) -> Result<(), ConnectError> {
        self.check()?;
        for (_, row) in out.rows() {
            // rumqttc owns each publish (topic and payload): one copy per
            // row is its API's price. Blocks while the queue is full.
            if self
                .client
                .publish(self.topic.as_str(), self.qos, self.retain, row)
                .is_err()
            {
                // The queue's receiver is gone: the driver stopped.
                self.check()?;
                return Err(ConnectError::Broker {
                    address: self.address.clone(),
                    message: "the MQTT client stopped".into(),
                });
            }
        }
        self.progress
            .sent
            .fetch_add(out.len() as u64, Ordering::SeqCst);
        Ok(())
    }

    fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>, ConnectError> {
        self.wait_all()?;
        Ok(Vec::new())
    }

    fn commit(&mut self, _epoch: u64) -> Result<(), ConnectError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        self.wait_all()
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        self.status.clone()
    }
}

/// Runs the sink's event loop on its own thread.
struct Driver {
    address: String,
    /// For the DISCONNECT on stop.
    client: rumqttc::Client,
    eventloop: EventLoop,
    qos: QoS,
    progress: Arc<Progress>,
    status: Arc<ConnectorStatus>,
    stop: Arc<Notify>,
    ready: Option<mpsc::Sender<Result<(), ConnectError>>>,
    backoff: Backoff,
}

impl Driver {
    async fn run(mut self) {
        match self.drive().await {
            Ok(()) => self.disconnect().await,
            Err(e) => {
                self.status.set(ConnectionState::Closed);
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Err(e));
                } else {
                    tracing::error!(address = %self.address, error = %e, "MQTT sink stopped");
                    *self
                        .progress
                        .failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(e);
                    self.progress.changed.notify_all();
                }
            }
        }
        // Dropping the event loop here closes the request queue, which
        // unblocks a `write` waiting on it.
    }

    async fn drive(&mut self) -> Result<(), ConnectError> {
        loop {
            let event = tokio::select! {
                biased;
                _ = self.stop.notified() => return Ok(()),
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(c))) => self.on_connack(c.session_present)?,
                Ok(Event::Incoming(Packet::PubAck(_))) if self.qos == QoS::AtLeastOnce => {
                    self.done();
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) if self.qos == QoS::AtMostOnce => {
                    self.done();
                }
                Ok(_) => {}
                Err(e) => {
                    if !self.connection_lost(e).await? {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn done(&self) {
        self.progress.done.fetch_add(1, Ordering::SeqCst);
        if self.progress.waiting.load(Ordering::SeqCst) {
            self.progress.signal();
        }
    }

    fn on_connack(&mut self, session_present: bool) -> Result<(), ConnectError> {
        self.status.set(ConnectionState::Connected);
        if let Some(ready) = self.ready.take() {
            tracing::info!(address = %self.address, "connected to the MQTT broker");
            let _ = ready.send(Ok(()));
            return Ok(());
        }
        tracing::info!(address = %self.address, attempts = self.backoff.attempts(), "reconnected to the MQTT broker");
        self.backoff.reset();
        let unacknowledged = self
            .progress
            .sent
            .load(Ordering::SeqCst)
            .saturating_sub(self.progress.done.load(Ordering::SeqCst));
        if !session_present && self.qos == QoS::AtLeastOnce && unacknowledged > 0 {
            // rumqttc drops its unacknowledged publishes when the broker
            // has no session to resend them into; only a replay from the
            // last checkpoint can make up for them.
            return Err(ConnectError::Broker {
                address: self.address.clone(),
                message: format!(
                    "the broker kept no session for this client; up to {unacknowledged} publishes were not acknowledged and are not resent"
                ),
            });
        }
        Ok(())
    }

    async fn connection_lost(&mut self, e: ConnectionError) -> Result<bool, ConnectError> {
        if self.ready.is_some() {
            return Err(ConnectError::Connect {
                address: self.address.clone(),
                message: describe(&e),
            });
        }
        Ok(reconnect_after(
            &e,
            &self.address,
            &self.status,
            &mut self.backoff,
            &self.stop,
        )
        .await)
    }

    async fn disconnect(&mut self) {
        if self.status.state() != ConnectionState::Connected {
            return;
        }
        // The request queue is FIFO: the DISCONNECT follows every publish
        // already handed over.
        if self.client.try_disconnect().is_err() {
            return;
        }
        let eventloop = &mut self.eventloop;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
}
