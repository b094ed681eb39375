//! The sink: one connection, one prepared upsert, one statement per batch,
//! and reconnection when the connection is lost.
//!
//! Every batch is committed when `write` returns (a single statement is its
//! own transaction), and replays are harmless because rows are upserted on
//! their output id. So the sink stages nothing for checkpoints: `prepare`
//! returns an empty part and `commit` has nothing to do. A batch that was
//! in flight when the connection broke may or may not have been committed;
//! sending it again on a new connection is safe for the same reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::Array;
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};
use weir_connect::{
    Backoff, ConnectError, ConnectionState, ConnectorStatus, Output, SinkConnector,
};

use crate::encode::{ColumnArray, IdArray, Rows};
use crate::sql::ColumnKind;

/// How long to wait for the server to accept a connection.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One column the sink writes: where it is in the batches, and its kind.
#[derive(Debug)]
pub(crate) struct SinkColumn {
    pub(crate) name: String,
    pub(crate) batch_index: usize,
    pub(crate) kind: ColumnKind,
}

/// A connection with the upsert prepared on it.
pub(crate) struct Session {
    pub(crate) client: Client,
    pub(crate) upsert: Statement,
}

/// The PostgreSQL sink.
pub(crate) struct PostgresSink {
    pub(crate) name: String,
    /// `host:port/database`, for messages and logs.
    pub(crate) address: String,
    /// As configured, for messages.
    pub(crate) table: String,
    pub(crate) pg_config: postgres::Config,
    pub(crate) upsert_sql: String,
    pub(crate) columns: Vec<SinkColumn>,
    /// `None` after the connection was lost, until it is back.
    pub(crate) session: Option<Session>,
    pub(crate) status: Arc<ConnectorStatus>,
    pub(crate) backoff: Backoff,
}

/// An error in the server's own words: the server's message with its
/// detail and hint, or the client's error with its causes.
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.to_string();
    }
    let mut words = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        words.push_str(": ");
        words.push_str(&cause.to_string());
        source = cause.source();
    }
    words
}

/// Whether an error means the connection is gone (so the batch is sent
/// again on a new one) rather than that the server refused the statement.
fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // Class 08 (connection exception) and the server ending the
        // session (57P01 admin shutdown, e.g. pg_terminate_backend; 57P02
        // crash shutdown; 57P03 cannot connect now).
        Some(code) => {
            code.code().starts_with("08")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        }
        // No SQLSTATE: an I/O error is a lost connection; anything else
        // (a parameter the client could not encode) would fail again.
        None => std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>()),
    }
}

/// Why a session could not be opened.
pub(crate) enum SessionError {
    /// The connection failed (refused, timed out, or the server's start-up
    /// said no): another attempt later may succeed.
    Connect(postgres::Error),
    /// Connected, but the server rejected the upsert (the table changed).
    Prepare(postgres::Error),
}

/// Connects and prepares the upsert.
pub(crate) fn open_session(
    pg_config: &postgres::Config,
    upsert_sql: &str,
) -> Result<Session, SessionError> {
    let client = pg_config.connect(NoTls).map_err(SessionError::Connect)?;
    prepare_session(client, upsert_sql)
}

/// Prepares the upsert on a new connection.
pub(crate) fn prepare_session(
    mut client: Client,
    upsert_sql: &str,
) -> Result<Session, SessionError> {
    let upsert = client.prepare(upsert_sql).map_err(|e| {
        if is_connection_error(&e) || client.is_closed() {
            SessionError::Connect(e)
        } else {
            SessionError::Prepare(e)
        }
    })?;
    Ok(Session { client, upsert })
}

/// The last row of each id when a batch holds an id more than once (the
/// upsert cannot touch a row twice in one statement); `None` when every id
/// is distinct, the usual case, detected without hashing when ids grow.
fn last_row_per_id(ids: &[u64]) -> Option<Vec<usize>> {
    if ids.windows(2).all(|w| w[0] < w[1]) {
        return None;
    }
    let mut last: HashMap<u64, usize> = HashMap::with_capacity(ids.len());
    for (row, id) in ids.iter().enumerate() {
        last.insert(*id, row);
    }
    if last.len() == ids.len() {
        return None;
    }
    let mut rows: Vec<usize> = last.into_values().collect();
    rows.sort_unstable();
    Some(rows)
}

impl PostgresSink {
    /// The session, reconnecting first (with backoff, as long as it takes)
    /// if the connection was lost.
    fn session(&mut self) -> Result<&mut Session, ConnectError> {
        if self.session.as_ref().is_some_and(|s| s.client.is_closed()) {
            tracing::warn!(sink = %self.name, address = %self.address, "PostgreSQL connection closed; reconnecting");
            self.session = None;
            self.status.set(ConnectionState::Reconnecting);
        }
        while self.session.is_none() {
            // Wait before every attempt, the first included: a server
            // that just dropped the session is often restarting.
            std::thread::sleep(self.backoff.next_delay());
            match open_session(&self.pg_config, &self.upsert_sql) {
                Ok(session) => {
                    self.session = Some(session);
                    self.status.set(ConnectionState::Connected);
                    tracing::info!(
                        sink = %self.name,
                        address = %self.address,
                        attempts = self.backoff.attempts(),
                        "reconnected to PostgreSQL"
                    );
                }
                // The table was dropped or changed under us: retrying
                // cannot help.
                Err(SessionError::Prepare(e)) => {
                    self.status.set(ConnectionState::Closed);
                    return Err(ConnectError::Broker {
                        address: self.address.clone(),
                        message: format!(
                            "preparing the upsert into table {} after reconnecting: {}",
                            self.table,
                            describe(&e)
                        ),
                    });
                }
                Err(SessionError::Connect(e)) => tracing::warn!(
                    sink = %self.name,
                    address = %self.address,
                    attempts = self.backoff.attempts(),
                    error = %describe(&e),
                    "cannot reconnect to PostgreSQL yet"
                ),
            }
        }
        // Invariant: the loop above ends only once `session` is Some.
        Ok(self
            .session
            .as_mut()
            .expect("session set by the loop above"))
    }

    /// Marks the connection lost after `e`.
    fn lose(&mut self, e: &postgres::Error) {
        tracing::warn!(
            sink = %self.name,
            address = %self.address,
            error = %describe(e),
            "lost the PostgreSQL connection; reconnecting and sending the batch again"
        );
        self.session = None;
        self.status.set(ConnectionState::Reconnecting);
    }
}

impl SinkConnector for PostgresSink {
    fn write(&mut self, _epoch: u64, out: &Output<'_>) -> Result<(), ConnectError> {
        if out.is_empty() {
            return Ok(());
        }
        let batch = out.batch;
        if batch.num_rows() != out.len() {
            return Err(ConnectError::Config(format!(
                "sink {}: batch has {} rows but {} ids",
                self.name,
                batch.num_rows(),
                out.len()
            )));
        }
        let selected = last_row_per_id(out.ids);
        let rows = match &selected {
            Some(rows) => {
                tracing::debug!(
                    sink = %self.name,
                    dropped = out.len() - rows.len(),
                    "batch holds ids more than once; upserting the last row of each"
                );
                Rows::Selected(rows)
            }
            None => Rows::All(out.len()),
        };
        let mut arrays: Vec<ColumnArray<'_>> = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let array = batch.columns().get(c.batch_index).ok_or_else(|| {
                ConnectError::Config(format!(
                    "sink {}: column {:?} missing from the batch",
                    self.name, c.name
                ))
            })?;
            if ColumnKind::of(array.data_type()) != Some(c.kind) {
                return Err(ConnectError::Config(format!(
                    "sink {}: column {:?} is {} in this batch, {} when the sink opened",
                    self.name,
                    c.name,
                    array.data_type(),
                    c.kind.arrow_name()
                )));
            }
            arrays.push(ColumnArray {
                array: array.as_ref() as &dyn Array,
                kind: c.kind,
                rows,
            });
        }
        let ids = IdArray { ids: out.ids, rows };
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(arrays.len() + 1);
        params.push(&ids);
        params.extend(arrays.iter().map(|a| a as &(dyn ToSql + Sync)));

        loop {
            let session = self.session()?;
            let result = session.client.execute(&session.upsert, &params);
            match result {
                Ok(changed) => {
                    self.backoff.reset();
                    tracing::trace!(sink = %self.name, rows = rows.len(), changed, "batch upserted");
                    return Ok(());
                }
                Err(e) if is_connection_error(&e) || session.client.is_closed() => self.lose(&e),
                Err(e) => {
                    self.status.set(ConnectionState::Closed);
                    return Err(ConnectError::Broker {
                        address: self.address.clone(),
                        message: format!(
                            "upserting {} rows into table {}: {}",
                            rows.len(),
                            self.table,
                            describe(&e)
                        ),
                    });
                }
            }
        }
    }

    fn prepare(&mut self, _epoch: u64) -> Result<Vec<u8>, ConnectError> {
        // Every batch was committed by its `write`.
        Ok(Vec::new())
    }

    fn commit(&mut self, _epoch: u64) -> Result<(), ConnectError> {
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ConnectError> {
        self.session = None;
        self.status.set(ConnectionState::Closed);
        Ok(())
    }

    fn status(&self) -> Arc<ConnectorStatus> {
        Arc::clone(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_keep_their_last_row() {
        assert_eq!(last_row_per_id(&[1, 2, 3]), None);
        assert_eq!(last_row_per_id(&[3, 1, 2]), None);
        assert_eq!(last_row_per_id(&[5, 1, 5, 2, 1]), Some(vec![2, 3, 4]));
        assert_eq!(last_row_per_id(&[]), None);
    }
}
