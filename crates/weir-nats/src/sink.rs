//! The sink: JetStream publishes with the output id as `Nats-Msg-Id`.
//!
//! Each row is published to the subject with its id in decimal as
//! `Nats-Msg-Id`; the stream drops a message whose id it has seen within
//! its duplicate window (2 minutes unless the stream says otherwise), so a
//! replay after a restart, or a publish sent again after a lost
//! acknowledgement, is stored once. At most `max_in_flight` publishes wait
//! for their acknowledgement; when that many do, the oldest is waited for.
//! A publish that fails or times out (the server is down or restarting) is
//! sent again with the same id, with backoff, until the stream
//! acknowledges it: the payloads are kept until then. A publish the server
//! rejects (no stream captures the subject, a stream limit) is an error.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::{Context, PublishAckFuture, PublishErrorKind};
use async_nats::HeaderMap;
use bytes::Bytes;
use weir_connect::{Backoff, ConnectError, ConnectorStatus, Output, SinkConnector};

use crate::{connect, error_chain, Connection, REQUEST_TIMEOUT};

/// After a reconnection, "no responders" may only mean that the server's
/// JetStream is not up yet: such publishes are retried for this long.
const RESTART_GRACE: Duration = Duration::from_secs(30);

/// A publish not yet acknowledged.
struct Pending {
    id: u64,
    payload: Bytes,
    /// `None`: to be published (again).
    ack: Option<PublishAckFuture>,
}

pub(crate) struct Sink {
    conn: Option<Connection>,
    js: Context,
    label: String,
    subject: String,
    max_in_flight: usize,
    in_flight: VecDeque<Pending>,
    backoff: Backoff,
    /// Whether publishes are failing (to log the start and end once).
    failing: bool,
}

impl Sink {
    pub(crate) fn open(name: &str, config: &weir_config::NatsSink) -> Result<Sink, ConnectError> {
        let label = format!("sink {name}");
        let max_in_flight = config.max_in_flight.max(1);
        let conn = connect(&label, &config.servers, &config.credentials)?;
        // The context's own bound on unacknowledged publishes stays above
        // ours (acks of abandoned futures hold permits until they time out).
        // Building a context spawns its acker task on the runtime.
        let entered = conn.rt.enter();
        let js = async_nats::jetstream::context::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .ack_timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(2 * max_in_flight + 64)
            .backpressure_on_inflight(true)
            .build(conn.client.clone());
        drop(entered);
        let subject = config.subject.clone();
        let checked = conn.rt.block_on(js.stream_by_subject(subject.clone()));
        if let Err(e) = checked {
            let e = match e.kind() {
                async_nats::jetstream::context::GetStreamByNameErrorKind::NotFound => {
                    ConnectError::Config(format!(
                        "nats {label}: no stream on {} captures subject {subject:?} ({})",
                        conn.address,
                        error_chain(&e)
                    ))
                }
                _ => ConnectError::Broker {
                    address: conn.address.clone(),
                    message: format!(
                        "nats {label}: looking up the stream that captures {subject:?}: {}",
                        error_chain(&e)
                    ),
                },
            };
            conn.shutdown();
            return Err(e);
        }
        tracing::info!(connector = %label, server = %conn.address, subject = %subject, "publishing to JetStream");
        Ok(Sink {
            conn: Some(conn),
            js,
            label,
            subject,
            max_in_flight,
            in_flight: VecDeque::new(),
            backoff: Backoff::reconnect(),
            failing: false,
        })
    }

    fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("connection open until drop")
    }

    /// Waits for every publish to be acknowledged.
    fn settle_all(&mut self) -> Result<(), ConnectError> {
        let conn = self.conn.take().expect("connection open until drop");
        let result = conn.rt.block_on(async {
            while !self.in_flight.is_empty() {
                self.settle_front(&conn).await?;
            }
            Ok(())
        });
        self.conn = Some(conn);
        result
    }

    async fn publish(
        &self,
        id: u64,
        payload: Bytes,
    ) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.to_string().as_str());
        self.js
            .publish_with_headers(self.subject.clone(), headers, payload)
            .await
    }

    /// Waits for the oldest publish's acknowledgement, sending it (and
    /// everything after it) again while that fails.
    async fn settle_front(&mut self, conn: &Connection) -> Result<(), ConnectError> {
        loop {
            // Every pending publish must be on its way.
            let mut sent_all = true;
            for i in 0..self.in_flight.len() {
                if self.in_flight[i].ack.is_some() {
                    continue;
                }
                let (id, payload) = (self.in_flight[i].id, self.in_flight[i].payload.clone());
                match self.publish(id, payload).await {
                    Ok(ack) => self.in_flight[i].ack = Some(ack),
                    Err(e) => {
                        self.classify(conn, &e)?;
                        sent_all = false;
                        break;
                    }
                }
            }
            if !sent_all {
                tokio::time::sleep(self.backoff.next_delay()).await;
                continue;
            }
            let front = self
                .in_flight
                .front_mut()
                .expect("settle_front with nothing in flight");
            let ack = front.ack.take().expect("published above");
            match ack.await {
                Ok(_) => {
                    self.in_flight.pop_front();
                    self.backoff.reset();
                    if self.failing {
                        self.failing = false;
                        tracing::info!(connector = %self.label, subject = %self.subject, "publishes acknowledged again");
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.classify(conn, &e)?;
                    // The others were sent no later than this one and most
                    // likely met the same fate: send them all again (the
                    // stream drops the ones it already has by their id).
                    for p in self.in_flight.iter_mut() {
                        p.ack = None;
                    }
                    tokio::time::sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }

    /// Ok for a failure worth retrying (logged once), the final error
    /// otherwise.
    fn classify(
        &mut self,
        conn: &Connection,
        e: &async_nats::jetstream::context::PublishError,
    ) -> Result<(), ConnectError> {
        let retry = match e.kind() {
            PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending => true,
            PublishErrorKind::StreamNotFound => {
                // Right after a reconnection the server may not serve
                // JetStream yet; otherwise no stream captures the subject.
                let since = *conn
                    .reconnected_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                conn.status.state() != weir_connect::ConnectionState::Connected
                    || since.is_some_and(|t| t.elapsed() < RESTART_GRACE)
            }
            _ => false,
        };
        if !retry {
            let words = match e.kind() {
                PublishErrorKind::StreamNotFound => {
                    format!("no stream captures the subject ({})", error_chain(e))
                }
                _ => error_chain(e),
            };
            return Err(ConnectError::Broker {
                address: conn.address.clone(),
                message: format!(
                    "nats {}: publishing to {:?}: {words}",
                    self.label, self.subject
                ),
            });
        }
        if !self.failing {
            self.failing = true;
            tracing::warn!(
                connector = %self.label, server = %conn.address, subject = %self.subject,
                unacknowledged = self.in_flight.len(), error = %error_chain(e),
                "publish not acknowledged; sending again with backoff"
            );
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.shutdown();
        }
    }
}

impl SinkConnector for Sink {
    fn write(&mut self, _epoch: u64, out: &Output<'_>) -> Result<(), ConnectError> {
        let conn = self.conn.take().expect("connection open until drop");
        let result = conn.rt.block_on(async {
            for (id, row) in out.rows() {
                while self.in_flight.len() >= self.max_in_flight {
                    self.settle_front(&conn).await?;
                }
                let payload = Bytes::copy_from_slice(row);
                match self.publish(id, payload.clone()).await {
                    Ok(ack) => self.in_flight.push_back(Pending {
                        id,
                        payload,
                        ack: Some(ack),
                    }),
                    Err(e) => {
                        // The client cannot even queue it (disconnected
                        // for a while): settle everything, with backoff,
                        // before going on.
                        self.classify(&conn, &e)?;
                        self.in_flight.push_back(Pending {
                            id,
                            payload,
                            ack: None,
                        });
                        while !self.in_flight.is_empty() {
                            self.settle_front(&conn).await?;
                        }
                    }
                }
            }
            Ok(())
        });
        self.conn = Some(conn);
        result
    }

    fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>, ConnectError> {
        self.settle_all()?;
        Ok(Vec::new())
    }

    fn commit(&mut self, _epoch: u64) -> Result<(), ConnectError> {
        // Published and acknowledged at prepare; replays are deduplicated
        // by the stream.
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        self.settle_all()
    }

    fn status(&self) -> std::sync::Arc<ConnectorStatus> {
        self.conn().status.clone()
    }
}
