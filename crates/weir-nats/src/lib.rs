//! NATS JetStream source and sink for weir.
//!
//! Both hide async-nats behind the engine's blocking traits: each connector
//! owns a small tokio runtime (one worker thread) that runs the client's
//! connection, and the engine's thread enters it with `block_on` for the
//! time of a call.
//!
//! The **source** reads a stream through a durable pull consumer and hands
//! over each message with its stream sequence as offset (one partition).
//! It acknowledges (ack-all) only what a durable checkpoint covers, so a
//! crash replays instead of losing; the consumer is re-created at the place
//! to resume from whenever it opens or its delivery may have a hole (see
//! `source.rs`).
//!
//! The **sink** publishes each row to a subject with the row's output id as
//! `Nats-Msg-Id`, so the stream's duplicate window drops what a restart
//! replays; publishes that get no acknowledgement are sent again, with the
//! same id, until the stream acknowledges them.
//!
//! async-nats reconnects by itself, with the capped exponential delay set
//! here; its events keep the [`ConnectorStatus`] and the logs up to date.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use weir_config::Credentials;
use weir_connect::{
    Backoff, ConnectError, ConnectionState, ConnectorStatus, SinkConnector, SourceConnector,
};

mod leases;
mod sink;
mod source;

pub use leases::{bucket_name, NatsLease, NatsLeases};

/// Opens the source at `start` (next offset per partition, from the
/// restored checkpoint) or, without one, where the broker keeps the
/// consumer's place; with `drain` it ends once caught up.
pub fn open_source(
    name: &str,
    config: &weir_config::NatsSource,
    start: Option<&[u64]>,
    drain: bool,
) -> Result<Box<dyn SourceConnector>, ConnectError> {
    Ok(Box::new(source::Source::open(name, config, start, drain)?))
}

/// Opens the sink; `checkpointing` tells whether checkpoints run, and
/// `restored` is its part of the restored checkpoint.
pub fn open_sink(
    name: &str,
    config: &weir_config::NatsSink,
    checkpointing: bool,
    restored: Option<&[u8]>,
) -> Result<Box<dyn SinkConnector>, ConnectError> {
    // The sink keeps nothing in checkpoints: the stream's duplicate window
    // makes replays harmless, so neither argument changes anything.
    let _ = (checkpointing, restored);
    Ok(Box::new(sink::Sink::open(name, config)?))
}

/// What a connector shares with its client's event callback.
struct Connection {
    rt: Runtime,
    client: Client,
    status: Arc<ConnectorStatus>,
    /// The servers, for messages (never with credentials).
    address: String,
    /// Counts events after which a pull consumer's delivery may have a
    /// hole: disconnections and slow-consumer drops.
    interruptions: watch::Receiver<u64>,
    /// When the last reconnection completed.
    reconnected_at: Arc<Mutex<Option<Instant>>>,
}

/// How long a request to the server may take before it counts as failed
/// (and is retried where the caller retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `servers` with a runtime of its own; `label` names the
/// connector in logs and thread names (`source X`, `sink Y`).
fn connect(
    label: &str,
    servers: &[String],
    credentials: &Credentials,
) -> Result<Connection, ConnectError> {
    let address = servers.join(",");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("weir-nats {label}"))
        .enable_all()
        .build()
        .map_err(|e| ConnectError::Io {
            context: format!("nats {label}: starting the client runtime"),
            source: e,
        })?;
    let addrs = servers
        .iter()
        .map(|s| {
            s.parse::<ServerAddr>().map_err(|e| {
                ConnectError::Config(format!("nats {label}: invalid server address {s:?}: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if addrs.is_empty() {
        return Err(ConnectError::Config(format!(
            "nats {label}: no server address given"
        )));
    }

    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);
    let (interrupt_tx, interruptions) = watch::channel(0u64);
    let reconnected_at = Arc::new(Mutex::new(None));

    let mut options = ConnectOptions::new();
    if let Some(user) = &credentials.user {
        let password = credentials
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        options = options.user_and_password(user.clone(), password);
    }
    if let Some(token) = &credentials.token {
        options = options.token(token.expose().to_string());
    }
    // Reconnection: the first attempt at once, then a capped exponential
    // delay with jitter (50 ms .. 10 s) so that a server that restarts is
    // not hammered, and many clients cut off together do not come back
    // together. async-nats counts attempts from 1 and resets the count on
    // success; it retries for ever (max_reconnects unset).
    let backoff = Mutex::new(Backoff::reconnect());
    options = options.reconnect_delay_callback(move |attempts| {
        let mut b = backoff.lock().unwrap_or_else(|e| e.into_inner());
        if attempts <= 1 {
            b.reset();
            Duration::ZERO
        } else {
            b.next_delay()
        }
    });
    let ev_status = status.clone();
    let ev_label = label.to_string();
    let ev_address = address.clone();
    let ev_reconnected = reconnected_at.clone();
    options = options
        .name(format!("weir {label}"))
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        // A peer that vanishes without closing the socket is noticed after
        // two unanswered pings.
        .ping_interval(Duration::from_secs(10))
        .event_callback(move |event| {
            let status = ev_status.clone();
            let label = ev_label.clone();
            let address = ev_address.clone();
            let interrupt_tx = interrupt_tx.clone();
            let reconnected_at = ev_reconnected.clone();
            async move {
                on_event(
                    event,
                    &status,
                    &label,
                    &address,
                    &interrupt_tx,
                    &reconnected_at,
                );
            }
        });

    let client = rt
        .block_on(options.connect(addrs))
        .map_err(|e| ConnectError::Connect {
            address: address.clone(),
            message: error_chain(&e),
        })?;
    status.set(ConnectionState::Connected);
    tracing::info!(connector = %label, server = %address, "connected to NATS");
    Ok(Connection {
        rt,
        client,
        status,
        address,
        interruptions,
        reconnected_at,
    })
}

fn on_event(
    event: Event,
    status: &ConnectorStatus,
    label: &str,
    address: &str,
    interrupt_tx: &watch::Sender<u64>,
    reconnected_at: &Mutex<Option<Instant>>,
) {
    match event {
        Event::Connected => {
            let before = status.state();
            if before == ConnectionState::Closed {
                return;
            }
            status.set(ConnectionState::Connected);
            if before == ConnectionState::Reconnecting {
                *reconnected_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                tracing::info!(connector = %label, server = %address, "reconnected to NATS");
            }
        }
        Event::Disconnected => {
            if status.state() != ConnectionState::Closed {
                status.set(ConnectionState::Reconnecting);
            }
            interrupt_tx.send_modify(|n| *n += 1);
            tracing::warn!(connector = %label, server = %address, "lost the connection to NATS; reconnecting");
        }
        Event::Closed => {
            status.set(ConnectionState::Closed);
            tracing::info!(connector = %label, server = %address, "NATS connection closed");
        }
        Event::SlowConsumer(sid) => {
            // The client dropped messages of a subscription whose buffer
            // was full: a pull consumer's delivery now has a hole.
            interrupt_tx.send_modify(|n| *n += 1);
            tracing::warn!(connector = %label, server = %address, subscription = sid, "NATS client dropped messages (slow consumer)");
        }
        Event::LameDuckMode => {
            tracing::warn!(connector = %label, server = %address, "NATS server entered lame duck mode");
        }
        Event::Draining => {}
        Event::ServerError(e) => {
            tracing::warn!(connector = %label, server = %address, error = %e, "NATS server error");
        }
        Event::ClientError(e) => {
            tracing::debug!(connector = %label, server = %address, error = %e, "NATS client error");
        }
    }
}

/// An error with its sources, for messages.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let more = inner.to_string();
        if !s.contains(&more) {
            s.push_str(": ");
            s.push_str(&more);
        }
        source = inner.source();
    }
    s
}

impl Connection {
    /// Stops the runtime without waiting for its tasks.
    fn shutdown(self) {
        let Connection {
            rt, client, status, ..
        } = self;
        status.set(ConnectionState::Closed);
        drop(client);
        rt.shutdown_background();
    }
}
