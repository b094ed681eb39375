//! PostgreSQL sink for weir: each batch is one upsert keyed on the output
//! id, so a replay after a restart rewrites nothing and the table holds
//! exactly one row per output record.
//!
//! - Table: the sink's columns, typed from their Arrow types (Boolean →
//!   BOOLEAN, Int32 → INTEGER, Int64 and UInt32 → BIGINT, UInt64 →
//!   NUMERIC(20), Float32 → REAL, Float64 → DOUBLE PRECISION, Utf8 → TEXT),
//!   plus `_id NUMERIC(20) PRIMARY KEY` holding the output id (a `u64`,
//!   which may exceed `BIGINT`). Created if missing when `create_table`;
//!   an existing table is checked at open. Names are quoted: used exactly
//!   as written, case included.
//! - Writes: one statement per batch (its own transaction), every column
//!   bound as one array: `INSERT … SELECT * FROM UNNEST(…) ON CONFLICT
//!   ("_id") DO UPDATE … WHERE … IS DISTINCT FROM …`. NULLs are kept; a
//!   row equal to the stored one is not rewritten; within one batch the
//!   last row of a repeated id wins.
//! - Checkpoints: every batch is committed by `write`, so the sink's part
//!   of a checkpoint is empty and `commit` does nothing.
//! - Connection loss: reconnect with [`weir_connect::Backoff::reconnect`]
//!   (as long as it takes; `write` blocks meanwhile) and send the batch
//!   again; errors the server gives for the data are final.
//! - A user is required (no OS-user default as in libpq); no TLS.

mod encode;
mod sink;
mod sql;
mod table;

use std::sync::Arc;
use std::time::Duration;

use weir_connect::{Backoff, ConnectError, ConnectionState, ConnectorStatus, SinkConnector};

use crate::sink::{
    describe, prepare_session, PostgresSink, SessionError, SinkColumn, CONNECT_TIMEOUT,
};
use crate::sql::ColumnKind;

/// PostgreSQL truncates longer identifiers (NAMEDATALEN - 1 bytes).
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Opens the sink; `schema` is the schema of the batches it receives.
pub fn open_sink(
    name: &str,
    config: &weir_config::PostgresSink,
    columns: &[String],
    schema: &arrow_schema::Schema,
    _checkpointing: bool,
    restored: Option<&[u8]>,
) -> Result<Box<dyn SinkConnector>, ConnectError> {
    if let Some(part) = restored.filter(|p| !p.is_empty()) {
        return Err(ConnectError::Checkpoint(format!(
            "PostgreSQL sink {name}: the checkpoint holds {} bytes for it, but this sink stores nothing there",
            part.len()
        )));
    }
    let address = if config.host.contains(':') {
        format!("[{}]:{}/{}", config.host, config.port, config.database)
    } else {
        format!("{}:{}/{}", config.host, config.port, config.database)
    };
    let sink_columns = sink_columns(name, columns, schema)?;
    let quoted_table = sql::quote_table(&config.table)
        .map_err(|e| ConnectError::Config(format!("PostgreSQL sink {name}: {e}")))?;
    let Some(user) = config.credentials.user.as_deref() else {
        return Err(ConnectError::Config(format!(
            "PostgreSQL sink {name}: no user for {address} (give it in the URL, postgres://user@host/database, or as `user`)"
        )));
    };

    let mut pg_config = postgres::Config::new();
    pg_config
        .host(&config.host)
        .port(config.port)
        .dbname(&config.database)
        .user(user)
        .application_name(&format!("weir:{name}"))
        .ssl_mode(postgres::config::SslMode::Disable)
        .connect_timeout(CONNECT_TIMEOUT)
        // Notice a vanished server within a minute rather than hours:
        // probes after 30 s idle, and unacknowledged data gives up after 60 s.
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30))
        .tcp_user_timeout(Duration::from_secs(60));
    if let Some(password) = &config.credentials.password {
        pg_config.password(password.expose());
    }

    let named: Vec<(&str, ColumnKind)> = sink_columns
        .iter()
        .map(|c| (c.name.as_str(), c.kind))
        .collect();
    let status = Arc::new(ConnectorStatus::default());
    status.set(ConnectionState::Connecting);

    let mut client = pg_config
        .connect(postgres::NoTls)
        .map_err(|e| ConnectError::Connect {
            address: address.clone(),
            message: describe(&e),
        })?;
    table::ensure(
        &mut client,
        &table::TableSpec {
            name: &config.table,
            quoted: &quoted_table,
            columns: &named,
            create: config.create_table,
            address: &address,
        },
    )?;
    let upsert_sql = sql::upsert(&quoted_table, &named);
    let session = prepare_session(client, &upsert_sql).map_err(|e| match e {
        SessionError::Connect(e) => ConnectError::Connect {
            address: address.clone(),
            message: describe(&e),
        },
        SessionError::Prepare(e) => ConnectError::Broker {
            address: address.clone(),
            message: format!(
                "preparing the upsert into table {}: {}",
                config.table,
                describe(&e)
            ),
        },
    })?;
    status.set(ConnectionState::Connected);
    tracing::info!(sink = %name, address = %address, table = %config.table, "connected to PostgreSQL");

    Ok(Box::new(PostgresSink {
        name: name.to_string(),
        address,
        table: config.table.clone(),
        pg_config,
        upsert_sql,
        columns: sink_columns,
        session: Some(session),
        status,
        backoff: Backoff::reconnect(),
    }))
}

/// The sink's columns found in the batches' schema, with their kinds.
fn sink_columns(
    name: &str,
    columns: &[String],
    schema: &arrow_schema::Schema,
) -> Result<Vec<SinkColumn>, ConnectError> {
    let config =
        |message: String| ConnectError::Config(format!("PostgreSQL sink {name}: {message}"));
    let mut found = Vec::with_capacity(columns.len());
    for (i, column) in columns.iter().enumerate() {
        if column == "_id" {
            return Err(config(
                "a column named \"_id\" clashes with the output id the sink adds".to_string(),
            ));
        }
        if column.len() > MAX_IDENTIFIER_BYTES {
            return Err(config(format!(
                "column name {column:?} is longer than PostgreSQL's {MAX_IDENTIFIER_BYTES} bytes"
            )));
        }
        if columns[..i].contains(column) {
            return Err(config(format!("column {column:?} is given twice")));
        }
        let (batch_index, field) = schema
            .column_with_name(column)
            .ok_or_else(|| config(format!("column {column:?} is not in the sink's input")))?;
        let kind = ColumnKind::of(field.data_type()).ok_or_else(|| {
            config(format!(
                "column {column:?} has type {}, which the sink cannot write \
                 (Boolean, Int32, Int64, UInt32, UInt64, Float32, Float64, Utf8)",
                field.data_type()
            ))
        })?;
        found.push(SinkColumn {
            name: column.clone(),
            batch_index,
            kind,
        });
    }
    Ok(found)
}
